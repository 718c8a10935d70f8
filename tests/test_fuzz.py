"""A bounded, seeded fuzz suite: hostile input at every edge a thin client or an agent reads.

- mutated SNMPv2c and SNMPv3 replies fed to the query state machines (queries.V2cQuery, V3Query);
- hostile lines on the agent's stdin (the pure passpersist.Protocol, then the real snmplb-agent);
- garbage in every LB_* variable (settings.from_env, then the real chroot/get_hosts);
- one lying agent among honest ones (algorithms.decide, `balanced`).

Every run is seeded and bounded: the default does a few thousand cases per test in seconds;
SNMPLB_FUZZ=50000 runs that many cases per mutation test (SNMPLB_FUZZ_SEED picks another seed).
A failure names the seed, the case and the mutation, so it can be replayed.

The invariants are the promise of issue 10: a datagram, a line or a variable never raises; a query
either stays pending, fails with a reason, or succeeds with values inside the MIB's ranges that
stats.implausible accepts; a problem message names its variable, is short and shows no character
of a secret; one liar cannot move the honest servers' shares by more than a few percent.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import traceback
from collections import Counter

import pytest

from snmplb.client import ber
from snmplb.client import snmpcodec
from snmplb import mib
from snmplb.agent.service import _OVERLONG, LINE_LIMIT, build_table
from snmplb.adminfile import AdminSettings
from snmplb.client.algorithms import Context, decide
from snmplb.agent.verdict import HealthPolicy
from snmplb.lab.fleet import PROJECT
from snmplb.agent.passpersist import NONE, NOT_WRITABLE, PONG, Protocol
from snmplb.agent.procfs import ProcSample
from snmplb.client.serverquery import Credentials, V2cQuery, V3Query
from snmplb.agent.logins import SessionCount
from snmplb.client.settings import VARIABLES, ClientSettings, Server, from_env
from snmplb.agent.values import compute_values
from snmplb.client.serverstate import MAX_DATA_AGE_MS, Failure, ServerState, implausible

from support import row

N = int(os.environ.get("SNMPLB_FUZZ", "") or 3000)  # cases per mutation test
SEED = os.environ.get("SNMPLB_FUZZ_SEED", "snmplb-issue-10")
ROW_OID = mib.ROW.instance
GOOD_ROW = row(load_per_cpu=0.5, cpus=4, sessions=3, users=2)
GOOD_ROW_TEXT = mib.encode_row([GOOD_ROW[o.name] for o in mib.ROW_FIELDS])

# Integers an attacker puts where the codec reads one: around every width a decoder might assume.
NASTY_INTS = (0, 1, -1, 127, 128, 255, 256, 65535, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**32 - 1, 2**32,
              2**55, 2**63 - 1, 2**63, -2**63, 2**64 - 1, 2**64, 2**71, -2**71)
# Decimal fields an agent's lbRow could carry instead of a number in its range.
NASTY_FIELDS = ("99999999999999999999", "18446744073709551615", "18446744073709551616", "4294967295",
                "4294967296", "2147483648", "36028797018963968", "-1", "+1", "\u0663", "1_000", "0x10", "1e3",
                "00000000000000000001", "9" * 21, "nan", "\u00b2", "0" * 30)


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}/{name}")


class Findings:
    """Collects invariant violations (with how to replay them) instead of stopping at the first."""

    def __init__(self, name: str, cases: int = N) -> None:
        self.name, self.cases = name, cases
        self.items: list[str] = []
        self.kinds: Counter[str] = Counter()

    def add(self, case: int, what: str, problem: str, data: bytes | str = b"") -> None:
        key = re.sub(r"\d+", "N", problem.splitlines()[0])[:120]  # one kind, whatever the numbers
        self.kinds[key] += 1
        if self.kinds[key] <= 2:
            shown = data[:120].hex() if isinstance(data, bytes) else repr(data[:120])
            self.items.append(f"case {case} ({what}): {problem}\n    input: {shown}")

    def check(self) -> None:
        if self.items:
            summary = "\n".join(f"  {n} x {k}" for k, n in self.kinds.most_common())
            pytest.fail(f"{self.name} (seed {SEED!r}, {self.cases} cases): {sum(self.kinds.values())} violations\n"
                        f"{summary}\nfirst of each:\n" + "\n".join(self.items[:12]), pytrace=False)


# -- the invariant on a query ------------------------------------------------

def outcome(q, out) -> str:
    """'pending', 'failed' or 'ok'; AssertionError when the query's state breaks the invariant."""
    assert out is None or isinstance(out, bytes), f"on_datagram returned {type(out).__name__}"
    r = q.result
    if r is None:
        return "pending"
    if not r.ok:
        assert isinstance(r.reason, str) and r.reason, f"failed without a reason: {r!r}"
        assert r.failure in Failure.ALL, f"failed without a kind of failure: {r!r}"
        return "failed"
    values = r.values
    for o in mib.ROW_FIELDS:
        if o.name in values:
            lo, hi = o.range
            v = values[o.name]
            assert isinstance(v, int) and lo <= v <= hi, f"{o.name}={v} outside the MIB's {lo}..{hi}"
    bad = implausible(values)
    assert not bad, f"accepted a row that stats.implausible rejects: {bad}"
    return "ok"


