"""Each algorithm's contract on tables of stats: pure functions, so a table fully determines the answer."""

from __future__ import annotations

import collections
import statistics
import random

import pytest

from snmplb.client.algorithms import REGISTRY, Context, decide
from snmplb.client.settings import ALGORITHMS, ClientSettings
from snmplb.client.serverstate import ServerState, implausible
from support import down, row, up

def ctx(seed=1, client="52:54:00:00:00:01", **settings) -> Context:
    return Context(ClientSettings(**settings), random.Random(seed), client)


def hosts(name, servers, c=None):
    return list(decide(name, servers, c or ctx()).hosts)


def test_registry_holds_exactly_the_documented_algorithms():
    assert set(REGISTRY) == set(ALGORITHMS)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_lists_only_eligible_responders(name):
    servers = [up("a"), down("dead"), up("drain", admin="draining"), up("off", admin="disabled"),
               up("full", sessions=10, users=1, max_sessions=10), up("zero", weight=0), up("b"),
               ServerState("liar", 161, None, "implausible memory figures")]
    for seed in range(20):
        got = hosts(name, servers, ctx(seed))
        assert sorted(got) == ["a", "b"], got


@pytest.mark.parametrize("name", ALGORITHMS)
def test_no_eligible_server_gives_the_configured_order_without_closed_ones(name):
    servers = [down("a"), up("b", admin="draining"), down("c"), up("d", sessions=3, users=1, max_sessions=3)]
    d = decide(name, servers, ctx())
    assert list(d.hosts) == ["a", "c", "d"]
    assert "no eligible server" in d.note
    assert hosts(name, [down("x"), down("y")]) == ["x", "y"]
    assert hosts(name, [up("x", admin="disabled")]) == ["x"]  # better than nothing at all for LDM


def test_fixed_is_configured_order():
    assert hosts("fixed", [up("c"), up("a", load_per_cpu=5), down("z"), up("b")]) == ["c", "a", "b"]


def test_random_is_uniform():
    servers = [up(n) for n in "abcd"]
    firsts = collections.Counter(hosts("random", servers, ctx(seed))[0] for seed in range(4000))
    assert all(900 < firsts[n] < 1100 for n in "abcd"), firsts


def test_best_takes_the_highest_rating_ties_at_random():
    servers = [up("low", rating=20), up("high1", rating=90), up("mid", rating=50), up("high2", rating=90)]
    firsts = collections.Counter()
    for seed in range(200):
        got = hosts("best", servers, ctx(seed))
        assert got[2:] == ["mid", "low"]
        firsts[got[0]] += 1
    assert firsts["high1"] > 50 and firsts["high2"] > 50


def test_weighted_picks_in_proportion_to_rating():
    servers = [up("a", rating=10), up("b", rating=30), up("c", rating=60)]
    firsts = collections.Counter(hosts("weighted", servers, ctx(seed))[0] for seed in range(6000))
    assert 450 < firsts["a"] < 750 and 1500 < firsts["b"] < 2100 and 3300 < firsts["c"] < 3900, firsts


def test_thresholded_is_the_prototypes_rule():
    servers = [up("slow", rtt=900), up("swap", swapping=True), up("hot", load_per_cpu=2.5),
               up("ok1", load_per_cpu=1.9), up("ok2")]
    c = dict(max_load=2.0, max_response_ms=500)
    firsts = collections.Counter()
    for seed in range(400):
        got = hosts("thresholded", servers, ctx(seed, **c))
        assert set(got[:2]) == {"ok1", "ok2"} and set(got[2:]) == {"slow", "swap", "hot"}
        firsts[got[0]] += 1
    assert firsts["ok1"] > 120 and firsts["ok2"] > 120
    # Swapping allowed when LB_SKIP_SWAPPING=no.
    got = hosts("thresholded", servers, ctx(3, skip_swapping=False, **c))
    assert set(got[:3]) == {"ok1", "ok2", "swap"}
    # None passes: random among all responders.
    bad = [up("s1", swapping=True), up("s2", load_per_cpu=9)]
    firsts = collections.Counter(hosts("thresholded", bad, ctx(seed, **c))[0] for seed in range(400))
    assert firsts["s1"] > 120 and firsts["s2"] > 120


def test_sticky_keeps_each_client_and_moves_only_the_dead_servers_clients():
    names = [f"app{i}" for i in range(6)]
    clients = [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(3000)]
    before = {c: hosts("sticky", [up(n) for n in names], ctx(seed=hash(c) % 1000, client=c))[0] for c in clients}
    again = {c: hosts("sticky", [up(n) for n in names], ctx(seed=7, client=c))[0] for c in clients}
    assert before == again  # the rng plays no part
    counts = collections.Counter(before.values())
    assert all(350 < counts[n] < 650 for n in names), counts  # even spread
    after = {c: hosts("sticky", [down("app2") if n == "app2" else up(n) for n in names], ctx(client=c))[0]
             for c in clients}
    moved = {c for c in clients if before[c] != after[c]}
    assert moved == {c for c in clients if before[c] == "app2"}
    assert collections.Counter(after[c] for c in moved).most_common(1)[0][1] < len(moved) * 0.4  # spread out


