"""A poll's one deadline: an absolute time on the monotonic clock, computed once at an edge.

As dnspython turns a lifetime into one expiration, each edge turns
LB_TIMEOUT_MS into one ``float`` on ``clock`` (``time.monotonic`` unless a
test passes its own) and hands it down: get_hosts and `snmplb pick` count it
from the process's start (``login_deadline``); `snmplb status`, `snmplb
feed` and check_snmplb from the moment they poll (``after``). Everything
below (``gethosts.choose``, ``gather``, ``poller.poll``, the lbserver's
request) only compares the clock with it: no layer converts the timeout
again, none adds a deadline of its own.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Callable, Mapping

    Clock = Callable[[], float]

WRAPPER_PID = "SNMPLB_WRAPPER_PID"  # set by chroot/get_hosts: the deadline counts from that script's start


def after(timeout_ms: int, clock: Clock = time.monotonic) -> float:
    """``timeout_ms`` from now, on ``clock``: the deadline of a poll that is not a login's."""
    return clock() + timeout_ms / 1000


def _started_ago(pid: int | str, now_boottime: float) -> float | None:
    """Seconds since process ``pid`` started, from /proc/PID/stat (field 22, clock ticks after boot)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        return now_boottime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def login_deadline(timeout_ms: int, env: Mapping[str, str], clock: Clock = time.monotonic) -> float:
    """The login's one deadline, on ``clock``: ``timeout_ms`` (LB_TIMEOUT_MS) after get_hosts started.

    Counted from the start of the process (or of the get_hosts script that runs it, when that
    script is our parent), not from the first datagram: the interpreter's start-up on a loaded thin
    client is part of the user's wait.
    """
    now = clock()
    boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
    wrapper = env.get(WRAPPER_PID, "")
    ago = None
    if wrapper.isdigit() and int(wrapper) == os.getppid():
        ago = _started_ago(wrapper, boottime)
    if ago is None:
        ago = _started_ago("self", boottime)
    timeout_s = timeout_ms / 1000
    return now - min(max(0.0, ago or 0.0), timeout_s) + timeout_s
