"""The documented snmpwalk checks, run as written against real agents, with nothing on stderr.

docs/snmpwalk.md: its install steps and commands. README.md: the admin's check after installing the
agent, on the server itself, as a stock Debian 12 server runs it: snmpd with the drop-in as the package
installs it (only the agent's path differs), Debian's /etc/snmp/snmp.conf, no IETF base modules, and the
package's /usr/share/snmp/snmp.conf putting the stand-ins on net-snmp's MIB path.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import COMMUNITY, V3
from snmplb import mib
from snmplb.adminfile import AdminSettings, save_admin
from snmplb.lab.fleet import (DROP_IN, PROJECT, SNMPD, FakeLoad, agent_command, write_fake_proc,
                              write_fake_sessions)

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

DOC = PROJECT / "docs" / "snmpwalk.md"
README = PROJECT / "README.md"
CLIENT_CONF = PROJECT / "snmpd.d" / "snmp.conf"  # the package's /usr/share/snmp/snmp.conf
STAND_INS = PROJECT / "mibs" / "stand-ins"  # the package's /usr/share/snmplb/mibs/stand-ins
# Debian 12's /etc/snmp/snmp.conf as libsnmp-base installs it (its comments aside): no module loaded
# unless asked for.
DEBIAN_SNMP_CONF = "mibs :\n"


def commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]


def test_documented_commands_work_as_written(agent, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "SNMP_PERSISTENT_DIR": str(persistent_dir(tmp_path))}
    outputs = {}
    for cmd in commands():
        if cmd.startswith("sudo"):
            continue  # the system-wide variant of the ~/.snmp/mibs step
        line = cmd.replace("COMMUNITY", COMMUNITY).replace("SERVER", agent.address)
        if line.startswith(("snmpwalk -v3", "snmpget -v3")):
            (home / ".snmp").mkdir(exist_ok=True)
            (home / ".snmp/snmp.conf").write_text(
                f"defSecurityName {V3.name}\ndefSecurityLevel authPriv\ndefAuthType SHA\ndefPrivType AES\n"
                f"defAuthPassphrase {V3.auth_pass}\ndefPrivPassphrase {V3.priv_pass}\n")
        r = subprocess.run(line, shell=True, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (line, r.stderr[-500:])
        assert r.stderr == "", (line, r.stderr[-500:])  # no "Cannot find module", no parser complaint
        outputs[cmd] = r.stdout
    assert (home / ".snmp/mibs/SNMPLB-MIB.txt").exists()
    walks = [out for cmd, out in outputs.items() if cmd.startswith("snmpwalk")]
    assert len(walks) == 2
    for out in walks:
        names = re.findall(r"^SNMPLB-MIB::(\w+)\.0 = (?!No more variables)", out, re.M)
        assert names == [o.name for o in mib.OBJECTS]
        assert "lbLoad1.0 = Gauge32: 1.50" in out and "lbStatus.0 = INTEGER: idle(1)" in out
    get = next(out for cmd, out in outputs.items() if cmd.startswith("snmpget"))
    assert "lbStatus.0 = INTEGER: idle(1)" in get and "lbSessions.0 = Gauge32: 3" in get
    translated = [out.strip() for cmd, out in outputs.items() if cmd.startswith("snmptranslate")]
    assert translated[0] == mib.oid_str(mib.obj("lbLoadPerCpu").instance)
    assert translated[1] == "SNMPLB-MIB::lbStatus.0"
    assert "lbRating" in translated[2] and "DESCRIPTION" in translated[2]


def persistent_dir(tmp_path: Path) -> Path:
    """net-snmp's persistent directory as a server has it (/var/lib/snmp, with cert_indexes made by snmpd's
    first start): a new one makes the first tool print "Created directory", which is not what a check says."""
    d = tmp_path / "persist"
    (d / "cert_indexes").mkdir(parents=True, exist_ok=True)
    return d


def drop_in_as_installed(agent: str) -> str:
    """The drop-in as the package installs it (debian/rules changes the agent's path, nothing else)."""
    out = []
    for line in DROP_IN.read_text().splitlines():
        words = line.split()
        out.append(f"pass_persist {words[1]} {agent}" if words[:1] == ["pass_persist"] else line)
    return "\n".join(out) + "\n"


def loopback_community() -> str:
    """The community of the drop-in's line for this server itself (127.0.0.1)."""
    lines = [ln.split() for ln in DROP_IN.read_text().splitlines() if ln.startswith("rocommunity ")]
    communities = [words[1] for words in lines if words[2] == "127.0.0.1"]
    assert len(communities) == 1, "the drop-in allows this server itself on one rocommunity line"
    return communities[0]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stock_server(tmp_path: Path) -> Iterator[int]:
    """snmpd on 127.0.0.1 (a free port for 161) with the drop-in as installed: its thin-client line for
    192.168.0.0/24 and its line for the server itself. Yields the port."""
    base = tmp_path / "server"
    write_fake_proc(base / "proc", FakeLoad(load1=1.5, cpus=4, sessions=(("ann", "10.0.0.1"),)))
    write_fake_sessions(base / "sessions", (("ann", "10.0.0.1"),))
    save_admin(base / "admin.conf", AdminSettings())
    agent_conf = base / "agent.conf"
    agent_conf.write_text(f"proc_root = {base / 'proc'}\nsessions_dir = {base / 'sessions'}\n"
                          f"utmp = {base / 'utmp'}\nadmin_file = {base / 'admin.conf'}\n"
                          f"log_file = {base / 'agent.log'}\nlogin_paths =\ninterval = 0.5\n")
    conf = base / "snmpd.conf"
    conf.write_text("dontLogTCPWrappersConnects yes\n" + drop_in_as_installed(agent_command(agent_conf)))
    (base / "persist").mkdir()
    env = dict(os.environ, MIBS="", SNMP_PERSISTENT_DIR=str(base / "persist"), SNMPCONFPATH=str(base / "persist"))
    probe_env = {"PATH": os.environ["PATH"], "MIBS": "", "SNMPCONFPATH": str(base / "persist"),
                 "SNMP_PERSISTENT_DIR": str(base / "persist")}
    proc = None
    try:
        for _ in range(5):  # another process may take the free port before snmpd binds it
            port = _free_udp_port()
            proc = subprocess.Popen([shutil.which("snmpd") or SNMPD, "-f", "-Lf", str(base / "snmpd.log"), "-C", "-c", str(conf), "-I",
                                     "-smux,mteTrigger,mteTriggerConf", "-p", str(base / "snmpd.pid"),
                                     f"udp:127.0.0.1:{port}"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 30
            ready = False
            while not ready and proc.poll() is None and time.monotonic() < deadline:
                # sysUpTime, from 127.0.0.1 with the drop-in's community: only its second line allows it
                r = subprocess.run(["snmpget", "-v2c", "-c", loopback_community(), "-r0", "-t0.5", "-On",
                                    f"127.0.0.1:{port}", ".1.3.6.1.2.1.1.3.0"], env=probe_env,
                                   capture_output=True, text=True, timeout=30)
                ready = r.returncode == 0
            if ready:
                # snmpd starts the agent at the first request under its root: start it now, with time to spare
                subprocess.run(["snmpget", "-v2c", "-c", loopback_community(), "-r1", "-t10", "-On",
                                f"127.0.0.1:{port}", mib.oid_str(mib.ROW.instance)], env=probe_env,
                               capture_output=True, text=True, timeout=60)
                yield port
                return
            _stop(proc)
        pytest.fail("snmpd did not answer: " + (base / "snmpd.log").read_text(errors="replace")[-2000:])
    finally:
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def stock_user_env(tmp_path: Path) -> dict[str, str]:
    """net-snmp's tools as a user runs them on a stock Debian 12 server with the snmplb-agent package:
    /etc/snmp/snmp.conf as Debian installs it, the package's /usr/share/snmp/snmp.conf (naming this
    checkout's stand-ins), and SNMPLB-MIB on net-snmp's default MIB path (here ~/.snmp/mibs, as this test
    may not write /usr/share/snmp/mibs where the package puts it). No MIBS or MIBDIRS variable."""
    home = tmp_path / "home"
    (home / ".snmp" / "mibs").mkdir(parents=True, exist_ok=True)
    (home / ".snmp" / "mibs" / "SNMPLB-MIB.txt").write_text((PROJECT / "mibs" / "SNMPLB-MIB.txt").read_text())
    etc, share = tmp_path / "etc-snmp", tmp_path / "usr-share-snmp"
    etc.mkdir(exist_ok=True)
    share.mkdir(exist_ok=True)
    (etc / "snmp.conf").write_text(DEBIAN_SNMP_CONF)
    installed = CLIENT_CONF.read_text()
    assert installed.count("/usr/share/snmplb/mibs/stand-ins") == 1
    (share / "snmp.conf").write_text(installed.replace("/usr/share/snmplb/mibs/stand-ins", str(STAND_INS)))
    return {"PATH": os.environ["PATH"], "HOME": str(home), "SNMP_PERSISTENT_DIR": str(persistent_dir(tmp_path)),
            # net-snmp's default configuration path, /etc/snmp then /usr/share/snmp then ~/.snmp, here
            "SNMPCONFPATH": f"{etc}:{share}:{home / '.snmp'}"}


def readme_check() -> str:
    """The README's check on the server itself (its one snmpwalk on localhost)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("snmpwalk ")]
    (check,) = [ln for ln in lines if " localhost " in ln]
    return check


def test_the_readmes_check_works_as_written_on_a_stock_debian_server(stock_server, tmp_path):
    """Issue 21: the walk on the server itself timed out (the drop-in allowed only the LTSP subnet), and
    `-m +SNMPLB-MIB` printed 521 lines of parser errors (43 with the stand-ins): Debian ships no base
    modules. As written (COMMUNITY is the drop-in's; localhost is snmpd's port here), with no flag for the
    stand-ins: every object by name, nothing on stderr."""
    check = readme_check()
    assert "-M" not in shlex.split(check) and "+SNMPLB-MIB" not in check
    words = [loopback_community() if w == "COMMUNITY" else f"localhost:{stock_server}" if w == "localhost" else w
             for w in shlex.split(check)]
    r = subprocess.run(words, env=stock_user_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", (words, r.stderr[-1000:])
    names = re.findall(r"^SNMPLB-MIB::(\w+)\.0 = (?!No more variables)", r.stdout, re.M)
    assert names == [o.name for o in mib.OBJECTS], r.stdout
    assert "SNMPLB-MIB::lbAdminState.0 = INTEGER: enabled(1)" in r.stdout
    assert "SNMPLB-MIB::lbLoad1.0 = Gauge32: 1.50" in r.stdout  # the fake load, by its DISPLAY-HINT


def test_the_stand_ins_come_first_on_net_snmps_path_so_real_modules_win(tmp_path):
    """net-snmp takes a module from the LAST directory of its path that has it (snmpcmd(1), -M): the
    package's snmp.conf puts the stand-ins FIRST. A real SNMPv2-SMI anywhere on the path (here
    ~/.snmp/mibs, marked with a node the stand-in lacks) is the one loaded; the stand-ins still fill in
    what is missing (SNMPv2-TC, SNMPv2-CONF)."""
    env = stock_user_env(tmp_path)
    head, end, tail = (STAND_INS / "SNMPv2-SMI.txt").read_text().rpartition("\nEND")
    real = head + "\nrealModuleMarker OBJECT IDENTIFIER ::= { internet 99 }\n" + end + tail
    assert "realModuleMarker" in real
    (Path(env["HOME"]) / ".snmp" / "mibs" / "SNMPv2-SMI.txt").write_text(real)
    r = subprocess.run(["snmptranslate", "-m", mib.MODULE, "-On", "SNMPv2-SMI::realModuleMarker",
                        f"{mib.MODULE}::lbStatus.0"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.split() == [".1.3.6.1.99", mib.oid_str(mib.obj("lbStatus").instance)]
