"""snmplb-chooser: what it shows (table tests), and the window under a real X server (Xvfb) with a live
fleet of real snmpd agents, driven by keys typed with xdotool.

The window's content is read through the chooser's documented test hook (SNMPLB_CHOOSER_STATE: it
writes the rows, states and selection it shows as JSON), and a screenshot checks the colours drawn.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import BIN, COMMUNITY, wait_for
from netfixtures import Silent
from support import NOBODY, drop_queue, lure, plant_queue
from snmplb.login import feedformat
from snmplb.login import mqueue
from snmplb.adminfile import AdminSettings
from snmplb.login.chooser import LAST_TIME, cells, message, offered, recommendation, refusal, selection_after
from snmplb.errors import QueueError
from snmplb.login.feedformat import FeedRow, Snapshot
from snmplb.lab.fleet import FakeLoad

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

PROJECT = Path(__file__).resolve().parent.parent

IDLE = FeedRow("a", "Idle", True, 0.2, 1000, 2, 1.0, "")
BUSY = FeedRow("b", "Busy", True, 2.0, 1000, 9, 1.0, "")
DRAIN = FeedRow("c", "Draining", False, 0.1, 1000, 1, 1.0, "")
DOWN = FeedRow("d", "Down", False, None, None, None, None, "no answer within 500 ms")


# -- pure ---------------------------------------------------------------------------------------------------

def test_selection_is_kept_across_refreshes_else_the_recommended():
    snap = Snapshot(1, "a", (IDLE, BUSY, DRAIN, DOWN))
    assert selection_after(snap, None) == "a"
    assert selection_after(snap, "c") == "c"            # the user's choice stays, even on a closed row
    assert selection_after(Snapshot(1, "b", (BUSY,)), "a") == "b"  # gone: the recommended
    assert selection_after(Snapshot(1, "", (DOWN, DRAIN)), None) == "d"
    assert selection_after(Snapshot(1, "", ()), None) is None
    # The window's own preselection (the user never moved it) follows the recommendation...
    drained = Snapshot(1, "b", (replace(IDLE, state="Draining", usable=False), BUSY))
    assert selection_after(drained, "a", preselected="a") == "b"
    assert selection_after(Snapshot(1, "", (DOWN, DRAIN)), "d", preselected="d") == "d"
    # ... the user's choice stays.
    assert selection_after(drained, "a", preselected="b") == "a"
    assert selection_after(drained, "a") == "a"


def test_message_and_refusals():
    assert message(None, 5) == "Asking the servers..."
    assert message(Snapshot(1, "", (DOWN, DRAIN)), 5).startswith("No server is available now.")
    assert message(Snapshot(1, "a", (IDLE,)), 5).startswith("Enter: log in")
    snap = Snapshot(1, "a", (IDLE, DRAIN, DOWN))
    assert refusal(snap, "a") == ""
    assert refusal(snap, "c") == "c is draining: choose another server."
    assert refusal(snap, "d") == "d is down: choose another server."
    assert refusal(snap, None) == "Choose a server first."


def test_cells():
    assert cells(IDLE, "a") == ("a", "Idle", "0.20", "2", "recommended")
    assert cells(DOWN, "a") == ("d", "Down", "-", "-", "no answer within 500 ms")
    assert cells(DRAIN, "a")[4] == "no new logins"


def test_only_configured_hosts_are_offered_each_once_and_a_time_out_of_range_is_refused():
    stranger = FeedRow("evil", "Idle", True, 0.0, 9999, 0, 0.1, "")
    snap = Snapshot(1, "evil", (stranger, IDLE, DOWN))
    assert offered(snap, {"a", "d"}) == Snapshot(1, "", (IDLE, DOWN))  # the stranger and its recommendation go
    assert offered(Snapshot(1, "a", (IDLE, BUSY)), {"a", "b"}).recommended == "a"
    assert offered(Snapshot(1, "c", (IDLE, DRAIN)), {"a", "c"}).recommended == ""  # recommended but not usable
    twice = FeedRow("a", "Down", False, None, None, None, None, "")
    assert offered(Snapshot(1, "a", (IDLE, twice)), {"a"}).rows == (IDLE,)  # one row per host: the first
    assert offered(Snapshot(1, "a", (IDLE,)), set()).rows == ()
    assert offered(Snapshot(LAST_TIME, "a", (IDLE,)), {"a"}).refreshed == LAST_TIME
    for when in (-1, LAST_TIME + 1, 10**20):
        with pytest.raises(ValueError, match="out of range"):
            offered(Snapshot(when, "a", (IDLE,)), {"a"})



IDLE2 = FeedRow("e", "Idle", True, 0.5, 1000, 4, 1.0, "")
SWAP = FeedRow("s", "Swapping", True, 0.3, 10, 3, 1.0, "")
BUSY2 = FeedRow("f", "Busy", True, 1.5, 1000, 7, 1.0, "")
IDLE_NOLOAD = FeedRow("g", "Idle", True, None, None, None, 1.0, "")
ODD = FeedRow("h", "Rebooting", True, 0.0, 1000, 0, 1.0, "")  # usable, in a state this chooser does not know


def _unusable(r: FeedRow, state: str = "Draining") -> FeedRow:
    return replace(r, state=state, usable=False)


@pytest.mark.parametrize("previous,rows,pick,expected", [
    # First refresh: the algorithm's pick, when it is in the best state offered.
    ("", (IDLE, IDLE2, BUSY), "e", "e"),
    ("", (BUSY, BUSY2), "f", "f"),
    # ... else the best state's least loaded row (the issue: the algorithm drew a Busy row next to Idle ones).
    ("", (BUSY, IDLE2, IDLE), "b", "a"),
    ("", (BUSY, IDLE2, IDLE), "", "a"),
    ("", (SWAP, BUSY), "s", "b"),
    ("", (ODD, SWAP), "h", "s"),                   # an unknown state ranks after Swapping
    ("", (ODD,), "h", "h"),
    ("", (IDLE_NOLOAD, IDLE2), "", "e"),           # an unknown load comes last among equals
    ("", (IDLE_NOLOAD, replace(IDLE2, host="g2", load_per_cpu=None)), "", "g"),  # ties: the first row
    # Kept: the algorithm drawing another server (app2, app2, app1, app2) changes nothing.
    ("a", (IDLE, IDLE2), "e", "a"),
    ("e", (IDLE, IDLE2), "a", "e"),                # kept even when another Idle row has less load
    ("b", (BUSY, BUSY2, SWAP), "f", "b"),          # no better state appeared: the Busy one stays
    # Changed: it became unusable, or a strictly better state appeared elsewhere.
    ("a", (_unusable(IDLE), IDLE2), "e", "e"),
    ("a", (_unusable(IDLE, "Down"), IDLE2, BUSY), "b", "e"),
    ("a", (replace(IDLE, state="Busy"), IDLE2), "a", "e"),   # it got Busy while e is Idle
    ("b", (BUSY, IDLE2), "b", "e"),                # an Idle row came back
    ("s", (SWAP, BUSY), "s", "b"),
    ("gone", (IDLE, IDLE2), "e", "e"),             # the previous host is no longer shown
    # Nothing usable: nothing recommended.
    ("a", (_unusable(IDLE), DRAIN, DOWN), "", ""),
    ("", (), "", ""),
])
def test_the_recommendation_is_stable_and_never_a_worse_state_than_another_usable_row(previous, rows, pick,
                                                                                      expected):
    assert recommendation(previous, Snapshot(1, pick, rows)) == expected


def test_the_recommendation_over_a_run_of_refreshes_stays_on_one_idle_row():
    """The issue's sequence: the algorithm's picks app2, app2, app1, app2 with app3 Busy; then app3's pick."""
    app1, app2 = replace(IDLE, host="app1"), replace(IDLE2, host="app2")
    app3 = replace(BUSY, host="app3")
    shown, seen = "", []
    for pick in ("app2", "app2", "app1", "app2", "app3", "app1"):
        shown = recommendation(shown, Snapshot(1, pick, (app1, app2, app3)))
        seen.append(shown)
    assert seen == ["app2"] * 6


