"""The NMS side: check_snmplb and the check_snmp examples run as processes against real snmpd agents,
the generated Nagios/Icinga/Zabbix files checked against the MIB (and Icinga 2's own validator)."""

from __future__ import annotations

import os
import sys
import re
import shutil
import subprocess
import uuid

import pytest
import yaml

from conftest import COMMUNITY, V3, wait_for
from snmplb import mib, usm
from snmplb.build import nmsgen
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import PROJECT, FakeLoad, Fleet, V3User

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

CHECK = PROJECT / "nms" / "check_snmplb"
PLUGINS = "/usr/lib/nagios/plugins"
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


def check(inst_or_addr, *args: str, secrets: str | None = None, tmp=None, **env: str):
    host, port = (inst_or_addr.host, inst_or_addr.port) if hasattr(inst_or_addr, "host") else inst_or_addr
    cmd = [str(CHECK), "-H", host, "-p", str(port), "--timeout-ms", "800", *args]
    full = {"PATH": os.environ["PATH"], "SNMPLB_PYTHON": sys.executable,
            "SNMPLB_COMMUNITY": COMMUNITY, **env}
    r = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip()


def test_generated_files_are_current():
    assert nmsgen.main(["--check"]) == 0


@pytest.mark.parametrize("load, admin, expect, words", [
    (FakeLoad(load1=1.0, cpus=4), None, OK, "SNMPLB OK - enabled, load 0.25/CPU"),
    (FakeLoad(load1=6.0, cpus=4), None, WARNING, "load 1.50 per CPU"),
    (FakeLoad(load1=12.0, cpus=4), None, CRITICAL, "load 3.00 per CPU"),
    (FakeLoad(mem_total=1000_000, mem_available=80_000), None, WARNING, "8% memory available"),
    (FakeLoad(mem_total=1000_000, mem_available=20_000), None, CRITICAL, "2% memory available"),
    (FakeLoad(), AdminSettings(state="draining"), WARNING, "admin state draining"),
    (FakeLoad(), AdminSettings(state="disabled"), CRITICAL, "admin state disabled"),
    (FakeLoad(sessions=(("a", "h"), ("b", "h"))), AdminSettings(max_sessions=2), CRITICAL, "0 free session slots"),
    (FakeLoad(sessions=(("a", "h"),)), AdminSettings(max_sessions=4), WARNING, "3 free session slots"),
    (FakeLoad(ssh_listening=False), None, CRITICAL, "cannot take a login: ssh not listening"),
])
def test_check_snmplb_states(fleet, load, admin, expect, words):
    inst = fleet.add("s", load, admin)
    code, out = check(inst)
    assert code == expect, out
    assert words in out
    assert re.search(r"\| .*load_per_cpu=[0-9.]+;1\.0;2\.0;0", out), out  # perfdata with thresholds
    assert "mem_available=" in out and "sessions=" in out and "rating=" in out


def test_check_snmplb_swap_thresholds_and_disabled_option(fleet):
    inst = fleet.add("s", FakeLoad(pswpin=0), AdminSettings(state="disabled"))
    assert check(inst, "--disabled-state", "warning")[0] == WARNING
    inst.set_load(FakeLoad(pswpin=1_000_000))  # the agent sees a big jump within its window
    import time
    time.sleep(1.5)
    code, out = check(inst, "--disabled-state", "warning")
    assert code == CRITICAL and "swap pages/s" in out


