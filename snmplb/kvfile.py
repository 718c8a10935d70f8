"""Small ``key = value`` files: the one reader and the one validation of snmplb's settings.

Every settings file is read here: agent.conf and admin.conf (``PLAIN``),
the thin client's client.conf (``CLIENT_CONF``: upper-case names, a bad line
never quoted, for any line may hold a secret), check_snmplb's secrets file, and
lts.conf (``LTS_CONF``: sections, ``#`` after a blank starts a comment, as in
the shell that finally reads it). The dialects differ only in those fields;
the line syntax (``key = value``, quotes, ``#`` comment lines, a UTF-8 BOM, a
NUL or invalid UTF-8 spoiling its line only) is one.

Every setting is checked the same way: a table of fields (``Field``: name,
the attribute it sets, a parse function that raises ConfigError, its default
as documented, and what a bad value means) run through ``validate``. A bad
value names its key and falls back (to its ``if_bad`` value, else the value in
force); nothing is ever half taken. lts.conf's LB_* ``VARIABLES`` are such a
table too (client.settings).

The writers' side is here too: ``write_atomic`` and the ``exclusive_lock`` of
snmplb-admin. get_hosts imports this at every login (client.conf): at import time it needs
only the cheapest standard modules; the writer's and the lock's are imported
where they are used.
"""

from __future__ import annotations

import os
from snmplb.errors import ConfigError, SnmplbError
from snmplb.record import record

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: get_hosts reads client.conf at every login and does without them
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path
    from typing import Protocol, TypeVar

    T = TypeVar("T")

    class FieldLike(Protocol):
        """What validate reads of a field: a Field, or client.settings' Variable (its fields and a doc)."""

        @property
        def name(self) -> str: ...
        @property
        def attr(self) -> str: ...
        @property
        def parse(self) -> Callable[[str], object] | None: ...
        @property
        def default(self) -> object: ...
        @property
        def if_bad(self) -> tuple[object, str] | None: ...


BOM = "\ufeff"
SHOWN = 40  # characters of a bad (non-secret) value quoted in a message: a 128 KiB value must not reach a log


class Dialect(record("Dialect", "fold sections inline_comments comments quote",
                     defaults=(str.lower, False, False, ("#",), True))):
    """How one kind of file differs: fold (applied to keys), sections (``[name]`` lines group the
    pairs), inline_comments (``#`` after a blank ends the value), comments (what starts a comment
    line), quote (a bad line is quoted in its problem; False where a line may hold a secret)."""

    __slots__ = ()


PLAIN = Dialect()
CLIENT_CONF = Dialect(fold=str.upper, quote=False)
LTS_CONF = Dialect(fold=str.upper, sections=True, inline_comments=True, comments=("#", ";"))


class Pair(record("Pair", "number section key value")):
    """One ``key = value`` line: its number, its section (lower-cased; None before the first header or
    where the dialect has none), its key (folded) and its value (stripped, unquoted). A section header
    is an entry with an empty key and value (an empty section exists: LIKE may name it)."""

    __slots__ = ()


def shown(text: str, limit: int = SHOWN) -> str:
    """A bad value as a message quotes it: its repr, cut at ``limit`` characters and said to be cut.
    Never used for a secret (those are never quoted at all)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def decode_lines(data: bytes, dialect: Dialect = PLAIN) -> tuple[list[tuple[int, str]], list[str]]:
    """A file's numbered text lines; a line with a NUL byte or invalid UTF-8 is a problem, not a line.
    A UTF-8 byte order mark at the start is no problem (editors write one)."""
    good = []
    problems = []
    for number, raw in enumerate(data.removeprefix(BOM.encode()).split(b"\n"), 1):
        if b"\0" in raw:
            problems.append(f"line {number}: contains a NUL byte")
            continue
        try:
            good.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            # where the bad byte is would tell something of a secret: only where quoting is fine
            where = f" (byte {exc.start + 1})" if dialect.quote else ""
            problems.append(f"line {number}: not valid UTF-8{where}")
    return good, problems


def text_lines(text: str) -> list[tuple[int, str]]:
    """A text's numbered lines, a leading BOM dropped."""
    return list(enumerate(text.removeprefix(BOM).splitlines(), 1))