# -- under Xvfb -------------------------------------------------------------------------------------------

def _free_display() -> int:
    for n in range(40, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number in 40..199")


@pytest.fixture
def display() -> Iterator[str]:
    """A real X server (Xvfb) on a free display number."""
    for tool in ("Xvfb", "xdotool", "import"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (scripts/setup.sh installs xvfb xdotool imagemagick)")
    pytest.importorskip("tkinter", reason="Tk is missing (apt-get install python3-tk)")
    n = _free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1024x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), timeout=15), "Xvfb did not start"
        yield f":{n}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _keys(env: dict[str, str], *keys: str, closes: bool = False) -> None:
    """Type ``keys`` as a user at the keyboard would: to whatever window has the X input focus.

    The test never gives the chooser the focus (no windowfocus, no windowactivate: that hid a chooser
    that did not take it); it waits until the chooser's window has taken it by itself, then types.
    ``closes``: the last key closes the window (nothing more to check here).
    """
    def focused() -> bool:
        windows = _xdotool(env, "search", "--onlyvisible", "--class", "snmplb-chooser").split()
        return bool(windows) and _xdotool(env, "getwindowfocus").strip() in windows

    assert wait_for(focused, timeout=20), "the chooser's window does not have the keyboard focus"
    subprocess.run(["xdotool", "key", "--clearmodifiers", "--delay", "150", *keys], env=env, check=not closes,
                   timeout=30, capture_output=True)


