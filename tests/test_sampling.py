"""The sampled mode's draw (LB_SAMPLE, LB_SAMPLE_WEIGHTS; issue 12, item 3): in proportion to capacity.

Pure tests of the draw and of the setting, the storm simulator on a fleet of
four sizes, and get_hosts end to end against real snmpd agents: the big
server is polled (and so may be chosen) in proportion to its weight, and the
guarantees of issue 10 still hold (a silent or unusable sample hedges to the rest).
"""

from __future__ import annotations

import collections
import random
import sys
import time

import pytest

from conftest import wait_for
from netfixtures import Silent
from snmplb.adminfile import AdminSettings
from snmplb.client.sampling import inclusion, sample_servers, weight_drift
from support import choose
from snmplb.client.settings import Server, from_env, sample_weights_of
from snmplb.lab.fleet import PROJECT
from support import BUSY, IDLE, down, get_hosts, hosts_of, up

sys.path.insert(0, str(PROJECT / "bench"))
import sample_sizes  # noqa: E402
import storm  # noqa: E402

# -- the draw (pure) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights, k, expected", [
    ([25, 50, 100, 200] * 2, 2, [2 * w / 750 for w in (25, 50, 100, 200)] * 2),
    ([25, 50, 100, 200], 2, [25 / 175, 50 / 175, 100 / 175, 1.0]),  # 2*200/375 > 1: capped, one draw left
    ([100, 100, 400], 2, [0.5, 0.5, 1.0]),  # 2*400/600 > 1: always drawn, the others share one draw
    ([100, 0, 100, 100], 2, [2 / 3, 0.0, 2 / 3, 2 / 3]),  # weight 0: never drawn
    ([0, 5, 0], 2, [0.0, 1.0, 0.0]),  # fewer servers above 0 than draws: those only
    ([1, 1, 1000, 1000], 3, [0.5, 0.5, 1.0, 1.0]),  # two sure ones, in two rounds of capping
])
def test_inclusion_is_k_times_the_capacity_share_capped_at_one(weights, k, expected):
    assert inclusion(weights, k) == pytest.approx(expected)


def test_the_weighted_draw_polls_each_server_with_its_inclusion_probability():
    servers = [f"s{i}" for i in range(8)]
    weights = [25, 25, 50, 50, 100, 100, 200, 400]
    runs = 20_000
    counts: collections.Counter[str] = collections.Counter()
    for seed in range(runs):
        picked, rest = sample_servers(servers, 3, random.Random(seed), weights)
        assert len(picked) == 3 and len(set(picked)) == 3
        assert [s for s in servers if s in picked] == picked and [s for s in servers if s in rest] == rest
        counts.update(picked)
    for s, pi in zip(servers, inclusion(weights, 3)):
        assert abs(counts[s] / runs - pi) < 0.015, (s, counts[s] / runs, pi)


def test_a_uniform_draw_offers_a_big_server_no_more_than_k_over_n_of_the_logins():
    # The bug (issue 12): without weights a 32 GiB server is polled, so may be chosen, as often as a 4 GiB one.
    servers = [f"s{i}" for i in range(16)]
    weights = [25] * 12 + [400] * 4
    big_share = 400 / sum(weights)  # the login share each big server should take: 21 %
    runs = 4000
    uniform = collections.Counter(x for seed in range(runs) for x in sample_servers(servers, 2, random.Random(seed))[0])
    weighted = collections.Counter(x for seed in range(runs)
                                   for x in sample_servers(servers, 2, random.Random(seed), weights)[0])
    assert max(uniform[s] for s in servers[12:]) / runs < 0.75 * big_share  # 2/16: it cannot take its share
    assert min(weighted[s] for s in servers[12:]) / runs > 1.8 * big_share  # 2 x its share: room to balance
    assert max(weighted[s] for s in servers[:12]) / runs < 3 * 25 / 1900  # 2.6 % each, not 12.5 %


def test_equal_or_no_weights_draw_exactly_as_before():
    servers = [f"s{i}" for i in range(10)]
    for seed in range(50):
        before = sorted(random.Random(seed).sample(range(10), 3))
        assert sample_servers(servers, 3, random.Random(seed)) == sample_servers(servers, 3, random.Random(seed),
                                                                                 [100] * 10)
        assert sample_servers(servers, 3, random.Random(seed))[0] == [servers[i] for i in before]


