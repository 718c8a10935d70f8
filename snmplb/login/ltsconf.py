"""Reading lts.conf directly (for the status view run on the server): INI-like, per-client sections.

``[Default]`` first, then sections named by a client's MAC address, IP or host
name; the client's own section wins (MAC over IP over host name). ``LIKE =
section`` pulls another section in, as LTSP's getltscfg does, at most
``MAX_LIKE_DEPTH`` levels deep; a loop or a deeper chain is reported, not
followed. Values may be quoted; ``#`` after a blank (outside quotes) starts a
comment, as in the shell that finally reads these variables; a UTF-8 BOM is
ignored. The result is what LDM would export into get_hosts' environment.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_LIKE_DEPTH = 5


def _strip_comment(value: str) -> str:
    """``value`` without a trailing ``# comment``: a # at the start or after a blank, outside quotes."""
    quote = ""
    for i, c in enumerate(value):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or value[i - 1].isspace()):
            return value[:i]
    return value


def parse(text: str) -> dict[str, dict[str, str]]:
    """Sections (names lower-cased) of ``VAR = value`` pairs (names upper-cased)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.removeprefix("\ufeff").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip().lower(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            continue
        value = _strip_comment(value).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        current[key.strip().upper()] = value
    return sections


def _section(sections: dict[str, dict[str, str]], name: str, problems: list[str]) -> dict[str, str]:
    """A section's variables with its LIKE chain applied (own values win); problems of the chain appended."""
    chain = [name.lower()]
    while True:
        like = sections.get(chain[-1], {}).get("LIKE")
        if not like:
            break
        target = like.lower()
        path = " -> ".join(f"[{n}]" for n in (*chain, target))
        if target in chain:
            problems.append(f"lts.conf: LIKE loop {path}; stopped following it")
            break
        if len(chain) > MAX_LIKE_DEPTH:
            problems.append(f"lts.conf: LIKE nested deeper than {MAX_LIKE_DEPTH} ({path}); stopped at [{chain[-1]}]")
            break
        if target not in sections:
            problems.append(f"lts.conf: LIKE names a missing section [{like}] (in [{chain[-1]}])")
            break
        chain.append(target)
    out: dict[str, str] = {}
    for n in reversed(chain):
        out.update({k: v for k, v in sections.get(n, {}).items() if k != "LIKE"})
    return out


def resolve(text: str, identities: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Variables for a client known by ``identities`` (host name, IP, MAC: lowest to highest priority),
    and the problems met on the way (LIKE loops, chains too deep, missing sections)."""
    sections = parse(text)
    problems: list[str] = []
    out = _section(sections, "default", problems)
    for ident in identities:
        if ident:
            out.update(_section(sections, ident, problems))
    return out, problems
