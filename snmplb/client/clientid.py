"""This thin client's identity for `sticky`: the MAC of the interface holding the default route."""

from __future__ import annotations

import os

_HEX = frozenset("0123456789abcdef")


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and set(p) <= _HEX for p in parts)


def default_route_interface(route_table: str) -> str | None:
    """The interface of the IPv4 default route in /proc/net/route's text (lowest metric wins).

    Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...; a
    default route has destination and mask 0 and the RTF_UP flag.
    """
    best: tuple[int, str] | None = None
    for line in route_table.splitlines()[1:]:
        f = line.split()
        if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
            continue
        try:
            up, metric = int(f[3], 16) & 0x1, int(f[6])
        except ValueError:
            continue
        if up and (best is None or metric < best[0]):
            best = (metric, f[0])
    return best[1] if best else None


def default_mac(proc_root: str = "/proc", sys_root: str = "/sys") -> str:
    """The MAC address (lower case) of the default route's interface, or "" if unknown."""
    try:
        with open(os.path.join(proc_root, "net", "route")) as f:
            iface = default_route_interface(f.read(1 << 16))
        if not iface or "/" in iface or iface.startswith("."):
            return ""
        with open(os.path.join(sys_root, "class", "net", iface, "address")) as f:
            mac = f.read(64).strip().lower()
    except (OSError, UnicodeDecodeError):
        return ""
    return mac if _is_mac(mac) and mac != "00:00:00:00:00:00" else ""
