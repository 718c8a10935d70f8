"""`ssh farm` through `ProxyCommand snmplb connect %p`: real OpenSSH client and sshd, real snmpd agents.

Each sshd listens on the same loopback address as the snmpd agent that speaks for it (the fleet gives
its instances 127.0.0.11, .12, ...), so the host the decision names is where ssh goes. Each sshd
sets SNMPLB_TEST_SERVER for its sessions, which tells which server ran the remote command.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN, COMMUNITY
from farm import SSHD, Farm
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import FakeLoad
from snmplb.login.pick import CLOSED_FIRST, NONE_USABLE, NOT_CONNECTED
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
    assert f"{farm.insts[0].host}:{farm.port}: Connection refused; trying {farm.insts[1].host}:{farm.port}" in r.stderr
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
        assert "no connection within 3 s; trying" in r.stderr, r.stderr
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
    assert "configured order" not in r.stderr  # connect never falls back to it (without --fallback)


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


# --- failing over past servers that accept but do not serve (issue 22) ------------------------------------------

FIXED = {"LB_ALGORITHM": "fixed"}  # the decision's order is app1, app2, app3
SSH_CHECKED = "--banner ssh --connect-timeout 2"  # the farm's port is not 22: ask for the banner check


def ssh_via(farm: Farm, options: str, command: str = "echo $SNMPLB_TEST_SERVER") -> subprocess.CompletedProcess:
    """``ssh farm COMMAND`` through ``snmplb connect OPTIONS %p``. ConnectTimeout bounds ssh's own wait
    for a banner (through a ProxyCommand it covers the banner exchange), so that a relay to a server
    that never speaks ends in a failure, not in the test's timeout."""
    proxy = f"{BIN / 'snmplb'} connect {options} %p"
    return subprocess.run(["ssh", "-F", str(farm.config), "-o", f"ProxyCommand={proxy}", "-o", "ConnectTimeout=20",
                           "farm", command], capture_output=True, text=True, timeout=90,
                          env={"PATH": os.environ["PATH"], "HOME": str(farm.base), **farm.env, **FIXED})


def hold_preauth(host: str, port: int) -> socket.socket:
    """A connection that sshd has greeted and that never sends its own banner: one pre-auth startup
    held for LoginGraceTime. Retried while sshd drops it (its start-up probe may still count)."""
    for _ in range(50):
        s = socket.create_connection((host, port), timeout=5)
        s.settimeout(5)
        if s.recv(256).startswith(b"SSH-"):
            return s
        s.close()
        time.sleep(0.1)
    raise AssertionError(f"sshd on {host}:{port} never greeted a held connection")


class Misbehaving:
    """A TCP peer on ``host``:``port`` that accepts and then misbehaves as ``how`` says.

    A fake, on purpose: a real sshd cannot be made to close or reset each connection right after
    accepting it, to send binary garbage, or to be another protocol's server; these model a crashed
    or broken sshd, a middlebox, or the wrong service on the port. ``how``:
    close (accept, close), reset (accept, RST), garbage (accept, send bytes with NULs, stay open),
    other (accept, send another protocol's greeting line, stay open), silent_close and silent_reset
    (read what the client sends, then close or reset without a word), sink (read until the client's
    EOF, close without a word).
    """

    def __init__(self, host: str, port: int, how: str) -> None:
        self.how = how
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.kept: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        end = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < end:  # bounded: 120 s at most
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.settimeout(10)
            if self.how.endswith("reset"):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if self.how == "garbage":
                conn.sendall(b"\x00\x00\x01\x14\x0a\x14\xff\xfe garbage\r\n")
            elif self.how == "other":
                conn.sendall(b"220 mail.example ESMTP ready\r\n")
            elif self.how.startswith("silent_"):
                conn.recv(100)
            elif self.how == "sink":
                while conn.recv(65536):  # bounded by the client's EOF and the 10 s timeout
                    pass
            if self.how in ("garbage", "other"):
                self.kept.append(conn)
            else:
                conn.close()

    def __enter__(self) -> Misbehaving:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.kept:
            c.close()
        self.listener.close()


def test_an_sshd_past_maxstartups_is_skipped_for_the_next_server(farm):
    """Real sshd throttling: MaxStartups 1:100:1 drops every new connection while one is pre-auth,
    saying "Exceeded MaxStartups" and closing (the default 10:30:100 drops 30 % past 10)."""
    app1, app2 = farm.servers["app1"], farm.servers["app2"]
    app1.stop()
    app1.conf.write_text(app1.conf.read_text() + "MaxStartups 1:100:1\n")
    app1.start()
    held = hold_preauth(app1.host, farm.port)
    try:
        r = ssh_via(farm, SSH_CHECKED)
    finally:
        held.close()
    assert r.returncode == 0 and r.stdout == "app2\n", r.stderr
    assert (f"{app1.host}:{farm.port}: closed the connection before its SSH- banner (it said 'Exceeded MaxStartups');"
            f" trying {app2.host}:{farm.port}") in r.stderr, r.stderr
    assert "past MaxStartups" in (app1.dir / "sshd.log").read_text()  # sshd's own word: it did drop us