def test_unreachable_is_critical_missing_object_and_bad_credentials_are_unknown(fleet, tmp_path):
    code, out = check(("127.0.0.60", 1))
    assert code == CRITICAL and "unreachable" in out
    broken = fleet.add("broken", agent="/bin/false")  # snmpd runs, the MIB's objects are missing
    code, out = check(broken)
    assert code == UNKNOWN and "no snmplb row" in out and "[no-row]" in out, out
    good = fleet.add("good")
    code, out = check(good, SNMPLB_COMMUNITY="wrong")
    assert code == CRITICAL  # a wrong community is silence to SNMPv2c
    secrets = tmp_path / "secrets"
    secrets.write_text(f"auth_passphrase = {V3.auth_pass}\npriv_passphrase = {V3.priv_pass}\n")
    secrets.chmod(0o600)
    code, out = check(good, "-P", "3", "-u", V3.name, "--secrets", str(secrets), SNMPLB_COMMUNITY="")
    assert code == OK, out
    secrets.write_text(f"auth_passphrase = wrong-passphrase\npriv_passphrase = {V3.priv_pass}\n")
    code, out = check(good, "-P", "3", "-u", V3.name, "--secrets", str(secrets))
    assert code == UNKNOWN and "wrong auth passphrase" in out and "[auth]" in out and "wrong-passphrase" not in out
    code, out = check(good, "--secrets", str(tmp_path / "missing"))
    assert code == UNKNOWN


@pytest.mark.parametrize("auth", usm.AUTH_PROTOCOLS)
def test_check_snmplb_polls_a_real_v3_user_of_every_protocol_snmplb_speaks(tmp_path, auth):
    """The one list (snmplb.usm): a user created with each auth protocol (by create_user_line, as
    snmplb-admin create-v3-user makes it) is read by check_snmplb -a/-x; a protocol off the list is
    refused by name, as UNKNOWN, before anything is sent."""
    user = V3User(V3.name, V3.auth_pass, V3.priv_pass, auth_proto=auth, priv_proto=usm.PRIV_PROTOCOLS[0])
    secrets = tmp_path / "secrets"
    secrets.write_text(f"auth_passphrase = {V3.auth_pass}\npriv_passphrase = {V3.priv_pass}\n")
    secrets.chmod(0o600)
    with Fleet(tmp_path / "fleet", community=COMMUNITY, v3_user=user) as fleet:
        inst = fleet.add("v3")
        for priv in usm.PRIV_PROTOCOLS:
            code, out = check(inst, "-P", "3", "-u", V3.name, "-a", auth.lower(), "-x", priv, "--secrets", str(secrets),
                              SNMPLB_COMMUNITY="")
            assert code == OK and out.startswith("SNMPLB OK"), out
        if auth != "SHA":  # a user of another protocol is no user to this one: never OK
            code, out = check(inst, "-P", "3", "-u", V3.name, "-a", "SHA", "--secrets", str(secrets), SNMPLB_COMMUNITY="")
            assert code == UNKNOWN, out
        for option, value in (("-x", "DES"), ("-a", "MD5")):
            code, out = check(inst, "-P", "3", "-u", V3.name, option, value, "--secrets", str(secrets))
            assert code == UNKNOWN and option in out and repr(value) in out, out


def run_check(args: list, env: dict | None = None, python: str = sys.executable) -> subprocess.CompletedProcess:
    """The wrapper as Nagios runs it; args may be bytes (argv is bytes to the kernel)."""
    full = {"PATH": os.environ["PATH"], "SNMPLB_PYTHON": python, "SNMPLB_COMMUNITY": COMMUNITY, **(env or {})}
    return subprocess.run([str(CHECK), *args], env=full, capture_output=True, timeout=60, cwd="/")


def assert_one_unknown_line(r: subprocess.CompletedProcess, *words: str) -> str:
    out = r.stdout.decode(errors="replace")
    assert r.returncode == UNKNOWN, (r.returncode, out, r.stderr)
    assert out.count("\n") == 1 and out.startswith("SNMPLB UNKNOWN - "), out
    assert b"Traceback" not in r.stdout + r.stderr and r.stderr == b"", r.stderr
    for w in words:
        assert w in out, (w, out)
    return out