def test_zero_weight_servers_are_left_to_the_hedge_and_k_at_least_n_polls_all():
    servers = ["a", "b", "c", "d"]
    for seed in range(200):
        picked, rest = sample_servers(servers, 2, random.Random(seed), [0, 100, 0, 300])
        assert picked == ["b", "d"] and rest == ["a", "c"]
    assert sample_servers(servers, 4, random.Random(1), [1, 2, 3, 4]) == (servers, [])
    assert sample_servers(servers, 0, random.Random(1), [1, 2, 3, 4]) == (servers, [])
    for seed in range(20):  # all zero: the uniform draw, exactly as without weights
        assert sample_servers(servers, 2, random.Random(seed), [0, 0, 0, 0]) == \
            sample_servers(servers, 2, random.Random(seed))
        assert len(sample_servers(servers, 2, random.Random(seed), [0, 0, 0, 0])[0]) == 2


# -- the setting --------------------------------------------------------------------------------------------


def test_sample_weights_are_parsed_per_host_or_host_and_port():
    s, problems = from_env({"LB_SERVERS": "big small:1161 small:1162 [::1]:5 other",
                            "LB_SAMPLE_WEIGHTS": "big=400, small=50 small:1162=25 [::1]=200"})
    assert problems == []
    assert sample_weights_of(s.servers, s.sample_weights) == [400, 50, 25, 200, 100]


@pytest.mark.parametrize("raw, why", [
    ("big", "is not host=weight"), ("=5", "is not host=weight"), ("big=x", "not a whole number"),
    ("big=-1", "outside 0..10000"), ("big=10001", "outside 0..10000"), ("nowhere=5", "is not in LB_SERVERS"),
    ("big:99=5", "is not in LB_SERVERS"), ("bad!host=5", "is not a host name"), ("big=5 big=7", "listed twice"),
])
def test_a_bad_entry_names_the_variable_and_its_server_counts_as_unlisted(raw, why):
    s, problems = from_env({"LB_SERVERS": "big other", "LB_SAMPLE_WEIGHTS": raw})
    assert len(problems) == 1 and problems[0].startswith("LB_SAMPLE_WEIGHTS: ") and why in problems[0], problems
    assert problems[0].endswith("; skipped")
    assert sample_weights_of(s.servers, s.sample_weights) == ([5, 100] if "twice" in why else [100, 100])


def test_a_huge_sample_weights_value_gives_a_bounded_report():
    _, problems = from_env({"LB_SERVERS": "a", "LB_SAMPLE_WEIGHTS": " ".join(["x!=1"] * 20000)})
    assert len(problems) == 6 and all(len(p) < 200 for p in problems)
    assert problems[-1] == "LB_SAMPLE_WEIGHTS: 19995 more bad entries skipped"


# -- the warning when the entries and the published lbWeight disagree ---------------------------------------


def test_weight_drift_is_reported_only_when_two_answers_prove_it():
    big, small = up("big", weight=400), up("small", weight=100)
    assert weight_drift([big, small], [400, 100]) == ""
    assert weight_drift([big, small], [2, 0.5]) == ""  # only ratios matter to the draw
    assert weight_drift([big, small], [100, 100]) == (  # a fleet of two sizes without LB_SAMPLE_WEIGHTS
        "LB_SAMPLE_WEIGHTS: small publishes lbWeight 100 and is drawn with 100, big lbWeight 400 and 100: set each "
        "server's entry to its lbWeight so that the sample follows capacity (docs/sampling.md)")
    assert weight_drift([big, down("small")], [100, 100]) == ""  # one answer proves nothing
    assert weight_drift([big, up("zero", weight=0)], [100, 100]) == ""
    assert weight_drift([up("a", weight=110), up("b", weight=100)], [100, 100]) == ""  # within 25 %


def test_a_drift_finding_is_news_once_and_again_when_it_changes():
    from snmplb.client.selection import Drift

    config = "a:161=100 b:161=100 big:161=100"
    first = Drift("p", config, (("a:161", 100), ("big:161", 400)))
    news, kept = first.news("")
    assert news and kept.startswith("config ") and "big" not in kept and "400" in kept  # digests, and weights
    assert first.news(kept) == (False, kept)  # the same finding: said already
    other_pair = Drift("p", config, (("b:161", 100), ("big:161", 400)))
    news, kept2 = other_pair.news(kept)
    assert not news and len(kept2.splitlines()) == 4  # another pair of the same fleet: only kept
    assert Drift("p", config, (("big:161", 800), ("a:161", 100))).news(kept2)[0]  # an lbWeight changed
    assert Drift("p", "a:161=100 b:161=100 big:161=400", first.seen).news(kept2)[0]  # the entries changed
    assert Drift("p", config, first.seen).news("junk\n\x00" * 10)[0]  # an unreadable state: said again
    junk = kept.splitlines()[0] + "\nzz \ufffd\n" + "x" * 99 + "\n"
    news, kept3 = first.news(junk)  # a state this did not write (but its configuration line): the junk dropped
    assert not news and kept3.isascii() and "zz" not in kept3 and len(kept3.splitlines()) == 3


