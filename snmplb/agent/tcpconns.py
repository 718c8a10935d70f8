"""Counting established inbound TCP connections to a local port, from /proc/net/tcp and tcp6.

An LDM login opens its ssh connection at once; logind registers the session
seconds later. Counting established connections to sshd's port shows a login
about a second after the thin client chose the server (the agent's sampling
interval), which is what lets a login storm see the logins still connecting.
Comparing the connections of one sample with the previous sample's gives the
new ones, and ``LoginRate`` turns those into lbLoginRate.
The same tables tell whether anything listens on the port (lbSshListening): a
server whose sshd is stopped answers SNMP but refuses every login.
The parsers are pure; ``read_ssh`` reads the files (procfs: never blocks).
"""

from __future__ import annotations

import collections
from pathlib import Path

from snmplb.safefile import UnsafeFile, read_bounded

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only
    from collections.abc import Iterator

_ESTABLISHED = "01"
_LISTEN = "0A"
_LIMIT = 16 << 20


def _sockets(text: str, state: str, port: int) -> Iterator[list[str]]:
    """The fields of each socket in ``state`` whose LOCAL port is ``port``, in one /proc/net/tcp{,6} text."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != state:
            continue
        _, _, local_port = fields[1].rpartition(":")
        try:
            if int(local_port, 16) == port:
                yield fields
        except ValueError:
            continue


def parse_established(text: str, port: int) -> set[str]:
    """Established connections whose LOCAL port is ``port`` in one /proc/net/tcp{,6} text,
    each as "local remote" (hex addresses and ports, as the kernel writes them)."""
    return {f"{fields[1]} {fields[2]}" for fields in _sockets(text, _ESTABLISHED, port)}


def parse_listening(text: str, port: int) -> bool:
    """True when one /proc/net/tcp{,6} text has a socket in state LISTEN on local port ``port``
    (on any local address: sshd bound to one interface still takes logins there)."""
    return any(True for _ in _sockets(text, _LISTEN, port))


def _read_tables(proc_root: Path) -> list[str]:
    """The texts of net/tcp and net/tcp6 that could be read (a kernel without IPv6 has no tcp6)."""
    texts = []
    for name in ("tcp", "tcp6"):
        try:
            data = read_bounded(proc_root / "net" / name, _LIMIT, truncate=True)
        except (OSError, UnsafeFile):
            continue
        texts.append(data.decode("ascii", "replace"))
    return texts


def read_ssh(proc_root: Path, port: int) -> tuple[frozenset[str] | None, bool | None]:
    """(established inbound connections to ``port``, whether a socket listens on it), from one read of
    the tables; both None if neither table could be read (unknown, which is not "down")."""
    texts = _read_tables(proc_root)
    if not texts:
        return None, None
    established: set[str] = set()
    for text in texts:
        established |= parse_established(text, port)
    return frozenset(established), any(parse_listening(text, port) for text in texts)


class LoginRate:
    """New connections per minute over the last ``window`` seconds, from successive samples.

    ``update(t, connections)`` takes one sample (monotonic seconds, the set of
    established connections) and returns the rate. The first sample sets the
    baseline: connections already there when the agent started are not new.
    Memory is bounded: one set of connections and a count per sample of the window.
    ``span(t)``: how many seconds of the window the rate has watched (lbLoginRateSpan).
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._last: frozenset[str] | None = None
        self._since: float | None = None  # the baseline's time: the first sample with readable tables
        self._new: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, t: float, connections: frozenset[str] | None) -> int:
        """``connections`` None: the tables could not be read this time; what was there still is."""
        if connections is not None:
            if self._last is not None:
                self._new.append((t, len(connections - self._last)))
            else:
                self._since = t
            self._last = connections
        while self._new and self._new[0][0] <= t - self.window:
            self._new.popleft()
        return round(sum(n for _, n in self._new) * 60 / self.window)

    def span(self, t: float) -> int:
        """Whole seconds of the window watched at ``t``: from the baseline on, at most the window; 0
        before the baseline (no rate known yet: the agent just started, or has not read the tables)."""
        if self._since is None:
            return 0
        return int(max(0.0, min(self.window, t - self._since)))


CONNECTING_WINDOW_S = 60.0  # lbLoginsConnecting: a connection unmatched by a session for this long is no login


class Connecting:
    """Logins still connecting (lbLoginsConnecting), from successive samples of the established ssh
    connections and of the remote login sessions' identities (``logins.SessionCount.ids``).

    Each connection first seen after the baseline waits, oldest first, for a session: every session
    that appears (that came over ssh, as far as logind tells: ``logins.count_logind``) matches the oldest
    waiting connection still open, and the connection no longer waits.
    A waiting connection that closes, or waits ``window`` seconds, is dropped: an sftp, an rsync, a
    monitoring check never becomes a session, and a login does within seconds. Connections and sessions
    already there at the baseline (the agent's first sample with readable tables) are not new.
    ``lbSshConnections - lbSessions`` cannot tell a login from an admin's long rsync; this can, and a
    login that takes 20 s to become a session still counts all that time (docs/balance.md, rise-fall).
    Memory is bounded by the connections open at once.
    """

    def __init__(self, window: float = CONNECTING_WINDOW_S) -> None:
        self.window = window
        self._conns: frozenset[str] | None = None
        self._sessions: frozenset[str] = frozenset()
        self._waiting: dict[str, float] = {}  # connection -> when first seen; insertion order is age order

    def update(self, t: float, connections: frozenset[str] | None, sessions: frozenset[str]) -> int:
        """One sample (monotonic seconds); ``connections`` None: the tables could not be read, nothing is
        known to have opened or closed (the waiting ones still age). Returns the logins still connecting."""
        new_sessions = len(sessions - self._sessions)
        self._sessions = sessions
        if connections is not None:
            if self._conns is None:
                new_sessions = 0  # the baseline: what is there already is not new
            else:
                for c in sorted(connections - self._conns):  # first seen now: they wait, after the older ones
                    self._waiting[c] = t
                for c in [c for c in self._waiting if c not in connections]:
                    del self._waiting[c]  # closed before any session matched it
            self._conns = connections
        for c in [c for c, seen in self._waiting.items() if seen <= t - self.window]:
            del self._waiting[c]
        for c in list(self._waiting)[:new_sessions]:
            del self._waiting[c]  # a new session is the oldest waiting login's
        return len(self._waiting)
