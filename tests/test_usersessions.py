"""Each user's sessions for lbUserTable (snmplb/agent/usersessions.py): the parsers on what real servers
left behind (docs/sessions.md: xrdp 0.9.21 with Xvnc, x2goserver 4.1.0.3, Debian 12), the driver on a
process table, utmp and an X2Go database laid out in a directory, and garbage in every source."""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import threading
import time
from pathlib import Path

import pytest

from snmplb import affinity
from snmplb.agent import config as agentconf
from snmplb.agent import usersessions as us
from snmplb.agent.service import UserSessionWatch
from snmplb.agent.usersessions import Sources, UserSessions, XServer

# As seen on a real xrdp 0.9.21 session (ps, /proc/PID/cmdline), Debian 12's sesman.ini [Xvnc].
XVNC = ("Xvnc :70 -auth .Xauthority -geometry 800x600 -depth 32 -rfbauth /home/us1/.vnc/sesman_passwd-us1@vm:70 "
        "-bs -nolisten tcp -localhost -dpi 96").split()
XORG = "/usr/lib/xorg/Xorg :11 -auth .Xauthority -config xrdp/xorg.conf -noreset -nolisten tcp -logfile .xorgxrdp.%s.log".split()
# /proc/net/tcp with that Xvnc connected (xrdp on 127.0.0.1:32814 -> 5970), then after the client was killed.
TCP_CONNECTED = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1752 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 14764315 1 00000000acbc906b 100 0 0 10 0
   1: 0100007F:D318 0100007F:0D3D 01 00000000:00000000 02:000000FC 00000000     0        0 14763599 2 000000000c0c297f 21 4 1 18 -1
   2: 0100007F:1752 0100007F:802E 01 00000000:00000000 00:00000000 00000000  1001        0 14764320 1 00000000a0b885d0 20 4 16 18 8
