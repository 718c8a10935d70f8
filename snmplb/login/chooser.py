"""snmplb-chooser: a small window where the user picks the application server (the spec's option 4).

One row per server with its state in words and a colour, its load and its
sessions; the recommended server is preselected (``recommendation``: it stays
put while the window is open, and is never a Busy row while an Idle one can
take the login); the list refreshes by itself and keeps the user's selection. Keys: arrows move, Enter logs in to
the selected server (prints its host on stdout, exit 0), Escape cancels
(exit 1). Exit 2 when the window cannot open (no display, no Tk).

The window opens in the middle of the screen and takes the keyboard focus
itself, so that it works on a bare X server with no window manager (how LTSP
runs it), wherever the pointer rests.

Where the states come from: the feed's queue (`snmplb feed`, default
/snmplb-feed) when it exists and is the feed's (owned by this user or root,
mode 0600 or 0640: ``feed.untrusted`` on the open descriptor); otherwise, or
when the feed falls silent for --stale seconds, the chooser polls the fleet
itself every --refresh seconds with the thin client's settings (the same
poll as get_hosts).

What it shows, whatever the source: only the servers of its own settings
(LB_SERVERS as ``sources.load`` reads them); a row for any other host
is dropped, and so is a recommendation of one (``offered``). A refresh it
cannot show (a time out of range, no configured server) is skipped with a
line on stderr: one bad message costs one refresh, never the ones after it.

Tk, not GTK 3: python3-tk and libtk8.6 weigh about 3 MB where GTK 3 through
PyGObject adds about 45 MB to a thin client's image, and Tk's window opens
faster (README, "The server chooser", has the numbers).

Test hook: with SNMPLB_CHOOSER_STATE=/path, the chooser writes what it shows
(rows, selection, message) as JSON to that file after every change, so tests
read the window's content without an accessibility stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from snmplb.argtypes import seconds
from snmplb.client.settings import ClientSettings
from snmplb.login.feedformat import FeedRow, Snapshot

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: Tk is imported when the window opens
    import tkinter
    from typing import Literal

STATE_HOOK = "SNMPLB_CHOOSER_STATE"
# Foreground and background per state word: green for open, amber for open but loaded, grey for closed
# by the admin or full, red for down. Words stay in the row: colour is never the only signal.
COLOURS = {"Idle": ("#0b5d1e", "#d9f2dd"), "Busy": ("#7a4a00", "#fdebc8"), "Swapping": ("#7a2e00", "#fbd5bf"),
           "Full": ("#444444", "#e4e4e4"), "Draining": ("#444444", "#e4e4e4"), "Disabled": ("#444444", "#e4e4e4"),
           "Unavailable": ("#444444", "#e4e4e4"), "Down": ("#8b0000", "#f7d0d0")}
OTHER = ("#000000", "#ffffff")
WHY_CLOSED = {"Draining": "no new logins", "Disabled": "closed by the admin", "Full": "at its session limit"}


# -- what to show: pure ---------------------------------------------------------------------------------

def cells(r: FeedRow, recommended: str) -> tuple[str, str, str, str, str]:
    """A row's columns: server, state, load per CPU, sessions, note (recommended, or why not usable)."""
    load = "-" if r.load_per_cpu is None else f"{r.load_per_cpu:.2f}"
    sessions = "-" if r.sessions is None else str(r.sessions)
    note = "recommended" if r.host == recommended else r.reason or ("" if r.usable else WHY_CLOSED.get(r.state, ""))
    return r.host, r.state, load, sessions, note


def selection_after(snap: Snapshot, previous: str | None, preselected: str | None = None) -> str | None:
    """The row to select after a refresh: the user's if still listed, else the recommended, else the first
    usable, else the first.

    ``previous`` is the row selected before the refresh, ``preselected`` the row the window itself
    selected last: while they are the same the user has not moved the selection, and it follows the
    recommendation (a preselected server that gets drained does not stay selected).
    """
    hosts = [r.host for r in snap.rows]
    if previous is not None and previous == preselected:
        previous = None
    if previous in hosts:
        return previous
    if snap.recommended in hosts:
        return snap.recommended
    usable: list[str | None] = [r.host for r in snap.rows if r.usable]  # (| None: the last resort below)
    return (usable or hosts or [None])[0]


