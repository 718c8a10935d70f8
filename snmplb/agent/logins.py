"""Counting login sessions: systemd-logind's state, else utmp.

LDM logs users in over ssh, so a login session here is a remote one. logind
keeps one small ``KEY=VALUE`` file per session in /run/systemd/sessions;
where logind is absent, utmp's USER_PROCESS entries with a remote host are
counted instead. Parsers are pure; ``count_sessions`` is the driver.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from snmplb.safefile import UnsafeFile, read_bounded

_FILE_LIMIT = 64 * 1024
_MAX_FILES = 100_000
# struct utmp on Linux (glibc, x86_64 and the other 64-bit ABIs with 32-bit ut_tv).
_UTMP = struct.Struct("<h2xi32s4s32s256shhi2i4i20s")
_USER_PROCESS = 7
_CLOSED_STATES = frozenset({"closing"})
FILE_KEY = "@file"  # read_logind_dir adds the session file's name (logind's session id) under this key


@dataclass(frozen=True)
class SessionCount:
    """Remote login sessions, distinct users among them, and where they were counted."""

    sessions: int
    users: int
    source: str  # "logind", "utmp" or "none", as SnmplbSessionSource
    # Each counted session's identity (logind: its file's name; utmp: pid, line and login time), so that a
    # later count tells which sessions are new (``tcpconns.Connecting``); logind's only for sessions that came
    # over ssh (SERVICE=sshd, or no SERVICE): an xrdp session is no ssh connection's. Not part of the equality.
    ids: frozenset[str] = field(default=frozenset(), compare=False)


def parse_logind_session(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` pairs of one logind session file."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def is_remote_login(fields: dict[str, str]) -> bool:
    """A user session from a remote host (ssh, as LDM creates) that is not closing."""
    return (
        fields.get("CLASS", "user") == "user"
        and fields.get("REMOTE") == "1"
        and fields.get("STATE", "active") not in _CLOSED_STATES
    )


def count_logind(session_files: Iterable[dict[str, str]]) -> SessionCount:
    """Count the remote login sessions among parsed logind session files."""
    users: set[str] = set()
    ids: set[str] = set()
    n = 0
    for fields in session_files:
        if is_remote_login(fields):
            n += 1
            users.add(fields.get("USER") or fields.get("UID", "?"))
            if fields.get("SERVICE", "sshd") == "sshd":  # an xrdp or console session has no ssh connection
                ids.add(fields.get(FILE_KEY) or f"{fields.get('SCOPE')}:{fields.get('LEADER')}:{fields.get('REALTIME')}")
    return SessionCount(n, len(users), "logind", frozenset(ids))


def parse_utmp(data: bytes) -> SessionCount:
    """Count USER_PROCESS records with a remote host in a utmp file's bytes."""
    users: set[bytes] = set()
    ids: set[str] = set()
    n = 0
    size = _UTMP.size
    for off in range(0, len(data) - size + 1, size):
        rec = _UTMP.unpack_from(data, off)
        ut_type, user, host = rec[0], rec[4].split(b"\0", 1)[0], rec[5].split(b"\0", 1)[0]
        if ut_type == _USER_PROCESS and user and host:
            n += 1
            users.add(user)
            line = rec[2].split(b"\0", 1)[0]
            ids.add(f"{rec[1]}:{line.hex()}:{rec[9]}.{rec[10]}")  # pid, line, login time
    return SessionCount(n, len(users), "utmp", frozenset(ids))


def _read_nonblocking(path: str | Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file (not a symlink): a FIFO or device put there is refused."""
    try:
        return read_bounded(path, limit, truncate=True, follow=False)
    except UnsafeFile as exc:
        raise OSError(str(exc)) from None


def read_logind_dir(directory: Path) -> Iterable[dict[str, str]]:
    # Only regular files: logind keeps FIFOs (*.ref) there, and opening a FIFO
    # for reading blocks until a writer appears, which would freeze snmpd.
    with os.scandir(directory) as it:
        for i, entry in enumerate(it):
            if i >= _MAX_FILES:
                break
            if "." in entry.name or not entry.is_file(follow_symlinks=False):
                continue
            try:
                data = _read_nonblocking(entry.path, _FILE_LIMIT)
            except OSError:
                continue  # the session ended between scandir and open
            fields = parse_logind_session(data.decode("utf-8", "replace"))
            fields[FILE_KEY] = entry.name
            yield fields


def count_sessions(logind_dir: Path, utmp_file: Path) -> SessionCount:
    """Count from logind when its session directory exists, else from utmp, else none."""
    if logind_dir.is_dir():
        try:
            return count_logind(list(read_logind_dir(logind_dir)))
        except OSError:
            pass
    try:
        return parse_utmp(_read_nonblocking(utmp_file, _UTMP.size * 65536))
    except (OSError, ValueError):  # ValueError: a NUL in the configured path
        return SessionCount(0, 0, "none")
