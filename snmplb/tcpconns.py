"""Counting established inbound TCP connections to a local port, from /proc/net/tcp and tcp6.

An LDM login opens its ssh connection at once; logind registers the session
seconds later. Counting established connections to sshd's port shows a login
about a second after the thin client chose the server (the agent's sampling
interval), which is what lets a login storm see the logins still connecting.
The parser is pure; ``count_established`` reads the files (procfs: never blocks).
"""

from __future__ import annotations

from pathlib import Path

_ESTABLISHED = "01"
_LIMIT = 16 << 20


def parse_established(text: str, port: int) -> int:
    """Established connections whose LOCAL port is ``port`` in one /proc/net/tcp{,6} text."""
    n = 0
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _ESTABLISHED:
            continue
        _, _, local_port = fields[1].rpartition(":")
        try:
            if int(local_port, 16) == port:
                n += 1
        except ValueError:
            continue
    return n


def count_established(proc_root: Path, port: int) -> int:
    """Established inbound connections to ``port`` over IPv4 and IPv6 (0 where unreadable)."""
    total = 0
    for name in ("tcp", "tcp6"):
        try:
            with open(proc_root / "net" / name, "rb") as f:
                total += parse_established(f.read(_LIMIT).decode("ascii", "replace"), port)
        except OSError:
            continue
    return total
