"""`balanced`: spread the logins that decide on the same figures, by capacity, with a margin.

The default algorithm (docs/algorithms.md): a safety filter (``safe``, ``_pool``),
the logins expected to decide on the same figures (``fleet_rate``, ``horizon``),
water-filling with a margin (``fill``, ``login_shares``), memory where it is the
tighter limit (``memory_loads``), the CPU that load the sessions do not explain
takes (``cpu_left``), slow start (``ramp``), and two random choices where no
login rate is seen. Pure: nothing here polls, sleeps, reads a file or
the clock.
"""

from __future__ import annotations

import math

from snmplb import mib
from snmplb.client.algorithms import Context, algorithm, passes_thresholds
from snmplb.client.settings import ClientSettings
from snmplb.client.serverstate import ServerState

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    import random
    from collections.abc import Sequence

PANIC_SHARE = 0.3  # below this share of the eligible capacity passing the thresholds, balance over all
IN_TIME_SHARE = 0.8  # slow answers are avoided while the servers answering in time hold this share (_pool)
SLOW_START_FLOOR = 0.1  # a newcomer's weight starts at this fraction of its full weight
SHARE_CAP = 2.0  # no server takes more than this multiple of its (ramped) capacity share of the logins
# Fewer logins than this expected on the same figures (but some: a login rate is seen): fill without the
# margin, counting the login about to be added. Two standard deviations of a count of one or two logins
# would spread them nearly by capacity, whatever the counts say (a small lab with fresh figures: docs/balance.md).
# Not when no rate is seen at all: at a storm's start
# every rate reads 0, and counting the login would send the first second's logins to the big servers.
FEW_LOGINS = 5.0
MARGIN_Z = 2.0  # standard deviations of a server's random arrival count kept under the water level
HORIZON_PAD_S = 1.0  # the agent's sampling interval: a login shows in the figures up to a second late
MAX_SPREAD = 100_000.0  # logins: bounds the estimate, whatever the agents claim


def ramp(s: ServerState, settings: ClientSettings) -> float:
    """Slow start: the fraction of its weight a server has, growing linearly over LB_SLOW_START_S
    after it came into service (lbInService), from SLOW_START_FLOOR to 1."""
    window: int = settings.slow_start_s  # typed for mypy (a record's fields are Any to it)
    since = s.in_service
    if window and since is not None and since < window:
        return max(SLOW_START_FLOOR, since / window)
    return 1.0


MEM_RESERVE_PERCENT = 10  # below this much memory available, a server is full for `balanced` (unless panic)
FRESH_SHARE = 0.15  # fleet_rate: the freshest rows stand for the fleet only if they hold this share of it
RATE_WINDOW_S = 10.0  # lbLoginRate counts the ssh connections opened over the 10 s before the row was taken
LOGIN_LAG_S = 5.0  # an LDM login's usual time from its ssh connection to its session (3-8 s: ssh, PAM, logind)


def connecting(s: ServerState, rate: float | None = None) -> float:
    """Logins to ``s`` still connecting (ssh connection up, session not yet registered).

    The agent's own count (lbLoginsConnecting: connections of the last 60 s that no new session has
    matched), at most lbSshConnections beyond lbSessions; of those opened within the window (as many as
    its lbLoginRate says), at most as many as ``rate`` allows (a login rate of more than twice the
    others' counts as twice: ``capped_rates``). Just after the agent started (lbLoginRateSpan below the
    window) it has not seen the connections already open then: the estimate below, if more.

    From an agent too old to count them, or while it counts no connection (it cannot read its TCP
    tables, or sessions do not come over ssh): lbSshConnections beyond lbSessions, but at most the
    connections opened over the last RATE_WINDOW_S (lbLoginRate), since older connections are
    an admin's shell, an rsync, a monitoring check more often than logins (steady background
    connections would make a server look many sessions fuller: docs/balance.md), and logins that
    take longer are missed (docs/balance.md, rise-fall); when the count is below the sessions or zero,
    the logins of the last LOGIN_LAG_S by the login rate. An agent too old to publish lbLoginRate:
    the plain difference, as before. ``rate``: the server's login rate as ``capped_rates`` bounds it
    (default: its own lbLoginRate).
    """
    values: dict[str, int] = s.values  # typed for mypy (a record's fields are Any to it)
    conns, sessions, own = values.get("lbSshConnections", 0), s.sessions, s.login_rate
    rate = own if rate is None else rate
    if rate is None:
        return float(max(0, conns - sessions))
    if conns >= sessions and conns > 0:
        estimate = min(conns - sessions, rate * RATE_WINDOW_S)
        seen = values.get("lbLoginsConnecting")
        if seen is None:
            return estimate
        # The cap ``capped_rates`` puts on its rate holds for the count's logins of the window too (one absurd
        # agent, or one flooded while the others' rows are old): those opened within it, as many as its own
        # rate says, count at most as many as the capped rate; older ones (slow logins) count whole.
        counted = float(min(seen, conns - sessions))
        recent = min(counted, (own or 0.0) * RATE_WINDOW_S)
        counted += min(recent, rate * RATE_WINDOW_S) - recent
        span = values.get("lbLoginRateSpan")
        return max(counted, estimate) if span is not None and span < RATE_WINDOW_S else counted
    return rate * LOGIN_LAG_S