def test_sticky_follows_the_admin_weight():
    servers = [up("big", weight=300), up("small", weight=100)]
    firsts = collections.Counter(hosts("sticky", servers, ctx(client=f"c{i}"))[0] for i in range(4000))
    assert 2800 < firsts["big"] < 3200, firsts


def test_lbserver_choice_first_when_eligible_else_thresholded():
    servers = [up("a"), up("b"), up("c", admin="draining")]
    c = Context(ClientSettings(), random.Random(1), "id", "b")
    assert decide("lbserver", servers, c).hosts[0] == "b"
    for choice in ("c", "elsewhere", None):
        c = Context(ClientSettings(), random.Random(1), "id", choice)
        d = decide("lbserver", servers, c)
        assert set(d.hosts) == {"a", "b"} and "thresholded" in d.note


def test_max_hosts_limits_the_list():
    servers = [up(n) for n in "abcde"]
    assert len(decide("random", servers, ctx(max_hosts=2)).hosts) == 2


@pytest.mark.parametrize("change, why", [
    ({"lbCpuCount": 0}, "CPU count"), ({"lbMemAvailable": 9_000_000}, "memory"), ({"lbSwapping": 7}, "swapping"),
    ({"lbStatus": 0}, "status"), ({"lbUsers": 5}, "users"), ({"lbLoadPerCpu": 900}, "load per CPU"),
    ({"lbDataAge": 120_000}, "stale"), ({"lbRating": 101}, "percentages"), ({"lbSwapFree": 101}, "swap"),
])
def test_implausible_rows_are_named(change, why):
    assert implausible(row()) == ""
    assert why in implausible({**row(), **change})


def test_balanced_alone_takes_the_emptiest_up_to_twice_its_share():
    servers = [up("empty", sessions=0), up("half", sessions=20, users=1), up("full", sessions=40, users=1)]
    firsts = collections.Counter(hosts("balanced", servers, ctx(seed))[0] for seed in range(3000))
    # No login arriving anywhere (lbLoginRate 0): this login fills the emptiest server, but no server takes
    # more than twice its capacity share (2/3 here); the rest goes to the next emptiest; "full" never.
    assert firsts["full"] == 0
    assert 1850 < firsts["empty"] < 2150 and 850 < firsts["half"] < 1150, firsts


def storming(name, sessions, age_ms, per_minute, weight=100, in_service=86400, mem_pct=50) -> ServerState:
    """A row in a storm; ``mem_pct``: the memory still available, in percent."""
    return ServerState(name, 161, {**row(sessions=sessions, users=min(1, sessions), age=age_ms, weight=weight,
                                         in_service=in_service, mem_pct=mem_pct), "lbLoginRate": per_minute}, "", 1.0)


def test_balanced_sends_fewer_logins_to_a_server_whose_memory_is_fuller_than_its_sessions_say():
    from snmplb.client.balanced import login_shares

    # Four twins with 30 sessions each; "heavy" holds big browsers: 88 % of its memory in use, the others 70 %.
    servers = [storming(n, 30, 1000, 120, mem_pct=30) for n in ("a", "b", "c")] + \
        [storming("heavy", 30, 1000, 120, mem_pct=12)]
    shares = login_shares(servers, 8.0, ClientSettings())
    assert abs(sum(shares) - 1) < 1e-9
    assert shares[3] < 0.5 * shares[0], shares
    assert abs(shares[0] - shares[1]) < 1e-9 and abs(shares[1] - shares[2]) < 1e-9
    # Below three-quarters of its memory in use, memory does not count: "heavy" at 70 % used among others at
    # 50 % takes what its count gives it (with memory always counted, it would take nothing).
    servers = [storming(n, 30, 1000, 120, mem_pct=50) for n in ("a", "b", "c")] + \
        [storming("heavy", 30, 1000, 120, mem_pct=30)]
    level = login_shares(servers, 8.0, ClientSettings())
    assert max(level) - min(level) < 1e-9, level


def test_memory_counts_only_against_a_pool_and_at_most_a_third_above_its_level():
    from snmplb.client.balanced import login_shares

    # Two servers are no pool: an agent claiming an empty memory cannot make its peer count as full.
    honest = storming("honest", 30, 1000, 120, mem_pct=20)
    liar = ServerState("liar", 161, {**storming("liar", 30, 1000, 120).values, "lbMemTotal": 2**32 - 1,
                                     "lbMemAvailable": 2**32 - 2}, "", 1.0)
    assert login_shares([honest, liar], 8.0, ClientSettings()) == \
        login_shares([honest, storming("peer", 30, 1000, 120, mem_pct=20)], 8.0, ClientSettings())
    # Two colluding liars among three: the honest server counts at most 4/3 of the pool's level, not billions.
    three = [honest, liar, liar._replace(name="liar2")]
    assert login_shares(three, 8.0, ClientSettings())[0] > 0.05


def test_a_server_claiming_little_memory_in_use_gains_nothing():
    from snmplb.client.balanced import login_shares

    honest = [storming(n, 30, 1000, 120, mem_pct=20) for n in ("a", "b", "c", "d")]
    liar = honest[:3] + [storming("d", 30, 1000, 120, mem_pct=99)]  # claims 1 % in use with 30 sessions
    assert login_shares(liar, 8.0, ClientSettings()) == login_shares(honest, 8.0, ClientSettings())


