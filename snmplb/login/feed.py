"""`snmplb feed`: poll the fleet every few seconds while a greeter wants it, publish each refresh.

Runs on the thin client (like get_hosts, the same selection: ``driver.select``,
every server polled). Each refresh goes

- to a POSIX message queue (default /snmplb-feed, one message slot, mode 0600,
  or 0640 with --group): the text format of ``feedformat`` that a C greeter
  parses with chroot/snmplb-feed.h. A full queue never blocks: the oldest
  message is received and dropped, so a late reader gets the newest at once;
- and as JSON to a file (default /run/snmplb/feed.json), replaced atomically.

Trust (docs/feed.md, "Whom a reader believes"): the queue is created
exclusively (O_EXCL), never taken over; a leftover of a feed of ours that
died is removed first, any other queue of that name is refused
(``open_queue``). The JSON file is written only into a directory of the
feed's user or root that nobody else may write (``write_json``);
``untrusted`` is the one rule its readers apply to what they opened (the
chooser to the queue, ``read_json`` to the file).

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
import signal
import stat
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snmplb import argtypes
from snmplb.login import feedformat
from snmplb.login import mqueue
from snmplb.errors import QueueError, TrustError
from snmplb.login.feedformat import Snapshot

if TYPE_CHECKING:
    from snmplb.client.selection import Selection
    from snmplb.client.settings import ClientSettings

QUEUE = "/snmplb-feed"
JSON_PATH = Path("/run/snmplb/feed.json")
REFRESH_S = 5.0
IDLE_S = 60.0
MODES = (0o600, 0o640)  # the queue's and the JSON file's: only the feed's user writes; 0640 lets --group read
JSON_MAX = 1 << 20      # bytes of JSON a reader takes (128 servers make about 40 kB)


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


def untrusted_dir(st: os.stat_result, owners: Collection[int]) -> str:
    """Why a directory may not hold the feed's JSON file; "" when it may.

    Rules: a directory owned by one of ``owners`` that neither its group nor others may write (whoever may
    write in it could put a file or link of their own under the feed's name; a sticky bit does not stop
    them from creating the name first).
    """
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid not in owners:
        return f"owned by uid {st.st_uid}: not the feed's user's nor root's"
    if mode & 0o022:
        return f"mode {mode:04o}: others may write in it"
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


def _json_dir(directory: Path) -> int:
    """An O_DIRECTORY descriptor of ``directory`` (created 0755 with its parents when missing) that passed
    ``untrusted_dir``; TrustError when it did not. The check is of the open directory, so a symbolic
    link to it is followed and its target checked."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    why = untrusted_dir(os.fstat(fd), trusted_owners())
    if why:
        os.close(fd)
        raise TrustError(f"directory {directory}: {why}; refusing to write there")
    return fd


def check_json_dir(path: Path) -> None:
    """Raise TrustError when the JSON file's directory may not hold it (``untrusted_dir``); the feed checks
    at start, so that a bad directory stops it with a clear message instead of a line per refresh."""
    os.close(_json_dir(path.parent))


def write_json(path: Path, text: str, mode: int, gid: int) -> None:
    """Replace ``path`` atomically, with its mode and group set before it appears.

    Rules: the directory must pass ``untrusted_dir`` (TrustError otherwise). The content goes to a new
    file beside ``path``, created with O_EXCL|O_NOFOLLOW relative to that checked directory's descriptor
    and given its group, then its mode, before the first byte; a rename then puts it in place (a rename
    replaces a symbolic link found at ``path``, never follows it). A reader sees the old file or the new,
    never half.
    """
    dfd = _json_dir(path.parent)
    tmp = f".{path.name}.{os.urandom(6).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                if gid >= 0:
                    os.fchown(f.fileno(), -1, gid)
                os.fchmod(f.fileno(), mode)
                f.write(text.encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(dfd)


def read_json(path: Path, owners: Collection[int] | None = None) -> Snapshot:
    """The feed's JSON file, as a reader may trust it (scripts: ``from snmplb.login.feed import read_json``).

    Rules: the directory holding it passes ``untrusted_dir``; the file is opened relative to that
    directory without following a symbolic link (a link is refused) and non-blocking (a FIFO there
    never hangs the reader); the open descriptor passes ``untrusted`` (a regular file of one of
    ``owners`` with the feed's mode); at most JSON_MAX bytes are read. ``owners`` defaults to
    ``trusted_owners()`` (the reader's own user and root). Raises TrustError when refused, OSError when
    it cannot be read, ValueError when it is not a version-1 feed document.
    """
    owners = trusted_owners() if owners is None else owners
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        why = untrusted_dir(os.fstat(dfd), owners)
        if why:
            raise TrustError(f"directory {path.parent}: {why}")
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise TrustError(f"{path}: a symbolic link: not the feed's file") from None
            raise
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        why = untrusted(os.fstat(f.fileno()), owners)
        if why:
            raise TrustError(f"{path}: {why}")
        data = f.read(JSON_MAX + 1)
    if len(data) > JSON_MAX:
        raise ValueError(f"{path}: larger than {JSON_MAX} bytes")
    try:
        return feedformat.from_json(data.decode())
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a feed document ({type(exc).__name__})") from None


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
    if args.json:
        try:
            check_json_dir(args.json)
        except TrustError as exc:
            log(f"{args.json}: {exc}")
            return 1
        except OSError:
            pass  # e.g. not allowed to create it: said at each refresh, as any failure to write
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
            snap = poll_once(selection)
            if stop.signal:
                break
            if writer is not None:
                # drain is opened with writer, so it is not None either (mypy cannot tell: ignored below)
                mqueue.publish_latest(writer, feedformat.encode(snap, writer.attributes().msgsize), drain)  # type: ignore[arg-type]
            if args.json:
                try:
                    write_json(args.json, feedformat.to_json(snap), mode, gid)
                except TrustError as exc:
                    log(f"{args.json}: {exc}")
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
            drain.close()  # type: ignore[union-attr]  # opened with writer
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


seconds = argtypes.seconds(86400, zero_ok=True)  # --idle, --for: 0 is no limit
refresh_seconds = argtypes.seconds(86400, low=1.0)  # --refresh: a shorter period multiplies the fleet's load


def queue_name(text: str) -> str:
    if not (text.startswith("/") and 1 < len(text) <= 255 and "/" not in text[1:] and text.isprintable()):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not a queue name (one leading /, no other)")
    return text


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`snmplb feed`'s options (command.py adds the subcommand)."""
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
    try:
        return run(settings, args, log)
    except QueueError as exc:  # the queue failed under us (EBADF, EAGAIN past the retries): said, not a traceback
        log(f"queue {args.queue}: {exc}; stopped")
        return 1
    except Exception as exc:  # the command's outer edge; only the type: a message may quote a setting
        log(f"internal error ({type(exc).__name__}); stopped")
        return 1