def _count(s: ServerState, rate: float | None = None) -> float:
    """Sessions, with the logins still connecting."""
    return s.sessions + connecting(s, rate)


def _load(s: ServerState, left: float = 1.0) -> float:
    """Sessions (logins still connecting included) per unit of capacity, counting the one about to be added;
    ``left``: the share of its capacity that other load leaves (``cpu_left``)."""
    return (_count(s) + 1) / (max(1, s.weight) * left)


def _order_key(s: ServerState, left: float = 1.0) -> tuple[float, int]:
    """The order of the servers after the first: emptiest first (``_load``); an exact tie goes to the higher
    lbRating (the agent's own verdict: of two empty servers, the one with idle CPUs and free memory). Not
    for the first choice, which is drawn: a rating shared by every client would herd them."""
    return _load(s, left), -s.rating


def safe(s: ServerState, settings: ClientSettings) -> bool:
    """`balanced`'s safety filter: the prototype's thresholds but the answer time. Not swapping (if
    LB_SKIP_SWAPPING), load per CPU at most LB_MAX_LOAD: the figures say whether a server has room.

    The answer time is not judged here but in ``_pool``: a slow answer is not an absence of
    capacity, and a server that is really overloaded shows it in its load or its swapping.
    """
    if settings.skip_swapping and s.swapping:
        return False
    if s.values["lbMemAvailablePercent"] < MEM_RESERVE_PERCENT:
        return False
    max_load: float = settings.max_load  # typed for mypy (a record's fields are Any to it)
    return s.load_per_cpu <= max_load


def _pool(eligible: Sequence[ServerState], settings: ClientSettings, sampled: bool = False) -> list[ServerState]:
    """The servers `balanced` chooses among.

    First the safety filter (``safe``; ``passes_thresholds`` in the sampled mode, whose hedge already
    treats a slow answer as unusable: docs/algorithms.md). Then the answer time: servers that answered
    slower than LB_MAX_RESPONSE_MS are left out while the ones that answered in time hold at least
    IN_TIME_SHARE of the safe capacity - a slow server is never chosen while the others have room for
    its share. Below that, a slow answer is not taken for an absence of capacity: dropping the big
    desktop of a three-desktop lab sent its share to the two others (worse than random:
    docs/balance.md, Margot), so the slow servers keep their full weight. A server that does not answer
    within LB_TIMEOUT_MS is not eligible at all. Finally panic mode: if the safe servers hold less than
    PANIC_SHARE of the eligible capacity, balance over all of them (never herd onto the few).
    """
    def capacity(servers: Sequence[ServerState]) -> int:
        return sum(max(1, x.weight) for x in servers)

    ok = [x for x in eligible if (passes_thresholds if sampled else safe)(x, settings)]
    in_time = [x for x in ok if x.rtt_ms is None or x.rtt_ms <= settings.max_response_ms]
    if len(in_time) < len(ok) and capacity(in_time) >= IN_TIME_SHARE * capacity(ok):
        ok = in_time
    return ok if capacity(ok) >= PANIC_SHARE * capacity(eligible) else list(eligible)


