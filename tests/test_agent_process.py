"""snmplb-agent run as a process, the way snmpd runs it: stdin/stdout protocol, silence on stderr."""

from __future__ import annotations

import os
import time

import pytest

from snmplb import mib
from snmplb.adminfile import AdminSettings, save_admin
from snmplb.lab.fleet import FakeLoad, write_fake_proc, write_fake_sessions
from support import LOAD1, AgentProcess

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

STATUS = mib.oid_str(mib.obj("lbStatus").instance)


@pytest.fixture
def agent_proc(tmp_path):
    a = AgentProcess(tmp_path)
    yield a
    if a.p.poll() is None:
        a.p.kill()
        a.p.wait()


def test_answers_and_exits_cleanly_on_eof_without_a_byte_on_stderr(agent_proc):
    assert agent_proc.get(LOAD1) == [LOAD1, "gauge", "50"]
    assert agent_proc.get(mib.oid_str(mib.obj("lbSessions").instance))[2] == "1"
    rc, err = agent_proc.close()
    assert rc == 0 and err == b""
    assert agent_proc._buf == b""


def test_garbage_on_stdin_leaves_it_answering(agent_proc):
    garbage = [b"\x00\x01\x02\xff\xfe\n", b"z" * 100_000 + b"\n", b"frobnicate\n", b"get\n\n\nnot-an-oid\n",
               b"getnext\n.1.3.6.1.4.1.8072.9999.9999.377.1.25.0.9\n", b"set\n" + LOAD1.encode() + b"\ninteger 1\n",
               "get\n.1.3.6.1.4.1.\u00e9\n".encode(), b"\r\n\t\n"]
    for g in garbage:
        agent_proc.send(g)
    # Answers owed: NONE (not-an-oid), the lbRow after lbSessionSource.0.9, not-writable, NONE.
    assert agent_proc.readline() == "NONE"
    assert agent_proc.readline() == mib.oid_str(mib.ROW.instance)
    agent_proc.readline(), agent_proc.readline()
    assert agent_proc.readline() == "not-writable"
    assert agent_proc.readline() == "NONE"
    assert agent_proc.get(LOAD1) == [LOAD1, "gauge", "50"]
    assert agent_proc.p.poll() is None
    rc, err = agent_proc.close()
    assert rc == 0 and err == b""


def test_values_follow_proc_and_admin_changes_within_about_a_second(agent_proc):
    assert agent_proc.get(LOAD1)[2] == "50"
    write_fake_proc(agent_proc.proc_root, FakeLoad(load1=7.25))
    save_admin(agent_proc.admin, AdminSettings(state="draining"))
    t0 = time.monotonic()
    while agent_proc.get(LOAD1)[2] != "725" or agent_proc.get(STATUS)[2] != "5":
        assert time.monotonic() - t0 < 3.0, "values did not follow within 3 s"
        time.sleep(0.05)
    age = int(agent_proc.get(mib.oid_str(mib.obj("lbDataAge").instance))[2])
    assert 0 <= age < 1500


def test_bad_config_and_broken_proc_are_logged_not_printed(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("interval = soon\nwhat = ever\n")
    a = AgentProcess(tmp_path, ("--config", str(conf)))
    (tmp_path / "admin.conf").write_text("state = sideways\n")
    try:
        assert a.get(LOAD1)[2] == "50"
        for name in ("loadavg", "meminfo"):
            (a.proc_root / name).unlink()
        time.sleep(0.6)
        assert a.get(LOAD1)[2] == "50"  # the last good sample stays, and its age grows
        rc, err = a.close()
        assert rc == 0 and err == b""
    finally:
        if a.p.poll() is None:
            a.p.kill()
    log = a.log.read_text()
    for needle in ("interval", "what", "state", "loadavg"):
        assert needle in log


def test_a_restarted_agent_says_its_login_rate_is_not_known_yet(tmp_path):
    # Issue 23: lbLoginRateSpan is the seconds of lbLoginRate's 10 s window the agent has watched: 0 or
    # little just after it started (its lbLoginRate 0 is then "not known yet"), never more than it has
    # run, 10 once it has watched a whole window; in lbRow too. A restart starts it over.
    def span(agent: AgentProcess) -> int:
        return int(agent.get(mib.oid_str(mib.obj("lbLoginRateSpan").instance))[2])

    for run in ("first", "restarted"):
        started = time.monotonic()
        agent = AgentProcess(tmp_path / run)
        try:
            seen = [span(agent)]
            assert seen[0] <= time.monotonic() - started and seen[0] < 10
            while seen[-1] < 10:
                assert time.monotonic() - started < 30, seen
                time.sleep(0.5)
                seen.append(span(agent))
                assert seen[-1] >= seen[-2] and seen[-1] <= time.monotonic() - started, seen
            row = mib.decode_row(agent.get(mib.oid_str(mib.ROW.instance))[2])
            assert row is not None and row["lbLoginRateSpan"] == 10 and row["lbLoginRate"] == 0
            rc, err = agent.close()
            assert rc == 0 and err == b""
        finally:
            if agent.p.poll() is None:
                agent.p.kill()
                agent.p.wait()


@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="openssh-server not installed")
def test_counts_real_ssh_connections_to_a_real_sshd_and_their_rate(tmp_path):
    import shutil
    import socket

    from farm import Sshd

    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd", "127.0.0.22")
    sshd.start()
    agent = AgentProcess(tmp_path / "agent", ("--ssh-port", str(sshd.port)))
    conns: list[socket.socket] = []
    try:
        def value(name: str) -> str:
            return agent.get(mib.oid_str(mib.obj(name).instance))[2]

        assert value("lbSshConnections") == "0"
        shutil.rmtree(agent.proc_root / "net")
        (agent.proc_root / "net").symlink_to("/proc/net")  # from now on, the kernel's own tables
        time.sleep(0.5)  # a sample or two with no connection: the baseline
        conns = [socket.create_connection((sshd.host, sshd.port), timeout=5) for _ in range(3)]
        end = time.monotonic() + 5
        while value("lbSshConnections") != "3" and time.monotonic() < end:
            time.sleep(0.1)
        assert value("lbSshConnections") == "3"  # our own outbound ends (remote port = sshd's) do not count
        assert value("lbLoginRate") == "18"  # 3 new in the last 10 s
        # Three logins still connecting (sshd waits for them to authenticate): lbLoginsConnecting 3. A
        # session registers (logind writes its file; the test writes it, sshd here runs without PAM and
        # logind): it matches one of them, and 2 are still connecting.
        assert value("lbLoginsConnecting") == "3"
        write_fake_sessions(agent.sessions, (("ann", "h1"), ("bob", "h2")))
        end = time.monotonic() + 5
        while value("lbSessions") != "2" and time.monotonic() < end:
            time.sleep(0.1)
        assert value("lbSessions") == "2" and value("lbLoginsConnecting") == "2"
        row = mib.decode_row(agent.get(mib.oid_str(mib.ROW.instance))[2])
        assert row is not None and row["lbLoginsConnecting"] == 2
        for c in conns:
            c.close()
        end = time.monotonic() + 5
        while value("lbSshConnections") != "0" and time.monotonic() < end:
            time.sleep(0.1)
        assert value("lbSshConnections") == "0"
        assert value("lbLoginRate") == "18"  # gone again, but they were opened within the window
        assert value("lbLoginsConnecting") == "0"  # closed: no login is connecting any more
        rc, err = agent.close()
        assert rc == 0 and err == b""
    finally:
        for c in conns:
            c.close()
        if agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
        sshd.stop()
