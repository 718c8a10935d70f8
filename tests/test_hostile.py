"""The red team's findings on the thin client's pure core (issue 10), each as a regression test.

Hostile datagrams through the query state machines, rows that lie within their types, a liar
among honest servers, a row that contradicts itself. The real-process forms of these findings
are in test_hostile_processes.py.
"""

from __future__ import annotations

import random

import pytest

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib
from snmplb.client.algorithms import Context, decide
from snmplb.client.balanced import fleet_rate, login_shares, trimmed_mean
from snmplb.client.serverquery import Credentials, V3Query
from snmplb.client.settings import ClientSettings, Server
from snmplb.client.serverstate import ServerState

from support import report, row, up

V3_SETTINGS = ClientSettings(snmp_version="3", auth_passphrase="auth-secret-1", priv_passphrase="priv-secret-1")


@pytest.mark.parametrize("boots,etime", [(-1, 5), (2**31, 5), (5, -1), (5, 2**31), (2**40, 2**40)])
def test_a_discovery_report_with_out_of_range_boots_or_time_is_ignored(boots, etime):
    q = V3Query(Server("app1"), Credentials(V3_SETTINGS), random.Random(1), interval=0.25, max_sends=3)
    msg_id = snmpcodec.v3_parse(q.start(10.0)).msg_id
    assert q.on_datagram(report(msg_id, boots, etime), 10.01) is None  # no OverflowError, no GET sent
    assert not q.done and q.engine is None
    get = q.on_datagram(report(msg_id, 7, 1234), 10.02)  # the genuine report still works after it
    assert get is not None and q.engine[1:3] == (7, 1234)


def test_negative_msg_id_and_tiny_max_size_are_malformed():
    good = report(9, 1, 1)
    assert snmpcodec.v3_parse(good).msg_id == 9
    for bad in (report(-9, 1, 1), good.replace(ber.enc_int(65507), ber.enc_int(100))):
        with pytest.raises(ber.BerError):
            snmpcodec.v3_parse(bad)


def _text(values: dict[str, int]) -> str:
    return mib.encode_row([values[o.name] for o in mib.ROW_FIELDS])


@pytest.mark.parametrize("field,value", [
    ("lbSessions", 2**55), ("lbSessions", 10**19), ("lbCpuCount", 2**32), ("lbWeight", 10001),
    ("lbRating", 101), ("lbStatus", 2**31), ("lbSwapInPages", 2**64),
])
def test_every_row_field_must_be_within_its_smi_range(field, value):
    good = row(sessions=3, users=1)
    assert mib.decode_row(_text(good)) == good
    assert mib.decode_row(_text({**good, field: value})) is None


@pytest.mark.parametrize("field,value,why", [("lbAdminState", 0, "implausible"), ("lbAdminState", 4, "implausible"),
                                             ("lbSwapping", 3, "implausible"), ("lbStatus", 0, "implausible")])
def test_values_outside_the_enumerations_the_client_acts_on_are_implausible(field, value, why):
    from snmplb.client.serverstate import implausible

    assert why in implausible({**row(), field: value})


def test_a_status_this_client_does_not_know_closes_the_server_but_keeps_its_row():
    from snmplb.client.serverstate import implausible

    newer = _with(up("newer", sessions=0, users=0), lbStatus=max(mib.obj("lbStatus").enums.values()) + 1)
    assert implausible(newer.values) == "" and newer.ok and not newer.eligible
    assert mib.decode_row(_text(newer.values)) == newer.values


def test_balanced_survives_the_largest_legal_session_counts():
    big = [up(f"s{i}", sessions=2**32 - 1 - i, users=0) for i in range(4)]
    for seed in range(20):
        d = decide("balanced", big, Context(ClientSettings(), random.Random(seed)))
        assert d.hosts[0] in {s.name for s in big}


def _with(state: ServerState, **values: int) -> ServerState:
    return state._replace(values={**state.values, **values})


