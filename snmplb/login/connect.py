"""`snmplb connect`'s transport: the first of the decision's servers that accepts (and greets), then a relay.

Choosing the server (``connect_first``), one attempt per server, in order:

- A server is used once it has accepted the TCP connection and, when a banner
  is expected (``expected_banner``: ssh's ``SSH-``), once it has sent a
  complete line starting with it. RFC 4253 4.2 lets an ssh server send other
  text lines before that line, and ssh accepts them: so does this.
- A server is skipped, with one line naming it and why, when its name does
  not resolve, the connection is refused or does not open in time, or (banner
  expected) it closes or resets the connection before the banner, sends a NUL
  byte (no ssh line holds one) or ``PREAMBLE_MAX`` bytes without it, or says
  nothing in time: sshd past MaxStartups ("Exceeded MaxStartups", then close),
  a stopped or hung sshd (the kernel accepts, nobody speaks), another service
  on the port.
- Each server has ``timeout`` seconds for all of it (name lookup, connection,
  banner); the whole search ends at ``deadline`` (``time.monotonic``), the
  servers not tried then are named.
- Where the client speaks first (RDP), no banner is awaited: the accepted
  connection is enough.
- stdin is not read before a server is chosen, so a server given up on has
  taken nothing from the client; what the chosen one said while it was being
  checked is relayed first: nothing is lost.

Relaying (``relay``): one thread per direction, each blocking in the kernel
(no poll loop to spin): from stdin, ``os.splice`` moves the bytes from the
pipe into the socket without copying them through Python (ssh gives a
ProxyCommand pipes; any other stdin falls back to read/send); towards stdout,
``recv_into`` one reused 1 MiB buffer and write it out (see ``_pump_out`` for
why not splice). Half-close as TCP means it: EOF on stdin becomes
shutdown(SHUT_WR) and the other direction keeps running until the server
closes; the server's EOF ends the relay (ssh then sees EOF on its pipe).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence

from snmplb.record import record

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only
    # One of getaddrinfo's entries: (family, type, proto, canonname, socket address).
    AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str,
                     tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]]

CHUNK = 1 << 20  # bytes per splice / read: big enough that the per-call cost is lost in the noise
_SPLICE = hasattr(os, "splice")
SSH_BANNER = b"SSH-"
PREAMBLE_MAX = 8192  # bytes a server may send until its banner line ends (OpenSSH's limit for one line)
BANNERS = ("auto", "ssh", "none")


def _stderr(message: str) -> None:
    print(f"snmplb: {message}", file=sys.stderr, flush=True)


def expected_banner(mode: str, port: int) -> bytes | None:
    """What a server must send first to be used: ``ssh``, a line starting ``SSH-``; ``none``, nothing
    (the client speaks first, as with RDP); ``auto``, ssh's on port 22 and nothing elsewhere."""
    if mode not in BANNERS:
        raise ValueError(f"banner mode {mode[:20]!r} is none of {', '.join(BANNERS)}")
    return SSH_BANNER if mode == "ssh" or (mode == "auto" and port == 22) else None


class Connected(record("Connected", "sock where first")):
    """The server chosen: its connected socket (blocking, TCP_NODELAY), ``host:port`` for messages, and
    the bytes it already sent (its banner and anything before or with it), to relay before the rest."""

    __slots__ = ()


class _Skip(Exception):
    """Why one server is not used: addresses, system error names and at most the server's own first
    line (printable ASCII, cut short), never anything of the client's."""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _said(data: bytes | bytearray) -> str:
    """`` (it said '...')`` with the first line of ``data``: printable ASCII only (a peer's bytes must
    not drive the terminal the message lands on), at most 60 characters; "" for nothing."""
    line = bytes(data).split(b"\n", 1)[0].strip()[:60].decode("ascii", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in line)
    return f" (it said {text!r})" if text else ""


def _addresses(host: str, port: int, end: float, limit: str) -> Sequence[AddrInfo]:
    """getaddrinfo's TCP addresses of ``host``, in its order. An address literal is parsed at once; a
    name is looked up in a daemon thread given until ``end`` (getaddrinfo has no timeout: a hung DNS
    server costs this server its turn, no more)."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        pass  # a name, not an address
    found: list[Sequence[AddrInfo] | str] = []

    def look() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError, ValueError) as exc:
            found.append(f"name does not resolve ({getattr(exc, 'strerror', None) or type(exc).__name__})")

    lookup = threading.Thread(target=look, name="snmplb-connect-lookup", daemon=True)
    lookup.start()
    lookup.join(max(end - time.monotonic(), 0.0))
    if not found:
        raise _Skip(f"name not resolved within {limit}")
    if isinstance(found[0], str):
        raise _Skip(found[0])
    return found[0]


def _open(host: str, port: int, end: float, limit: str) -> socket.socket:
    """A socket connected to one of ``host``'s addresses (each tried in turn) before ``end``."""
    why = "no address"
    for family, kind, proto, _, address in _addresses(host, port, end, limit):  # bounded: getaddrinfo's list
        left = end - time.monotonic()
        if left <= 0:
            why = f"no connection within {limit}"
            break
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:  # e.g. an IPv6 address on a client without IPv6
            why = exc.strerror or type(exc).__name__
            continue
        try:
            sock.settimeout(left)
            sock.connect(address)
            return sock
        except TimeoutError:
            why = f"no connection within {limit}"
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
        sock.close()
    raise _Skip(why)