@pytest.mark.parametrize("args, words", [
    ([], ("usage:", "-H")),
    (["-H", "127.0.0.1", "-H", "127.0.0.2"], ("exactly one host",)),
    (["-H", "127.0.0.1 127.0.0.2"], ("one host",)),
    (["-H", "127.0.0.1,127.0.0.2"], ("one host",)),
    (["-H", ""], ("one host",)),
    (["-H", "127.0.0.1", "-p", "0"], ("-p", "1..65535")),
    (["-H", "127.0.0.1", "-p", "x"], ("-p", "not a whole number")),
    (["-H", "127.0.0.1", "--timeout-ms", "0"], ("--timeout-ms",)),
    (["-H", "127.0.0.1", "--load-warning", "not-a-range"], ("--load-warning", "Nagios range")),
    (["-H", "127.0.0.1", "-t", "-5"], ("-t",)),
    (["-H", "127.0.0.1", "--no-such-option"], ("--no-such-option",)),
    (["-H", "127.0.0.1", "-P", "4"], ("-P",)),
])
def test_check_snmplb_usage_errors_are_one_unknown_line(args, words):
    """argparse exits 2 (CRITICAL to Nagios) with a usage block: the plugin says UNKNOWN, in one line."""
    assert_one_unknown_line(run_check(args), *words)


def test_check_snmplb_bad_secrets_files_are_unknown_and_never_hang(tmp_path):
    missing = run_check(["-H", "127.0.0.1", "--secrets", str(tmp_path / "missing")])
    assert_one_unknown_line(missing, "No such file")
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"community = caf\xe9-secret\n")
    latin1.chmod(0o600)
    out = assert_one_unknown_line(run_check(["-H", "127.0.0.1", "--secrets", str(latin1)]), "not UTF-8")
    assert "caf" not in out and "0xe9" not in out and "position" not in out
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes: a blocking open would hang the check until Nagios kills it
    assert_one_unknown_line(run_check(["-H", "127.0.0.1", "--secrets", str(fifo)]), "not a regular file")
    assert_one_unknown_line(run_check(["-H", "127.0.0.1", "--secrets", "/dev/zero"]), "larger than")


def test_check_snmplb_internal_error_is_one_unknown_line_without_the_secret(tmp_path):
    """A community that is not text (non-UTF-8 bytes on the command line) must not crash with a traceback."""
    r = run_check([b"-H", b"127.0.0.60", b"-p", b"1", b"--timeout-ms", b"100", b"-C", b"s\xe9cr\xe8t"])
    out = r.stdout.decode(errors="replace")
    assert r.returncode in (CRITICAL, UNKNOWN), out  # unreachable, or the community refused
    assert out.count("\n") == 1 and b"Traceback" not in r.stdout + r.stderr and r.stderr == b""
    for shown in (b"\xe9", b"\xe8", b"\\xe9", b"\\udce9", b"\\udce8", "\u00e9".encode(), b"position"):
        assert shown not in r.stdout, (shown, out)


