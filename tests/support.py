"""Helpers shared by several test files (test files import from here, never from each other).

Rows and server states for the pure algorithm tables; get_hosts run as LDM runs it;
a hostile SNMPv3 discovery Report; snmplb-agent as a process with bounded reads; a FUSE mount that hangs.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from conftest import BIN, BUSY, COMMUNITY, IDLE  # noqa: F401 (IDLE, BUSY: re-exported)
from snmplb import mib
from snmplb.client import ber
from snmplb.client.serverstate import ServerState
from snmplb.lab.fleet import PROJECT, FakeLoad, write_fake_proc, write_fake_sessions

STATUS = mib.obj("lbStatus").enums
ADMIN = mib.obj("lbAdminState").enums


def row(load_per_cpu=0.5, cpus=4, mem_pct=50, sessions=0, users=0, weight=100, max_sessions=0,
        admin="enabled", swapping=False, rating=None, age=100, in_service=86400) -> dict[str, int]:
    total = 8_000_000
    lpc = round(load_per_cpu * 100)
    status = ("disabled" if admin == "disabled" else "draining" if admin == "draining" else
              "full" if max_sessions and sessions >= max_sessions else "swapping" if swapping else
              "busy" if lpc >= 100 else "idle")
    values = {o.name: min(o.enums.values()) if o.enums else 0 for o in mib.ROW_FIELDS}  # legal: enums take their first
    values.update(lbLoad1=lpc * cpus, lbLoad5=lpc * cpus, lbLoad15=lpc * cpus, lbCpuCount=cpus, lbLoadPerCpu=lpc,
                  lbMemTotal=total, lbMemAvailable=total * mem_pct // 100, lbMemAvailablePercent=mem_pct,
                  lbSwapTotal=100, lbSwapFree=100, lbSwapping=1 if swapping else 2, lbSessions=sessions,
                  lbUsers=users, lbWeight=weight, lbMaxSessions=max_sessions, lbAdminState=ADMIN[admin],
                  lbStatus=STATUS[status], lbDataAge=age, lbSessionSource=1, lbInService=in_service,
                  lbRating=rating if rating is not None else max(1, 100 - lpc // 2),
                  lbLoginRateSpan=10)  # an agent that has watched its whole login-rate window
    return values


def up(name, rtt=1.0, **kw) -> ServerState:
    return ServerState(name, 161, row(**kw), "", rtt)


def down(name, reason="no answer within 1000 ms") -> ServerState:
    return ServerState(name, 161, None, reason)


GET_HOSTS = PROJECT / "chroot" / "get_hosts"


LOAD1 = mib.oid_str(mib.obj("lbLoad1").instance)


def make_utmp_record(user: str, host: str, line: str = "pts/0", pid: int = 1, ut_type: int = 7) -> bytes:
    """One utmp record (struct utmp as snmplb.agent.logins reads it; 7 is USER_PROCESS)."""
    from snmplb.agent.logins import _UTMP

    return _UTMP.pack(ut_type, pid, line.encode(), b"", user.encode(), host.encode(), 0, 0, 0, 0, 0, 0, 0, 0, 0, b"")


def choose(settings, rng, client_id, probe, deadline):
    """A test driver of the login selection (``Selection``), as ``driver.select`` drives it, with
    ``probe(polled_settings, hedge, usable, deadline) -> (states, lbserver_choice, why)`` in place of the
    poll: the tables below decide what each server answers. Returns (states, decision, why)."""
    from snmplb.client.selection import Selection

    selection = Selection(settings, rng, client_id)
    plan = selection.plan()
    states, choice, why = probe(settings._replace(servers=plan.polled), plan.hedge, selection.usable, deadline)
    result = selection.decide(plan, states, choice)
    return list(result.states), result.decision, why


def get_hosts(servers: str, **env: str) -> subprocess.CompletedProcess:
    """Run chroot/get_hosts with LDM's environment: the lts.conf variables, and SERVER."""
    full = {"PATH": os.environ["PATH"], "SERVER": "127.0.0.1", "LB_SERVERS": servers,
            "SNMPLB_PYTHON": sys.executable, "LB_SNMP_COMMUNITY": COMMUNITY, **env}
    return subprocess.run([str(GET_HOSTS)], env=full, capture_output=True, text=True, timeout=60)