def test_one_agent_lying_about_its_memory_moves_the_others_loads_no_more_than_an_honest_one():
    from snmplb.client.balanced import memory_loads

    fleet = [storming(f"s{i}", 30, 1000, 120, mem_pct=p) for i, p in enumerate((20, 22, 15, 25))]
    load, w = [32.0, 31.0, 33.0, 30.0, 2.0], [100.0] * 5
    honest = memory_loads(fleet + [storming("fifth", 1, 1000, 120, mem_pct=80)], load, w)
    # The fifth agent publishes 4 TiB of memory, 89 % of it in use, for its one session.
    big = {**fleet[0].values, "lbMemTotal": 2**32 - 1, "lbMemAvailable": (2**32 - 1) * 11 // 100,
           "lbMemAvailablePercent": 11, "lbSessions": 1}
    after = memory_loads(fleet + [ServerState("liar", 161, big, "", 1.0)], load, w)
    for h, a in zip(honest[:4], after[:4]):  # the pool's share of memory in use is a trimmed mean
        assert abs(a - h) <= 0.05 * h, (honest, after)
    assert all(a >= ld for a, ld in zip(after, load))  # memory only ever makes a server fuller
    assert after[4] > 2.0  # it says it is full: it takes less, never more


def test_balanced_in_a_storm_spreads_the_logins_that_share_the_figures_over_the_deficits():
    from snmplb.client.balanced import login_shares

    # 30 logins/s arrive; the figures are 1 s old: about 30 logins since, and 90 to come on these figures.
    servers = [storming("empty", 0, 1000, 600), storming("half", 20, 1000, 600), storming("full", 40, 1000, 600)]
    shares = login_shares(servers, 30.0, ClientSettings())
    assert abs(sum(shares) - 1) < 1e-9
    assert shares[0] > shares[1] > shares[2] > 0.05  # unlike `best`, not every login to the emptiest
    from snmplb.client.balanced import _count

    seen = [_count(x) + 30 * 1.0 / 3 for x in servers]  # as balanced counts, plus the logins since, by capacity
    after = [c + 90 * p for c, p in zip(seen, shares)]  # where the 90 logins leave them
    assert max(after) - min(after) < 0.2 * sum(after) / 3, after  # near level (the margin keeps a little room)
    firsts = collections.Counter(hosts("balanced", servers, ctx(seed))[0] for seed in range(3000))
    for i, name in enumerate(("empty", "half", "full")):
        assert abs(firsts[name] / 3000 - shares[i]) < 0.04, (firsts, shares)


def test_balanced_counts_the_logins_made_since_old_figures_were_taken():
    from snmplb.client.balanced import login_shares

    fresh, stale = storming("fresh", 20, 0, 360), storming("stale", 20, 10_000, 360)  # 12 logins/s in all
    shares = login_shares([fresh, stale], 12.0, ClientSettings())
    assert shares[0] > 2 * shares[1], shares  # "stale" took about 60 logins nobody sees yet


def test_fill_levels_the_servers_within_caps():
    from snmplb.client.balanced import fill

    takes = fill([0.0, 10.0, 50.0], [100.0, 100.0, 200.0], 40.0, [2.0, 2.0, 2.0], z=0.0)
    assert abs(sum(takes) - 40) < 1e-6
    assert abs(takes[0] - 25) < 1e-3 and abs(takes[1] - 15) < 1e-3 and takes[2] < 1e-6  # level 0.25
    capped = fill([0.0, 10.0, 50.0], [100.0, 100.0, 200.0], 40.0, [0.25, 1.0, 1.0], z=0.0)
    assert abs(capped[0] - 10) < 1e-3 and abs(sum(capped) - 40) < 1e-6  # the excess goes on filling the others
    margin = fill([50.0, 100.0], [100.0, 200.0], 30.0, [2.0, 2.0], z=2.0)
    assert margin[1] > 2 * margin[0]  # same level: the bigger server's count varies less, it takes more


def test_balanced_falls_back_to_two_choices_with_agents_older_than_lbloginrate():
    def old(name, sessions):
        values = row(sessions=sessions, users=min(1, sessions))
        del values["lbLoginRate"], values["lbSshConnections"], values["lbInService"]
        return ServerState(name, 161, values, "", 1.0)

    servers = [old("empty", 0), old("half", 20), old("full", 40)]
    firsts = collections.Counter(hosts("balanced", servers, ctx(seed))[0] for seed in range(3000))
    # Two of three drawn: "empty" wins whenever drawn (2/3), "half" when paired with "full" (1/3), "full" never.
    assert firsts["full"] == 0
    assert 1850 < firsts["empty"] < 2150 and 850 < firsts["half"] < 1150, firsts


def test_balanced_counts_capacity_weight():
    big, small = up("big", sessions=30, users=1, weight=200), up("small", sessions=20, users=1, weight=100)
    assert all(hosts("balanced", [big, small], ctx(seed))[0] == "big" for seed in range(50))  # 31/200 < 21/100


