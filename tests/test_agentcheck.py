"""snmplb-agent-check behind a real HAProxy (Debian's package): TCP mode, loopback only, in front of TCP
echo servers that this test starts; one responder per backend server, each with its own fake /proc and
admin file (the lab fleet's, as the snmpd instances use), run as processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN, wait_for
from snmplb import mib
from snmplb.adminfile import AdminSettings, save_admin
from snmplb.agent.haproxycheck import reply
from snmplb.lab.fleet import FakeLoad, write_fake_proc, write_fake_sessions

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy not installed (scripts/setup.sh)")
S = mib.obj("lbStatus").enums
A = mib.obj("lbAdminState").enums


def row(status: str, admin: str = "enabled", weight: int = 100, rating: int = 80) -> dict[str, int]:
    return {"lbStatus": S[status], "lbAdminState": A[admin], "lbWeight": weight, "lbRating": rating}


@pytest.mark.parametrize("values, line", [
    (row("idle"), "ready up 80%"),
    (row("busy", weight=200, rating=30), "ready up 60%"),
    (row("idle", weight=50, rating=1), "ready up 1%"),  # never 0%: HAProxy shows 0 as DRAIN
    (row("idle", weight=10000, rating=100), "ready up 10000%"),
    (row("swapping"), "ready down #swapping"),
    (row("full"), "ready down #full"),
    (row("unavailable"), "ready down #unavailable"),
    (row("draining", "draining"), "drain"),
    (row("disabled", "disabled"), "maint"),
    (row("disabled", "enabled"), "maint"),  # the more conservative of the two wins, as in get_hosts
    ({**row("idle"), "lbStatus": 99}, "ready down #unknown"),  # a status this code does not know
])
def test_reply_rules(values, line):
    assert reply(values) == line


# ---------------------------------------------------------------------------------------------------
# real processes


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Echo:
    """A TCP server that says its name, then echoes until EOF (one thread per connection, bounded)."""

    def __init__(self, name: str, host: str) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            try:
                conn.sendall(f"{self.name}\n".encode())
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def stop(self) -> None:
        self.sock.close()


class Responder:
    """snmplb-agent-check with its own fake /proc, sessions and admin file."""

    def __init__(self, base: Path, name: str, host: str, load: FakeLoad, admin: AdminSettings) -> None:
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.host, self.port = host, free_port(host)
        self.set_load(load)
        self.set_admin(admin)
        conf = {"proc_root": self.dir / "proc", "sessions_dir": self.dir / "sessions", "utmp": self.dir / "utmp",
                "admin_file": self.dir / "admin.conf", "login_paths": "", "interval": "0.2"}
        self.conf = self.dir / "agent.conf"
        self.conf.write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        self.proc: subprocess.Popen | None = None

    def set_load(self, load: FakeLoad) -> None:
        write_fake_proc(self.dir / "proc", load)
        write_fake_sessions(self.dir / "sessions", load.sessions)

    def set_admin(self, admin: AdminSettings) -> None:
        save_admin(self.dir / "admin.conf", admin)

    def start(self) -> None:
        self.proc = subprocess.Popen([str(BIN / "snmplb-agent-check"), "--config", str(self.conf),
                                      "--listen", f"{self.host}:{self.port}"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "ab"))
        assert wait_for(self.ask, timeout=10), (self.dir / "log").read_text()

    def ask(self) -> str:
        """What HAProxy would read ("" when nothing answers)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                return s.makefile().readline().strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class HAProxy:
    def __init__(self, base: Path, backends: list[tuple[str, Echo, Responder]]) -> None:
        self.base, self.host = base, "127.0.0.1"
        self.port = free_port(self.host)
        self.stats = base / "haproxy.sock"
        servers = "".join(
            f"  server {name} {e.sock.getsockname()[0]}:{e.port} weight 100 check inter 300 rise 1 fall 2"
            f" agent-check agent-addr {r.host} agent-port {r.port} agent-inter 200\n"
            for name, e, r in backends)
        self.conf = base / "haproxy.cfg"
        self.conf.write_text(
            f"global\n  stats socket {self.stats} mode 600 level admin\n  maxconn 2000\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n"
            f"frontend fe\n  bind {self.host}:{self.port}\n  default_backend farm\n"
            f"backend farm\n  balance roundrobin\n{servers}")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        r = subprocess.run([HAPROXY, "-c", "-f", str(self.conf)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.base / "haproxy.log", "ab"))
        assert wait_for(lambda: self.stats.exists(), timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def show(self) -> dict[str, dict[str, str]]:
        """`show stat` on the stats socket: each server's row by name."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, ln.split(","))) for ln in lines[1:] if ln]
        return {r["svname"]: r for r in rows if r["pxname"] == "farm" and r["svname"] not in ("BACKEND",)}

    def connect(self) -> tuple[str, socket.socket]:
        s = socket.create_connection((self.host, self.port), timeout=10)
        name = s.makefile("rb").readline().decode().strip()
        return name, s

    def spread(self, n: int) -> Counter:
        got: Counter = Counter()
        for _ in range(n):
            name, s = self.connect()
            s.close()
            got[name] += 1
        return got


@pytest.fixture
def lb(tmp_path):
    base = tmp_path / "lb"
    base.mkdir()
    load = FakeLoad(load1=0.4, cpus=4)
    parts = []
    for i, (name, weight) in enumerate((("app1", 100), ("app2", 50)), start=31):
        host = f"127.0.0.{i}"
        r = Responder(base, name, host, load, AdminSettings(weight=weight))
        r.start()
        parts.append((name, Echo(name, host), r))
    h = HAProxy(base, parts)
    h.start()
    h.echo = {n: e for n, e, _ in parts}
    h.agents = {n: r for n, _, r in parts}
    try:
        yield h
    finally:
        h.stop()
        for _, e, r in parts:
            r.stop()
            e.stop()


def settle(lb: HAProxy, want: dict[str, tuple[str, str | None]]) -> dict[str, dict[str, str]]:
    """Wait (bounded) until each server's (status, weight) is as wanted (weight None: any)."""
    def ok():
        rows = lb.show()
        # HAProxy says who set a state: "DRAIN (agent)", "MAINT (agent)"
        good = all(rows[n]["status"].split(" (")[0] == st and (w is None or rows[n]["weight"] == w)
                   for n, (st, w) in want.items())
        return rows if good else None
    rows = wait_for(ok, timeout=15, step=0.1)
    assert rows, ({n: (r["status"], r["weight"]) for n, r in lb.show().items()}, want)
    return rows


@needs_haproxy
def test_new_connections_follow_the_weights(lb):
    one, two = lb.agents["app1"].ask(), lb.agents["app2"].ask()
    p1, p2 = int(one.split()[-1].rstrip("%")), int(two.split()[-1].rstrip("%"))
    assert one.startswith("ready up ") and two.startswith("ready up ") and p1 > p2  # weight 100 vs 50
    settle(lb, {"app1": ("UP", str(p1)), "app2": ("UP", str(p2))})  # HAProxy: weight 100 x percent
    got = lb.spread(300)
    share = got["app1"] / 300
    assert abs(share - p1 / (p1 + p2)) < 0.1, (got, p1, p2)
    # A busier server gets less: its rating falls, and so does its share.
    lb.agents["app1"].set_load(FakeLoad(load1=7.0, cpus=4))
    wait_for(lambda: int(lb.agents["app1"].ask().split()[-1].rstrip("%")) < p1, timeout=10)
    q1 = int(lb.agents["app1"].ask().split()[-1].rstrip("%"))
    settle(lb, {"app1": ("UP", str(q1))})
    got = lb.spread(300)
    assert abs(got["app1"] / 300 - q1 / (q1 + p2)) < 0.1, (got, q1, p2)


@needs_haproxy
def test_drain_stops_new_connections_and_keeps_the_existing_one(lb):
    settle(lb, {"app1": ("UP", None), "app2": ("UP", None)})
    held = None
    for _ in range(10):
        name, s = lb.connect()
        if name == "app1":
            held = s
            break
        s.close()
    assert held is not None
    with held:
        lb.agents["app1"].set_admin(AdminSettings(state="draining"))
        assert wait_for(lambda: lb.agents["app1"].ask() == "drain", timeout=10)
        settle(lb, {"app1": ("DRAIN", None)})
        assert lb.spread(60) == Counter(app2=60)
        held.sendall(b"still here\n")
        assert held.makefile("rb").readline() == b"still here\n"  # the existing session goes on
        lb.agents["app1"].set_admin(AdminSettings(state="enabled"))
        settle(lb, {"app1": ("UP", None)})
        assert lb.spread(30)["app1"] > 0


@needs_haproxy
def test_disable_takes_the_server_out_and_unavailable_marks_it_down(lb):
    lb.agents["app1"].set_admin(AdminSettings(state="disabled"))
    settle(lb, {"app1": ("MAINT", None)})
    assert lb.spread(40) == Counter(app2=40)
    lb.agents["app1"].set_admin(AdminSettings())
    settle(lb, {"app1": ("UP", None)})  # the agent still runs in MAINT: "ready" brings it back
    # sshd stops: the agent's status is unavailable, the reply "down": no new connections
    lb.agents["app2"].set_load(FakeLoad(load1=0.4, cpus=4, ssh_listening=False))
    assert wait_for(lambda: lb.agents["app2"].ask() == "ready down #unavailable", timeout=10)
    settle(lb, {"app2": ("DOWN", None)})
    assert lb.spread(40) == Counter(app1=40)
    lb.agents["app2"].set_load(FakeLoad(load1=0.4, cpus=4))
    settle(lb, {"app2": ("UP", None)})


@needs_haproxy
def test_a_responder_that_stops_answering_leaves_the_last_state_and_weight(lb):
    """HAProxy's manual: failure to connect to the agent is not an error; what the agent does not
    say is not changed. So the server keeps its last weight (and its drain), until the agent answers."""
    p1 = lb.agents["app1"].ask().split()[-1].rstrip("%")
    settle(lb, {"app1": ("UP", p1)})
    lb.agents["app1"].stop()
    lb.agents["app1"].set_load(FakeLoad(load1=8.0, cpus=4))  # would lower its weight, if anyone said so
    lb.agents["app1"].set_admin(AdminSettings(state="draining"))
    time.sleep(1.5)  # several agent-inter periods with nothing answering
    rows = lb.show()
    assert (rows["app1"]["status"], rows["app1"]["weight"]) == ("UP", p1)
    assert lb.spread(30)["app1"] > 0
    lb.agents["app1"].start()  # back: its current word applies
    settle(lb, {"app1": ("DRAIN", None)})
    # Stopped while draining: it stays drained (only the agent can undo its drain).
    lb.agents["app1"].stop()
    lb.agents["app1"].set_admin(AdminSettings())
    time.sleep(1.5)
    assert lb.show()["app1"]["status"] == "DRAIN (agent)"
    assert lb.spread(20) == Counter(app2=20)


# ---------------------------------------------------------------------------------------------------
# who may ask, and a flood from anyone else

FLOODER = """
import socket, sys, time
target, source, seconds = (sys.argv[1], int(sys.argv[2])), sys.argv[3], float(sys.argv[4])
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end and n < 2_000_000:  # connect, close at once, again: a local loop
    s = socket.socket()
    try:
        s.bind((source, 0))
        s.setblocking(False)
        s.connect(target)
    except OSError:
        pass
    s.close()
    n += 1
"""


def ask_from(source: str, host: str, port: int, timeout: float = 2.0) -> str:
    """What the responder says to a connection from ``source`` ("" when nothing answers within ``timeout``)."""
    try:
        with socket.socket() as s:
            s.bind((source, 0))
            s.settimeout(timeout)
            s.connect((host, port))
            return s.makefile().readline().strip()
    except OSError:
        return ""


def probe(source: str, host: str, port: int, seconds: float) -> tuple[int, int]:
    """(answers, probes without an answer within 2 s) for ``seconds`` of asking as HAProxy does (every 50 ms)."""
    answered = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ask_from(source, host, port):
            answered += 1
        else:
            failed += 1
        time.sleep(0.05)
    return answered, failed


def start_responder(base: Path, host: str, port: int, *extra: str) -> subprocess.Popen:
    base.mkdir(exist_ok=True)
    write_fake_proc(base / "proc", FakeLoad(load1=0.4, cpus=4))
    write_fake_sessions(base / "sessions", ())
    save_admin(base / "admin.conf", AdminSettings(state="draining"))
    conf = base / "agent.conf"
    conf.write_text(f"proc_root = {base / 'proc'}\nsessions_dir = {base / 'sessions'}\nutmp = {base / 'utmp'}\n"
                    f"admin_file = {base / 'admin.conf'}\nlogin_paths =\ninterval = 0.2\n")
    return subprocess.Popen([str(BIN / "snmplb-agent-check"), "--config", str(conf), "--listen", f"{host}:{port}",
                             *extra], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(base / "log", "ab"))


def test_a_flood_of_local_connections_from_others_leaves_the_answers_to_haproxy(tmp_path):
    """Three local connect/close loops (non-blocking connect, close at once), from loopback addresses that are
    not allowed by default: the balancer's probes (from 127.0.0.1, allowed by default) are answered as often
    as without them (today: the flooders fill the accept queue, about 1 probe in 30 is answered and some
    time out: HAProxy keeps the last state, and a drain can stay hidden)."""
    host = "127.0.0.45"
    port = free_port(host)
    proc = start_responder(tmp_path, host, port)
    flooders: list[subprocess.Popen] = []
    try:
        assert wait_for(lambda: ask_from("127.0.0.1", host, port) == "drain", timeout=10), (tmp_path / "log").read_text()
        before = probe("127.0.0.1", host, port, 2.0)
        flooders = [subprocess.Popen([sys.executable, "-c", FLOODER, host, str(port), f"127.0.0.{60 + i}", "6"])
                    for i in range(3)]
        time.sleep(0.5)  # the loops under way
        during = probe("127.0.0.1", host, port, 3.0)
        assert all(f.poll() is None for f in flooders)  # the flood lasted the whole probe
    finally:
        for f in flooders:
            f.kill()
            f.wait(10)
        proc.terminate()
        proc.wait(10)
    rate_before, rate_during = before[0] / 2.0, during[0] / 3.0
    assert before[1] == 0 and during[1] == 0, (before, during)  # no probe went unanswered
    assert rate_during >= 0.5 * rate_before, (before, during)


def test_only_the_allowed_addresses_are_answered(tmp_path):
    """--allow names the balancers: anyone else gets no answer (the kernel drops the connection), loopback
    included once it is not named; a bad list stops the responder with a message."""
    host = "127.0.0.46"
    port = free_port(host)
    proc = start_responder(tmp_path, host, port, "--allow", "127.0.0.47, 127.0.1.0/24")
    try:
        assert wait_for(lambda: ask_from("127.0.0.47", host, port) == "drain", timeout=10), (tmp_path / "log").read_text()
        assert ask_from("127.0.1.9", host, port) == "drain"
        assert ask_from("127.0.0.1", host, port, timeout=0.5) == ""
        assert ask_from("127.0.0.48", host, port, timeout=0.5) == ""
    finally:
        proc.terminate()
        proc.wait(10)
    r = subprocess.run([str(BIN / "snmplb-agent-check"), "--listen", f"{host}:{port}", "--allow", "balancer"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'balancer' is not an address" in r.stderr and "Traceback" not in r.stderr


def test_an_ipv6_listener_answers_an_allowed_ipv6_peer_and_drops_others(tmp_path):
    """A dual-stack listener ([::]) filters IPv4 peers (as they come, IPv4 packets) and IPv6 peers alike."""
    port = free_port("127.0.0.1")
    proc = start_responder(tmp_path, "[::]", port, "--allow", "::1,127.0.0.2")
    try:
        def ask6() -> str:
            try:
                with socket.create_connection(("::1", port), timeout=2) as s:
                    return s.makefile().readline().strip()
            except OSError:
                return ""
        assert wait_for(lambda: ask6() == "drain", timeout=10), (tmp_path / "log").read_text()
        assert ask_from("127.0.0.2", "127.0.0.1", port) == "drain"  # an IPv4 peer of a dual-stack socket
        assert ask_from("127.0.0.1", "127.0.0.1", port, timeout=0.5) == ""
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("allow, allowed, refused", [
    ("10.0.0.5", ["10.0.0.5", "::ffff:10.0.0.5"], ["10.0.0.6", "::1", "fe80::1%eth0"]),
    ("10.0.0.0/24, fd00::/64", ["10.0.0.200", "fd00::7"], ["10.0.1.1", "fd00:0:0:1::7"]),
    ("::ffff:192.0.2.1", ["192.0.2.1"], ["192.0.2.2"]),
    ("0.0.0.0/0", ["192.0.2.1"], ["::1"]),
])
def test_allow_lists_and_the_filter_program(allow, allowed, refused):
    """The pure parts: the list, the check after accept, and the BPF program's shape (jumps within it)."""
    from snmplb.agent.haproxycheck import Allowed, allow_filter, parse_allow

    nets = parse_allow(allow)
    check = Allowed(nets)
    assert all(check(a) for a in allowed) and not any(check(a) for a in refused)
    program = allow_filter(nets)
    for i, (code, jt, jf, k) in enumerate(program):
        if code == 0x15:
            assert i + 1 + max(jt, jf) < len(program)
        if code == 0x05:
            assert i + 1 + k < len(program)
    assert program[-1] == (0x06, 0, 0, 0)  # the end: drop


def test_same_numbers_as_the_mib_from_the_same_configuration(fleet, tmp_path):
    """The responder runs with a real snmpd agent's own agent.conf: its reply is ``reply`` of the row the
    agent publishes over SNMP (read here with `snmplb pick --json`)."""
    import json

    from conftest import COMMUNITY

    inst = fleet.add("a", FakeLoad(load1=2.2, cpus=4), AdminSettings(weight=150))
    port = free_port(inst.host)
    proc = subprocess.Popen([str(BIN / "snmplb-agent-check"), "--config", str(inst.agent_conf),
                             "--listen", f"{inst.host}:{port}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def ask() -> str:
            try:
                with socket.create_connection((inst.host, port), timeout=2) as s:
                    return s.makefile().readline().strip()
            except OSError:
                return ""
        line = wait_for(ask, timeout=10)
        r = subprocess.run([str(BIN / "snmplb"), "pick", "--json"], capture_output=True, text=True, timeout=60,
                           env={"PATH": os.environ["PATH"], "LB_SERVERS": inst.address, "LB_SNMP_COMMUNITY": COMMUNITY,
                                "SNMPLB_CLIENT_CONF": str(tmp_path / "none")})
        rec = json.loads(r.stdout)["servers"][0]
        assert line == f"ready up {rec['weight'] * rec['rating'] // 100}%", (line, rec)
        inst.set_admin(AdminSettings(state="draining"))
        assert wait_for(lambda: ask() == "drain", timeout=10)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.fleet
@needs_haproxy
def test_the_readmes_rdp_persistence_configuration_is_valid_for_haproxy(tmp_path):
    """README ("Users: back to their session", HAProxy farms): the stick table on mstshash beside the
    agent-check, as written, is accepted by the real haproxy's configuration check."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    part = readme[readme.index("**HAProxy farms.** Behind HAProxy"):]
    block = part[part.index("```\n") + 4:part.index("\n```", part.index("```\n") + 4)]
    assert "stick on req.rdp_cookie(mstshash)" in block and "agent-check" in block
    conf = tmp_path / "haproxy.cfg"
    conf.write_text("defaults\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\n" + block + "\n")
    r = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "Configuration file is valid" in r.stdout + r.stderr, r.stdout + r.stderr
