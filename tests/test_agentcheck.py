"""snmplb-agent-check behind a real HAProxy (Debian's package): TCP mode, loopback only, in front of TCP
echo servers that this test starts; one responder per backend server, each with its own fake /proc and
admin file (the lab fleet's, as the snmpd instances use), run as processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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
