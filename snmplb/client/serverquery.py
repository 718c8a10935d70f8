"""One server's poll as a sans-IO state machine: datagrams in, datagrams out, time as an argument.

A query sends a GET of lbRow, retransmits on its timer, and accepts a reply
only if it carries a request id it sent (each transmission has its own), the
right community or USM credentials, a Response PDU without error, and exactly
the OID it asked with a decodable, plausible row. Anything else is ignored,
or ends the query with a reason when it can only mean this server is wrong
(an SNMP error, a partial row, a USM report). The poller drives these; it
owns the socket and the clock.
"""

from __future__ import annotations

import random

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib
from snmplb.client.ber import BerError
from snmplb.client.settings import ClientSettings, Server
from snmplb.client.serverstate import Failure, ServerState, judge

ROW_OID = mib.ROW.instance
_NO_VALUE = (ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW)
_ERRORS = {1: "tooBig", 2: "noSuchName", 5: "genErr", 6: "noAccess"}


def row_from_pdu(pdu: snmpcodec.Pdu) -> tuple[dict[str, int] | None, str, str]:
    """(values, "", "") for a good lbRow response, else (None, its ``Failure`` kind, reason)."""
    if pdu.tag != ber.RESPONSE:
        return None, Failure.MALFORMED, f"unexpected PDU {pdu.tag:#x}"
    if pdu.error_status:
        return None, Failure.AGENT_ERROR, f"SNMP error {_ERRORS.get(pdu.error_status, pdu.error_status)}"
    if len(pdu.varbinds) != 1 or pdu.varbinds[0][0] != ROW_OID:
        return None, Failure.MALFORMED, "reply does not carry the OID asked"
    value = pdu.varbinds[0][1]
    if value.tag in _NO_VALUE:
        return None, Failure.NO_ROW, "no snmplb row on this agent (noSuchObject: agent not installed or not in the view)"
    if value.tag != ber.OCTET_STRING or not isinstance(value.value, bytes):
        return None, Failure.MALFORMED, "lbRow of the wrong type"
    values = mib.decode_row(value.value.decode("ascii", "replace"))
    if values is None:
        return None, Failure.MALFORMED, "partial, garbled or out-of-range row"
    failure, reason = judge(values)
    return (None, failure, reason) if failure else (values, "", "")


class _Sent:
    """One transmission: when, and the ids a reply to it must carry."""

    __slots__ = ("at", "request_id", "msg_id")

    def __init__(self, at: float, request_id: int, msg_id: int = 0) -> None:
        self.at, self.request_id, self.msg_id = at, request_id, msg_id


class Query:
    """Base: the retransmission schedule and the result."""

    def __init__(self, server: Server, rng: random.Random, interval: float, max_sends: int) -> None:
        self.server = server
        self.rng = rng
        self.interval = interval
        self.max_sends = max_sends
        self.sent: list[_Sent] = []
        self.result: ServerState | None = None
        self.next_time: float | None = None

    @property
    def done(self) -> bool:
        return self.result is not None

    def fail(self, failure: str, reason: str) -> None:
        """End the query without a row: ``failure`` (a ``Failure`` kind) and ``reason`` (its words)."""
        if self.result is None:
            self.result = ServerState.failed(self.server.host, self.server.port, failure, reason)
            self.next_time = None

    def succeed(self, values: dict[str, int], rtt: float) -> None:
        self.result = ServerState(self.server.host, self.server.port, values, "", round(rtt * 1000, 2))
        self.next_time = None

    def finish(self, pdu: snmpcodec.Pdu, rtt: float) -> None:
        """End the query with a genuine reply: its row, or why it is unusable."""
        values, failure, reason = row_from_pdu(pdu)
        if values is None:
            self.fail(failure, reason)
        else:
            self.succeed(values, rtt)

    def _id(self) -> int:
        return self.rng.randrange(1, 2**31 - 1)

    def _schedule(self, now: float) -> None:
        self.next_time = now + self.interval if len(self.sent) < self.max_sends else None

    def start(self, now: float) -> bytes:
        raise NotImplementedError

    def on_timer(self, now: float) -> bytes | None:
        """Retransmit if due; None when nothing is to be sent."""
        if self.done or self.next_time is None or now < self.next_time:
            return None
        return self.start(now)

    def on_datagram(self, data: bytes, now: float) -> bytes | None:
        raise NotImplementedError