def feed(q, data: bytes, now: float) -> tuple[str, str]:
    """(outcome, problem): the query's outcome, or what went wrong ("" when nothing did)."""
    try:
        out = q.on_datagram(data, now)
    except Exception as exc:  # the finding: on_datagram must never raise
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return "raised", f"on_datagram raised {type(exc).__name__}: {str(exc)[:80]} at {tb.name}:{tb.lineno}"
    try:
        return outcome(q, out), ""
    except AssertionError as exc:
        return "bad", str(exc)


# -- mutations ----------------------------------------------------------------

def headers(data: bytes) -> list[tuple[int, int]]:
    """(tag position, length-field size) of every BER element of a well-formed snmpcodec."""
    found: list[tuple[int, int]] = []

    def walk(pos: int, end: int, depth: int) -> None:
        while pos < end and depth < 10:
            tag, first = data[pos], data[pos + 1]
            n = 1 + (first & 0x7F if first & 0x80 else 0)
            length = int.from_bytes(data[pos + 2:pos + 1 + n], "big") if first & 0x80 else first
            found.append((pos, n))
            start = pos + 1 + n
            if tag & 0x20 or tag == ber.OCTET_STRING and length and data[start] == 0x30:
                try:  # constructed, or an OCTET STRING that wraps BER (the USM parameters)
                    walk(start, start + length, depth + 1)
                except IndexError:
                    pass
            pos = start + length

    walk(0, len(data), 0)
    return found


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One to three random mutations of ``data``, and their names."""
    b = bytearray(data)
    names = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.choice(("flip", "byte", "insert", "delete", "truncate", "length", "length", "dup", "tag"))
        if not b:
            b = bytearray(rng.randbytes(rng.randrange(1, 8)))
        i = rng.randrange(len(b))
        if kind == "flip":
            b[i] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            b[i] = rng.choice((0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, rng.randrange(256)))
        elif kind == "insert":
            b[i:i] = rng.randbytes(rng.randrange(1, 5))
        elif kind == "delete":
            del b[i:i + rng.randrange(1, 5)]
        elif kind == "truncate":
            del b[i:]
        elif kind == "dup":
            j = min(len(b), i + rng.randrange(1, 16))
            b[j:j] = b[i:j]
        elif kind in ("length", "tag"):
            try:
                hs = headers(bytes(b))
            except IndexError:
                hs = []
            if not hs:
                continue
            pos, n = rng.choice(hs)
            if kind == "tag":
                b[pos] = rng.choice((0x02, 0x04, 0x05, 0x06, 0x30, 0x41, 0x42, 0x46, 0x80, 0xA2, 0xA8, 0x1F, 0x3F))
            else:
                new = rng.choice((b"\x00", b"\x7f", b"\x80", b"\x84\xff\xff\xff\xff", b"\x85\x01\x00\x00\x00\x00",
                                  b"\x81\x00", b"\x82\x00\x05", bytes([max(0, b[pos + 1] - 1)]),
                                  bytes([min(0x7F, b[pos + 1] + 1)]), bytes([rng.randrange(256)])))
                b[pos + 1:pos + 1 + n] = new
        names.append(kind)
    return bytes(b), "+".join(names)


def nasty_row_text(rng: random.Random) -> tuple[str, str]:
    """lbRow text with some fields replaced by hostile decimals, extremes in range, or a changed shape."""
    fields = GOOD_ROW_TEXT.split()
    kind = rng.choice(("field", "field", "extreme", "extreme", "shape"))
    if kind == "field":
        for _ in range(rng.randrange(1, 4)):
            fields[rng.randrange(len(fields))] = rng.choice(NASTY_FIELDS)
    elif kind == "extreme":  # legal but absurd: each chosen field at the end of its SMI range
        for o in rng.sample(mib.ROW_FIELDS, rng.randrange(1, 6)):
            i = mib.ROW_FIELDS.index(o)
            fields[i] = str(rng.choice((o.range[1], o.range[1] + 1, max(0, o.range[0]))))
    else:
        fields = rng.choice((fields[:rng.randrange(len(fields))], fields + ["99999999999999999999"] * 3,
                             fields + [str(2**64)], [rng.choice(NASTY_FIELDS)] * len(fields)))
    sep = rng.choice((" ", " ", "\t", "  ", "\n", "\x00"))
    return sep.join(fields), kind


# -- SNMPv2c ------------------------------------------------------------------

V2C_SETTINGS = ClientSettings(community="c0mm")


def v2c_reply(rid: int, value: bytes | None = None, *, oid=ROW_OID, status: int = 0, index: int = 0,
              version: int = 1, community: bytes = b"c0mm", tag: int = ber.RESPONSE) -> bytes:
    value = ber.enc_str(GOOD_ROW_TEXT.encode()) if value is None else value
    vbs = ber.enc_seq(ber.enc_seq(ber.enc_oid(oid), value))
    pdu = ber.enc_seq(ber.enc_int(rid), ber.enc_int(status), ber.enc_int(index), vbs, tag=tag)
    return ber.enc_seq(ber.enc_int(version), ber.enc_str(community), pdu)


def new_v2c(case: int) -> tuple[V2cQuery, int]:
    q = V2cQuery(Server("app1"), V2C_SETTINGS, random.Random(case), interval=0.25, max_sends=3)
    return q, snmpcodec.v2c_parse(q.start(10.0), b"c0mm").request_id


def test_v2c_query_baseline_succeeds():
    q, rid = new_v2c(0)
    assert feed(q, v2c_reply(rid), 10.01) == ("ok", "")


def test_v2c_mutated_replies_never_raise_nor_pass_a_bad_row():
    rng, found, seen = rng_for("v2c-bytes"), Findings("v2c byte mutations"), Counter()
    for case in range(N):
        q, rid = new_v2c(case)
        data, what = mutate(v2c_reply(rid), rng)
        result, problem = feed(q, data, 10.01)
        seen[result] += 1
        if problem:
            found.add(case, what, problem, data)
    found.check()
    assert seen["pending"] and seen["ok"] + seen["failed"], seen  # the mutations reached both layers


def test_v2c_hostile_fields_never_raise_nor_pass_a_bad_row():
    rng, found, seen = rng_for("v2c-fields"), Findings("v2c field mutations"), Counter()
    for case in range(N):
        q, rid = new_v2c(case)
        kind = rng.choice(("row", "row", "row", "int", "value"))
        if kind == "row":
            text, what = nasty_row_text(rng)
            data = v2c_reply(rid, ber.enc_str(text.encode()))
        elif kind == "int":
            field = rng.choice(("rid", "status", "index", "version"))
            n = rng.choice(NASTY_INTS)
            args = {"rid": n if field == "rid" else rid}
            args.update({field: n} if field != "rid" else {})
            data, what = v2c_reply(args.pop("rid"), **args), f"{field}={n}"
        else:
            value = rng.choice((ber.enc_int(rng.choice(NASTY_INTS)), ber.enc_null(), ber.enc_str(b""),
                                ber.enc_str(rng.randbytes(300)), ber.enc_int(5, ber.COUNTER64),
                                ber.enc_str(GOOD_ROW_TEXT.encode(), ber.OPAQUE), ber.enc_seq(),
                                ber.enc_str("\u0663 ".join(GOOD_ROW_TEXT.split()).encode())))
            data, what = v2c_reply(rid, value), "value"
        result, problem = feed(q, data, 10.01)
        seen[result] += 1
        if problem:
            found.add(case, what, problem, data)
    found.check()
    assert seen["failed"] and seen["ok"], seen


# -- SNMPv3 -------------------------------------------------------------------

V3_SETTINGS = ClientSettings(snmp_version="3", user="snmplb", auth_protocol="SHA",
                             auth_passphrase="auth-secret-1", priv_passphrase="priv-secret-1")
ENGINE = b"\x80\x00\x1f\x88\x80fuzz-engine"
USM_UNKNOWN_ENGINE = (1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)


def _aes_cfb(key: bytes, boots: int, etime: int, salt: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    try:
        from cryptography.hazmat.decrepit.ciphers.modes import CFB
    except ImportError:
        from cryptography.hazmat.primitives.ciphers.modes import CFB
    iv = (boots % 2**32).to_bytes(4, "big") + (etime % 2**32).to_bytes(4, "big") + salt  # an agent's view
    op = Cipher(algorithms.AES(key[:16]), CFB(iv)).encryptor()
    return op.update(data) + op.finalize()


def v3_message(msg_id: int, flags: int, engine: bytes, boots: int, etime: int, user: bytes, salt: bytes,
               scoped: bytes, keys: tuple[bytes, bytes] | None = None) -> bytes:
    """An SNMPv3 message as an agent sends it; with ``keys`` (auth, priv), encrypted and signed (SHA)."""
    mac_len = snmpcodec.AUTH["SHA"][1]
    if keys is not None:
        scoped = ber.enc_str(_aes_cfb(keys[1], boots, etime, salt, scoped))
    glob = ber.enc_seq(ber.enc_int(msg_id), ber.enc_int(snmpcodec.MAX_MSG_SIZE), ber.enc_str(bytes([flags])),
                       ber.enc_int(3))
    usm = ber.enc_seq(ber.enc_str(engine), ber.enc_int(boots), ber.enc_int(etime), ber.enc_str(user),
                      ber.enc_str(b"\0" * mac_len if keys else b""), ber.enc_str(salt if keys else b""))
    msg = ber.enc_seq(ber.enc_int(3), glob, ber.enc_str(usm), scoped)
    if keys is None:
        return msg
    import hmac

    pos = msg.index(b"\x04\x0c" + b"\0" * mac_len) + 2  # the zeroed digest
    mac = hmac.new(keys[0], msg, "sha1").digest()[:mac_len]
    return msg[:pos] + mac + msg[pos + mac_len:]


def scoped_pdu(tag: int, rid: int, binds: list[tuple[tuple[int, ...], bytes]], status: int = 0,
               engine: bytes = ENGINE) -> bytes:
    vbs = ber.enc_seq(b"".join(ber.enc_seq(ber.enc_oid(o), v) for o, v in binds))
    pdu = ber.enc_seq(ber.enc_int(rid), ber.enc_int(status), ber.enc_int(0), vbs, tag=tag)
    return ber.enc_seq(ber.enc_str(engine), ber.enc_str(b""), pdu)


def report(msg_id: int, rid: int, engine: bytes = ENGINE, boots: int = 5, etime: int = 1000,
           oid=USM_UNKNOWN_ENGINE) -> bytes:
    """The discovery report: unauthenticated, it tells the engine id, boots and time."""
    return v3_message(msg_id, 0x00, engine, boots, etime, b"", b"",
                      scoped_pdu(ber.REPORT, rid, [(oid, ber.enc_int(1, ber.COUNTER32))], engine=engine))


@pytest.fixture(scope="module")
def creds() -> Credentials:
    return Credentials(V3_SETTINGS)  # the 1 MiB passphrase hashing, once


def request_ids(data: bytes, priv_key: bytes | None) -> tuple[int, int]:
    reply = snmpcodec.v3_parse(data)
    return reply.msg_id, snmpcodec.v3_pdu(reply, priv_key).request_id


def discovered(creds: Credentials, case: int) -> tuple[V3Query, int, int]:
    """A query past discovery (engine ENGINE, boots 5, time 1000): the ids of its authPriv GET."""
    q = V3Query(Server("app1"), creds, random.Random(case), interval=0.25, max_sends=3)
    mid, rid = request_ids(q.start(10.0), None)
    get = q.on_datagram(report(mid, rid), 10.01)
    assert get is not None and q.engine is not None
    mid, rid = request_ids(get, creds.keys(ENGINE)[1])
    return q, mid, rid


def response(creds: Credentials, mid: int, rid: int, text: str = GOOD_ROW_TEXT, *, boots: int = 5,
             etime: int = 1000, tag: int = ber.RESPONSE, status: int = 0, value: bytes | None = None,
             oid=ROW_OID, scoped: bytes | None = None, salt: bytes = b"saltsalt") -> bytes:
    value = ber.enc_str(text.encode()) if value is None else value
    scoped = scoped_pdu(tag, rid, [(oid, value)], status) if scoped is None else scoped
    return v3_message(mid, 0x03, ENGINE, boots, etime, b"snmplb", salt, scoped, creds.keys(ENGINE))


def test_v3_query_baseline_succeeds(creds):
    q, mid, rid = discovered(creds, 0)
    assert feed(q, response(creds, mid, rid), 10.02) == ("ok", "")


def test_v3_mutated_discovery_reports_never_raise(creds):
    rng, found, seen = rng_for("v3-discovery"), Findings("v3 discovery reports"), Counter()
    for case in range(N):
        q = V3Query(Server("app1"), creds, random.Random(case), interval=0.25, max_sends=3)
        mid, rid = request_ids(q.start(10.0), None)
        if rng.random() < 0.5:
            data, what = mutate(report(mid, rid), rng)
        else:
            boots, etime = rng.choice(NASTY_INTS), rng.choice(NASTY_INTS)
            engine = rng.choice((ENGINE, b"", b"\x80", rng.randbytes(32), rng.randbytes(33), rng.randbytes(200)))
            data, what = report(mid, rid, engine, boots, etime), f"boots={boots} time={etime} engine={len(engine)}B"
        result, problem = feed(q, data, 10.01)
        seen[result] += 1
        if problem:
            found.add(case, what, problem, data)
    found.check()
    assert seen["pending"], seen


def test_v3_mutated_responses_never_raise_nor_pass_a_bad_row(creds):
    rng, found, seen = rng_for("v3-response"), Findings("v3 responses"), Counter()
    for case in range(N):
        q, mid, rid = discovered(creds, case)
        kind = rng.choice(("bytes", "bytes", "row", "row", "ints", "inner", "report", "plain-report"))
        if kind == "bytes":  # on the wire: nearly all fail the HMAC and must be ignored
            data, what = mutate(response(creds, mid, rid), rng)
        elif kind == "row":  # signed by an agent with the keys: a lying or broken agent
            text, what = nasty_row_text(rng)
            data = response(creds, mid, rid, text)
        elif kind == "ints":
            boots, etime, status = (rng.choice(NASTY_INTS + (5,)), rng.choice(NASTY_INTS + (1000,)),
                                    rng.choice((0, 0, 5, -1, 2**31, 2**63)))
            data, what = response(creds, mid, rid, boots=boots, etime=etime, status=status), \
                f"boots={boots} time={etime} status={status}"
        elif kind == "inner":  # the plaintext mutated, then encrypted and signed: the decrypted-BER path
            inner, what = mutate(scoped_pdu(ber.RESPONSE, rid, [(ROW_OID, ber.enc_str(GOOD_ROW_TEXT.encode()))]),
                                 rng)
            data = response(creds, mid, rid, scoped=inner)
        elif kind == "report":  # an authenticated report, e.g. notInTimeWindow with absurd boots/time
            boots, etime = rng.choice(NASTY_INTS), rng.choice(NASTY_INTS)
            oid = rng.choice((snmpcodec.NOT_IN_TIME_WINDOW, USM_UNKNOWN_ENGINE, (1, 3, 6)))
            data = response(creds, mid, rid, tag=ber.REPORT, oid=oid, value=ber.enc_int(1, ber.COUNTER32),
                            boots=boots, etime=etime)
            what = f"authenticated report {oid[-2]} boots={boots} time={etime}"
        else:  # an unauthenticated report during the GET phase (anyone on the LAN can send one)
            boots, etime = rng.choice(NASTY_INTS), rng.choice(NASTY_INTS)
            data, what = report(mid, rid, ENGINE, boots, etime, snmpcodec.NOT_IN_TIME_WINDOW), \
                f"plain report boots={boots} time={etime}"
        result, problem = feed(q, data, 10.02)
        seen[result] += 1
        if problem:
            found.add(case, f"{kind}: {what}", problem, data)
    found.check()
    assert seen["pending"] and seen["ok"] and seen["failed"], seen


# -- the agent's stdin --------------------------------------------------------

@pytest.fixture(scope="module")
def table():
    proc = ProcSample(10.0, 1.0, 0.5, 0.25, 4, 8000, 4000, 100, 100, 0, 0)
    return build_table(compute_values(proc, (0.0, 0.0), SessionCount(2, 1, "logind"), AdminSettings(),
                                      HealthPolicy()))


INSTANCES = {mib.oid_str(o.instance): o.pass_type for o in mib.OBJECTS}


def protocol_answers(out: str) -> list[str]:
    """Split the agent's output into answers; AssertionError at anything that is not the protocol."""
    lines = out.split("\n")
    assert lines[-1] == "", f"output does not end with a newline: {out[-80:]!r}"
    lines.pop()
    answers, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line + "\n" in (PONG, NONE, NOT_WRITABLE):
            answers.append(line)
            i += 1
            continue
        assert line in INSTANCES, f"not a protocol line: {line[:80]!r}"
        assert i + 2 < len(lines), f"answer for {line} cut short"
        assert lines[i + 1] == INSTANCES[line], f"type {lines[i + 1]!r} for {line}"
        assert "\r" not in lines[i + 2] and lines[i + 2].isprintable(), f"value {lines[i + 2][:80]!r}"
        answers.append(line)
        i += 3
    return answers


