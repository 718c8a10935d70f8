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

from snmplb.kvfile import LTS_CONF, read_entries, text_lines

MAX_LIKE_DEPTH = 5


def parse(text: str) -> dict[str, dict[str, str]]:
    """Sections (names lower-cased) of ``VAR = value`` pairs (names upper-cased), read by the one
    key = value reader (kvfile, LTS_CONF dialect). Lines that are no pair, and pairs before the first
    section, are not LTSP's and are left alone, as getltscfg does."""
    sections: dict[str, dict[str, str]] = {}
    entries, _ = read_entries(text_lines(text), LTS_CONF)
    for e in entries:
        if e.section is not None:
            values = sections.setdefault(e.section, {})
            if e.key:  # not the header itself
                values[e.key] = e.value
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
            problems.append(f"LIKE loop {path}; stopped following it")
            break
        if len(chain) > MAX_LIKE_DEPTH:
            problems.append(f"LIKE nested deeper than {MAX_LIKE_DEPTH} ({path}); stopped at [{chain[-1]}]")
            break
        if target not in sections:
            problems.append(f"LIKE names a missing section [{like}] (in [{chain[-1]}])")
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
