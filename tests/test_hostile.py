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


# -- issue 22: spoofed SNMPv3 reports (the real-process form is in test_v3_spoof.py) --------------------------

REAL_ENGINE = b"\x80\x00\x1f\x88\x04real-engine"
FORGED_ENGINE = b"\x80\x00\x1f\x88\x04forged"
WRONG_DIGESTS = (1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0)
ROW_TEXT = _text(row()).encode()


@pytest.fixture(scope="module")
def creds() -> Credentials:
    return Credentials(V3_SETTINGS)  # the 1 MiB passphrase hashing, once


def _plain_report(msg_id: int, engine: bytes, oid=(1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)) -> bytes:
    """An unauthenticated report naming ``engine`` with ``oid`` (no key needed: anyone can send it)."""
    usm = ber.enc_seq(ber.enc_str(engine), ber.enc_int(3), ber.enc_int(500), ber.enc_str(b""),
                      ber.enc_str(b""), ber.enc_str(b""))
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(65507), ber.enc_str(b"\x00"), ber.enc_int(3))
    vb = ber.enc_seq(ber.enc_seq(ber.enc_oid(oid), ber.enc_int(1, ber.COUNTER32)))
    pdu = ber.enc_seq(ber.enc_int(0), ber.enc_int(0), ber.enc_int(0), vb, tag=ber.REPORT)
    return ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm), ber.enc_seq(ber.enc_str(engine), ber.enc_str(b""), pdu))


def _signed(creds: Credentials, engine: bytes, msg_id: int, rid: int, tag: int = ber.RESPONSE,
            oid=mib.ROW.instance, value: bytes = ber.enc_str(ROW_TEXT)) -> bytes:
    """An authPriv message as the agent of ``engine`` sends it: encrypted and signed with the user's keys."""
    auth_key, priv_key = creds.keys(engine)
    vb = ber.enc_seq(ber.enc_seq(ber.enc_oid(oid), value))
    scoped = ber.enc_seq(ber.enc_str(engine), ber.enc_str(b""),
                         ber.enc_seq(ber.enc_int(rid), ber.enc_int(0), ber.enc_int(0), vb, tag=tag))
    salt = b"saltsalt"
    encrypted = snmpcodec._aes_cfb(priv_key, snmpcodec._iv(3, 500, salt), scoped, encrypt=True)
    mac_len = snmpcodec.AUTH[creds.auth][1]
    usm = ber.enc_seq(ber.enc_str(engine), ber.enc_int(3), ber.enc_int(500), ber.enc_str(creds.user),
                      ber.enc_str(b"\0" * mac_len), ber.enc_str(salt))
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(65507), ber.enc_str(b"\x03"), ber.enc_int(3))
    msg = ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm), ber.enc_str(encrypted))
    import hmac

    pos = snmpcodec.v3_parse(msg).usm.auth_params.pos
    mac = hmac.new(auth_key, msg, snmpcodec.AUTH[creds.auth][0]).digest()[:mac_len]
    return msg[:pos] + mac + msg[pos + mac_len:]


def _get_ids(creds: Credentials, get: bytes) -> tuple[bytes, int, int]:
    """(engine id, msgID, request id) of a GET the query sent."""
    msg = snmpcodec.v3_parse(get)
    return msg.usm.engine_id, msg.msg_id, snmpcodec.v3_pdu(msg, creds.keys(msg.usm.engine_id)[1]).request_id


def _query(creds: Credentials) -> tuple[V3Query, int]:
    q = V3Query(Server("app1"), creds, random.Random(22), interval=0.25, max_sends=3)
    return q, snmpcodec.v3_parse(q.start(10.0)).msg_id


def test_an_unauthenticated_report_after_discovery_is_only_tentative(creds):
    q, disc = _query(creds)
    engine, mid, rid = _get_ids(creds, q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.001))
    assert engine == REAL_ENGINE
    assert q.on_datagram(_plain_report(mid, REAL_ENGINE, WRONG_DIGESTS), 10.002) is None
    assert not q.done and q.tentative == ("auth", "wrong auth passphrase (wrong digest)")  # before: failed here
    q.on_datagram(_signed(creds, REAL_ENGINE, mid, rid), 10.003)  # the authenticated answer, a ms later
    assert q.result.ok and q.result.failure == "", q.result