def hostile_line(rng: random.Random) -> str:
    oid = rng.choice(list(INSTANCES))
    return rng.choice((
        lambda: rng.choice(("PING", "ping", "get", "GET", "getnext", "set", " get ", "Get\t", "pingpong")),
        lambda: oid,
        lambda: oid[:rng.randrange(len(oid))] + rng.choice(("", ".", "..", ".0", ".4294967296", ".-1")),
        lambda: "." + ".".join(str(rng.choice((0, 1, 2**32, 2**64, 10**30))) for _ in range(rng.randrange(1, 300))),
        lambda: rng.randbytes(rng.randrange(1, 200)).decode("ascii", "replace"),  # as the driver decodes
        lambda: rng.randbytes(rng.randrange(1, 60)).decode("latin-1"),
        lambda: "".join(chr(rng.choice((rng.randrange(0x20), rng.randrange(0x110000)))) for _ in range(20))
        .encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
        lambda: "\udcff\udc80" + oid,
        lambda: "x" * rng.choice((LINE_LIMIT, LINE_LIMIT * 4)),
        lambda: _OVERLONG,
        lambda: "",
        lambda: "integer " + str(rng.choice(NASTY_INTS)),
    ))()


def test_passpersist_protocol_survives_hostile_lines(table):
    rng, found = rng_for("passpersist"), Findings("pass_persist protocol", N * 3)
    p, out = Protocol(), []
    for case in range(N * 3):
        line = hostile_line(rng)
        try:
            answer = p.feed(line, table, 10.5)
        except Exception as exc:
            found.add(case, "feed", f"feed raised {type(exc).__name__}: {exc}", line)
            p = Protocol()
            continue
        if not isinstance(answer, str):
            found.add(case, "feed", f"returned {type(answer).__name__}", line)
            continue
        out.append(answer)
    try:
        answers = protocol_answers("".join(out))
    except AssertionError as exc:
        found.add(-1, "output", str(exc))
    found.check()
    assert "PONG" in answers and "NONE" in answers and any(a in INSTANCES for a in answers)
    # Still in step after all that: a PING and a GET are answered exactly.
    load = mib.oid_str(mib.obj("lbLoad1").instance)
    tail = "".join(p.feed(x, table, 10.5) for x in ("", "PING", "get", load))
    assert tail.endswith(f"{PONG}{load}\ngauge\n100\n"), tail


