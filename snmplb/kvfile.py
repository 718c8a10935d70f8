"""Small ``key = value`` configuration files (the agent's and the admin's)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from snmplb.errors import SnmplbError

BOM = "\ufeff"


def parse_kv(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse ``key = value`` lines; ``#`` starts a comment line.

    Returns the pairs (keys lower-cased, values stripped of quotes) and a list
    of problems, one per line that is not a pair.
    """
    return _parse_lines(enumerate(text.removeprefix(BOM).splitlines(), 1))


def parse_kv_bytes(data: bytes) -> tuple[dict[str, str], list[str]]:
    """``parse_kv`` of a file's bytes: a line with a NUL byte or invalid UTF-8 is a problem, not a pair.

    A UTF-8 byte order mark at the start is no problem (editors write one).
    """
    good = []
    problems = []
    for number, raw in enumerate(data.removeprefix(BOM.encode()).split(b"\n"), 1):
        if b"\0" in raw:
            problems.append(f"line {number}: contains a NUL byte")
            continue
        try:
            good.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            problems.append(f"line {number}: not valid UTF-8 (byte {exc.start + 1})")
    pairs, more = _parse_lines(good)
    return pairs, sorted(problems + more, key=_line_number)


def _line_number(problem: str) -> int:
    word = problem.split(":", 1)[0].removeprefix("line ")
    return int(word) if word.isdigit() else 0


def shown(text: str, limit: int = 60) -> str:
    """A value as a message shows it: quoted, cut at ``limit`` characters (a junk line can be 64 KiB)."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def summarise(problems: list[str], limit: int = 5, origin: str = "") -> list[str]:
    """At most ``limit`` problems, then one line counting the rest: a junk file never floods a log."""
    if len(problems) <= limit:
        return list(problems)
    return problems[:limit] + [f"{origin + ': ' if origin else ''}{len(problems) - limit} more problems"]


def _parse_lines(lines: Iterable[tuple[int, str]]) -> tuple[dict[str, str], list[str]]:
    pairs: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            problems.append(f"line {number}: expected 'key = value', got {shown(raw.strip())}")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pairs[key] = value
    return pairs, problems


def write_atomic(path: Path, text: str | bytes, mode: int = 0o644, gid: int = -1) -> None:
    """Replace ``path`` with ``text`` (or bytes) so that a reader sees the old or the new file, never half.

    The mode (and the group, ``gid`` >= 0) are set before anything is written: the content is never
    readable by more than ``mode`` allows, not even for an instant.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".")
    try:
        os.fchmod(fd, mode)
        if gid >= 0:
            os.fchown(fd, -1, gid)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class LockTimeout(SnmplbError):
    """Another writer held the lock for longer than we wait."""


def lock_path(path: Path) -> Path:
    """The lock file that serialises the writers of ``path``: beside it, hidden."""
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_lock(lock: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on ``lock`` (created if needed), waiting at most ``timeout`` seconds.

    Writers that read, modify and write a file take it around all three, so two
    at once never lose one another's change. The kernel drops the lock when its
    holder dies, so a crashed writer never blocks the next one.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{lock}: another snmplb-admin holds the lock; gave up after {timeout:g} s "
                                      "(try again; nothing was changed)") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock
