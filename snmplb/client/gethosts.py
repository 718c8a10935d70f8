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
import syslog  # at the top, not in the error path: with no file descriptor left, an import there fails
import time

from snmplb.client.algorithms import Context, Decision, decide, passes_thresholds, sample_servers, weight_drift
from snmplb.client.clientid import default_mac
from snmplb.client.deadline import login_deadline
from snmplb.client.poller import poll
from snmplb.client.settings import ClientSettings, Server, from_env, refusal, sample_weights_of
from snmplb.client.serverstate import Failure, ServerState

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Callable, Mapping

    Probe = Callable[[ClientSettings, tuple[Server, ...], Callable[[ServerState], bool], float],
                     tuple[list[ServerState], str | None, str]]

IDENT = "snmplb-get_hosts"


def report(message: str, level: str = "warning") -> None:
    """To stderr and syslog; never raises (a login must not fail on its own report).
    Messages never carry secrets (the settings parser never echoes them)."""
    try:
        syslog.openlog(IDENT, 0, syslog.LOG_USER)
        syslog.syslog(syslog.LOG_WARNING if level == "warning" else syslog.LOG_INFO, message)
    except Exception:  # an outer edge of its own: no syslog is no reason to fail a login
        pass
    if level == "warning":
        try:
            sys.stderr.write(f"get_hosts: {message}\n")
        except Exception:
            pass


def gather(settings: ClientSettings, rng: random.Random, ask_lbserver: bool | None = None,
           clock: Callable[[], float] = time.monotonic, early: bool = False, *, deadline: float,
           hedge: tuple[Server, ...] = (), usable: Callable[[ServerState], bool] | None = None
           ) -> tuple[list[ServerState], str | None, str]:
    """Poll the servers and ask the lbserver at the same time, until ``deadline``.

    ``deadline``: a ``clock()`` time, computed once by the caller's edge
    (``snmplb.client.deadline``). The lbserver is asked when ``ask_lbserver``
    (default: when the algorithm is `lbserver`) and LB_LBSERVER_URL is set.
    ``early``, ``hedge`` and ``usable``: the sampled mode (LB_SAMPLE), see
    ``poll``. Settings that must not be polled with (``settings.refusal``)
    poll nothing. Returns the servers' states (the hedge's, if it was
    polled, after them), lbserver's choice (or None) and why it has none.
    """
    refused = refusal(settings)
    if refused:
        return ([ServerState.failed(s.host, s.port, Failure.NOT_POLLED, "not polled: " + refused)
                 for s in settings.servers], None, "")
    if ask_lbserver is None:
        ask_lbserver = settings.algorithm == "lbserver"

    def our_poll() -> list[ServerState]:
        return poll(settings, rng, clock, early, deadline=deadline, hedge=hedge, usable=usable)

    if not (ask_lbserver and settings.lbserver_url):
        return our_poll(), None, ""
    import threading

    from snmplb.client.lbserver import ask_lbserver as ask

    answer: list[tuple[str | None, str]] = []

    def lbserver() -> None:
        try:
            answer.append(ask(settings.lbserver_url, deadline, clock))
        except Exception as exc:  # the thread's outer edge: a traceback would reach the login's stderr
            answer.append((None, f"lbserver: internal error ({type(exc).__name__})"))

    t = threading.Thread(target=lbserver, daemon=True)
    t.start()
    servers = our_poll()
    t.join(max(0.0, deadline - clock()))
    choice, why = answer[0] if answer else (None, "lbserver did not answer in time")
    return servers, choice, why



def choose(settings: ClientSettings, rng: random.Random, client_id: str, probe: Probe, deadline: float
           ) -> tuple[list[ServerState], Decision, str]:
    """Poll (all servers, or LB_SAMPLE of them) with ``probe`` and decide.

    ``probe(settings, hedge, usable, deadline)`` polls ``settings.servers`` until
    ``deadline``, and the ``hedge`` servers as well if none of the first has a
    ``usable`` answer soon (``poll``): ``gather`` in get_hosts, a simulated
    fleet in bench/storm.py. In sampled mode (LB_SAMPLE) the sample, drawn in
    proportion to LB_SAMPLE_WEIGHTS, is polled first, hedged by the rest;
    servers that were never polled are never listed.
    A server is usable for the hedge when it may be chosen and passes the
    thresholds (LB_MAX_LOAD, LB_MAX_RESPONSE_MS, LB_SKIP_SWAPPING): a sample of
    only swapping or slow servers makes the healthy rest be polled.
    Returns the polled servers' states in configured order, the decision, and
    lbserver's complaint.
    """
    polled, unpolled = sample_servers(settings.servers, settings.sample, rng,
                                      sample_weights_of(settings.servers, settings.sample_weights))

    def usable(s: ServerState) -> bool:
        return s.eligible and passes_thresholds(s, settings)

    servers, choice, why = probe(settings._replace(servers=tuple(polled)), tuple(unpolled), usable, deadline)
    if unpolled:
        rank = {srv: i for i, srv in enumerate(settings.servers)}
        servers = sorted(servers, key=lambda st: rank.get(Server(st.name, st.port), len(rank)))
    decision = decide(settings.algorithm, servers, Context(settings, rng, client_id, choice))
    if unpolled and not any(s.eligible for s in servers):
        # Nothing usable answered: the configured list, as without sampling (``decide``'s rule),
        # the servers that were never polled included.
        seen = {s.name for s in servers}
        listed = set(decision.hosts) | {u.host for u in unpolled if u.host not in seen}
        in_order = tuple(h for h in dict.fromkeys(x.host for x in settings.servers) if h in listed)
        decision = Decision(in_order[:settings.max_hosts] if settings.max_hosts else in_order,
                            decision.note + f"; {len(listed) - len(decision.hosts)} not polled")
    return servers, decision, why