LAST_TIME = 253402300799  # 9999-12-31 23:59:59 UTC: the last refresh time the window can print


def offered(snap: Snapshot, configured: Collection[str]) -> Snapshot:
    """What the window may show of a refresh, whichever source it came from.

    Rules: only rows whose host is one of ``configured`` (the chooser's own LB_SERVERS) are kept, in
    their order, and each host once (its first row: a window row is a host; LB_SERVERS may name one
    host at two SNMP ports); the recommendation is kept only when it names a kept usable row, else it
    is "" (the window then preselects as ``selection_after`` says). ValueError for a refresh that
    cannot be shown: a refresh time before 1970 or after 9999.
    """
    if not 0 <= snap.refreshed <= LAST_TIME:
        raise ValueError(f"refresh time {snap.refreshed} out of range")
    first: dict[str, FeedRow] = {}
    for r in snap.rows:
        if r.host in configured:
            first.setdefault(r.host, r)
    rows = tuple(first.values())
    usable = {r.host for r in rows if r.usable}
    return replace(snap, rows=rows, recommended=snap.recommended if snap.recommended in usable else "")


# How good a usable row's state is for a new login, best first; a usable row in a state not named here
# (a newer feed's word) ranks after them all.
STATE_RANK = {"Idle": 0, "Busy": 1, "Swapping": 2}


def _rank(r: FeedRow) -> int:
    return STATE_RANK.get(r.state, len(STATE_RANK))


def recommendation(previous: str, snap: Snapshot) -> str:
    """The row the window calls "recommended" after a refresh, given the one it called so before
    (``previous``, "" for none) and the refresh as ``offered`` shows it. Pure.

    Rules: only a usable row is recommended ("" when none is); the best state among the usable rows
    (``STATE_RANK``: Idle, then Busy, then Swapping, then any other) is the only one recommended, so a
    Busy row never is while an Idle one can take the login. The previous recommendation stays while it
    is a usable row in that best state: it changes only when it becomes unusable or a strictly better
    state appears elsewhere, never because the algorithm drew another server this refresh. Otherwise
    the refresh's own recommendation (the configured algorithm's pick) when it is in the best state,
    else the best-state row with the lowest load per CPU (an unknown load last; ties: the first row).
    """
    usable = [r for r in snap.rows if r.usable]
    if not usable:
        return ""
    best = min(_rank(r) for r in usable)
    candidates = [r for r in usable if _rank(r) == best]
    hosts = [r.host for r in candidates]
    if previous in hosts:
        return previous
    if snap.recommended in hosts:
        return snap.recommended
    inf = float("inf")
    return min(candidates, key=lambda r: inf if r.load_per_cpu is None else r.load_per_cpu).host


def message(snap: Snapshot | None, refresh_s: float) -> str:
    """The line under the list."""
    if snap is None:
        return "Asking the servers..."
    if not snap.rows:
        return "No server is configured."
    if not any(r.usable for r in snap.rows):
        return f"No server is available now. The list refreshes every {refresh_s:g} s; Escape cancels."
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.refreshed))
    return f"Enter: log in to the selected server. Escape: cancel. (updated {stamp})"


def refusal(snap: Snapshot | None, host: str | None) -> str:
    """Why Enter on ``host`` does not log in ("" when it may)."""
    row = next((r for r in (snap.rows if snap else ()) if r.host == host), None)
    if row is None:
        return "Choose a server first."
    if not row.usable:
        return f"{row.host} is {row.state.lower()}: choose another server."
    return ""


# -- where the states come from: thin drivers --------------------------------------------------------------