@pytest.mark.fleet
def test_agent_process_answers_after_megabytes_of_garbage(tmp_path):
    from support import LOAD1, AgentProcess

    rng = rng_for("agent-process")
    chunks, size = [], 0
    while size < 3_000_000:
        chunk = rng.choice((
            lambda: rng.randbytes(rng.randrange(1, 65536)),
            lambda: b"z" * rng.randrange(LINE_LIMIT, 300_000),  # overlong, no newline for a while
            lambda: b"\x00" * rng.randrange(1, 10000) + b"\n",
            lambda: (hostile_line(rng) + "\n").encode("utf-8", "surrogateescape"),
            lambda: b"get\n" + rng.randbytes(rng.randrange(1, 100)) + b"\n",
            lambda: b"set\n" + LOAD1.encode() + b"\n",
        ))()
        chunks.append(chunk)
        size += len(chunk)
    agent = AgentProcess(tmp_path)
    try:
        # communicate() writes and reads at once (the agent answers while it reads), bounded in time.
        out, err = agent.p.communicate(b"".join(chunks) + b"\nPING\nget\n" + LOAD1.encode() + b"\n", timeout=120)
    finally:
        if agent.p.poll() is None:
            agent.p.kill()
            agent.p.wait()
    assert agent.p.returncode == 0 and err == b"", (agent.p.returncode, err[:500])
    text = out.decode("ascii")
    assert text.endswith(f"PONG\n{LOAD1}\ngauge\n50\n"), text[-200:]
    assert len(protocol_answers(text)) > 10  # the garbage held requests, and each got a protocol answer


