"""The admin's settings for one application server: state, weight, maximum sessions.

They live in a small file (default /etc/snmplb/admin.conf) that
``snmplb-admin`` writes and the agent re-reads at every sample, so a change
shows in the next GET. A bad value is reported and its default is used: a
typo must never take a server out of rotation by surprise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .kvfile import parse_kv, write_atomic

STATES = ("enabled", "draining", "disabled")
MAX_WEIGHT = 10000


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


def check_state(value: str) -> str:
    """Validate a state name; ConfigError names the accepted ones."""
    v = value.strip().lower()
    if v not in STATES:
        raise ConfigError(f"state: {value!r} is not one of {', '.join(STATES)}")
    return v


def check_int(name: str, value: str, low: int, high: int) -> int:
    """Validate an integer setting within [low, high]; ConfigError names the setting."""
    try:
        n = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a whole number") from None
    if not low <= n <= high:
        raise ConfigError(f"{name}: {n} is outside {low}..{high}")
    return n


def parse_admin(text: str) -> tuple[AdminSettings, list[str]]:
    """Settings from the file's text, and the problems found (each names its key).

    Every invalid or unknown entry is reported and the default stands for it.
    """
    pairs, problems = parse_kv(text)
    default = AdminSettings()
    values = {"state": default.state, "weight": default.weight, "max_sessions": default.max_sessions,
              "enabled_since": default.enabled_since}
    for key, raw in pairs.items():
        try:
            if key == "state":
                values["state"] = check_state(raw)
            elif key == "weight":
                values["weight"] = check_int("weight", raw, 0, MAX_WEIGHT)
            elif key == "max_sessions":
                values["max_sessions"] = check_int("max_sessions", raw, 0, 2**31 - 1)
            elif key == "enabled_since":
                values["enabled_since"] = check_int("enabled_since", raw, 0, 2**40)
            else:
                problems.append(f"unknown setting {key!r}")
        except ConfigError as exc:
            problems.append(f"{exc}; using {values[key]!r}")
    return AdminSettings(**values), problems  # type: ignore[arg-type]


def render_admin(settings: AdminSettings) -> str:
    """The file's text for ``settings``."""
    return (
        "# snmplb: this application server's load-balancing settings.\n"
        "# Written by snmplb-admin; read by snmplb-agent at every sample.\n"
        "# state: enabled | draining (no new sessions) | disabled (out of rotation)\n"
        f"state = {settings.state}\n"
        "# weight: capacity in percent of a reference server (0..10000)\n"
        f"weight = {settings.weight}\n"
        "# max_sessions: most sessions this server takes (0 = no limit)\n"
        f"max_sessions = {settings.max_sessions}\n"
        "# enabled_since: when the admin last enabled it (Unix time; thin clients slow-start it)\n"
        f"enabled_since = {settings.enabled_since}\n"
    )


def load_admin(path: Path) -> tuple[AdminSettings, list[str]]:
    """Read the admin file; a missing file means the defaults, silently."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return AdminSettings(), []
    except OSError as exc:
        return AdminSettings(), [f"{path}: {exc.strerror}"]
    settings, problems = parse_admin(text)
    return settings, [f"{path}: {p}" for p in problems]


def save_admin(path: Path, settings: AdminSettings) -> None:
    """Write the admin file atomically (world-readable: snmpd's user reads it)."""
    write_atomic(path, render_admin(settings), mode=0o644)
