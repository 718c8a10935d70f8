"""The login-storm simulator (bench/storm.py): deterministic, and it drives the real algorithms.

No timing is asserted: these are seeded simulations, so the numbers are exact.
"""

from __future__ import annotations

import sys

from snmplb.lab.fleet import PROJECT

sys.path.insert(0, str(PROJECT / "bench"))
import storm  # noqa: E402

BY_LABEL = {v.label: v for v in storm.VARIANTS}


def test_seeded_runs_repeat_exactly():
    v = BY_LABEL["balanced"]
    assert storm.storm_metrics(storm.rudolfo_fleet, v, 10.0, 3, 400) == \
        storm.storm_metrics(storm.rudolfo_fleet, v, 10.0, 3, 400)


def test_no_algorithm_ever_sends_a_login_to_the_dead_server():
    for v in storm.VARIANTS:
        m = storm.storm_metrics(storm.rudolfo_fleet, v, 10.0, 0, 1400)
        assert m["to_dead"] == 0, v.label


def test_balanced_beats_the_prototype_and_best_in_rudolfos_storm():
    got = {label: storm.storm_metrics(storm.rudolfo_fleet, BY_LABEL[label], 10.0, 0, 1400)
           for label in ("balanced", "thresholded (prototype)", "best")}
    assert got["balanced"]["max_mean"] < 0.8 * got["thresholded (prototype)"]["max_mean"]
    assert got["balanced"]["swapping"] < got["thresholded (prototype)"]["swapping"]
    assert got["best"]["max_mean"] > 3  # herding, as the literature says
    assert got["balanced"]["to_slow"] == 0


def test_slow_start_keeps_the_newcomers_wave_share_near_fair():
    with_ramp = [storm.wave_metrics(BY_LABEL["balanced"], 10.0, s)["new_share"] for s in range(2)]
    without = [storm.wave_metrics(BY_LABEL["balanced, no slow start"], 10.0, s)["new_share"] for s in range(2)]
    assert 0.5 <= sum(with_ramp) / 2 <= 1.5
    assert sum(without) / 2 > sum(with_ramp) / 2


def test_sticky_moves_only_the_dead_servers_clients():
    m = storm.move_metrics(BY_LABEL["sticky"], 0)
    assert m["moved"] == m["ideal"] and m["kept"] == 1.0


def test_spreading_by_login_rate_beats_two_choices_on_stale_figures():
    spread, pairs = BY_LABEL["balanced"], BY_LABEL["balanced, agents without lbLoginRate (two choices)"]
    # The worst case (every agent refreshing at once), where one window's figures are shared by the most.
    for period in (10.0, 30.0):
        a = [storm.storm_metrics(storm.rudolfo_fleet, spread, period, s, 1400, True)["max_mean"] for s in range(4)]
        b = [storm.storm_metrics(storm.rudolfo_fleet, pairs, period, s, 1400, True)["max_mean"] for s in range(4)]
        print(period, a, b)
        assert sum(a) < sum(b), (period, a, b)


def test_no_rule_of_independent_clients_beats_the_blind_window_by_much():
    # The floor the report quotes: synchronized refreshes leave every server a full blind window.
    assert 1.1 < storm.blind_floor(10.0, False, 500) < storm.blind_floor(10.0, True, 500) < 1.25