# -- garbage in every LB_* variable -------------------------------------------

SECRET_VARS = ("LB_SNMP_COMMUNITY", "LB_SNMP_AUTH_PASSPHRASE", "LB_SNMP_PRIV_PASSPHRASE")
# Secrets are drawn from characters that no message and no other garbage ever contains (Cyrillic
# Extended-B letters, and the upper half of the surrogateescape'd bytes), so "no character of a
# secret in a message" can be checked exactly.
SECRET_CHARS = [chr(c) for c in range(0xA640, 0xA66E)] + [chr(c) for c in range(0xDCC0, 0xDD00)]
SECRET_SET = frozenset(SECRET_CHARS)
OTHER_CHARS = ([chr(c) for c in range(0x20, 0x7F)] + [chr(c) for c in range(0xDC80, 0xDCC0)]
               + ["\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\u00e9", "\ufeff", "\u200b", "\u0663", "\uffff"])
MAX_MESSAGE = 400


def garbage(rng: random.Random, alphabet: list[str]) -> str:
    kind = rng.choice(("short", "short", "short", "long", "huge", "numberish", "numberish", "spaces"))
    if kind == "short":
        return "".join(rng.choices(alphabet, k=rng.randrange(1, 12)))
    if kind == "long":
        return "".join(rng.choices(alphabet, k=rng.randrange(12, 3000)))
    if kind == "huge":
        return "".join(rng.choices(alphabet, k=64)) * (2 * 1024)  # 128 KiB
    if kind == "spaces":
        return " ".join("".join(rng.choices(alphabet, k=5)) for _ in range(rng.randrange(2, 50)))
    if alphabet is SECRET_CHARS:
        return "".join(rng.choices(alphabet, k=rng.randrange(8, 40)))
    return rng.choice(("-1", "1e309", "nan", "inf", "-inf", "0x10", "9" * 30, "1_000", "+5", " 7 ", "\u0663",
                       "3", "2c", "yes", "http://", "http://[", "http://127.0.0.1:99999/", "[::1]:0", "a:b:c"))


