"""get_hosts: LDM runs it in the thin client to choose the application server.

Prints ONE line on stdout, host names separated by single spaces, the chosen
server first, then the other usable ones in preference order, and exits 0.
Never fails a login: bad settings are reported and defaults used, and on
any unexpected error the configured servers are printed in configured order.
Problems go to stderr and syslog; nothing else ever reaches stdout.

Kept small on purpose: it runs on weak thin clients at every login, so it
imports only what the poll needs (no pysnmp, no MIB loading).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Mapping

from .algorithms import Context, Decision, decide, sample_servers
from .clientid import default_mac
from .poller import poll
from .settings import ClientSettings, Server, from_env
from .stats import ServerState

IDENT = "snmplb-get_hosts"


def report(message: str, level: str = "warning") -> None:
    """To stderr and syslog. Messages never carry secrets (the settings parser never echoes them)."""
    import syslog

    prio = syslog.LOG_WARNING if level == "warning" else syslog.LOG_INFO
    syslog.openlog(IDENT, 0, syslog.LOG_USER)
    syslog.syslog(prio, message)
    if level == "warning":
        print(f"get_hosts: {message}", file=sys.stderr)


def gather(settings: ClientSettings, rng: random.Random, ask_lbserver: bool | None = None,
           clock: Callable[[], float] = time.monotonic, early: bool = False
           ) -> tuple[list[ServerState], str | None, str]:
    """Poll the servers and ask the lbserver at the same time, within one deadline.

    The lbserver is asked when ``ask_lbserver`` (default: when the algorithm
    is `lbserver`) and LB_LBSERVER_URL is set. ``early``: a sample (LB_SAMPLE)
    is polled; stop waiting soon after a usable answer (``poll``). Returns the
    servers' states, lbserver's choice (or None) and why it has none.
    """
    if ask_lbserver is None:
        ask_lbserver = settings.algorithm == "lbserver"
    if not (ask_lbserver and settings.lbserver_url):
        return poll(settings, rng, clock, early), None, ""
    import threading

    from .lbclient import ask_lbserver

    deadline = clock() + settings.timeout_ms / 1000
    answer: list[tuple[str | None, str]] = []
    t = threading.Thread(target=lambda: answer.append(ask_lbserver(settings.lbserver_url, deadline, clock)),
                         daemon=True)
    t.start()
    servers = poll(settings, rng, clock, early)
    t.join(max(0.0, deadline - clock()))
    choice, why = answer[0] if answer else (None, "lbserver did not answer in time")
    return servers, choice, why


Probe = Callable[[ClientSettings, bool], "tuple[list[ServerState], str | None, str]"]


def choose(settings: ClientSettings, rng: random.Random, client_id: str, probe: Probe,
           clock: Callable[[], float] = time.monotonic) -> tuple[list[ServerState], Decision, str]:
    """Poll (all servers, or LB_SAMPLE of them) with ``probe`` and decide.

    ``probe(settings, early)`` polls ``settings.servers`` within ``settings.timeout_ms``:
    ``gather`` in get_hosts, a simulated fleet in bench/storm.py; ``early`` is
    true for a sample (LB_SAMPLE), which need not wait for a silent member once
    another answered. In sampled mode, if no sampled server is eligible the rest
    is polled within what is left of the deadline; otherwise the unpolled
    servers are listed after the decision.
    Returns the polled servers' states, the decision, and lbserver's complaint.
    """
    start = clock()
    polled, unpolled = sample_servers(settings.servers, settings.sample, rng)
    servers, choice, why = probe(settings._replace(servers=tuple(polled)), bool(unpolled))
    left_ms = settings.timeout_ms - (clock() - start) * 1000
    if unpolled and not any(s.eligible for s in servers):
        if left_ms >= 50:
            more, _, _ = probe(settings._replace(servers=tuple(unpolled), timeout_ms=int(left_ms), lbserver_url=""),
                               False)
        else:  # no time left: they go to the fallback list unpolled
            more = [ServerState(u.host, u.port, None, "not polled (no time left)") for u in unpolled]
        rank = {srv: i for i, srv in enumerate(settings.servers)}
        servers = sorted(servers + more, key=lambda st: rank[Server(st.name, st.port)])  # configured order
        unpolled = []
    decision = decide(settings.algorithm, servers, Context(settings, rng, client_id, choice))
    if unpolled and any(s.eligible for s in servers):
        extra = tuple(h for h in dict.fromkeys(u.host for u in unpolled) if h not in decision.hosts)
        decision = Decision(decision.hosts + extra, decision.note + f"; {len(extra)} not polled (LB_SAMPLE)")
    return servers, decision, why


def run(env: Mapping[str, str]) -> str:
    """The line to print for LDM."""
    settings, problems = from_env(env)
    for p in problems:
        report(p)
    if not settings.servers:
        return ""
    rng: random.Random = random.Random(settings.seed) if settings.seed is not None else random.SystemRandom()
    client_id = settings.client_id or (default_mac() if settings.algorithm == "sticky" else "")
    servers, decision, why = choose(settings, rng, client_id, lambda s, early: gather(s, rng, early=early))
    if why:
        report(why)
    failed = [f"{s.name}:{s.port}: {s.reason}" for s in servers if not s.ok]
    if not any(s.ok for s in servers):
        report("no server answered; " + "; ".join(failed))
    else:
        report(decision.note + "".join(f"; {f}" for f in failed), level="info")
    return " ".join(decision.hosts)


def _configured(env: Mapping[str, str]) -> str:
    from .settings import parse_servers

    servers, _ = parse_servers(env.get("LB_SERVERS", "") or env.get("SERVER", ""), 161)
    return " ".join(dict.fromkeys(s.host for s in servers))


def main() -> int:
    import warnings

    warnings.simplefilter("ignore")
    env = os.environ
    try:
        line = run(env)
    except Exception as exc:  # the outer edge: a login must not fail on our bug
        report(f"internal error ({type(exc).__name__}: {exc}); listing the configured servers")
        line = _configured(env)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


def main_and_exit() -> None:
    """main(), then exit without the interpreter's clean-up: a one-shot process at every login
    has nothing to clean up, and skipping it saves a few ms on a thin client."""
    code = main()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
