"""`snmplb pick` and `snmplb connect`: get_hosts' decision for every other login path.

    snmplb pick                        # the chosen server's host
    snmplb pick --all                  # every usable server, preferred first, one per line
    snmplb pick --port 3389            # host:port ([v6]:port) for xfreerdp, x2go, ...
    snmplb pick --json                 # each server's state and why it was skipped
    snmplb pick --fallback             # nothing usable: print the configured servers (still exit 3)
    snmplb connect 22                  # ssh's ProxyCommand: pick, connect, relay (snmplb.login.connect)
    snmplb connect --banner ssh 2222   # the same on another port: wait for each server's SSH- line

The poll and the decision are get_hosts' own (``snmplb.client.driver.select``):
the same LB_* settings, from the environment, /etc/snmplb/client.conf (under
the environment) or, with ``--lts-conf FILE [--client ID]``, from lts.conf.

connect tries the decision's servers in order: a server is skipped when it
refuses the connection or does not accept it within --connect-timeout, or,
when a banner is expected (--banner ssh, or auto on port 22), when it closes,
resets, sends something other than an SSH- line or nothing in that time; all
of them within --deadline. One line on stderr per server skipped.

Exit status: 0 a usable server was chosen (for connect: the relay ran and the
server sent something, or the client ended first); 3 no server answered or
none may take a login; 4 (connect) no chosen server accepted the connection
(and, with a banner expected, greeted it in time) before the deadline;
5 (connect) the server closed or reset the connection before sending a byte
while the client was still talking: nothing was relayed back; 2 usage errors
(and an unreadable --lts-conf).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from snmplb.client.algorithms import Decision, passes_thresholds
from snmplb.client.selection import Result
from snmplb.argtypes import seconds
from snmplb.client.settings import ClientSettings
from snmplb.client.serverstate import ServerState

NONE_USABLE = 3
NOT_CONNECTED = 4
CLOSED_FIRST = 5
USAGE = 2


# --- pure: what to print ----------------------------------------------------------------------------


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 literal in brackets (as ssh, xfreerdp and URLs want it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def skip_reason(s: ServerState, chosen: Sequence[str], settings: ClientSettings) -> str | None:
    """Why ``s`` is not in the decision's list (None when it is)."""
    from snmplb.client.describe import state_label, unavailable_reason

    if s.name in chosen and (s.eligible or (s.takes_reconnect and (s.user_sessions or 0) > 0)):
        return None  # chosen: may take a login, or holds a session of the user's (affinity)
    if not s.ok:
        return s.reason or "no answer"
    if not s.eligible:
        if s.admin_state != "enabled":
            return f"admin state {s.admin_state}"
        if s.weight <= 0:
            return "weight 0"
        if s.max_sessions and s.sessions >= s.max_sessions:
            return f"{s.sessions} sessions of at most {s.max_sessions}"
        return unavailable_reason(s) or f"status {state_label(s)}"
    if not passes_thresholds(s, settings):
        return "over LB_MAX_LOAD, LB_MAX_RESPONSE_MS or swapping (LB_SKIP_SWAPPING)"
    return "not in the algorithm's list (LB_MAX_HOSTS)"


def render(result: Result, settings: ClientSettings, problems: Sequence[str], mode: str, port: int | None,
           fallback: bool) -> tuple[str, int]:
    """What ``snmplb pick`` prints and its exit status. ``mode``: "one", "all" or "json"."""
    from snmplb.client.describe import server_record

    servers, decision, ok = result.states, result.decision, result.usable
    hosts = list(decision.hosts) if ok or fallback else []
    shown = [host_port(h, port) if port is not None else h for h in hosts]
    code = 0 if ok and hosts else NONE_USABLE
    if mode == "json":
        records = []
        for s in servers:
            rec = server_record(s)
            rec["skipped"] = skip_reason(s, decision.hosts if ok else (), settings)
            records.append(rec)
        return json.dumps({"chosen": shown[0] if ok and shown else None, "hosts": shown,
                           "algorithm": settings.algorithm, "note": decision.note, "usable": ok,
                           "affinity": result.affinity or None,
                           "servers": records, "problems": list(problems)}, indent=2), code
    if mode == "all":
        return "\n".join(shown), code
    return (shown[0] if ok and shown else "\n".join(shown)) if shown else "", code


# --- I/O: settings and the poll ---------------------------------------------------------------------