def fill(load: Sequence[float], capacity: Sequence[float], logins: float, caps: Sequence[float],
         z: float = MARGIN_Z) -> list[float]:
    """Water-filling with a safety margin: how many of ``logins`` new logins each server should take.

    Server i takes m_i such that load_i + m_i + z * sqrt(m_i) stays under
    level * capacity_i, but at most caps_i * logins; the level rises until the
    m_i add up to ``logins`` (``sum(caps)`` must be at least 1). The margin is
    z standard deviations of a random (Poisson) arrival count: a big server's
    count varies less per unit of capacity, so it takes a little more than a
    small one at the same level. Bisection, 40 steps.
    """
    def takes(level: float) -> list[float]:
        out = []
        for c, w, cap in zip(load, capacity, caps):
            room = level * w - c
            m = ((math.sqrt(z * z + 4 * room) - z) / 2) ** 2 if room > 0 else 0.0
            out.append(min(m, cap * logins))
        return out

    levels = [c / w for c, w in zip(load, capacity)]
    lo = min(levels)
    hi = max(levels) + (logins + z * math.sqrt(logins)) / min(capacity)  # there, each server alone takes all
    for _ in range(40):
        mid = (lo + hi) / 2
        if sum(takes(mid)) >= logins:
            hi = mid
        else:
            lo = mid
    return takes(hi)


def login_shares(pool: Sequence[ServerState], rate: float, settings: ClientSettings,
                 left: Sequence[float] | None = None) -> list[float]:
    """Each pool server's probability of taking this login (docs/algorithms.md, `balanced`).

    ``rate``: the logins per second arriving at the fleet (``fleet_rate``).
    Every client that decides on the same figures should spread its logins
    like this: the logins made since each server's figures were taken (its
    lbDataAge) are assumed to have gone by capacity and are added; the logins
    expected to share these figures (``rate`` times ``horizon``) fill the
    servers from the emptiest up, none taking more than
    SHARE_CAP times its capacity share (``fill``); this login takes server i
    with the share m_i / sum(m). A server's capacity is its weight, slow-started (``ramp``), times
    the share of it that load its sessions do not explain leaves (``cpu_left``; ``left`` when the caller
    has it already).
    """
    left = cpu_left(pool) if left is None else left
    w = [max(1, x.weight) * ramp(x, settings) * c for x, c in zip(pool, left)]
    total_w = sum(w)
    ages = [x.data_age_s for x in pool]
    own = capped_rates(pool)
    load = [_count(x, r) + rate * a * wi / total_w for x, r, a, wi in zip(pool, own, ages, w)]
    load = memory_loads(pool, load, w)
    expected = rate * horizon(pool)
    z = MARGIN_Z
    if 0 < expected < FEW_LOGINS:  # a small lab: no margin, and this login counted (see FEW_LOGINS)
        z, load = 0.0, [ld + 1 for ld in load]
    takes = fill(load, w, min(MAX_SPREAD, max(1.0, expected)), [SHARE_CAP * wi / total_w for wi in w], z)
    total = sum(takes)
    if not total > 0 or not math.isfinite(total):  # no level could be found: share by capacity
        return [wi / total_w for wi in w]
    return [t / total for t in takes]


MEM_HEED = 0.75  # memory_loads: a server's memory counts once this share of it is in use
MEM_POOL_MIN = 3  # memory_loads: fewer servers than this are not a pool to compare memory with
MEM_FACTOR_MAX = 1 / MEM_HEED  # memory_loads: at most this many times the pool's level


