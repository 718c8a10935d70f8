"""LB_SAMPLE's draw: which servers a login polls when it polls only a few, and the weights' check.

Pure: the draw takes a ``random.Random``; nothing here polls or reads a file.
"""

from __future__ import annotations

from snmplb.client.serverstate import ServerState

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    import random
    from collections.abc import Sequence
    from typing import TypeVar

    T = TypeVar("T")  # a server, as the caller has it (Server, ServerState)

def sample_servers(servers: Sequence[T], k: int, rng: random.Random, weights: Sequence[float] | None = None
                   ) -> tuple[list[T], list[T]]:
    """LB_SAMPLE: ``k`` servers to poll, and the rest (both in configured order) left unpolled.

    Drawn in proportion to ``weights`` (LB_SAMPLE_WEIGHTS, the servers' capacities): server i is in
    the sample with probability k * w_i / sum(w), capped at 1 (``inclusion``), so that a server can
    be offered its capacity share of the logins, whatever its size; a uniform draw offers every server
    k/N of them, a 4 GiB server as many as a 32 GiB one (docs/sampling.md). Equal weights
    (or none) draw uniformly, as before LB_SAMPLE_WEIGHTS, with the same use of ``rng``.
    """
    n = len(servers)
    if k <= 0 or k >= n:
        return list(servers), []
    if weights is None or len(set(weights)) <= 1 or not any(w > 0 for w in weights):
        picked = set(rng.sample(range(n), k))
    else:
        picked = _systematic(inclusion(weights, k), rng)
    return ([x for i, x in enumerate(servers) if i in picked], [x for i, x in enumerate(servers) if i not in picked])


def inclusion(weights: Sequence[float], k: int) -> list[float]:
    """Each server's probability of being among ``k`` drawn in proportion to ``weights``: k * w / sum(w),
    except that a server whose share would reach 1 is always drawn and the others share the remaining
    draws alike. Servers of weight 0 are never drawn (they may still be polled with the hedge), so
    fewer than ``k`` are drawn when fewer than ``k`` weigh more than 0."""
    pi = [0.0] * len(weights)
    sure: set[int] = set()
    for _ in range(len(weights) + 1):  # each round makes at least one more server sure, or ends
        rest = [i for i, w in enumerate(weights) if w > 0 and i not in sure]
        draws, total = k - len(sure), sum(weights[i] for i in rest)
        if draws <= 0 or total <= 0:
            break
        grown = False
        for i in rest:
            pi[i] = draws * weights[i] / total
            if pi[i] >= 1.0:
                sure.add(i)
                grown = True
        if not grown:
            break
    for i in sure:
        pi[i] = 1.0
    return pi


def _systematic(pi: Sequence[float], rng: random.Random) -> set[int]:
    """Indices drawn so that index i is drawn with probability ``pi[i]`` (each at most 1): systematic
    sampling over a random order (Madow). The pi add up to the number of draws, m; lay them end to end
    in a random order and take the intervals that hold the points u, u + 1, ..., u + m - 1 for one
    uniform u: an interval no longer than 1 holds at most one point, so m distinct indices come out,
    each with exactly its probability (unlike drawing one after another by weight, which favours the
    small ones)."""
    order = list(range(len(pi)))
    rng.shuffle(order)
    m = round(sum(pi))
    picked: set[int] = set()
    point, end = rng.random(), 0.0
    for i in order:
        end += pi[i]
        if len(picked) < m and point < end:
            picked.add(i)
            point += 1.0
    for i in sorted(order, key=lambda i: -pi[i]):  # float rounding left the last point past the end
        if len(picked) >= m:
            break
        picked.add(i)
    return picked


WEIGHT_DRIFT = 1.25  # LB_SAMPLE_WEIGHTS off by more than this factor, relative to the other sampled servers


def weight_drift(states: Sequence[ServerState], weights: Sequence[float]) -> str:
    """Why LB_SAMPLE_WEIGHTS disagrees with what the polled servers publish ("" when it does not).

    ``weights``: each state's sample weight. Only ratios matter to the draw, so two answers whose
    lbWeight / sample weight differ by more than WEIGHT_DRIFT prove a wrong entry (or a missing one:
    a fleet of several sizes without LB_SAMPLE_WEIGHTS); one answer, or a fleet whose servers all
    publish the same multiple of their entries, proves nothing. Costs nothing: the poll brought lbWeight.
    """
    seen = [(s.weight / w, s, w) for s, w in zip(states, weights) if w > 0 and s.ok and s.weight > 0]
    if len(seen) < 2:
        return ""
    low, high = min(seen, key=lambda x: x[0]), max(seen, key=lambda x: x[0])
    if high[0] <= WEIGHT_DRIFT * low[0]:
        return ""
    return (f"LB_SAMPLE_WEIGHTS: {low[1].name} publishes lbWeight {low[1].weight} and is drawn with {low[2]:g}, "
            f"{high[1].name} lbWeight {high[1].weight} and {high[2]:g}: set each server's entry to its lbWeight "
            "so that the sample follows capacity (docs/sampling.md)")
