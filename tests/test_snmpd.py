"""The agent behind a real net-snmp snmpd, with the project's drop-in, on loopback.

Readable by name (net-snmp tools with the MIB) and by numeric OID (pysnmp,
SNMPv2c and SNMPv3 authPriv); complete walks; values that follow the fake
/proc and the admin's commands; respawn after the agent dies; access control.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN, COMMUNITY, V3, wait_for
from snmplb import mib
from snmplb.lab.fleet import FakeLoad

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

ROOT = mib.oid_str(mib.ROOT)


def pysnmp_get(inst, oids, v3=None, community=COMMUNITY):
    """GET by numeric OID with pysnmp's asyncio API; returns {oid: pysnmp value} or raises."""
    from pysnmp.hlapi.v3arch import asyncio as h

    async def go():
        engine = h.SnmpEngine()
        try:
            target = await h.UdpTransportTarget.create((inst.host, inst.port), timeout=1, retries=1)
            if v3:
                auth = h.UsmUserData(v3[0], v3[1], v3[2], authProtocol=h.usmHMACSHAAuthProtocol,
                                     privProtocol=h.usmAesCfb128Protocol)
            else:
                auth = h.CommunityData(community, mpModel=1)
            err, status, _, binds = await h.get_cmd(engine, auth, target, h.ContextData(),
                                                    *[h.ObjectType(h.ObjectIdentity(o)) for o in oids])
            if err or status:
                raise RuntimeError(str(err or status.prettyPrint()))
            return {"." + str(name): value for name, value in binds}
        finally:
            engine.close_dispatcher()

    return asyncio.run(go())


def parse_q(output: str) -> dict[str, str]:
    """``-Oq`` output lines ``NAME VALUE`` as a dict."""
    out = {}
    for line in output.splitlines():
        name, _, value = line.partition(" ")
        out[name] = value.strip().strip('"')
    return out


def test_every_object_readable_by_name_with_snmpget_and_snmpwalk(agent, netsnmp):
    names = [f"{mib.MODULE}::{o.name}.0" for o in mib.OBJECTS]
    r = netsnmp.v2c("snmpget", agent, *names, opts=("-Oq",), names=True)
    assert r.returncode == 0, r.stderr
    got = parse_q(r.stdout)
    assert list(got) == names
    assert all("No Such" not in v for v in got.values()), got
    assert got[f"{mib.MODULE}::lbLoad1.0"] == "1.50"  # DISPLAY-HINT d-2
    assert got[f"{mib.MODULE}::lbStatus.0"] == "idle"  # load 1.5 on 4 CPUs
    assert got[f"{mib.MODULE}::lbLoadPerCpu.0"] == ".38"  # net-snmp drops the leading 0
    assert got[f"{mib.MODULE}::lbSessions.0"] == "3" and got[f"{mib.MODULE}::lbUsers.0"] == "2"
    assert got[f"{mib.MODULE}::lbSshConnections.0"] == "3"  # the fake /proc/net/tcp: one per session
    assert got[f"{mib.MODULE}::lbAgentVersion.0"].startswith("snmplb-agent ")
    r = netsnmp.v2c("snmpwalk", agent, mib.MODULE + "::snmplbObjects", opts=("-Oq",), names=True)
    assert list(parse_q(r.stdout)) == names


def test_numeric_get_with_pysnmp_over_v2c_and_v3_authpriv(agent):
    oids = [mib.oid_str(o.instance) for o in mib.OBJECTS]
    v2 = pysnmp_get(agent, oids)
    v3 = pysnmp_get(agent, oids, v3=(V3.name, V3.auth_pass, V3.priv_pass))
    assert list(v2) == oids and list(v3) == oids
    for o in mib.OBJECTS:
        a, b = v2[mib.oid_str(o.instance)], v3[mib.oid_str(o.instance)]
        assert a.__class__.__name__ not in ("NoSuchInstance", "NoSuchObject"), o.name
        # lbLoginRateSpan grows over the agent's first 10 s (the agent fixture has just started it), and
        # with it what lbLoginRate covers: both may differ between the two GETs, as lbDataAge does.
        if o.name not in ("lbDataAge", "lbRow", "lbLoginRateSpan", "lbLoginRate"):
            assert a == b, o.name
    assert v2[mib.oid_str(mib.obj("lbSwapInPages").instance)].__class__.__name__ == "Counter64"
    row = mib.decode_row(str(v2[mib.oid_str(mib.ROW.instance)]))
    assert row is not None
    for o in mib.ROW_FIELDS:
        if o.name not in ("lbDataAge", "lbLoginRateSpan", "lbLoginRate"):  # the same: between two samples
            assert row[o.name] == int(v2[mib.oid_str(o.instance)]), o.name


