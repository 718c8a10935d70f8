"""snmplb: the admin's command on the LTSP server (status of the fleet, as thin clients see it).

    snmplb status                      # settings from the environment (LB_* variables)
    snmplb status --lts-conf /srv/tftp/ltsp/i386/lts.conf --client 52:54:00:12:34:56
    snmplb status --json
    snmplb status --watch 2            # refresh every 2 s, in place
    snmplb feed --group ldm            # publish each refresh for a greeter (docs/feed.md)
    snmplb pick [--all|--json] [--port N]   # get_hosts' choice, for scripts (see snmplb/login/pick.py)
    snmplb connect PORT                # ssh's ProxyCommand: pick, connect, relay

Exit status (status): 0 when at least one server answered, 1 when none did, 2 for usage errors.
pick and connect: 0 chosen, 3 none usable, 4 (connect) none accepted the connection, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from snmplb.login import feed
from snmplb.login import ltsconf
from snmplb.login import pick
from snmplb.client.algorithms import REGISTRY, Context, decide
from snmplb.argtypes import seconds
from snmplb.client.clientid import default_mac
from snmplb.client.deadline import after
from snmplb.client.gethosts import gather
from snmplb.client.settings import from_env
from snmplb.client.describe import to_json, to_table

CLEAR = "\033[H\033[2J"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="snmplb", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="one line per server, and what each algorithm would pick now")
    st.add_argument("--lts-conf", type=Path, help="read LB_* settings from this lts.conf instead of the environment")
    st.add_argument("--client", action="append", default=[], metavar="ID",
                    help="a client's host name, IP or MAC: its lts.conf section applies (repeatable, last wins)")
    st.add_argument("--json", action="store_true", help="machine-readable output (for greeters and scripts)")
    st.add_argument("--watch", type=seconds(86400), metavar="SECONDS", help="refresh every SECONDS until interrupted")
    st.add_argument("--count", type=int, default=0, help="with --watch: stop after this many refreshes")
    fd = sub.add_parser("feed", help="publish the fleet's state for a greeter or snmplb-chooser (docs/feed.md)")
    fd.add_argument("--lts-conf", type=Path, help="read LB_* settings from this lts.conf instead of the environment")
    fd.add_argument("--client", action="append", default=[], metavar="ID",
                    help="a client's host name, IP or MAC: its lts.conf section applies (repeatable, last wins)")
    feed.add_arguments(fd)
    pick.add_parsers(sub)
    return ap


def _environment(args: argparse.Namespace) -> dict[str, str]:
    if args.lts_conf is None:
        return dict(os.environ)
    env, problems = ltsconf.resolve(args.lts_conf.read_text(errors="replace"), args.client)
    for p in problems:
        print(f"snmplb: {args.lts_conf}: {p}", file=sys.stderr)
    return env


def status_once(env: dict[str, str], as_json: bool) -> tuple[str, int]:
    """The report's text and the exit status."""
    settings, problems = from_env(env)
    if not settings.servers:
        return "\n".join(problems) or "no servers configured", 1
    rng = random.Random(settings.seed) if settings.seed is not None else random.SystemRandom()
    servers, choice, why = gather(settings, rng, ask_lbserver=True, deadline=after(settings.timeout_ms))
    if why:
        problems.append(why)
    ctx = Context(settings, rng, settings.client_id or default_mac(), choice)
    picks = {name: decide(name, servers, ctx) for name in REGISTRY}
    code = 0 if any(s.ok for s in servers) else 1
    if as_json:
        return to_json(servers, picks, problems), code
    text = to_table(servers, picks, settings.algorithm)
    if problems:
        text += "\n\nSettings:\n" + "\n".join(f"  {p}" for p in problems)
    return text, code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("pick", "connect"):
        return pick.run(args)
    try:
        env = _environment(args)
    except OSError as exc:
        print(f"snmplb: {args.lts_conf}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.command == "feed":
        return feed.main(args, env)
    code, n = 1, 0
    try:
        while True:
            text, code = status_once(env, args.json)
            if args.watch is not None and not args.json and sys.stdout.isatty():
                sys.stdout.write(CLEAR)
            print(text, flush=True)
            n += 1
            if args.watch is None or (args.count and n >= args.count):
                return code
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return code


if __name__ == "__main__":
    sys.exit(main())