@pytest.mark.parametrize("timeout_ms, plugin_timeout", [("8000", "1"), ("2000", "2"), ("3000", "2")])
def test_a_dead_server_is_critical_even_with_t_at_or_below_the_snmp_deadline(timeout_ms, plugin_timeout):
    """-t at or below --timeout-ms against a server that never answers (a host that is down drops the
    datagrams): the poll ends before -t runs out, so the server is CRITICAL (unreachable), not UNKNOWN
    (the plugin's own timeout, as before the fix: the poll outlived -t). One line."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never read: silence
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        r = run_check(["-H", "127.0.0.1", "-p", str(port), "--timeout-ms", timeout_ms, "-t", plugin_timeout])
    out = r.stdout.decode()
    assert r.returncode == CRITICAL and out.startswith("SNMPLB CRITICAL - unreachable: no answer within "), out
    waited = int(re.search(r"no answer within (\d+) ms", out).group(1))
    assert waited < int(plugin_timeout) * 1000, out  # the deadline it kept (stated, not measured)
    assert out.count("\n") == 1 and r.stderr == b"", r.stderr
    # SNMPv2c's silence may be a wrong community or an address rocommunity does not allow: the line says so.
    assert "wrong community" in out and "rocommunity" in out and "snmplb-ltsp" not in out, out


def test_with_t_at_the_snmp_deadline_a_live_server_is_ok_and_a_stopped_one_critical(fleet):
    """The same check against the real fleet: the shortened deadline still reads a live agent, and an
    agent that stopped (nothing listens on its port) is CRITICAL."""
    live, gone = fleet.add("live"), fleet.add("gone")
    fleet.stop(gone)
    code, out = check(live, "--timeout-ms", "1000", "-t", "1")
    assert code == OK and out.startswith("SNMPLB OK"), out
    code, out = check(gone, "--timeout-ms", "1000", "-t", "1")
    assert code == CRITICAL and "unreachable" in out, out


def test_the_poll_deadline_ends_before_t_runs_out():
    from snmplb.nms.plugin import RESERVE_S, poll_deadline

    assert poll_deadline(3000, 10, 100.0) == 103.0  # the defaults: --timeout-ms decides
    assert poll_deadline(8000, 1, 100.0) == 101.0 - RESERVE_S  # -t below: -t less the reserve
    assert poll_deadline(2000, 2, 100.0) == 102.0 - RESERVE_S  # -t at the SNMP deadline: the same


def test_the_plugin_timeout_is_still_one_unknown_line(monkeypatch, capsys):
    """Should the plugin itself outlive -t (a stalled machine), nagiosplugin's Timeout is UNKNOWN."""
    import nagiosplugin

    from snmplb.nms import check as nmscheck
    from snmplb.nms import plugin as nmsplugin

    def stalled(*args, **kwargs):
        raise nagiosplugin.Timeout("1s")

    monkeypatch.setattr(nmsplugin, "run", stalled)
    assert nmscheck.main(["-H", "127.0.0.1", "-t", "1"]) == UNKNOWN
    assert capsys.readouterr().out == "SNMPLB UNKNOWN - timeout: no result after 1s\n"


def test_the_community_on_the_command_line_is_deprecated_with_a_warning(fleet, tmp_path):
    """-C shows the community to every user of the machine (the process list): it still works, with a
    warning in the status line that never shows the value. Here -C is a wrong community (no secret on
    any command line): it still overrides SNMPLB_COMMUNITY, so the agent is silent to it."""
    good = fleet.add("good")
    code, out = check(good, "-C", "not-the-community")
    assert code == CRITICAL and "unreachable" in out, out  # -C still used
    assert "-C is deprecated" in out and "--secrets" in out and "not-the-community" not in out, out
    assert out.count("\n") == 0
    secrets = tmp_path / "secrets"
    secrets.write_text(f"community = {COMMUNITY}\n")
    secrets.chmod(0o600)
    code, out = check(good, "--secrets", str(secrets), SNMPLB_COMMUNITY="")
    assert code == OK and "deprecated" not in out, out
    code, out = check(good)  # SNMPLB_COMMUNITY
    assert code == OK and "deprecated" not in out, out


def test_check_snmplb_without_the_nms_extra_says_how_to_install_it(tmp_path):
    # An interpreter with snmplb (from this checkout) but without nagiosplugin: a bare venv of the
    # tests' own Python (no system site-packages, where Debian's python3-nagiosplugin may live).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    python = str(tmp_path / "bare" / "bin" / "python")
    probe = subprocess.run([python, "-c", "import nagiosplugin"], capture_output=True, timeout=30)
    assert probe.returncode != 0, "the bare venv sees nagiosplugin"
    r = run_check(["-H", "127.0.0.1"], {"PYTHONPATH": str(PROJECT)}, python=python)
    assert_one_unknown_line(r, "nagiosplugin", "pip install 'snmplb[nms]'")
    r = run_check(["-H", "127.0.0.1"], {"PYTHONPATH": "/nonexistent"}, python=python)
    assert_one_unknown_line(r, "cannot import snmplb")


