"""snmplb: the fleet as a thin client sees it, and its ways to log in (status, feed, pick, connect).

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
import sys
import time
from pathlib import Path

from snmplb.login import feed
from snmplb.login import pick
from snmplb.client.algorithms import REGISTRY
from snmplb.argtypes import seconds
from snmplb.client.deadline import after
from snmplb.client.driver import gather, selection_for
from snmplb.client.settings import ClientSettings
from snmplb.client.sources import load
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
    st.add_argument("--user", metavar="NAME",
                    help="as for this user: their pool (LB_POOLS) and their sessions (LB_AFFINITY): say when "
                         "affinity decides")
    fd = sub.add_parser("feed", help="publish the fleet's state for a greeter or snmplb-chooser (docs/feed.md)")
    fd.add_argument("--lts-conf", type=Path, help="read LB_* settings from this lts.conf instead of the environment")
    fd.add_argument("--client", action="append", default=[], metavar="ID",
                    help="a client's host name, IP or MAC: its lts.conf section applies (repeatable, last wins)")
    feed.add_arguments(fd)
    pick.add_parsers(sub)
    return ap


def status_once(settings: ClientSettings, problems: list[str], as_json: bool,
                user: str | None = None) -> tuple[str, int]:
    """The report's text and the exit status: every server polled (whatever LB_SAMPLE says; with a
    ``user``, every server of their pool, their question asked), lbserver asked, and what each algorithm
    would pick on those states, and when the user's sessions decide instead."""
    if not settings.servers:
        return "\n".join(problems) or "no servers configured", 1
    deadline = after(settings.timeout_ms)
    who = None
    if user:
        from snmplb.client.driver import user_for

        who, more = user_for(settings, user, deadline)
        problems = problems + more
    selection = selection_for(settings, every_algorithm=True, user=who)
    plan = selection.plan(every=True, ask_lbserver=True)
    states, choice, why = gather(selection, plan, deadline=deadline)
    problems = problems + ([why] if why else [])
    results = {name: selection.decide(plan, states, choice, algorithm=name) for name in REGISTRY}
    picks = {name: r.decision for name, r in results.items()}
    affinity = results[settings.algorithm].affinity
    code = 0 if any(s.ok for s in states) else 1
    if as_json:
        return to_json(states, picks, problems, affinity), code
    text = to_table(states, picks, settings.algorithm, settings.snmp_version)
    if affinity:
        text += f"\n{affinity}: every algorithm's pick puts that server first"
    elif who is not None and who.question:
        text += f"\nNo session of {who.name} that may be resumed: the algorithms decide"
    if problems:
        text += "\n\nSettings:\n" + "\n".join(f"  {p}" for p in problems)
    return text, code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("pick", "connect"):
        return pick.run(args)
    try:
        settings, problems = load(os.environ, None if args.lts_conf is None else str(args.lts_conf), args.client)
    except OSError as exc:
        print(f"snmplb: {args.lts_conf}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.command == "feed":
        return feed.main(args, settings, problems)
    code, n = 1, 0
    try:
        while True:
            text, code = status_once(settings, problems, args.json, args.user)
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
