"""The server's verdict on itself: lbStatus and lbRating, by documented rules.

The rules are stated in SNMPLB-MIB (SnmplbServerStatus, lbRating) and in
docs/mib.md; this module is their only implementation. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the status rules (the agent's config can change them).

    busy_load: load per CPU at or above which the server is busy (1.0).
    low_mem_percent: available memory below this percentage means busy (10).
    swap_threshold: swap-in plus swap-out pages/s that count as swapping (50).
    """

    busy_load: float = 1.0
    low_mem_percent: int = 10
    swap_threshold: float = 50.0


@dataclass(frozen=True)
class Figures:
    """The numbers the rules look at, in MIB units (load x100, KiB)."""

    load_per_cpu: int
    mem_total: int
    mem_available: int
    swapping: bool
    sessions: int
    weight: int
    max_sessions: int
    admin_state: str
    # Whether a login can be taken at all (lbStatus unavailable). Defaults: nothing known against it.
    ssh_listening: bool | None = None  # None: the kernel's TCP tables could not be read (unknown)
    login_paths_usable: bool = True  # every login path has room and answered (diskspace.LoginPaths)


def can_take_login(f: Figures) -> bool:
    """False when a login would fail whatever the load: nothing listens on the ssh port, or a path a
    login writes to is full, out of inodes, unreadable or hung. Unreadable TCP tables (None) are
    unknown, and unknown is not down: they alone never close the server."""
    return f.ssh_listening is not False and f.login_paths_usable


def mem_available_percent(mem_total: int, mem_available: int) -> int:
    """Available memory as a whole percentage of total, rounded down."""
    if mem_total <= 0:
        return 0
    return max(0, min(100, mem_available * 100 // mem_total))


def is_swapping(in_rate: float, out_rate: float, policy: HealthPolicy) -> bool:
    """True when the swap traffic reaches the policy's threshold."""
    return in_rate + out_rate >= policy.swap_threshold


def server_status(f: Figures, policy: HealthPolicy) -> str:
    """The first rule of SnmplbServerStatus that holds."""
    if f.admin_state == "disabled":
        return "disabled"
    if f.admin_state == "draining":
        return "draining"
    if not can_take_login(f):
        return "unavailable"
    if f.max_sessions and f.sessions >= f.max_sessions:
        return "full"
    if f.swapping:
        return "swapping"
    if (f.load_per_cpu >= round(policy.busy_load * 100)
            or mem_available_percent(f.mem_total, f.mem_available) < policy.low_mem_percent):
        return "busy"
    return "idle"


def rating(f: Figures, status: str) -> int:
    """lbRating: 0 (never) .. 100 (idle), by the formula in the MIB."""
    if status in ("full", "draining", "disabled", "unavailable") or f.weight <= 0:
        return 0
    cpu = max(0.0, 1.0 - f.load_per_cpu / 200.0)
    mem = f.mem_available / f.mem_total if f.mem_total > 0 else 0.0
    score = round(50 * cpu + 50 * mem)
    if f.swapping:
        score = min(score, 10)
    return max(1, min(100, score))
