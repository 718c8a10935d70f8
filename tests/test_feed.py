"""`snmplb feed`: its message format (table tests), and the feed run as a process against a real fleet,
read by a C program compiled here with the shipped header (the proof that a C greeter can consume it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, COMMUNITY, wait_for
from netfixtures import Silent
from support import NOBODY, drop_queue, lure, plant_queue
from snmplb.login import feedformat
from snmplb.login import mqueue
from snmplb.adminfile import AdminSettings
from snmplb.errors import QueueError
from snmplb.login.feed import Limits, read_json, stop_reason
from snmplb.login.feedformat import FeedRow, Snapshot
from snmplb.lab.fleet import FakeLoad

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

PROJECT = Path(__file__).resolve().parent.parent
READER_SRC = PROJECT / "tests" / "c" / "feed_reader.c"


# -- the format, pure ---------------------------------------------------------------------------------

def test_encode_decode_round_trip_and_unknowns_as_dash():
    snap = Snapshot(1_700_000_000, "a", (FeedRow("a", "Idle", True, 0.2, 1024, 2, 1.54, ""),
                                         FeedRow("b", "Down", False, None, None, None, None, "no answer within 500 ms")))
    data = feedformat.encode(snap)
    assert data.decode().splitlines() == [
        "SNMPLB-FEED 1 1700000000 a 2",
        "a\tIdle\t1\t0.20\t1024\t2\t1.5\t-",
        "b\tDown\t0\t-\t-\t-\t-\tno answer within 500 ms"]
    back = feedformat.decode(data)
    assert back.recommended == "a" and back.rows[1] == snap.rows[1]
    assert feedformat.from_json(feedformat.to_json(snap)) == snap


def test_reasons_and_names_cannot_break_the_lines():
    nasty = "bad\tagent\nsays\x00" + "x" * 500
    data = feedformat.encode(Snapshot(1, "", (FeedRow("h\tost", "Down", False, None, None, None, None, nasty),)))
    lines = data.decode().split("\n")
    assert lines[0] == "SNMPLB-FEED 1 1 - 1" and len(lines) == 3 and lines[2] == ""
    fields = lines[1].split("\t")
    assert len(fields) == 8 and fields[0] == "h ost" and fields[7].startswith("bad agent says")
    assert len(fields[7].encode()) <= feedformat.REASON_MAX


def test_a_message_never_exceeds_the_queue_message_size():
    rows = tuple(FeedRow(f"server-{i:03d}.example.org", "Busy", True, 1.0, 4096, 10, 2.0, "") for i in range(400))
    data = feedformat.encode(Snapshot(1, "server-000.example.org", rows), limit=8192)
    assert len(data) <= 8192
    back = feedformat.decode(data)
    assert 100 < len(back.rows) < 400 and back.rows[0].host == "server-000.example.org"
    short = tuple(FeedRow(f"s{i}", "Down", False, None, None, None, None, "") for i in range(400))
    assert len(feedformat.decode(feedformat.encode(Snapshot(1, "", short))).rows) == feedformat.MAX_SERVERS


def test_garbage_is_refused_by_the_python_reader():
    for bad in (b"", b"hello", b"SNMPLB-FEED 2 1 - 0\n", b"SNMPLB-FEED 1 1 - 2\na\tIdle\n"):
        with pytest.raises(ValueError):
            feedformat.decode(bad)


def test_stop_rules():
    lim = Limits(idle_s=60, for_s=0, count=0)
    assert stop_reason(lim, started=0, last_read=0, now=59, refreshes=12) == ""
    assert "no reader" in stop_reason(lim, started=0, last_read=0, now=60, refreshes=12)
    assert stop_reason(lim, started=0, last_read=50, now=100, refreshes=20) == ""
    assert stop_reason(Limits(0, 0, 0), 0, 0, 10**6, 10**5) == ""  # --idle 0: until a signal
    assert "ran for" in stop_reason(Limits(0, 30, 0), 0, 0, 30, 6)
    assert "refreshes" in stop_reason(Limits(0, 0, 3), 0, 0, 1, 3)


# -- the queue binding --------------------------------------------------------------------------------

def test_a_full_queue_drops_its_oldest_message_and_never_blocks():
    name = f"/snmplb-test-{os.getpid()}"
    w = mqueue.Queue.create(name, maxmsg=1, msgsize=64)
    r = mqueue.Queue.open(name)
    try:
        assert os.fstat(w.fd).st_mode & 0o777 == 0o600
        assert mqueue.publish_latest(w, b"first", r) == 0
        assert mqueue.publish_latest(w, b"second", r) == 1  # nobody read "first": dropped
        assert r.receive() == b"second" and r.receive() is None
        with pytest.raises(QueueError, match="mq_send"):
            w.send(b"x" * 65)  # larger than msgsize: the system's refusal, named
    finally:
        w.close()
        r.close()
        assert mqueue.unlink(name) and not mqueue.unlink(name)


def test_a_bad_queue_name_is_refused():
    with pytest.raises(QueueError, match="queue name"):
        mqueue.Queue.open("no-slash")
    r = subprocess.run([str(BIN / "snmplb"), "feed", "--queue", "a/b"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a queue name" in r.stderr


# -- the feed as a process, read by C -------------------------------------------------------------------

@pytest.fixture
def reader(tmp_path: Path) -> Path:
    """The C reader, compiled with the header that ships (chroot/snmplb-feed.h)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (apt-get install gcc)")
    out = tmp_path / "feed_reader"
    r = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{PROJECT / 'chroot'}",
                        "-o", str(out), str(READER_SRC), "-lrt"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def _read(reader: Path, queue: str, count: int = 1, timeout_s: int = 10, user: str | None = None
          ) -> subprocess.CompletedProcess:
    cmd = [str(reader), queue, str(count), str(timeout_s)]
    if not user:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * count + 30)
    import tempfile

    with tempfile.TemporaryDirectory() as d:  # pytest's tmp_path is not reachable by another user
        os.chmod(d, 0o755)
        cmd[0] = shutil.copy(reader, d)
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s * count + 30)