def hosts_of(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1, repr(r.stdout)  # ONE line
    line = r.stdout[:-1]
    assert "  " not in line and line == line.strip(), repr(line)  # single spaces
    return line.split(" ") if line else []


def addrs(insts) -> str:
    return " ".join(i.address for i in insts)


def report(msg_id: int, boots: int, etime: int, engine: bytes = b"\x80\x00\x1f\x88\x04hostile") -> bytes:
    """An unauthenticated discovery Report, as any host that saw the request's msgID can send."""
    usm = ber.enc_seq(ber.enc_str(engine), ber.enc_int(boots), ber.enc_int(etime), ber.enc_str(b""),
                      ber.enc_str(b""), ber.enc_str(b""))
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(65507), ber.enc_str(b"\x00"), ber.enc_int(3))
    vb = ber.enc_seq(ber.enc_seq(ber.enc_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)), ber.enc_int(1, ber.COUNTER32)))
    pdu = ber.enc_seq(ber.enc_int(0), ber.enc_int(0), ber.enc_int(0), vb, tag=ber.REPORT)
    return ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm), ber.enc_seq(ber.enc_str(engine), ber.enc_str(b""), pdu))


class AgentProcess:
    """A running snmplb-agent with a line-oriented request helper (every read bounded in time)."""

    def __init__(self, tmp: Path, extra: tuple[str, ...] = ()) -> None:
        self.proc_root, self.sessions = tmp / "proc", tmp / "sessions"
        self.admin, self.log = tmp / "admin.conf", tmp / "agent.log"
        write_fake_proc(self.proc_root, FakeLoad(load1=0.5))
        write_fake_sessions(self.sessions, (("ann", "h1"),))
        os.mkfifo(self.sessions / "1.ref")
        self.p = subprocess.Popen(
            [str(BIN / "snmplb-agent"), "--proc-root", str(self.proc_root), "--sessions-dir", str(self.sessions),
             "--admin-file", str(self.admin), "--log-file", str(self.log), "--interval", "0.2", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buf = b""

    def send(self, data: bytes) -> None:
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def readline(self, timeout: float = 5.0) -> str:
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                raise TimeoutError("agent did not answer")
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError("agent closed stdout")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def get(self, oid: str) -> list[str]:
        self.send(f"PING\nget\n{oid}\n".encode())
        assert self.readline() == "PONG"
        first = self.readline()
        return [first] if first == "NONE" else [first, self.readline(), self.readline()]

    def close(self) -> tuple[int, bytes]:
        self.p.stdin.close()
        rc = self.p.wait(timeout=10)
        err = self.p.stderr.read()
        return rc, err


def status(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500", **env}
    return subprocess.run([str(BIN / "snmplb"), "status", *args], env=full, capture_output=True, text=True,
                          timeout=60)


# -- a hostile local user (the feed's queue and file) ---------------------------------------------------------

NOBODY = 65534  # uid and gid of user nobody: the other local user of the feed's trust tests
EVIL = "127.0.0.66"  # the host a hostile user recommends: never configured, never contacted


def as_nobody(action) -> None:
    """Run ``action`` in a forked child that has become user nobody (uid and gid 65534, no groups): a real
    process of another unprivileged user. The test skips unless it runs as root."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the hostile process failed"


def lure(real_host: str) -> bytes:
    """A hostile feed message: the configured server down, EVIL idle and recommended."""
    from snmplb.login import feedformat
    from snmplb.login.feedformat import FeedRow, Snapshot

    return feedformat.encode(Snapshot(int(time.time()), EVIL, (
        FeedRow(EVIL, "Idle", True, 0.01, 64000, 0, 0.3, ""),
        FeedRow(real_host, "Down", False, None, None, None, None, "no answer within 500 ms"))))


def plant_queue(name: str, owner: int, mode: int, message: bytes) -> None:
    """Create the queue ``name`` as ``owner`` (NOBODY, or 0 for a root queue of the wrong mode) holding
    ``message``, and leave it: POSIX queues outlive their creator."""
    from snmplb.login import mqueue

    def plant() -> None:
        q = mqueue.Queue.create(name, maxmsg=1, msgsize=8192, mode=mode)
        q.send(message)
        q.close()

    if owner == NOBODY:
        as_nobody(plant)
    else:
        plant()
    with mqueue.Queue.open(name) as q:
        st = os.fstat(q.fd)
    assert (st.st_uid, st.st_mode & 0o7777) == (owner, mode)


def drop_queue(name: str) -> None:
    """Remove the queue ``name`` if it is there."""
    from snmplb.errors import QueueError
    from snmplb.login import mqueue

    try:
        mqueue.unlink(name)
    except QueueError:
        pass


class HungMount:
    """A real FUSE mount whose server never answers: every lookup under it blocks in the kernel,
    as on an NFS mount whose server died. Closing the /dev/fuse descriptor aborts the connection
    (the blocked calls fail with ENOTCONN) and the mount is then detached."""

    def __init__(self, target: Path) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self.target = target
        target.mkdir()
        self._fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = f"fd={self._fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if self._libc.mount(b"snmplb-hung", str(target).encode(), b"fuse.snmplb-hung", 0, opts) != 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), "mount fuse")

    def release(self) -> None:
        os.close(self._fd)
        self._libc.umount2(str(self.target).encode(), 2)  # MNT_DETACH