"""
TCP_DISCONNECTED = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1752 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 14764315 1 00000000acbc906b 100 0 0 10 0
"""
# The reconnect came over ::1 (Xvnc -localhost listens on both): /proc/net/tcp6.
TCP6_CONNECTED = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1752 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 1 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:1752 00000000000000000000000001000000:AD0E 01 00000000:00000000 00:00000000 00000000  1001        0 2 1 0 20 4 16 18 8
"""
UNIX = """\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/xrdp/sockdir/xrdp_display_11
0000000000000000: 00000003 00000000 00000000 0001 03 1240 /run/xrdp/sockdir/xrdp_display_11
0000000000000000: 00000002 00000000 00010000 0001 01 1235 /run/xrdp/sockdir/xrdp_display_12
0000000000000000: 00000003 00000000 00000000 0001 03 1241 @/tmp/.X11-unix/X12
"""
X2GO_SCHEMA = """CREATE TABLE sessions(session_id varchar(500) primary key, display integer not null,
    uname varchar(100) not null, server varchar(100) not null, client inet, status char(1) not null default 'R',
    init_time timestamp not null default CURRENT_TIMESTAMP, last_time timestamp not null default CURRENT_TIMESTAMP,
    cookie char(33), agent_pid int, gr_port int, sound_port int, fs_port int, tekictrl_port int,
    tekidata_port int, unique(display))"""
NAMES = {1001: "us1", 1002: "us2"}.get


def test_xvnc_of_xrdp_sesman_is_a_session_on_its_display_and_rfb_port():
    assert us.parse_x_server(XVNC, 1001) == XServer(1001, 70, "vnc", 5970)
    assert us.parse_x_server(XVNC + ["-rfbport", "6001"], 1001).rfb_port == 6001
    assert us.parse_x_server(["/usr/bin/Xtigervnc"] + XVNC[1:], 1001).display == 70


def test_xorg_with_xrdps_config_is_a_session_and_other_x_servers_are_not():
    assert us.parse_x_server(XORG, 1002) == XServer(1002, 11, "xorg")
    assert us.parse_x_server(["/usr/lib/xorg/Xorg", ":0", "-seat", "seat0", "vt7"], 0) is None
    # a VNC server of the user's own (vncserver) is no xrdp session
    assert us.parse_x_server(["Xtigervnc", ":1", "-rfbauth", "/home/u/.vnc/passwd"], 1001) is None
    assert us.parse_x_server(["xterm", ":70"], 1001) is None
    assert us.parse_x_server([], 1001) is None
    assert us.parse_x_server(["Xvnc", "-rfbauth", "/x/sesman_passwd-u@h:1"], 1001) is None  # no display
    assert us.parse_x_server(["Xvnc", ":99999999999", "-rfbauth", "/x/sesman_passwd-u@h:1"], 1) is None


def test_a_connected_xvnc_is_a_session_and_a_disconnected_one_waits():
    servers = [us.parse_x_server(XVNC, 1001)]
    assert us.from_x_servers(servers, NAMES, us.established_ports(TCP_CONNECTED), ()) == {"us1": UserSessions(1, 0)}
    assert us.from_x_servers(servers, NAMES, us.established_ports(TCP_DISCONNECTED), ()) == {"us1": UserSessions(1, 1)}
    assert us.from_x_servers(servers, NAMES, us.established_ports(TCP6_CONNECTED), ()) == {"us1": UserSessions(1, 0)}


def test_xorgxrdp_waits_unless_a_unix_connection_to_its_display_socket_exists():
    servers = [XServer(1001, 11, "xorg"), XServer(1002, 12, "xorg")]
    got = us.from_x_servers(servers, NAMES, set(), us.connected_unix_paths(UNIX))
    assert got == {"us1": UserSessions(1, 0), "us2": UserSessions(1, 1)}


def test_an_x_server_of_an_unknown_uid_counts_for_nobody():
    assert us.from_x_servers([XServer(4242, 70, "vnc", 5970)], NAMES, set(), ()) == {}


def test_status_uid_and_garbage_tables():
    assert us.status_uid("Name:\tXvnc\nUid:\t1001\t1001\t1001\t1001\n") == 1001
    assert us.status_uid("Uid:\n") is None and us.status_uid("\0\xff") is None
    assert us.established_ports("header\n 0: zz:zz 00:00 01\n 1: 0100007F:XYZ 0:0 01\n\n") == set()
    assert us.connected_unix_paths("header\nshort line\n") == set()


def test_x2go_rows_running_suspended_terminated_and_stale():
    rows = [("us1", "R", 10), ("us1", "S", 11), ("us2", "S", 12), ("us2", "T", 13), ("us3", "S", 99),
            (None, "R", 10), ("us4", "R", None), (b"us5", "R", 10), ("us6", "R", -1), ("us7", 3, 10)]
    alive = {10, 11, 12, 13}.__contains__
    assert us.from_x2go_rows(rows, alive) == {"us1": UserSessions(2, 1), "us2": UserSessions(1, 1)}


def test_logind_and_utmp_per_user():
    files = [{"USER": "us1", "REMOTE": "1", "CLASS": "user", "STATE": "active"},
             {"USER": "us1", "REMOTE": "1", "CLASS": "user", "STATE": "online"},
             {"USER": "us2", "REMOTE": "1", "STATE": "closing"},
             {"USER": "us3", "REMOTE": "0"}, {"REMOTE": "1"}, {}]
    assert us.from_logind(files) == {"us1": UserSessions(2, 0)}
    assert us.from_utmp(utmp_records(("us1", "10.0.0.5"), ("us1", "10.0.0.6"), ("us2", ""), ("us3", "h", 8))
                        + b"torn") == {"us1": UserSessions(2, 0)}
    assert us.from_utmp(b"") == {} and us.from_utmp(os.urandom(383)) == {}


def test_desktops_and_their_own_logins_are_not_counted_twice():
    logins = {"us1": UserSessions(1, 0), "us2": UserSessions(3, 0)}
    xrdp = {"us1": UserSessions(1, 1)}
    x2go = {"us1": UserSessions(1, 0), "us3": UserSessions(1, 1)}
    assert us.combine(logins, [xrdp, x2go]) == {"us1": UserSessions(2, 1), "us2": UserSessions(3, 0),
                                                "us3": UserSessions(1, 1)}


def utmp_records(*entries: tuple) -> bytes:
    s = struct.Struct("<h2xi32s4s32s256shhi2i4i20s")
    return b"".join(s.pack(e[2] if len(e) > 2 else 7, 100 + i, b"pts/1", b"ts/1", e[0].encode(), e[1].encode(),
                           0, 0, 0, 0, 0, 0, 0, 0, 0, b"") for i, e in enumerate(entries))


def fake_proc(root: Path, processes: dict[int, tuple[list[str], int]], tcp: str = "", tcp6: str = "",
              unix: str = "") -> Path:
    for pid, (argv, uid) in processes.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (d / "status").write_text(f"Name:\t{argv[0]}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    (root / "net").mkdir(parents=True, exist_ok=True)
    for name, text in (("tcp", tcp), ("tcp6", tcp6), ("unix", unix)):
        (root / "net" / name).write_text(text)
    return root


def x2go_db(path: Path, rows: list[tuple]) -> Path:
    con = sqlite3.connect(path)
    con.execute(X2GO_SCHEMA)
    con.executemany("INSERT INTO sessions (session_id, display, uname, server, status, agent_pid) "
                    "VALUES (?, ?, ?, 'vm', ?, ?)", rows)
    con.commit()
    con.close()
    return path


def test_collect_reads_every_source(tmp_path):
    proc = fake_proc(tmp_path / "proc", {20391: (XVNC, 1001), 23100: (["x2goagent", ":50"], 1002),
                                         7: (["sshd: us3@pts/0"], 1003)}, tcp=TCP_DISCONNECTED)
    db = x2go_db(tmp_path / "x2go_sessions", [("us2-50-1_stRxterm_dp24", 50, "us2", "S", 23100),
                                               ("us2-51-1_stRxterm_dp24", 51, "us2", "R", 31337)])
    (tmp_path / "utmp").write_bytes(utmp_records(("us3", "10.0.0.7")))
    got = us.collect(Sources(logind_dir=str(tmp_path / "no-logind"), utmp=str(tmp_path / "utmp"),
                             proc=str(proc), x2go_db=str(db)), NAMES)
    assert got.users == {"us1": UserSessions(1, 1), "us2": UserSessions(1, 1), "us3": UserSessions(1, 0)}
    assert got.problems == ()


def test_logind_wins_over_utmp_where_it_runs(tmp_path):
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "4").write_text("USER=us1\nREMOTE=1\nCLASS=user\nSTATE=active\n")
    (tmp_path / "utmp").write_bytes(utmp_records(("us3", "10.0.0.7")))
    got = us.collect(Sources(str(tmp_path / "sessions"), str(tmp_path / "utmp"), "", ""), NAMES)
    assert got.users == {"us1": UserSessions(1, 0)}


def test_every_source_absent_or_off_is_nothing_and_no_problem(tmp_path):
    assert us.collect(Sources("", "", "", "")) == us.Collected({})
    missing = str(tmp_path / "missing")
    assert us.collect(Sources(missing, missing, missing + "/proc", missing), NAMES).users == {}


@pytest.mark.parametrize("junk", [b"", b"SQLite format 3\0" + b"\xff" * 4000, os.urandom(8192)])
def test_a_garbage_x2go_database_is_a_problem_line_not_a_crash(tmp_path, junk):
    (tmp_path / "db").write_bytes(junk)
    got = us.collect(Sources("", "", "", str(tmp_path / "db")), NAMES)
    assert got.users == {}
    assert len(got.problems) == 1  # an empty file is an empty database to SQLite: no table sessions


def test_an_x2go_database_of_another_schema_is_a_problem_line(tmp_path):
    con = sqlite3.connect(tmp_path / "db")
    con.execute("CREATE TABLE sessions(a, b)")
    con.commit()
    con.close()
    got = us.collect(Sources("", "", "", str(tmp_path / "db")), NAMES)
    assert got.users == {} and "OperationalError" in got.problems[0]


def test_a_fifo_for_the_database_or_utmp_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    start = time.monotonic()
    got = us.collect(Sources("", str(tmp_path / "fifo"), "", str(tmp_path / "fifo")), NAMES)
    assert time.monotonic() - start < 2
    assert got.users == {} and "not a regular file" in got.problems[0]


def test_garbage_processes_are_ignored(tmp_path):
    proc = fake_proc(tmp_path / "proc", {1: (["Xvnc", ":1", "-rfbauth", "/x/sesman_passwd-u@h:1"], 1001)},
                     tcp="\0\0garbage\nmore\xff")
    (proc / "2").mkdir()                                  # no cmdline
    (proc / "3").mkdir()
    (proc / "3" / "cmdline").write_bytes(b"Xvnc\0:3\0")   # no status
    (proc / "4").mkdir()
    (proc / "4" / "cmdline").write_bytes(os.urandom(40000))
    (proc / "4" / "status").write_bytes(os.urandom(100))
    os.mkfifo(proc / "5")                                 # not a directory
    (proc / "6").mkdir()
    os.mkfifo(proc / "6" / "cmdline")                     # a FIFO: refused, never opened blocking
    (proc / "self").mkdir()
    got = us.collect(Sources("", "", str(proc), ""), NAMES)
    assert got.users == {"us1": UserSessions(1, 1)}


def test_the_answer_to_a_question_about_a_waiting_user(tmp_path):
    key = b"k" * 32
    answers = us.Answers(key, {"us1": UserSessions(2, 1)})
    q = affinity.question(key, "us1", b"\1" * 8)
    assert answers.answer(affinity.SESSIONS.name, q) == 2 and answers.answer(affinity.WAITING.name, q) == 1
    other = affinity.question(key, "us2", b"\1" * 8)
    assert answers.answer(affinity.SESSIONS.name, other) == 0


def test_user_names_are_looked_up_once_and_failures_are_nobody():
    calls = []

    def lookup(uid: int) -> str:
        calls.append(uid)
        if uid == 2:
            raise KeyError(uid)
        return f"u{uid}"
    names = us.UserNames(lookup)
    assert [names(1), names(1), names(2), names(2)] == ["u1", "u1", None, None]
    assert calls == [1, 2]


def test_a_collection_that_hangs_never_holds_the_sampler_and_the_last_reading_stays(monkeypatch):
    release = threading.Event()
    readings = iter([us.Collected({"us1": UserSessions(1, 1)}), None])

    def fake_collect(sources, names, scan):
        got = next(readings)
        if got is None:
            release.wait(10)
            return us.Collected({})
        return got
    monkeypatch.setattr("snmplb.agent.service.collect_user_sessions", fake_collect)
    watch = UserSessionWatch(Sources(), timeout=0.2)
    assert watch.update() == ({"us1": UserSessions(1, 1)}, [])
    start = time.monotonic()
    users, problems = watch.update()
    assert time.monotonic() - start < 1
    assert users == {"us1": UserSessions(1, 1)} and "longer than" in problems[0]
    release.set()


def test_the_sources_are_settings_of_the_agent(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("session_proc = /srv/proc\nx2go_db =\n")
    config, problems = agentconf.load(conf, {})
    assert (config.session_proc, config.x2go_db, problems) == ("/srv/proc", "", [])
    config, problems = agentconf.load(conf, {"x2go_db": "relative/db"})
    assert config.x2go_db == "" and "not an absolute path" in problems[0]
    assert (agentconf.AgentConfig().session_proc, agentconf.AgentConfig().x2go_db) == \
        ("/proc", "/var/lib/x2go/x2go_sessions")


def test_the_process_table_is_scanned_again_only_every_few_seconds_and_gone_servers_drop_at_once(tmp_path):
    proc = fake_proc(tmp_path / "proc", {10: (XVNC, 1001)}, tcp=TCP_DISCONNECTED)
    now = [0.0]
    scan = us.XServerScan(rescan=5.0, clock=lambda: now[0])
    src = Sources("", "", str(proc), "")
    assert us.collect(src, NAMES, scan).users == {"us1": UserSessions(1, 1)}
    fake_proc(proc, {11: (["Xvnc", ":71", "-rfbauth", "/h/.vnc/sesman_passwd-us2@vm:71"], 1002)})
    (proc / "net" / "tcp").write_text(TCP_CONNECTED)          # xrdp connected again: seen at once
    assert us.collect(src, NAMES, scan).users == {"us1": UserSessions(1, 0)}
    now[0] = 5.0                                               # the new session: at the next scan
    assert us.collect(src, NAMES, scan).users == {"us1": UserSessions(1, 0), "us2": UserSessions(1, 1)}
    shutil.rmtree(proc / "10")                                 # a session that ended: at once
    assert us.collect(src, NAMES, scan).users == {"us2": UserSessions(1, 1)}
