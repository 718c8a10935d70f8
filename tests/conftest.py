"""Shared fixtures: real snmpd instances with the project's drop-in and agent, on loopback.

Markers: ``fleet`` on every test that starts a real process (snmpd, sshd, a CLI,
Xvfb...), ``storm`` on the login-storm simulator's tests. ``./test -m "not fleet
and not storm"`` runs the pure tests alone, in seconds. A test that uses one of
PROCESS_FIXTURES is marked by itself; any other test that starts a process
must say so (``@pytest.mark.fleet``), or it fails: unmarked tests run with
process creation refused, so the fast run stays honest.
"""

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

PROCESS_FIXTURES = frozenset(("fleet", "agent", "agent_proc", "netsnmp", "trio", "farm", "sshd", "display",
                              "hung", "hung_mount", "ns_fleet", "zabbix_api", "spawn", "lb"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fleet: starts real processes (snmpd, sshd, the CLIs, X...)")
    config.addinivalue_line("markers", "storm: runs the login-storm simulator (pure, but tens of seconds)")
    config.addinivalue_line("markers", "debian: builds the .deb packages and installs them on this machine (root)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fleet)
        if item.module is not None and item.module.__name__ == "test_storm":
            item.add_marker(pytest.mark.storm)


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the ``fleet`` marker may not start a process: the marker must be true."""
    if request.node.get_closest_marker("fleet") is None:
        def refuse(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.fleet")
        monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


COMMUNITY = "snmplb-ltsp"
V3 = V3User("snmplb", "auth-secret-1", "priv-secret-1")
BIN = Path(sys.executable).parent
IDLE = FakeLoad(load1=0.4, cpus=4)
BUSY = FakeLoad(load1=12.0, cpus=4)


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
        # pysmi's order reversed: net-snmp takes a module from the LAST directory that has it (snmpcmd(1)),
        # so the stand-ins go first and real base modules, where installed, win over them.
        self.mib_args = ["-M", ":".join(reversed(mibgen.mib_search_dirs())), "-m", mib.MODULE]

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


@pytest.fixture
def trio(fleet: Fleet) -> list[Instance]:
    """Three agents: two idle, one busy."""
    return [fleet.add("idle1", IDLE), fleet.add("idle2", IDLE), fleet.add("busy", BUSY)]
