"""Reading lts.conf directly (for the status view run on the server): INI-like, per-client sections.

``[Default]`` first, then sections named by a client's MAC address, IP or host
name; the client's own section wins (MAC over IP over host name). ``LIKE =
section`` pulls another section in, as LTSP's getltscfg does, at most
``MAX_LIKE_DEPTH`` levels deep; a loop or a deeper chain is reported, not
followed. Values may be quoted; ``#`` after a blank (outside quotes) starts a
comment, as in the shell that finally reads these variables; a UTF-8 BOM is
ignored. The result is what LDM would export into get_hosts' environment.

Lines that LTSP ignores (no ``VAR = value`` pair, or a pair before the first
section) are ignored here too, and reported by line number: the reports never
quote a line, whatever it holds.
"""

from __future__ import annotations

from collections.abc import Iterable

from snmplb.kvfile import LTS_CONF, by_line, read_entries, summarise, text_lines

MAX_LIKE_DEPTH = 5
MAX_REPORTED = 5  # ignored lines reported one by one; the rest counted in one more problem
_DIALECT = LTS_CONF._replace(quote=False)  # a junk line is named by its number, never quoted


def read(text: str) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Sections (names lower-cased) of ``VAR = value`` pairs (names upper-cased), read by the one
    key = value reader (kvfile, LTS_CONF dialect), and the lines ignored on the way.

    Lines that are no pair, and pairs before the first section, are not LTSP's: they are ignored,
    as getltscfg ignores them, and each is reported by its line number (at most MAX_REPORTED, then a
    count), never by its text: a stray line may hold anything.
    """
    sections: dict[str, dict[str, str]] = {}
    entries, problems = read_entries(text_lines(text), _DIALECT)
    problems = [p + "; ignored" for p in problems]
    for e in entries:
        if e.section is None:
            problems.append(f"line {e.number}: a variable before the first [section]; ignored "
                            "(LTSP reads variables only in [Default] or a client's section)")
            continue
        values = sections.setdefault(e.section, {})
        if e.key:  # not the header itself
            values[e.key] = e.value
    return sections, summarise(sorted(problems, key=by_line), MAX_REPORTED)


def parse(text: str) -> dict[str, dict[str, str]]:
    """``read``'s sections, without its problems."""
    return read(text)[0]


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
    and the problems met on the way: the file's ignored lines (``read``), then LIKE loops, chains too
    deep and missing sections."""
    sections, problems = read(text)
    out = _section(sections, "default", problems)
    for ident in identities:
        if ident:
            out.update(_section(sections, ident, problems))
    return out, problems