def test_balanced_keeps_the_safety_thresholds_with_a_panic_fallback():
    servers = [up("swap", swapping=True), up("hot", load_per_cpu=3.0)] + \
              [up(f"ok{i}", sessions=50, users=1) for i in range(3)]
    for seed in range(200):
        got = hosts("balanced", servers, ctx(seed))
        assert got[0].startswith("ok") and set(got[3:]) == {"swap", "hot"}
    # Less than 30 % of the capacity passes: panic, balance over every eligible server.
    panic = [up("swap", swapping=True), up("hot", load_per_cpu=3.0), up("hot2", load_per_cpu=3.0),
             up("ok", sessions=50, users=1)]
    firsts = collections.Counter(hosts("balanced", panic, ctx(seed))[0] for seed in range(400))
    assert firsts["ok"] < 400 and len(firsts) >= 3


def test_balanced_keeps_a_slow_answering_server_at_its_capacity():
    # Issue 12, Margot: the big desktop (half the lab) answers SNMP in 800 ms, above LB_MAX_RESPONSE_MS.
    # A slow answer is not an absence of capacity: dropping it sent all the logins to the two small ones.
    lab = [up("desk1", sessions=2, users=1), up("desk2", sessions=2, users=1),
           up("desk3", rtt=800.0, sessions=4, users=1, weight=200)]
    fast = [*lab[:2], lab[2]._replace(rtt_ms=1.0)]
    for seed in range(300):  # exactly as if it answered fast
        assert hosts("balanced", lab, ctx(seed)) == hosts("balanced", fast, ctx(seed))
    assert sum(hosts("balanced", lab, ctx(seed))[0] == "desk3" for seed in range(300)) > 150
    # The prototype's rule is unchanged: `thresholded` still skips it.
    assert all(hosts("thresholded", lab, ctx(seed))[0] != "desk3" for seed in range(50))


def test_balanced_never_chooses_a_slow_server_while_the_others_have_room_for_its_share():
    # Rudolfo: one normal server of thirty answers in 800 ms. The rest hold 97 % of the capacity.
    fleet = [up(f"app{i:02}", sessions=20, users=1) for i in range(29)] + [up("slow", rtt=800.0, users=1)]
    assert all(hosts("balanced", fleet, ctx(seed))[0] != "slow" for seed in range(300))
    # ... unless everything else is unsafe (panic mode still lists it) ...
    swamped = [x._replace(values={**x.values, "lbSwapping": 1}) for x in fleet[:29]] + fleet[29:]
    assert any(hosts("balanced", swamped, ctx(seed))[0] == "slow" for seed in range(50))
    # ... or the slow ones hold more than a fifth of the safe capacity (the lab above): they count again.
    lab = [up("a", sessions=4, users=1), up("b", sessions=4, users=1), up("c", sessions=4, users=1),
           up("d", rtt=800.0, users=1)]
    fast = [*lab[:3], lab[3]._replace(rtt_ms=1.0)]
    assert all(hosts("balanced", lab, ctx(seed)) == hosts("balanced", fast, ctx(seed)) for seed in range(300))
    assert sum(hosts("balanced", lab, ctx(seed))[0] == "d" for seed in range(300)) > 100


def test_balanced_slow_starts_a_server_that_just_came_into_service():
    old = [up(f"old{i}", sessions=30, users=1) for i in range(9)]
    new = ServerState("new", 161, {**row(), "lbInService": 30}, "", 1.0)  # empty, in service for 30 s of 300
    firsts = collections.Counter(hosts("balanced", old + [new], ctx(seed))[0] for seed in range(4000))
    # Without slow start it would take twice its share (2/10 of logins); at 10 % weight, at most 2/91.
    assert firsts["new"] < 200, firsts
    no_ramp = collections.Counter(hosts("balanced", old + [new], ctx(seed, slow_start_s=0))[0] for seed in range(4000))
    assert no_ramp["new"] > 600, no_ramp


def test_sampled_mode_polls_k_and_lists_only_what_answered():
    from support import choose
    from snmplb.client.settings import Server

    servers = tuple(Server(f"s{i}") for i in range(10))
    polled_sets = []

    def probe(settings, hedge, usable, deadline):
        polled_sets.append([s.host for s in settings.servers])
        states = [up(s.host, sessions=3 * int(s.host[1:]), users=1) for s in settings.servers]
        assert all(usable(st) for st in states)  # so the hedge is not polled
        return states, None, ""

    settings = ClientSettings(servers=servers, algorithm="balanced", sample=2)
    for seed in range(20):
        polled_sets.clear()
        _, decision, _ = choose(settings, random.Random(seed), "c", probe, deadline=1.0)
        assert len(polled_sets) == 1 and len(polled_sets[0]) == 2
        # Two choices between the sampled two: the one with fewer sessions per capacity first; a server that
        # was not polled is never listed (the README's promise: only servers that answered).
        assert list(decision.hosts) == sorted(polled_sets[0], key=lambda h: int(h[1:]))


