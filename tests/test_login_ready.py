"""A server that answers SNMP but cannot take a login (sshd stopped, /home or /tmp full or hung) is
published as unavailable and never chosen.

Real parts: the kernel's own /proc/net/tcp with a real sshd on loopback, a small tmpfs that the test
mounts and fills, a FUSE mount whose daemon never answers (the kernel blocks statvfs on it exactly as
on a hung NFS server), real snmpd agents and chroot/get_hosts run as a subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_for
from snmplb.agent import config
from snmplb.agent import loginpaths
from snmplb.agent import verdict
from snmplb import mib
from snmplb.adminfile import AdminSettings
from snmplb.agent.loginpaths import MIB, SpaceFigures, LoginPaths, Outcome, SpacePolicy, judge, summarize
from snmplb.lab.fleet import FakeLoad
from snmplb.agent.procfs import ProcSample
from snmplb.agent.logins import SessionCount
from snmplb.agent.values import compute_values
from snmplb.agent.tcpconns import parse_listening, read_ssh
from support import AgentProcess

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

STATUS = mib.obj("lbStatus").enums
LISTENING = mib.obj("lbSshListening").enums
PATH_STATES = mib.obj("lbLoginPathStatus").enums


# ---------------------------------------------------------------------------------------------------
# (a) the rules, as tables


def figures(**kw) -> verdict.Figures:
    base = dict(load_per_cpu=20, mem_total=8_000_000, mem_available=6_000_000, swapping=False, sessions=0,
                weight=100, max_sessions=0, admin_state="enabled", ssh_listening=True, login_paths_usable=True)
    return verdict.Figures(**{**base, **kw})


@pytest.mark.parametrize("kw, status", [
    ({}, "idle"),
    ({"ssh_listening": False}, "unavailable"),
    ({"login_paths_usable": False}, "unavailable"),
    ({"ssh_listening": None}, "idle"),  # tables unreadable: unknown is not down
    ({"ssh_listening": None, "load_per_cpu": 150}, "busy"),
    # the order: disabled, draining, unavailable, full, swapping, busy, idle
    ({"ssh_listening": False, "admin_state": "disabled"}, "disabled"),
    ({"login_paths_usable": False, "admin_state": "draining"}, "draining"),
    ({"ssh_listening": False, "sessions": 5, "max_sessions": 5}, "unavailable"),
    ({"login_paths_usable": False, "swapping": True}, "unavailable"),
    ({"ssh_listening": False, "load_per_cpu": 400}, "unavailable"),
    ({"sessions": 5, "max_sessions": 5}, "full"),
])
def test_status_rule_table(kw, status):
    f = figures(**kw)
    assert verdict.server_status(f, verdict.HealthPolicy()) == status
    if status == "unavailable":
        assert verdict.rating(f, status) == 0


def test_figures_default_to_able_to_take_a_login():
    """Callers that know nothing of ssh or paths (older code, the benchmark) keep their statuses."""
    f = verdict.Figures(load_per_cpu=20, mem_total=100, mem_available=80, swapping=False, sessions=0,
                       weight=100, max_sessions=0, admin_state="enabled")
    assert verdict.server_status(f, verdict.HealthPolicy()) == "idle"


def fig(free_mb: float, total_mb: float = 1000, free_inodes: int = 1000, total_inodes: int = 1000) -> SpaceFigures:
    return SpaceFigures(int(free_mb * MIB), int(total_mb * MIB), free_inodes, total_inodes)


POLICY = SpacePolicy(min_free_mb=100, min_free_inodes_percent=1, timeout=3.0)


@pytest.mark.parametrize("outcome, state", [
    (Outcome(fig(500)), "usable"),
    (Outcome(fig(100)), "usable"),  # at the threshold: enough
    (Outcome(fig(99.9)), "lowSpace"),
    (Outcome(fig(0)), "lowSpace"),
    (Outcome(fig(500, free_inodes=10, total_inodes=1000)), "usable"),  # 1% exactly
    (Outcome(fig(500, free_inodes=9, total_inodes=1000)), "lowInodes"),
    (Outcome(fig(500, free_inodes=0, total_inodes=64)), "lowInodes"),
    (Outcome(fig(0, free_inodes=0)), "lowSpace"),  # space is named first
    (Outcome(SpaceFigures(0, 0, 0, 0)), "usable"),  # autofs mount point: no blocks, no inodes, no limit
    (Outcome(fig(500, free_inodes=0, total_inodes=0)), "usable"),  # no inode limit (btrfs)
    (Outcome(None), "usable"),  # first check not back yet: unknown is not down
    (Outcome(None, pending_for=2.9), "usable"),
    (Outcome(fig(500), pending_for=2.9), "usable"),  # the last figures stand while the check is young
    (Outcome(fig(500), pending_for=3.0), "notResponding"),
    (Outcome(None, pending_for=30.0), "notResponding"),
    (Outcome(None, error="Stale file handle"), "error"),
    (Outcome(None, error="No such file or directory"), "error"),
])
def test_path_rule_table(outcome, state):
    v = judge("/home", outcome, POLICY)
    assert v.state == state
    assert (v.problem == "") == (state == "usable")
    if state != "usable":
        assert v.problem.startswith("/home: ")


def test_zero_thresholds_disable_the_checks():
    off = SpacePolicy(min_free_mb=0, min_free_inodes_percent=0)
    assert judge("/tmp", Outcome(fig(0, free_inodes=0)), off).state == "usable"


def test_summary_names_the_first_bad_path_and_the_least_figures():
    verdicts = [judge("/home", Outcome(fig(5000, free_inodes=900)), POLICY),
                judge("/tmp", Outcome(fig(20, free_inodes=50, total_inodes=100)), POLICY),
                judge("/var/tmp", Outcome(None, pending_for=9.0), POLICY)]
    s = summarize(verdicts)
    assert (s.state, s.path, s.free_mb, s.free_inodes_percent) == ("lowSpace", "/tmp", 20, 50)
    assert s.problem == "/tmp: 20 MiB free, below 100 MiB"
    assert summarize([]) == LoginPaths(state="usable", free_mb=2**32 - 1, free_inodes_percent=100)


HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
LISTEN22 = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1\n"
ESTAB22 = "   1: 0B00A8C0:0016 1400A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 98 1\n"
OUT22 = "   2: 0B00A8C0:9C40 1400A8C0:0016 0A 00000000:00000000 00:00000000 00000000     0        0 97 1\n"
LISTEN6 = ("   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A "
           "00000000:00000000 00:00000000 00000000     0        0 96 1\n")


def test_listening_is_a_listen_socket_on_the_local_port():
    assert parse_listening(HEADER + LISTEN22, 22)
    assert not parse_listening(HEADER + LISTEN22, 2222)
    assert not parse_listening(HEADER + ESTAB22, 22)  # connections alone: sshd's children outlive it
    assert not parse_listening(HEADER + OUT22, 22)  # the REMOTE port is 22: not ours
    assert parse_listening(HEADER + LISTEN6, 22)
    assert not parse_listening(HEADER + "garbage\n   0: zz:zz 0:0 0A\n", 22)


def test_read_ssh_over_both_tables(tmp_path):
    net = tmp_path / "net"
    assert read_ssh(tmp_path, 22) == (None, None)  # neither table: unknown, not "not listening"
    net.mkdir()
    (net / "tcp").write_text(HEADER + ESTAB22)
    assert read_ssh(tmp_path, 22)[1] is False
    (net / "tcp6").write_text(HEADER + LISTEN6)  # sshd on [::] only: it takes IPv4 logins too
    conns, listening = read_ssh(tmp_path, 22)
    assert listening is True and len(conns) == 1


def test_config_keys_defaults_and_bad_values():
    c = config.AgentConfig()
    assert (c.login_paths, c.min_free_mb, c.min_free_inodes_percent, c.login_path_timeout) == \
        ("/home /tmp", 100, 1, 3.0)
    c2, problems = config.apply(c, {"login_paths": "/home  relative/dir", "min_free_mb": "-1",
                                       "min_free_inodes_percent": "101", "login_path_timeout": "0"}, "agent.conf")
    assert c2 == c  # nothing lost: every bad value keeps its default
    assert len(problems) == 4
    assert "login_paths" in problems[0] and "'relative/dir' is not an absolute path" in problems[0]
    for key, p in zip(("min_free_mb", "min_free_inodes_percent", "login_path_timeout"), problems[1:]):
        assert p.startswith(f"agent.conf: {key}: ")
    c3, problems = config.apply(c, {"login_paths": "", "min_free_mb": "0"}, "x")
    assert problems == [] and c3.login_paths == "" and c3.space_policy.min_free_mb == 0
    _, problems = config.apply(c, {"login_paths": " ".join(f"/p{i}" for i in range(40))}, "x")
    assert "more than 32" in problems[0]


def proc_sample() -> ProcSample:
    return ProcSample(taken_at=10.0, load1=0.4, load5=0.3, load15=0.2, cpus=4, mem_total=8_000_000,
                      mem_available=6_000_000, swap_total=0, swap_free=0, pswpin=0, pswpout=0, uptime=5000.0)


def test_the_row_carries_the_verdict_and_its_causes():
    args = (proc_sample(), (0.0, 0.0), SessionCount(0, 0, "logind"), AdminSettings(), verdict.HealthPolicy())
    fine = compute_values(*args, ssh_listening=True, login_paths=LoginPaths(free_mb=5000, free_inodes_percent=80))
    assert fine["lbStatus"] == STATUS["idle"] and fine["lbRating"] > 0
    row = mib.decode_row(fine["lbRow"].at(10.0))
    assert row["lbSshListening"] == LISTENING["listening"] and row["lbLoginPathStatus"] == PATH_STATES["usable"]
    assert row["lbLoginPathFree"] == 5000 and row["lbLoginPathFreeInodes"] == 80
    assert fine["lbLoginPathProblem"] == ""
    no_ssh = compute_values(*args, ssh_listening=False)
    assert no_ssh["lbStatus"] == STATUS["unavailable"] and no_ssh["lbRating"] == 0
    assert no_ssh["lbSshListening"] == LISTENING["notListening"]
    unknown = compute_values(*args, ssh_listening=None)
    assert unknown["lbStatus"] == STATUS["idle"] and unknown["lbSshListening"] == LISTENING["unknown"]
    full = compute_values(*args, ssh_listening=True,
                          login_paths=LoginPaths("lowSpace", 3, 90, "/home: 3 MiB free, below 100 MiB", "/home"))
    assert full["lbStatus"] == STATUS["unavailable"] and full["lbRating"] == 0
    assert full["lbLoginPathStatus"] == PATH_STATES["lowSpace"] and full["lbLoginPathProblem"].startswith("/home:")
    assert len(full["lbRow"].at(10.0)) <= mib.ROW.range[1]


# ---------------------------------------------------------------------------------------------------
# Real filesystems: a small tmpfs, and a FUSE mount nobody serves (a hung network filesystem)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m", inodes: int = 64) -> Iterator[Path]:
    """A small tmpfs at ``path``; the test is skipped (with the reason) where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=1777", "tmpfs",
                        str(path)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_space(root: Path) -> None:
    """Write one file until the filesystem refuses (bounded by the tmpfs's size)."""
    chunk = b"\0" * 65536
    with open(root / "filler", "wb", buffering=0) as f:
        for _ in range(100_000):
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    raise AssertionError("the tmpfs never filled")