# -- the sampled mode's guarantees with weights (issue 10), on tables -------------------------------------------


def test_a_heavy_sample_that_is_dead_or_unusable_hedges_to_the_rest():
    servers = tuple(Server(f"s{i}") for i in range(8))
    bad = {"s0": down("s0"), "s1": up("s1", swapping=True), "s2": up("s2", rtt=900.0), "s3": up("s3", load_per_cpu=5)}
    weights = " ".join(f"s{i}=1000" for i in range(4))  # the bad four hold almost all of the draw
    settings, problems = from_env({"LB_SERVERS": " ".join(s.host for s in servers), "LB_SAMPLE": "2",
                                   "LB_SAMPLE_WEIGHTS": weights})
    assert not problems
    hedged = 0
    for seed in range(100):
        def probe(polled, hedge, usable, deadline):  # the poller's contract: hedge polled if no usable answer
            states = [bad.get(s.host) or up(s.host) for s in polled.servers]
            if not any(usable(st) for st in states):
                states += [bad.get(s.host) or up(s.host) for s in hedge]
            return states, None, ""

        _, decision, _ = choose(settings, random.Random(seed), "c", probe, deadline=1.0)
        assert decision.hosts[0] not in bad and "s0" not in decision.hosts
        hedged += len(decision.hosts) > 2
    assert hedged > 80  # a sample of two bad ones nearly always: the rest was polled


# -- the storm simulator: four sizes, LB_SAMPLE=2, fresh figures ------------------------------------------------


@pytest.mark.storm
def test_the_weighted_draw_balances_four_sizes_where_the_uniform_one_swaps():
    variant = storm.Variant("b", "balanced", sample=2)
    before = [sample_sizes.metrics(sample_sizes.HintedSim(sample_sizes.four_sizes_fleet(), variant, 0.0, seed))
              for seed in range(3)]
    after = [sample_sizes.metrics(sample_sizes.HintedSim(sample_sizes.four_sizes_fleet(), variant, 0.0, seed,
                                                         hints=True)) for seed in range(3)]
    print(before, after)
    assert min(m["max_mean"] for m in before) > 1.5 and min(m["swapping"] for m in before) >= 4
    assert max(m["max_mean"] for m in after) <= 1.34 and sum(m["swapping"] for m in after) <= 1


# -- get_hosts end to end, real agents -------------------------------------------------------------------------
# (Where entries disagree with lbWeight, get_hosts keeps the finding: in the test's own directory, never /run.)


def test_get_hosts_polls_a_big_server_in_proportion_to_its_weight(fleet):
    big = fleet.add("big", IDLE, AdminSettings(weight=900))
    small = [fleet.add(f"small{i}", IDLE) for i in range(8)]
    servers = " ".join(i.address for i in [*small, big])
    runs = 24
    # No state can be kept (its directory's parent is missing): the drift is said at every login, the fallback.
    nowhere = str(fleet.base / "missing" / "state")
    for mode, env in (("uniform", {}), ("weighted", {"LB_SAMPLE_WEIGHTS": f"{big.host}=900"})):
        clean = with_big = 0
        for seed in range(runs):
            r = get_hosts(servers, LB_SAMPLE="2", LB_SEED=str(seed), LB_TIMEOUT_MS="5000", SNMPLB_STATE_DIR=nowhere,
                          **env)
            got = hosts_of(r)
            assert got, r.stderr
            if mode == "weighted":
                assert r.stderr == ""  # the entries agree with what the agents publish
            if len(got) != 2:
                # An agent slower than the sample's 50 ms wait on this shared machine: the other was cut, or
                # the rest was polled (hedge). The timing rules are tested elsewhere; this run says nothing
                # about the draw.
                continue
            clean += 1
            with_big += big.host in got
            if mode == "uniform" and big.host in got:  # two sizes answered: the missing entries are reported
                assert f"LB_SAMPLE_WEIGHTS: {got[0] if got[0] != big.host else got[1]} publishes lbWeight 100 " \
                       f"and is drawn with 100, {big.host} lbWeight 900 and 100" in r.stderr, r.stderr
        assert clean >= runs // 2, (mode, clean)
        if mode == "weighted":
            assert with_big == clean  # 2 * 900 / 1700 > 1: the big server is in every sample
        else:
            assert with_big <= 0.6 * clean, (with_big, clean)  # 2 of 9: about 5 of 24


