"""`snmplb connect`'s transport: open TCP to the first server that accepts, then relay both ways.

One thread per direction, each blocking in the kernel (no poll loop to spin):
``os.splice`` moves the bytes between a pipe and the socket without copying
them through Python (ssh gives a ProxyCommand pipes); when an end is not a
pipe (a terminal, a file, a socketpair) it falls back to read/send with
1 MiB buffers. Half-close as TCP means it: EOF on stdin becomes
shutdown(SHUT_WR) and the other direction keeps running until the server
closes; the server's EOF ends the relay (ssh then sees EOF on its pipe).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading
from collections.abc import Sequence

CHUNK = 1 << 20  # bytes per splice / read: big enough that the per-call cost is lost in the noise
_SPLICE = hasattr(os, "splice")


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def connect_first(hosts: Sequence[str], port: int, timeout: float,
                  say=lambda m: print(f"snmplb: {m}", file=sys.stderr, flush=True)
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
    """socket -> stdout until the server closes (or stdout does)."""
    src = sock.fileno()
    try:
        if _SPLICE and _is_pipe(dst):
            while os.splice(src, dst, CHUNK):
                pass
        else:
            while data := sock.recv(CHUNK):
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view):]
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