def test_check_snmplb_warns_about_a_secrets_file_others_can_read(fleet, tmp_path):
    good = fleet.add("good")
    secrets = tmp_path / "secrets"
    secrets.write_text(f"community = {COMMUNITY}\n")
    for mode, warned in ((0o644, True), (0o640, True), (0o600, False)):
        secrets.chmod(mode)
        code, out = check(good, "--secrets", str(secrets), SNMPLB_COMMUNITY="")
        assert code == OK, out  # a warning, not a failure
        assert ("readable by" in out) == warned, (oct(mode), out)
        assert out.count("\n") == 0 and COMMUNITY not in out
    assert "readable by others" in check(("127.0.0.60", 1), "--secrets", str(secrets.chmod(0o604) or secrets))[1]


def test_secrets_mode_note_allows_group_read_through_the_group():
    from pathlib import Path

    from snmplb.nms.check import secrets_mode_note

    f = Path("/etc/snmplb/nms-secrets")
    assert secrets_mode_note(f, 0o100640, owner=0, uid=110) == ""  # root:nagios 0640, run as nagios (nms/README)
    assert "its group" in secrets_mode_note(f, 0o100640, owner=110, uid=110)
    assert "others" in secrets_mode_note(f, 0o100604, owner=0, uid=110)
    assert secrets_mode_note(f, 0o100600, owner=110, uid=110) == ""


def _nagios_commands() -> dict[str, str]:
    text = (PROJECT / "nms/nagios/snmplb.cfg").read_text()
    return dict(re.findall(r"command_name\s+(\S+)\s+command_line\s+(.+)", text))


def _run_nagios(command_line: str, inst, arg1: str = "") -> tuple[int, str]:
    line = (command_line.replace("$USER1$", PLUGINS).replace("$HOSTADDRESS$", f"{inst.host}")
            .replace("$USER3$", COMMUNITY).replace("$ARG1$", arg1))
    args = line.split()
    if args[0].endswith("check_snmp"):
        args += ["-p", str(inst.port)]
    env = {"PATH": os.environ["PATH"], "MIBS": "", "SNMP_PERSISTENT_DIR": "/tmp",
           "SNMPLB_PYTHON": sys.executable}
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip()


@pytest.mark.skipif(not os.path.exists(f"{PLUGINS}/check_snmp"), reason="monitoring-plugins-standard not installed")
def test_check_snmp_examples_report_each_state(fleet):
    cmds = _nagios_commands()
    for name, line in cmds.items():
        if "check_snmp " in line:
            assert " -w " in line and " -c " in line, name  # a missing OID without thresholds reports OK
            for oid in re.search(r"-o (\S+)", line).group(1).split(","):
                assert tuple(int(p) for p in oid.strip(".").split(".")) in {o.instance for o in mib.OBJECTS}
    idle = fleet.add("idle", FakeLoad(load1=1.0, cpus=4))
    hot = fleet.add("hot", FakeLoad(load1=6.0, cpus=4, mem_total=1000_000, mem_available=20_000))
    drain = fleet.add("drain", admin=AdminSettings(state="draining"))
    off = fleet.add("off", admin=AdminSettings(state="disabled"))
    assert _run_nagios(cmds["check_snmplb_load"], idle)[0] == OK
    assert _run_nagios(cmds["check_snmplb_load"], hot)[0] == WARNING
    assert _run_nagios(cmds["check_snmplb_memory"], hot)[0] == CRITICAL
    assert _run_nagios(cmds["check_snmplb_admin"], idle)[0] == OK
    assert _run_nagios(cmds["check_snmplb_admin"], drain)[0] == WARNING
    assert _run_nagios(cmds["check_snmplb_admin"], off)[0] == CRITICAL
    assert _run_nagios(cmds["check_snmplb_swapping"], idle)[0] == OK
    code, out = _run_nagios(cmds["check_snmplb_overview"], hot)
    assert code == CRITICAL and "load_per_cpu_x100" in out
    # The plugin's own command definition, from the same file (an empty secrets file: the default community,
    # which the fleet uses).
    secrets_line = cmds["check_snmplb"].replace("/etc/snmplb/nms-secrets", "/dev/null")
    code, out = _run_nagios(secrets_line.replace("$USER1$/check_snmplb", str(CHECK)), idle, f"-p {idle.port}")
    assert code == OK, out


