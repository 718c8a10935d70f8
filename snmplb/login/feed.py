"""`snmplb feed`: poll the fleet every few seconds while a greeter wants it, publish each refresh.

Runs on the thin client (like get_hosts, the same poll: ``gethosts.gather``
and ``algorithms.decide``). Each refresh goes

- to a POSIX message queue (default /snmplb-feed, one message slot, mode 0600,
  or 0640 with --group): the text format of ``feedformat`` that a C greeter
  parses with chroot/snmplb-feed.h. A full queue never blocks: the oldest
  message is received and dropped, so a late reader gets the newest at once;
- and as JSON to a file (default /run/snmplb/feed.json), replaced atomically.

Trust (issue 22): the queue is created exclusively (O_EXCL), never taken
over; a leftover of a feed of ours that died is removed first, any other
queue of that name is refused (``open_queue``); ``untrusted`` is the rule a
reader applies to the queue it opened.

It stops (and removes its queue) on SIGTERM, SIGINT or SIGHUP, after --for
seconds or --count refreshes, and when no reader has taken a message from
the queue for --idle seconds (default 60): the fleet is polled only while
someone looks. docs/feed.md has the format and the cost: one GET per
server per refresh per running feed.
"""

from __future__ import annotations

import argparse
import errno
import grp
import os
import random
import signal
import stat
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snmplb.login import feedformat
from snmplb.login import mqueue
from snmplb.errors import QueueError, TrustError
from snmplb.login.feedformat import Snapshot

if TYPE_CHECKING:
    from snmplb.client.settings import ClientSettings

QUEUE = "/snmplb-feed"
JSON_PATH = Path("/run/snmplb/feed.json")
REFRESH_S = 5.0
IDLE_S = 60.0
MODES = (0o600, 0o640)  # the queue's and the JSON file's: only the feed's user writes; 0640 lets --group read


def settings_from(env: Mapping[str, str]) -> tuple[ClientSettings, list[str]]:
    """The thin client's settings as get_hosts reads them: client.conf, then the environment (non-empty wins)."""
    from snmplb.client.clientconf import read_client_conf
    from snmplb.client.settings import VARIABLES, from_env

    file_values, problems = read_client_conf(env, frozenset(v.name for v in VARIABLES))
    settings, more = from_env({**file_values, **{k: v for k, v in env.items() if v.strip()}})
    return settings, problems + more


def poll_once(settings: ClientSettings, rng: random.Random, client_id: str, now: Callable[[], float] = time.time) -> Snapshot:
    """One refresh: poll every configured server (get_hosts' path) and the algorithm's recommendation."""
    from snmplb.client.algorithms import Context, decide
    from snmplb.client.deadline import after
    from snmplb.client.gethosts import gather

    servers, choice, _why = gather(settings, rng, deadline=after(settings.timeout_ms))  # each refresh: its own
    decision = decide(settings.algorithm, servers, Context(settings, rng, client_id, choice))
    return feedformat.snapshot(servers, decision.hosts, now())


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


def trusted_owners() -> frozenset[int]:
    """Whose queue, file and directory are believed: this process's user (a feed run as the greeter's user,
    as docs/feed.md says) and root (a feed run as root with --group)."""
    return frozenset((os.geteuid(), 0))


def untrusted(st: os.stat_result, owners: Collection[int]) -> str:
    """Why a queue or file said to be the feed's cannot be believed; "" when it can.

    Rules: a regular file (a queue is one, on Linux's mqueue file system), owned by one of ``owners``,
    with one of the feed's MODES exactly (nobody but its owner may write it; no set-id or sticky bit).
    ``st`` is the fstat of the descriptor the caller goes on to read or write: a check of the name would
    leave a window for another user to put something else there.
    """
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file: not the feed's"
    if st.st_uid not in owners:
        return f"owned by uid {st.st_uid}, mode {mode:04o}: not the feed's"
    if mode not in MODES:
        return f"mode {mode:04o}: not the feed's (0600 or 0640)"
    return ""


