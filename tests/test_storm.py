"""The login-storm simulator (bench/storm.py): deterministic, and it drives the real algorithms.

No timing is asserted: these are seeded simulations, so the numbers are exact. Runs are computed
once per pytest session (the ``runs`` fixture) and shared by the tests that compare them.
"""

from __future__ import annotations

import statistics
import sys

import pytest

from snmplb.lab.fleet import PROJECT

sys.path.insert(0, str(PROJECT / "bench"))
import storm  # noqa: E402

BY_LABEL = storm.BY_LABEL


class Runs:
    """Seeded scenario runs, each computed at most once per session."""

    def __init__(self) -> None:
        self._done: dict[tuple, dict] = {}

    def one(self, key: str, label: str, period: float, seed: int, synchronized: bool = False) -> dict:
        job = (key, label, period, seed, synchronized)
        if job not in self._done:
            self._done[job] = storm.scenario_metrics(storm.SCENARIO[key], BY_LABEL[label], period, seed, synchronized)
        return self._done[job]

    def mean(self, key: str, label: str, period: float, seeds: int, metric: str = "max_mean") -> float:
        return statistics.fmean(self.one(key, label, period, s)[metric] for s in range(seeds))


@pytest.fixture(scope="session")
def runs() -> Runs:
    return Runs()


def test_seeded_runs_repeat_exactly():
    v = BY_LABEL["balanced"]
    assert storm.storm_metrics(storm.rudolfo_fleet, v, 10.0, 3, 400) == \
        storm.storm_metrics(storm.rudolfo_fleet, v, 10.0, 3, 400)


def test_no_algorithm_ever_sends_a_login_to_the_dead_server(runs):
    for v in storm.VARIANTS:
        assert runs.one("rudolfo", v.label, 10.0, 0)["to_dead"] == 0, v.label


def test_no_login_goes_to_a_server_while_it_is_silent(runs):
    # big00 answers nothing from 20 s to 80 s of the storm; to_dead counts the logins sent to it then.
    for label in ("balanced", storm.TWO_CHOICES, "sticky"):
        assert runs.one("silent", label, 10.0, 0)["to_dead"] == 0, label


def test_balanced_beats_the_prototype_and_best_in_rudolfos_storm(runs):
    got = {label: runs.one("rudolfo", label, 10.0, 0) for label in ("balanced", "thresholded (prototype)", "best")}
    assert got["balanced"]["max_mean"] < 0.8 * got["thresholded (prototype)"]["max_mean"]
    assert got["balanced"]["swapping"] < got["thresholded (prototype)"]["swapping"]
    assert got["best"]["max_mean"] > 3  # herding, as the literature says
    # The slow server (800 ms answers, 100 of 2900 weight): the others have room for its share, never chosen.
    assert got["balanced"]["to_slow"] == 0


def test_slow_start_keeps_the_newcomers_wave_share_near_fair():
    with_ramp = [storm.wave_metrics(BY_LABEL["balanced"], 10.0, s)["new_share"] for s in range(2)]
    without = [storm.wave_metrics(BY_LABEL["balanced, no slow start"], 10.0, s)["new_share"] for s in range(2)]
    assert 0.5 <= sum(with_ramp) / 2 <= 1.5
    assert sum(without) / 2 > sum(with_ramp) / 2


def test_sticky_moves_only_the_dead_servers_clients():
    m = storm.move_metrics(BY_LABEL["sticky"], 0)
    assert m["moved"] == m["ideal"] and m["kept"] == 1.0


def test_spreading_by_login_rate_beats_two_choices_on_stale_figures(runs):
    # The worst case (every agent refreshing at once), where one window's figures are shared by the most.
    for period in (10.0, 30.0):
        a = [runs.one("rudolfo", "balanced", period, s, True)["max_mean"] for s in range(4)]
        b = [runs.one("rudolfo", storm.TWO_CHOICES, period, s, True)["max_mean"] for s in range(4)]
        assert sum(a) < sum(b), (period, a, b)


def test_no_rule_of_independent_clients_beats_the_blind_window_by_much():
    # The floor the report quotes: synchronized refreshes leave every server a full blind window.
    assert 1.1 < storm.blind_floor(10.0, False, 500) < storm.blind_floor(10.0, True, 500) < 1.25


def test_a_slow_answering_desktop_does_not_make_balanced_worse_than_random_in_margots_lab(runs):
    # Issue 12, item 1: the big desktop answering in 800 ms (above LB_MAX_RESPONSE_MS) was dropped, and its
    # share went to the other two: 2.17 max/mean at T = 10 s, against random's 1.61 (100 seeds).
    for period in (0.0, 10.0):
        own = runs.mean("margot-slow-big", "balanced", period, 100)
        others = {label: runs.mean("margot-slow-big", label, period, 100)
                  for label in ("random", "weighted", storm.TWO_CHOICES)}
        # Far below random and weighted; level with two choices (docs/balance.md: within 0.01 at 100 seeds).
        assert own < min(others["random"], others["weighted"]) - 0.2, (period, own, others)
        assert own <= others[storm.TWO_CHOICES] + 0.03, (period, own, others)


