"""`snmplb connect`'s transport: open TCP to the first server that accepts, then relay both ways.

One thread per direction, each blocking in the kernel (no poll loop to spin):
from stdin, ``os.splice`` moves the bytes from the pipe into the socket
without copying them through Python (ssh gives a ProxyCommand pipes; any
other stdin falls back to read/send); towards stdout, ``recv_into`` one
reused 1 MiB buffer and write it out (see ``_pump_out`` for why not splice).
Half-close as TCP means it: EOF on stdin becomes shutdown(SHUT_WR) and the
other direction keeps running until the server closes; the server's EOF ends the relay (ssh then sees EOF on its pipe).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
from collections.abc import Callable, Sequence

CHUNK = 1 << 20  # bytes per splice / read: big enough that the per-call cost is lost in the noise
_SPLICE = hasattr(os, "splice")


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def connect_first(hosts: Sequence[str], port: int, timeout: float,
                  say: Callable[[str], None] = lambda m: print(f"snmplb: {m}", file=sys.stderr, flush=True)
                  ) -> tuple[socket.socket | None, list[str]]:
    """A connected socket to the first of ``hosts`` (in the decision's order) that accepts on ``port``
    within ``timeout`` seconds each, and what went wrong with the ones before it. Bounded: one attempt
    per host."""
    failed: list[str] = []
    for host in hosts:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            failed.append(f"{where}: no connection within {timeout:g} s")
        except OSError as exc:
            failed.append(f"{where}: {exc.strerror or type(exc).__name__}")
        else:
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # interactive ssh keystrokes
            if failed:
                say(f"{failed[-1]}; using {where}")
            return sock, failed
    return None, failed


def _pump_in(src: int, sock: socket.socket) -> None:
    """stdin -> socket until EOF, then shutdown(SHUT_WR): the server sees the client's EOF."""
    dst = sock.fileno()
    try:
        if _SPLICE and _is_pipe(src):
            while os.splice(src, dst, CHUNK):
                pass
        else:
            while data := os.read(src, CHUNK):
                sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server went away: the other direction sees it and ends the relay


def _pump_out(sock: socket.socket, dst: int) -> None:
    """socket -> stdout until the server closes (or stdout does).

    Not spliced: on Linux a blocking splice from a TCP socket into a pipe can keep waiting for more
    after it has moved some bytes (seen here with ssh: its banner sat in the kernel until a signal
    woke the call), so this direction reads into one reused 1 MiB buffer instead.
    """
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while n := sock.recv_into(buf):
            out = view[:n]
            while out:
                out = out[os.write(dst, out):]
    except OSError:
        pass


def relay(sock: socket.socket, stdin: int, stdout: int) -> int:
    """Relay until the server closes its side (or stdout goes away); 0."""
    inbound = threading.Thread(target=_pump_in, args=(stdin, sock), daemon=True)
    inbound.start()
    _pump_out(sock, stdout)
    try:
        os.close(stdout)  # the client sees EOF now, whatever the other thread is blocked in
    except OSError:
        pass
    inbound.join(0.1)  # a stdin still open after the server closed cannot matter any more
    return 0
