"""`snmplb pick`, run as a process against a real fleet: get_hosts' decision, for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import BIN, COMMUNITY
from netfixtures import Silent
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import FakeLoad
from snmplb.login.pick import NONE_USABLE, host_port
from support import IDLE, addrs, get_hosts, hosts_of

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

BUSY = FakeLoad(load1=12.0, cpus=4)


def pick(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "800",
            "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", **env}
    return subprocess.run([str(BIN / "snmplb"), "pick", *args], env=full, capture_output=True, text=True,
                          timeout=60)


def test_host_port_brackets_ipv6():
    assert host_port("10.0.0.1", 22) == "10.0.0.1:22"
    assert host_port("app1.example", 3389) == "app1.example:3389"
    assert host_port("::1", 22) == "[::1]:22"


def test_pick_is_get_hosts_decision_for_every_algorithm(fleet):
    servers = addrs([fleet.add("a", IDLE), fleet.add("b", BUSY), fleet.add("c", IDLE),
                     fleet.add("d", admin=AdminSettings(state="draining"))])
    for algorithm in ("fixed", "random", "best", "weighted", "thresholded", "sticky", "balanced"):
        env = dict(LB_ALGORITHM=algorithm, LB_SEED="7", LB_CLIENT_ID="52:54:00:12:34:56")
        ldm = hosts_of(get_hosts(servers, **env))
        one = pick(LB_SERVERS=servers, **env)
        assert one.returncode == 0, one.stderr
        assert one.stdout == ldm[0] + "\n", algorithm
        every = pick("--all", LB_SERVERS=servers, **env)
        assert every.stdout.split("\n")[:-1] == ldm, algorithm
        assert "127.0.0.14" not in every.stdout  # draining: never


def test_port_json_and_why_each_server_was_skipped(fleet):
    a, b = fleet.add("a", IDLE), fleet.add("b", FakeLoad(load1=0.4, cpus=4, ssh_listening=False))
    off = fleet.add("off", admin=AdminSettings(state="disabled"))
    silent = Silent("127.0.0.49")
    try:
        servers = addrs([a, b, off]) + " " + silent.address
        r = pick("--port", "22", LB_SERVERS=servers, LB_ALGORITHM="fixed")
        assert (r.returncode, r.stdout) == (0, f"{a.host}:22\n"), r.stderr
        r = pick("--all", "--port", "3389", LB_SERVERS=servers, LB_ALGORITHM="fixed")
        assert r.stdout == f"{a.host}:3389\n"
        r = pick("--json", "--port", "22", LB_SERVERS=servers, LB_ALGORITHM="fixed")
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        assert j["chosen"] == f"{a.host}:22" and j["hosts"] == [f"{a.host}:22"] and j["usable"] is True
        skipped = {s["host"]: s["skipped"] for s in j["servers"]}
        assert skipped[a.host] is None
        assert skipped[b.host] == "ssh not listening"
        assert skipped[off.host] == "admin state disabled"
        assert "no answer" in skipped["127.0.0.49"] or "timeout" in skipped["127.0.0.49"], skipped
        failure = {s["host"]: s["failure"] for s in j["servers"]}  # the kind, as the poller set it
        assert failure == {a.host: None, b.host: None, off.host: None, "127.0.0.49": "unreachable"}, failure
    finally:
        silent.stop()


def test_none_usable_is_exit_3_and_fallback_prints_the_configured_list(fleet):
    drained = fleet.add("d", admin=AdminSettings(state="draining"))
    silent = Silent("127.0.0.49")
    try:
        servers = f"{silent.address} {drained.address}"
        r = pick(LB_SERVERS=servers)
        assert (r.returncode, r.stdout) == (NONE_USABLE, "")
        assert "no usable server" in r.stderr and "Traceback" not in r.stderr
        r = pick("--fallback", "--all", LB_SERVERS=servers)
        # get_hosts' last resort: the configured list without the server whose admin said no
        assert r.returncode == NONE_USABLE and r.stdout == "127.0.0.49\n"
        assert hosts_of(get_hosts(servers)) == ["127.0.0.49"]
        j = json.loads(pick("--json", LB_SERVERS=servers).stdout)
        assert j["chosen"] is None and j["usable"] is False and j["hosts"] == []
    finally:
        silent.stop()
    r = pick(LB_SERVERS="")
    assert r.returncode == NONE_USABLE and "LB_SERVERS" in r.stderr


def test_settings_from_lts_conf_and_client_conf_and_bad_values_name_their_key(fleet, tmp_path):
    a, b = fleet.add("a", IDLE), fleet.add("b", IDLE)
    lts = tmp_path / "lts.conf"
    lts.write_text(f"[default]\nLB_SERVERS = {addrs([a, b])}\nLB_ALGORITHM = fixed\n"
                   f"[52:54:00:00:00:01]\nLB_SERVERS = {b.address} {a.address}\n")
    conf = tmp_path / "client.conf"
    conf.write_text(f"LB_SNMP_COMMUNITY = {COMMUNITY}\n")
    conf.chmod(0o600)
    env = {"PATH": os.environ["PATH"], "LB_TIMEOUT_MS": "800", "LB_SERVERS": "127.0.0.99:1"}
    run = lambda *args: subprocess.run([str(BIN / "snmplb"), "pick", *args], env=env, capture_output=True,  # noqa: E731
                                       text=True, timeout=60)
    r = run("--lts-conf", str(lts), "--client-conf", str(conf))
    assert (r.returncode, r.stdout) == (0, f"{a.host}\n"), r.stderr
    r = run("--lts-conf", str(lts), "--client", "52:54:00:00:00:01", "--client-conf", str(conf))
    assert (r.returncode, r.stdout) == (0, f"{b.host}\n"), r.stderr
    r = pick(LB_SERVERS=addrs([a, b]), LB_ALGORITHM="fixd", LB_MAX_LOAD="lots")
    assert r.returncode == 0 and "LB_ALGORITHM" in r.stderr and "LB_MAX_LOAD" in r.stderr


def test_usage_errors_are_exit_2_without_traceback(tmp_path):
    for args in (["--port", "0"], ["--port", "ssh"], ["--all", "--json"], ["--lts-conf", str(tmp_path / "none")]):
        r = pick(*args, LB_SERVERS="127.0.0.1:1")
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip(), args


def test_status_still_works_and_get_hosts_imports_none_of_it():
    r = subprocess.run([str(BIN / "snmplb"), "status", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--watch" in r.stdout
    code = ("import sys\nimport snmplb.client.gethosts\n"
            "print(sorted(m for m in sys.modules if m in ('snmplb.login.pick', 'snmplb.login.connect', 'snmplb.client.describe', 'json')))")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == "[]\n", r.stdout + r.stderr


@pytest.mark.parametrize("bad", ["LB_TIMEOUT_MS=abc", "LB_SAMPLE=-1"])
def test_a_bad_number_names_its_key_and_still_picks(fleet, bad):
    a = fleet.add("a", IDLE)
    key, value = bad.split("=")
    r = pick(LB_SERVERS=a.address, **{key: value})
    assert r.returncode == 0 and r.stdout == f"{a.host}\n" and key in r.stderr