class V2cQuery(Query):
    """SNMPv2c: one GET of lbRow, retransmitted with a fresh request id."""

    def __init__(self, server: Server, settings: ClientSettings, rng: random.Random,
                 interval: float, max_sends: int) -> None:
        super().__init__(server, rng, interval, max_sends)
        self.community = settings.community.encode()

    def start(self, now: float) -> bytes:
        rid = self._id()
        self.sent.append(_Sent(now, rid))
        self._schedule(now)
        return snmpcodec.v2c_get(self.community, rid, [ROW_OID])

    def on_datagram(self, data: bytes, now: float) -> bytes | None:
        try:
            pdu = snmpcodec.v2c_parse(data, self.community)
        except BerError:
            return None  # garbage, or not for us: ignored
        match = next((s for s in self.sent if s.request_id == pdu.request_id), None)
        if match is None or self.done:
            return None  # stale or spoofed
        self.finish(pdu, now - match.at)
        return None


class Credentials:
    """SNMPv3 secrets turned into keys once per poll; localized per engine id on demand."""

    def __init__(self, settings: ClientSettings) -> None:
        self.user = settings.user.encode()
        self.auth = settings.auth_protocol
        self._ku_auth = snmpcodec.password_to_key(settings.auth_passphrase.encode(), self.auth)
        self._ku_priv = snmpcodec.password_to_key(settings.priv_passphrase.encode(), self.auth)
        self._local: dict[bytes, tuple[bytes, bytes]] = {}

    def keys(self, engine_id: bytes) -> tuple[bytes, bytes]:
        if engine_id not in self._local:
            self._local[engine_id] = (snmpcodec.localize_key(self._ku_auth, engine_id, self.auth),
                                      snmpcodec.localize_key(self._ku_priv, engine_id, self.auth))
        return self._local[engine_id]


class V3Query(Query):
    """SNMPv3 authPriv: engine discovery (a report gives id, boots, time), then the GET."""

    def __init__(self, server: Server, creds: Credentials, rng: random.Random,
                 interval: float, max_sends: int) -> None:
        super().__init__(server, rng, interval, max_sends)
        self.creds = creds
        self.engine: tuple[bytes, int, int, float] | None = None  # id, boots, time, when learnt
        self._resyncs = 0

    def start(self, now: float) -> bytes:
        rid, mid = self._id(), self._id()
        self.sent.append(_Sent(now, rid, mid))
        self._schedule(now)
        if self.engine is None:
            return snmpcodec.v3_discovery(mid, rid)
        engine_id, boots, etime, learnt = self.engine
        auth_key, priv_key = self.creds.keys(engine_id)
        return snmpcodec.v3_get(mid, rid, [ROW_OID], engine_id=engine_id, boots=boots,
                              time=etime + int(now - learnt), user=self.creds.user, auth=self.creds.auth,
                              auth_key=auth_key, priv_key=priv_key, salt=self.rng.getrandbits(64).to_bytes(8, "big"))

    def on_datagram(self, data: bytes, now: float) -> bytes | None:
        try:
            reply = snmpcodec.v3_parse(data)
        except BerError:
            return None
        match = next((s for s in self.sent if s.msg_id == reply.msg_id), None)
        if match is None or self.done:
            return None
        usm = reply.usm
        if self.engine is None:
            return self._discovered(reply, now)
        engine_id = self.engine[0]
        if usm.engine_id != engine_id:
            return None
        auth_key, priv_key = self.creds.keys(engine_id)
        if not reply.flags & 0x01:  # unauthenticated: only a report can be, and it proves nothing
            try:
                pdu = snmpcodec.v3_pdu(reply, None)
            except BerError:
                return None
            if pdu.tag == ber.REPORT and pdu.varbinds:
                self.fail(Failure.AUTH, snmpcodec.USM_REPORTS.get(pdu.varbinds[0][0], "SNMPv3 report"))
            return None
        if not snmpcodec.v3_verify(data, reply, self.creds.auth, auth_key):
            return None  # forged or corrupted
        try:
            pdu = snmpcodec.v3_pdu(reply, priv_key)
        except BerError:
            return None
        if pdu.tag == ber.REPORT:
            oid = pdu.varbinds[0][0] if pdu.varbinds else None
            if oid == snmpcodec.NOT_IN_TIME_WINDOW and self._resyncs < 2:
                self._resyncs += 1
                self.engine = (engine_id, usm.boots, usm.time, now)
                return self.start(now)
            self.fail(Failure.AUTH, snmpcodec.USM_REPORTS.get(oid, "SNMPv3 report"))
            return None
        if pdu.request_id != match.request_id:
            return None
        self.finish(pdu, now - match.at)
        return None

    def _discovered(self, reply: snmpcodec.V3Reply, now: float) -> bytes | None:
        try:
            pdu = snmpcodec.v3_pdu(reply, None)
        except BerError:
            return None
        usm = reply.usm
        if pdu.tag != ber.REPORT or not usm.engine_id or len(usm.engine_id) > 32:
            return None
        self.engine = (usm.engine_id, usm.boots, usm.time, now)
        self.sent.clear()  # a new phase: its own retransmissions
        return self.start(now)