def memory_loads(pool: Sequence[ServerState], load: Sequence[float], w: Sequence[float]) -> list[float]:
    """``load`` (sessions and logins on their way, per server), raised where memory is the tighter limit.

    Sessions are not all alike: a few users with big browsers fill a server's memory while it holds no
    more sessions per capacity than the others, and swapping is a matter of memory (docs/balance.md, the
    working day). Once at least MEM_HEED of server i's memory is in use (lbMemTotal - lbMemAvailable), it
    counts at least as full as its memory says relative to the pool: (its share of memory in use / the
    pool's) times the pool's load per capacity, times its weight ``w``. So it takes fewer logins than its
    count alone would give it; never more (a server claiming little memory in use gains nothing).

    Both pool figures are trimmed means (``trimmed_mean``), of the shares of memory in use and of the
    loads per capacity (load_i / w_i): a server's level does not follow any single other server's figures.
    A plain mean of the loads would let one agent claiming thousands of sessions (or claiming a tiny
    weight), or one honest server far fuller than the rest, raise every memory-heavy server's count above
    everyone's and take it from its share of the logins to none; trimmed, a server outside the others'
    range moves the level no further than the edge of that range, and a small change of one server's
    figures moves it at most as much.

    A session's memory shows over its first minute, so in a storm this sees what was placed a minute
    before; in a working day, where sessions come and go, it keeps the servers of big sessions out of
    swap (docs/balance.md: the "day" scenario).

    Bounds against agents that lie about their memory: with fewer than MEM_POOL_MIN servers there is no
    pool to compare with (of two, the trimmed mean is the lower one: a liar claiming an empty memory
    would make its peer count as full as it likes), and a server counts at most MEM_FACTOR_MAX times the
    pool's level: agents that collude beyond what the trimming drops can push an honest server only that far.
    """
    if len(pool) < MEM_POOL_MIN:
        return list(load)
    share = [1.0 - x.values["lbMemAvailable"] / x.values["lbMemTotal"] for x in pool]
    pool_share, level = trimmed_mean(share), trimmed_mean([ld / wi for ld, wi in zip(load, w)])
    if not pool_share > 0 or not level > 0:
        return list(load)
    return [max(ld, min(MEM_FACTOR_MAX, f / pool_share) * level * wi) if f >= MEM_HEED else ld
            for ld, f, wi in zip(load, share, w)]


FULL_CPU_LOAD = 1.0  # load per CPU at which every CPU is in use: the agent's "busy" (verdict.HealthPolicy.busy_load)
CPU_LEFT_FLOOR = 0.05  # cpu_left: a server whose CPUs other load takes keeps this share of its capacity
# cpu_left: unexplained load per CPU up to this is noise (a small server's own daemons, the storm's desktops
# starting at different times): counted fully only from twice this. Without it the four sizes' storm lost 0.03.
LOAD_NOISE = 0.1
FIT_POOL_MIN = 3  # unexplained_load: fewer servers than this are no pool to fit the sessions' load on


def sustained_load(s: ServerState, longest: bool = False) -> float:
    """Load per CPU that has lasted minutes: the lower of the 1- and 5-minute load averages. A storm's
    desktops starting (half a runnable task each for their first seconds) lift the 1-minute average far
    more than the 5-minute one, and by how much depends on when each server's logins came: read from
    lbLoad1, that noise hid a hog of 0.75 per CPU in a storm. A hog running for minutes shows in both; one
    that just ended, in neither for long. ``longest``: the 15-minute average too (load that has lasted a
    quarter of an hour: a storm's sessions hardly show in it yet, a hog running since before the storm does)."""
    row: dict[str, int] = s.values
    load = min(mib.scaled("lbLoad1", row["lbLoad1"]), mib.scaled("lbLoad5", row["lbLoad5"]))
    if longest:
        load = min(load, mib.scaled("lbLoad15", row["lbLoad15"]))
    return load / max(1, s.cpus)