def _greeting(sock: socket.socket, banner: bytes, end: float, limit: str) -> bytes:
    """Everything ``sock``'s server sent up to a complete line starting with ``banner`` (and what came
    with that line), read before ``end``; _Skip if it closes, resets, sends a NUL byte or PREAMBLE_MAX
    bytes first, or is still short of it at ``end``."""
    name = banner.decode("ascii", "replace")
    got = bytearray()
    while True:  # bounded: each turn reads a byte or more (PREAMBLE_MAX in all), or ends at ``end``
        if any(line.startswith(banner) for line in got.split(b"\n")[:-1]):
            return bytes(got)
        if b"\0" in got:
            raise _Skip(f"sent binary data, not its {name} banner")
        if len(got) >= PREAMBLE_MAX:
            raise _Skip(f"no {name} banner in its first {PREAMBLE_MAX} bytes")
        left = end - time.monotonic()
        if left <= 0:
            raise _Skip(f"no {name} banner within {limit}{_said(got)}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(PREAMBLE_MAX - len(got))
        except TimeoutError:
            continue  # the next turn says so
        except OSError as exc:
            raise _Skip(f"{exc.strerror or type(exc).__name__} before its {name} banner{_said(got)}") from None
        if not chunk:
            raise _Skip(f"closed the connection before its {name} banner{_said(got)}")
        got += chunk


def connect_first(hosts: Sequence[str], port: int, timeout: float, deadline: float, banner: bytes | None = None,
                  say: Callable[[str], None] = _stderr) -> Connected | None:
    """The first of ``hosts`` (in the decision's order) that accepts on ``port`` and, with ``banner``,
    sends a line starting with it: within ``timeout`` seconds each and before ``deadline`` (monotonic)
    in all. Each server skipped is one ``say`` line (``host:port: why``, and which server is next); the
    servers left when the deadline passes are one more. None when no server was used."""
    for i, host in enumerate(hosts):  # bounded: one attempt per host
        start = time.monotonic()
        if start >= deadline:
            say("deadline passed; not tried: " + ", ".join(_where(h, port) for h in hosts[i:]))
            return None
        end = min(start + timeout, deadline)
        limit = f"{end - start:.3g} s" + (" (the deadline)" if end < start + timeout else "")
        where = _where(host, port)
        try:
            sock = _open(host, port, end, limit)
            try:
                first = _greeting(sock, banner, end, limit) if banner else b""
            except _Skip:
                sock.close()
                raise
        except _Skip as why:
            more = i + 1 < len(hosts) and time.monotonic() < deadline
            say(f"{where}: {why}" + (f"; trying {_where(hosts[i + 1], port)}" if more else ""))
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # interactive ssh keystrokes
        return Connected(sock, where, first)
    return None


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _pump_in(src: int, sock: socket.socket, ended: threading.Event) -> None:
    """stdin -> socket until EOF, then ``ended`` and shutdown(SHUT_WR): the server sees the client's EOF
    (``ended`` is set first, so that a server closing because of that EOF finds it set)."""
    dst = sock.fileno()
    try:
        if _SPLICE and _is_pipe(src):
            while os.splice(src, dst, CHUNK):
                pass
        else:
            while data := os.read(src, CHUNK):
                sock.sendall(data)
        ended.set()
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server went away: the other direction sees it and ends the relay


def _write_all(dst: int, data: memoryview | bytes) -> None:
    while data:  # bounded: each write takes at least a byte or raises
        data = data[os.write(dst, data):]


def _pump_out(sock: socket.socket, dst: int, first: bytes) -> int:
    """``first``, then socket -> stdout until the server closes (or resets, or stdout goes away); the
    bytes the server sent, ``first`` included.

    Not spliced: on Linux a blocking splice from a TCP socket into a pipe can keep waiting for more
    after it has moved some bytes (seen here with ssh: its banner sat in the kernel until a signal
    woke the call), so this direction reads into one reused 1 MiB buffer instead.
    """
    received = len(first)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        _write_all(dst, first)
        while n := sock.recv_into(buf):
            received += n
            _write_all(dst, view[:n])
    except OSError:
        pass
    return received


def relay(sock: socket.socket, stdin: int, stdout: int, first: bytes = b"") -> bool:
    """Relay ``first`` and then the server's bytes to ``stdout``, stdin's to the server, until the
    server closes its side (or stdout goes away). Whether the server was heard: False only when it
    closed or reset the connection without sending one byte (``first`` included) while stdin was
    still open, so that the client got nothing but EOF; a server that answers the client's EOF by
    closing in silence (a sink) was heard."""
    ended = threading.Event()
    inbound = threading.Thread(target=_pump_in, args=(stdin, sock, ended), daemon=True)
    inbound.start()
    received = _pump_out(sock, stdout, first)
    try:
        os.close(stdout)  # the client sees EOF now, whatever the other thread is blocked in
    except OSError:
        pass
    inbound.join(0.1)  # a stdin still open after the server closed cannot matter any more
    return received > 0 or ended.is_set()
