"""One server's poll as a sans-IO state machine: datagrams in, datagrams out, time as an argument.

A query sends a GET of lbRow, retransmits on its timer, and accepts a reply
only if it carries a request id it sent (each transmission has its own), the
right community or USM credentials, a Response PDU without error, and exactly
the OID it asked with a decodable, plausible row. Anything else is ignored,
or ends the query with a reason when it can only mean this server is wrong
(an SNMP error, a partial row, an authenticated USM report). An unauthenticated
SNMPv3 report proves nothing (anyone who saw the request can send one): it is
only a tentative reason, kept for the end if no authenticated answer comes
(``Query.tentative``). The poller drives these; it owns the socket and the clock.
"""

from __future__ import annotations

import random

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib
from snmplb.client.ber import BerError
from snmplb.client.settings import ClientSettings, Server
from snmplb.client.serverstate import Failure, ServerState, check_row

ROW_OID = mib.ROW.instance
_NO_VALUE = (ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW)
_ERRORS = {1: "tooBig", 2: "noSuchName", 5: "genErr", 6: "noAccess"}


def oids_asked(*questions: bytes) -> list[mib.Oid]:
    """What one GET asks: lbRow, and for each of a user's ``questions`` (``snmplb.affinity``: the
    question and its decoy) lbUserSessions and lbUserWaiting at its instance: still one datagram."""
    if not any(questions):
        return [ROW_OID]
    from snmplb import affinity  # only where a user is known: get_hosts never imports it

    return [ROW_OID, *(oid for q in questions for oid in affinity.instances(q))]


def row_from_pdu(pdu: snmpcodec.Pdu, oids: list[mib.Oid] | None = None,
                 question: bytes = b"") -> tuple[dict[str, int] | None, str, str]:
    """(values, "", "") for a good response to a GET of ``oids`` (``oids_asked``; default lbRow alone),
    else (None, its ``Failure`` kind, reason). The answers to the user's ``question`` (default: the
    first asked), when asked, are in the values under their MIB names; absent when the agent has none
    (no site key, or older than lbUserTable). An answer of sessions to any other question (the decoy:
    about nobody) is a lie."""
    oids = oids or [ROW_OID]
    if pdu.tag != ber.RESPONSE:
        return None, Failure.MALFORMED, f"unexpected PDU {pdu.tag:#x}"
    if pdu.error_status:
        return None, Failure.AGENT_ERROR, f"SNMP error {_ERRORS.get(pdu.error_status, pdu.error_status)}"
    if [oid for oid, _ in pdu.varbinds] != oids:
        return None, Failure.MALFORMED, "reply does not carry every OID asked"
    user = _user_answers(pdu.varbinds[1:], question) if len(oids) > 1 else {}
    if isinstance(user, str):
        return None, Failure.MALFORMED if "type" in user else Failure.IMPLAUSIBLE, user
    value = pdu.varbinds[0][1]
    if value.tag in _NO_VALUE:
        return None, Failure.NO_ROW, "no snmplb row on this agent (noSuchObject: agent not installed or not in the view)"
    if value.tag != ber.OCTET_STRING or not isinstance(value.value, bytes):
        return None, Failure.MALFORMED, "lbRow of the wrong type"
    values = mib.decode_row(value.value.decode("ascii", "replace"))
    if values is None:
        return None, Failure.MALFORMED, "partial, garbled or out-of-range row"
    failure, reason = check_row(values)
    return (None, failure, reason) if failure else ({**values, **user}, "", "")


def _user_answers(varbinds: tuple[tuple[mib.Oid, ber.Tlv], ...], question: bytes = b"") -> dict[str, int] | str:
    """lbUserSessions and lbUserWaiting by name from the varbinds of ``question`` (default: the first
    two; absent: the agent has no answer, no site key or older than lbUserTable), or why they cannot
    be true: a decoy's answered with a session among them."""
    from snmplb import affinity

    # The varbinds carry exactly the OIDs asked (row_from_pdu checked), each a question's instance.
    parsed = [affinity.parse_instance(oid) for oid, _ in varbinds]
    asked = question or (parsed[0][1] if parsed and parsed[0] else b"")
    user: dict[str, int] = {}
    for (_, answer), instance in zip(varbinds, parsed):
        if instance is None:
            return "an answer to no question"
        column, about = instance
        if answer.tag in _NO_VALUE:
            continue
        try:
            n = ber.as_int(answer, ber.GAUGE32, low=0)  # its range: Gauge32's
        except BerError:
            return f"{column} of the wrong type"
        if about == asked:
            user[column] = n
        elif n:
            return f"{column} {n} for a decoy (a question about nobody): a lying agent"
    if len(user) == 1 or (user and user[affinity.WAITING.name] > user[affinity.SESSIONS.name]):
        return "implausible user sessions"
    return user


