"""Poll every configured server at once: one UDP socket (per address family), ONE deadline.

The thin driver around ``queries``: it resolves names (in threads, bounded by
the deadline: a hung DNS server must not hang a login), sends every query's
first datagram at once, then waits in select() for replies and retransmit
timers until every query is done or the deadline passes. With all servers
answering, the wall time is one round trip; a dead, silent or slow server
costs at most the deadline. Replies are dispatched by source address and
port; a datagram from anywhere else is dropped.

ICMP port-unreachable for a server with nothing listening reaches an
unconnected socket only through its error queue (IP_RECVERR): read there, it
ends that server's query at once instead of at the deadline.
"""

from __future__ import annotations

import errno
import random
import select
import time
from collections.abc import Callable

# The C module, not socket.py: socket.py's enums cost a thin client ~7 ms of imports
# at every login, and everything used here is in _socket itself.
import _socket as socket

from .queries import Credentials, Query, V2cQuery, V3Query
from .settings import ClientSettings, Server
from .stats import ServerState

_IP_RECVERR = 11
_IPV6_RECVERR = 25
_MAX_DATAGRAMS_PER_WAKEUP = 256
_MAX_LOOPS = 100_000
EARLY_WAIT_MIN_S = 0.05  # the sampled mode: after a usable answer, wait at least this long for the others,
EARLY_WAIT_RTTS = 4  # or this many times that answer's round trip, whichever is longer


def _literal(host: str) -> tuple[int, str] | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except OSError:
            continue
        return family, socket.inet_ntop(family, packed)
    return None


def resolve(servers: tuple[Server, ...], deadline: float,
            clock: Callable[[], float] = time.monotonic) -> dict[Server, tuple[int, str] | str]:
    """(family, address) per server, or the reason it could not be resolved before the deadline."""
    out: dict[Server, tuple[int, str] | str] = {}
    names = []
    for s in servers:
        lit = _literal(s.host)
        if lit:
            out[s] = lit
        else:
            names.append(s)
    if names:
        import threading

        found: dict[Server, tuple[int, str] | str] = {}

        def lookup(s: Server) -> None:
            try:
                info = socket.getaddrinfo(s.host, s.port, type=socket.SOCK_DGRAM)
                fam, _, _, _, addr = info[0]
                found[s] = (fam, addr[0])
            except (OSError, IndexError, UnicodeError) as exc:
                found[s] = f"name does not resolve ({getattr(exc, 'strerror', None) or exc})"

        threads = [threading.Thread(target=lookup, args=(s,), daemon=True) for s in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - clock()))
        for s in names:
            out[s] = found.get(s, "name did not resolve before the deadline")
    return out


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


def _key(family: int, addr: tuple) -> tuple[int, bytes, int] | None:
    try:
        return family, socket.inet_pton(family, addr[0].split("%")[0]), addr[1]
    except (OSError, IndexError, TypeError):
        return None


def poll(settings: ClientSettings, rng: random.Random | None = None,
         clock: Callable[[], float] = time.monotonic, early: bool = False) -> list[ServerState]:
    """Poll ``settings.servers``; one ServerState per server, in configured order.

    ``early`` (the sampled mode): once one server answered and may be chosen, wait for
    the others only EARLY_WAIT_RTTS times its answer time (at least EARLY_WAIT_MIN_S) more,
    so that a silent server in a small sample does not hold the login until the deadline.
    """
    start = clock()
    deadline = start + settings.timeout_ms / 1000
    rng = rng or random.SystemRandom()
    interval = max(0.02, settings.timeout_ms / 1000 / (settings.retries + 1))
    max_sends = settings.retries + 1
    creds = Credentials(settings) if settings.snmp_version == "3" else None

    def make(server: Server) -> Query:
        if creds is not None:
            return V3Query(server, creds, rng, interval, max_sends)
        return V2cQuery(server, settings, rng, interval, max_sends)

    queries = {s: make(s) for s in settings.servers}
    addresses = resolve(settings.servers, deadline, clock)
    socks: dict[int, socket.socket] = {}
    by_addr: dict[tuple[int, bytes, int], list[Query]] = {}
    try:
        for server, query in queries.items():
            where = addresses[server]
            if isinstance(where, str):
                query.fail(where)
                continue
            family, host = where
            if family not in socks:
                socks[family] = _open(family)
            key = _key(family, (host, server.port))
            by_addr.setdefault(key, []).append(query)  # type: ignore[arg-type]
            _send(socks[family], query.start(clock()), (host, server.port), query)
        cut = _run(socks, by_addr, deadline, clock, early)
    finally:
        for sock in socks.values():
            sock.close()
    waited = settings.timeout_ms if cut is None else round((cut - start) * 1000)
    for q in queries.values():
        q.fail(f"no answer within {waited} ms" + ("" if cut is None else " (the sample had its answer)"))
    return [queries[s].result for s in settings.servers]  # type: ignore[misc]