def test_sampled_mode_hedges_to_the_rest_when_the_sample_is_dead_or_unusable():
    from support import choose
    from snmplb.client.settings import Server

    servers = tuple(Server(f"s{i}") for i in range(10))
    bad = {"s3": down("s3"), "s7": up("s7", swapping=True), "s5": up("s5", rtt=900.0),
           "s1": up("s1", load_per_cpu=5.0)}
    settings = ClientSettings(servers=servers, algorithm="balanced", sample=2)
    hedged = 0
    for seed in range(60):
        calls, sampled = [], []

        def probe(polled, hedge, usable, deadline):  # the poller's contract: hedge polled if no usable answer
            calls.append(deadline)
            sampled.extend(s.host for s in polled.servers)
            states = [bad.get(s.host) or up(s.host) for s in polled.servers]
            if not any(usable(st) for st in states):
                states += [bad.get(s.host) or up(s.host) for s in hedge]
            return states, None, ""

        _, decision, _ = choose(settings, random.Random(seed), "c", probe, deadline=7.5)
        assert calls == [7.5]  # one poll, under the login's one deadline
        assert decision.hosts[0] not in bad
        assert "s3" not in decision.hosts
        # The rest is polled (and listed) exactly when neither sampled server was usable.
        assert (len(decision.hosts) > 2) == all(h in bad for h in sampled), (seed, sampled, decision.hosts)
        hedged += len(decision.hosts) > 2
    assert hedged >= 3  # 4 unusable of 10: both sampled unusable with probability 6/45, about 8 of 60 seeds


def test_sampled_mode_with_nothing_usable_lists_every_server_in_configured_order():
    from support import choose
    from snmplb.client.settings import Server

    servers = tuple(Server(f"s{i}") for i in range(6))

    def dead_probe(settings, hedge, usable, deadline):  # the deadline passed before the hedge answered
        return [down(s.host) for s in settings.servers], None, ""

    settings = ClientSettings(servers=servers, algorithm="balanced", sample=2, timeout_ms=1000)
    _, decision, _ = choose(settings, random.Random(4), "c", dead_probe, deadline=1.0)
    assert list(decision.hosts) == [s.host for s in servers]
    assert "not polled" in decision.note


def uncounted(**kw) -> dict:
    """``row`` from an agent of before lbLoginsConnecting (revision 202612071900Z): the client estimates the
    logins still connecting from lbSshConnections, lbSessions and lbLoginRate."""
    values = row(**kw)
    del values["lbLoginsConnecting"]
    return values


def test_balanced_counts_logins_still_connecting():
    # 20 ssh connections beyond the sessions, opened within the last 10 s (lbLoginRate 120/min): logins.
    settled = ServerState("settled", 161, {**uncounted(sessions=20, users=1), "lbSshConnections": 20, "lbLoginRate": 120},
                          "", 1.0)
    rushed = ServerState("rushed", 161, {**uncounted(sessions=10, users=1), "lbSshConnections": 30, "lbLoginRate": 120},
                         "", 1.0)
    assert all(hosts("balanced", [rushed, settled], ctx(seed))[0] == "settled" for seed in range(50))


def test_steady_ssh_connections_that_are_not_logins_do_not_count():
    # Issue 12: admins' shells, rsync, monitoring hold ssh connections for long; none was opened in the last
    # 10 s (lbLoginRate 0), so they are not logins in progress, and the server is not fuller for them.
    from snmplb.client.balanced import connecting

    busy = ServerState("busy", 161, {**uncounted(sessions=10, users=1), "lbSshConnections": 30, "lbLoginRate": 0}, "", 1.0)
    plain = ServerState("plain", 161, {**uncounted(sessions=20, users=1), "lbSshConnections": 20}, "", 1.0)
    assert connecting(busy) == 0
    assert all(hosts("balanced", [busy, plain], ctx(seed))[0] == "busy" for seed in range(50))
    # Two logins opened within the last 10 s among the 20 extra connections: two in progress, not 20.
    mixed = ServerState("m", 161, {**uncounted(sessions=10, users=1), "lbSshConnections": 30, "lbLoginRate": 12}, "", 1.0)
    assert connecting(mixed) == 2


def test_without_a_connection_count_logins_in_progress_come_from_the_login_rate():
    # An agent that cannot read its TCP tables publishes lbSshConnections 0: the logins of the last few
    # seconds (lbLoginRate times a login's usual duration) are counted as connecting.
    from snmplb.client.balanced import LOGIN_LAG_S, connecting

    blind = ServerState("b", 161, {**uncounted(sessions=10, users=1), "lbSshConnections": 0, "lbLoginRate": 60}, "", 1.0)
    assert connecting(blind) == 1.0 * LOGIN_LAG_S