ZABBIX_VALUE_TYPES = {"FLOAT", "CHAR", "LOG", "UNSIGNED", "TEXT"}
ZABBIX_PREPROCESSING = {"MULTIPLIER", "CHANGE_PER_SECOND", "SIMPLE_CHANGE", "DISCARD_UNCHANGED_HEARTBEAT"}
ZABBIX_PRIORITIES = {"NOT_CLASSIFIED", "INFO", "WARNING", "AVERAGE", "HIGH", "DISASTER"}


def test_zabbix_template_follows_the_60_export_format_and_the_mib():
    doc = yaml.safe_load((PROJECT / "nms/zabbix/snmplb_template.yaml").read_text())
    export = doc["zabbix_export"]
    assert export["version"] == "6.0"
    assert set(export) <= {"version", "date", "groups", "templates", "graphs", "triggers", "value_maps"}
    uuids = []
    for g in export["groups"]:
        uuids.append(g["uuid"])
        assert set(g) == {"uuid", "name"}
    (tpl,) = export["templates"]
    assert set(tpl) <= {"uuid", "template", "name", "description", "groups", "items", "macros", "valuemaps",
                        "discovery_rules", "tags", "dashboards", "templates"}
    assert [g["name"] for g in tpl["groups"]] == [g["name"] for g in export["groups"]]
    keys = {}
    valuemaps = {vm["name"]: vm for vm in tpl["valuemaps"]}
    for item in tpl["items"]:
        uuids.append(item["uuid"])
        assert item["type"] == "SNMP_AGENT" and item["value_type"] in ZABBIX_VALUE_TYPES
        assert re.fullmatch(r"\d+[smhd]", item["delay"]) and re.fullmatch(r"\d+[dh]", item["history"])
        for step in item.get("preprocessing", []):
            assert step["type"] in ZABBIX_PREPROCESSING and all(isinstance(p, str) for p in step["parameters"])
        if "valuemap" in item:
            assert item["valuemap"]["name"] in valuemaps
        keys[item["key"]] = item
        for trig in item.get("triggers", []):
            uuids.append(trig["uuid"])
            assert trig["priority"] in ZABBIX_PRIORITIES
            for tname, key in re.findall(r"\(/([^/]+)/([^,)]+)", trig["expression"]):
                assert tname == tpl["template"] and key == item["key"]
    # every object of the MIB, with the MIB's OID
    by_oid = {item["snmp_oid"]: item for item in tpl["items"]}
    assert len(by_oid) == len(mib.OBJECTS)
    for o in mib.OBJECTS:
        item = by_oid[".".join(map(str, o.instance))]
        assert item["key"] == f"snmplb.{o.name}"
        if o.enums:  # every enumeration value mapped
            vm = valuemaps[item["valuemap"]["name"]]
            assert {m["value"]: m["newvalue"] for m in vm["mappings"]} == {str(v): k for k, v in o.enums.items()}
    for vm in tpl["valuemaps"]:
        uuids.append(vm["uuid"])
    for graph in export["graphs"]:
        uuids.append(graph["uuid"])
        for gi in graph["graph_items"]:
            assert re.fullmatch(r"[0-9A-F]{6}", gi["color"])
            assert gi["item"]["host"] == tpl["template"] and gi["item"]["key"] in keys
    # Zabbix's import requires UUIDv4 (version nibble 4, RFC 4122 variant), unique.
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", u) and uuid.UUID(u).version == 4
               for u in uuids) and len(set(uuids)) == len(uuids)
    triggers = " ".join(t["name"] for i in tpl["items"] for t in i.get("triggers", []))
    for needed in ("swapping", "load per CPU", "full", "draining", "disabled", "older than"):
        assert needed in triggers
    assert {g["name"] for g in export["graphs"]} == {"SNMPLB: load", "SNMPLB: sessions"}


