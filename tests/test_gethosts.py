"""get_hosts end to end: the chroot script run as LDM runs it, against real snmpd agents on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, COMMUNITY, V3
from netfixtures import DelayProxy, FakeLbserver, HostileProxy, Silent
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import PROJECT, FakeLoad
from support import BUSY, GET_HOSTS, IDLE, addrs, get_hosts, hosts_of

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

def test_output_is_one_line_of_single_spaced_hosts_chosen_first(trio):
    r = get_hosts(addrs(trio), LB_ALGORITHM="fixed")
    assert hosts_of(r) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert r.stderr == ""


@pytest.mark.parametrize("algorithm", ["thresholded", "random", "best", "weighted", "fixed", "sticky"])
def test_every_algorithm_end_to_end_lists_the_responders(trio, algorithm):
    for seed in range(3):
        got = hosts_of(get_hosts(addrs(trio), LB_ALGORITHM=algorithm, LB_SEED=str(seed)))
        assert sorted(got) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        if algorithm in ("thresholded", "best"):
            assert got[-1] == "127.0.0.13"  # the busy one: over LB_MAX_LOAD, lowest rating


def test_draining_full_and_disabled_servers_are_never_listed(fleet):
    ok = fleet.add("ok", IDLE)
    drain = fleet.add("drain", IDLE, AdminSettings(state="draining"))
    full = fleet.add("full", FakeLoad(sessions=(("a", "h"), ("b", "h"))), AdminSettings(max_sessions=2))
    off = fleet.add("off", IDLE, AdminSettings(state="disabled"))
    for algorithm in ("thresholded", "best", "sticky", "fixed"):
        assert hosts_of(get_hosts(addrs([drain, full, off, ok]), LB_ALGORITHM=algorithm)) == [ok.host]


def test_dead_silent_and_late_servers_are_never_chosen_and_cost_at_most_the_timeout(fleet):
    a, b = fleet.add("a", IDLE), fleet.add("b", IDLE)
    late_backend = fleet.add("late", IDLE)
    late = DelayProxy("127.0.0.40", (late_backend.host, late_backend.port), delay=1.5)
    silent = Silent("127.0.0.41")
    dead = Silent("127.0.0.42")
    dead_addr = dead.address
    dead.stop()  # nothing listens there any more
    try:
        servers = f"{dead_addr} {silent.address} {late.address} {a.address} {b.address}"
        for algorithm in ("thresholded", "fixed", "best", "sticky"):
            t0 = time.monotonic()
            r = get_hosts(servers, LB_ALGORITHM=algorithm, LB_TIMEOUT_MS="400")
            took = time.monotonic() - t0
            assert sorted(hosts_of(r)) == [a.host, b.host]
            assert took < 0.4 + 2.0  # generous: the timeout plus process start-up on a busy machine
    finally:
        late.stop()
        silent.stop()


def test_sampled_mode_does_not_wait_for_a_silent_server_once_another_answered(fleet):
    a, b = fleet.add("a", IDLE), fleet.add("b", IDLE)
    silent = Silent("127.0.0.49")
    try:
        servers = f"{silent.address} {a.address} {b.address}"
        for seed in range(6):  # every sample of 2 of these 3 holds a live server; some hold the silent one
            t0 = time.monotonic()
            r = get_hosts(servers, LB_SAMPLE="2", LB_SEED=str(seed), LB_TIMEOUT_MS="6000")
            took = time.monotonic() - t0
            got = hosts_of(r)
            # Only servers that answered are listed: the silent one never, polled or not.
            assert got and set(got) <= {a.host, b.host}, got
            assert took < 3.0, took  # not the 6 s deadline: decided ~50 ms after the live one answered
    finally:
        silent.stop()


def test_slow_server_within_the_timeout_is_skipped_by_thresholded(fleet):
    fast = fleet.add("fast", IDLE)
    backend = fleet.add("slowbackend", IDLE)
    slow = DelayProxy("127.0.0.43", (backend.host, backend.port), delay=0.25)
    try:
        for seed in range(4):
            got = hosts_of(get_hosts(f"{slow.address} {fast.address}", LB_MAX_RESPONSE_MS="100",
                                     LB_TIMEOUT_MS="2000", LB_SEED=str(seed), LB_ALGORITHM="thresholded"))
            assert got == [fast.host, "127.0.0.43"]  # answered, so listed, but after the fast one
    finally:
        slow.stop()


def test_garbage_and_spoofed_replies_do_not_change_the_result(fleet):
    busy = fleet.add("busy", BUSY)
    idle = fleet.add("idle", FakeLoad(load1=1.0, cpus=4))
    hostile = HostileProxy("127.0.0.44", "127.0.0.45", (busy.host, busy.port), COMMUNITY.encode())
    try:
        # The lies say 127.0.0.44 is an idle 64-CPU server; the truth (via the relay) is load 3.0 per CPU.
        for seed in range(4):
            r = get_hosts(f"{hostile.address} {idle.address}", LB_ALGORITHM="best", LB_SEED=str(seed),
                          LB_TIMEOUT_MS="2000")
            assert hosts_of(r) == [idle.host, "127.0.0.44"], r.stderr  # stderr says why, should it ever fail
        r = subprocess.run([str(Path(sys.executable).parent / "snmplb"), "status", "--json"], capture_output=True,
                           text=True, env={**os.environ, "LB_SERVERS": hostile.address, "LB_SNMP_COMMUNITY": COMMUNITY,
                                           "LB_TIMEOUT_MS": "2000"}, timeout=60)
        import json
        server = json.loads(r.stdout)["servers"][0]
        assert server["cpus"] == 4 and server["load_per_cpu"] == 3.0
    finally:
        hostile.stop()


def test_no_server_answers_gives_the_configured_list_in_order(fleet):
    silent = Silent("127.0.0.46")
    try:
        r = get_hosts(f"127.0.0.47:1 {silent.address} 127.0.0.48:2", LB_TIMEOUT_MS="200")
        assert hosts_of(r) == ["127.0.0.47", "127.0.0.46", "127.0.0.48"]
        assert "no server answered" in r.stderr and "nothing listening" in r.stderr
    finally:
        silent.stop()


def test_bad_settings_are_reported_by_name_and_defaults_used(trio):
    r = get_hosts(addrs(trio) + " not;a;host", LB_ALGORITHM="quickest", LB_TIMEOUT_MS="fast",
                  LB_MAX_LOAD="lots", LB_ALGORITHM_TYPO="x")
    got = hosts_of(r)
    assert sorted(got) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"] and got[-1] == "127.0.0.13"
    for var in ("LB_ALGORITHM", "LB_TIMEOUT_MS", "LB_MAX_LOAD", "LB_SERVERS"):
        assert f"get_hosts: {var}:" in r.stderr


def test_wrong_community_is_a_failed_server_not_a_hang(trio):
    t0 = time.monotonic()
    r = get_hosts(addrs(trio), LB_SNMP_COMMUNITY="wrong-community", LB_TIMEOUT_MS="300")
    assert hosts_of(r) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]  # nothing answered: configured order
    assert time.monotonic() - t0 < 0.3 + 2.0


def test_snmpv3_authpriv_end_to_end_and_wrong_passphrase_reported(trio):
    v3 = {"LB_SNMP_VERSION": "3", "LB_SNMP_USER": V3.name, "LB_SNMP_AUTH_PASSPHRASE": V3.auth_pass,
          "LB_SNMP_PRIV_PASSPHRASE": V3.priv_pass, "LB_SNMP_COMMUNITY": "not-used"}
    r = get_hosts(addrs(trio), LB_ALGORITHM="best", **v3)
    got = hosts_of(r)
    assert sorted(got) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"] and got[-1] == "127.0.0.13"
    assert r.stderr == ""
    r = get_hosts(addrs(trio), **{**v3, "LB_SNMP_AUTH_PASSPHRASE": "not-the-passphrase"})
    assert hosts_of(r) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert "wrong auth passphrase" in r.stderr
    assert "not-the-passphrase" not in r.stderr and V3.priv_pass not in r.stderr
    r = get_hosts(addrs(trio), **{**v3, "LB_SNMP_USER": "mallory"})
    assert "unknown SNMPv3 user name" in r.stderr


def test_one_server_refusing_our_snmpv3_credentials_does_not_hold_the_login_to_the_deadline(fleet, tmp_path):
    """A server whose snmpd has another passphrase for our user answers every GET with an unauthenticated
    report. That is only a tentative reason (a forgery looks the same), but once the other servers have
    answered, the poll waits only a few round trips more for a genuine answer, not LB_TIMEOUT_MS (here
    20 s) at every login: get_hosts ends long before it (the subprocess's bound is a liveness check, not a
    measurement) and still names the refused credentials."""
    from snmplb.lab.fleet import Fleet, V3User

    good = fleet.add("good", IDLE)
    with Fleet(tmp_path / "other", community=COMMUNITY, v3_user=V3User(V3.name, "another-auth-9", "another-priv-9")) as other:
        refusing = other.add("refusing", IDLE)
        v3 = {"LB_SNMP_VERSION": "3", "LB_SNMP_USER": V3.name, "LB_SNMP_AUTH_PASSPHRASE": V3.auth_pass,
              "LB_SNMP_PRIV_PASSPHRASE": V3.priv_pass, "LB_TIMEOUT_MS": "20000"}
        get_hosts(addrs([good, refusing]), **v3)  # snmpd starts each agent at its first request
        r = subprocess.run([sys.executable, "-I", "-c", "from snmplb.client.gethosts import main; main()"],
                           env={"PATH": os.environ["PATH"], "LB_SERVERS": addrs([good, refusing]),
                                "SNMPLB_CLIENT_CONF": "/nonexistent", **v3},
                           capture_output=True, text=True, timeout=12)
        assert r.stdout.split() == [good.host], (r.stdout, r.stderr)
        # The reason, as pick --json shows it (get_hosts logs it to syslog only when another server answered).
        p = subprocess.run([str(BIN / "snmplb"), "pick", "--json"], capture_output=True, text=True, timeout=12,
                           env={"PATH": os.environ["PATH"], "LB_SERVERS": addrs([good, refusing]),
                                "SNMPLB_CLIENT_CONF": "/nonexistent", **v3})
    refused = next(s for s in json.loads(p.stdout)["servers"] if f"{s['host']}:{s['port']}" == refusing.address)
    assert refused["reason"].startswith("wrong auth passphrase") and refused["failure"] == "auth", refused
    assert "another-auth-9" not in p.stdout + p.stderr and V3.auth_pass not in p.stdout + p.stderr


def test_sticky_keeps_the_choice_and_moves_only_the_dead_servers_clients(fleet):
    insts = [fleet.add(f"s{i}", IDLE) for i in range(4)]
    clients = [f"52:54:00:00:00:{i:02x}" for i in range(24)]

    def firsts(servers: str) -> dict[str, str]:
        return {c: hosts_of(get_hosts(servers, LB_ALGORITHM="sticky", LB_CLIENT_ID=c))[0] for c in clients}

    before = firsts(addrs(insts))
    assert firsts(addrs(insts)) == before
    assert len(set(before.values())) >= 3
    victim = insts[1]
    fleet.stop(victim)
    after = firsts(addrs(insts))
    moved = {c for c in clients if before[c] != after[c]}
    assert moved == {c for c in clients if before[c] == victim.host}
    assert victim.host not in after.values()


def test_lbserver_choice_is_taken_when_eligible_else_thresholded(trio):
    lbs = FakeLbserver("127.0.0.13")
    slow_lbs = FakeLbserver("127.0.0.12", delay=3.0)
    try:
        r = get_hosts(addrs(trio), LB_ALGORITHM="lbserver", LB_LBSERVER_URL=lbs.url)
        assert hosts_of(r)[0] == "127.0.0.13"  # lbserver's word, although busy
        lbs.answer = "10.9.9.9"  # not one of ours
        got = hosts_of(get_hosts(addrs(trio), LB_ALGORITHM="lbserver", LB_LBSERVER_URL=lbs.url))
        assert got[-1] == "127.0.0.13"
        t0 = time.monotonic()
        r = get_hosts(addrs(trio), LB_ALGORITHM="lbserver", LB_LBSERVER_URL=slow_lbs.url, LB_TIMEOUT_MS="300")
        assert hosts_of(r)[-1] == "127.0.0.13" and "lbserver" in r.stderr
        assert time.monotonic() - t0 < 0.3 + 2.0
        r = get_hosts(addrs(trio), LB_ALGORITHM="lbserver", LB_LBSERVER_URL="http://127.0.0.1:1/")
        assert hosts_of(r)[-1] == "127.0.0.13" and "lbserver" in r.stderr
    finally:
        lbs.stop()
        slow_lbs.stop()


def test_without_snmplb_installed_the_script_still_lists_the_configured_hosts():
    r = get_hosts("app1:1161 [fe80::5]:1162 app2 fe80::7 app1", SNMPLB_PYTHON="/nonexistent/python3")
    assert r.returncode == 0 and r.stdout == "app1 fe80::5 app2 fe80::7\n"


def test_xdmcp_snippet_sets_xdm_server_to_the_first_host(trio, tmp_path):
    script = (f'. {PROJECT / "chroot" / "xdmcp-snmplb.sh"}\n'
              'echo "XDM_SERVER=$XDM_SERVER"\n')
    env = {"PATH": os.environ["PATH"], "LB_SERVERS": addrs(trio), "LB_ALGORITHM": "fixed",
           "SNMPLB_PYTHON": sys.executable, "SNMPLB_GET_HOSTS": str(GET_HOSTS), "LB_SNMP_COMMUNITY": COMMUNITY}
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "XDM_SERVER=127.0.0.11"
    r = subprocess.run(["sh", "-c", script], env={**env, "XDM_SERVER": "fixed.example"}, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == "XDM_SERVER=fixed.example"


def test_installed_into_a_chroot_layout_get_hosts_runs_from_both_paths(trio, tmp_path):
    # A real LTSP chroot is not available here (building one needs debootstrap and a Debian mirror), so the
    # installer lays the same files out under a plain directory with the host's python3 (its test mode).
    root = tmp_path / "chroot"
    root.mkdir()
    r = subprocess.run([str(PROJECT / "chroot" / "install-into-chroot.sh"), str(root)],
                       env={**os.environ, "SNMPLB_CHROOT_RUN": ""}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (root / "usr/lib/ltsp/get_hosts").resolve() == (root / "usr/share/ltsp/get_hosts").resolve()
    assert (root / "usr/share/snmplb/xdmcp-snmplb.sh").exists()
    for path in ("usr/share/ltsp/get_hosts", "usr/lib/ltsp/get_hosts"):
        env = {"PATH": os.environ["PATH"], "LB_SERVERS": addrs(trio), "LB_ALGORITHM": "fixed",
               "LB_SNMP_COMMUNITY": COMMUNITY, "SNMPLB_PYTHON": str(root / "opt/snmplb/bin/python3")}
        r = subprocess.run([str(root / path)], env=env, capture_output=True, text=True, timeout=60)
        assert hosts_of(r) == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    # A regular install: no editable-install hook, so the package is complete on its own.
    py = root / "opt/snmplb/bin/python3"
    r = subprocess.run([str(py), "-I", "-c", "import snmplb, sys; print(snmplb.__file__)"], capture_output=True,
                       text=True)
    assert r.stdout.startswith(str(root))
