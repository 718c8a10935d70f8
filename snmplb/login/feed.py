"""`snmplb feed`: poll the fleet every few seconds while a greeter wants it, publish each refresh.

Runs on the thin client (like get_hosts, the same selection: ``driver.select``,
every server polled). Each refresh goes

- to a POSIX message queue (default /snmplb-feed, one message slot, mode 0600,
  or 0640 with --group): the text format of ``feedformat`` that a C greeter
  parses with chroot/snmplb-feed.h. A full queue never blocks: the oldest
  message is received and dropped, so a late reader gets the newest at once;
- and as JSON to a file (default /run/snmplb/feed.json), replaced atomically.

It stops (and removes its queue) on SIGTERM, SIGINT or SIGHUP, after --for
seconds or --count refreshes, and when no reader has taken a message from
the queue for --idle seconds (default 60): the fleet is polled only while
someone looks. docs/feed.md has the format and the cost: one GET per
server per refresh per running feed.
"""

from __future__ import annotations

import argparse
import grp
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snmplb.login import feedformat
from snmplb.login import mqueue
from snmplb.errors import QueueError
from snmplb.login.feedformat import Snapshot

if TYPE_CHECKING:
    from snmplb.client.selection import Selection
    from snmplb.client.settings import ClientSettings

QUEUE = "/snmplb-feed"
JSON_PATH = Path("/run/snmplb/feed.json")
REFRESH_S = 5.0
IDLE_S = 60.0


def poll_once(selection: Selection, now: Callable[[], float] = time.time) -> Snapshot:
    """One refresh: poll every configured server and decide (get_hosts' selection, ``driver.select``);
    the snapshot's recommendation is the decision's first host."""
    from snmplb.client.deadline import after
    from snmplb.client.driver import select

    result, _choice, _why = select(selection, deadline=after(selection.settings.timeout_ms), every=True)
    return feedformat.snapshot(result.states, result.decision.hosts, now())


@dataclass(frozen=True)
class Limits:
    """When the feed stops by itself (0: no such limit)."""

    idle_s: float = IDLE_S
    for_s: float = 0.0
    count: int = 0


def stop_reason(limits: Limits, started: float, last_read: float, now: float, refreshes: int) -> str:
    """Why the feed should stop now ("" to go on): pure, the driver passes the times."""
    if limits.count and refreshes >= limits.count:
        return f"{refreshes} refreshes done"
    if limits.for_s and now - started >= limits.for_s:
        return f"ran for {limits.for_s:g} s"
    if limits.idle_s and now - last_read >= limits.idle_s:
        return f"no reader took a message for {limits.idle_s:g} s"
    return ""


def write_json(path: Path, text: str, mode: int, gid: int) -> None:
    """Replace ``path`` atomically, with its mode and group set before it appears."""
    from snmplb.kvfile import write_atomic

    write_atomic(path, text, mode, gid)


class _Stop:
    """Set by a signal handler; the loop looks at it between short sleeps."""

    def __init__(self) -> None:
        self.signal = 0

    def __call__(self, signum: int, _frame: object) -> None:
        self.signal = signum