@pytest.mark.skipif(shutil.which("icinga2") is None, reason="icinga2 not installed")
def test_icinga2_validates_the_config(tmp_path):
    conf = tmp_path / "icinga2.conf"
    conf.write_text(f"""
include <itl>
include <plugins>
const PluginDir = "{PLUGINS}"
template Service "generic-service" {{
  max_check_attempts = 3
  check_interval = 1m
  retry_interval = 30s
}}
object Host "app1" {{
  check_command = "dummy"
  address = "127.0.0.11"
  vars.snmplb = true
  vars.snmplb_check_snmp = true
  vars.snmplb_community = "{COMMUNITY}"
}}
include "{PROJECT / 'nms/icinga2/snmplb.conf'}"
""")
    r = subprocess.run(["icinga2", "daemon", "-C", "-c", str(conf), "-x", "notice"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "ICINGA2_USER": "root", "ICINGA2_GROUP": "root"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"\b6 Services\b", out), out[-3000:]


def test_check_snmplb_warns_when_the_agent_cannot_use_its_admin_file(fleet):
    inst = fleet.add("s", FakeLoad(), AdminSettings(state="enabled"))
    inst.admin_file.write_text("state = enabled\nwieght = 5\n")  # a typo: the agent keeps the last good state

    assert wait_for(lambda: check(inst)[0] == WARNING, timeout=10)  # the agent's next sample
    code, out = check(inst)
    assert code == WARNING and "admin file has a problem" in out, out


def _labels_in_range(obj: str, rng: str) -> set[str]:
    low, high = (int(x) for x in rng.split(":"))
    return {label for label, n in mib.obj(obj).enums.items() if low <= n <= high}


def test_every_enumeration_number_in_the_generated_files_is_the_mibs():
    """Read back every generated file: each number compared with an enumerated object is the MIB's number
    for the state the check or trigger names."""
    by_oid = {"." + ".".join(map(str, o.instance)): o for o in mib.OBJECTS}
    # Zabbix triggers: last(/T/snmplb.lbX)=N must be the MIB's number of the state the trigger names.
    tpl = yaml.safe_load((PROJECT / "nms/zabbix/snmplb_template.yaml").read_text())["zabbix_export"]["templates"][0]
    named = {"is swapping": ("lbSwapping", "true"), "is full": ("lbStatus", "full"),
             "cannot take a login": ("lbStatus", "unavailable"), "is draining": ("lbAdminState", "draining"),
             "is disabled": ("lbAdminState", "disabled")}
    compared = 0
    for item in tpl["items"]:
        for trig in item.get("triggers", []):
            for name, number in re.findall(r"last\(/[^/]+/snmplb\.(\w+)\)=(\d+)", trig["expression"]):
                ((obj, label),) = [v for k, v in named.items() if k in trig["name"]]
                assert name == obj and int(number) == mib.obj(obj).enums[label], trig
                compared += 1
    assert compared == 5
    # check_snmp thresholds on enumerated objects, in the Nagios and the Icinga 2 files.
    expect = {"lbAdminState": ({"enabled"}, {"enabled", "draining"}), "lbSwapping": ({"false"}, {"false"})}
    nagios = (PROJECT / "nms/nagios/snmplb.cfg").read_text()
    icinga = (PROJECT / "nms/icinga2/snmplb.conf").read_text()
    found = re.findall(r"-o (\S+) -l \S+ -w (\S+) -c (\S+)", nagios)
    found += re.findall(r'snmp_oid = "([^"]+)"\n.*\n  vars.snmp_warn = "([^"]+)"\n  vars.snmp_crit = "([^"]+)"', icinga)
    checked = 0
    for oids, warn, crit in found:
        for oid, w, c in zip(oids.split(","), warn.split(","), crit.split(",")):
            o = by_oid[oid]
            if o.enums:
                assert (_labels_in_range(o.name, w), _labels_in_range(o.name, c)) == expect[o.name], (oid, w, c)
                checked += 1
    assert checked == 4  # two objects, two files
    # Prometheus: the modules' enum_values, and the states the rules name.
    from snmplb.build import promgen

    for rel in ("snmp.yml", "snmplb-snmp.yml"):
        doc = yaml.safe_load((PROJECT / "nms/prometheus" / rel).read_text())
        modules = doc.get("modules", doc)
        for module in modules.values():
            for m in module["metrics"]:
                o = next(o for o in mib.OBJECTS if ".".join(map(str, o.oid)) == m["oid"])
                assert m.get("enum_values", {}) == {n: label for label, n in o.enums.items()}, (rel, m["name"])
    names = {promgen.metric_name(o): o for o in mib.OBJECTS}
    rules = (PROJECT / "nms/prometheus/snmplb-rules.yml").read_text()
    states = re.findall(r'(snmplb_\w+)\{\1=\\"(\w+)\\"\}', rules)
    assert len(states) >= 6
    for metric, label in states:
        assert label in names[metric].enums, (metric, label)


def test_generators_follow_a_renumbered_mib(monkeypatch):
    """No enumeration number is typed in the generators: renumber the MIB and every output follows."""
    from snmplb.build import promgen

    shifted = {o.name: o._replace(enums={k: v + 10 for k, v in o.enums.items()}) for o in mib.OBJECTS}
    monkeypatch.setattr(mib, "BY_NAME", shifted)
    monkeypatch.setattr(mib, "OBJECTS", tuple(shifted.values()))
    zabbix = nmsgen.zabbix()
    assert "last(/SNMPLB LTSP application server by SNMP/snmplb.lbStatus)=14" in zabbix  # full(4) + 10
    assert "snmplb.lbAdminState)=12" in zabbix and "snmplb.lbSwapping)=11" in zabbix
    nagios = nmsgen.nagios()
    assert "-l admin_state -w 11:11 -c 11:12" in nagios and "-l swapping -w 12:12 -c 12:12" in nagios
    assert 'vars.snmp_warn = "11:11"' in nmsgen.icinga2()
    module = yaml.safe_load(promgen.snmp_yml_021())[promgen.MODULE]
    status = next(m for m in module["metrics"] if m["name"] == "snmplb_status")
    assert status["enum_values"][17] == "unavailable"
    # A renumbering that puts another state inside a check's range stops the generator.
    broken = dict(shifted, lbAdminState=shifted["lbAdminState"]._replace(enums={"enabled": 1, "draining": 3,
                                                                                "disabled": 2}))
    monkeypatch.setattr(mib, "BY_NAME", broken)
    with pytest.raises(ValueError, match="not a contiguous range"):
        nmsgen.nagios()
    monkeypatch.setattr(mib, "BY_NAME", dict(shifted, lbStatus=shifted["lbStatus"]._replace(enums={"idle": 1})))
    with pytest.raises(KeyError, match="no enumeration 'full'"):
        nmsgen.zabbix()


def test_check_snmplb_says_critical_for_figures_too_old_to_use(fleet):
    """An agent whose figures age past 30 s (MAX_DATA_AGE_MS: no client uses them) is as CRITICAL as
    one past --age-critical: it must not turn UNKNOWN, milder, as it ages. The agent samples once a
    minute here (its longest interval), so its row really ages between samples."""
    inst = fleet.add("aging", settings={"interval": "60"})
    code, out = check(inst)
    assert code == OK, out
    assert wait_for(lambda: "stale data" in check(inst)[1], timeout=50, step=2)
    code, out = check(inst)
    assert code == CRITICAL and "stale data" in out and out.count("\n") == 0, out