def _xdotool(env: dict[str, str], *args: str) -> str:
    """xdotool's output; it only reads or types here: it never moves the focus (no windowfocus/windowactivate)."""
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30).stdout


def _histogram(png: Path) -> str:
    r = subprocess.run(["convert", str(png), "-format", "%c", "histogram:info:-"], capture_output=True,
                       text=True, timeout=60)
    return r.stdout.upper()


def test_choose_with_keys_from_the_feed_and_a_drain_changes_the_row(fleet, display, tmp_path):
    idle = fleet.add("idle", FakeLoad(load1=0.8, cpus=4, sessions=(("a", "h"), ("b", "h"))))
    busy = fleet.add("busy", FakeLoad(load1=8.0, cpus=4, sessions=(("c", "h"),)))
    drain = fleet.add("drain", admin=AdminSettings(state="draining"))
    silent = Silent("127.0.0.49")
    queue = f"/snmplb-test-chooser-{os.getpid()}"
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "LB_ALGORITHM": "best", "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"),
           "LB_SERVERS": " ".join(i.address for i in (idle, busy, drain)) + " " + silent.address}
    feed = subprocess.Popen([str(BIN / "snmplb"), "feed", "--queue", queue, "--json", str(tmp_path / "feed.json"),
                             "--refresh", "1", "--idle", "0", "--for", "120"], env=env, stderr=subprocess.DEVNULL)
    chooser = None
    try:
        assert wait_for(lambda: (tmp_path / "feed.json").exists(), timeout=20)
        chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", queue],
                                   env={**env, "SNMPLB_CHOOSER_STATE": str(state)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        expected = [(idle.host, "Idle"), (busy.host, "Busy"), (drain.host, "Draining"), ("127.0.0.49", "Down")]

        def settled() -> dict:
            # A cold agent (snmpd starts pass_persist at the first request) may miss the first 500 ms
            # deadline on a loaded machine: that server reads Down until the next refresh.
            st = _state(state)
            return st if [(r["host"], r["state"]) for r in st.get("rows", [])] == expected else {}

        s = wait_for(settled, timeout=30)
        assert s, _state(state)
        assert s["source"] == "queue"
        assert s["selected"] == s["recommended"] == idle.host  # preselected
        assert s["rows"][0]["note"] == "recommended" and s["rows"][3]["note"] == "no answer within 500 ms"
        assert s["rows"][0]["load"] == "0.20" and s["rows"][0]["sessions"] == "2"
        # The screenshot shows the rows in their states' colours (the README's picture).
        time.sleep(0.5)
        shot = tmp_path / "chooser.png"
        subprocess.run(["import", "-display", display, "-window", "root", "-trim", "+repage", str(shot)],
                       check=True, timeout=60, capture_output=True)
        colours = _histogram(shot)
        for bg in ("#FDEBC8", "#E4E4E4", "#F7D0D0"):  # Busy, Draining, Down rows (Idle is under the selection)
            assert bg in colours, bg
        if os.environ.get("SNMPLB_UPDATE_SCREENSHOT"):
            shutil.copy(shot, PROJECT / "docs" / "chooser.png")
        # The user moves to the busy server; then the admin drains the idle one: its row changes at the
        # next refresh, and the user's selection stays where it was.
        _keys(env, "Down")
        assert wait_for(lambda: _state(state).get("selected") == busy.host, timeout=10)
        idle.set_admin(AdminSettings(state="draining"))
        s = wait_for(lambda: (st := _state(state)) and st["rows"][0]["state"] == "Draining" and st, timeout=20)
        assert s and s["selected"] == busy.host and s["recommended"] == busy.host
        assert s["rows"][0]["usable"] is False and s["rows"][0]["note"] == "no new logins"
        # Enter on a draining server is refused with a clear line; the window stays.
        _keys(env, "Down", "Return")
        assert wait_for(lambda: "draining: choose another server" in _state(state).get("message", ""), timeout=10)
        assert chooser.poll() is None
        # Up, Enter: the printed host is the one selected; exit 0.
        _keys(env, "Up", "Return", closes=True)
        out, err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0, err
        assert out == busy.host + "\n"
    finally:
        if chooser is not None and chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        feed.send_signal(signal.SIGTERM)
        feed.wait(timeout=15)
        silent.stop()
        try:
            mqueue.unlink(queue)
        except QueueError:
            pass


def test_no_feed_polls_itself_says_none_available_and_escape_cancels(display, tmp_path):
    silent = [Silent("127.0.0.49"), Silent("127.0.0.50")]
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "300",
           "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"), "SNMPLB_CHOOSER_STATE": str(state),
           "LB_SERVERS": " ".join(s.address for s in silent)}
    chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", f"/snmplb-test-none-{os.getpid()}",
                                "--refresh", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        s = wait_for(lambda: _state(state).get("rows") and _state(state), timeout=20)
        assert s["source"] == "poll"  # no queue: it polls the fleet itself
        assert [r["state"] for r in s["rows"]] == ["Down", "Down"]
        assert s["message"].startswith("No server is available now.")
        _keys(env, "Return")  # nothing to log in to: refused, still open
        assert wait_for(lambda: "is down: choose another server" in _state(state).get("message", ""), timeout=10)
        _keys(env, "Escape", closes=True)
        out, _err = chooser.communicate(timeout=20)
        assert chooser.returncode == 1 and out == ""
    finally:
        if chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        for s in silent:
            s.stop()