def run(settings: ClientSettings, args: argparse.Namespace, log: Callable[[str], None]) -> int:
    """The loop: poll, publish, sleep until the next refresh, until a limit or a signal."""
    from snmplb.client.driver import selection_for

    gid = -1
    if args.group:
        try:
            gid = grp.getgrnam(args.group).gr_gid
        except KeyError:
            log(f"--group {args.group[:40]}: no such group")
            return 2
    mode = 0o640 if gid >= 0 else 0o600
    stop = _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    selection = selection_for(settings)
    writer = drain = None
    if args.queue:
        try:
            writer = mqueue.Queue.create(args.queue, maxmsg=1, msgsize=feedformat.MSGSIZE, mode=mode)
            if gid >= 0:
                os.fchown(writer.fd, -1, gid)
            drain = mqueue.Queue.open(args.queue)
        except (QueueError, OSError) as exc:
            log(f"queue {args.queue}: {exc}")
            return 1
    limits = Limits(args.idle if writer else 0.0, args.for_s, args.count)
    started = last_read = time.monotonic()
    refreshes, why = 0, ""
    try:
        while not stop.signal:
            if writer is not None and writer.attributes().curmsgs == 0 and refreshes:
                last_read = time.monotonic()  # our last message was taken: someone is looking
            snap = poll_once(selection)
            if stop.signal:
                break
            if writer is not None:
                # drain is opened with writer, so it is not None either (mypy cannot tell: ignored below)
                mqueue.publish_latest(writer, feedformat.encode(snap, writer.attributes().msgsize), drain)  # type: ignore[arg-type]
            if args.json:
                try:
                    write_json(args.json, feedformat.to_json(snap), mode, gid)
                except OSError as exc:
                    log(f"{args.json}: {exc.strerror}")
            refreshes += 1
            next_at = time.monotonic() + args.refresh
            while not stop.signal:
                now = time.monotonic()
                why = stop_reason(limits, started, last_read, now, refreshes)
                if why or now >= next_at:
                    break
                time.sleep(min(0.2, next_at - now))  # short naps: a signal is seen within 0.2 s
            if why:
                break
    finally:
        if writer is not None:
            writer.close()
            drain.close()  # type: ignore[union-attr]  # opened with writer
            try:
                mqueue.unlink(args.queue)
            except QueueError as exc:
                log(f"queue {args.queue}: {exc}")
    if stop.signal:
        why = f"signal {signal.Signals(stop.signal).name}"
    log(f"stopped after {refreshes} refreshes: {why}")
    return 0


def seconds(text: str) -> float:
    """A number of seconds in [0, 86400] (0: no limit)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
    if not (0 <= x <= 86400):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text[:40]} is not a number of seconds in [0, 86400]")
    return x


def refresh_seconds(text: str) -> float:
    """--refresh: at least 1 s (a shorter period multiplies the fleet's load, docs/feed.md)."""
    x = seconds(text)
    if x < 1:
        raise argparse.ArgumentTypeError(f"{text[:40]} is below 1 second")
    return x


def queue_name(text: str) -> str:
    if not (text.startswith("/") and 1 < len(text) <= 255 and "/" not in text[1:] and text.isprintable()):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not a queue name (one leading /, no other)")
    return text


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`snmplb feed`'s options (cli.py adds the subcommand)."""
    ap.add_argument("--queue", type=queue_name, default=QUEUE,
                    help=f"POSIX message queue to publish on (default {QUEUE})")
    ap.add_argument("--no-queue", dest="queue", action="store_const", const="", help="publish only the JSON file")
    ap.add_argument("--json", type=Path, default=JSON_PATH, help=f"JSON copy of each refresh (default {JSON_PATH})")
    ap.add_argument("--no-json", dest="json", action="store_const", const=None, help="no JSON file")
    ap.add_argument("--group", help="make the queue and file 0640 and of this group (the greeter's); default 0600")
    ap.add_argument("--refresh", type=refresh_seconds, default=REFRESH_S,
                    help=f"seconds between polls (default {REFRESH_S:g}; each polls every server once)")
    ap.add_argument("--idle", type=seconds, default=IDLE_S,
                    help=f"stop when no reader took a message for this long (default {IDLE_S:g}; 0: never)")
    ap.add_argument("--for", dest="for_s", type=seconds, default=0.0, help="stop after this many seconds")
    ap.add_argument("--count", type=int, default=0, help="stop after this many refreshes")


def main(args: argparse.Namespace, settings: ClientSettings, problems: list[str]) -> int:
    """`snmplb feed` after argument parsing and the settings (``sources.load``): their problems to
    stderr, then the loop."""
    def log(message: str) -> None:
        print(f"snmplb feed: {message}", file=sys.stderr, flush=True)

    for p in problems:
        log(p)
    if not settings.servers:
        log("no servers configured (LB_SERVERS)")
        return 1
    if args.count < 0:
        log("--count must be 0 or more")
        return 2
    return run(settings, args, log)