def test_a_slow_answer_changes_nothing_for_balanced(runs):
    # The small desktop or the big one answering in 800 ms: the same logins as when all answer fast.
    for seed in range(5):
        same = runs.one("margot", "balanced", 10.0, seed)
        for key in ("margot-slow", "margot-slow-big"):
            got = runs.one(key, "balanced", 10.0, seed)
            assert got["max_mean"] == same["max_mean"] and got["to_dead"] == 0, (key, seed)


def test_rows_older_than_a_flash_crowd_do_not_make_balanced_worse_than_sticky(runs):
    # Issue 12, item 4: 1400 logins in 20 s, rows up to 30 s old taken before the storm (rate 0).
    own = runs.mean("flash", "balanced", 30.0, 2)
    assert own < runs.mean("flash", "sticky", 30.0, 2), own


def test_agents_restarted_in_the_storm_do_not_make_balanced_worse_than_sticky(runs):
    # Issue 23: every agent restarted at 30 s; rows 30 s old taken at each agent's first sample read
    # lbLoginRate 0 (lbLoginRateSpan 0: not known yet). Read as "no logins": 1.74 with 13.4 servers swapping
    # (10 seeds); now at most 1.30 and better than sticky.
    own = runs.mean("restart", "balanced", 30.0, 2)
    assert own <= 1.30 and own < runs.mean("restart", "sticky", 30.0, 2), own
    assert runs.mean("restart", "balanced", 30.0, 2, "swapping") < 1


def test_steady_non_login_ssh_connections_do_not_unbalance_the_storm(runs):
    # Issue 12: 0-20 admin/rsync/monitoring connections per server were counted as logins in progress.
    # (With the previous rule: 1.28 max/mean against 1.14 without them, 10 seeds.)
    assert runs.mean("background-ssh", "balanced", 10.0, 2) < 1.25


def test_logins_that_take_20_s_to_become_sessions_are_counted_while_they_connect(runs):
    # Issue 23: arrivals rising then falling, sessions showing 5-20 s after the choice. Counting only the
    # connections of the last 10 s hid the slower logins: 1.09 / 1.16 at T = 0 / 10 s against two choices'
    # 1.06 / 1.13 (10 seeds). The agents' lbLoginsConnecting counts them: within 0.02 of two choices.
    for period in (0.0, 10.0):
        own = runs.mean("rise-fall", "balanced", period, 3)
        assert own <= runs.mean("rise-fall", storm.TWO_CHOICES, period, 3) + 0.02, (period, own)


def test_cpu_hogs_running_since_before_the_storm_are_counted_with_fresh_figures(runs):
    # Issue 23: four servers with hogs of 0.25-0.75 per CPU; max/mean over the capacity the hogs leave. At
    # T = 0 s the load of minutes alone undercounted the hogs: 1.33 (10 seeds), worse than two choices' 1.28
    # (which weighs by the same estimate, and gains as much from the quarter-hour fit).
    own = runs.mean("hogs", "balanced", 0.0, 3)
    assert own < 1.2 and own <= runs.mean("hogs", storm.TWO_CHOICES, 0.0, 3) + 0.02, own


def test_the_second_model_runs_the_same_scenarios_and_repeats_exactly():
    import storm_alt

    sc = storm.SCENARIO["margot-slow-big"]
    a = [storm_alt.metrics(sc, BY_LABEL["balanced"], 10.0, s) for s in range(5)]
    assert a == [storm_alt.metrics(sc, BY_LABEL["balanced"], 10.0, s) for s in range(5)]
    assert all(m["to_dead"] == 0 for m in a)


def test_memory_keeps_more_servers_out_of_swap_in_a_working_day_than_placement_by_counts(runs):
    # Issue 12, item 2: an hour of logins and logouts after the morning storm, lognormal session memory,
    # the fleet's memory about 80 % used. Placement by true session counts leaves servers of big sessions
    # swapping; `balanced` reads their memory in use (memory_loads). Totals over 6 seeds, T = 10 s: 5 against
    # 18 (without memory_loads, 2.8 a run over 10 seeds against 1.3).
    seeds = range(6)
    own = sum(runs.one("day", "balanced", 10.0, s)["swapping"] for s in seeds)
    by_counts = sum(runs.one("day", storm.ORACLE, 10.0, s)["swapping"] for s in seeds)
    assert own < by_counts, (own, by_counts)
    assert all(runs.one("day", "balanced", 10.0, s)["to_dead"] == 0 for s in seeds)


# The reconnect wave (issue 19): the simulator builds each server's answer to a returning user's question.

def _small_sim(affinity: bool) -> "storm.Sim":
    """Three live servers at T = 0, user u1's session waiting on the second: no storm, just the bookkeeping."""
    fleet = [storm.SimServer(f"s{i}", 8, 32768, 100) for i in range(3)]
    sim = storm.Sim(fleet, BY_LABEL["balanced"], 0.0, 0)
    sim.users, sim.affinity = True, affinity
    for name, users in (("s0", ["u0"]), ("s1", ["u1", "u2"]), ("s2", [])):
        server = sim.by_name[name]
        for u in users:
            server.clients.add(u)
            server.mem_of[u] = 700.0
            server.steady += 1
            server.steady_mem += 700.0
    sim.blip(["u1"])
    for s in fleet:
        s.step(sim.t)
        sim._publish(s, sim.t)
    return sim