def read_entries(lines: Iterable[tuple[int, str]], dialect: Dialect = PLAIN) -> tuple[list[Pair], list[str]]:
    """The ``key = value`` entries of numbered lines, and one problem per line that is not one."""
    entries: list[Pair] = []
    problems: list[str] = []
    section = None
    for number, raw in lines:
        line = raw.strip()
        if not line or line.startswith(dialect.comments):
            continue
        if dialect.sections and line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            entries.append(Pair(number, section, "", ""))
            continue
        key, sep, value = line.partition("=")
        key = dialect.fold(key.strip())
        if not sep or not key:
            got = f", got {shown(line)}" if dialect.quote else ""
            problems.append(f"line {number}: expected 'key = value'{got}")
            continue
        if dialect.inline_comments:
            value = _strip_comment(value)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        entries.append(Pair(number, section, key, value))
    return entries, problems


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


def parse_kv(text: str, dialect: Dialect = PLAIN) -> tuple[dict[str, str], list[str]]:
    """The pairs of a text (the last of a key wins; keys folded, values unquoted) and its problems,
    one per line that is not a pair."""
    entries, problems = read_entries(text_lines(text), dialect)
    return {e.key: e.value for e in entries if e.key}, problems


def read_bytes(data: bytes, dialect: Dialect = PLAIN) -> tuple[list[Pair], list[str]]:
    """``read_entries`` of a file's bytes, the problems in line order: a line with a NUL byte or
    invalid UTF-8 is a problem, not an entry."""
    lines, problems = decode_lines(data, dialect)
    entries, more = read_entries(lines, dialect)
    return entries, sorted(problems + more, key=by_line)


def parse_kv_bytes(data: bytes, dialect: Dialect = PLAIN) -> tuple[dict[str, str], list[str]]:
    """``parse_kv`` of a file's bytes: a line with a NUL byte or invalid UTF-8 is a problem, not a pair."""
    entries, problems = read_bytes(data, dialect)
    return {e.key: e.value for e in entries if e.key}, problems


def by_line(problem: str) -> int:
    """A sort key: the line number a problem starts with ("line 7: ..."), 0 when none."""
    word = problem.split(":", 1)[0].removeprefix("line ")
    return int(word) if word.isdigit() else 0


def summarise(problems: list[str], limit: int = 5, origin: str = "") -> list[str]:
    """At most ``limit`` problems, then one line counting the rest: a junk file never floods a log."""
    if len(problems) <= limit:
        return list(problems)
    return problems[:limit] + [f"{origin + ': ' if origin else ''}{len(problems) - limit} more problems"]


# -- the one validation -------------------------------------------------------------------------------

class Field(record("Field", "name attr parse default if_bad", defaults=(None,))):
    """One setting: its key in the file (name), the attribute it sets (attr), its parse function
    (raises ConfigError saying what is wrong, without the name), its default as documented, and what
    a bad value means (if_bad): None to keep the value in force, or (the value taken instead, what the
    message says is done). client.settings.Variable has the same fields and a ``doc``."""

    __slots__ = ()


NOT_QUOTED = "not a valid value (not quoted: it may hold a secret)"


def validate(fields: Iterable[FieldLike], pairs: Mapping[str, str], in_force: Mapping[str, object] | None = None,
             unknown: bool = True, unquoted: frozenset[str] = frozenset()) -> tuple[dict[str, object], list[str]]:
    """The values ``pairs`` set (attr -> value) and one problem per bad (or, with ``unknown``, unknown) key.

    A bad value names its key and is not taken: its field's ``if_bad`` value is, when it has one (the
    message says what that means); else the value in force stays (``in_force[attr]``, or the field's
    documented default) and the message says which. For the keys in ``unquoted`` (values read from a
    file that may hold secrets: client.conf) the message says only that the value is bad: a parse
    function's words quote the value, and a mistyped line may hold a passphrase.
    """
    by_name = {f.name: f for f in fields}
    values: dict[str, object] = {}
    problems: list[str] = []
    for key, raw in pairs.items():
        field = by_name.get(key)
        if field is None or field.parse is None:
            if unknown:
                problems.append(f"unknown setting {shown(key)}")
            continue
        try:
            values[field.attr] = field.parse(raw)
        except ConfigError as exc:
            if field.if_bad is not None:
                values[field.attr], done = field.if_bad
            elif in_force is not None:
                done = f"using {in_force[field.attr]}"
            else:
                default = str(field.default)  # "(none)" is its own parenthesis: no "((none))"
                done = f"using the default {default}" if default.startswith("(") else f"using the default ({default})"
            why = NOT_QUOTED if key in unquoted else str(exc)
            problems.append(f"{field.name}: {why}; {done}")
    return values, problems


def check(field: Field, raw: str) -> object:
    """One value by its field, for a command line; ConfigError names the setting."""
    try:
        return field.parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{field.name}: {exc}") from None


