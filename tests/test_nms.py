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

from conftest import COMMUNITY, V3
from snmplb import mib, nmsgen
from snmplb.adminconf import AdminSettings
from snmplb.labfleet import PROJECT, FakeLoad

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
    assert code == UNKNOWN and "no snmplb row" in out, out
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
    assert code == UNKNOWN and "wrong auth passphrase" in out and "wrong-passphrase" not in out
    code, out = check(good, "--secrets", str(tmp_path / "missing"))
    assert code == UNKNOWN


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