def test_the_tentative_reason_is_the_result_when_nothing_better_comes(creds):
    q, disc = _query(creds)
    _, mid, _ = _get_ids(creds, q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.001))
    q.on_datagram(_plain_report(mid, REAL_ENGINE, WRONG_DIGESTS), 10.002)
    q.fail("unreachable", "no answer within 1000 ms")  # the poller, at the deadline
    assert (q.result.failure, q.result.reason) == ("auth", "wrong auth passphrase (wrong digest)")
    q, _ = _query(creds)
    q.fail("unreachable", "no answer within 1000 ms")  # no report heard: unreachable, as before
    assert (q.result.failure, q.result.reason) == ("unreachable", "no answer within 1000 ms")


def test_a_forged_discovery_report_costs_one_get_and_the_real_engine_is_still_tried(creds):
    q, disc = _query(creds)
    forged = q.on_datagram(_plain_report(disc, FORGED_ENGINE), 10.001)  # the attacker is first
    assert _get_ids(creds, forged)[0] == FORGED_ENGINE
    real = q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.002)  # before: ignored (the phase was over)
    engine, mid, rid = _get_ids(creds, real)
    assert engine == REAL_ENGINE and not q.done
    assert q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.003) is None  # a duplicate: nothing new to try
    q.on_datagram(_signed(creds, REAL_ENGINE, mid, rid), 10.004)
    assert q.result.ok and q.engine[0] == REAL_ENGINE and len(q.engines) == 1


def test_the_agents_unknown_engine_id_report_names_the_real_engine(creds):
    """The real discovery report lost, or beaten: the agent's answer to the GET under the forged engine id
    (unknownEngineIDs, unauthenticated, with its own engine id) is enough to find it."""
    q, disc = _query(creds)
    _, forged_mid, _ = _get_ids(creds, q.on_datagram(_plain_report(disc, FORGED_ENGINE), 10.001))
    engine, mid, rid = _get_ids(creds, q.on_datagram(_plain_report(forged_mid, REAL_ENGINE), 10.002))
    assert engine == REAL_ENGINE and q.tentative[1] == "unknown engine id"
    q.on_datagram(_signed(creds, REAL_ENGINE, mid, rid), 10.003)
    assert q.result.ok


def test_an_authenticated_answer_must_come_under_the_engine_id_of_its_request(creds):
    q, disc = _query(creds)
    _, forged_mid, forged_rid = _get_ids(creds, q.on_datagram(_plain_report(disc, FORGED_ENGINE), 10.001))
    _, mid, rid = _get_ids(creds, q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.002))
    assert q.on_datagram(_signed(creds, REAL_ENGINE, forged_mid, forged_rid), 10.003) is None
    assert not q.done  # signed, but for a request sent under another engine id: not its answer
    q.on_datagram(_signed(creds, REAL_ENGINE, mid, rid), 10.004)
    assert q.result.ok


def test_forged_engine_ids_are_bounded_and_none_is_added_once_one_is_authenticated(creds):
    from snmplb.client.serverquery import _MAX_ENGINES

    q, disc = _query(creds)
    gets = [q.on_datagram(_plain_report(disc, FORGED_ENGINE + bytes([i])), 10.001) for i in range(_MAX_ENGINES + 5)]
    assert sum(g is not None for g in gets) == _MAX_ENGINES and len(q.engines) == _MAX_ENGINES
    assert q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.002) is None  # a flood beyond the bound wins
    q, disc = _query(creds)
    _, mid, rid = _get_ids(creds, q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.001))
    again = q.on_datagram(_signed(creds, REAL_ENGINE, mid, rid, tag=ber.REPORT, oid=snmpcodec.NOT_IN_TIME_WINDOW,
                                  value=ber.enc_int(1, ber.COUNTER32)), 10.002)  # authenticated: a resync
    assert again is not None and q.confirmed and not q.done
    assert q.on_datagram(_plain_report(disc, FORGED_ENGINE), 10.003) is None and len(q.engines) == 1


def test_retransmissions_go_to_each_candidate_in_turn(creds):
    q, disc = _query(creds)
    q.on_datagram(_plain_report(disc, FORGED_ENGINE), 10.001)
    q.on_datagram(_plain_report(disc, REAL_ENGINE), 10.002)
    first = _get_ids(creds, q.on_timer(10.251))[0]
    second = _get_ids(creds, q.on_timer(10.501))[0]
    assert (first, second) == (FORGED_ENGINE, REAL_ENGINE)
    assert q.on_timer(10.751) is None and q.next_time is None  # max_sends for the GET phase