def decide_now(env: Mapping[str, str], lts_conf: Path | None = None, clients: Sequence[str] = (),
               client_conf: Path | None = None, user: str | None = None) -> tuple[ClientSettings, Result, list[str]]:
    """get_hosts' settings (``sources.load``), poll and decision; problems named by their key.
    ``user``: the login's user, where known (pools, affinity). Raises OSError for an unreadable ``lts_conf``."""
    from snmplb.client.deadline import login_deadline
    from snmplb.client.driver import select, selection_for, user_for
    from snmplb.client.sources import load

    settings, problems = load(env, None if lts_conf is None else str(lts_conf), clients,
                              None if client_conf is None else str(client_conf))
    deadline = login_deadline(settings.timeout_ms, env)
    who = None
    if user is not None:
        who, more = user_for(settings, user, deadline)
        problems += more
    if not settings.servers:
        return settings, Result((), Decision((), "no servers configured (LB_SERVERS)"), ()), problems + [
            "no servers configured: set LB_SERVERS"]
    result, _choice, why = select(selection_for(settings, user=who), deadline=deadline)
    return settings, result, problems + ([why] if why else []) + list(result.problems)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a TCP port (1-65535)")
    return int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lts-conf", type=Path, help="read LB_* settings from this lts.conf instead of the environment")
    p.add_argument("--client", action="append", default=[], metavar="ID",
                   help="a client's host name, IP or MAC: its lts.conf section applies (repeatable, last wins)")
    p.add_argument("--client-conf", type=Path, metavar="FILE",
                   help="the client settings file (default $SNMPLB_CLIENT_CONF or /etc/snmplb/client.conf)")
    p.add_argument("--user", metavar="NAME",
                   help="the user this login is for (ssh: %%r): their pool (LB_POOLS), and back to a session of "
                        "theirs (LB_AFFINITY, LB_AFFINITY_KEY_FILE)")
    p.add_argument("--fallback", action="store_true",
                   help="when no server may be chosen, use the configured list as get_hosts does (exit status stays 3"
                        " for pick)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pick` and `connect` under the `snmplb` command."""
    pk = sub.add_parser("pick", help="the server get_hosts would choose now (for scripts and session wrappers)")
    _common(pk)
    out = pk.add_mutually_exclusive_group()
    out.add_argument("--all", action="store_true", help="every usable server, preferred first, one per line")
    out.add_argument("--json", action="store_true", help="each server's state and why it was skipped")
    pk.add_argument("--port", type=_port, help="print host:port for this service port ([v6]:port)")
    cn = sub.add_parser("connect", help="ssh ProxyCommand: pick, connect to PORT (next server on failure), relay")
    _common(cn)
    cn.add_argument("port", type=_port, help="the service's TCP port (ssh: %%p)")
    cn.add_argument("--connect-timeout", type=seconds(600), default=5.0, metavar="SECONDS",
                    help="give up on one server after this long (connection and banner) and try the next (default 5)")
    cn.add_argument("--deadline", type=seconds(3600), default=15.0, metavar="SECONDS",
                    help="give up on every server this long after trying the first (default 15)")
    cn.add_argument("--banner", choices=("auto", "ssh", "none"), default="auto",
                    help="what a server must send before it is used: ssh, a line starting SSH-; none, nothing (RDP"
                         " and other protocols where the client speaks first); auto (default), ssh's on port 22")


def _user(name: str | None) -> str | None:
    """--user's value; an empty one is no user (ssh's %r is never empty; a wrapper's unset variable is)."""
    if name is None or not name.strip():
        return None
    return name.strip()


def _say(message: str) -> None:
    print(f"snmplb: {message}", file=sys.stderr, flush=True)


def _no_usable(result: Result, settings: ClientSettings) -> None:
    from snmplb.client.describe import silence_hint

    _say("no usable server: " + result.decision.note)
    hint = silence_hint(result.states, settings.snmp_version)
    if hint:
        _say(hint)


def run(args: argparse.Namespace) -> int:
    """`snmplb pick` or `snmplb connect`, parsed: errors become one line on stderr, never a traceback."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the command's outer edge; only the type: a message may quote a secret
        _say(f"internal error ({type(exc).__name__})")
        return 1


def _run(args: argparse.Namespace) -> int:
    try:
        settings, result, problems = decide_now(os.environ, args.lts_conf, args.client, args.client_conf,
                                                _user(args.user))
    except OSError as exc:
        _say(f"{args.lts_conf}: {exc.strerror}")
        return USAGE
    decision = result.decision
    if args.command == "pick":
        mode = "json" if args.json else "all" if args.all else "one"
        if mode != "json":
            for p in problems:
                _say(p)
        text, code = render(result, settings, problems, mode, args.port, args.fallback)
        if code:
            _no_usable(result, settings)
        if text:
            print(text, flush=True)
        return code
    for p in problems:
        _say(p)
    if not (result.usable or (args.fallback and decision.hosts)):
        _no_usable(result, settings)
        return NONE_USABLE
    import time

    from snmplb.login.connect import connect_first, expected_banner, relay

    banner = expected_banner(args.banner, args.port)
    server = connect_first(decision.hosts, args.port, args.connect_timeout, time.monotonic() + args.deadline,
                           banner, _say)
    if server is None:
        _say(f"no server accepted a connection on port {args.port}" + (" with an ssh banner" if banner else ""))
        return NOT_CONNECTED
    with server.sock:
        if relay(server.sock, sys.stdin.fileno(), sys.stdout.fileno(), server.first):
            return 0
    _say(f"{server.where} closed the connection before sending anything")
    return CLOSED_FIRST