def settings_for(env: Mapping[str, str]) -> tuple[ClientSettings, list[str]]:
    """The login's settings: client.conf's LB_* values under the environment's (empty ones ignored),
    and every problem found in either (naming the key, never quoting a value)."""
    from snmplb.client.clientconf import read_client_conf
    from snmplb.client.settings import VARIABLES

    file_values, file_problems = read_client_conf(env, frozenset(v.name for v in VARIABLES))
    # What LDM exports (lts.conf) wins, but an empty variable (a line left blank) is no value.
    given = {k: v for k, v in env.items() if v.strip()}
    settings, problems = from_env({**file_values, **given}, unquoted=frozenset(file_values) - frozenset(given))
    return settings, file_problems + problems


def poll_and_decide(settings: ClientSettings, deadline: float) -> tuple[list[ServerState], Decision, str]:
    """get_hosts' poll and decision for ``settings`` (with servers), until ``deadline``: ``choose`` driven
    by ``gather``. Shared by ``snmplb pick`` and ``snmplb connect``: one code path for every login."""
    rng: random.Random = random.Random(settings.seed) if settings.seed is not None else random.SystemRandom()
    client_id = settings.client_id or (default_mac() if settings.algorithm == "sticky" else "")
    early = 0 < settings.sample < len(settings.servers)

    def probe(polled: ClientSettings, hedge: tuple[Server, ...], usable: Callable[[ServerState], bool],
              deadline: float) -> tuple[list[ServerState], str | None, str]:
        return gather(polled, rng, early=early, deadline=deadline, hedge=hedge, usable=usable)

    return choose(settings, rng, client_id, probe, deadline)


def run(env: Mapping[str, str]) -> str:
    """The line to print for LDM."""
    settings, problems = settings_for(env)
    deadline = login_deadline(settings.timeout_ms, env)
    for p in problems:
        report(p)
    if not settings.servers:
        return ""
    servers, decision, why = poll_and_decide(settings, deadline)
    if why:
        report(why)
    if 0 < settings.sample < len(settings.servers):
        drift = weight_drift(servers, sample_weights_of(tuple(Server(s.name, s.port) for s in servers),
                                                        settings.sample_weights))
        if drift:
            report(drift)
    failed = [f"{s.name}:{s.port}: {s.reason}" for s in servers if not s.ok]
    if not any(s.ok for s in servers):
        report("no server answered; " + "; ".join(failed))
    else:
        report(decision.note + "".join(f"; {f}" for f in failed), level="info")
    if decision.hosts and not any(s.eligible for s in servers):
        report(f"listing the configured servers: {decision.note}", level="info")
    return " ".join(decision.hosts)


def _configured(env: Mapping[str, str]) -> str:
    """The configured servers' hosts, in order: the last resort (LB_SERVERS from the environment,
    else from client.conf, else SERVER)."""
    from snmplb.client.settings import parse_servers

    text = env.get("LB_SERVERS", "").strip()
    if not text:
        try:
            from snmplb.client.clientconf import read_client_conf

            text = read_client_conf(env, frozenset(("LB_SERVERS",)))[0].get("LB_SERVERS", "")
        except Exception:  # the last resort's own edge: the file is only a second source here
            text = ""
    servers, _ = parse_servers(text or env.get("SERVER", ""), 161)
    return " ".join(dict.fromkeys(s.host for s in servers))


def main() -> int:
    """get_hosts: whatever happens, ONE line on stdout (possibly empty) and exit status 0."""
    env = os.environ
    try:
        import warnings

        warnings.simplefilter("ignore")
        line = run(env)
    except Exception as exc:  # the outer edge: a login must not fail on our bug
        # Only the exception's type: its text may quote a setting's value, and some of those are secrets.
        report(f"internal error ({type(exc).__name__}); listing the configured servers")
        try:
            line = _configured(env)
        except Exception:
            line = ""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except Exception:
        pass  # nobody to tell: stdout itself is gone
    return 0


def main_and_exit() -> None:
    """main(), then exit without the interpreter's clean-up: a one-shot process at every login
    has nothing to clean up, and skipping it saves a few ms on a thin client."""
    code = main()
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