def field_docs(cls: type) -> dict[str, str]:
    """The ``name: meaning`` entries of a settings class's docstring (continuation lines indented): each
    setting's one description, read by its command's --help and by its manual page (snmplb.build.mangen)."""
    import inspect  # here: get_hosts imports this module at every login and never asks for words
    import re

    out: dict[str, str] = {}
    current = None
    # cleandoc: Python 3.13 strips a docstring's indentation itself, 3.11 does not; both read alike here.
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines()[1:]:
        m = re.match(r"(\w+): (.*)", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2)
        elif current and line.startswith(" ") and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return out


# Parse functions: each takes the raw text and returns the value or raises ConfigError (without the
# key's name: validate and check add it).

def accepting(parse: Callable[[str], T], words: str) -> Callable[[str], T]:
    """``parse``, labelled with what it accepts in words (``parse.accepts``): the manual pages say what a
    setting takes from the very function that checks it (snmplb.build.mangen)."""
    parse.accepts = words  # type: ignore[attr-defined]  # a label on a plain function
    return parse


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number within [low, high], in ASCII digits (an optional minus sign): Python's int() also
    reads Arabic-Indic or full-width digits, an underscore or a plus sign, which no snmplb tool writes
    and an admin would not see as a typo."""
    def parse(raw: str) -> int:
        digits = raw[1:] if raw.startswith("-") else raw
        if not (digits.isascii() and digits.isdigit()):
            raise ConfigError(f"{shown(raw)} is not a whole number")
        try:
            n = int(raw)
        except ValueError:  # thousands of digits: past int()'s limit, and past any range here
            raise ConfigError(f"{shown(raw)} is outside {low}..{high}") from None
        if not low <= n <= high:
            raise ConfigError(f"{n} is outside {low}..{high}")
        return n
    return accepting(parse, f"a whole number in {low}..{high}")


def number(low: float, high: float) -> Callable[[str], float]:
    """A number within [low, high] (never nan)."""
    def parse(raw: str) -> float:
        try:
            x = float(raw)
        except ValueError:
            raise ConfigError(f"{shown(raw)} is not a number") from None
        if not low <= x <= high:  # also rejects nan
            raise ConfigError(f"{shown(raw)} is outside {low}..{high}")
        return x
    return accepting(parse, f"a number in {low:g}..{high:g}")


def yes_no(raw: str) -> bool:
    """yes/no, true/false, on/off, 1/0 (any case)."""
    v = raw.lower()
    if v in ("1", "y", "yes", "true", "on"):
        return True
    if v in ("0", "n", "no", "false", "off"):
        return False
    raise ConfigError(f"{shown(raw)} is not yes or no")


accepting(yes_no, "yes or no (also true/false, on/off, 1/0)")


def one_of(options: tuple[str, ...], fold: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    """One of ``options`` (compared after ``fold``, white space ignored), as ``options`` spells it."""
    def parse(raw: str) -> str:
        for o in options:
            if fold(raw.strip()) == fold(o):
                return o
        raise ConfigError(f"{shown(raw)} is not one of: {', '.join(options)}")
    return accepting(parse, "one of: " + ", ".join(options))


def write_atomic(path: Path, text: str | bytes, mode: int = 0o644, gid: int = -1) -> None:
    """Replace ``path`` with ``text`` (or bytes) so that a reader sees the old or the new file, never half.

    The mode (and the group, ``gid`` >= 0) are set before anything is written: the content is never
    readable by more than ``mode`` allows, not even for an instant.
    """
    import tempfile  # here: get_hosts imports this module and never writes

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


class exclusive_lock:  # noqa: N801 (used as a function: ``with exclusive_lock(path, 10):``)
    """Hold an exclusive flock on ``lock`` (created if needed), waiting at most ``timeout`` seconds.

    Writers that read, modify and write a file take it around all three, so two
    at once never lose one another's change. The kernel drops the lock when its
    holder dies, so a crashed writer never blocks the next one. A class rather
    than a contextlib generator: get_hosts imports this module, and contextlib
    (with functools and types) would be three more modules at every login.
    """

    def __init__(self, lock: Path, timeout: float) -> None:
        self.lock = lock
        self.timeout = timeout
        self._fd = -1

    def __enter__(self) -> None:
        import fcntl  # here: get_hosts imports this module and never locks
        import time

        self.lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"{self.lock}: another snmplb-admin holds the lock; gave up after "
                                      f"{self.timeout:g} s (try again; nothing was changed)") from None
                time.sleep(0.02)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # closing releases the lock
        self._fd = -1
