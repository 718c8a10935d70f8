"""The feed's message: the fleet's state at one refresh, as text a C greeter parses without a JSON library.

Pure: values in, bytes out (and back). The format, version 1 (docs/feed.md,
chroot/snmplb-feed.h)::

    SNMPLB-FEED 1 <refresh unix time> <recommended host or -> <number of server lines>\\n
    <host>\\t<state>\\t<usable 1|0>\\t<load per CPU>\\t<free MiB>\\t<sessions>\\t<answer ms>\\t<reason>\\n
    ...

Every field is present and never empty: "-" stands for unknown (a server
that did not answer has no load) and for no reason. Host names and reasons
are sanitised (no tab, newline or other control character; reasons cut to
REASON_MAX bytes), so splitting on tab and newline is always right. A
message never exceeds the queue's message size nor MAX_SERVERS lines:
server lines that do not fit are left out and the header counts only the
lines present.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from snmplb import mib
from snmplb.client.serverstate import ServerState
from snmplb.client.describe import state_label, unavailable_reason

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

MAGIC = "SNMPLB-FEED"
VERSION = 1
REASON_MAX = 120   # bytes of a reason kept (the C header's SNMPLB_FEED_REASON_MAX - 1)
NAME_MAX = 255     # a DNS name's length
MSGSIZE = 8192     # Linux's default msgsize_max: what an unprivileged feed may ask for
MAX_SERVERS = 128  # the C header's SNMPLB_FEED_MAX_SERVERS: a C reader has room for this many lines


@dataclass(frozen=True)
class FeedRow:
    """One server as the feed publishes it (None: unknown)."""

    host: str
    state: str                  # status.state_label: Down, Idle, Busy, Swapping, Full, Draining, Disabled, ...
    usable: bool                # may take a login now (ServerState.eligible)
    load_per_cpu: float | None
    free_mib: int | None
    sessions: int | None
    answer_ms: float | None
    reason: str                 # why it is down or unavailable; "" when nothing to say
    failure: str = ""           # why it is down, the kind (serverstate.Failure): JSON only, not in the text format


@dataclass(frozen=True)
class Snapshot:
    """One refresh: when (Unix time), the recommended host ("" when none is usable) and the rows."""

    refreshed: int
    recommended: str
    rows: tuple[FeedRow, ...]


def _clean(text: str, limit: int) -> str:
    """No control characters (tabs and newlines are the format's separators), at most ``limit`` UTF-8 bytes."""
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    data = text.encode()[:limit]
    return data.decode(errors="ignore")


def row(s: ServerState) -> FeedRow:
    """What the feed says of one polled server."""
    reason = s.reason if not s.ok else unavailable_reason(s)
    if not s.ok:
        return FeedRow(s.name, state_label(s), False, None, None, None, None, reason, s.failure)
    v = s.values
    return FeedRow(s.name, state_label(s), s.eligible, mib.scaled("lbLoadPerCpu", v["lbLoadPerCpu"]), v["lbMemAvailable"] // 1024,
               v["lbSessions"], s.rtt_ms, reason)


def snapshot(servers: Sequence[ServerState], recommended: Sequence[str], now: float) -> Snapshot:
    """The refresh's value: ``recommended`` is the algorithm's order; only a usable host is recommended."""
    usable = {s.name for s in servers if s.eligible}
    first = next((h for h in recommended if h in usable), "")
    return Snapshot(int(now), first, tuple(row(s) for s in servers))


def _num(x: float | int | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _line(r: FeedRow) -> str:
    return "\t".join((_clean(r.host, NAME_MAX) or "-", r.state, "1" if r.usable else "0",
                      _num(r.load_per_cpu, ".2f"), _num(r.free_mib, "d"), _num(r.sessions, "d"),
                      _num(r.answer_ms, ".1f"), _clean(r.reason, REASON_MAX) or "-")) + "\n"


def encode(snap: Snapshot, limit: int = MSGSIZE) -> bytes:
    """The message, at most ``limit`` bytes (rows that do not fit are left out, the header says how many fit)."""
    lines: list[str] = []
    size = 100 + len(snap.recommended.encode())  # room for the header
    for r in snap.rows[:MAX_SERVERS]:
        ln = _line(r)
        if size + len(ln.encode()) > limit:
            break
        lines.append(ln)
        size += len(ln.encode())
    head = f"{MAGIC} {VERSION} {snap.refreshed} {_clean(snap.recommended, NAME_MAX) or '-'} {len(lines)}\n"
    return (head + "".join(lines)).encode()


def _opt(text: str, kind: Callable[[str], T]) -> T | None:
    return None if text == "-" else kind(text)


def decode(data: bytes) -> Snapshot:
    """Parse a message (the chooser's side); ValueError when it is not a version-1 feed message."""
    lines = data.decode(errors="replace").split("\n")
    head = lines[0].split(" ")
    if len(head) != 5 or head[0] != MAGIC or head[1] != str(VERSION):
        raise ValueError("not an SNMPLB-FEED 1 message")
    count = int(head[4])
    rows = []
    for ln in lines[1:1 + count]:
        f = ln.split("\t")
        if len(f) != 8:
            raise ValueError("a server line without its 8 fields")
        rows.append(FeedRow(f[0], f[1], f[2] == "1", _opt(f[3], float), _opt(f[4], int), _opt(f[5], int),
                        _opt(f[6], float), "" if f[7] == "-" else f[7]))
    if len(rows) != count:
        raise ValueError("fewer server lines than the header counts")
    return Snapshot(int(head[2]), "" if head[3] == "-" else head[3], tuple(rows))


def to_json(snap: Snapshot) -> str:
    """The same as JSON, for scripts (the file under /run)."""
    return json.dumps({"format": f"{MAGIC} {VERSION}", "refreshed": snap.refreshed,
                       "recommended": snap.recommended or None,
                       "servers": [asdict(r) for r in snap.rows]}, indent=2) + "\n"


def from_json(text: str) -> Snapshot:
    """Read back ``to_json``'s text; ValueError (or KeyError) on anything else."""
    j = json.loads(text)
    if j.get("format") != f"{MAGIC} {VERSION}":
        raise ValueError("not an SNMPLB-FEED 1 document")
    return Snapshot(int(j["refreshed"]), j["recommended"] or "", tuple(FeedRow(**r) for r in j["servers"]))
