"""Choosing servers: the registry, the simple algorithms and the rules every algorithm obeys.

Pure functions of the polled stats, the client's id, a Random and the settings.
`balanced` (the default) has its own module, ``balanced``; LB_SAMPLE's draw is ``sampling``.

Every algorithm has the same signature, ``(eligible, ctx) -> ordered list``:
it gets the eligible servers (answered with a plausible row, enabled, weight
above 0, below their maximum sessions) in configured order, and returns all
of them, chosen first, then the rest in its order of preference. ``decide``
wraps them with the rules that hold for every algorithm (docs/algorithms.md):
never a server that did not answer or may not take sessions; and when no
server is eligible, the configured list so that LDM can still try.
Nothing here polls, sleeps, reads a file or the clock.
"""

from __future__ import annotations

import math
import random

from snmplb.client.settings import ClientSettings
from snmplb.client.serverstate import ServerState
from snmplb.record import record

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Callable, Iterable, Sequence

    Algorithm = Callable[[Sequence[ServerState], "Context"], list[ServerState]]

# Statuses whose servers are left out even of the last-resort list: their admin closed them, or they
# said they cannot take a login (sshd down, a login path full). Full servers stay: a session may end.
CLOSED_TO_LDM = frozenset(("draining", "disabled", "unavailable"))


class Context(record("Context", "settings rng client_id lbserver_choice", defaults=("", None))):
    """What an algorithm may look at besides the servers: settings (ClientSettings),
    rng (random.Random), client_id (str) and lbserver_choice (the host ltsp-cluster's
    lbserver named, or None)."""

    __slots__ = ()


REGISTRY: dict[str, Algorithm] = {}
# What an algorithm adds to the decision's note, given the hosts it ordered (the chosen first) and the context.
NOTES: dict[str, Callable[[Sequence[str], Context], str]] = {}


def algorithm(name: str, note: Callable[[Sequence[str], Context], str] | None = None
              ) -> Callable[[Algorithm], Algorithm]:
    """Register an algorithm under ``name`` (LB_ALGORITHM's value); ``note``: its words for the decision's
    note beyond the common ones (the lbserver algorithm says when lbserver's choice was not usable)."""
    def register(fn: Algorithm) -> Algorithm:
        REGISTRY[name] = fn
        if note is not None:
            NOTES[name] = note
        return fn
    return register


def _shuffled(servers: Sequence[ServerState], rng: random.Random) -> list[ServerState]:
    out = list(servers)
    rng.shuffle(out)
    return out


@algorithm("fixed")
def fixed(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """Load balancing off: the configured order."""
    return list(eligible)


@algorithm("random")
def uniform(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """Uniformly random order."""
    return _shuffled(eligible, ctx.rng)


@algorithm("best")
def best(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """Highest lbRating first; ties in random order."""
    keyed = [(-s.rating, ctx.rng.random(), i) for i, s in enumerate(eligible)]
    return [eligible[i] for _, _, i in sorted(keyed)]


@algorithm("weighted")
def weighted(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """Random, with probability proportional to lbRating (at least 1), without replacement.

    Efraimidis-Spirakis: each server draws u**(1/w) and the largest wins, which
    picks each first with probability w / sum(w) and orders the rest alike.
    """
    keyed = [(ctx.rng.random() ** (1.0 / max(1, s.rating)), i) for i, s in enumerate(eligible)]
    return [eligible[i] for _, i in sorted(keyed, reverse=True)]


def passes_thresholds(s: ServerState, settings: ClientSettings) -> bool:
    """The prototype's filter: not swapping (if LB_SKIP_SWAPPING), answered fast enough, load per CPU low enough."""
    if settings.skip_swapping and s.swapping:
        return False
    if s.rtt_ms is not None and s.rtt_ms > settings.max_response_ms:
        return False
    max_load: float = settings.max_load  # typed for mypy (a record's fields are Any to it)
    return s.load_per_cpu <= max_load


@algorithm("thresholded")
def thresholded(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """The prototype's: random among the servers passing the thresholds, else random among all.

    Order: the passing servers in random order, then the others in random order.
    """
    good = [s for s in eligible if passes_thresholds(s, ctx.settings)]
    bad = [s for s in eligible if not passes_thresholds(s, ctx.settings)]
    return _shuffled(good, ctx.rng) + _shuffled(bad, ctx.rng)


def rendezvous_score(client_id: str, host: str, weight: int) -> float:
    """Weighted rendezvous hashing: -w / ln(h), h uniform in (0, 1) from hash(client, server)."""
    import hashlib  # only sticky needs it; get_hosts' start-up counts

    digest = hashlib.sha256(f"{client_id}\0{host}".encode()).digest()
    h = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    return -max(1, weight) / math.log(h)


@algorithm("sticky")
def sticky(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """The same server for the same client while it is up (rendezvous hashing on the client id).

    Only the clients of a server that went away move, each to its own next choice.
    """
    return sorted(eligible, key=lambda s: rendezvous_score(ctx.client_id, s.name, s.weight), reverse=True)


def _lbserver_note(hosts: Sequence[str], ctx: Context) -> str:
    if ctx.lbserver_choice in hosts[:1]:
        return ""
    return f" (lbserver's choice {ctx.lbserver_choice or 'none'} not usable: thresholded)"


@algorithm("lbserver", note=_lbserver_note)
def lbserver(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """ltsp-cluster's lbserver's choice first, if it is eligible; else, and for the rest, thresholded."""
    rest = thresholded(eligible, ctx)
    chosen = [s for s in rest if s.name == ctx.lbserver_choice]
    return chosen[:1] + [s for s in rest if s not in chosen[:1]]


class Decision(record("Decision", "hosts note")):
    """The hosts to print (tuple of str), and a note on how they were chosen (for logs and the status view)."""

    __slots__ = ()


def decide(name: str, servers: Sequence[ServerState], ctx: Context) -> Decision:
    """The hosts for LDM by algorithm ``name`` (a ConfigError-free name from settings)."""
    eligible = [s for s in servers if s.eligible]
    if eligible:
        ordered = REGISTRY[name](eligible, ctx)
        hosts = _unique(s.name for s in ordered)
        note = f"{name}: {hosts[0]} of {len(eligible)} eligible"
        if name in NOTES:
            note += NOTES[name](hosts, ctx)
    else:
        # Nothing may be chosen: give LDM the configured list so it can still try, without the
        # servers whose admin said no (unless that leaves nothing).
        closed = {s.name for s in servers
                  if s.ok and (s.admin_state in ("draining", "disabled") or s.status in CLOSED_TO_LDM)}
        hosts = _unique(s.name for s in servers if s.name not in closed) or _unique(s.name for s in servers)
        answered = sum(1 for s in servers if s.ok)
        note = (f"no eligible server ({answered} of {len(servers)} answered)"
                + "".join(f"; {s.name}: {s.reason or s.status}" for s in servers))
    limit = ctx.settings.max_hosts
    return Decision(hosts[:limit] if limit else hosts, note)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    """Names in order, each once."""
    return tuple(dict.fromkeys(names))


# `balanced` registers itself on import; imported last, when everything it takes from here exists.
import snmplb.client.balanced  # noqa: E402,F401