class QueueSource:
    """The feed's queue: a non-blocking receive at each tick (no thread).

    Rules: the queue is believed only when its open descriptor passes ``feed.untrusted`` (owned by this
    user or root, mode 0600 or 0640): TrustError otherwise, raised by the constructor. A message is
    heard (``silent_for`` restarts) only when it decodes and names one of ``configured``; anything else
    is skipped, with a line on stderr, so a feed that only says unusable things goes stale like a
    silent one.
    """

    name: Literal["queue"] = "queue"  # (a Literal: mypy tells the sources apart by it)

    def __init__(self, queue_name: str, configured: Collection[str] = ()) -> None:
        from snmplb.errors import TrustError
        from snmplb.login import mqueue
        from snmplb.login.feed import trusted_owners, untrusted

        self.q = mqueue.Queue.open(queue_name)
        why = untrusted(self.q.stat(), trusted_owners())
        if why:
            self.q.close()
            raise TrustError(why)
        self.configured = frozenset(configured)
        self.last = time.monotonic()

    def latest(self) -> Snapshot | None:
        from snmplb.login import feedformat

        snap = None
        for _ in range(8):  # one slot in the queue, a few in case a feed was started with more
            data = self.q.receive()
            if data is None:
                break
            try:
                got = offered(feedformat.decode(data), self.configured)
                if not got.rows:
                    raise ValueError("names none of the configured servers")
            except ValueError as exc:
                print(f"snmplb-chooser: a message from the feed skipped: {exc}", file=sys.stderr, flush=True)
                continue  # this refresh is lost, not the next ones
            snap = got
            self.last = time.monotonic()
        return snap

    def silent_for(self) -> float:
        return time.monotonic() - self.last

    def close(self) -> None:
        self.q.close()


class PollSource:
    """Polls the fleet itself in a worker thread (the poll blocks up to LB_TIMEOUT_MS)."""

    name: Literal["poll"] = "poll"

    def __init__(self, refresh_s: float, settings: ClientSettings) -> None:
        self.settings = settings
        self.refresh_s = refresh_s
        self._latest: list[Snapshot] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        from snmplb.client.driver import selection_for
        from snmplb.login.feed import poll_once

        selection = selection_for(self.settings)
        while not self._stop.is_set():
            try:
                snap = poll_once(selection) if self.settings.servers else Snapshot(int(time.time()), "", ())
            except Exception as exc:  # the thread's outer edge: the window shows the last good list
                print(f"snmplb-chooser: poll failed ({type(exc).__name__})", file=sys.stderr)
            else:
                with self._lock:
                    self._latest[:] = [snap]
            self._stop.wait(self.refresh_s)

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._latest.pop() if self._latest else None

    def silent_for(self) -> float:
        return 0.0


def open_source(queue_name: str, refresh_s: float, settings: ClientSettings) -> QueueSource | PollSource:
    """The feed's queue if it exists and may be trusted (``QueueSource``, offering only the hosts of
    ``settings``), else our own poll with ``settings``.

    A queue that exists but is refused is named on stderr with the reason (its owner and mode).
    """
    from snmplb.errors import QueueError, TrustError

    configured = frozenset(s.host for s in settings.servers)
    if queue_name:
        try:
            return QueueSource(queue_name, configured)
        except TrustError as exc:
            print(f"snmplb-chooser: queue {queue_name}: {exc}; polling the servers instead", file=sys.stderr,
                  flush=True)
        except QueueError:
            pass  # no feed runs
    return PollSource(refresh_s, settings)


# -- the window ---------------------------------------------------------------------------------------------