def fill_inodes(root: Path) -> None:
    """Create empty files until no inode is left (bounded by the tmpfs's nr_inodes)."""
    (root / "many").mkdir()
    for i in range(100_000):
        try:
            (root / "many" / str(i)).touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return
    raise AssertionError("the tmpfs never ran out of inodes")


class HungMount:
    """A FUSE mount whose daemon never answers: every statvfs() on it blocks in the kernel, as on an NFS
    mount whose server is gone. ``release()`` unmounts it lazily and aborts the connection, so that the
    blocked callers get ENOTCONN and the path underneath is an ordinary directory again."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.fd = os.open("/dev/fuse", os.O_RDWR)  # close-on-exec: no agent inherits it
        except OSError as exc:
            pytest.skip(f"no FUSE here to stand for a hung filesystem: {exc.strerror}")
        libc = ctypes.CDLL(None, use_errno=True)
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0".encode()
        if libc.mount(b"snmplb-hung", str(path).encode(), b"fuse.snmplbhung", 0, opts) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            pytest.skip(f"cannot mount FUSE here: {os.strerror(err)}")
        self.mounted = True

    def release(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            os.close(self.fd)
            self.mounted = False


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[HungMount]:
    m = HungMount(tmp_path / "hung")
    try:
        yield m
    finally:
        m.release()


def test_checker_on_real_filesystems_full_inodes_freed(tmp_path):
    policy = SpacePolicy(min_free_mb=1, min_free_inodes_percent=1, timeout=3.0)
    with tmpfs(tmp_path / "small") as small:
        checker = loginpaths.PathChecker([str(small), str(tmp_path)])
        s = loginpaths.assess(checker, policy)
        assert s.state == "usable" and 3 <= s.free_mb <= 4 and s.free_inodes_percent >= 90
        fill_space(small)
        s = loginpaths.assess(checker, policy)
        assert (s.state, s.path, s.free_mb) == ("lowSpace", str(small), 0)
        (small / "filler").unlink()
        assert loginpaths.assess(checker, policy).state == "usable"
        fill_inodes(small)
        s = loginpaths.assess(checker, policy)
        assert (s.state, s.free_inodes_percent) == ("lowInodes", 0) and "inodes free" in s.problem
        shutil.rmtree(small / "many")
        assert loginpaths.assess(checker, policy).state == "usable"
    gone = loginpaths.PathChecker([str(tmp_path / "missing")])
    s = loginpaths.assess(gone, policy)
    assert s.state == "error" and "No such file or directory" in s.problem


def statvfs_threads(path: Path) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"statvfs {path}")


def test_a_hung_mount_never_blocks_the_checker_and_costs_one_thread(tmp_path, hung):
    policy = SpacePolicy(min_free_mb=1, timeout=0.5)
    checker = loginpaths.PathChecker([str(tmp_path), str(hung.path)])
    results = []
    for _ in range(8):  # liveness bound, not a speed claim: each call must return, not hang
        done = threading.Event()
        threading.Thread(target=lambda: (results.append(loginpaths.assess(checker, policy)), done.set()),
                         daemon=True).start()
        assert done.wait(10), "the checker blocked on the hung mount"
        time.sleep(0.1)
    assert statvfs_threads(hung.path) == 1  # never a second worker while the first hangs
    assert results[0].state == "usable"  # young check, no figures yet: unknown is not down
    assert results[-1].state == "notResponding" and results[-1].path == str(hung.path)
    assert "statvfs has not returned" in results[-1].problem
    assert results[-1].free_mb > 1  # the healthy path's figures are still published
    hung.release()  # the "server" is gone for good: the blocked call fails, the directory underneath remains
    assert wait_for(lambda: statvfs_threads(hung.path) == 0, timeout=10)
    assert wait_for(lambda: loginpaths.assess(checker, policy).state == "usable", timeout=10)


# ---------------------------------------------------------------------------------------------------
# (b), (c) the agent process: the kernel's own TCP tables with a real sshd; a real full tmpfs; a hang


@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="openssh-server not installed")
def test_agent_sees_a_real_sshd_stop_and_start(tmp_path):
    from farm import Sshd

    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd", "127.0.0.23")
    sshd.start()
    agent = AgentProcess(tmp_path / "agent", ("--ssh-port", str(sshd.port), "--login-paths", str(tmp_path),
                                              "--min-free-mb", "1"))
    shutil.rmtree(agent.proc_root / "net")
    (agent.proc_root / "net").symlink_to("/proc/net")  # the kernel's own tables from the first sample
    try:
        def value(name: str) -> int:
            return int(agent.get(mib.oid_str(mib.obj(name).instance))[2])

        assert wait_for(lambda: value("lbSshListening") == LISTENING["listening"])
        assert value("lbStatus") != STATUS["unavailable"] and value("lbRating") > 0
        sshd.stop()
        assert wait_for(lambda: value("lbSshListening") == LISTENING["notListening"])
        assert value("lbStatus") == STATUS["unavailable"] and value("lbRating") == 0
        sshd.start()
        assert wait_for(lambda: value("lbStatus") != STATUS["unavailable"])
        assert value("lbSshListening") == LISTENING["listening"]
        rc, err = agent.close()
        assert rc == 0 and err == b""
        assert f"nothing listens on ssh port {sshd.port}" in agent.log.read_text()
    finally:
        if agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
        sshd.stop()


def test_agent_with_a_full_tmpfs_and_a_hung_mount(tmp_path, hung):
    with tmpfs(tmp_path / "home") as home:
        # A 3 s check timeout: on a loaded machine the checker thread itself can be late by a second.
        agent = AgentProcess(tmp_path / "agent", ("--login-paths", f"{home} {hung.path}", "--min-free-mb", "1",
                                                  "--login-path-timeout", "3"))
        try:
            def value(name: str) -> str:
                return agent.get(mib.oid_str(mib.obj(name).instance))[2]

            def reaches(path_state: str, status: str) -> bool:
                """Both objects at once, waited for: each GET reads the latest sample, and a sample may
                land between two GETs."""
                want = (str(PATH_STATES[path_state]), str(STATUS[status]))
                return bool(wait_for(lambda: (value("lbLoginPathStatus"), value("lbStatus")) == want, timeout=15))

            # The hung path: the agent keeps answering (every get is bounded by 5 s in AgentProcess) and,
            # once the check is older than its timeout, calls the server unavailable.
            assert reaches("notResponding", "unavailable") and value("lbRating") == "0"
            assert str(hung.path) in value("lbLoginPathProblem")
            hung.release()
            assert reaches("usable", "idle")
            fill_space(home)
            assert reaches("lowSpace", "unavailable") and value("lbLoginPathFree") == "0"
            assert value("lbLoginPathProblem") == f"{home}: 0 MiB free, below 1 MiB"
            (home / "filler").unlink()
            assert reaches("usable", "idle")
            fill_inodes(home)
            assert reaches("lowInodes", "unavailable") and value("lbLoginPathFreeInodes") == "0"
            shutil.rmtree(home / "many")
            assert reaches("usable", "idle")
            assert value("lbLoginPathProblem") == ""
            rc, err = agent.close()
            assert rc == 0 and err == b""
            log = agent.log.read_text()
            assert f"login path {hung.path} is notResponding" in log and f"login path {home} is lowSpace" in log
        finally:
            if agent.p.poll() is None:
                agent.p.kill()
                agent.p.wait()


# ---------------------------------------------------------------------------------------------------
# (d) end to end: real snmpd agents, get_hosts and snmplb status never offer an unavailable server


def test_get_hosts_never_lists_a_server_that_cannot_take_a_login(fleet, netsnmp, tmp_path):
    from support import IDLE, addrs, get_hosts, hosts_of, status

    with tmpfs(tmp_path / "fullhome") as home:
        fill_space(home)
        ok1 = fleet.add("ok1", FakeLoad(load1=0.8, cpus=4))
        nossh = fleet.add("nossh", FakeLoad(load1=0.0, cpus=4, ssh_listening=False))  # the emptiest
        full = fleet.add("full", IDLE, settings={"login_paths": f"{home} {fleet.base}", "min_free_mb": "1"})
        ok2 = fleet.add("ok2", FakeLoad(load1=2.0, cpus=4))
        servers = addrs([nossh, full, ok1, ok2])
        for algorithm in ("thresholded", "random", "best", "weighted", "fixed", "sticky"):
            for seed in range(3):
                got = hosts_of(get_hosts(servers, LB_ALGORITHM=algorithm, LB_SEED=str(seed)))
                assert sorted(got) == sorted([ok1.host, ok2.host]), (algorithm, got)
        r = status(LB_SERVERS=servers)
        assert r.returncode == 0, r.stderr
        lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:5]}
        assert lines[nossh.address].split()[1] == "Unavailable" and "ssh not listening" in lines[nossh.address]
        assert lines[full.address].split()[1] == "Unavailable"
        assert "login path full (0 MiB free)" in lines[full.address]
        assert lines[ok1.address].split()[1] == "Idle"
        j = {s["host"]: s for s in json.loads(status("--json", LB_SERVERS=servers).stdout)["servers"]}
        assert j[nossh.host]["ssh_listening"] == "notListening" and j[nossh.host]["eligible"] is False
        assert j[full.host]["login_path_status"] == "lowSpace" and j[full.host]["login_path_free_mb"] == 0
        assert j[ok1.host]["unavailable_reason"] == "" and j[ok1.host]["eligible"] is True
        # Which path: the row has no room for strings, the NMS (or the admin) reads lbLoginPathProblem.
        r = netsnmp.v2c("snmpget", full, mib.oid_str(mib.obj("lbLoginPathProblem").instance), opts=("-Oqv",))
        assert r.returncode == 0 and f"{home}: 0 MiB free, below 1 MiB" in r.stdout