_ICMP_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)


def _send(sock: socket.socket, data: bytes | None, addr: tuple[str, int], query: Query) -> None:
    """Send, and attribute a failure to ``query`` only when it is really this datagram's.

    An ICMP error for ANOTHER server (one with nothing listening) is reported
    by the kernel on the socket's next call, which may be this send: the call
    fails but consumes the error, so it is retried. Only the same failure on
    every try is this server's.
    """
    if data is None:
        return
    for attempt in range(3):
        try:
            sock.sendto(data, addr)
            return
        except OSError as exc:
            if exc.errno in _ICMP_ERRNOS and attempt < 2:
                continue
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):  # those: the retransmission will do
                query.fail(f"cannot send: {exc.strerror}")
            return


def _run(socks: dict[int, socket.socket], by_addr: dict[tuple[int, bytes, int], list[Query]],
         deadline: float, clock: Callable[[], float], early: bool = False) -> float | None:
    """Exchange until every query is done or the deadline; returns when the wait was cut short
    (``early``: after the first usable answer), else None."""
    pending = [q for qs in by_addr.values() for q in qs]
    key_of = {id(q): key for key, qs in by_addr.items() for q in qs}  # (family, packed address, port)
    cut = None
    for _ in range(_MAX_LOOPS):
        if all(q.done for q in pending):
            return None
        now = clock()
        if early and cut is None:
            answered = [q.result.rtt_ms for q in pending if q.done and q.result.eligible]  # type: ignore[union-attr]
            wait = max(EARLY_WAIT_MIN_S, EARLY_WAIT_RTTS * min(answered) / 1000) if answered else None
            if wait is not None and now + wait < deadline:
                cut = deadline = now + wait
        if now >= deadline:
            return None if cut is None else now
        timers = [q.next_time for q in pending if not q.done and q.next_time is not None]
        wake = min([deadline, *timers])
        readable, _, _ = select.select(list(socks.values()), [], [], max(0.0, wake - now))
        for sock in readable:
            family = sock.family
            _drain_errors(sock, family, by_addr)
            _drain(sock, family, by_addr, clock)
        now = clock()
        for q in pending:
            if not q.done and q.next_time is not None and now >= q.next_time:
                family, packed, port = key_of[id(q)]
                _send(socks[family], q.on_timer(now), (socket.inet_ntop(family, packed), port), q)


def _drain(sock: socket.socket, family: int, by_addr: dict, clock: Callable[[], float]) -> None:
    for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
        try:
            data, addr = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # ECONNREFUSED and the like: the error queue says for whom
        key = _key(family, addr)
        for q in by_addr.get(key, ()):
            if not q.done:
                reply = q.on_datagram(data, clock())
                _send(sock, reply, (addr[0], addr[1]), q)


def _drain_errors(sock: socket.socket, family: int, by_addr: dict) -> None:
    for _ in range(_MAX_DATAGRAMS_PER_WAKEUP):
        try:
            _, anc, _, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        errnum = _ee_errno(anc)
        if errnum == errno.ECONNREFUSED:
            for q in by_addr.get(_key(family, addr), ()):
                q.fail("nothing listening (port unreachable)")


def _ee_errno(ancillary: list) -> int:
    """ee_errno of a struct sock_extended_err in IP_RECVERR ancillary data."""
    for _level, _type, data in ancillary:
        if len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    return 0
