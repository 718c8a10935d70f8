"""A small man(7) writer for snmplb.build.mangen: pages made of sections of paragraphs, lists and examples.

Text is written with three marks of its own, turned into roff here and nowhere else:
``\\`literal\\``` (bold: commands, options, keys, values, paths), ``{name}`` (italic: a placeholder,
in the generator's own prose only) and ``page(N)`` (a reference to another manual page, bold name).
Everything else is escaped: a backslash prints as one, every ``-`` is ``\\-`` (the ASCII hyphen-minus
that a reader can copy into a shell), and a line never starts with a control character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MANREF = re.compile(r"(?<![\w\\])([a-z][\w.+]*(?:\\-[\w.+]+)*)\(([1-8])\)")
_LITERAL = re.compile(r"`([^`]+)`")
_PLACEHOLDER = re.compile(r"\{([A-Za-z][\w.\\-]*)\}")


def esc(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line breaks."""
    return " ".join(text.replace("\\", "\\e").replace("-", "\\-").split("\n"))


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def inline(text: str, placeholders: bool = True) -> str:
    """Marked-up text as roff. ``placeholders`` False for text that comes from the code (help strings,
    the settings' docs), where braces are only braces."""
    out = _LITERAL.sub(r"\\fB\1\\fR", esc(text))
    if placeholders:
        out = _PLACEHOLDER.sub(r"\\fI\1\\fR", out)
    return _MANREF.sub(r"\\fB\1\\fR(\2)", out)


def _line(roff: str) -> str:
    """A text line that roff cannot take for a request."""
    return "\\&" + roff if roff.startswith((".", "'")) else roff


@dataclass(frozen=True)
class Para:
    """A paragraph: roff text (already converted)."""

    roff: str


@dataclass(frozen=True)
class Items:
    """A definition list: (term, text) pairs, both roff."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Example:
    """Lines shown as they are (commands, file contents), indented, not filled."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Sub:
    """A subsection (.SS) with its own blocks."""

    title: str
    blocks: tuple[object, ...]


@dataclass
class Page:
    name: str
    section: int
    summary: str  # the NAME line's words after the dash (what whatis and apropos show)
    sections: list[tuple[str, list[object]]] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.section}"

    def add(self, title: str, *blocks: object) -> None:
        blocks = tuple(b for b in blocks if b is not None)
        if blocks:
            self.sections.append((title, list(blocks)))

    def render(self, version: str, date: str, source: str) -> str:
        out = [f'.\\" {source}',
               f'.TH "{esc(self.name.upper())}" "{self.section}" "{date}" "snmplb {esc(version)}" "snmplb manual"',
               # left-aligned and never hyphenated: a command, path or key cut in two cannot be copied
               ".ad l", ".nh",
               ".SH NAME", f"{esc(self.name)} \\- {esc(self.summary)}"]
        for title, blocks in self.sections:
            out.append(f'.SH "{title}"')
            out += _blocks(blocks)
        return "\n".join(out) + "\n"


def _blocks(blocks: list[object] | tuple[object, ...]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Para):
            out += [".PP", _line(block.roff)]
        elif isinstance(block, Items):
            for term, text in block.items:
                out += [".TP", _line(term), _line(text)]
        elif isinstance(block, Example):
            out += [".PP", ".RS 4", ".nf"] + [_line(esc(line)) if line else "" for line in block.lines] + [".fi", ".RE"]
        elif isinstance(block, Sub):
            out.append(f'.SS "{esc(block.title)}"')
            out += _blocks(block.blocks)
        else:
            raise TypeError(f"not a block: {block!r}")
    return out