def unexplained_load(pool: Sequence[ServerState]) -> list[float]:
    """Each server's load per CPU that its sessions do not explain: a backup, a runaway process, a build -
    CPU that the sessions cannot have.

    What the sessions explain is fitted across the pool, robustly (``_above_fit``): load per CPU
    (``sustained_load``) = a + b * sessions per CPU (logins still connecting included), the slope b from
    the medians of the halves of the pool with the fewer and the more sessions per CPU, a as the median of
    what b leaves. A server's
    unexplained load is what lies above that line. Medians, not trimmed means: hogs only add load, and the
    few servers that run one (which also hold fewer sessions) would pull a trimmed mean's line up to them.
    A load common to every server (a fleet-wide daemon, or a fleet where load does not follow the sessions
    at all) is in a, not unexplained; one server's figures move a and b no further than the edge of the
    others' range. With no spread of sessions per CPU (an idle fleet), b is 0 and a is the pool's typical
    (lower median) load.

    The fit is made twice, on the load of minutes and on the load of a quarter of an hour (``longest``), and
    each server's unexplained load is the higher of the two. ``balanced`` evens the sessions per CPU, so in
    a storm the slope is poorly identified and comes out low, and the load of minutes undercounted a hog on a
    server holding fewer sessions by 10-30 % (issue 23: 1.33 max/mean at T = 0 s in balance.md's ``hogs``);
    the storm's sessions hardly show in the quarter-hour load, so there the line is flat and a hog running
    since before the storm stands out whole. A hog started minutes ago shows in the first fit.

    Of fewer than FIT_POOL_MIN servers (LB_SAMPLE's two, a pair of desktops) no line is fitted: a server
    without sessions has its load above the other's unexplained, a server with sessions none (through two
    points, a storm's lagging load averages looked like hogs: the sampled mode's four sizes lost balance).
    """
    x = [_count(s) / max(1, s.cpus) for s in pool]
    minutes, quarter = [sustained_load(s) for s in pool], [sustained_load(s, longest=True) for s in pool]
    if len(pool) < FIT_POOL_MIN:  # no line through two points: only a server without sessions is read
        return [max(0.0, max(ym - min(minutes), yq - min(quarter))) if xi == 0 else 0.0
                for xi, ym, yq in zip(x, minutes, quarter)]
    order = sorted(range(len(pool)), key=lambda i: x[i])
    halves = order[:len(order) // 2], order[len(order) // 2:]
    dx = median([x[i] for i in halves[1]]) - median([x[i] for i in halves[0]])
    return [max(u, v) for u, v in zip(_above_fit(x, minutes, halves, dx), _above_fit(x, quarter, halves, dx))]


def _above_fit(x: Sequence[float], y: Sequence[float], halves: tuple[list[int], list[int]],
               dx: float) -> list[float]:
    """How far each point (x: sessions per CPU, y: load per CPU) lies above the robust line through them
    (``unexplained_load``): ``halves``, the indices of the fewer and the more sessions per CPU, and ``dx``,
    the difference of their x medians, are the same for both fits and computed once."""
    low, high = halves
    dy = median([y[i] for i in high]) - median([y[i] for i in low]) if low else 0.0
    b = max(0.0, dy / dx) if dx > 0 and low else 0.0
    a = median([yi - b * xi for xi, yi in zip(x, y)])
    return [max(0.0, yi - a - b * xi) for xi, yi in zip(x, y)]


def cpu_left(pool: Sequence[ServerState]) -> list[float]:
    """The share of each server's capacity that load its sessions do not explain (``unexplained_load``)
    leaves: 1 minus that load over FULL_CPU_LOAD per CPU (the agent's "busy": every CPU in use), at least
    CPU_LEFT_FLOOR (so that a fleet whose every CPU is taken still shares by weight).

    Load the sessions do not explain is capacity in use, past the noise of the fit (``_past_noise``: none up
    to LOAD_NOISE per CPU, all of it from twice that). Of an idle server and one at 1.7 per CPU with no
    sessions, the busy one takes at most about 5 % of the logins, not half (issue 23); a server whose hog takes half
    its CPUs takes the logins of half its weight. A server claiming less load than its sessions explain
    gains nothing (at most 1); one claiming more only gives its own logins away.
    """
    return [max(CPU_LEFT_FLOOR, 1.0 - min(1.0, _past_noise(u) / FULL_CPU_LOAD)) for u in unexplained_load(pool)]


def _past_noise(u: float) -> float:
    """Unexplained load per CPU as counted: none up to LOAD_NOISE, all of it from twice that, linear between
    (no cliff: a small change of a figure makes a small change of a share)."""
    return u if u >= 2 * LOAD_NOISE else max(0.0, 2 * (u - LOAD_NOISE))


def horizon(pool: Sequence[ServerState]) -> float:
    """Seconds of logins that decide on the same figures: twice their (trimmed) mean age, plus the
    agent's sampling interval."""
    return 2 * trimmed_mean([x.data_age_s for x in pool]) + HORIZON_PAD_S


def median(xs: Sequence[float]) -> float:
    """The (lower) median of ``xs``, 0 for none: one server's figure moves it at most to its neighbour's;
    of two, the lower (as ``trimmed_mean``: an idle server and a busy one are not a pool half busy)."""
    s = sorted(xs)
    return s[(len(s) - 1) // 2] if s else 0.0


TRIM = 0.1  # fleet-wide figures: the share of the servers dropped at each end (``trimmed_mean``),
TRIM_MIN = (3, 1), (8, 2)  # but at least this many at each end with this many servers or more


def trimmed_mean(xs: Sequence[float]) -> float:
    """The mean of ``xs`` without the highest and the lowest TRIM of them, and at least one of each
    with 3 or more, two of each with 8 or more (TRIM_MIN); the smaller of two. No server, and no two
    among eight or more, can move it beyond the others' range, and one server's figure moves it at most
    as much as that figure moved, divided by the number of figures kept.

    Every fleet-wide figure that each server contributes to is estimated this way: the figures' mean
    age (one lying or broken agent at lbDataAge 30 s among fresh ones cannot stretch every client's
    horizon), the bound on the others' mean login rate that caps each server's (``fleet_rate``), and the
    pool's memory in use and load per capacity (``memory_loads``).
    """
    s = sorted(xs)
    if len(s) <= 2:
        return s[0] if s else 0.0
    k = max([int(len(s) * TRIM)] + [least for n, least in TRIM_MIN if len(s) >= n])
    kept = s[k:len(s) - k]
    return sum(kept) / len(kept)


RATE_FACTOR = 2.0  # one server's login rate (per capacity) counts up to this multiple of the others' mean,
RATE_FLOOR = 12 / 60 / 100  # or up to 12 logins/min per 100 weight (a small lab's real bursts), if more
RATE_SPREAD = 2.0  # the others' mean counts up to this multiple of the fleet's trimmed mean (colluders)


def fleet_rate(servers: Sequence[ServerState]) -> float:
    """The logins per second arriving at the fleet: the sum of the servers' login rates, each one
    capped at RATE_FACTOR times the mean of the others' (per unit of capacity) or RATE_FLOOR,
    whichever is higher; the others' mean itself counts at most RATE_SPREAD times the fleet's
    trimmed mean (``trimmed_mean``).

    Honest servers in a storm see similar rates per capacity, so the cap leaves their sum alone (a
    small lab's uneven bursts stay under the floor); one lying or broken agent claiming a storm
    nobody else sees adds at most twice the others' mean rate per unit of capacity, times its own
    weight, however absurd its rate (uncapped, one agent publishing lbLoginRate 2^32-1 would
    invert `balanced` fleet-wide). Two agents claiming the same storm would lift each other's cap
    (each one is among the other's "others"): the bound on the others' mean keeps each at most
    RATE_FACTOR * RATE_SPREAD times the fleet's typical rate, the trimmed mean dropping both among eight
    servers or more. Where honest rates reach that bound they are sparse (most servers at 0, the
    trimmed mean 0): the floor, not the others' mean, caps them there. The weight is not capped: a
    big honest server sees more logins, and an agent that lies about its weight draws the logins to
    itself by that weight anyway, which no estimate of the rate can prevent (the admin sets lbWeight;
    see docs/algorithms.md).

    Only the freshest rows (taken within RATE_WINDOW_S of the youngest) are summed, scaled up to
    the whole fleet's capacity: a row taken before a storm began reads 0 and would hide the storm
    (with rows up to 30 s old, the fleet's rate would read a fraction of the real one, and a
    server whose old row looked empty would take twice its share of a flash crowd). The cap takes the
    higher of the others' mean among the fresh rows and among all: a liar claiming fresh figures
    among stale honest ones is still bounded by them. The fresh rows stand for the fleet only when
    there are at least two of them holding FRESH_SHARE of the capacity; otherwise every row counts.
    """
    if not servers:
        return 0.0
    known = [x for x in servers if known_rate(x) is not None]
    if not known:
        return rate_in_progress(servers)
    if len(known) < len(servers):
        return fleet_rate(known) * sum(max(1, x.weight) for x in servers) / sum(max(1, x.weight) for x in known)
    w, rho = _per_capacity(servers)
    youngest = min(x.data_age_s for x in servers)
    fresh = [i for i, x in enumerate(servers) if x.data_age_s <= youngest + RATE_WINDOW_S]
    if len(fresh) < 2 or sum(w[i] for i in fresh) < FRESH_SHARE * sum(w):
        # One fresh row alone (a liar claiming age 0, an agent restarted mid-storm and reading 0) would
        # set the fleet's rate by itself, uncapped: too few fresh figures to stand for the fleet.
        fresh = list(range(len(servers)))
    every = range(len(rho))
    by_fresh = _others_means(rho, fresh, _spread_bound(rho, fresh))
    by_all = _others_means(rho, every, _spread_bound(rho, every))
    capped = [_capped(rho[i], max(by_fresh[i], by_all[i])) for i in fresh]
    return sum(c * w[i] for c, i in zip(capped, fresh)) * sum(w) / sum(w[i] for i in fresh)


def capped_rates(servers: Sequence[ServerState]) -> list[float]:
    """Each server's login rate (per second), capped as ``fleet_rate`` caps it against all the others:
    an absurd lbLoginRate cannot make a server look full of logins in progress either. A server whose
    rate is not known yet (``known_rate``) has the fleet's rate per capacity (``fleet_rate``), and the
    known ones are capped against the known ones only."""
    known = [x for x in servers if known_rate(x) is not None]
    if len(known) < len(servers):
        per_w = fleet_rate(servers) / sum(max(1, x.weight) for x in servers)
        capped = iter(capped_rates(known))
        return [next(capped) if known_rate(x) is not None else per_w * max(1, x.weight) for x in servers]
    w, rho = _per_capacity(servers)
    every = range(len(rho))
    means = _others_means(rho, every, _spread_bound(rho, every))
    return [wi * _capped(r, m) for r, wi, m in zip(rho, w, means)]


def _per_capacity(servers: Sequence[ServerState]) -> tuple[list[int], list[float]]:
    """Each server's weight (at least 1) and its login rate (``known_rate``, 0 if not known) per unit of
    that weight."""
    w = [max(1, x.weight) for x in servers]
    return w, [(known_rate(x) or 0.0) / wi for x, wi in zip(servers, w)]


def known_rate(s: ServerState) -> float | None:
    """The server's login rate per second over lbLoginRate's whole window, or None when not known yet.

    lbLoginRateSpan says how much of the window the agent has watched: 0 just after it started (a
    configuration push restarting snmpd in a storm), when lbLoginRate reads 0 whatever arrives, so
    "no rate seen" is not "no logins" (docs/balance.md, the "restart" scenario); a shorter span counts
    only its own connections, scaled up to the window here. An agent too old to publish the span: its
    rate as it is; too old to publish a rate: None, as ``ServerState.login_rate``.
    """
    rate, span = s.login_rate, s.login_rate_span
    if rate is None or span is None or span >= RATE_WINDOW_S:
        return rate
    return rate * RATE_WINDOW_S / span if span > 0 else None


def rate_in_progress(servers: Sequence[ServerState]) -> float:
    """The fleet's login rate when no server knows its own yet (every agent just restarted): the logins
    in progress (lbSshConnections beyond lbSessions) over the time a login takes to become a session
    (LOGIN_LAG_S), per capacity as a trimmed mean (one liar moves it little), times the capacity."""
    w = [max(1, x.weight) for x in servers]
    per_w = [max(0, x.values.get("lbSshConnections", 0) - x.sessions) / wi for x, wi in zip(servers, w)]
    return trimmed_mean(per_w) * sum(w) / LOGIN_LAG_S


def _capped(rate: float, others: float) -> float:
    """A server's rate per capacity, at most RATE_FACTOR times the others' mean or RATE_FLOOR."""
    return min(rate, max(RATE_FACTOR * others, RATE_FLOOR))


def _spread_bound(values: Sequence[float], among: Sequence[int]) -> float:
    """RATE_SPREAD times the trimmed mean of ``values`` at the indices ``among``: ``_others_means``' bound."""
    return RATE_SPREAD * trimmed_mean([values[j] for j in among])


def _others_means(values: Sequence[float], among: Sequence[int], bound: float) -> list[float]:
    """For every index i: the mean of ``values`` at the indices ``among`` but i, at most ``bound``
    (``_spread_bound``: two outliers that lift each other's mean are held to the fleet's typical figure);
    ``values[i]`` when there is no other. One sum for all of them: linear in the fleet's size (a mean per
    server, each over the others, was quadratic: half of a decision's cost at 200 servers)."""
    members = set(among)
    n = len(members)
    total = sum(values[j] for j in among)
    out = []
    for i, v in enumerate(values):
        count, rest = (n - 1, total - v) if i in members else (n, total)
        out.append(min(rest / count, bound) if count else v)
    return out


def _two_choices(pool: list[ServerState], ctx: Context, left: dict[int, float]) -> list[ServerState]:
    """Capacity-weighted two random choices, compared on sessions per capacity (``left``: the share of each
    server's capacity that other load leaves, by id, ``cpu_left``); slow start as the probability of
    admitting a candidate, so that it also holds when LB_SAMPLE drew the pool."""
    keyed = [(ctx.rng.random() ** (1.0 / (max(1, x.weight) * left[id(x)])), i) for i, x in enumerate(pool)]
    drawn = [pool[i] for _, i in sorted(keyed, reverse=True)]
    admitted = [x for x in drawn if ctx.rng.random() < ramp(x, ctx.settings)] or drawn
    # Stable: ties keep the draw's order. Not the rating: clients deciding on the same figures would all take
    # the same one of two tied servers (Rudolfo's storm at T = 10 s: 1.137 -> 1.184, 3 seeds).
    return sorted(admitted[:2], key=lambda x: _load(x, left[id(x)]))


@algorithm("balanced")
def balanced(eligible: Sequence[ServerState], ctx: Context) -> list[ServerState]:
    """Spread the logins that decide on the same figures, by capacity, with a margin (docs/algorithms.md).

    1. Safety (``safe``): not swapping, at least MEM_RESERVE_PERCENT of the
       memory available, load per CPU at most LB_MAX_LOAD, unless that leaves
       less than PANIC_SHARE of the capacity; answers slower than
       LB_MAX_RESPONSE_MS only when the others hold less than IN_TIME_SHARE of
       the safe capacity (``_pool``).
    2. Estimate how many logins decide on these figures from the fleet's login
       rate (lbLoginRate) and the figures' age (lbDataAge), and draw this login's
       server from the shares that would fill the servers evenly
       (``login_shares``): a server that looks emptiest takes only its deficit,
       not every login, as `best` does; never more than twice its share. A server
       with at least MEM_HEED of its memory in use counts as full as its memory
       says, relative to the pool (``memory_loads``).
    3. Weights are lbWeight, ramped up over LB_SLOW_START_S for a server that
       just came into service (lbInService), times the share of the CPU that
       load its sessions do not explain leaves (``cpu_left``).
    Rest: the pool by sessions per weight, then the servers that failed the
    thresholds, by the same measure; exact ties by lbRating, highest first (in
    this order only: the first choice is drawn, so that clients do not herd).
    Capacity-weighted two random choices decide instead in the sampled mode (LB_SAMPLE: a few servers polled say
    little about where the fleet's logins go; in the simulator two choices
    balance better there) and when an agent does not publish lbLoginRate
    (older than this client).
    """
    sampled = 0 < ctx.settings.sample < len(ctx.settings.servers)
    pool = _pool(eligible, ctx.settings, sampled)
    rate = None if sampled or any(x.login_rate is None for x in eligible) else fleet_rate(eligible)
    shares_left = cpu_left(pool)
    left = {id(x): c for x, c in zip(pool, shares_left)}
    if rate is None:
        first = _two_choices(pool, ctx, left)
    else:
        first = [pool[_draw(login_shares(pool, rate, ctx.settings, shares_left), ctx.rng)]]
    rest = sorted((x for x in pool if all(x is not f for f in first)), key=lambda x: _order_key(x, left[id(x)]))
    in_pool = {id(x) for x in pool}
    others = sorted((x for x in eligible if id(x) not in in_pool), key=_order_key)
    return first + rest + others


def _draw(shares: Sequence[float], rng: random.Random) -> int:
    """An index drawn with probability proportional to ``shares``."""
    u = rng.random() * sum(shares)
    for i, p in enumerate(shares):
        u -= p
        if u < 0:
            return i
    return max(range(len(shares)), key=lambda i: shares[i])  # rounding: the largest share