def test_a_stopped_sshd_that_accepts_but_never_speaks_is_given_up_after_the_connect_timeout(farm):
    """A real sshd stopped with SIGSTOP: the kernel still completes the handshake (its listen backlog),
    nobody ever sends the banner, as with a hung sshd."""
    app1, app2 = farm.servers["app1"], farm.servers["app2"]
    os.kill(app1.proc.pid, signal.SIGSTOP)
    try:
        r = ssh_via(farm, SSH_CHECKED)  # ssh's ConnectTimeout (20 s) fails it if connect waits on app1
    finally:
        os.kill(app1.proc.pid, signal.SIGCONT)
    assert r.returncode == 0 and r.stdout == "app2\n", r.stderr
    assert f"{app1.host}:{farm.port}: no SSH- banner within 2 s; trying {app2.host}:{farm.port}" in r.stderr


def test_the_deadline_ends_the_search_and_names_the_servers_not_tried(farm):
    """Every sshd stopped: 2 s for the first, what is left of the 3 s deadline for the second, and the
    third is not tried at all."""
    pids = [s.proc.pid for s in farm.servers.values()]
    h1, h2, h3 = (f"{i.host}:{farm.port}" for i in farm.insts)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        r = subprocess.run([str(BIN / "snmplb"), "connect", *SSH_CHECKED.split(), "--deadline", "3", str(farm.port)],
                           env={"PATH": os.environ["PATH"], **farm.env, **FIXED}, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        took = time.monotonic() - start
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert r.returncode == NOT_CONNECTED and r.stdout == "", r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == f"snmplb: {h1}: no SSH- banner within 2 s; trying {h2}", lines
    assert lines[1].startswith(f"snmplb: {h2}: no SSH- banner within ") and lines[1].endswith("s (the deadline)"), lines
    assert lines[2] == f"snmplb: deadline passed; not tried: {h3}", lines
    assert lines[3] == f"snmplb: no server accepted a connection on port {farm.port} with an ssh banner", lines
    assert len(lines) == 4 and took < 30  # generous: the poll (1 s) and two interpreters' start on top of 3 s


REASONS = {  # what the line says (a pattern): the reset may come while the connection is still opening
    "close": re.escape("closed the connection before its SSH- banner"),
    "reset": "Connection reset by peer( before its SSH- banner)?",
    "garbage": re.escape("sent binary data, not its SSH- banner"),
    "other": re.escape("no SSH- banner within 2 s (it said '220 mail.example ESMTP ready')"),
}


@pytest.mark.parametrize("how", sorted(REASONS))
def test_a_server_that_accepts_and_then_misbehaves_is_skipped(farm, how):
    app1, app2 = farm.servers["app1"], farm.servers["app2"]
    app1.stop()
    with Misbehaving(app1.host, farm.port, how) as fake:
        r = ssh_via(farm, SSH_CHECKED)
    assert fake.accepted == 1
    assert r.returncode == 0 and r.stdout == "app2\n", r.stderr
    line = (re.escape(f"snmplb: {app1.host}:{farm.port}: ") + REASONS[how]
            + re.escape(f"; trying {app2.host}:{farm.port}"))
    assert re.fullmatch(line, r.stderr.rstrip("\n")), r.stderr


def test_each_server_skipped_is_its_own_line(farm):
    app1, app2, app3 = (farm.servers[n] for n in ("app1", "app2", "app3"))
    app1.stop()
    app2.stop()
    with Misbehaving(app1.host, farm.port, "close"):
        r = ssh_via(farm, SSH_CHECKED)
    assert r.returncode == 0 and r.stdout == "app3\n", r.stderr
    port = farm.port
    assert r.stderr.splitlines() == [
        f"snmplb: {app1.host}:{port}: closed the connection before its SSH- banner; trying {app2.host}:{port}",
        f"snmplb: {app2.host}:{port}: Connection refused; trying {app3.host}:{port}"], r.stderr


def connect_cli(port: int, tmp_path: Path, *options: str, **kw) -> subprocess.Popen:
    """`snmplb connect --fallback [OPTIONS] PORT` with nothing answering SNMP: the configured server
    127.0.0.1 is the one tried (see the half-close test)."""
    return subprocess.Popen([str(BIN / "snmplb"), "connect", "--fallback", *options, str(port)],
                            env={"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:1", "LB_TIMEOUT_MS": "300",
                                 "SNMPLB_CLIENT_CONF": str(tmp_path / "none")},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_a_server_that_closes_first_without_a_word_is_a_failure_not_a_session(tmp_path):
    """No banner expected (any port but 22: the client speaks first, as with RDP), so a server that
    accepts is used; if it then closes or resets while the client is still talking, having sent
    nothing, connect says so and exits 5. A server that closes in silence after the client's EOF (a
    sink) ran a session: 0."""
    for how in ("silent_close", "silent_reset"):  # after reading: a reset at once may come before connect returns
        with Misbehaving("127.0.0.1", 0, how) as fake:
            p = connect_cli(fake.port, tmp_path)
            try:
                p.stdin.write(b"\x03\x00\x00\x13\x0e\xe0")  # the start of an RDP connection request
                p.stdin.flush()
                p.wait(60)
                out, err = p.stdout.read(), p.stderr.read().decode()
            finally:
                p.kill()
                p.wait(10)
                for f in (p.stdin, p.stdout, p.stderr):
                    f.close()
        assert (p.returncode, out) == (CLOSED_FIRST, b""), (how, err)
        assert err == f"snmplb: 127.0.0.1:{fake.port} closed the connection before sending anything\n", how
    with Misbehaving("127.0.0.1", 0, "sink") as fake:
        r = subprocess.run([str(BIN / "snmplb"), "connect", "--fallback", str(fake.port)], input=b"x" * 100000,
                           capture_output=True, timeout=60,
                           env={"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:1", "LB_TIMEOUT_MS": "300",
                                "SNMPLB_CLIENT_CONF": str(tmp_path / "none")})
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_what_the_server_said_before_it_was_chosen_is_relayed_first_and_whole(tmp_path):
    """RFC 4253 4.2: lines before the SSH- line are allowed; the banner may come in pieces; the
    binary packet after it may come in the same segment. All of it reaches stdout, in order, before
    the server's answer to the client."""
    said = [b"Welcome, this server is fine\r\n", b"SSH-2.0-Fa", b"ke_1.0\r\n\x00\x00\x00\x1c\x06\x14kexinit"]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            for piece in said:
                conn.sendall(piece)
                time.sleep(0.2)
            got = b""
            while chunk := conn.recv(65536):  # until the client's EOF
                got += chunk
            conn.sendall(b"echo:" + got)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        p = connect_cli(port, tmp_path, "--banner", "ssh")
        out, err = p.communicate(b"SSH-2.0-client\r\n", timeout=60)
    finally:
        srv.close()
    assert (p.returncode, err) == (0, b"")
    assert out == b"".join(said) + b"echo:SSH-2.0-client\r\n"
    t.join(5)


def test_the_banner_is_ssh_on_port_22_by_default_and_as_asked():
    from snmplb.login.connect import SSH_BANNER, expected_banner

    assert expected_banner("auto", 22) == SSH_BANNER == b"SSH-"
    assert expected_banner("auto", 3389) is None and expected_banner("none", 22) is None
    assert expected_banner("ssh", 2222) == SSH_BANNER
    with pytest.raises(ValueError):
        expected_banner("telnet", 22)


def test_names_are_looked_up_within_the_servers_time_and_each_address_tried(tmp_path):
    """A name that does not resolve (or not in time: a hung DNS server) costs its server only; a name
    with several addresses (localhost: ::1 and 127.0.0.1 on most systems) gets each one in turn."""
    from snmplb.login.connect import connect_first

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    lines: list[str] = []
    try:
        got = connect_first(["no-such-host.invalid", "localhost"], port, 2, time.monotonic() + 10, None, lines.append)
        assert got is not None and got.where == f"localhost:{port}" and got.first == b""
        got.sock.close()
    finally:
        srv.close()
    assert len(lines) == 1 and lines[0].startswith(f"no-such-host.invalid:{port}: name "), lines
    assert lines[0].endswith(f"; trying localhost:{port}"), lines


def test_a_bad_banner_mode_or_deadline_is_a_usage_error():
    for args in (["--banner", "telnet"], ["--deadline", "0"], ["--deadline", "nan"]):
        r = subprocess.run([str(BIN / "snmplb"), "connect", *args, "22"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"], "LB_SERVERS": "127.0.0.1:1"})
        assert r.returncode == 2 and "Traceback" not in r.stderr, args
        assert args[0] in r.stderr, r.stderr