def test_the_agents_count_of_logins_connecting_tells_them_from_other_connections():
    # Issue 23 (rise-fall): a login that takes 20 s from its ssh connection to its session was hidden by the
    # 10 s cap above; lbLoginsConnecting (the agent matches each new session to a connection) counts it, and
    # an old rsync never. At most the connections beyond the sessions (a broken count adds nothing more).
    from snmplb.client.balanced import connecting

    values = {**row(sessions=10, users=1), "lbSshConnections": 30, "lbLoginRate": 12}
    slow = ServerState("slow", 161, {**values, "lbLoginsConnecting": 14}, "", 1.0)
    assert connecting(slow) == 14  # 12 of them opened more than 10 s ago: the rate alone says 2
    steady = ServerState("steady", 161, {**values, "lbLoginsConnecting": 0}, "", 1.0)
    assert connecting(steady) == 0  # 20 old connections, and two new ones that never became logins' either
    absurd = ServerState("absurd", 161, {**values, "lbLoginsConnecting": 4_000_000_000}, "", 1.0)
    assert connecting(absurd) == 20
    # Just after the agent started it has not seen the connections already open: the estimate, if more.
    young = ServerState("young", 161, {**values, "lbLoginsConnecting": 0, "lbLoginRateSpan": 4}, "", 1.0)
    assert connecting(young) == 2
    # An agent that counts no connection (tables unreadable): the login rate's estimate, as before.
    blind = ServerState("blind", 161, {**row(sessions=10, users=1), "lbSshConnections": 0, "lbLoginRate": 60,
                                       "lbLoginsConnecting": 0}, "", 1.0)
    assert connecting(blind) == connecting(blind._replace(values={**blind.values, "lbLoginsConnecting": 9}))
    assert all(hosts("balanced", [slow, steady], ctx(seed))[0] == "steady" for seed in range(50))


def test_rows_older_than_the_storm_do_not_take_twice_their_share():
    # Issue 12, item 4: 1400 logins within 20 s; half the agents last refreshed 25 s ago, before the storm
    # (lbLoginRate 0, no session), the other half 1 s ago (10 s of storm: ~35 logins each, 420 logins/min).
    from snmplb.client.balanced import fleet_rate, login_shares

    fresh = [storming(f"f{i}", 35, 1000, 420) for i in range(10)]
    stale = [storming(f"s{i}", 0, 25_000, 0) for i in range(10)]
    fleet = fresh + stale
    assert fleet_rate(fleet) == pytest.approx(20 * 7.0)  # the fresh rows' rate, for the whole fleet
    shares = login_shares(fleet, fleet_rate(fleet), ClientSettings())
    # The stale rows' servers took their share of the storm since (credited by capacity): no one takes
    # twice its share of what is to come.
    assert max(shares) < 1.5 / 20, shares


def test_balanced_with_few_logins_on_the_same_figures_fills_without_margin_counting_this_login():
    # Margot's lab: 17 logins a minute on 3 desktops, fresh figures: about one login shares them. The margin
    # (two standard deviations of a random count) would swamp counts of a few sessions: without it, and
    # with this login counted (+1), the login fills the emptiest after adding it (issue 12).
    lab = [storming("d1", 3, 500, 6), storming("d2", 4, 500, 6), storming("d3", 8, 500, 6, weight=200)]
    firsts = collections.Counter(hosts("balanced", lab, ctx(seed))[0] for seed in range(2000))
    # d1 (4/100 with this login) and d3 (9/200) split it by capacity up to d1's level; d2 (5/100) never.
    assert firsts["d2"] == 0 and 800 < firsts["d1"] < 1200 and 800 < firsts["d3"] < 1200, firsts
    # A storm on the same lab (600 logins/min each): the margin's fill, every server some of the logins.
    storm_lab = [storming("d1", 3, 500, 600), storming("d2", 4, 500, 600), storming("d3", 8, 500, 600, weight=200)]
    assert collections.Counter(hosts("balanced", storm_lab, ctx(seed))[0] for seed in range(2000))["d2"] > 100


@pytest.mark.parametrize("claim", [10**6, 0])
def test_one_fresh_liar_among_stale_honest_rows_does_not_set_the_fleets_rate(claim):
    # Nine honest servers, rows 20 s old, 60 logins a minute each; one agent claims a fresh row with an
    # absurd rate (or none at all, as an agent restarted mid-storm reads). Alone among the fresh rows, it
    # must not stand for the fleet: the rate stays near the honest one, and the honest servers' counts
    # still decide their shares.
    honest = [ServerState(f"h{i}", 161, {**row(sessions=10 + 5 * i, users=1), "lbLoginRate": 60, "lbDataAge": 20_000},
                          "", 1.0) for i in range(9)]
    liar = ServerState("liar", 161, {**row(sessions=10, users=1), "lbLoginRate": claim, "lbDataAge": 0}, "", 1.0)
    from snmplb.client.balanced import fleet_rate, login_shares

    rate = fleet_rate(honest + [liar])
    assert 8.0 <= rate <= 12.0, rate  # 9 x 1/s honest, the liar capped at twice the others' mean
    shares = login_shares(honest + [liar], rate, ClientSettings())
    assert shares[0] > 2 * shares[8], shares  # the emptiest honest server still takes far more than the fullest


