"""Host name lookups for the poller: a bounded pool of daemon threads, each result signalled on a socket pair.

getaddrinfo blocks and has no timeout of its own, so lookups run in threads
while the poller sends to the servers it can already reach. At most
``MAX_THREADS`` run at once (2000 names must not start 2000 threads), fed
from one queue. A thread stuck on a hung DNS server costs only its own
server: the poller gives up on it at the deadline, and a daemon thread cannot
hold the process. Each finished lookup writes a byte to a socket pair whose
reading end is in the poller's poll() set, so that the poller sends to that
name at once rather than at its next timer.

threading is imported only when the first name is looked up: it is not free on a thin client,
and most configurations list addresses.
"""

from __future__ import annotations

from collections import deque

import _socket as socket

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: get_hosts does without typing
    from typing import Any

MAX_THREADS = 8
_MAX_WAKEUPS_PER_COLLECT = 256

# (family, socket address: as getaddrinfo gives it) of a name, or why it does not resolve
Found = tuple[int, tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]] | str


def _lookup(host: str, port: int) -> Found:
    """(family, socket address) of ``host``, or why it does not resolve."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        return family, addr
    except (OSError, UnicodeError, IndexError) as exc:
        return f"name does not resolve ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    except Exception as exc:  # a worker thread's outer edge: its server must still get an answer
        return f"name does not resolve ({type(exc).__name__})"


class Lookups:
    """Lookups in at most MAX_THREADS daemon threads; ``reader`` becomes readable when one finishes."""

    def __init__(self) -> None:
        import threading  # here, not at the top: see the module's docstring

        self._lock = threading.Lock()
        self._jobs: deque[tuple[object, str, int]] = deque()
        self._done: deque[tuple[Any, Found]] = deque()  # (the token as submitted: the caller's type)
        self._workers = 0
        self._closed = False
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def submit(self, token: object, host: str, port: int) -> None:
        """Look ``host`` up; ``collect`` returns the answer with ``token``."""
        with self._lock:
            self._jobs.append((token, host, port))
            if self._workers >= MAX_THREADS:
                return
            self._workers += 1
        import threading

        try:
            threading.Thread(target=self._work, name="snmplb-lookup", daemon=True).start()
        except RuntimeError:  # no thread to be had: the running workers (if any) take the queue
            with self._lock:
                self._workers -= 1
                if self._workers == 0:
                    self._done.extend((t, "name does not resolve (no lookup possible: no thread)")
                                      for t, _, _ in self._jobs)
                    self._jobs.clear()
            self._wake()

    def _work(self) -> None:
        while True:  # bounded: each turn takes one job off the queue, and the queue only shrinks here
            with self._lock:
                if self._closed or not self._jobs:
                    self._workers -= 1
                    return
                token, host, port = self._jobs.popleft()
            found = _lookup(host, port)
            with self._lock:
                if self._closed:
                    return
                self._done.append((token, found))
            self._wake()

    def _wake(self) -> None:
        with self._lock:  # never after close(): the descriptor's number may belong to another file by then
            if self._closed:
                return
            try:
                self._writer.send(b"\0")
            except OSError:
                pass  # full: a wake-up is pending already

    def collect(self) -> list[tuple[Any, Found]]:
        """The lookups finished since the last call (and clears the wake-ups), each with its token as submitted."""
        for _ in range(_MAX_WAKEUPS_PER_COLLECT):
            try:
                if not self.reader.recv(4096):
                    break
            except OSError:
                break
        with self._lock:
            done = list(self._done)
            self._done.clear()
        return done

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._writer.close()
        self.reader.close()
