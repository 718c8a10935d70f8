"""Choosing servers: pure functions of the polled stats, the client's id, a Random and the settings.

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
from collections import namedtuple
from collections.abc import Callable, Sequence

from .settings import ClientSettings
from .stats import ServerState


class Context(namedtuple("Context", "settings rng client_id lbserver_choice", defaults=("", None))):
    """What an algorithm may look at besides the servers: settings (ClientSettings),
    rng (random.Random), client_id (str) and lbserver_choice (the host ltsp-cluster's
    lbserver named, or None)."""

    __slots__ = ()


Algorithm = Callable[[Sequence[ServerState], Context], list[ServerState]]
REGISTRY: dict[str, Algorithm] = {}


def algorithm(name: str) -> Callable[[Algorithm], Algorithm]:
    def register(fn: Algorithm) -> Algorithm:
        REGISTRY[name] = fn
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
    return s.load_per_cpu <= settings.max_load


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


PANIC_SHARE = 0.3  # below this share of the eligible capacity passing the thresholds, balance over all
SLOW_START_FLOOR = 0.1  # a newcomer's weight starts at this fraction of its full weight


def ramp(s: ServerState, settings: ClientSettings) -> float:
    """Slow start: the fraction of its weight a server has, growing linearly over LB_SLOW_START_S
    after it came into service (lbInService), from SLOW_START_FLOOR to 1."""
    window = settings.slow_start_s
    if window and s.in_service < window:
        return max(SLOW_START_FLOOR, s.in_service / window)
    return 1.0


def _load(s: ServerState) -> float:
    """Sessions (logins still connecting included) per unit of capacity, counting the one about to be added."""
    return (s.sessions_or_connecting + 1) / max(1, s.weight)


@algorithm("balanced")
def balanced(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """Capacity-weighted two random choices, compared on sessions per capacity (docs/algorithms.md).

    1. Safety: keep the prototype's thresholds (not swapping, fast enough, load per
       CPU at most LB_MAX_LOAD); if less than PANIC_SHARE of the eligible capacity
       passes, use every eligible server (panic mode: never herd onto the few).
    2. Draw two distinct candidates with probability proportional to their
       weight (lbWeight). A server in slow start (lbInService below
       LB_SLOW_START_S) is admitted as a candidate only with probability equal
       to its ramp, else the next drawn takes its place: so it gets its ramped
       share whether the pool was drawn here or by LB_SAMPLE.
    3. The candidate with fewer sessions per unit of weight wins (ties: the draw).
    Rest: the other candidate, then the pool by sessions per weight, then the
    servers that failed the thresholds, by the same measure.

    With stale stats every client still sees random pairs, so a server that looks
    emptiest wins only the pairs it is drawn into (at most about twice its share)
    instead of every login, as `best` does.
    """
    s = ctx.settings
    safe = [x for x in eligible if passes_thresholds(x, s)]
    total = sum(max(1, x.weight) for x in eligible)
    pool = safe if sum(max(1, x.weight) for x in safe) >= PANIC_SHARE * total else list(eligible)
    keyed = [(ctx.rng.random() ** (1.0 / max(1, x.weight)), i) for i, x in enumerate(pool)]
    drawn = [pool[i] for _, i in sorted(keyed, reverse=True)]
    admitted = [x for x in drawn if ctx.rng.random() < ramp(x, s)] or drawn
    pair = sorted(admitted[:2], key=_load)  # stable: equal loads keep the draw's order
    rest = sorted((x for x in drawn if all(x is not p for p in pair)), key=_load)
    in_pool = {id(x) for x in pool}
    others = sorted((x for x in eligible if id(x) not in in_pool), key=_load)
    return pair + rest + others


def sample_servers(servers: Sequence, k: int, rng: random.Random) -> tuple[list, list]:
    """LB_SAMPLE: ``k`` servers drawn uniformly to poll, and the rest (in configured order) left unpolled."""
    if k <= 0 or k >= len(servers):
        return list(servers), []
    picked = set(rng.sample(range(len(servers)), k))
    return ([x for i, x in enumerate(servers) if i in picked], [x for i, x in enumerate(servers) if i not in picked])


@algorithm("lbserver")
def lbserver(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """ltsp-cluster's lbserver's choice first, if it is eligible; else, and for the rest, thresholded."""
    rest = thresholded(eligible, ctx)
    chosen = [s for s in rest if s.name == ctx.lbserver_choice]
    return chosen[:1] + [s for s in rest if s not in chosen[:1]]


class Decision(namedtuple("Decision", "hosts note")):
    """The hosts to print (tuple of str), and a note on how they were chosen (for logs and the status view)."""

    __slots__ = ()


def decide(name: str, servers: Sequence[ServerState], ctx: Context) -> Decision:
    """The hosts for LDM by algorithm ``name`` (a ConfigError-free name from settings)."""
    eligible = [s for s in servers if s.eligible]
    if eligible:
        ordered = REGISTRY[name](eligible, ctx)
        hosts = _unique(s.name for s in ordered)
        note = f"{name}: {hosts[0]} of {len(eligible)} eligible"
        if name == "lbserver" and ctx.lbserver_choice not in hosts[:1]:
            note += f" (lbserver's choice {ctx.lbserver_choice or 'none'} not usable: thresholded)"
    else:
        # Nothing may be chosen: give LDM the configured list so it can still try, without the
        # servers whose admin said no (unless that leaves nothing).
        closed = {s.name for s in servers if s.ok and s.admin_state in ("draining", "disabled")}
        hosts = _unique(s.name for s in servers if s.name not in closed) or _unique(s.name for s in servers)
        answered = sum(1 for s in servers if s.ok)
        note = (f"no eligible server ({answered} of {len(servers)} answered): configured order"
                + "".join(f"; {s.name}: {s.reason or s.status}" for s in servers))
    limit = ctx.settings.max_hosts
    return Decision(hosts[:limit] if limit else hosts, note)


def _unique(names) -> tuple[str, ...]:
    """Names in order, each once."""
    return tuple(dict.fromkeys(names))
