"""`ssh farm` through `ProxyCommand snmplb connect %p`: real OpenSSH client and sshd, real snmpd agents.

Each sshd listens on the same loopback address as the snmpd agent that speaks for it (the fleet gives
its instances 127.0.0.11, .12, ...), so the host the decision names is where ssh goes. Each sshd
sets SNMPLB_TEST_SERVER for its sessions, which tells which server ran the remote command.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from conftest import BIN, COMMUNITY
from farm import SSHD, Farm
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import FakeLoad
from snmplb.login.pick import NONE_USABLE, NOT_CONNECTED
from support import addrs

pytestmark = [pytest.mark.fleet, pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server not installed")]
IDLE = FakeLoad(load1=0.4, cpus=4)


@pytest.fixture
def farm(fleet, tmp_path):
    insts = [fleet.add(f"app{i}", IDLE) for i in (1, 2, 3)]
    with Farm(tmp_path / "farm", {i.name: i.host for i in insts}) as f:
        f.insts = insts
        f.env = {"LB_SERVERS": addrs(insts), "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1000",
                 "SNMPLB_CLIENT_CONF": str(tmp_path / "no-client.conf")}
        yield f


def pick_host(env: dict[str, str]) -> str:
    r = subprocess.run([str(BIN / "snmplb"), "pick"], env={"PATH": os.environ["PATH"], **env},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_logins_go_where_the_decision_says(farm):
    by_host = {i.host: i.name for i in farm.insts}
    assert farm.who({**farm.env, "LB_ALGORITHM": "fixed"}) == "app1"
    for seed in range(4):
        env = {**farm.env, "LB_ALGORITHM": "random", "LB_SEED": str(seed)}
        assert farm.who(env) == by_host[pick_host(env)], seed
    # Unseeded random: 12 logins over three idle servers all on one has probability 3 / 3**12.
    seen = Counter(farm.who({**farm.env, "LB_ALGORITHM": "random"}) for _ in range(12))
    assert len(seen) >= 2, seen


def test_a_drained_server_is_never_used(farm):
    farm.insts[0].set_admin(AdminSettings(state="draining"))
    time.sleep(1.2)  # the agent rereads its admin file each interval (0.5 s in the lab)
    env = {**farm.env, "LB_ALGORITHM": "random"}
    seen = Counter(farm.who(env) for _ in range(10))
    assert "app1" not in seen and sum(seen.values()) == 10, seen
    assert farm.who({**farm.env, "LB_ALGORITHM": "fixed"}) == "app2"


def test_a_stopped_sshd_is_skipped_and_the_next_server_used(farm):
    farm.servers["app1"].stop()  # its agent still answers (and still says ssh listens: a fake /proc)
    start = time.monotonic()
    r = farm.ssh("echo $SNMPLB_TEST_SERVER", {**farm.env, "LB_ALGORITHM": "fixed"}, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "app2\n", r.stderr
    assert f"{farm.insts[0].host}:{farm.port}: Connection refused; using {farm.insts[1].host}:{farm.port}" in r.stderr
    assert time.monotonic() - start < 30  # liveness only: it did not hang


def test_a_server_that_never_accepts_is_given_up_after_the_connect_timeout(farm, tmp_path):
    """A listener whose backlog is full and never accepts: the kernel drops new SYNs, as a dead
    host behind a firewall would."""
    farm.servers["app1"].stop()
    blocker = socket.socket()
    blocker.bind((farm.insts[0].host, farm.port))
    blocker.listen(0)
    filler = []
    try:
        for _ in range(4):  # fill the accept queue: later connections stay in SYN_SENT
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((farm.insts[0].host, farm.port))
            filler.append(c)
        time.sleep(0.2)
        r = farm.ssh("echo $SNMPLB_TEST_SERVER", {**farm.env, "LB_ALGORITHM": "fixed"}, capture_output=True,
                     text=True)
        assert r.returncode == 0 and r.stdout == "app2\n", r.stderr
        assert "no connection within 3 s; using" in r.stderr, r.stderr
    finally:
        for c in filler:
            c.close()
        blocker.close()


def test_no_server_usable_or_reachable_is_a_clear_line_not_a_traceback(farm):
    for s in farm.servers.values():
        s.stop()
    r = subprocess.run([str(BIN / "snmplb"), "connect", str(farm.port)], env={"PATH": os.environ["PATH"], **farm.env},
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == NOT_CONNECTED and "no server accepted a connection" in r.stderr
    assert "Traceback" not in r.stderr
    for i in farm.insts:
        i.set_admin(AdminSettings(state="disabled"))
    time.sleep(1.2)
    r = subprocess.run([str(BIN / "snmplb"), "connect", str(farm.port)], env={"PATH": os.environ["PATH"], **farm.env},
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == NONE_USABLE and "no usable server" in r.stderr and "Traceback" not in r.stderr


def test_a_large_transfer_survives_intact_both_ways(farm, tmp_path):
    data = tmp_path / "payload"
    block = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB of varied bytes
    with open(data, "wb") as f:
        for i in range(400):  # 50 MiB
            f.write(block[i % 32:] + block[:i % 32])
    want = hashlib.sha256(data.read_bytes()).hexdigest()
    env = {**farm.env, "LB_ALGORITHM": "fixed"}
    remote = tmp_path / "remote-copy"
    with open(data, "rb") as f:
        r = farm.ssh(f"cat > {remote} && sha256sum {remote}", env, stdin=f, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == want
    back = tmp_path / "back"
    with open(data, "rb") as f, open(back, "wb") as out:
        r = farm.ssh("cat", env, stdin=f, stdout=out, stderr=subprocess.PIPE, timeout=300)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(back.read_bytes()).hexdigest() == want


def test_half_close_reaches_the_server_and_the_reply_still_comes_back(tmp_path):
    """stdin's EOF becomes shutdown(SHUT_WR); the server's answer after it still arrives (a plain TCP
    server on loopback stands for the service: this is about the relay, not ssh)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            got = b""
            while chunk := conn.recv(65536):  # until the client's EOF
                got += chunk
            conn.sendall(hashlib.sha256(got).hexdigest().encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    payload = os.urandom(3 << 20)
    r = subprocess.run([str(BIN / "snmplb"), "connect", str(port)], input=payload, capture_output=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:1", "LB_TIMEOUT_MS": "300",
                            "SNMPLB_CLIENT_CONF": str(tmp_path / "none")})
    # Nothing answers SNMP on port 1: no usable server, exit 3 (without --fallback)...
    assert r.returncode == NONE_USABLE, r.stderr
    r = subprocess.run([str(BIN / "snmplb"), "connect", "--fallback", str(port)], input=payload, capture_output=True,
                       timeout=60, env={"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:1",
                                        "LB_TIMEOUT_MS": "300", "SNMPLB_CLIENT_CONF": str(tmp_path / "none")})
    # ...with --fallback the configured list is tried, as get_hosts would list it.
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""  # a clean session says nothing
    assert r.stdout == hashlib.sha256(payload).hexdigest().encode()
    t.join(5)
    srv.close()


def test_servers_with_their_own_host_keys_all_listed_under_the_alias(fleet, tmp_path):
    """The README's second host-key recipe: each server keeps its own key; known_hosts lists every
    one of them under the alias, and ssh accepts whichever server the decision picks."""
    insts = [fleet.add(f"own{i}", IDLE) for i in (1, 2)]
    with Farm(tmp_path / "own", {i.name: i.host for i in insts}, shared_key=False) as f:
        env = {"LB_SERVERS": addrs(insts), "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1000",
               "SNMPLB_CLIENT_CONF": str(tmp_path / "none"), "LB_ALGORITHM": "fixed"}
        assert f.who(env) == "own1"
        insts[0].set_admin(AdminSettings(state="disabled"))
        time.sleep(1.2)
        assert f.who(env) == "own2"
        # A key that is not listed is refused: checking stays on.
        f.known.write_text(f.known.read_text().splitlines()[0] + "\n")
        r = f.ssh("true", env, capture_output=True, text=True)
        assert r.returncode != 0 and "Host key verification failed" in r.stderr