def test_v3_wrong_passphrase_and_unknown_community_get_nothing(agent, netsnmp):
    with pytest.raises(RuntimeError):
        pysnmp_get(agent, [ROOT + ".1.1.0"], v3=(V3.name, "wrong-pass-1", V3.priv_pass))
    r = netsnmp.v3("snmpget", agent, ROOT + ".1.1.0", auth="wrong-pass-1")
    assert r.returncode != 0 and "Authentication failure" in r.stderr
    r = netsnmp.v2c("snmpget", agent, ROOT + ".1.1.0", community="public")
    assert r.returncode != 0 and "Timeout" in r.stderr


@pytest.mark.parametrize("start", [ROOT, ROOT + ".1", ROOT + ".1.0", ROOT + ".1.5.7.9", ROOT + ".1.9",
                                   ROOT + ".1.26", ROOT + ".0", ".1.3.6.1.4.1.8072.9999.9999.376.5"])
def test_walk_from_any_start_gives_the_mibs_objects_in_order(agent, netsnmp, start):
    end = ".1.3.6.1.4.1.8072.9999.9999.378"
    r = netsnmp.v2c("snmpwalk", agent, start, opts=("-On", "-Oq", "-CE", end))
    walked = list(parse_q(r.stdout))
    instances = [mib.oid_str(o.instance) for o in mib.OBJECTS]
    start_oid = mib.parse_oid(start)
    assert walked == [i for i in instances if mib.parse_oid(i) > start_oid]


def test_values_follow_fake_proc_and_admin_commands(agent, netsnmp):
    def get(name):
        r = netsnmp.v2c("snmpget", agent, mib.oid_str(mib.obj(name).instance), opts=("-Oqv",))
        return r.stdout.strip()

    assert get("lbLoad1") == "150"
    assert get("lbInService") == "86400"  # the fake machine's uptime
    agent.set_load(FakeLoad(load1=9.0, cpus=2, mem_available=100_000,
                            sessions=(("ann", "h1"),), ssh_connections=5))
    t0 = time.monotonic()
    assert wait_for(lambda: get("lbLoad1") == "900" and get("lbSessions") == "1", timeout=3)
    assert get("lbSshConnections") == "5"
    assert get("lbLoginRate") == "12"  # 3 connections at the start, then 5: 2 new within 10 s, 12 per minute
    assert time.monotonic() - t0 < 3
    assert get("lbLoadPerCpu") == "450" and get("lbStatus") == "2"  # busy

    admin = [str(BIN / "snmplb-admin"), "--file", str(agent.admin_file)]
    r = subprocess.run(admin + ["drain"], capture_output=True, text=True)
    assert r.returncode == 0 and "state=draining" in r.stdout
    assert wait_for(lambda: get("lbAdminState") == "2" and get("lbStatus") == "5", timeout=3)
    assert get("lbRating") == "0"
    subprocess.run(admin + ["weight", "250"], check=True, capture_output=True)
    subprocess.run(admin + ["max-sessions", "1"], check=True, capture_output=True)
    subprocess.run(admin + ["enable"], check=True, capture_output=True)
    assert wait_for(lambda: get("lbWeight") == "250" and get("lbStatus") == "4", timeout=3)  # full
    assert int(get("lbInService")) < 30  # just enabled again: thin clients slow-start it
    r = subprocess.run(admin + ["weight", "lots"], capture_output=True, text=True)
    assert r.returncode == 2 and "weight" in r.stderr
    assert get("lbWeight") == "250"
    r = subprocess.run(admin + ["show"], capture_output=True, text=True)
    assert r.stdout.strip() == "state=enabled weight=250 max_sessions=1"