def _exists(queue: str) -> bool:
    try:
        mqueue.Queue.open(queue).close()
    except QueueError:
        return False
    return True


def _parsed(out: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The reader's last message: its header fields and each server's fields by host."""
    lines = out.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("refreshed="))
    head = dict(kv.split("=", 1) for kv in lines[start].split())
    rows = {ln.split("|")[0]: ln.split("|")[1:] for ln in lines[start + 1:start + 1 + int(head["count"])]}
    return head, rows


def test_c_reader_gets_the_live_states_from_the_queue(fleet, reader, tmp_path):
    idle = fleet.add("idle", FakeLoad(load1=0.8, cpus=4, sessions=(("a", "h"), ("b", "h"))))
    busy = fleet.add("busy", FakeLoad(load1=8.0, cpus=4))
    drain = fleet.add("drain", admin=AdminSettings(state="draining"))
    silent = Silent("127.0.0.49")
    queue = f"/snmplb-test-feed-{os.getpid()}"
    out_json = tmp_path / "run" / "feed.json"
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500", "LB_ALGORITHM": "best",
           "LB_SERVERS": " ".join(i.address for i in (idle, busy, drain)) + " " + silent.address,
           "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf")}
    feed = subprocess.Popen([str(BIN / "snmplb"), "feed", "--queue", queue, "--json", str(out_json),
                             "--refresh", "1", "--idle", "0", "--for", "120"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A reader that starts late (after several refreshes nobody read) gets the latest at once.
        assert wait_for(lambda: out_json.exists(), timeout=20)
        time.sleep(2.5)
        r = _read(reader, queue, count=1, timeout_s=1)
        assert r.returncode == 0, r.stdout
        head, rows = _parsed(r.stdout)
        assert abs(int(head["refreshed"]) - time.time()) < 30
        assert head["recommended"] == idle.host and head["count"] == "4"
        assert rows[idle.host][:5] == ["Idle", "usable=1", "load=0.20", rows[idle.host][3], "sessions=2"]
        assert rows[busy.host][0] == "Busy" and rows[busy.host][1] == "usable=1"
        assert rows[drain.host][:2] == ["Draining", "usable=0"]
        assert rows["127.0.0.49"] == ["Down", "usable=0", "load=-1.00", "free=-1", "sessions=-1", "ms=no",
                                      "reason=no answer within 500 ms"]
        # The admin drains the idle server: the next refreshes say so.
        idle.set_admin(AdminSettings(state="draining"))
        r = _read(reader, queue, count=4, timeout_s=5)
        assert r.returncode == 0, r.stdout
        head, rows = _parsed(r.stdout)
        assert rows[idle.host][:2] == ["Draining", "usable=0"] and head["recommended"] == busy.host
        # The JSON copy says the same.
        j = json.loads(out_json.read_text())
        assert {s["host"]: s["state"] for s in j["servers"]}[idle.host] == "Draining"
        assert j["recommended"] == busy.host and out_json.stat().st_mode & 0o777 == 0o600
        assert read_json(out_json).recommended == busy.host  # as a script reads it: owner and mode checked
        # Readable by the feed's user only: another user is refused.
        assert os.fstat(mqueue.Queue.open(queue).fd).st_mode & 0o777 == 0o600
        if shutil.which("setpriv"):
            r = _read(reader, queue, user="nobody")
            assert r.returncode == 1 and "Permission denied" in r.stdout
        # SIGTERM: a clean exit, the queue removed.
        feed.send_signal(signal.SIGTERM)
        assert feed.wait(timeout=15) == 0
        assert "signal SIGTERM" in feed.stderr.read()
        with pytest.raises(QueueError, match="No such file"):
            mqueue.Queue.open(queue)
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.wait()
        silent.stop()
        try:
            mqueue.unlink(queue)
        except QueueError:
            pass


def test_group_readable_queue_and_the_feed_stops_when_nobody_reads(fleet, reader, tmp_path):
    app = fleet.add("app")
    queue = f"/snmplb-test-grp-{os.getpid()}"
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500", "LB_ALGORITHM": "best",
           "LB_SERVERS": app.address, "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf")}
    feed = subprocess.Popen([str(BIN / "snmplb"), "feed", "--queue", queue, "--no-json", "--group", "nogroup",
                             "--refresh", "1", "--idle", "4", "--for", "60"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _exists(queue), timeout=20)
        r = _read(reader, queue, count=3, timeout_s=10)  # someone reads: the feed goes on
        assert r.returncode == 0 and _parsed(r.stdout)[0]["recommended"] == app.host
        st = os.fstat(mqueue.Queue.open(queue).fd)
        import grp

        assert st.st_mode & 0o777 == 0o640 and st.st_gid == grp.getgrnam("nogroup").gr_gid
        # Nobody reads any more: it stops by itself within --idle (plus a refresh), removing its queue.
        assert feed.wait(timeout=30) == 0
        assert "no reader took a message for 4 s" in feed.stderr.read()
        with pytest.raises(QueueError):
            mqueue.Queue.open(queue)
    finally:
        if feed.poll() is None:
            feed.kill()
            feed.wait()


@pytest.mark.parametrize("owner,mode", [(NOBODY, 0o600), (0, 0o622)], ids=["another-user", "root-writable-by-all"])
def test_a_c_greeter_using_the_header_refuses_a_queue_not_made_by_the_feed(reader, owner, mode):
    queue = f"/snmplb-test-hostile-c-{os.getpid()}"
    plant_queue(queue, owner, mode, lure("127.0.0.11"))
    try:
        r = subprocess.run([str(reader), queue, "1", "2"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 4 and r.stdout == "untrusted queue: not the feed's\n", r.stdout
    finally:
        drop_queue(queue)


def test_c_parser_refuses_garbage(reader):
    for bad in (b"", b"garbage\n", b"SNMPLB-FEED 2 1 - 0\n", b"SNMPLB-FEED 1 1 - 1\nonly\tthree\tfields\n",
                b"SNMPLB-FEED 1 1 - 999\n", b"SNMPLB-FEED 1 1 - 1\n" + b"a\t" * 9 + b"\n",
                b"SNMPLB-FEED 1 1 " + b"x" * 5000 + b" 0\n", os.urandom(3000)):
        r = subprocess.run([str(reader), "-"], input=bad, capture_output=True, timeout=10)
        assert r.returncode == 3 and r.stdout == b"unparsable\n", bad[:40]


def test_c_parser_reads_the_largest_message_the_feed_sends(reader):
    long_rows = tuple(FeedRow(f"server-{i:03d}." + "x" * 200, "Unavailable", False, None, None, None, None, "r" * 300)
                      for i in range(50))
    short_rows = tuple(FeedRow(f"s{i}", "Down", False, None, None, None, None, "") for i in range(400))
    for rows in (long_rows, short_rows):
        data = feedformat.encode(Snapshot(1, rows[0].host, rows))
        r = subprocess.run([str(reader), "-"], input=data.decode(), capture_output=True, text=True, timeout=10)
        assert r.returncode == 0
        head, parsed = _parsed(r.stdout)
        assert int(head["count"]) == len(feedformat.decode(data).rows) == len(parsed)
        assert head["recommended"] == rows[0].host


def _queue_id(queue: str) -> tuple[int, int] | None:
    """The queue's identity (device, inode) behind the name now; None when the name is free."""
    try:
        with mqueue.Queue.open(queue) as q:
            st = os.fstat(q.fd)
    except QueueError:
        return None
    return st.st_dev, st.st_ino


def test_a_leftover_queue_of_a_killed_feed_is_replaced_and_a_stopping_feed_spares_its_successor(fleet, tmp_path):
    app = fleet.add("app")
    queue = f"/snmplb-test-leftover-{os.getpid()}"
    env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "LB_SERVERS": app.address, "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf")}
    cmd = [str(BIN / "snmplb"), "feed", "--queue", queue, "--no-json", "--refresh", "1", "--idle", "0", "--for", "120"]
    feeds = []
    try:
        # A feed killed hard leaves its queue (POSIX queues outlive their creator): ours, mode 0600.
        killed = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        feeds.append(killed)
        assert wait_for(lambda: _queue_id(queue), timeout=20)
        leftover = _queue_id(queue)
        killed.kill()
        killed.wait(timeout=15)
        assert _queue_id(queue) == leftover
        # The next feed removes that leftover, says so, and publishes on a queue of its own.
        first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        feeds.append(first)
        assert wait_for(lambda: _queue_id(queue) not in (None, leftover), timeout=20)
        # A second live feed of the same user replaces the first's queue; the first, stopping, must not
        # remove its successor's queue (it removes the name only while the name is its own queue).
        first_id = _queue_id(queue)
        second = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        feeds.append(second)
        assert wait_for(lambda: _queue_id(queue) not in (None, first_id), timeout=20)
        second_id = _queue_id(queue)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
        assert "removed a leftover of an earlier feed (uid 0, mode 0600)" in first.stderr.read()
        assert _queue_id(queue) == second_id
        with mqueue.Queue.open(queue, blocking=True) as q:  # and the second one goes on publishing there
            data = q.receive(timeout=10)
        assert data is not None and feedformat.decode(data).rows[0].host == app.host
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0
        assert _queue_id(queue) is None  # its own queue: removed
    finally:
        for f in feeds:
            if f.poll() is None:
                f.kill()
                f.wait()
        try:
            mqueue.unlink(queue)
        except QueueError:
            pass