def test_no_display_is_a_clear_error(tmp_path):
    env = {"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:9", "SNMPLB_CLIENT_CONF": str(tmp_path / "none")}
    r = subprocess.run([str(BIN / "snmplb-chooser")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot open the window" in r.stderr and r.stdout == ""


def test_a_silent_feed_makes_the_chooser_poll_itself(fleet, display, tmp_path):
    app = fleet.add("app", FakeLoad(load1=0.4, cpus=2))
    queue = f"/snmplb-test-silent-{os.getpid()}"
    q = mqueue.Queue.create(queue, maxmsg=1, msgsize=8192)  # a queue whose feed never publishes
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"), "SNMPLB_CHOOSER_STATE": str(state),
           "LB_SERVERS": app.address}
    chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", queue, "--stale", "1", "--refresh", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        s = wait_for(lambda: _state(state).get("rows") and _state(state), timeout=20)
        assert s["source"] == "poll" and s["rows"][0]["state"] == "Idle" and s["selected"] == app.host
        _keys(env, "Return", closes=True)
        out, _err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0 and out == app.host + "\n"
    finally:
        if chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        q.close()
        mqueue.unlink(queue)


@pytest.mark.parametrize("owner,mode", [(NOBODY, 0o600), (0, 0o622)], ids=["another-user", "root-writable-by-all"])
def test_the_chooser_refuses_a_queue_not_made_by_the_feed(fleet, display, tmp_path, owner, mode):
    app = fleet.add("app")
    queue = f"/snmplb-test-hostile-{os.getpid()}"
    plant_queue(queue, owner, mode, lure(app.host))
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"), "LB_SERVERS": app.address}
    chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", queue, "--stale", "60", "--refresh", "1"],
                               env={**env, "SNMPLB_CHOOSER_STATE": str(state)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        s = wait_for(lambda: (st := _state(state)) and any(r["state"] != "Down" for r in st["rows"]) and st,
                     timeout=30)
        assert s, _state(state)
        assert [r["host"] for r in s["rows"]] == [app.host] and s["selected"] == app.host
        assert s["source"] == "poll"  # the planted queue refused: the chooser polled the fleet itself
        _keys(env, "Return", closes=True)
        out, err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0 and out == app.host + "\n"
        assert f"queue {queue}:" in err and ("owned by uid 65534" in err or f"mode {mode:04o}" in err), err
    finally:
        if chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        drop_queue(queue)


def test_a_host_outside_the_choosers_own_servers_is_never_offered(fleet, display, tmp_path):
    """A feed (a real one, trusted: root's queue, 0600) configured with more servers than the chooser
    recommends one the chooser does not know: neither that row nor that recommendation is shown."""
    busy = fleet.add("busy", FakeLoad(load1=8.0, cpus=4))
    stranger = fleet.add("stranger", FakeLoad(load1=0.1, cpus=4))  # idle: the feed's "best" pick
    queue = f"/snmplb-test-stranger-{os.getpid()}"
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "500",
           "LB_ALGORITHM": "best", "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf")}
    feed = subprocess.Popen([str(BIN / "snmplb"), "feed", "--queue", queue, "--no-json", "--refresh", "1",
                             "--idle", "0", "--for", "120"],
                            env={**env, "LB_SERVERS": f"{busy.address} {stranger.address}"}, stderr=subprocess.DEVNULL)
    chooser = None
    try:
        assert wait_for(lambda: _queue_exists(queue), timeout=20)
        chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", queue, "--stale", "60"],
                                   env={**env, "LB_SERVERS": busy.address, "SNMPLB_CHOOSER_STATE": str(state)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        s = wait_for(lambda: (st := _state(state)) and st["rows"] and st["rows"][0]["state"] == "Busy" and st,
                     timeout=30)
        assert s, _state(state)
        assert s["source"] == "queue" and [r["host"] for r in s["rows"]] == [busy.host]
        # The feed's pick (the stranger) is dropped; the chooser recommends among its own rows only.
        assert s["selected"] == busy.host and s["recommended"] == busy.host
        _keys(env, "Return", closes=True)
        out, err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0 and out == busy.host + "\n", err
    finally:
        if chooser is not None and chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        feed.send_signal(signal.SIGTERM)
        feed.wait(timeout=15)


def _queue_exists(queue: str) -> bool:
    try:
        mqueue.Queue.open(queue).close()
    except QueueError:
        return False
    return True


_BAD_HOST = "127.0.0.51"  # configured; nothing needs to answer there: the rows come from the queue


@pytest.mark.parametrize("bad", [
    b"SNMPLB-FEED 1 1700000000 - 1\n\tIdle\t1\t0.10\t900\t5\t1.0\t-\n",
    f"SNMPLB-FEED 1 {10**20} {_BAD_HOST} 1\n{_BAD_HOST}\tIdle\t1\t0.10\t900\t5\t1.0\t-\n".encode()],
    ids=["empty-host", "time-out-of-range"])
def test_one_bad_message_costs_one_refresh_not_the_ones_after(display, tmp_path, bad):
    """The queue is root's, 0600 (what the feed makes, so trusted); the test writes the messages: good,
    bad, good. The bad one is skipped (a line on stderr); the next one is shown."""
    host = _BAD_HOST
    queue = f"/snmplb-test-badmsg-{os.getpid()}"
    q = mqueue.Queue.create(queue, maxmsg=1, msgsize=8192)
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"),
           "SNMPLB_CHOOSER_STATE": str(state), "LB_SERVERS": host}
    chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", queue, "--stale", "600"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def good(sessions: int) -> bytes:
        row = FeedRow(host, "Idle", True, 0.1, 900, sessions, 1.0, "")
        return feedformat.encode(Snapshot(int(time.time()), host, (row,)))

    def send(data: bytes) -> None:
        assert wait_for(lambda: q.attributes().curmsgs == 0, timeout=20), "the chooser stopped reading"
        assert q.send(data)
        assert wait_for(lambda: q.attributes().curmsgs == 0, timeout=20), "the chooser stopped reading"

    def shows(sessions: int) -> bool:
        return bool(wait_for(lambda: [r.get("sessions") for r in _state(state).get("rows", [])] == [str(sessions)],
                             timeout=20))

    try:
        send(good(1))
        assert shows(1), _state(state)
        send(bad)
        send(good(2))
        assert shows(2), (_state(state), chooser.poll())
        assert chooser.poll() is None
        _keys(env, "Return", closes=True)
        out, err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0 and out == host + "\n"
        assert "skipped" in err, err
    finally:
        if chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        q.close()
        mqueue.unlink(queue)