class Chooser:
    """The Tk window; ``result`` is the chosen host once the main loop ends (None: cancelled)."""

    COLUMNS = (("server", "Server", 220), ("state", "State", 110), ("load", "Load/CPU", 80),
               ("sessions", "Sessions", 80), ("note", "", 260))

    def __init__(self, root: tkinter.Tk, source: QueueSource | PollSource, settings: ClientSettings,
                 refresh_s: float, stale_s: float, state_file: str | None) -> None:
        from tkinter import ttk

        self.root, self.source, self.refresh_s, self.stale_s = root, source, refresh_s, stale_s
        self.settings = settings
        self.configured = frozenset(s.host for s in settings.servers)  # LB_SERVERS: the only hosts ever offered
        self.state_file = state_file
        self.snap: Snapshot | None = None
        self.result: str | None = None
        self.preselected: str | None = None  # the row the window selected itself last (selection_after)
        self.note = ""
        root.title("Choose a server")
        root.configure(padx=12, pady=12)
        ttk.Label(root, text="Choose the server to log in to", font=("TkDefaultFont", 12, "bold")).pack(anchor="w")
        self.tree = ttk.Treeview(root, columns=[c[0] for c in self.COLUMNS], show="headings",
                                 selectmode="browse", height=8)
        for key, title, width in self.COLUMNS:
            self.tree.heading(key, text=title, anchor="w")
            self.tree.column(key, width=width, anchor="w", stretch=key == "note")
        for state, (fg, bg) in COLOURS.items():
            self.tree.tag_configure(state, foreground=fg, background=bg)
        self.tree.tag_configure("other", foreground=OTHER[0], background=OTHER[1])
        self.tree.pack(fill="both", expand=True, pady=(8, 8))
        self.line = ttk.Label(root, text=message(None, refresh_s), wraplength=700)
        self.line.pack(anchor="w")
        for key in ("<Return>", "<KP_Enter>"):
            root.bind(key, lambda _e: self.choose())
        root.bind("<Escape>", lambda _e: self.cancel())
        root.protocol("WM_DELETE_WINDOW", self.cancel)
        self.tree.bind("<<TreeviewSelect>>", lambda _e: self._selection_moved())
        self.tree.focus_set()
        self._place()
        self._tick()

    def _place(self) -> None:
        """Open in the middle of the screen and take the keyboard, with or without a window manager.

        Rules: the window is mapped centred on the screen (it was withdrawn while built, so it never
        shows in a corner first); once mapped (``<Map>``), it takes the X input focus itself
        (``focus -force`` on the list). On a bare X server (LTSP 5's screen script, current LTSP's X
        session: no window manager), the focus is otherwise PointerRoot, and the keys would go to
        whatever lies under the pointer, the root window, until someone moved the mouse.
        """
        root = self.root
        root.withdraw()
        root.update_idletasks()  # the requested size, computed while nothing is mapped
        w, h = root.winfo_reqwidth(), root.winfo_reqheight()
        x = max(0, (root.winfo_screenwidth() - w) // 2)
        y = max(0, (root.winfo_screenheight() - h) // 2)
        root.geometry(f"+{x}+{y}")

        def mapped(event: tkinter.Event[tkinter.Misc]) -> None:
            if event.widget is root:  # the toplevel's own <Map>, not its children's
                self.tree.focus_force()

        root.bind("<Map>", mapped)
        root.deiconify()

    def selected(self) -> str | None:
        sel = self.tree.selection()
        return sel[0] if sel else None

    def _selection_moved(self) -> None:
        self.note = ""
        self._show_message()
        self._write_state()

    def apply(self, snap: Snapshot) -> None:
        """Show a refresh: rows replaced in place, the user's selection kept (``selection_after``).

        Rules: what is shown is ``offered(snap, configured)``, never a host outside the chooser's own
        settings, and the row called recommended is ``recommendation`` of the one shown before (stable
        while the window is open); ValueError, with nothing changed, for a refresh that cannot be shown.
        """
        snap = offered(snap, self.configured)
        snap = replace(snap, recommended=recommendation(self.snap.recommended if self.snap else "", snap))
        previous = self.selected() if self.snap is not None else None
        self.snap = snap
        hosts = [r.host for r in snap.rows]
        for iid in self.tree.get_children():
            if iid not in hosts:
                self.tree.delete(iid)
        for i, r in enumerate(snap.rows):
            tag = r.state if r.state in COLOURS else "other"
            if self.tree.exists(r.host):
                self.tree.item(r.host, values=cells(r, snap.recommended), tags=(tag,))
                self.tree.move(r.host, "", i)
            else:
                self.tree.insert("", i, iid=r.host, values=cells(r, snap.recommended), tags=(tag,))
        target = selection_after(snap, previous, self.preselected)
        if target != previous:
            self.preselected = target
        if target is not None:
            if self.selected() != target:
                self.tree.selection_set(target)
            self.tree.focus(target)
            self.tree.see(target)
        self._show_message()
        self._write_state()

    def _show_message(self) -> None:
        self.line.configure(text=self.note or message(self.snap, self.refresh_s))

    def _tick(self) -> None:
        """One look at the source, every 200 ms.

        Rules: the next look is scheduled whatever this one met: a refresh that cannot be shown is
        skipped with a line on stderr and costs that refresh only.
        """
        from tkinter import TclError

        try:
            snap = self.source.latest()
            if snap is not None:
                self.apply(snap)
            elif self.source.name == "queue" and self.source.silent_for() > self.stale_s:
                # The feed stopped (or never publishes): carry on with our own poll.
                self.source.close()
                self.source = PollSource(self.refresh_s, self.settings)
        except (ValueError, OverflowError, OSError, TclError) as exc:
            print(f"snmplb-chooser: a refresh skipped: {exc}", file=sys.stderr, flush=True)
        finally:
            self.root.after(200, self._tick)

    def choose(self) -> None:
        host = self.selected()
        why = refusal(self.snap, host)
        if why:
            self.note = why
            self._show_message()
            self._write_state()
            return
        self.result = host
        self.root.destroy()

    def cancel(self) -> None:
        self.result = None
        self.root.destroy()

    def _write_state(self) -> None:
        """The test hook (SNMPLB_CHOOSER_STATE): what the window shows, replaced atomically."""
        if not self.state_file:
            return
        snap = self.snap
        state = {"source": self.source.name, "refreshed": snap.refreshed if snap else None,
                 "recommended": snap.recommended if snap else None, "selected": self.selected(),
                 "message": self.line.cget("text"),
                 "rows": [dict(zip(("host", "state", "load", "sessions", "note"), self.tree.item(i, "values")),
                               usable=next(r.usable for r in snap.rows if r.host == i))
                          for i in self.tree.get_children()] if snap else []}
        tmp = f"{self.state_file}.tmp"
        try:
            Path(tmp).write_text(json.dumps(state))
            os.replace(tmp, self.state_file)
        except OSError:
            pass  # a test hook must never break the chooser


def main(argv: Sequence[str] | None = None) -> int:
    """snmplb-chooser: the window; the chosen host on stdout (exit 0), Escape 1, no window 2.

    The hosts it may offer are those of its own settings (``sources.load(os.environ)``: get_hosts' way
    in, client.conf under the LB_* variables), read once at start.
    """
    from snmplb.login.feed import QUEUE, REFRESH_S

    ap = argparse.ArgumentParser(prog="snmplb-chooser", description=__doc__.splitlines()[0])
    ap.add_argument("--queue", default=QUEUE, help=f"the feed's queue (default {QUEUE}); '' to always poll")
    ap.add_argument("--refresh", type=seconds(3600, low=1.0), default=REFRESH_S,
                    help=f"seconds between our own polls when no feed runs (default {REFRESH_S:g})")
    ap.add_argument("--stale", type=seconds(3600, low=1.0), default=3 * REFRESH_S,
                    help="poll ourselves when the feed has said nothing for this long (default %(default)g)")
    args = ap.parse_args(argv)
    from snmplb.client.sources import load

    settings, problems = load(os.environ)  # get_hosts' settings and rules (a bad value is named, never quoted)
    for p in problems:
        print(f"snmplb-chooser: {p}", file=sys.stderr, flush=True)
    try:
        import tkinter
    except ImportError:
        print("snmplb-chooser: Tk is missing (apt-get install python3-tk)", file=sys.stderr)
        return 2
    try:
        root = tkinter.Tk(className="snmplb-chooser")
    except tkinter.TclError as exc:
        print(f"snmplb-chooser: cannot open the window: {exc}", file=sys.stderr)
        return 2
    chooser = Chooser(root, open_source(args.queue, args.refresh, settings), settings, args.refresh, args.stale,
                      os.environ.get(STATE_HOOK) or None)
    root.mainloop()
    if chooser.result is None:
        return 1
    print(chooser.result, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
