"""POSIX message queues through ctypes on libc's mq_* functions (mq_overview(7)).

No Debian package provides posix_ipc, and the thin client should not need a
compiler: glibc (librt before 2.34) has mq_open and friends, and ctypes is in
the standard library. Linux only: a queue descriptor is a file descriptor
there, so os.fchmod/os.fchown set its mode and group.

A thin driver: each method is one system call (create: the exclusive
open, then the group and mode); errors become snmplb.errors.QueueError with
the call's name and strerror. Whom to trust is the caller's rule
(snmplb.login.feed.untrusted); ``Queue.stat`` gives it the open queue's
owner and mode.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
from dataclasses import dataclass

from snmplb.errors import QueueError


class _Attr(ctypes.Structure):
    # struct mq_attr on Linux: four longs, then reserved space.
    _fields_ = [("mq_flags", ctypes.c_long), ("mq_maxmsg", ctypes.c_long), ("mq_msgsize", ctypes.c_long),
                ("mq_curmsgs", ctypes.c_long), ("_reserved", ctypes.c_long * 4)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load() -> ctypes.CDLL:
    """libc, or librt where mq_* still live there (glibc < 2.34)."""
    for name in (ctypes.util.find_library("rt"), "librt.so.1", ctypes.util.find_library("c"), "libc.so.6"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        if hasattr(lib, "mq_open"):
            break
    else:
        raise QueueError("mq_open", errno.ENOSYS)
    lib.mq_open.restype = ctypes.c_int
    lib.mq_close.argtypes = [ctypes.c_int]
    lib.mq_unlink.argtypes = [ctypes.c_char_p]
    lib.mq_getattr.argtypes = [ctypes.c_int, ctypes.POINTER(_Attr)]
    lib.mq_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
    lib.mq_timedreceive.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(_Timespec)]
    lib.mq_timedreceive.restype = ctypes.c_ssize_t
    lib.mq_receive.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint)]
    lib.mq_receive.restype = ctypes.c_ssize_t
    return lib


_LIB: list[ctypes.CDLL] = []  # loaded at the first use: importing this module costs nothing


def _lib() -> ctypes.CDLL:
    if not _LIB:
        _LIB.append(_load())
    return _LIB[0]


def _check(call: str, result: int) -> int:
    if result < 0:
        raise QueueError(call, ctypes.get_errno())
    return result


def _encode(name: str) -> bytes:
    """A queue's name: one leading slash, no other (mq_overview(7))."""
    if not (name.startswith("/") and 1 < len(name) <= 255 and "/" not in name[1:] and "\0" not in name):
        raise QueueError(f"queue name {name[:60]!r}", errno.EINVAL)
    return name.encode()


@dataclass(frozen=True)
class Attributes:
    """A queue's attributes: its capacity (maxmsg, msgsize) and how many messages wait (curmsgs)."""

    maxmsg: int
    msgsize: int
    curmsgs: int


class Queue:
    """One open descriptor of a named queue; a context manager that closes it."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd

    @classmethod
    def create(cls, name: str, maxmsg: int, msgsize: int, mode: int = 0o600, gid: int = -1) -> Queue:
        """Create ``name`` for writing, non-blocking, with this capacity; never open one that exists.

        O_EXCL: when the name exists (whoever made it) this fails with EEXIST, so a queue
        another user created first is never taken over. The queue is created 0600, then
        given ``gid`` (>= 0) and only then ``mode`` (fchmod: the umask neither widens nor
        narrows it), so it is never open to a group it does not belong to.
        """
        attr = _Attr(0, maxmsg, msgsize, 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC
        fd = _check("mq_open", _lib().mq_open(_encode(name), flags, ctypes.c_uint(0o600), ctypes.byref(attr)))
        q = cls(name, fd)
        try:
            if gid >= 0:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)
        except OSError:
            q.close()
            unlink(name)
            raise
        return q

    @classmethod
    def open(cls, name: str, write: bool = False, blocking: bool = False) -> Queue:
        """Open an existing queue for reading (or writing)."""
        flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC | (0 if blocking else os.O_NONBLOCK)
        fd = _check("mq_open", _lib().mq_open(_encode(name), flags))
        return cls(name, fd)

    def stat(self) -> os.stat_result:
        """fstat of the open descriptor: the owner, group, mode and inode of this queue, whatever its name
        names now (on Linux a queue descriptor is a file of the mqueue file system)."""
        return os.fstat(self.fd)

    def attributes(self) -> Attributes:
        a = _Attr()
        _check("mq_getattr", _lib().mq_getattr(self.fd, ctypes.byref(a)))
        return Attributes(a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs)

    def send(self, data: bytes, priority: int = 0) -> bool:
        """Send one message; False when the queue is full (non-blocking descriptor)."""
        if _lib().mq_send(self.fd, data, len(data), priority) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EAGAIN:
            return False
        raise QueueError("mq_send", err)

    def receive(self, timeout: float | None = None) -> bytes | None:
        """One message, or None when none came (non-blocking: none waiting; else within ``timeout``).

        ``timeout`` is relative; mq_timedreceive wants an absolute CLOCK_REALTIME time.
        """
        size = self.attributes().msgsize
        buf = ctypes.create_string_buffer(size)
        if timeout is None:
            n = _lib().mq_receive(self.fd, buf, size, None)
        else:
            end = time.clock_gettime(time.CLOCK_REALTIME) + max(0.0, timeout)
            ts = _Timespec(int(end), int((end - int(end)) * 1e9))
            n = _lib().mq_timedreceive(self.fd, buf, size, None, ctypes.byref(ts))
        if n >= 0:
            return buf.raw[:n]
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            return None
        raise QueueError("mq_receive", err)

    def close(self) -> None:
        if self.fd >= 0:
            _lib().mq_close(self.fd)
            self.fd = -1

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unlink(name: str) -> bool:
    """Remove the queue's name; False when it did not exist."""
    if _lib().mq_unlink(_encode(name)) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        return False
    raise QueueError("mq_unlink", err)


def unlink_if_same(name: str, ours: os.stat_result) -> bool:
    """Remove ``name`` only while it still names the queue ``ours`` (its fstat); False when it names
    another queue (a later feed replaced ours) or nothing.

    Between this check and the unlink the name can change hands only by its owner or root (another
    user's mq_unlink fails with EACCES): the check keeps one feed from removing its successor's queue.
    """
    try:
        with Queue.open(name) as q:
            st = q.stat()
    except QueueError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    if (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino):
        return False
    return unlink(name)


def publish_latest(writer: Queue, data: bytes, drain: Queue, tries: int = 4) -> int:
    """Send ``data`` so that the queue holds the latest message; never blocks.

    When the queue is full (nobody read the earlier messages), receive the
    oldest through ``drain`` (an O_RDONLY|O_NONBLOCK descriptor of the same
    queue) and try again: a reader that starts late gets the newest state at
    once. Returns how many old messages were dropped; bounded by ``tries``.
    """
    dropped = 0
    for _ in range(tries):
        if writer.send(data):
            return dropped
        if drain.receive() is not None:
            dropped += 1
    raise QueueError("mq_send", errno.EAGAIN)