# -- the person at the screen (issue 21) ----------------------------------------------------------------------

def test_on_a_bare_x_server_the_chooser_takes_the_keyboard_itself_and_sits_in_the_middle(display, tmp_path):
    """No window manager (LTSP 5's screen script and current LTSP's X session run it so): Xvfb's input
    focus is PointerRoot, and the pointer rests in a corner away from the window. Keys typed with
    `xdotool key` (XTEST: they go wherever the X input focus is; the test gives the focus to no one) must
    reach the chooser: Down moves to the second server, Return prints it."""
    first, second = "127.0.0.51", "127.0.0.52"  # configured; the rows come from the queue
    queue = f"/snmplb-test-focus-{os.getpid()}"
    q = mqueue.Queue.create(queue, maxmsg=1, msgsize=8192)  # root's, 0600: what the feed makes
    rows = tuple(FeedRow(h, "Idle", True, 0.1, 900, 1, 1.0, "") for h in (first, second))
    assert q.send(feedformat.encode(Snapshot(int(time.time()), first, rows)))
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"),
           "SNMPLB_CHOOSER_STATE": str(state), "LB_SERVERS": f"{first} {second}"}
    # The pointer rests bottom right, where no window opens. xdotool stays connected (its sleep): Xvfb
    # resets itself, the pointer back in the middle, when its last client leaves.
    pointer = subprocess.Popen(["xdotool", "mousemove", "1020", "596", "sleep", "600"], env=env)
    assert wait_for(lambda: _xdotool(env, "getmouselocation", "--shell").split()[:2] == ["X=1020", "Y=596"],
                    timeout=20), _xdotool(env, "getmouselocation")
    chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", queue, "--stale", "600"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _state(state).get("selected") == first, timeout=20), _state(state)
        window = wait_for(lambda: _xdotool(env, "search", "--onlyvisible", "--class", "snmplb-chooser").split(),
                          timeout=20)
        assert window, "the chooser's window did not appear"
        # The chooser took the X input focus by itself (read with XGetInputFocus, changed by no one here).
        focused = wait_for(lambda: _xdotool(env, "getwindowfocus").strip() in window, timeout=20)
        assert focused, (_xdotool(env, "getwindowfocus"), window)
        # It sits in the middle of the 1024x600 screen, where a user looks.
        geo = dict(line.split("=", 1) for line in _xdotool(env, "getwindowgeometry", "--shell", window[0]).split())
        x, y, w, h = (int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        assert abs(x + w / 2 - 512) <= 8 and abs(y + h / 2 - 300) <= 8, geo
        assert _xdotool(env, "getmouselocation", "--shell").split()[:2] == ["X=1020", "Y=596"]  # pointer untouched
        subprocess.run(["xdotool", "key", "--clearmodifiers", "--delay", "150", "Down", "Return"], env=env,
                       capture_output=True, timeout=30)
        out, err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0 and out == second + "\n", (out, err, _state(state))
    finally:
        if chooser.poll() is None:
            chooser.kill()
            chooser.wait()
        pointer.kill()
        pointer.wait()
        q.close()
        mqueue.unlink(queue)


def _refreshes(path: Path, count: int, timeout: float = 60) -> list[dict]:
    """The window's state at each of the next ``count`` refreshes (told apart by their refresh time),
    bounded by ``timeout``."""
    seen: dict[int, dict] = {}
    first = _state(path).get("refreshed")
    end = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < end:
        st = _state(path)
        if st.get("refreshed") not in (None, first):
            seen.setdefault(st["refreshed"], st)
        time.sleep(0.1)
    return list(seen.values())


def test_the_recommended_row_stays_put_while_the_window_is_open_and_is_never_busy_next_to_idle(fleet, display,
                                                                                            tmp_path):
    """LB_ALGORITHM=random draws another server at each refresh, the Busy one included: the window's
    recommended row stays on one Idle server refresh after refresh, moves only when that server stops
    taking logins (drained), then stays on the other Idle one; the selection, which the user never moved,
    follows it, and Enter logs in there."""
    app1 = fleet.add("app1", FakeLoad(load1=0.4, cpus=4))
    app2 = fleet.add("app2", FakeLoad(load1=0.8, cpus=4))
    app3 = fleet.add("app3", FakeLoad(load1=8.0, cpus=4))  # Busy
    idle = {app1.host, app2.host}
    state = tmp_path / "chooser-state.json"
    env = {"PATH": os.environ["PATH"], "DISPLAY": display, "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "800",
           "LB_ALGORITHM": "random", "SNMPLB_CLIENT_CONF": str(tmp_path / "none.conf"),
           "SNMPLB_CHOOSER_STATE": str(state), "LB_SERVERS": " ".join(i.address for i in (app1, app2, app3))}
    chooser = subprocess.Popen([str(BIN / "snmplb-chooser"), "--queue", "", "--refresh", "1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        hosts = [app1.host, app2.host, app3.host]
        up = wait_for(lambda: [r["state"] for r in _state(state).get("rows", [])] == ["Idle", "Idle", "Busy"],
                      timeout=30)
        assert up, _state(state)
        runs = _refreshes(state, 6)
        assert len(runs) == 6, runs
        recommended = [s["recommended"] for s in runs]
        assert len(set(recommended)) == 1 and recommended[0] in idle, recommended
        first = recommended[0]
        for s in runs:
            assert [r["host"] for r in s["rows"] if r["note"] == "recommended"] == [first], s
            assert s["selected"] == first and [r["host"] for r in s["rows"]] == hosts
        # The recommended server is drained: the other Idle one takes over, and keeps it.
        (app1 if first == app1.host else app2).set_admin(AdminSettings(state="draining"))
        other = (idle - {first}).pop()
        assert wait_for(lambda: _state(state).get("recommended") == other, timeout=30), _state(state)
        runs = _refreshes(state, 4)
        assert [s["recommended"] for s in runs] == [other] * 4, [s["recommended"] for s in runs]
        # The user never moved the selection: it followed the recommendation off the drained row.
        assert all(s["selected"] == other for s in runs), [s["selected"] for s in runs]
        _keys(env, "Return", closes=True)
        out, err = chooser.communicate(timeout=20)
        assert chooser.returncode == 0 and out == other + "\n", (out, err)
    finally:
        if chooser.poll() is None:
            chooser.kill()
            chooser.wait()
