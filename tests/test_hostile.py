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


# -- liars about the fleet-wide figures: every figure `balanced` estimates from all the rows ---------------------

_MiB = 8_000_000  # row()'s lbMemTotal
# Twelve servers in a storm, two sizes, four of them with more than three quarters of their memory in use (so
# that memory counts: memory_loads): name, weight, sessions, memory available %, logins/min, figures' age (ms).
_STORM = [("a", 100, 14, 40, 38, 300), ("b", 100, 18, 35, 42, 800), ("c", 100, 22, 30, 40, 1500),
          ("m1", 100, 10, 23, 41, 600), ("m2", 100, 16, 18, 39, 200), ("d", 100, 20, 45, 37, 1000),
          ("e", 100, 25, 38, 44, 400), ("f", 100, 17, 24, 40, 1300), ("B1", 200, 30, 40, 80, 700),
          ("B2", 200, 42, 33, 78, 1200), ("Bm", 200, 26, 20, 82, 900), ("B3", 200, 36, 42, 79, 500)]
FLEET_WIDE_LIES = {  # each one figure (or a few) that `balanced` pools across the fleet
    "sessions 60": dict(lbSessions=60), "sessions 2000": dict(lbSessions=2000),
    "sessions 2^32-1": dict(lbSessions=2**32 - 1), "ssh connections 2^32-1": dict(lbSshConnections=2**32 - 1),
    "memory all free": dict(lbMemAvailable=_MiB, lbMemAvailablePercent=100),
    "memory 89 % used": dict(lbMemAvailable=_MiB * 11 // 100, lbMemAvailablePercent=11),
    "memory 4 TiB, 89 % used": dict(lbMemTotal=2**32 - 1, lbMemAvailable=(2**32 - 1) * 11 // 100,
                                    lbMemAvailablePercent=11),
    "load 0": dict(lbLoad1=0, lbLoad5=0, lbLoadPerCpu=0),
    "load 20 per CPU, no sessions": dict(lbLoad1=8000, lbLoad5=8000, lbLoadPerCpu=2000, lbSessions=0),
    "load 2^32-1": dict(lbLoad1=2**32 - 1, lbLoad5=2**32 - 1, lbLoadPerCpu=(2**32 - 1) // 4),
    "login rate 0": dict(lbLoginRate=0), "login rate 400/min": dict(lbLoginRate=400),
    "login rate 2^32-1": dict(lbLoginRate=2**32 - 1), "figures 0 s old": dict(lbDataAge=0),
    "rate not known yet": dict(lbLoginRate=0, lbLoginRateSpan=0),
    "rate of a 1 s span, 2^32-1": dict(lbLoginRate=2**32 - 1, lbLoginRateSpan=1),
    "logins connecting 2^32-1": dict(lbLoginsConnecting=2**32 - 1),
    "connections and logins connecting 2^32-1": dict(lbSshConnections=2**32 - 1, lbLoginsConnecting=2**32 - 1),
    "logins connecting 2^32-1 at a rate of 2^32-1": dict(lbSshConnections=2**32 - 1, lbLoginsConnecting=2**32 - 1,
                                                         lbLoginRate=2**32 - 1),
    "figures 30 s old": dict(lbDataAge=30_000), "weight 1": dict(lbWeight=1), "just in service": dict(lbInService=0),
    "all at once": dict(lbSessions=2000, lbLoginRate=2**32 - 1, lbDataAge=30_000, lbMemAvailable=_MiB,
                        lbMemAvailablePercent=100),
}


def _storm_fleet() -> list[ServerState]:
    return [_with(up(n, sessions=s, users=0, weight=w, mem_pct=m, age=a), lbLoginRate=r) for n, w, s, m, r, a in _STORM]


def _twin(name: str, sessions: int = 30) -> ServerState:
    """An honest server a little fuller than the fleet (30 sessions per 100 weight): it takes no login of
    its own, so that what its lies do to the others is all that moves."""
    return _with(up(name, sessions=sessions, users=0, mem_pct=38, age=500), lbLoginRate=40)


def _shares(fleet: list[ServerState]) -> list[float]:
    return login_shares(fleet, fleet_rate(fleet), ClientSettings())


@pytest.mark.parametrize("liars", [1, 2], ids=["one liar", "two colluding"])
@pytest.mark.parametrize("lie", list(FLEET_WIDE_LIES.values()), ids=list(FLEET_WIDE_LIES))
def test_liars_about_fleet_wide_figures_move_the_honest_shares_by_a_few_percent_at_most(lie, liars):
    """The same fleet with the same servers telling the truth, then lying: every honest server's share of the
    logins moves by at most 2.5 points per liar. (The plain mean of the loads let one agent claiming 60
    sessions take a memory-heavy honest server from its share to none; the others' mean as the rate's cap let
    two agents claiming the same storm lift each other's.)"""
    honest = _storm_fleet()
    twins = [_twin(f"liar{i}") for i in range(liars)]
    before = _shares(honest + twins)
    after = _shares(honest + [_with(t, **lie) for t in twins])
    for b, a, s in zip(before, after, honest):
        assert abs(a - b) <= 0.025 * liars, (s.name, b, a)
    assert sum(after[len(honest):]) <= sum(before[len(honest):]) + 1e-9  # claiming to be fuller gains nothing


@pytest.mark.parametrize("liars", [1, 2], ids=["one liar", "two colluding"])
@pytest.mark.parametrize("lie", [dict(lbSessions=0), dict(lbSessions=0, lbLoginRate=0, lbDataAge=0),
                                 dict(lbWeight=200), dict(lbWeight=10000)],
                         ids=["sessions 0", "empty and fresh", "weight 200", "weight 10000"])
def test_a_liar_claiming_room_draws_logins_to_itself_only(lie, liars):
    """A server that claims to be empty, or bigger than it is, draws logins to itself (which no client can
    tell from the truth): at most twice its claimed capacity share, and only from the honest servers' shares,
    none of which grows by more than 1.5 points per liar (a plain mean of the loads pulled down by a claimed
    0 made the memory-heavy servers look emptier: they gained up to 4.5 points)."""
    honest = _storm_fleet()
    twins = [_twin(f"liar{i}") for i in range(liars)]
    before = _shares(honest + twins)
    lying = [_with(t, **lie) for t in twins]
    after = _shares(honest + lying)
    capacity = sum(max(1, s.weight) for s in honest + lying)
    for a, s in zip(after[len(honest):], lying):
        assert a <= 2 * s.weight / capacity + 1e-9, (a, s.weight)
    for b, a, s in zip(before, after, honest):
        assert a <= b + 0.015 * liars, (s.name, b, a)


@pytest.mark.parametrize("liars", [1, 2], ids=["one liar", "two colluding"])
def test_a_liar_about_its_weight_moves_the_other_honest_shares_relative_to_each_other_a_few_percent(liars):
    """An agent claiming twice its weight (200), its count scaled to match so that it still takes no login:
    what its weight does to the fleet-wide figures (the caps, the logins since each row, the rate, the level)
    moves the honest servers' shares relative to each other by at most 2.5 points per liar. A claim far above
    the fleet's sizes makes every honest server's cap (twice its capacity share of the total, the claim
    included) bind: docs/algorithms.md says so, and no client can tell the claim from the truth."""
    honest = _storm_fleet()
    twins = [_twin(f"liar{i}") for i in range(liars)]
    before = _shares(honest + twins)[:len(honest)]
    after = _shares(honest + [_with(t, lbWeight=200, lbSessions=60) for t in twins])[:len(honest)]
    for b, a, s in zip(before, after, honest):
        assert abs(a / sum(after) - b / sum(before)) <= 0.025 * liars, (s.name, b, a)


def test_another_servers_count_never_takes_a_memory_heavy_server_from_its_share_to_none():
    """"m" holds 8 sessions with 76 % of its memory in use, among servers at 74 % with 20 sessions: it counts
    as full as its memory says, relative to the pool's typical load. Another server's count - an honest server
    getting fuller, a liar claiming 60 or 2^32-1 sessions - only takes that server's own logins away (m's share
    grows), and beyond the others' range it moves nothing at all; small changes make small moves (no cliff).
    With the plain mean of the loads as the pool's level, 60 sessions on one server took m from 39 % to none."""
    def m_share(c: int) -> float:
        fleet = [_with(up(n, sessions=k, users=0, mem_pct=p, age=1000), lbLoginRate=40)
                 for n, k, p in (("m", 8, 24), ("a", 20, 26), ("b", 20, 26), ("c", c, 26))]
        return _shares(fleet)[0]

    base = m_share(20)
    assert base > 0.15
    for c in (21, 25, 30, 40, 60, 2000, 2**32 - 1):
        assert m_share(c) >= base - 0.01, (c, m_share(c), base)
    assert m_share(40) == pytest.approx(m_share(60), abs=1e-3) == pytest.approx(m_share(2**32 - 1), abs=1e-3)
    steps = [abs(m_share(c + 1) - m_share(c)) for c in range(0, 80)]
    assert max(steps) <= 0.05, max(steps)
    # The same through decide(): how often m comes first with a liar claiming 2000 sessions.
    fleet = [_with(up(n, sessions=k, users=0, mem_pct=p, age=1000), lbLoginRate=40)
             for n, k, p in (("m", 8, 24), ("a", 20, 26), ("b", 20, 26), ("liar", 2000, 26))]
    assert _first_counts(fleet, 2000).get("m", 0.0) >= base - 0.04


def test_trimmed_mean_drops_two_colluders_among_eight():
    assert trimmed_mean([1.0] * 6 + [1e12, 1e12]) == 1.0 and trimmed_mean([1.0] * 6 + [0.0, 0.0]) == 1.0
    assert trimmed_mean([1.0, 2.0, 3.0, 4.0, 100.0]) == 3.0  # one each end below eight


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
