"""snmplb-admin: set this application server's load-balancing state and weight.

    snmplb-admin show
    snmplb-admin drain | enable | disable
    snmplb-admin weight 200
    snmplb-admin max-sessions 40
    snmplb-admin create-v3-user snmplb < passphrases   # two lines: auth, priv
    snmplb-admin affinity-key /etc/snmplb/affinity.key  # a new site key (affinity), 0640 root:Debian-snmp

The change is written atomically to the admin file, which the agent re-reads
at every sample: the next GET (within about a second) shows it.

``show`` prints the settings the agent runs on. When the file has problems it
cannot: the agent runs on the last good settings it read (which only it knows:
lbAdminState, lbWeight and lbMaxSessions over SNMP), so show says that, what
an agent started meanwhile runs on instead, and exits 1.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from dataclasses import replace
from pathlib import Path

from snmplb.adminfile import MAX_WEIGHT, AdminReading, AdminSettings, check_setting, read_admin, save_admin
from snmplb.argtypes import checked, seconds
from snmplb.errors import ConfigError, SnmplbError
from snmplb.kvfile import exclusive_lock, lock_path
from snmplb import usm
from snmplb.admin.v3user import append_secret_line, create_user_line

DEFAULT_FILE = Path("/etc/snmplb/admin.conf")
SNMPD_PERSISTENT = Path("/var/lib/snmp/snmpd.conf")
LOCK_TIMEOUT = 10.0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="snmplb-admin", description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE, help=f"admin file (default {DEFAULT_FILE})")
    ap.add_argument("--lock-timeout", type=seconds(3600, zero_ok=True), default=LOCK_TIMEOUT, metavar="SECONDS",
                    help=f"wait at most this long for another snmplb-admin's change (default {LOCK_TIMEOUT:g})")
    ap.add_argument("--force", action="store_true",
                    help="change a file that has problems anyway, rewriting it from what could be read")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("show", help="print the current settings")
    sub.add_parser("enable", help="accept new sessions")
    sub.add_parser("drain", help="no new sessions; existing sessions stay")
    sub.add_parser("disable", help="out of rotation (maintenance)")
    w = sub.add_parser("weight", help=f"capacity weight in percent (0..{MAX_WEIGHT})")
    w.add_argument("value")
    m = sub.add_parser("max-sessions", help="most sessions this server takes (0 = no limit)")
    m.add_argument("value")
    u = sub.add_parser("create-v3-user", help="add an SNMPv3 authPriv user to snmpd; passphrases from stdin")
    u.add_argument("user")
    u.add_argument("--auth-protocol", default=usm.DEFAULT_AUTH, type=checked(usm.check_auth),
                   help=f"one of {', '.join(usm.AUTH_PROTOCOLS)} (default {usm.DEFAULT_AUTH})")
    u.add_argument("--priv-protocol", default=usm.DEFAULT_PRIV, type=checked(usm.check_priv),
                   help=f"one of {', '.join(usm.PRIV_PROTOCOLS)} (default {usm.DEFAULT_PRIV})")
    u.add_argument("--snmpd-file", type=Path, default=SNMPD_PERSISTENT,
                   help=f"file to append the createUser line to (default {SNMPD_PERSISTENT}; stop snmpd first)")
    k = sub.add_parser("affinity-key", help="write a new site key for affinity (agent's affinity_key_file, "
                                            "clients' LB_AFFINITY_KEY_FILE); never printed")
    k.add_argument("path", type=Path, help="the key file to create (refused if it exists, unless --force)")
    k.add_argument("--group", default=AGENT_GROUP,
                   help=f"the group that may read it: the agent's user's (default {AGENT_GROUP}, when it exists)")
    return ap


AGENT_GROUP = "Debian-snmp"  # snmpd's user on Debian: the pass_persist agent runs as it


def write_affinity_key(path: Path, group: str, force: bool) -> str:
    """Write a new random site key to ``path`` (mode 0640, root's or this user's, readable by ``group``
    when it exists); returns what was done, in words. Never prints or logs the key."""
    import base64
    import grp
    import secrets

    from snmplb.kvfile import write_atomic

    if path.exists() and not force:
        raise ConfigError(f"{path} exists: a new key would cut every client that has the old one off "
                          "affinity until they have the new one; repeat with --force to replace it")
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = -1
    key = base64.b64encode(secrets.token_bytes(32)).decode()  # 44 printable characters, 256 bits
    write_atomic(path, key + "\n", mode=0o640 if gid >= 0 else 0o600, gid=gid)
    readers = f"root and group {group}" if gid >= 0 else "its owner only (no group " + group + " here)"
    return (f"wrote a new site key to {path}, readable by {readers}; copy it (the same file) to every server's "
            "affinity_key_file and to the clients' LB_AFFINITY_KEY_FILE (the thin-client image)")


def _read_passphrases() -> tuple[str, str]:
    """Two passphrases: prompted on a terminal, else the first two lines of stdin."""
    if sys.stdin.isatty():
        return getpass.getpass("auth passphrase: "), getpass.getpass("priv passphrase: ")
    lines = sys.stdin.read(4096).splitlines()
    if len(lines) < 2:
        raise ConfigError("stdin: expected two lines, the auth passphrase then the priv passphrase")
    return lines[0], lines[1]


def create_v3_user(args: argparse.Namespace) -> int:
    auth, priv = _read_passphrases()
    line = create_user_line(args.user, auth, priv, args.auth_protocol, args.priv_protocol)
    tightened = append_secret_line(args.snmpd_file, line)
    print(f"added SNMPv3 user {args.user} ({args.auth_protocol}/{args.priv_protocol}) to {args.snmpd_file}"
          f"{' (its mode tightened to 0600)' if tightened else ''}; restart snmpd to load it")
    return 0


def change(settings: AdminSettings, command: str, value: str | None, now: int = 0) -> AdminSettings:
    """The settings after ``command`` at Unix time ``now``; ConfigError for a bad value.

    Enabling a server that was not enabled records when, for the thin clients' slow start.
    """
    if command == "enable":
        if settings.state == "enabled":
            return settings
        return replace(settings, state="enabled", enabled_since=now)
    if command == "drain":
        return replace(settings, state="draining")
    if command == "disable":
        return replace(settings, state="disabled")
    if command == "weight":
        # check_setting returns object; this field parses with whole(), an int (mypy cannot tell: ignored)
        return replace(settings, weight=check_setting("weight", value or ""))  # type: ignore[arg-type]
    if command == "max-sessions":
        # as weight: whole(), an int
        return replace(settings, max_sessions=check_setting("max_sessions", value or ""))  # type: ignore[arg-type]
    return settings


def _load(path: Path, changing: bool = False, force: bool = False) -> AdminReading:
    """The file's reading. Before a change, a file with problems is refused unless ``force``: the
    change would rewrite it from a partial reading and lose what the admin meant (a disabled server
    whose file was garbled would come back draining, with the default weight). A blank file (missing,
    or setting nothing) reads as the defaults, with a warning when it exists: the agent keeps its last
    good settings until the file is written again."""
    reading = read_admin(path)
    settings = reading.settings
    for p in reading.problems:
        print(f"snmplb-admin: warning: {p}", file=sys.stderr)
    if reading.empty:
        print(f"snmplb-admin: warning: {path} sets nothing (empty): it reads as the defaults, but an agent "
              "that read other settings from it keeps them until the file is written again", file=sys.stderr)
    if changing and reading.problems and not force:
        raise ConfigError(f"{path} has problems (above) and was left as it is: fix it by hand, or repeat "
                          f"with --force to rewrite it from what could be read (state={settings.state}, "
                          f"weight={settings.weight}, max_sessions={settings.max_sessions})")
    return reading


def show(path: Path) -> int:
    """Print the settings the agent runs on (0); for a file with problems, say what it runs on (1)."""
    reading = _load(path)
    s = reading.settings
    if reading.problems:
        print(f"snmplb-admin: {path} has problems: the agent keeps running on the last good settings it read "
              "from it, whole, until the file is fixed (it logged them once; SNMP shows them: lbAdminState, "
              "lbWeight, lbMaxSessions; `snmplb status` marks the server with !); an agent started since "
              f"then has none and runs on state={s.state} weight={s.weight} max_sessions={s.max_sessions}",
              file=sys.stderr)
        return 1
    print(f"state={s.state} weight={s.weight} max_sessions={s.max_sessions}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "affinity-key":
        try:
            print(write_affinity_key(args.path, args.group, args.force))
            return 0
        except (SnmplbError, OSError) as exc:
            print(f"snmplb-admin: {exc}", file=sys.stderr)
            return 2
    if args.command == "create-v3-user":
        try:
            return create_v3_user(args)
        except (SnmplbError, OSError) as exc:
            print(f"snmplb-admin: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "show":
            return show(args.file)
        # Read, change and write under one lock: two admins at once never lose a change.
        with exclusive_lock(lock_path(args.file), args.lock_timeout):
            reading = _load(args.file, changing=True, force=args.force)
            settings = reading.settings
            new = change(settings, args.command, getattr(args, "value", None), int(time.time()))
            if new != settings or reading.blank:  # a blank file is written: the agent waits for it
                save_admin(args.file, new)
    except (SnmplbError, OSError) as exc:
        print(f"snmplb-admin: {exc}", file=sys.stderr)
        return 2
    print(f"state={new.state} weight={new.weight} max_sessions={new.max_sessions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
