"""The per-server poll state machine, driven by hand: datagrams in, datagrams out, time as an argument."""

from __future__ import annotations

import random

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib
from snmplb.client.serverquery import V2cQuery, row_from_pdu
from snmplb.client.serverstate import MAX_DATA_AGE_MS, Failure
from snmplb.client.settings import ClientSettings, Server

from support import row

SETTINGS = ClientSettings(community="c0mm")
ROW_TEXT = mib.encode_row([row()[o.name] for o in mib.ROW_FIELDS]).encode()


def reply(rid: int, value: bytes = ber.enc_str(ROW_TEXT), oid=mib.ROW.instance, status: int = 0,
          community: bytes = b"c0mm", extra: bytes = b"") -> bytes:
    vbs = ber.enc_seq(ber.enc_seq(ber.enc_oid(oid), value) + extra)
    pdu = ber.enc_seq(ber.enc_int(rid), ber.enc_int(status), ber.enc_int(0), vbs, tag=ber.RESPONSE)
    return ber.enc_seq(ber.enc_int(1), ber.enc_str(community), pdu)


def new_query() -> tuple[V2cQuery, int]:
    q = V2cQuery(Server("app1"), SETTINGS, random.Random(3), interval=0.25, max_sends=3)
    first = snmpcodec.v2c_parse(q.start(10.0), b"c0mm")
    return q, first.request_id


def test_retransmits_with_fresh_ids_on_schedule_then_stops():
    q, rid = new_query()
    assert q.on_timer(10.1) is None
    second = snmpcodec.v2c_parse(q.on_timer(10.25), b"c0mm").request_id
    third = snmpcodec.v2c_parse(q.on_timer(10.5), b"c0mm").request_id
    assert len({rid, second, third}) == 3
    assert q.on_timer(10.75) is None and q.next_time is None  # max_sends reached
    q.on_datagram(reply(second), 10.6)
    assert q.result.ok and q.result.rtt_ms == 350.0  # timed from the transmission it answers


def test_foreign_stale_and_garbage_datagrams_are_ignored():
    q, rid = new_query()
    for junk in (b"", b"\x30\x03\x02\x01\x01", reply(rid + 1), reply(rid, community=b"other"),
                 reply(rid)[:-3], b"\xff" * 40):
        assert q.on_datagram(junk, 10.01) is None
        assert not q.done
    q.on_datagram(reply(rid), 10.02)
    assert q.result.ok and q.result.values["lbCpuCount"] == 4
    q.on_datagram(reply(rid, status=5), 10.03)  # a late duplicate changes nothing
    assert q.result.ok


def test_errors_in_a_genuine_reply_fail_this_server_with_a_reason_and_its_kind():
    old = row(age=MAX_DATA_AGE_MS + 1000)
    stale = mib.encode_row([old[o.name] for o in mib.ROW_FIELDS]).encode()
    cases = {
        "SNMP error genErr": (Failure.AGENT_ERROR, dict(status=5)),
        "noSuchObject": (Failure.NO_ROW, dict(value=ber.enc_null(ber.NO_SUCH_INSTANCE))),
        "wrong type": (Failure.MALFORMED, dict(value=ber.enc_int(5))),
        "partial": (Failure.MALFORMED, dict(value=ber.enc_str(b"1 2 3"))),
        "OID asked": (Failure.MALFORMED, dict(oid=(1, 3, 6, 1, 2, 1, 1, 3, 0))),
        "implausible": (Failure.IMPLAUSIBLE, dict(value=ber.enc_str(ROW_TEXT.replace(b" 4 ", b" 0 ", 1)))),
        "stale": (Failure.STALE, dict(value=ber.enc_str(stale))),
    }
    for why, (kind, kw) in cases.items():
        q, rid = new_query()
        q.on_datagram(reply(rid, **kw), 10.01)
        assert q.done and not q.result.ok and why in q.result.reason, (why, q.result.reason)
        assert q.result.failure == kind and not q.result.unreachable, (why, q.result)
    q, rid = new_query()
    q.on_datagram(reply(rid, extra=ber.enc_seq(ber.enc_oid((1, 3, 6)), ber.enc_null())), 10.01)
    assert "OID asked" in q.result.reason and q.result.failure == Failure.MALFORMED  # two varbinds, one asked


def test_row_from_pdu_accepts_longer_rows_from_newer_agents():
    pdu = snmpcodec.v2c_parse(reply(1, value=ber.enc_str(ROW_TEXT + b" 99 98")), b"c0mm")
    values, failure, why = row_from_pdu(pdu)
    assert failure == why == "" and values["lbSessionSource"] == 1
