"""Poll every configured server at once: one UDP socket (per address family), ONE deadline.

The thin driver around ``queries``: it sends every literal address's first
datagram at once, looks host names up meanwhile in a small pool of threads
(``lookups``: getaddrinfo blocks and has no timeout) and sends to each
name as soon as its lookup returns, then waits in poll() for replies,
lookups and retransmit timers until every query is done or the deadline
passes. With all servers answering, the wall time is one round trip (plus a
lookup); a dead, silent or slow server, or a hung DNS lookup, costs at most the
deadline, and only its own server. Replies are dispatched by source address
and port; a datagram from anywhere else is dropped.

Fault isolation: every call into one server's query (its first request, a
datagram from it, a retransmission) runs inside a boundary where any exception
fails that server alone, with a reason naming only the exception's type.

ICMP port-unreachable for a server with nothing listening reaches an
unconnected socket only through its error queue (IP_RECVERR): read there, it
ends that server's query at once instead of at the deadline.

The sampled mode (LB_SAMPLE) polls a few servers and keeps the rest as a
hedge: if the sample has no usable answer within ``settle_wait`` of the
fastest answer seen (or every sampled server is done without one), the hedge
is polled too, under the same deadline.
"""

from __future__ import annotations

import errno
import random
import select
import time

# The C module, not socket.py: socket.py's enums cost a thin client ~7 ms of imports
# at every login, and everything used here is in _socket itself.
import _socket as socket

from snmplb.client.serverquery import Credentials, Query, V2cQuery, V3Query
from snmplb.client.settings import ClientSettings, Server
from snmplb.client.serverstate import Failure, ServerState

_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MAX_DATAGRAMS_PER_WAKEUP = 256
_MAX_LOOPS = 100_000
EARLY_WAIT_MIN_S = 0.05  # after an answer, wait at least this long for the others (early cut, hedge delay),
EARLY_WAIT_RTTS = 4  # or this many times the answer's round trip, whichever is longer

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Callable, Sequence

    from snmplb.client.lookups import Lookups  # imported when a host name needs it

    from typing import Any

    Usable = Callable[[ServerState], bool]
    Address = tuple[Any, ...]  # a socket address: (host, port) or, for IPv6, (host, port, flowinfo, scope_id)


# -- decisions (pure) -----------------------------------------------------------

def settle_wait(rtt_ms: float | None) -> float:
    """Seconds to wait after an answer of round trip ``rtt_ms``: max(EARLY_WAIT_MIN_S, EARLY_WAIT_RTTS x rtt)."""
    return max(EARLY_WAIT_MIN_S, EARLY_WAIT_RTTS * (rtt_ms or 0.0) / 1000)


def hedge_time(start: float, sample_open: int, any_usable: bool, fastest_rtt_ms: float | None) -> float | None:
    """When to poll the hedge: never (None) once the sample has a usable answer; at once (``start``)
    when every sampled server is done without one; else ``settle_wait`` of the fastest answer seen
    (whether usable or not) after the start."""
    if any_usable:
        return None
    if sample_open == 0:
        return start
    return start + settle_wait(fastest_rtt_ms)


