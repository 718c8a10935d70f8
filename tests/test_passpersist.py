"""The pass_persist state machine: answers, numeric getnext order, and garbage that never desyncs it."""

from __future__ import annotations

import io

import pytest

from snmplb import mib
from snmplb.agent.service import LINE_LIMIT, build_table, serve
from snmplb.agent.verdict import HealthPolicy
from snmplb.adminfile import AdminSettings
from snmplb.agent.passpersist import NONE, NOT_WRITABLE, PONG, Entry, Protocol, Table
from snmplb.agent.procfs import ProcSample
from snmplb.agent.logins import SessionCount
from snmplb.agent.values import compute_values

ROOT = mib.oid_str(mib.ROOT)


@pytest.fixture
def table() -> Table:
    proc = ProcSample(10.0, 1.0, 0.5, 0.25, 4, 8000, 4000, 100, 100, 0, 0)
    return build_table(compute_values(proc, (0.0, 0.0), SessionCount(2, 1, "logind"), AdminSettings(),
                                      HealthPolicy()))


def run(table: Table, *lines: str, now: float = 10.5) -> str:
    p = Protocol()
    return "".join(p.feed(line, table, now) for line in lines)


def answer(o: mib.MibObject, value: object) -> str:
    return f"{mib.oid_str(o.instance)}\n{o.pass_type}\n{value}\n"


def test_ping_get_getnext_set(table):
    load = mib.obj("lbLoad1")
    assert run(table, "PING") == PONG
    assert run(table, "get", mib.oid_str(load.instance)) == answer(load, 100)
    assert run(table, "get", mib.oid_str(load.instance)[1:]) == answer(load, 100)  # without the dot
    assert run(table, "get", mib.oid_str(load.oid)) == NONE  # the object, not its instance
    assert run(table, "getnext", ROOT) == answer(load, 100)
    assert run(table, "set", mib.oid_str(load.instance), "gauge 5") == NOT_WRITABLE
    assert run(table, "get", mib.oid_str(mib.obj("lbDataAge").instance)) == answer(mib.obj("lbDataAge"), 500)
    assert run(table, "get", mib.oid_str(mib.ROW.instance)).split("\n")[1] == "string"


def walk(table: Table, start: str) -> list[str]:
    names, oid = [], start
    for _ in range(100):
        out = run(table, "getnext", oid)
        if out == NONE:
            return names
        oid = out.split("\n")[0]
        names.append(oid)
    raise AssertionError("walk did not end")


@pytest.mark.parametrize("start", [
    ".1", ".1.3.6.1.4.1.8072", ROOT, ROOT + ".0", ROOT + ".1", ROOT + ".1.0", ROOT + ".1.1",
    ROOT + ".1.5.7.9", ROOT + ".1.9.0", ROOT + ".1.10", ROOT + ".1.26.0", ROOT + ".1.99", ROOT + ".2",
])
def test_getnext_walk_is_complete_and_numeric_from_any_start(table, start):
    instances = [mib.oid_str(o.instance) for o in mib.OBJECTS]
    start_oid = mib.parse_oid(start)
    expected = [i for i in instances if mib.parse_oid(i) > start_oid]
    assert walk(table, start) == expected
    # numeric, not textual, order: .1.9.0 < .1.10.0
    assert instances.index(ROOT + ".1.9.0") < instances.index(ROOT + ".1.10.0")


def test_garbage_never_desynchronises(table):
    load = mib.obj("lbLoad1")
    good = answer(load, 100)
    oid = mib.oid_str(load.instance)
    assert run(table, "", "  ", "hello", "get", "", oid) == good  # empty and unknown lines skipped
    assert run(table, "get", "not an oid", "get", oid) == NONE + good
    assert run(table, "get", ".1.3.x.4", "get", oid) == NONE + good
    assert run(table, "get", "PING", "get", oid) == NONE + PONG + good  # get with no OID
    assert run(table, "getnext", "get", oid) == NONE + good
    assert run(table, "set", oid, "PING") == NOT_WRITABLE + PONG
    assert run(table, "set", "get", oid) == NOT_WRITABLE + good
    assert run(table, "\x00\xff\ufffd", "GET", oid) == good
    assert run(table, "get", "." + "1." * 3000 + "1", "PING") == NONE + PONG
    assert run(table, "get", "99999999999999999999.1") == NONE


def test_serve_stream_handles_overlong_and_binary_lines_and_stops_at_eof(table):
    class Fixed:
        def __init__(self, t: Table) -> None:
            self.table = t

    oid = mib.oid_str(mib.obj("lbCpuCount").instance)
    data = (b"PING\n" + b"x" * (LINE_LIMIT * 3) + b"\n" + b"\x00\x01\x80\xfe garbage\n"
            + b"get\n" + b"7" * (LINE_LIMIT + 10) + b"\n"  # an overlong OID line
            + b"get\r\n" + oid.encode() + b"\r\n" + b"get\n")  # EOF inside a request
    out = io.BytesIO()
    serve(io.BytesIO(data), out, Fixed(table))
    assert out.getvalue().decode() == PONG + NONE + answer(mib.obj("lbCpuCount"), 4)


def test_string_values_cannot_break_lines():
    t = Table([Entry((1, 2), "string", "two\nlines\r")])
    assert run(t, "get", ".1.2") == ".1.2\nstring\ntwo lines \n"
