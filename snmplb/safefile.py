"""Bounded reads of paths an admin configures: never block, never read more than a cap.

The agent answers snmpd, and snmpd waits on every answer with no timeout: a
read that blocks (a FIFO, a terminal, a hung NFS mount) freezes all of snmpd,
and a read without a cap (/dev/zero, a runaway log given as a config file)
eats the machine's memory. Every file the agent reads goes through
``read_bounded``: opened non-blocking, checked with fstat to be a regular
file (procfs files are), read up to a cap. A path that can hang inside the
kernel even so (open() on a dead NFS server) is read by ``TimedRead`` in a
worker thread that the caller waits for only so long.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from snmplb.errors import SnmplbError

CONFIG_LIMIT = 64 * 1024
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

T = TypeVar("T")


class UnsafeFile(SnmplbError):
    """A path that is not a regular file, or a file larger than its cap: refused, not read."""


def read_bounded(path: str | Path, limit: int, truncate: bool = False, follow: bool = True) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``.

    A larger file raises UnsafeFile, unless ``truncate`` (procfs files, whose
    size fstat does not know): then its first ``limit`` bytes are returned.
    ``follow`` False refuses a symlink as the last component (O_NOFOLLOW).
    OSError (FileNotFoundError among them) passes through for the caller's message.
    """
    fd = os.open(path, _FLAGS | (0 if follow else os.O_NOFOLLOW))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: not a regular file")
        if st.st_size > limit and not truncate:
            raise UnsafeFile(f"{path}: larger than {_size(limit)} ({_size(st.st_size)})")
        chunks: list[bytes] = []
        left = limit + (0 if truncate else 1)  # one byte more: a file that grew since fstat is seen
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnsafeFile(f"{path}: larger than {_size(limit)}")
    return data


def describe(exc: OSError | UnsafeFile, path: str | Path) -> str:
    """One line for a failed ``read_bounded`` of ``path``: the path and the reason, nothing else."""
    if isinstance(exc, UnsafeFile):
        return str(exc)
    return f"{path}: {exc.strerror or type(exc).__name__}"


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


class TimedRead(Generic[T]):
    """Run a read in a worker thread and wait for it at most ``timeout`` seconds.

    ``poll()`` starts the read unless one is still outstanding (a read stuck in
    the kernel is never joined by a second one: at most one worker at a time),
    waits up to ``timeout`` and returns ``(True, result)`` when it finished or
    ``(False, None)`` when it is still running; a later ``poll()`` collects it.
    ``read`` must not raise: it returns its failures as values (if it raises
    anyway, the result is None). Workers are
    daemon threads, so a stuck one never delays the agent's exit.
    """

    def __init__(self, read: Callable[[], T], timeout: float) -> None:
        self._read = read
        self.timeout = timeout
        self._done = threading.Event()
        self._result: T | None = None
        self._running = False

    def poll(self) -> tuple[bool, T | None]:
        if not self._running:
            self._done.clear()
            self._running = True
            threading.Thread(target=self._work, name="timed-read", daemon=True).start()
        if not self._done.wait(self.timeout):
            return False, None
        self._running = False
        return True, self._result

    def _work(self) -> None:
        self._result = None  # stays None only if ``read`` broke its promise and raised
        try:
            self._result = self._read()
        finally:
            self._done.set()