def _first_counts(servers: list[ServerState], n: int = 4000) -> dict[str, float]:
    rng = random.Random(11)
    ctx = Context(ClientSettings(servers=tuple(Server(s.name) for s in servers)), rng)
    counts: dict[str, int] = {}
    for _ in range(n):
        first = decide("balanced", servers, ctx).hosts[0]
        counts[first] = counts.get(first, 0) + 1
    return {k: v / n for k, v in counts.items()}


def _honest_fleet() -> list[ServerState]:
    """Ten servers in a storm: one empty, the rest filling up, every agent seeing ~40 logins/min."""
    fleet = [_with(up("empty", sessions=0, users=0, age=900), lbLoginRate=40)]
    fleet += [_with(up(f"h{i}", sessions=20 + i, users=0, age=100 * i), lbLoginRate=36 + i) for i in range(9)]
    return fleet


@pytest.mark.parametrize("lie", [dict(lbLoginRate=2**32 - 1), dict(lbDataAge=30_000),
                                 dict(lbLoginRate=2**32 - 1, lbDataAge=30_000), dict(lbLoginRate=0)])
def test_one_liar_moves_the_honest_servers_shares_by_a_few_percent_at_most(lie):
    honest = _honest_fleet()
    liar = _with(up("liar", sessions=30, users=0), **{"lbLoginRate": 40, **lie})
    before = login_shares(honest, fleet_rate(honest), ClientSettings())
    fleet = honest + [liar]
    after = login_shares(fleet, fleet_rate(fleet), ClientSettings())
    for b, a, s in zip(before, after, honest):
        assert abs(a - b) <= 0.03, (s.name, b, a)
    # The same through decide(): how often each honest server comes first (the shares, drawn).
    drawn = _first_counts(fleet)
    for b, s in zip(before, honest):
        assert abs(drawn.get(s.name, 0.0) - b * (1 - after[-1])) <= 0.04, (s.name, b, drawn.get(s.name))


def test_trimmed_mean_ignores_one_extreme_value():
    assert trimmed_mean([1.0, 1.0, 1.0, 1e12]) == 1.0
    assert trimmed_mean([5.0, 5.0, 0.0]) == 5.0
    assert trimmed_mean([3.0, 1e12]) == 3.0 and trimmed_mean([]) == 0.0


@pytest.mark.parametrize("status", ["disabled", "draining", "full"])
def test_a_row_that_contradicts_itself_is_read_the_conservative_way(status):
    liar = _with(up("liar", sessions=0, users=0), lbStatus=mib.obj("lbStatus").enums[status])
    assert liar.admin_state == "enabled" and not liar.eligible
    honest = up("honest", sessions=30, users=0)
    for algorithm in ("balanced", "best", "fixed", "random", "sticky", "thresholded", "weighted"):
        d = decide(algorithm, [liar, honest], Context(ClientSettings(), random.Random(3), "c"))
        assert d.hosts == ("honest",), algorithm


def test_fleet_rate_keeps_honest_sums_and_caps_a_storm_nobody_else_sees():
    honest = [_with(up(f"h{i}", sessions=5), lbLoginRate=r) for i, r in enumerate((40, 44, 36, 52))]
    assert fleet_rate(honest) == pytest.approx(172 / 60)  # similar rates: the plain sum
    lab = [_with(up(f"d{i}"), lbLoginRate=r) for i, r in enumerate((0, 0, 12))]
    assert fleet_rate(lab) == pytest.approx(12 / 60)  # a small lab's burst on one desktop: under the floor
    liar = _with(up("liar"), lbLoginRate=2**32 - 1)
    assert fleet_rate(honest + [liar]) <= fleet_rate(honest) + 2 * 52 / 60  # twice the others' mean at most
    assert fleet_rate(lab + [liar]) <= fleet_rate(lab) + 12 / 60  # the floor, when nobody else sees logins
