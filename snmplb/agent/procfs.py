"""Load, CPU, memory and swap figures from /proc.

The parsers are pure functions of the files' text; ``read_proc`` is the thin
driver that reads them under a configurable root (tests and the demo point it
at a fake /proc). /proc files never block, but the root is configurable, so
every read is bounded (safefile: regular files only, non-blocking, capped):
a slow pass_persist answer freezes the whole snmpd.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from snmplb.errors import SnmplbError
from snmplb.safefile import UnsafeFile, describe, read_bounded

_READ_LIMIT = 1 << 20
_CPU_LINE = re.compile(r"^cpu\d+\s", re.MULTILINE)


class ProcError(SnmplbError):
    """A /proc file is missing or cannot be understood."""


@dataclass(frozen=True)
class ProcSample:
    """One reading of /proc. Memory in KiB, swap counters in pages."""

    taken_at: float
    load1: float
    load5: float
    load15: float
    cpus: int
    mem_total: int
    mem_available: int
    swap_total: int
    swap_free: int
    pswpin: int
    pswpout: int
    uptime: float | None = None  # seconds since boot; None when /proc/uptime is unreadable


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The three load averages of /proc/loadavg."""
    fields = text.split()
    try:
        loads = tuple(float(f) for f in fields[:3])
    except ValueError as exc:
        raise ProcError(f"loadavg: {exc}") from None
    if len(loads) != 3 or any(not 0 <= x < float("inf") for x in loads):  # also nan
        raise ProcError(f"loadavg: unexpected content {text[:60]!r}")
    return loads


def _key_values(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_meminfo(text: str) -> tuple[int, int, int, int]:
    """(MemTotal, MemAvailable, SwapTotal, SwapFree) in KiB from /proc/meminfo.

    Kernels before 3.14 have no MemAvailable; then MemFree + Buffers + Cached
    is the closest estimate.
    """
    kv = _key_values(text)
    if "MemTotal" not in kv:
        raise ProcError("meminfo: no MemTotal")
    avail = kv.get("MemAvailable")
    if avail is None:
        avail = kv.get("MemFree", 0) + kv.get("Buffers", 0) + kv.get("Cached", 0)
    total = kv["MemTotal"]
    return total, min(avail, total), kv.get("SwapTotal", 0), kv.get("SwapFree", 0)


def parse_vmstat(text: str) -> tuple[int, int]:
    """(pswpin, pswpout) page counters from /proc/vmstat (0 when absent)."""
    kv = _key_values(text)
    return kv.get("pswpin", 0), kv.get("pswpout", 0)


def parse_cpu_count(stat_text: str) -> int:
    """Online CPUs: the ``cpuN`` lines of /proc/stat (offline CPUs have none)."""
    return max(1, len(_CPU_LINE.findall(stat_text)))


def parse_uptime(text: str) -> float | None:
    """Seconds since boot, the first field of /proc/uptime."""
    try:
        value = float(text.split()[0])
    except (ValueError, IndexError):
        return None
    return value if 0 <= value < float("inf") else None  # also nan


def _read(root: Path, name: str) -> str:
    try:
        return read_bounded(root / name, _READ_LIMIT, truncate=True).decode("ascii", "replace")
    except (OSError, UnsafeFile) as exc:
        raise ProcError(describe(exc, root / name)) from None


def read_proc(root: Path, now: float) -> ProcSample:
    """Read loadavg, meminfo, vmstat and stat under ``root`` (normally /proc)."""
    l1, l5, l15 = parse_loadavg(_read(root, "loadavg"))
    total, avail, swap_total, swap_free = parse_meminfo(_read(root, "meminfo"))
    pswpin, pswpout = parse_vmstat(_read(root, "vmstat"))
    try:
        uptime = parse_uptime(_read(root, "uptime"))
    except ProcError:
        uptime = None
    return ProcSample(
        taken_at=now, load1=l1, load5=l5, load15=l15, cpus=parse_cpu_count(_read(root, "stat")),
        mem_total=total, mem_available=avail, swap_total=swap_total, swap_free=swap_free,
        pswpin=pswpin, pswpout=pswpout, uptime=uptime,
    )


def swap_rates(history: Sequence[ProcSample], window: float) -> tuple[float, float]:
    """Pages swapped (in, out) per second over the last ``window`` seconds of ``history``.

    ``history`` is oldest first. The oldest sample inside the window (or the
    newest one before it, when none is) is compared with the newest. A counter
    that went backwards (reboot, fake /proc rewritten) counts as no activity.
    """
    if len(history) < 2:
        return 0.0, 0.0
    newest = history[-1]
    base = history[0]
    for sample in history:
        if newest.taken_at - sample.taken_at <= window:
            break
        base = sample
    span = newest.taken_at - base.taken_at
    if span <= 0:
        return 0.0, 0.0
    return (max(0, newest.pswpin - base.pswpin) / span, max(0, newest.pswpout - base.pswpout) / span)
