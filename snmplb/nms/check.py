"""check_snmplb: a Nagios/Icinga plugin for one snmplb application server.

Reads the server's SNMPLB-MIB row (one GET, SNMPv2c or SNMPv3 authPriv, with
the same poller as get_hosts) and reports on load per CPU, available memory,
swap activity, free session slots (when a maximum is set), the admin state
(draining is WARNING, disabled CRITICAL unless --disabled-state warning) and
the age of the agent's data, with perfdata for graphing.

An unreachable server is CRITICAL, and so are figures too old for any client
to use (a hung agent must not look better as its figures age). An agent that
answers without a usable row (object missing, SNMPv3 credentials refused,
implausible data) is UNKNOWN, never OK. A wrong SNMPv2c community cannot be
told from silence (snmpd drops the request without a word), so it shows as
unreachable: CRITICAL. Secrets come from --secrets FILE (``community = ...``,
``auth_passphrase = ...``, ``priv_passphrase = ...``) or the environment
(SNMPLB_COMMUNITY, SNMPLB_AUTH_PASSPHRASE, SNMPLB_PRIV_PASSPHRASE), not from
the command line, where every user of the machine sees them: -C COMMUNITY is
deprecated, still honoured (over the file and the environment) with a warning
in the status line that never shows the value.

The SNMP deadline (--timeout-ms) ends at the latest a quarter of a second
before the plugin's own timeout (-t) would: a dead server is CRITICAL whatever
the two are, and -t's UNKNOWN is left for a plugin that stalls.

This module is the plugin's edge (the Nagios plugin API): every usage error,
a missing ``nms`` extra and any internal error become ONE status line and
exit status 3 (UNKNOWN), never a traceback and never 1 or 2, which a monitoring
system would read as WARNING or CRITICAL. The check itself is snmplb.nms.plugin.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from snmplb import usm
from snmplb.argtypes import checked
from snmplb.kvfile import parse_kv, whole
from snmplb.client.settings import is_host

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only
    from collections.abc import Sequence
    from typing import Any, NoReturn

UNKNOWN = 3
_PREFIX = "SNMPLB UNKNOWN - "
_SECRETS_MAX = 65536  # a secrets file is a few lines: never read /dev/zero whole
COMMUNITY_OPTION_NOTE = ("warning: -C is deprecated, every user of this machine sees the community in the "
                         "process list: use --secrets FILE or SNMPLB_COMMUNITY")


class UsageError(Exception):
    """A bad command line (argparse's error, turned into UNKNOWN instead of exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit 2 (CRITICAL to Nagios)
        raise UsageError(message)


def _one_host(text: str) -> str:
    """Exactly one host name or address: a list would poll several servers and report one."""
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not is_host(host):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not one host name or address (one host per check)")
    return host


def _nagios_range(text: str) -> str:
    import nagiosplugin  # present: main() checked before parsing

    try:
        nagiosplugin.Range(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a Nagios range") from None
    return text


class _OnlyOnce(argparse.Action):
    """-H given twice is an error, not 'the last one wins'."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(self, "takes exactly one host; check each server separately")
        setattr(namespace, self.dest, values)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="check_snmplb", description=__doc__.split("\n\n")[0])
    ap.add_argument("-H", "--host", required=True, type=_one_host, action=_OnlyOnce,
                    help="the application server (one)")
    ap.add_argument("-p", "--port", type=checked(whole(1, 65535)), default=161, help="SNMP port (161)")
    ap.add_argument("-P", "--snmp-version", choices=("2c", "3"), default="2c")
    ap.add_argument("-C", "--community", help="deprecated: shows the SNMPv2c community in the process list; "
                    "use --secrets or SNMPLB_COMMUNITY")
    ap.add_argument("-s", "--secrets", type=Path, help="file with community / auth_passphrase / priv_passphrase")
    ap.add_argument("-u", "--user", default="snmplb", help="SNMPv3 user (snmplb)")
    # The protocols the poller speaks (snmplb.usm), as get_hosts and snmplb-admin create-v3-user take them.
    ap.add_argument("-a", "--auth-protocol", type=checked(usm.check_auth),
                    default=usm.DEFAULT_AUTH, help=f"SNMPv3 authentication: {', '.join(usm.AUTH_PROTOCOLS)} "
                    f"({usm.DEFAULT_AUTH})")
    ap.add_argument("-x", "--priv-protocol", type=checked(usm.check_priv),
                    default=usm.DEFAULT_PRIV, help=f"SNMPv3 privacy: {', '.join(usm.PRIV_PROTOCOLS)} "
                    f"({usm.DEFAULT_PRIV})")
    ap.add_argument("--timeout-ms", type=checked(whole(50, 30000)), default=3000,
                    help="SNMP deadline (3000; at most -t less 0.25 s)")
    for name, default, what in (("load", ("1.0", "2.0"), "load per CPU"),
                                ("mem", ("10:", "5:"), "available memory %%"),
                                ("swap", ("50", "500"), "swap pages/s in+out"),
                                ("slots", ("5:", "1:"), "free session slots when a maximum is set"),
                                ("age", ("5", "15"), "agent data age in s")):
        for level, value in zip(("warning", "critical"), default):
            ap.add_argument(f"--{name}-{level}", type=_nagios_range, default=value,
                            help=f"{what}, Nagios range ({value})")
    ap.add_argument("--disabled-state", choices=("critical", "warning"), default="critical",
                    help="what an admin-disabled server is (critical)")
    ap.add_argument("-t", "--timeout", type=checked(whole(1, 3600)), default=10, help="plugin timeout in s (10)")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    return ap


def secrets_mode_note(path: Path, mode: int, owner: int, uid: int) -> str:
    """A warning when a secrets file is readable by more than the plugin needs ("" when not).

    Others must never read it. The group may when the plugin reads the file
    through its group (owner root, group nagios, mode 0640: nms/README.md);
    when the plugin's user owns the file, group read is needless exposure.
    """
    if mode & stat.S_IROTH or (mode & stat.S_IRGRP and owner == uid):
        who = "others" if mode & stat.S_IROTH else "its group"
        return f"warning: secrets file {path} is readable by {who} (mode {mode & 0o777:o}): chmod 600 it"
    return ""


def _read_secrets(path: Path) -> tuple[dict[str, str], str]:
    """The secrets file's pairs and a note about its mode; UsageError (naming the file) when unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the check
        try:
            st = os.fstat(fd)
            if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):  # /dev/null is fine: no secrets
                raise UsageError(f"--secrets {path}: not a regular file")
            raw = os.read(fd, _SECRETS_MAX + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"--secrets {path}: {exc.strerror}") from None
    if len(raw) > _SECRETS_MAX:
        raise UsageError(f"--secrets {path}: larger than {_SECRETS_MAX} bytes, not a secrets file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # its message would show a byte of a secret and where it is
        raise UsageError(f"--secrets {path}: not UTF-8 text") from None
    pairs, _ = parse_kv(text)  # problems ignored: they would quote a line that may hold a secret
    return pairs, secrets_mode_note(path, st.st_mode, st.st_uid, os.geteuid())


def _environment(args: argparse.Namespace) -> tuple[dict[str, str], tuple[str, ...]]:
    """The LB_* environment the poller reads, and notes for the status line."""
    secrets = {"community": os.environ.get("SNMPLB_COMMUNITY", ""),
               "auth_passphrase": os.environ.get("SNMPLB_AUTH_PASSPHRASE", ""),
               "priv_passphrase": os.environ.get("SNMPLB_PRIV_PASSPHRASE", "")}
    notes: tuple[str, ...] = ()
    if args.secrets:
        pairs, note = _read_secrets(args.secrets)
        secrets.update({k: v for k, v in pairs.items() if k in secrets})
        notes = (note,) if note else ()
    if args.community:
        secrets["community"] = args.community
        notes += (COMMUNITY_OPTION_NOTE,)
    host = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    env = {"LB_SERVERS": host, "LB_SNMP_VERSION": args.snmp_version, "LB_SNMP_USER": args.user,
           "LB_SNMP_COMMUNITY": secrets["community"] or "snmplb-ltsp",
           "LB_SNMP_AUTH_PROTOCOL": args.auth_protocol, "LB_SNMP_PRIV_PROTOCOL": args.priv_protocol,
           "LB_SNMP_AUTH_PASSPHRASE": secrets["auth_passphrase"],
           "LB_SNMP_PRIV_PASSPHRASE": secrets["priv_passphrase"],
           "LB_TIMEOUT_MS": str(args.timeout_ms), "LB_RETRIES": "2"}
    return env, notes


def _unknown(message: str) -> int:
    print(_PREFIX + " ".join(message.split())[:300])
    return UNKNOWN


def main(argv: list[str] | None = None) -> int:
    """The plugin; returns (or exits with, through nagiosplugin) its Nagios status."""
    try:
        import nagiosplugin  # noqa: F401  (the nms extra)
    except ImportError:
        return _unknown("the Python package nagiosplugin is missing: install snmplb with its NMS extra "
                        "(pip install 'snmplb[nms]')")
    try:
        args = _parser().parse_args(argv)
        env, notes = _environment(args)
        from snmplb.nms import plugin as nmsplugin

        nmsplugin.run(args, env, notes)  # prints and raises SystemExit with the check's status
    except UsageError as exc:
        return _unknown(f"usage: {exc} (check_snmplb --help)")
    except nagiosplugin.Timeout as exc:
        return _unknown(f"timeout: no result after {exc}")
    except Exception as exc:  # the plugin's outer edge: UNKNOWN, one line; the type only (a message may quote a secret)
        return _unknown(f"internal error ({type(exc).__name__})")
    return UNKNOWN  # not reached: the check always exits


if __name__ == "__main__":
    sys.exit(main())
