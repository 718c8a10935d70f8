"""The admin's settings for one application server: state, weight, maximum sessions.

They live in a small file (default /etc/snmplb/admin.conf) that
``snmplb-admin`` writes and the agent re-reads at every sample, so a change
shows in the next GET.

A typo must never loosen the admin's intent (put a drained server back in
rotation). So a file with any bad line, or one that cannot be read, is a
*problem*: the agent keeps the last good settings whole (``settle``) and
reports the problem. With no good reading yet (the agent just started), the
file's own conservative reading stands (``parse_admin_bytes``): its valid
keys, the defaults for the rest, and ``draining`` unless a valid state line
says otherwise; a file present but unreadable counts as draining. A missing
file means the defaults (enabled), silently: that is how a server starts.
A file that sets nothing (0 bytes, or only blank and comment lines: what a
failed save on a full disk or ``: > admin.conf`` leaves) is *blank*, read
as a missing one: the defaults at start, and the agent's rule for a file
removed after it said something else (the last good settings stay, as a
problem) applies to it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from snmplb import mib
from snmplb.kvfile import (Pair, Field, by_line, check, one_of, read_bytes, shown,
                           validate, whole, write_atomic)
from snmplb.safefile import CONFIG_LIMIT, UnsafeFile, describe, read_bounded

STATES: tuple[str, ...] = tuple(mib.obj("lbAdminState").enums)  # the MIB's labels, in its order
MAX_WEIGHT = mib.maximum("lbWeight")  # the MIB's range


@dataclass(frozen=True)
class AdminSettings:
    """What the admin decided for this server.

    state: enabled, draining (no new sessions, existing stay) or disabled.
    weight: capacity in percent of a reference server (0..10000, default 100).
    max_sessions: the most sessions this server takes; 0 means no limit.
    enabled_since: when (Unix time) the admin last enabled it; 0: unknown (boot counts).
    """

    state: str = "enabled"
    weight: int = 100
    max_sessions: int = 0
    enabled_since: int = 0


# Every key of the file and how it is checked (the one validation, kvfile.validate). A bad line is "not
# taken", and its problem says no more: what the server then runs on is not this reading's to say. The
# agent keeps its last good settings, whole (``settle``), and says which, once, in its log; only with none
# does this reading's conservative value stand (a bad state line: draining, never enabled, so that a typo
# cannot put a drained server back in rotation). snmplb-admin show says the same.
_NOT_TAKEN = "not taken"
FIELDS = (
    Field("state", "state", one_of(STATES), "enabled", if_bad=("draining", _NOT_TAKEN)),
    Field("weight", "weight", whole(0, MAX_WEIGHT), "100", if_bad=(AdminSettings.weight, _NOT_TAKEN)),
    Field("max_sessions", "max_sessions", whole(0, 2**31 - 1), "0",
          if_bad=(AdminSettings.max_sessions, _NOT_TAKEN)),
    Field("enabled_since", "enabled_since", whole(0, 2**40), "0",
          if_bad=(AdminSettings.enabled_since, _NOT_TAKEN)),
)
_BY_NAME = {f.name: f for f in FIELDS}


def check_setting(name: str, value: str) -> object:
    """One setting's value checked as the file's is (for snmplb-admin's command line); ConfigError names it."""
    return check(_BY_NAME[name], value)


@dataclass(frozen=True)
class AdminReading:
    """One reading of the admin file: its conservative settings and what is wrong with it.

    settings: what this reading alone says (draining when the file is unreadable).
    problems: one line each, the path first; empty when the file (or its absence) is good.
    """

    settings: AdminSettings
    problems: tuple[str, ...] = ()
    missing: bool = False  # there is no file (the defaults, at start)
    empty: bool = False  # there is a file, and it sets nothing (read as a missing one)

    @property
    def blank(self) -> bool:
        """The file is missing or sets nothing: the defaults, unless it said something else before."""
        return self.missing or self.empty


UNREADABLE = AdminSettings(state="draining")


def parse_admin_bytes(data: bytes) -> tuple[AdminSettings, list[str]]:
    """Settings from the file's bytes (a NUL or invalid UTF-8 spoils its line), and the problems."""
    return _settings(*read_bytes(data))


def _settings(entries: list[Pair], problems: list[str]) -> tuple[AdminSettings, list[str]]:
    """The conservative reading: valid keys stand, bad ones keep their defaults, and the state is
    draining when anything is wrong and no valid state line says otherwise (the bad line may be it).

    A key set twice is a problem (snmplb-admin writes each once: the last no longer wins in silence);
    when its lines disagree neither is taken (a state left draining, a number its default).
    """
    first: dict[str, Pair] = {}
    disagree: set[str] = set()
    lines = list(problems)
    for e in entries:
        seen = first.setdefault(e.key, e)
        if seen is e:
            continue
        differs = e.value != seen.value
        lines.append(f"line {e.number}: {shown(e.key)} set again (first on line {seen.number})"
                     + ("; the lines disagree: neither is taken" if differs else ""))
        if differs:
            disagree.add(e.key)
    pairs = {key: e.value for key, e in first.items() if key not in disagree}
    problems = sorted(lines, key=by_line)
    values, more = validate(FIELDS, pairs)
    problems = problems + more
    if problems and "state" not in values:
        values["state"] = "draining"
    return AdminSettings(**values), problems  # type: ignore[arg-type]  # values typed by FIELDS' parse functions


def settle(last_good: AdminSettings | None, reading: AdminReading) -> tuple[AdminSettings, AdminSettings | None]:
    """(the settings to publish, the new last good settings) after ``reading``.

    A good reading is published and becomes the last good one. A reading with a
    problem changes nothing: the last good settings stay, whole (a half-good
    file is not merged key by key); with none yet, the reading's own
    conservative settings are published.
    """
    if not reading.problems:
        return reading.settings, reading.settings
    return (last_good if last_good is not None else reading.settings), last_good


def problem_line(reading: AdminReading) -> str:
    """The first problem and how many more, on one line ("" when there is none)."""
    if not reading.problems:
        return ""
    more = len(reading.problems) - 1
    return reading.problems[0] + (f" (and {more} more)" if more else "")


def render_admin(settings: AdminSettings) -> str:
    """The file's text for ``settings``."""
    return (
        "# snmplb: this application server's load-balancing settings.\n"
        "# Written by snmplb-admin; read by snmplb-agent at every sample. See snmplb-admin.conf(5).\n"
        f"# state: {' | '.join(STATES)}\n"
        "#   (draining: no new sessions, existing ones stay; disabled: out of rotation)\n"
        f"state = {settings.state}\n"
        "# weight: capacity in percent of a reference server (0..10000)\n"
        f"weight = {settings.weight}\n"
        "# max_sessions: most sessions this server takes (0 = no limit)\n"
        f"max_sessions = {settings.max_sessions}\n"
        "# enabled_since: when the admin last enabled it (Unix time; thin clients slow-start it)\n"
        f"enabled_since = {settings.enabled_since}\n"
    )


def read_admin(path: Path) -> AdminReading:
    """Read the admin file, bounded (regular file, at most 64 KiB, never blocking on a FIFO).

    A missing file means the defaults, silently; one that cannot be read counts as draining.
    Never raises: every failure is a problem of the reading.
    """
    try:
        data = read_bounded(path, CONFIG_LIMIT)
    except FileNotFoundError:
        return AdminReading(AdminSettings(), missing=True)
    except (OSError, UnsafeFile) as exc:
        return AdminReading(UNREADABLE, (describe(exc, path),))
    except ValueError:  # a NUL in the configured path itself
        return AdminReading(UNREADABLE, (f"{path!r}: not a usable path",))
    entries, problems = read_bytes(data)
    if not entries and not problems:  # 0 bytes, or only blank and comment lines
        return AdminReading(AdminSettings(), empty=True)
    settings, problems = _settings(entries, problems)
    return AdminReading(settings, tuple(f"{path}: {p}" for p in problems))


def save_admin(path: Path, settings: AdminSettings) -> None:
    """Write the admin file atomically (world-readable: snmpd's user reads it).

    Through a symbolic link: its target is replaced and the link stays (a configuration manager's link
    to a shared file must not become a file of its own).
    """
    write_atomic(Path(os.path.realpath(path)), render_admin(settings), mode=0o644)
