"""`snmplb status` run as a process against a real fleet."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from conftest import BIN, COMMUNITY
from netfixtures import Silent
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import FakeLoad
from snmplb.client.settings import ALGORITHMS
from support import status

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)


def test_one_line_per_server_with_state_and_the_picks(fleet):
    idle = fleet.add("idle", FakeLoad(load1=0.8, cpus=4, sessions=(("a", "h"), ("b", "h"))))
    busy = fleet.add("busy", FakeLoad(load1=8.0, cpus=4))
    swap = fleet.add("swap", FakeLoad(pswpin=0))
    drain = fleet.add("drain", admin=AdminSettings(state="draining"))
    full = fleet.add("full", FakeLoad(sessions=(("a", "h"),)), AdminSettings(max_sessions=1))
    off = fleet.add("off", admin=AdminSettings(state="disabled"))
    silent = Silent("127.0.0.49")
    try:
        servers = " ".join(i.address for i in (idle, busy, swap, drain, full, off)) + " " + silent.address
        assert status(LB_SERVERS=servers).returncode == 0  # snmpd starts each agent at its first request
        swap.set_load(FakeLoad(pswpin=100_000))  # swap counters jump: the agent sees swapping
        idle.set_load(FakeLoad(load1=0.8, cpus=4, sessions=(("a", "h"), ("b", "h")), ssh_connections=5))  # 3 new
        time.sleep(1.2)
        r = status(LB_SERVERS=servers, LB_ALGORITHM="sticky")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        states = {ln.split()[0]: ln.split()[1] for ln in lines[1:8]}
        assert states == {idle.address: "Idle", busy.address: "Busy", swap.address: "Swapping",
                          drain.address: "Draining", full.address: "Full", off.address: "Disabled",
                          silent.address: "Down"}
        idle_line = next(ln for ln in lines if ln.startswith(idle.address))
        assert " 0.20 " in idle_line and " 2 " in idle_line and " ms" in idle_line
        assert lines[0].split()[8] == "LOGINS/MIN" and idle_line.split()[8] == "18"  # 3 new ssh connections in 10 s
        # The poll's own wait, counted from its start a moment after the deadline was set: 500 ms, or 499
        # when that moment passed half a millisecond.
        assert re.search(r"no answer within (499|500) ms", lines[7]), lines[7]
        assert "6 of 7 answered" in r.stdout
        picks = {ln[3:].split()[0]: ln[3:].split()[1:] for ln in lines[10:]}  # " * name host host ..."
        assert set(picks) == set(ALGORITHMS)
        assert [ln[3:].split()[0] for ln in lines[10:] if ln[1] == "*"] == ["sticky"]  # the configured one
        for name, hosts in picks.items():
            assert sorted(hosts) == sorted([idle.host, busy.host, swap.host]), name
        assert picks["thresholded"][-1] == swap.host  # skipped for swapping: listed last
        j = json.loads(status("--json", LB_SERVERS=servers).stdout)
        assert j["answered"] == 6 and len(j["servers"]) == 7
        assert j["servers"][0]["sessions"] == 2 and j["servers"][0]["state"] == "Idle"
        assert j["servers"][0]["ssh_connections"] == 5 and j["servers"][0]["logins_per_min"] == 18
        assert j["servers"][0]["in_service_s"] == 86400  # the fake machine's uptime
        assert j["servers"][2]["swapping"] is True and j["servers"][6]["state"] == "Down"
        assert set(j["picks"]) == set(ALGORITHMS)
        assert all(h in (idle.host, busy.host, swap.host) for hosts in j["picks"].values() for h in hosts)
    finally:
        silent.stop()


def test_exit_status_is_1_when_no_server_answers_and_watch_repeats(fleet):
    r = status(LB_SERVERS="127.0.0.51:1 127.0.0.52:1")
    assert r.returncode == 1 and "0 of 2 answered" in r.stdout
    one = fleet.add("one")
    r = status("--watch", "0.2", "--count", "3", LB_SERVERS=one.address)
    assert r.returncode == 0 and r.stdout.count("1 of 1 answered") == 3
    assert status("--watch", "0", LB_SERVERS=one.address).returncode == 2


def test_reads_lts_conf_with_the_clients_section(fleet, tmp_path):
    a, b = fleet.add("a"), fleet.add("b")
    conf = tmp_path / "lts.conf"
    conf.write_text(f'[Default]\nLB_SERVERS = "{a.address}"\nLB_SNMP_COMMUNITY = {COMMUNITY}\n'
                    f'[52:54:00:aa:bb:cc]\nLB_SERVERS = "{a.address} {b.address}"\nLB_ALGORITHM = fixed\n'
                    "LB_TIMEOUT_MS = bogus\n")
    r = subprocess.run([str(BIN / "snmplb"), "status", "--lts-conf", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "1 of 1 answered" in r.stdout
    r = subprocess.run([str(BIN / "snmplb"), "status", "--lts-conf", str(conf), "--client", "52:54:00:AA:BB:CC"],
                       capture_output=True, text=True, timeout=60)
    assert "2 of 2 answered" in r.stdout and "* fixed" in r.stdout
    assert "LB_TIMEOUT_MS: 'bogus'" in r.stdout
    r = subprocess.run([str(BIN / "snmplb"), "status", "--lts-conf", str(tmp_path / "none")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "No such file" in r.stderr
    # A BOM, an inline comment, and a LIKE loop (reported with the other settings problems, under
    # "Settings:", naming the file; the rest still applies).
    conf.write_bytes(("\ufeff[Default]\nLIKE = lab\n[lab]\nLIKE = Default\n"
                      f"LB_SERVERS = {a.address}   # the lab server\nLB_SNMP_COMMUNITY = {COMMUNITY} # shared\n")
                     .encode())
    r = subprocess.run([str(BIN / "snmplb"), "status", "--lts-conf", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "1 of 1 answered" in r.stdout, (r.stdout, r.stderr)
    assert f"{conf}: LIKE loop [default] -> [lab] -> [default]" in r.stdout and "Traceback" not in r.stderr