def test_get_hosts_hedges_past_a_heavy_silent_sample_within_the_deadline(fleet):
    live = [fleet.add(f"live{i}", IDLE) for i in range(3)]
    silent = [Silent(f"127.0.0.8{i}") for i in range(2)]
    try:
        servers = " ".join([s.address for s in silent] + [i.address for i in live])
        weights = " ".join(f"127.0.0.8{i}=1000" for i in range(2))  # the silent two are nearly always the sample
        for seed in range(6):
            t0 = time.monotonic()
            r = get_hosts(servers, LB_SAMPLE="2", LB_SAMPLE_WEIGHTS=weights, LB_SEED=str(seed), LB_TIMEOUT_MS="6000",
                          SNMPLB_STATE_DIR=str(fleet.base / "run"))
            took = time.monotonic() - t0
            got = hosts_of(r)
            assert got and set(got) <= {i.host for i in live}, (seed, got, r.stderr)
            assert took < 3.0, took  # liveness: the hedge, not the 6 s deadline
    finally:
        for s in silent:
            s.stop()


def test_get_hosts_hedges_past_a_heavy_sample_that_fails_the_thresholds(fleet):
    busy = [fleet.add(f"busy{i}", BUSY) for i in range(2)]
    idle = [fleet.add(f"idle{i}", IDLE) for i in range(3)]
    servers = " ".join(i.address for i in busy + idle)
    weights = " ".join(f"{b.host}=1000" for b in busy)
    for seed in range(6):
        got = hosts_of(get_hosts(servers, LB_SAMPLE="2", LB_SAMPLE_WEIGHTS=weights, LB_SEED=str(seed),
                                 LB_TIMEOUT_MS="6000", SNMPLB_STATE_DIR=str(fleet.base / "run")))
        assert got[0] in {i.host for i in idle}, (seed, got)


def test_get_hosts_says_a_weight_drift_once_per_change_not_at_every_login(fleet, tmp_path):
    """Two sizes without LB_SAMPLE_WEIGHTS: most logins' samples hold both and prove the drift. get_hosts
    is a new process at every login; it says the finding once, then again only when it changes."""
    big = [fleet.add(f"big{i}", IDLE, AdminSettings(weight=300)) for i in range(2)]
    small = [fleet.add(f"small{i}", IDLE) for i in range(2)]
    servers = " ".join(i.address for i in [*small, *big])
    state = tmp_path / "run" / "snmplb"
    (tmp_path / "run").mkdir(mode=0o755)
    published = {i.host: 300 for i in big} | {i.host: 100 for i in small}

    def logins(seeds: range, entries: dict[str, int] | None = None) -> tuple[int, int]:
        """(logins whose answers prove a drift, logins that said it), with LB_SAMPLE_WEIGHTS ``entries``"""
        env = {"LB_SAMPLE_WEIGHTS": " ".join(f"{h}={w}" for h, w in entries.items())} if entries else {}
        proved = said = 0
        for seed in seeds:
            r = get_hosts(servers, LB_SAMPLE="2", LB_SEED=str(seed), LB_TIMEOUT_MS="5000",
                          SNMPLB_STATE_DIR=str(state), **env)
            got = hosts_of(r)
            assert got, r.stderr
            ratios = [published[h] / (entries or {}).get(h, 100) for h in got]
            proved += max(ratios) > 1.25 * min(ratios)
            said += r.stderr.count("LB_SAMPLE_WEIGHTS:")
        return proved, said

    proved, said = logins(range(20))
    assert proved >= 5 and said == 1, (proved, said)  # before: said at every one of the `proved` logins
    assert logins(range(20, 30)) == (logins(range(20, 30))[0], 0)  # the same finding: not again
    assert state.stat().st_mode & 0o777 == 0o755 and (state / "get_hosts-drift").stat().st_mode & 0o777 == 0o600
    kept = (state / "get_hosts-drift").read_text()
    assert not any(i.host in kept for i in big + small)  # digests, not names
    # A changed finding is said again, once: other (still wrong) entries...
    wrong = {big[0].host: 300}
    proved, said = logins(range(30, 50), wrong)
    assert proved >= 2 and said == 1, (proved, said)
    # ...and a server that publishes another lbWeight.
    big[0].set_admin(AdminSettings(weight=600))
    published[big[0].host] = 600
    assert wait_for(lambda: logins(range(50, 62), wrong)[1] == 1, timeout=30, step=0.5)
    assert logins(range(62, 72), wrong)[1] == 0
    # A state directory that is a symbolic link, or not root's own, is not trusted: said at every login.
    state.rename(tmp_path / "real")
    state.symlink_to(tmp_path / "real")
    proved, said = logins(range(20))
    assert said == proved >= 5, (proved, said)
    state.unlink()
    state.mkdir()
    state.chmod(0o777)  # writable by anyone: anyone could have written it
    proved, said = logins(range(20))
    assert said == proved >= 5, (proved, said)