class _Sent:
    """One transmission: when, the ids a reply to it must carry and, for an SNMPv3 GET, the engine id
    it was sent under (b"" for a discovery and for SNMPv2c)."""

    __slots__ = ("at", "request_id", "msg_id", "engine_id")

    def __init__(self, at: float, request_id: int, msg_id: int = 0, engine_id: bytes = b"") -> None:
        self.at, self.request_id, self.msg_id, self.engine_id = at, request_id, msg_id, engine_id


class Query:
    """Base: the retransmission schedule and the result.

    ``tentative`` is a (``Failure`` kind, reason) heard but not proven (an
    unauthenticated SNMPv3 report): it never ends the query by itself. When the
    query ends unanswered (``fail`` with UNREACHABLE: the poller's deadline, or
    a datagram it could not send), it ends with the tentative reason instead:
    something did answer, and nothing better came.
    """

    def __init__(self, server: Server, rng: random.Random, interval: float, max_sends: int,
                 question: bytes = b"", decoy: bytes = b"") -> None:
        self.server = server
        self.question = question
        if question:
            from snmplb import affinity

            self.oids = oids_asked(*affinity.with_decoy(question, decoy))
        else:
            self.oids = [ROW_OID]
        self.rng = rng
        self.interval = interval
        self.max_sends = max_sends
        self.sent: list[_Sent] = []
        self.sends = 0  # scheduled transmissions in this phase (SNMPv3: discovery, then the GET)
        self.result: ServerState | None = None
        self.next_time: float | None = None
        self.tentative: tuple[str, str] | None = None
        self.tentative_at: float | None = None  # when the tentative reason was last heard

    @property
    def done(self) -> bool:
        return self.result is not None

    def fail(self, failure: str, reason: str) -> None:
        """End the query without a row: ``failure`` (a ``Failure`` kind) and ``reason`` (its words);
        an unanswered end (UNREACHABLE) takes the ``tentative`` reason when there is one."""
        if self.result is None:
            if failure == Failure.UNREACHABLE and self.tentative is not None:
                failure, reason = self.tentative
            self.result = ServerState.failed(self.server.host, self.server.port, failure, reason)
            self.next_time = None

    def succeed(self, values: dict[str, int], rtt: float) -> None:
        self.result = ServerState(self.server.host, self.server.port, values, "", round(rtt * 1000, 2))
        self.next_time = None

    def finish(self, pdu: snmpcodec.Pdu, rtt: float) -> None:
        """End the query with a genuine reply: its row, or why it is unusable."""
        values, failure, reason = row_from_pdu(pdu, self.oids, self.question)
        if values is None:
            self.fail(failure, reason)
        else:
            self.succeed(values, rtt)

    def _id(self) -> int:
        return self.rng.randrange(1, 2**31 - 1)

    def _schedule(self, now: float) -> None:
        """Count a scheduled transmission; the next one is due ``interval`` later, up to ``max_sends``."""
        self.sends += 1
        self.next_time = now + self.interval if self.sends < self.max_sends else None

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
                 interval: float, max_sends: int, question: bytes = b"", decoy: bytes = b"") -> None:
        super().__init__(server, rng, interval, max_sends, question, decoy)
        self.community = settings.community.encode()

    def start(self, now: float) -> bytes:
        rid = self._id()
        self.sent.append(_Sent(now, rid))
        self._schedule(now)
        return snmpcodec.v2c_get(self.community, rid, self.oids)

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


_MAX_ENGINES = 8  # distinct engine ids one SNMPv3 query tries (the real one and forgeries)
_MAX_RESYNCS = 2  # authenticated notInTimeWindow reports one query follows


class _Engine:
    """An engine id a report named, its boots and time, when they were learnt, when a GET last went to it."""

    __slots__ = ("id", "boots", "time", "learnt", "last_sent")

    def __init__(self, engine_id: bytes, boots: int, etime: int, learnt: float) -> None:
        self.id, self.boots, self.time, self.learnt = engine_id, boots, etime, learnt
        self.last_sent = learnt