def test_the_others_means_are_each_servers_mean_of_the_others_computed_once():
    """``_others_means`` gives, for every server, the mean of the others' rates among a subset, bounded:
    what a mean per server over the others gave, in one sum (linear in the fleet, not quadratic)."""
    import random

    from snmplb.client.balanced import _others_means

    rng = random.Random(3)
    for n in (1, 2, 3, 10, 57):
        values = [rng.uniform(0, 5) for _ in range(n)]
        for among in (range(n), sorted(rng.sample(range(n), max(1, n // 2))), []):
            bound = rng.choice((0.5, 100.0))
            got = _others_means(values, among, bound)
            for i, v in enumerate(values):
                others = [values[j] for j in among if j != i]
                want = min(sum(others) / len(others), bound) if others else v
                assert got[i] == pytest.approx(want, rel=1e-12, abs=1e-12), (n, i)


def restarted(name, sessions, connecting, age_ms=0, weight=100) -> ServerState:
    """A row taken just after its agent (re)started: lbLoginRateSpan 0, so lbLoginRate reads 0 whatever
    arrives; its ssh connections (``connecting`` beyond the sessions) are current."""
    return ServerState(name, 161, {**row(sessions=sessions, users=min(1, sessions), age=age_ms, weight=weight),
                                   "lbLoginRate": 0, "lbLoginRateSpan": 0,
                                   "lbSshConnections": sessions + connecting}, "", 1.0)


def test_a_rate_not_known_yet_is_not_no_logins():
    # Issue 23: a configuration push restarts every agent in a storm; rows 20 s old, every one taken at
    # its agent's first sample. lbLoginRate 0 there means "not known yet": the fleet's rate comes from the
    # logins in progress (5 per server over a login's usual LOGIN_LAG_S), and the logins that decide on
    # these figures spread over the servers instead of piling onto the emptiest.
    from snmplb.client.balanced import LOGIN_LAG_S, fleet_rate, known_rate, login_shares

    fleet = [restarted(f"r{i}", 20 + i, 5, age_ms=20_000) for i in range(10)]
    assert known_rate(fleet[0]) is None
    rate = fleet_rate(fleet)
    assert rate == pytest.approx(10 * 5 / LOGIN_LAG_S)  # read as no logins (0) before
    shares = login_shares(fleet, rate, ClientSettings())
    assert max(shares) < 0.25 and sum(s > 0.02 for s in shares) >= 6, shares  # the emptiest took 63 % before
    assert shares == sorted(shares, reverse=True)  # the emptier still take more


def test_restarted_agents_do_not_set_the_fleets_rate_to_zero():
    # Half the agents restarted a moment ago (fresh rows, rate not known yet), half known, 15 s old, at
    # 60 logins a minute each: the known ones stand for the whole fleet (before: the fresh rows read 0).
    from snmplb.client.balanced import capped_rates, fleet_rate

    known = [storming(f"k{i}", 20, 15_000, 60) for i in range(5)]
    fresh = [restarted(f"r{i}", 20, 0) for i in range(5)]
    assert fleet_rate(known + fresh) == pytest.approx(10.0)
    assert capped_rates(known + fresh) == pytest.approx([1.0] * 10)  # the restarted ones at the fleet's rate


def test_a_short_span_counts_its_own_connections_scaled_to_the_window():
    from snmplb.client.balanced import known_rate

    def with_span(span, per_minute):
        return ServerState("s", 161, {**row(sessions=5, users=1), "lbLoginRate": per_minute,
                                      "lbLoginRateSpan": span}, "", 1.0)

    assert known_rate(with_span(2, 12)) == pytest.approx(1.0)  # 2 connections in 2 s: 1 a second
    assert known_rate(with_span(10, 12)) == pytest.approx(0.2)
    older = ServerState("o", 161, {k: v for k, v in with_span(10, 12).values.items() if k != "lbLoginRateSpan"},
                        "", 1.0)
    assert known_rate(older) == pytest.approx(0.2)  # an agent older than lbLoginRateSpan: the whole window
# -- issue 23: load the sessions do not explain is capacity in use -----------------------------------------------

def _loaded(name: str, per_cpu: float, sessions: int = 0, cpus: int = 8, weight: int = 100, **kw) -> ServerState:
    """A server at ``per_cpu`` load per CPU (its 1- and 5-minute averages alike) with ``sessions``."""
    return up(name, load_per_cpu=per_cpu, sessions=sessions, users=0, cpus=cpus, weight=weight, **kw)


def test_an_empty_server_at_1_7_per_cpu_is_not_first_as_often_as_an_idle_one():
    """Tried as a new user would (issue 23): one server at 1.7 per CPU with no sessions (a backup, a runaway
    process), one idle with no sessions. The agent calls the first busy; `balanced` counted load only above
    LB_MAX_LOAD (2.0) and put it first about half the time (31 of 60 before this change)."""
    servers = [_loaded("busy", 1.7), _loaded("idle", 0.02)]
    assert servers[0].status == "busy" and servers[1].status == "idle"
    first = [hosts("balanced", servers, ctx(seed, f"c{seed}"))[0] for seed in range(60)]
    assert first.count("busy") <= 3, first.count("busy")


def test_a_hog_taking_half_a_servers_cpus_halves_its_share():
    """Ten servers whose load follows their sessions (0.1 per session; 16 to 24 sessions), one of them with a
    hog of 0.5 per CPU on top: that one keeps half its capacity (``cpu_left``); holding half the sessions of a
    typical peer, it is as full as that one and takes at most about half the logins of one (less: the margin of
    ``fill`` weighs more on a smaller capacity) (before: as many as a peer, and more than its
    capacity left: the hog's load was not counted below LB_MAX_LOAD)."""
    from snmplb.client.balanced import cpu_left, fleet_rate, login_shares

    def server(name: str, sessions: int, hog: float = 0.0) -> ServerState:
        s = _loaded(name, round(0.1 * sessions / 8 + hog, 2), sessions)
        return s._replace(values={**s.values, "lbLoginRate": 30})

    fleet = [server(f"s{i}", 16 + i) for i in range(9)] + [server("hog", 10, hog=0.5)]
    left = cpu_left(fleet)
    assert left[-1] == pytest.approx(0.5, abs=0.05) and min(left[:-1]) >= 0.97
    shares = login_shares(fleet, fleet_rate(fleet), ClientSettings())
    peer = shares[4]  # the typical peer: 20 sessions
    assert shares[-1] <= 0.6 * peer, (shares[-1], peer)  # before: the largest share, as the emptiest by count


def test_in_a_storm_a_hog_running_since_before_it_is_counted_whole():
    """Issue 23 (``hogs`` at T = 0 s: 1.33 max/mean against a floor of 1.03): in a storm the sessions per CPU
    are even and their load of minutes is uneven (desktops starting at different times), so the slope of the
    fit came out low and a hog of 0.75 per CPU on a server holding fewer sessions was undercounted. Its
    quarter-hour load has it whole while the storm's sessions hardly show there: it keeps a quarter of its
    capacity. A hog started minutes ago (not yet in the quarter-hour load) is still read from the load of
    minutes."""
    from snmplb.client.balanced import cpu_left

    def server(name: str, sessions: int, minutes: float, quarter: float) -> ServerState:
        s = _loaded(name, minutes, sessions)
        return s._replace(values={**s.values, "lbLoad15": round(quarter * 100 * 8)})

    # 16-22 sessions on 8 CPUs, the load of minutes 0.40-0.60 per CPU and not in order of the sessions (when
    # each server's logins came), the quarter-hour load 0.05-0.10; the hog holds 8 sessions.
    minutes = [0.50, 0.40, 0.60, 0.45, 0.42, 0.58, 0.48, 0.55, 0.52]
    storm = [server(f"s{i}", 16 + (i * 5) % 7, m, 0.05 + 0.005 * i) for i, m in enumerate(minutes)]
    hog = server("hog", 8, 0.75 + 0.25, 0.75 + 0.05)
    left = cpu_left(storm + [hog])
    assert left[-1] == pytest.approx(0.25, abs=0.05) and min(left[:-1]) >= 0.9, left
    # Without the quarter-hour load (it equals the load of minutes): the fit on the load of minutes alone.
    recent = server("recent", 8, 0.75 + 0.25, 0.75 + 0.25)
    flat = [x._replace(values={**x.values, "lbLoad15": x.values["lbLoad5"]}) for x in storm]
    assert cpu_left(flat + [recent])[-1] < 0.6


def test_a_load_common_to_every_server_changes_nothing():
    """A load that does not follow the sessions but is the same everywhere (a fleet-wide daemon) is no
    server's in particular: the shares are those of the same fleet without it."""
    from snmplb.client.balanced import cpu_left, login_shares

    quiet = [_loaded(f"s{i}", 0.02, sessions=10 + 3 * i) for i in range(6)]
    loud = [_loaded(f"s{i}", 0.6, sessions=10 + 3 * i) for i in range(6)]
    assert cpu_left(loud) == [1.0] * 6
    assert login_shares(loud, 0.5, ClientSettings()) == login_shares(quiet, 0.5, ClientSettings())


def test_exact_ties_after_the_first_choice_go_to_the_higher_rating():
    """Three empty servers of the same size: after the drawn first one, an exact tie in sessions per capacity
    goes to the agent's higher lbRating (before: to the configured order). The first choice stays a draw:
    a tie-break that every client shares would herd them (two choices in Rudolfo's storm: 1.137 -> 1.184)."""
    servers = [up("low", sessions=0, users=0, rating=60), up("mid", sessions=0, users=0, rating=75),
               up("high", sessions=0, users=0, rating=90)]
    firsts = set()
    for seed in range(40):
        got = hosts("balanced", servers, ctx(seed))
        firsts.add(got[0])
        rest = got[1:]
        assert rest == sorted(rest, key=lambda h: {"low": 60, "mid": 75, "high": 90}[h], reverse=True), got
    assert firsts == {"low", "mid", "high"}


def test_the_agents_busy_is_where_the_client_sees_no_cpu_left():
    """The thresholds a user sees side by side (the chooser, snmplb status) agree: the agent calls a server busy
    from HealthPolicy.busy_load per CPU, and `balanced` leaves a server whose sessions do not explain that
    load only CPU_LEFT_FLOOR of its capacity. LB_MAX_LOAD (2.0) stays the client's hard limit: above it a
    server is not chosen at all, whatever explains its load."""
    from snmplb.agent.verdict import HealthPolicy
    from snmplb.client import balanced

    assert balanced.FULL_CPU_LOAD == HealthPolicy().busy_load
    idle = [_loaded(f"i{i}", 0.02) for i in range(3)]
    left = balanced.cpu_left(idle + [_loaded("busy", HealthPolicy().busy_load)])
    assert left[:3] == [1.0] * 3 and left[3] == balanced.CPU_LEFT_FLOOR
    assert ClientSettings().max_load == 2.0 and HealthPolicy().busy_load < ClientSettings().max_load
