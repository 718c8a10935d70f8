"""Shared fixtures: real snmpd instances with the project's drop-in and agent, on loopback.

Markers: ``fleet`` on every test that starts a real process (snmpd, sshd, a CLI,
Xvfb...), ``storm`` on the login-storm simulator's tests. ``./test -m "not fleet
and not storm"`` runs the pure tests alone, in seconds. A test that uses one of
PROCESS_FIXTURES is marked by itself; any other test that starts a process
must say so (``@pytest.mark.fleet``), or it fails: unmarked tests run with
process creation refused, so the fast run stays honest. ``--pure`` (``./test
--fast``) keeps only the pure tests (not fleet, storm or debian) and combines
with ``-m``.

Role markers: every test is marked with the roles of the package it tests
(ROLES, by test file), so that a change to a role finds its tests: ``./test -m
agent``. A test file missing from ROLES fails tests/test_layout.py.
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
NOT_PURE = ("fleet", "storm", "debian")  # what --pure leaves out: the pure tier is every other test

# The package's roles (snmplb's subpackages, its docstring has the map) and each test file's: the tests
# to run after changing a role (``./test -m agent``). A test file is in the table, or test_layout fails.
ROLES_OF_PACKAGE = {
    "client": "the thin client's poll and decision (get_hosts; snmplb/client)",
    "login": "ways to log in beyond get_hosts: snmplb status/pick/connect/feed, the chooser (snmplb/login)",
    "agent": "the application server's agent and HAProxy agent-check (snmplb/agent)",
    "admin": "snmplb-admin and SNMPv3 user creation (snmplb/admin)",
    "nms": "check_snmplb and the NMS files (snmplb/nms, nms/)",
    "build": "the generators: _mibdata, the NMS and Prometheus files (snmplb/build)",
    "lab": "the loopback fleet and the demo (snmplb/lab)",
}
ALL_ROLES = tuple(ROLES_OF_PACKAGE)
ROLES: dict[str, tuple[str, ...]] = {
    "test_affinity.py": ("client", "agent", "login"),
    "test_agent_process.py": ("agent",),
    "test_agent_robust.py": ("agent", "admin"),
    "test_agentcheck.py": ("agent",),
    "test_algorithms.py": ("client",),
    "test_chooser.py": ("login",),
    "test_cli.py": ("admin", "lab"),
    "test_codec.py": ("client",),
    "test_connect.py": ("login",),
    "test_core.py": ("agent", "admin", "client"),
    "test_debian.py": ("client", "login", "agent", "admin", "nms"),  # the packages of these roles
    "test_debian13.py": ("client", "login", "agent", "admin", "nms"),  # the packages, built in Debian 13 and 12
    "test_desktops.py": ("agent", "login"),  # real xrdp and X2Go servers, the session wrapper
    "test_feed.py": ("login",),
    "test_feed_header.py": ("login",),  # the feed's C header for greeters
    "test_fuzz.py": ("client", "agent"),
    "test_gethosts.py": ("client",),
    "test_hostile.py": ("client",),
    "test_hostile_processes.py": ("client", "login"),  # get_hosts, and the feed's queue
    "test_layout.py": ALL_ROLES,  # every role's imports, and get_hosts' import set
    "test_login_ready.py": ("agent",),
    "test_manpages.py": ("build", "client", "login", "agent", "admin", "nms"),  # every installed page
    "test_mib.py": ("build", "agent"),
    "test_nms.py": ("nms", "build"),
    "test_pamltsp.py": ("login",),  # SSH_SERVER per login: pam_snmplb before LTSP's real pamltsp
    "test_passpersist.py": ("agent",),
    "test_pick.py": ("login",),
    "test_poller.py": ("client",),
    "test_prometheus.py": ("nms", "build"),
    "test_queries.py": ("client",),
    "test_record.py": ("client",),  # get_hosts' value types
    "test_sampling.py": ("client",),
    "test_sessions.py": ("login",),
    "test_settings.py": ("client",),
    "test_snmpd.py": ("agent", "admin"),
    "test_snmpwalk_docs.py": ("agent", "nms"),
    "test_sshkeys.py": ("login",),
    "test_status.py": ("login",),
    "test_storm.py": ("client",),
    "test_usersessions.py": ("agent",),
    "test_v3_spoof.py": ("client",),
    "test_zabbix_import.py": ("nms", "build"),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fleet: starts real processes (snmpd, sshd, the CLIs, X...)")
    config.addinivalue_line("markers", "storm: runs the login-storm simulator (pure, but tens of seconds)")
    config.addinivalue_line("markers", "debian: builds the .deb packages and installs them on this machine (root)")
    for role, what in ROLES_OF_PACKAGE.items():
        config.addinivalue_line("markers", f"{role}: tests {what}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--pure", action="store_true",
                     help="only the pure tests: -m 'not fleet and not storm and not debian', combined with any -m")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.fleet)
        if item.module is not None and item.module.__name__ == "test_storm":
            item.add_marker(pytest.mark.storm)
        for role in ROLES.get(item.path.name, ()):  # a file missing from ROLES: test_layout says so
            item.add_marker(role)
    if config.getoption("pure"):
        pure, other = [], []
        for item in items:
            (other if any(item.get_closest_marker(m) for m in NOT_PURE) else pure).append(item)
        if other:
            config.hook.pytest_deselected(items=other)
            items[:] = pure


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