def open_queue(name: str, mode: int, gid: int, log: Callable[[str], None]) -> mqueue.Queue:
    """Create the feed's queue (one message slot of MSGSIZE bytes), exclusively.

    Rules: the queue is created with O_EXCL (``mqueue.Queue.create``), never opened. When the name
    exists, it is a leftover of a feed that died (queues outlive their creator) only if the open queue
    passes ``untrusted`` (this user's or root's, mode 0600 or 0640): then it is removed and created
    again, once, and the log says so. Anything else (another user's queue, or one others may write or
    we may not open) is refused with TrustError and left as it is: the feed never publishes on, nor
    drains, a queue someone else may hold open. A second feed on the same name therefore replaces the
    first one's queue (the first stops at its --idle limit, and never removes its successor's).
    """
    try:
        return mqueue.Queue.create(name, maxmsg=1, msgsize=feedformat.MSGSIZE, mode=mode, gid=gid)
    except QueueError as exc:
        if exc.errno != errno.EEXIST:
            raise
    try:
        with mqueue.Queue.open(name) as old:
            st = old.stat()
    except QueueError as exc:
        if exc.errno != errno.ENOENT:
            raise TrustError(f"exists and cannot be opened ({exc}): not the feed's; "
                             "refusing to start (its owner or root must remove it)") from None
        st = None  # gone meanwhile: create it below
    if st is not None:
        why = untrusted(st, trusted_owners())
        if why:
            raise TrustError(f"exists, {why}; refusing to start (its owner or root must remove it)")
        try:
            mqueue.unlink_if_same(name, st)
        except QueueError as exc:
            raise TrustError(f"exists, a leftover this user cannot remove ({exc}); refusing to start") from None
        log(f"queue {name}: removed a leftover of an earlier feed (uid {st.st_uid}, "
            f"mode {stat.S_IMODE(st.st_mode):04o})")
    try:
        return mqueue.Queue.create(name, maxmsg=1, msgsize=feedformat.MSGSIZE, mode=mode, gid=gid)
    except QueueError as exc:
        if exc.errno == errno.EEXIST:
            raise TrustError("created again by someone else as the leftover was removed; "
                             "refusing to start") from None
        raise


def open_drain(writer: mqueue.Queue) -> mqueue.Queue:
    """A second, read-only descriptor of the writer's own queue (publish_latest drains through it).

    Opened by name, so it is checked to be the same queue (device and inode) as ``writer``: TrustError if not.
    """
    drain = mqueue.Queue.open(writer.name)
    a, b = drain.stat(), writer.stat()
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        drain.close()
        raise TrustError("replaced by another queue while the feed opened it")
    return drain


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
    from snmplb.client.clientid import default_mac

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
    rng = random.Random(settings.seed) if settings.seed is not None else random.SystemRandom()
    client_id = settings.client_id or (default_mac() if settings.algorithm == "sticky" else "")
    writer = drain = None
    if args.queue:
        try:
            writer = open_queue(args.queue, mode, gid, log)
            drain = open_drain(writer)
        except (QueueError, TrustError, OSError) as exc:
            log(f"queue {args.queue}: {exc}")
            if writer is not None:
                _remove_queue(writer, log)
            return 1
    limits = Limits(args.idle if writer else 0.0, args.for_s, args.count)
    started = last_read = time.monotonic()
    refreshes, why = 0, ""
    try:
        while not stop.signal:
            if writer is not None and writer.attributes().curmsgs == 0 and refreshes:
                last_read = time.monotonic()  # our last message was taken: someone is looking
            snap = poll_once(settings, rng, client_id)
            if stop.signal:
                break
            if writer is not None:
                mqueue.publish_latest(writer, feedformat.encode(snap, writer.attributes().msgsize), drain)
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
            drain.close()
            _remove_queue(writer, log)
    if stop.signal:
        why = f"signal {signal.Signals(stop.signal).name}"
    log(f"stopped after {refreshes} refreshes: {why}")
    return 0


def _remove_queue(writer: mqueue.Queue, log: Callable[[str], None]) -> None:
    """Close the feed's queue and remove its name, unless the name now belongs to a later feed's queue."""
    try:
        ours = writer.stat()
        writer.close()
        mqueue.unlink_if_same(writer.name, ours)
    except (QueueError, OSError) as exc:
        log(f"queue {writer.name}: {exc}")
    finally:
        writer.close()


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


def main(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`snmplb feed` after argument parsing: settings problems to stderr, then the loop."""
    def log(message: str) -> None:
        print(f"snmplb feed: {message}", file=sys.stderr, flush=True)

    settings, problems = settings_from(env)
    for p in problems:
        log(p)
    if not settings.servers:
        log("no servers configured (LB_SERVERS)")
        return 1
    if args.count < 0:
        log("--count must be 0 or more")
        return 2
    return run(settings, args, log)