def test_swap_activity_makes_it_swapping(fleet, netsnmp):
    inst = fleet.add("swapper", FakeLoad(pswpin=1000, pswpout=1000))
    get = lambda name: netsnmp.v2c("snmpget", inst, mib.oid_str(mib.obj(name).instance), opts=("-Oqv",)).stdout.strip()
    assert get("lbSwapInPages") == "1000"
    inst.set_load(FakeLoad(pswpin=101_000, pswpout=51_000))
    assert wait_for(lambda: get("lbSwapping") == "1", timeout=3)
    assert get("lbStatus") == "3" and int(get("lbSwapInRate")) > 50 and get("lbRating") == "10"


def test_killed_agent_is_respawned_by_snmpd(agent, netsnmp):
    oid = mib.oid_str(mib.obj("lbCpuCount").instance)
    assert netsnmp.v2c("snmpget", agent, oid, opts=("-Oqv",)).stdout.strip() == "4"
    pids = agent.agent_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: agent.agent_pids() != pids, timeout=2)
    r = wait_for(lambda: (lambda r: r if r.stdout.strip() == "4" else None)(
        netsnmp.v2c("snmpget", agent, oid, opts=("-Oqv",))), timeout=5)
    assert r, "no answer after the agent was killed"
    assert agent.agent_pids() and agent.agent_pids() != pids


def test_community_refused_outside_its_subnet_and_set_refused(agent, netsnmp):
    oid = mib.oid_str(mib.obj("lbWeight").instance)
    assert netsnmp.v2c("snmpget", agent, oid, opts=("-Oqv",)).returncode == 0
    r = netsnmp.v2c("snmpget", agent, oid, opts=("--clientaddr=127.0.0.2", "-r0"))
    assert r.returncode != 0 and "Timeout" in r.stderr
    r = netsnmp.v2c("snmpset", agent, oid, "u", "5")
    assert r.returncode != 0 and "noAccess" in r.stdout + r.stderr
    r = netsnmp.v3("snmpset", agent, oid, "u", "5")
    assert r.returncode != 0 and ("noAccess" in r.stdout + r.stderr or "notWritable" in r.stdout + r.stderr)
    assert netsnmp.v2c("snmpget", agent, oid, opts=("-Oqv",)).stdout.strip() == "100"


def test_view_is_limited_to_what_is_needed(agent, netsnmp):
    """The agent answers (so silence cannot pass for a refusal), inside the view and nowhere else."""
    assert netsnmp.v2c("snmpget", agent, ".1.3.6.1.4.1.2021.10.1.3.1", opts=("-Oqv",)).returncode == 0
    view = (".1.3.6.1.4.1.8072.9999.9999.377", ".1.3.6.1.2.1.1", ".1.3.6.1.2.1.25.1", ".1.3.6.1.4.1.2021.4",
            ".1.3.6.1.4.1.2021.10", ".1.3.6.1.4.1.2021.11")
    for outside in (".1.3.6.1.2.1.2", ".1.3.6.1.2.1.4", ".1.3.6.1.2.1.25.2", ".1.3.6.1.2.1.25.4",
                    ".1.3.6.1.4.1.2021.9", ".1.3.6.1.6.3.15"):  # interfaces, ip, storage, processes, disks, usm
        r = netsnmp.v2c("snmpwalk", agent, outside, opts=("-On",))
        assert r.returncode == 0 and "Timeout" not in r.stderr, (outside, r.stderr)  # it answered...
        assert re.fullmatch(rf"\{outside} = (No Such Object available on this agent at this OID|No more variables "
                            r"left in this MIB View \(It is past the end of the MIB tree\))\n", r.stdout), r.stdout  # ...no
    # A walk of everything stays inside the view: every OID it returns is under one of its subtrees.
    r = netsnmp.v2c("snmpwalk", agent, ".1", opts=("-On", "-Cc"))
    oids = [line.split(" ", 1)[0] for line in r.stdout.splitlines() if line.startswith(".")]
    assert r.returncode == 0 and oids, r.stderr
    assert [o for o in oids if not any(o == v or o.startswith(v + ".") for v in view)] == []
    assert any(o.startswith(view[0] + ".") for o in oids)
