"""Reading lts.conf directly (for the status view run on the server): INI-like, per-client sections.

``[Default]`` first, then sections named by a client's MAC address, IP or host
name; the client's own section wins (MAC over IP over host name). ``LIKE =
section`` pulls another section in, as LTSP's getltscfg does. Values may be
quoted. The result is what LDM would export into get_hosts' environment.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse(text: str) -> dict[str, dict[str, str]]:
    """Sections (names lower-cased) of ``VAR = value`` pairs (names upper-cased)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip().lower(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        current[key.strip().upper()] = value
    return sections


def _section(sections: dict[str, dict[str, str]], name: str, depth: int = 0) -> dict[str, str]:
    own = sections.get(name.lower(), {})
    like = own.get("LIKE")
    base = _section(sections, like, depth + 1) if like and depth < 5 else {}
    return {**base, **{k: v for k, v in own.items() if k != "LIKE"}}


def resolve(text: str, identities: Iterable[str]) -> dict[str, str]:
    """Variables for a client known by ``identities`` (host name, IP, MAC: lowest to highest priority)."""
    sections = parse(text)
    out = _section(sections, "default")
    for ident in identities:
        if ident:
            out.update(_section(sections, ident))
    return out