def _literal(host: str) -> tuple[int, str] | None:
    """(family, address) when ``host`` is an IPv4 or IPv6 address, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except OSError:
            continue
        return family, socket.inet_ntop(family, packed)
    return None


def _key(family: int, addr: Address) -> tuple[int, bytes, int] | None:
    try:
        return family, socket.inet_pton(family, addr[0].split("%")[0]), addr[1]
    except (OSError, IndexError, TypeError, AttributeError):
        return None


# -- the I/O driver ---------------------------------------------------------------

def poll(settings: ClientSettings, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
         early: bool = False, *, deadline: float, hedge: Sequence[Server] = (),
         usable: Usable | None = None, question: bytes = b"") -> list[ServerState]:
    """Poll ``settings.servers`` until ``deadline``: a ``clock()`` time that the caller's edge computed
    once (``snmplb.client.deadline``); the poll never derives one from LB_TIMEOUT_MS itself.

    Returns one ServerState per server in ``settings.servers``, in order, then
    one per ``hedge`` server if the hedge was polled (all of them, in order).
    ``usable`` (default: eligible) says whether an answer settles the sample.
    ``early`` (the sampled mode): once one server has a usable answer, wait for
    the others only ``settle_wait`` of its round trip more, so that a silent
    server in a small sample does not hold the login until the deadline.
    ``question``: a user's (``snmplb.affinity``), asked in the same GET of every server.
    """
    run = _Poll(settings, rng or random.SystemRandom(), clock, early, deadline, usable or (lambda s: s.eligible),
                question)
    try:
        run.add(settings.servers)
        run.loop(tuple(hedge))
    finally:
        run.close()
    return run.results()


class _Entry:
    """One server being polled: its query once its address is known, else a result of its own."""

    __slots__ = ("server", "query", "state", "family", "addr")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.query: Query | None = None
        self.state: ServerState | None = None  # set when it failed without a query, or overrides the query's
        self.family = 0
        self.addr: Address = ()

    @property
    def result(self) -> ServerState | None:
        if self.state is not None or self.query is None:
            return self.state
        return self.query.result

    def fail(self, failure: str, reason: str) -> None:
        if self.query is not None:
            self.query.fail(failure, reason)
        elif self.state is None:
            self.state = ServerState.failed(self.server.host, self.server.port, failure, reason)


class _Poll:
    """One poll's state: the sockets, the servers by address, the lookups, the deadline."""

    def __init__(self, settings: ClientSettings, rng: random.Random, clock: Callable[[], float], early: bool,
                 deadline: float, usable: Usable, question: bytes = b"") -> None:
        self.settings, self.rng, self.clock, self.early, self.usable = settings, rng, clock, early, usable
        self.question = question
        self.decoy = b""  # beside the question, the same in every server's GET (snmplb.affinity.with_decoy)
        if question:
            import os

            self.decoy = os.urandom(len(question))
        self.start = clock()
        self.deadline = deadline
        self.cut: float | None = None  # when the early rule ended the wait
        self.max_sends = settings.retries + 1
        self.creds = Credentials(settings) if settings.snmp_version == "3" else None
        self.socks: dict[int, socket.socket] = {}
        self.poller = select.poll()  # not select(): no FD_SETSIZE limit, and it needs no descriptor itself
        self.by_addr: dict[tuple[int, bytes, int] | None, list[_Entry]] = {}
        self.entries: list[_Entry] = []
        self.open: list[_Entry] = []  # entries without a result yet
        self.lookups: Lookups | None = None  # started at the first host name: most configurations list addresses
        self.any_usable = False
        self.fastest_rtt: float | None = None  # ms, of any answer
        self.fastest_usable: float | None = None  # ms, of a usable answer

    # -- starting queries

    def add(self, servers: Sequence[Server]) -> None:
        """Send to every literal address now; queue the names for lookup."""
        for server in servers:
            entry = _Entry(server)
            self.entries.append(entry)
            self.open.append(entry)
            literal = _literal(server.host)
            if literal:
                self._begin(entry, literal[0], (literal[1], server.port))
            else:
                if self.lookups is None:
                    try:
                        # Imported here: addresses alone need none of it (nor collections, which it imports).
                        # With no descriptor left the import fails as Lookups() would: with an OSError.
                        from snmplb.client.lookups import Lookups

                        self.lookups = Lookups()
                    except OSError as exc:  # out of descriptors: the names fail, the addresses are still polled
                        entry.fail(Failure.NOT_RESOLVED, f"name does not resolve (no lookup possible: {exc.strerror})")
                        continue
                    self.poller.register(self.lookups.reader.fileno(), select.POLLIN)
                self.lookups.submit(entry, server.host, server.port)

    def _begin(self, entry: _Entry, family: int, addr: Address) -> None:
        now = self.clock()
        interval = max(0.02, (self.deadline - now) / self.max_sends)  # from the time actually left
        if self.creds is not None:
            entry.query = V3Query(entry.server, self.creds, self.rng, interval, self.max_sends, self.question,
                                  self.decoy)
        else:
            entry.query = V2cQuery(entry.server, self.settings, self.rng, interval, self.max_sends, self.question,
                                   self.decoy)
        entry.family, entry.addr = family, addr
        if family not in self.socks:
            try:
                sock = self.socks[family] = _open(family)
            except OSError as exc:  # out of descriptors, no IPv6: this server cannot be asked
                entry.fail(Failure.UNREACHABLE, f"cannot send: {exc.strerror}")
                return
            self.poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self.by_addr.setdefault(_key(family, addr), []).append(entry)
        self._send(entry, _guarded(entry, "request", entry.query.start, now))

    def _send(self, entry: _Entry, data: bytes | None) -> None:
        if data is not None and not entry.query.done:  # type: ignore[union-attr]  # sent only once it has a query
            _send(self.socks[entry.family], data, entry.addr, entry)

    # -- the loop

    def loop(self, hedge: tuple[Server, ...]) -> None:
        """Exchange until every query is done, the deadline passes, or the early rule cuts the wait."""
        hedged = not hedge
        due: float | None = None  # when to poll the hedge (hedge_time), while it is not polled
        for _ in range(_MAX_LOOPS):
            self._sweep()
            now = self.clock()
            if not hedged:
                due = hedge_time(self.start, len(self.open), self.any_usable, self.fastest_rtt)
                if due is None:
                    hedged = True  # the sample settled it: the hedge is never polled
                elif now >= due and now < self.deadline:
                    hedged = True
                    self.add(hedge)
                    continue
            if not self.open:
                return
            self._settle_refused(now)
            if self.early and self.cut is None and self.fastest_usable is not None:
                cut = now + settle_wait(self.fastest_usable)
                if cut < self.deadline:
                    self.cut = self.deadline = cut
            if now >= self.deadline:
                return
            wake = min([self.deadline, *(e.query.next_time for e in self.open
                                         if e.query is not None and e.query.next_time is not None)])
            if not hedged and due is not None:  # (due is set, and not None, whenever hedged is still False)
                wake = min(wake, due)
            self._wait(max(0.0, wake - now))

    def _settle_refused(self, now: float) -> None:
        """Stop waiting for servers that only sent unauthenticated SNMPv3 reports, once a usable answer is
        in and every server still open is such a one.

        Such a report is a refused user or passphrase, or a forgery racing the genuine answer
        (``Query.tentative``): the query waits for an authenticated answer, but not to the deadline at
        every login when one server's credentials are wrong. A genuine answer follows its forgery within
        a round trip: ``settle_wait`` (of the fastest answer seen) after the last report, the queries end
        with their reason.
        """
        if not self.any_usable or self.cut is not None:
            return
        heard = [e.query.tentative_at for e in self.open if e.query is not None]
        if len(heard) < len(self.open) or any(t is None for t in heard):
            return
        settle = max(t for t in heard if t is not None) + settle_wait(self.fastest_rtt)
        if settle < self.deadline:
            self.cut = self.deadline = max(now, settle)

    def _sweep(self) -> None:
        """Count the results that came in since the last sweep; keep only the open entries."""
        still = []
        for entry in self.open:
            state = entry.result
            if state is None:
                still.append(entry)
                continue
            try:
                good = bool(self.usable(state))
            except Exception as exc:  # the edge of this server's answer: its row broke the judgement
                entry.state = ServerState.failed(state.name, state.port, Failure.INTERNAL,
                                                 f"internal error on this server's reply ({type(exc).__name__})")
                good, state = False, entry.state
            rtt = state.rtt_ms
            if rtt is not None:
                self.fastest_rtt = rtt if self.fastest_rtt is None else min(self.fastest_rtt, rtt)
            if good:
                self.any_usable = True
                rtt = rtt or 0.0
                self.fastest_usable = rtt if self.fastest_usable is None else min(self.fastest_usable, rtt)
        self.open = still

    def _wait(self, timeout: float) -> None:
        events = self.poller.poll(-(-timeout * 1000 // 1))  # ms, rounded up: never wake just before a timer
        by_fd = {sock.fileno(): sock for sock in self.socks.values()}
        for fd, _ in events:
            if self.lookups is not None and fd == self.lookups.reader.fileno():
                for entry, found in self.lookups.collect():
                    if entry.result is not None:
                        continue
                    if isinstance(found, str):  # the lookup's words for a name that does not resolve
                        entry.fail(Failure.NOT_RESOLVED, found)
                    else:
                        self._begin(entry, *found)
                continue
            sock = by_fd.get(fd)
            if sock is None:
                continue
            _drain_errors(sock, sock.family, self.by_addr)
            self._drain(sock)
        now = self.clock()
        for entry in self.open:
            q = entry.query
            if q is not None and not q.done and q.next_time is not None and now >= q.next_time:
                self._send(entry, _guarded(entry, "retransmission", q.on_timer, now))

    def _drain(self, sock: socket.socket) -> None:
        for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ECONNREFUSED and the like: the error queue says for whom
            for entry in self.by_addr.get(_key(sock.family, addr), ()):
                q = entry.query
                if q is not None and not q.done:
                    self._send(entry, _guarded(entry, "reply", q.on_datagram, data, self.clock()))

    # -- the end

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        if self.lookups is not None:
            self.lookups.close()

    def results(self) -> list[ServerState]:
        waited = round(((self.cut or self.deadline) - self.start) * 1000)
        why = " (the sample had its answer)" if self.cut is not None else ""
        for entry in self.entries:
            if entry.query is None:
                entry.fail(Failure.NOT_RESOLVED,
                           "name did not resolve before the " + ("sample had its answer" if why else "deadline"))
            else:
                entry.fail(Failure.UNREACHABLE, f"no answer within {waited} ms{why}")
        return [e.result for e in self.entries]  # type: ignore[misc]  # every entry has a result now: it failed above


def _guarded(entry: _Entry, what: str, call: Callable[..., bytes | None], *args: object) -> bytes | None:
    """``call(*args)`` inside this server's fault boundary: any exception fails this server only.

    The query parses what a possibly hostile host sent; a bug or an unchecked
    value there (an OverflowError from a crafted SNMPv3 report) must cost that
    server, never the poll. The reason names the exception's type, never its
    message: that may quote the datagram.
    """
    try:
        return call(*args)
    except Exception as exc:  # the outer edge of ONE server's query (see above)
        entry.fail(Failure.INTERNAL, f"internal error on this server's {what} ({type(exc).__name__})")
        return None


def _open(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
    except OSError:
        pass  # not Linux: dead servers then cost the deadline
    return sock


_ICMP_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)


def _send(sock: socket.socket, data: bytes, addr: Address, entry: _Entry) -> None:
    """Send, and attribute a failure to ``entry`` only when it is really this datagram's.

    An ICMP error for ANOTHER server (one with nothing listening) is reported
    by the kernel on the socket's next call, which may be this send: the call
    fails but consumes the error, so it is retried. Only the same failure on
    every try is this server's.
    """
    for attempt in range(3):
        try:
            sock.sendto(data, addr)
            return
        except OSError as exc:
            if exc.errno in _ICMP_ERRNOS and attempt < 2:
                continue
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):  # those: the retransmission will do
                entry.fail(Failure.UNREACHABLE, f"cannot send: {exc.strerror}")
            return


def _drain_errors(sock: socket.socket, family: int, by_addr: dict[tuple[int, bytes, int] | None, list[_Entry]]) -> None:
    for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
        try:
            _, anc, _, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if _ee_errno(anc) == errno.ECONNREFUSED:
            for entry in by_addr.get(_key(family, addr), ()):
                entry.fail(Failure.REFUSED, "nothing listening (port unreachable)")


def _ee_errno(ancillary: list[tuple[int, int, bytes]]) -> int:
    """ee_errno of a struct sock_extended_err in IP_RECVERR ancillary data."""
    for _level, _type, data in ancillary:
        if len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    return 0
