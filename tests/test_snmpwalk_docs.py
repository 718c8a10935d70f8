"""docs/snmpwalk.md: its install steps and commands, run as written against a real agent."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import COMMUNITY, V3
from snmplb import mib
from snmplb.lab.fleet import PROJECT

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

DOC = PROJECT / "docs" / "snmpwalk.md"


def commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]


def test_documented_commands_work_as_written(agent, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "SNMP_PERSISTENT_DIR": str(tmp_path / "persist")}
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