def env_of_garbage(rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
    env, secrets = {}, {}
    for var in VARIABLES:
        if rng.random() < 0.3:
            continue
        if var.name in SECRET_VARS:
            env[var.name] = secrets[var.name] = garbage(rng, SECRET_CHARS)
        else:
            env[var.name] = garbage(rng, OTHER_CHARS)
    if rng.random() < 0.5:
        env["LB_SNMP_VERSION"] = "3"
    if rng.random() < 0.3:
        env["SERVER"] = garbage(rng, OTHER_CHARS)
    return env, secrets


NAMES = tuple(v.name for v in VARIABLES)


def test_settings_from_garbage_never_raise_and_messages_name_the_variable_without_secrets():
    cases = max(100, N // 10)  # each case sets every variable, some to 128 KiB
    rng, found = rng_for("settings"), Findings("settings.from_env", cases)
    for case in range(cases):
        env, secrets = env_of_garbage(rng)
        try:
            settings, problems = from_env(env)
        except Exception as exc:
            found.add(case, "from_env", f"raised {type(exc).__name__}", str(sorted(env)))
            continue
        for p in problems:
            name = next((n for n in NAMES if n in p), None)
            if name is None:
                found.add(case, "message", "names no variable", p[:200])
            if len(p) > MAX_MESSAGE:
                found.add(case, "message", f"{name}: {len(p)} characters (at most {MAX_MESSAGE})", p[:200])
            leaked = SECRET_SET & set(p)
            if leaked:
                found.add(case, "message", f"{name}: shows {len(leaked)} character(s) of a secret",
                          p.encode("unicode_escape")[:200].decode())
        if SECRET_SET & set(repr(settings)):
            found.add(case, "repr", "ClientSettings' repr shows a secret")
    found.check()


GET_HOSTS = PROJECT / "chroot" / "get_hosts"
# Bytes of the secrets in the get_hosts runs: none appears in the other variables' garbage.
SECRET_BYTES = b"\xe9\xa4\xfe"


@pytest.mark.fleet
@pytest.mark.parametrize("kind", ["latin1-secrets-v3", "huge", "control", "random-bytes"])
def test_get_hosts_with_garbage_environment_prints_one_line_and_exits_0(kind):
    """Real get_hosts, the environment as bytes (LDM's environment is bytes to the kernel)."""
    rng = rng_for(f"get_hosts/{kind}")
    env = {b"PATH": os.environ["PATH"].encode(), b"SNMPLB_PYTHON": sys.executable.encode(),
           b"LB_SERVERS": b"127.0.0.1:9"}  # a loopback literal: no name to resolve, nothing listening
    others = [v.name.encode() for v in VARIABLES if v.name not in SECRET_VARS and v.name != "LB_SERVERS"]
    secrets = [n.encode() for n in SECRET_VARS]
    if kind == "latin1-secrets-v3":  # an lts.conf saved in Latin-1: one bad byte, then several
        env.update({b"LB_SNMP_AUTH_PASSPHRASE": b"caf" + SECRET_BYTES[:1] + b"-passphrase",
                    b"LB_SNMP_PRIV_PASSPHRASE": b"caf" + SECRET_BYTES * 3, b"LB_SNMP_COMMUNITY": SECRET_BYTES * 3})
        env.update({b"LB_SNMP_VERSION": b"3", b"LB_TIMEOUT_MS": b"\xff100", b"LB_ALGORITHM": b"bal\xc3nced"})
    elif kind == "huge":  # 120 KiB: a single environment string may not exceed 128 KiB (MAX_ARG_STRLEN)
        env.update({n: b"Q" * 120_000 for n in others[:6]})
        env.update({n: SECRET_BYTES * 40_000 for n in secrets})
    elif kind == "control":
        env.update({n: b"\x01\x1b[31m\n\t\r" + bytes([rng.randrange(1, 32)]) * 5 for n in others})
        env.update({n: SECRET_BYTES + b"\n\x1b" + SECRET_BYTES for n in secrets})
    else:
        pool = bytes(b for b in range(1, 256) if b not in SECRET_BYTES)
        env.update({n: bytes(rng.choice(pool) for _ in range(rng.randrange(1, 300))) for n in others})
        env.update({n: bytes(rng.choice(SECRET_BYTES) for _ in range(rng.randrange(1, 40))) for n in secrets})
        env.update({b"LB_LBSERVER_URL": b"http://127.0.0.1:1/\xff"})  # never a name that would need DNS
    r = subprocess.run([str(GET_HOSTS)], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count(b"\n") == 1 and r.stdout.endswith(b"\n"), r.stdout[:300]
    assert r.stdout == b"127.0.0.1\n", r.stdout[:300]  # nothing answered: the configured list
    err = r.stderr
    for b in SECRET_BYTES:
        for shown in (bytes([b]), f"\\x{b:02x}".encode(), f"\\udc{b:02x}".encode(), chr(b).encode()):
            assert shown not in err, (shown, err[:1000])
    assert b"position" not in err, err[:1000]  # where a secret's bad byte is, is part of the secret
    assert len(err) < 64 * 1024, len(err)  # long values are cut, not echoed whole
    if kind == "latin1-secrets-v3":  # the message names the variable (not "internal error")
        assert any(n in err for n in secrets), err[:1000]


# -- one liar among honest servers -------------------------------------------

def _server(name: str, sessions: int, **fields: int) -> ServerState:
    """An application server with 8 CPUs at load 0.3 each, 6 logins a minute, figures 0.5 s old."""
    values = row(load_per_cpu=0.3, cpus=8, sessions=sessions, users=min(sessions, 1), age=500)
    values.update(lbLoginRate=6, lbSshConnections=0)
    values.update(fields)
    return ServerState(name, 161, values, "", 2.0)


HONEST = [_server("h1", 0), _server("h2", 5), _server("h3", 10), _server("h4", 20), _server("h5", 40)]
# Each liar against its honest twin (same sessions, honest rate and age): only the lie differs.
LIARS = {
    "login rate 2^32-1": (15, dict(lbLoginRate=2**32 - 1)),
    "data age at its max": (15, dict(lbDataAge=MAX_DATA_AGE_MS)),
    "sessions huge": (15, dict(lbSessions=2**32 - 1, lbUsers=0)),
    "empty, rate 2^32-1 and oldest data": (0, dict(lbLoginRate=2**32 - 1, lbDataAge=MAX_DATA_AGE_MS)),
    "all at once": (15, dict(lbSessions=2**32 - 1, lbUsers=0, lbLoginRate=2**32 - 1, lbDataAge=MAX_DATA_AGE_MS)),
}
DRAWS = 1000


def honest_shares(servers: list[ServerState]) -> dict[str, float]:
    """How often each honest server comes first under `balanced`, among the draws that chose an honest one
    (the same seeded draws for every fleet, so that the comparison is not noise)."""
    settings = ClientSettings(servers=tuple(Server(s.name) for s in servers), slow_start_s=0)
    rng = random.Random(f"{SEED}/liar")
    firsts = Counter(decide("balanced", servers, Context(settings, rng, "52:54:00:00:00:01")).hosts[0]
                     for _ in range(DRAWS))
    honest = sum(firsts[s.name] for s in HONEST)
    return {s.name: round(firsts[s.name] / honest, 3) for s in HONEST}


@pytest.mark.parametrize("lie", list(LIARS))
def test_one_liar_moves_the_honest_servers_balanced_shares_by_a_few_percent_at_most(lie):
    sessions, lies = LIARS[lie]
    twin, liar = _server("other", sessions), _server("other", sessions, **lies)
    assert not implausible(liar.values), implausible(liar.values)  # absurd, but legal
    before = honest_shares(HONEST + [twin])
    after = honest_shares(HONEST + [liar])
    moved = {n: round(after[n] - before[n], 3) for n in before}
    assert max(abs(d) for d in moved.values()) <= 0.05, f"{lie}: honest shares {before}, moved by {moved}"
