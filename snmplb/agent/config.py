"""The agent's own configuration: where to read from, how often, thresholds.

A ``key = value`` file (default /etc/snmplb/agent.conf, optional) and
command-line options of the same names (``--proc-root`` for ``proc_root``);
the command line wins. Every source path is configurable so that tests and
the demo run many agents on one machine, each with its own fake /proc.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from snmplb.agent.loginpaths import SpacePolicy
from snmplb.errors import ConfigError
from snmplb.agent.verdict import HealthPolicy
from snmplb.kvfile import Field, number, parse_kv_bytes, shown, summarise, validate, whole
from snmplb.safefile import CONFIG_LIMIT, UnsafeFile, describe, read_bounded

DEFAULT_CONFIG = Path("/etc/snmplb/agent.conf")


@dataclass(frozen=True)
class AgentConfig:
    """Settings of snmplb-agent.

    proc_root: where loadavg, meminfo, vmstat and stat are read (/proc).
    sessions_dir: systemd-logind's session state (/run/systemd/sessions).
    utmp: the utmp file used where logind is absent (/var/run/utmp).
    admin_file: the admin's settings, written by snmplb-admin (/etc/snmplb/admin.conf).
    log_file: log here instead of syslog (empty: syslog, facility daemon).
    interval: seconds between samples; answers are never older than this (1.0).
    rate_window: seconds over which swap rates are averaged (10).
    busy_load: load per CPU from which the status is busy (1.0).
    low_mem_percent: available-memory percentage below which the status is busy (10).
    swap_threshold: swap pages/s (in + out) from which the server is swapping (50).
    ssh_port: the port whose established connections lbSshConnections counts (and lbLoginsConnecting,
        those no new session has matched yet), and on which lbSshListening looks for a listening socket (22).
    login_paths: the directories a login writes to, separated by spaces; a server where one is full,
        out of inodes or hung is unavailable ("/home /tmp"; empty: no check).
    min_free_mb: MiB available to ordinary users below which a login path is full (100; 0: no check).
    min_free_inodes_percent: free inodes, in percent, below which a login path is full (1; 0: no check).
    login_path_timeout: seconds after which a login path whose statvfs has not returned (a hung network
        filesystem) counts as not usable (3).
    affinity_key_file: the site key that clients' questions about a user's sessions are hashed with
        (lbUserTable; the clients' LB_AFFINITY_KEY_FILE holds the same key). Owned by root or the agent's
        user, writable by nobody else, readable by no other user nor by a group the agent is not in (0640
        root:Debian-snmp). Empty: no key, every question is answered noSuchInstance and affinity is off ("").
    session_proc: the process table where lbUserTable's answers look for xrdp's X servers (Xvnc, Xorg) and
        X2Go's agents, and whose net/tcp, tcp6 and unix say which X servers have xrdp connected; readable by
        every user unless /proc is mounted with hidepid (/proc; empty: no xrdp sessions counted).
    x2go_db: x2goserver's SQLite session database, read-only, for lbUserTable's answers (running and
        suspended X2Go sessions); the agent's user needs group x2gouser to read it, which the Debian
        package's postinst grants when that group exists (/var/lib/x2go/x2go_sessions; empty: no X2Go
        sessions counted).
    """

    proc_root: Path = Path("/proc")
    sessions_dir: Path = Path("/run/systemd/sessions")
    utmp: Path = Path("/var/run/utmp")
    admin_file: Path = Path("/etc/snmplb/admin.conf")
    log_file: str = ""
    interval: float = 1.0
    rate_window: float = 10.0
    busy_load: float = 1.0
    low_mem_percent: int = 10
    swap_threshold: float = 50.0
    ssh_port: int = 22
    login_paths: str = "/home /tmp"
    min_free_mb: int = 100
    min_free_inodes_percent: int = 1
    login_path_timeout: float = 3.0
    affinity_key_file: str = ""
    session_proc: str = "/proc"
    x2go_db: str = "/var/lib/x2go/x2go_sessions"

    @property
    def policy(self) -> HealthPolicy:
        return HealthPolicy(busy_load=self.busy_load, low_mem_percent=self.low_mem_percent,
                            swap_threshold=self.swap_threshold)

    @property
    def space_policy(self) -> SpacePolicy:
        return SpacePolicy(min_free_mb=self.min_free_mb, min_free_inodes_percent=self.min_free_inodes_percent,
                           timeout=self.login_path_timeout)


_MAX_LOGIN_PATHS = 32


def _path(raw: str) -> Path:
    if not raw:
        raise ConfigError("empty path")
    return Path(raw)


def _login_paths(raw: str) -> str:
    """Absolute directories separated by white space, at most _MAX_LOGIN_PATHS (a path with a space
    cannot be given: name its parent or a mount point)."""
    paths = raw.split()
    if len(paths) > _MAX_LOGIN_PATHS:
        raise ConfigError(f"more than {_MAX_LOGIN_PATHS} paths")
    for path in paths:
        if not path.startswith("/"):
            raise ConfigError(f"{shown(path)} is not an absolute path")
    return " ".join(paths)


def _absolute_or_empty(raw: str) -> str:
    if raw and not raw.startswith("/"):
        raise ConfigError(f"{shown(raw)} is not an absolute path")
    return raw


# How each setting is parsed and checked (the one validation, kvfile.validate); a field of AgentConfig
# missing here stops the import, so none goes unchecked.
_PARSE = {
    "proc_root": _path, "sessions_dir": _path, "utmp": _path, "admin_file": _path, "log_file": str,
    "interval": number(0.05, 60.0),
    "rate_window": number(1.0, 3600.0),
    "busy_load": number(0.01, 1000.0),
    "low_mem_percent": whole(0, 100),
    "swap_threshold": number(0.0, 1e9),
    "ssh_port": whole(1, 65535),
    "login_paths": _login_paths,
    "min_free_mb": whole(0, 10**9),
    "min_free_inodes_percent": whole(0, 100),
    "login_path_timeout": number(0.5, 600.0),
    "affinity_key_file": _absolute_or_empty,
    "session_proc": _absolute_or_empty,
    "x2go_db": _absolute_or_empty,
}
FIELDS = tuple(Field(f.name, f.name, _PARSE[f.name], str(f.default)) for f in fields(AgentConfig))
KEYS = tuple(f.name for f in FIELDS)


def apply(config: AgentConfig, pairs: dict[str, str], origin: str) -> tuple[AgentConfig, list[str]]:
    """Apply ``pairs`` to ``config``; bad or unknown entries are reported (naming ``origin`` and the key)
    and skipped: the value in force stays."""
    changes, problems = validate(FIELDS, pairs, in_force=vars(config))
    # Each value has its field's type (FIELDS' parse functions), which mypy cannot follow (ignored below)
    return replace(config, **changes), [f"{origin}: {p}" for p in problems]  # type: ignore[arg-type]


def load(path: Path | None, overrides: dict[str, str]) -> tuple[AgentConfig, list[str]]:
    """The configuration from the file (if any) and then the command-line overrides.

    The file is read bounded (a regular file of at most 64 KiB, never blocking):
    a junk file given by mistake costs no time, and its problems are reported as
    the first few and a count, never one log line per junk line.
    """
    config, problems = AgentConfig(), []
    if path is not None:
        try:
            pairs, bad = parse_kv_bytes(read_bounded(path, CONFIG_LIMIT))
            config, more = apply(config, pairs, str(path))
            problems += summarise([f"{path}: {b}" for b in bad] + more, origin=str(path))
        except FileNotFoundError:
            if path != DEFAULT_CONFIG:
                problems.append(f"{path}: no such file; using defaults")
        except (OSError, UnsafeFile) as exc:
            problems.append(f"{describe(exc, path)}; using defaults")
    config, more = apply(config, overrides, "command line")
    return config, problems + more