def test_each_servers_answer_is_what_its_agent_would_answer_from_the_same_sample():
    from snmplb import affinity
    from snmplb.agent.usersessions import Answers

    sim = _small_sim(True)
    key = b"a-site-key-of-sixteen-or-more"
    for server in sim.fleet:
        answers = Answers(key, server.user_table())
        for user in ("u0", "u1", "u2", "nobody"):
            asked = affinity.question(key, user, b"\x01" * affinity.NONCE_SIZE)
            real = {col: answers.answer(col, asked) for col in ("lbUserSessions", "lbUserWaiting")}
            assert server.user_answer(user) == real, (server.name, user)
    assert sim.by_name["s1"].user_answer("u1") == {"lbUserSessions": 1, "lbUserWaiting": 1}
    assert sim.by_name["s1"].user_answer("u2") == {"lbUserSessions": 1, "lbUserWaiting": 0}
    # The poll's state carries them beside the row, as serverquery.row_from_pdu puts them.
    state = sim.asked(sim.by_name["s1"], "u1")
    assert (state.user_sessions, state.user_waiting, state.takes_reconnect) == (1, 1, True)
    assert sim.asked(sim.by_name["s2"], "u1").user_sessions == 0


def test_the_answers_are_those_of_the_last_published_sample_and_a_session_counts_once_it_shows():
    sim = _small_sim(True)
    s2 = sim.by_name["s2"]
    sim._start(s2, "u9")  # a login now: its session shows on logind 3-8 s later
    sim._publish(s2, sim.t)
    assert s2.user_answer("u9")["lbUserSessions"] == 0
    sim.t = 10.0
    assert s2.user_answer("u9")["lbUserSessions"] == 0  # not republished yet: the old sample's answer
    sim._publish(s2, sim.t)
    assert s2.user_answer("u9")["lbUserSessions"] == 1


def test_a_returning_user_goes_home_with_affinity_and_resumes_the_waiting_session():
    sim = _small_sim(True)
    mem_before = {s.name: s.steady_mem for s in sim.fleet}
    for _ in range(20):  # s1 is the fullest: balanced alone would rarely choose it
        sim.coming_back.add("u1")
        sim.by_name["s1"].waiting.add("u1")
        assert sim.reconnect("u1") == "s1"
    assert all(r[2:] == ("s1", True) for r in sim.returns)
    assert "u1" not in sim.by_name["s1"].waiting and not sim.coming_back
    assert {s.name: s.steady_mem for s in sim.fleet} == mem_before and all(not s.ramping for s in sim.fleet)


def test_without_affinity_a_returning_user_chooses_afresh_and_the_old_session_keeps_its_memory():
    sim = _small_sim(False)
    where = sim.reconnect("u1")
    assert where != "s1"  # s1 holds two sessions, the others one and none: balanced takes another at T = 0
    assert sim.returns == [(0.0, "u1", where, False)]
    assert "u1" in sim.by_name["s1"].waiting and sim.by_name["s1"].steady_mem == 1400.0  # left behind
    assert "u1" in sim.by_name[where].clients and len(sim.by_name[where].ramping) == 1  # a new session
    assert sum(len(s.clients) for s in sim.fleet) == 4  # three in use, one left waiting: both held


def test_the_reconnect_wave_sends_the_returning_users_home_only_with_affinity():
    with_aff = storm.reconnect_metrics(BY_LABEL["balanced"], 10.0, 0, True)
    without = storm.reconnect_metrics(BY_LABEL["balanced"], 10.0, 0, False)
    assert with_aff["home"] == 1.0 and with_aff["left_waiting"] == 0
    assert without["home"] < 0.2 and without["left_waiting"] == round(560 * (1 - without["home"]))
    assert with_aff["max_mean"] <= without["max_mean"] and with_aff["swapping"] <= without["swapping"]
    assert with_aff["to_dead"] == without["to_dead"] == 0


def test_cpu_hogs_leave_their_servers_the_logins_of_the_capacity_left(runs):
    # Issue 23: four servers with CPU hogs (0.25-0.75 per CPU); max/mean over the capacity the hogs leave.
    # Before `balanced` counted the load its sessions do not explain (cpu_left), the hogs' servers took their
    # whole weight's share: 3.8 at T = 10 s (3 seeds).
    assert runs.one("hogs", "balanced", 10.0, 0)["max_mean"] < 1.4
    assert runs.one("hogs", "balanced", 10.0, 0)["to_dead"] == 0


def test_the_wave_reports_the_newcomer_against_both_references():
    # The newcomer's share of the wave over its capacity share (new_share) and over the share that brings it
    # to the fleet's level (new_level_share): in Rudolfo's fleet the second is about 3.3 times the first.
    m = storm.wave_metrics(BY_LABEL["balanced"], 10.0, 0)
    assert 3.0 < m["new_share"] / m["new_level_share"] < 3.6, m