class V3Query(Query):
    """SNMPv3 authPriv: engine discovery (a report gives id, boots, time), then the GET.

    The msgID and the engine id travel in clear and a report may be
    unauthenticated, so anyone who sees a request can answer it first. Rules:

    - Of the datagrams, only an authenticated one ends the query: a Response (its row, or
      why the row is unusable) or an authenticated report (credentials refused,
      beyond ``_MAX_RESYNCS`` notInTimeWindow resyncs). It must carry the
      engine id its request was sent under, and its digest must verify with
      that engine id's keys, which only a holder of the passphrase has. It
      confirms its engine id: the other candidates are dropped, none is added.
    - An unauthenticated report never ends the query. Every engine id one
      names (the discovery's answer; snmpd's unknownEngineIDs answer to a GET
      under an engine id not its own) is a candidate, and a GET goes to each
      new one at once: a forged discovery report costs one GET, and the real
      engine id is still tried when the agent names it. At most
      ``_MAX_ENGINES`` candidates per query: that bounds the work an attacker
      can cause; more forgeries than that within one poll are a flood.
    - An unauthenticated report answering a GET is the ``tentative`` reason
      (the latest): the server's refusal, or a forgery. It is the query's
      result only if no authenticated answer comes before the deadline.
    - Retransmissions (``max_sends`` per phase): the discovery until an engine
      id is known; then the GET, each time to the candidate sent to least recently.
    """

    def __init__(self, server: Server, creds: Credentials, rng: random.Random,
                 interval: float, max_sends: int, question: bytes = b"", decoy: bytes = b"") -> None:
        super().__init__(server, rng, interval, max_sends, question, decoy)
        self.creds = creds
        self.engines: list[_Engine] = []  # candidates, in the order learnt
        self.confirmed = False  # an authenticated message came: engines holds its engine id alone
        self._resyncs = 0

    @property
    def engine(self) -> tuple[bytes, int, int, float] | None:
        """The first engine id learnt (the confirmed one once confirmed): (id, boots, time, when learnt)."""
        if not self.engines:
            return None
        e = self.engines[0]
        return e.id, e.boots, e.time, e.learnt

    def start(self, now: float) -> bytes:
        """The next scheduled transmission: the discovery, or the GET to the least recently asked candidate."""
        if not self.engines:
            rid, mid = self._id(), self._id()
            self.sent.append(_Sent(now, rid, mid))
            self._schedule(now)
            return snmpcodec.v3_discovery(mid, rid)
        self._schedule(now)
        return self._get(min(self.engines, key=lambda e: e.last_sent), now)

    def _get(self, engine: _Engine, now: float) -> bytes:
        rid, mid = self._id(), self._id()
        self.sent.append(_Sent(now, rid, mid, engine.id))
        engine.last_sent = now
        auth_key, priv_key = self.creds.keys(engine.id)
        return snmpcodec.v3_get(mid, rid, self.oids, engine_id=engine.id, boots=engine.boots,
                                time=engine.time + int(now - engine.learnt), user=self.creds.user,
                                auth=self.creds.auth, auth_key=auth_key, priv_key=priv_key,
                                salt=self.rng.getrandbits(64).to_bytes(8, "big"))

    def on_datagram(self, data: bytes, now: float) -> bytes | None:
        try:
            reply = snmpcodec.v3_parse(data)
        except BerError:
            return None
        match = next((s for s in self.sent if s.msg_id == reply.msg_id), None)
        if match is None or self.done:
            return None
        if not reply.flags & 0x01:
            return self._unauthenticated(reply, match, now)
        usm = reply.usm
        engine = next((e for e in self.engines if e.id == usm.engine_id), None)
        if engine is None or usm.engine_id != match.engine_id:
            return None  # not under the engine id its request went out with: no answer to it
        auth_key, priv_key = self.creds.keys(engine.id)
        if not snmpcodec.v3_verify(data, reply, self.creds.auth, auth_key):
            return None  # forged or corrupted
        try:
            pdu = snmpcodec.v3_pdu(reply, priv_key)
        except BerError:
            return None
        self.engines, self.confirmed = [engine], True
        if pdu.tag == ber.REPORT:
            oid = pdu.varbinds[0][0] if pdu.varbinds else None
            if oid == snmpcodec.NOT_IN_TIME_WINDOW and self._resyncs < _MAX_RESYNCS:
                self._resyncs += 1
                engine.boots, engine.time, engine.learnt = usm.boots, usm.time, now
                return self.start(now)
            self.fail(Failure.AUTH, snmpcodec.USM_REPORTS.get(oid, "SNMPv3 report"))
            return None
        if pdu.request_id != match.request_id:
            return None
        self.finish(pdu, now - match.at)
        return None

    def _unauthenticated(self, reply: snmpcodec.V3Reply, match: _Sent, now: float) -> bytes | None:
        """A report without a digest: a tentative reason if it answers a GET, and its engine id a candidate."""
        try:
            pdu = snmpcodec.v3_pdu(reply, None)
        except BerError:
            return None
        engine_id = reply.usm.engine_id
        if pdu.tag != ber.REPORT or not engine_id or len(engine_id) > 32:
            return None
        if match.engine_id:  # it answers a GET: refused by the server, or forged
            oid = pdu.varbinds[0][0] if pdu.varbinds else None
            self.tentative = (Failure.AUTH, snmpcodec.USM_REPORTS.get(oid, "SNMPv3 report"))
            self.tentative_at = now
        if self.confirmed or len(self.engines) >= _MAX_ENGINES or any(e.id == engine_id for e in self.engines):
            return None
        engine = _Engine(engine_id, reply.usm.boots, reply.usm.time, now)
        self.engines.append(engine)
        if len(self.engines) == 1:
            self.sends = 0  # a new phase: the GET's own retransmissions
            return self.start(now)
        return self._get(engine, now)  # at once, outside the schedule
