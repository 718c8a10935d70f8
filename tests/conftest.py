"""Shared fixtures: real snmpd instances with the project's drop-in and agent, on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snmplb import mib
from snmplb.build import mibgen
from snmplb.lab.fleet import FakeLoad, Fleet, Instance, V3User, client_env

COMMUNITY = "snmplb-ltsp"
V3 = V3User("snmplb", "auth-secret-1", "priv-secret-1")
BIN = Path(sys.executable).parent


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """An empty fleet (SNMPv2c community and an SNMPv3 authPriv user); add() starts instances."""
    with Fleet(tmp_path / "fleet", community=COMMUNITY, v3_user=V3) as f:
        yield f


@pytest.fixture
def agent(fleet: Fleet) -> Instance:
    """One running snmpd + agent with a moderate fake load and three sessions."""
    return fleet.add("app1", FakeLoad(load1=1.5, load5=1.2, load15=0.9, cpus=4,
                                      sessions=(("ann", "10.0.0.1"), ("bob", "10.0.0.2"), ("ann", "10.0.0.3"))))


class NetSnmp:
    """Runs net-snmp's client tools with the project's MIB (and stand-ins) on the search path."""

    def __init__(self, tmp: Path) -> None:
        self.env = client_env(tmp)
        self.mib_args = ["-M", ":".join(mibgen.mib_search_dirs()), "-m", mib.MODULE]

    def run(self, tool: str, *args: str, names: bool = False, timeout: float = 20) -> subprocess.CompletedProcess:
        cmd = [tool, *(self.mib_args if names else []), *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def v2c(self, tool: str, inst: Instance, *oids: str, opts: tuple[str, ...] = (), names: bool = False,
            community: str = COMMUNITY) -> subprocess.CompletedProcess:
        """``tool -v2c -c COMMUNITY [opts] ADDRESS OIDS...``"""
        return self.run(tool, "-v2c", "-c", community, "-r1", "-t1", *opts, inst.address, *oids, names=names)

    def v3(self, tool: str, inst: Instance, *oids: str, opts: tuple[str, ...] = (), auth: str = V3.auth_pass,
           priv: str = V3.priv_pass, names: bool = False) -> subprocess.CompletedProcess:
        """``tool -v3 [opts] ADDRESS OIDS...`` as the authPriv user.

        The passphrases go through snmp.conf in the client's SNMPCONFPATH,
        never on the command line.
        """
        conf = Path(self.env["SNMPCONFPATH"]) / "snmp.conf"
        conf.write_text(f"defSecurityName {V3.name}\ndefSecurityLevel authPriv\ndefAuthType SHA\n"
                        f"defPrivType AES\ndefAuthPassphrase {auth}\ndefPrivPassphrase {priv}\n")
        conf.chmod(0o600)
        try:
            return self.run(tool, "-v3", "-r1", "-t1", *opts, inst.address, *oids, names=names)
        finally:
            conf.unlink()


@pytest.fixture
def netsnmp(tmp_path: Path) -> NetSnmp:
    d = tmp_path / "netsnmp-client"
    d.mkdir()
    return NetSnmp(d)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.1) -> object:
    """Poll ``predicate`` until it returns something truthy; bounded by ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(step)
