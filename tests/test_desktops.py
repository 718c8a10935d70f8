"""Back to the session that waits (issue 19, "Tested for real"): real xrdp (Debian 12's package, 0.9.21, with
Xvnc from tigervnc-standalone-server) and real X2Go (x2goserver, pyhoca-cli) on two application servers.

Each server is a namespace set of its own: a network namespace (its own address, ports 3389, 22, 161, its
Xvnc's RFB port), a PID namespace with its own /proc (its agent sees only its own processes, as on a real
machine) and a mount namespace with a private /tmp and /run/xrdp (X displays and locks, X2Go's session
directories) and, for X2Go, a private /var/lib/x2go (its session database). snmpd and snmplb-agent run
inside it (snmplb.lab.Fleet with an nsenter prefix) and read that /proc. The thin client is a third
network namespace joined to each server by a veth pair; its X server is Xvfb; the session wrapper
(sessions/snmplb-session) asks `snmplb pick --user` and starts the real client.

Everything is torn down: the servers' PID namespaces die with their init, the namespaces are deleted,
the users the test created are removed. Traffic stays inside the namespaces; no name is looked up.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from snmplb.lab.fleet import FakeLoad, Fleet, Instance
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "sessions" / "snmplb-session"
BIN = Path(sys.executable).parent
COMMUNITY = "snmplb-desktops"
IDLE = FakeLoad(load1=0.1, cpus=4)
BUSY = FakeLoad(load1=12.0, cpus=4)
_INIT = ("import signal, time\n"
         "signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap whatever the servers leave (init's job)\n"
         "time.sleep(900)\n")

pytestmark = [pytest.mark.fleet,
              pytest.mark.skipif(os.geteuid() != 0, reason="namespaces, users and servers need root")]


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None and not Path(tool).exists():
            pytest.skip(f"{tool} is missing (scripts/setup.sh installs it)")


def run(*cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, timeout=timeout, capture_output=True, text=True, **kw)


@dataclass
class Server:
    """One application server: namespaces, the init of its PID namespace, its agent's fleet."""

    name: str
    netns: str
    address: str
    dir: Path
    init: int = 0
    fleet: Fleet | None = None
    agent: Instance | None = None
    started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def enter(self) -> list[str]:
        """Run a command inside this server (its network, mount and PID namespaces)."""
        return ["nsenter", "-t", str(self.init), "-n", "-m", "-p", "--"]

    def pids(self) -> set[int]:
        """This server's processes, by their PIDs on the host."""
        try:
            mine = os.readlink(f"/proc/{self.init}/ns/pid")
        except OSError:
            return set()
        out = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == mine:
                        out.add(int(entry))
                except OSError:
                    continue
        return out

    def processes(self, user: str, name: str) -> dict[int, str]:
        """This server's processes of ``user`` called ``name``: host PID -> command line."""
        uid = run("id", "-u", user).stdout.strip()
        out = {}
        for pid in self.pids():
            try:
                if str(os.stat(f"/proc/{pid}").st_uid) != uid:
                    continue
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = os.path.basename(argv[0].decode(errors="replace")).split()
            if words and words[0] == name:
                out[pid] = b" ".join(argv).decode(errors="replace").strip()
        return out

    def established(self, port: int) -> bool:
        r = run("ip", "netns", "exec", self.netns, "ss", "-Htn", "state", "established", f"( sport = :{port} )")
        return bool(r.stdout.strip())


class Site:
    """The client's namespace, the servers, their agents, the site key, the users; all undone by close()."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.base = Path(tempfile.mkdtemp(prefix=f"snmplb-desktops-{tag}-", dir="/var/tmp"))
        self.base.chmod(0o755)
        self.client_ns = f"sdc{tag}"
        self.servers: list[Server] = []
        self.users: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.key = self.base / "site.key"
        self.key.write_text(secrets.token_hex(24) + "\n")
        self.key.chmod(0o600)
        run("ip", "netns", "add", self.client_ns)
        run("ip", "-n", self.client_ns, "link", "set", "lo", "up")

    def add_server(self, name: str, index: int, script: str) -> Server:
        """A server at 10.219.<index>.2, the client at .1 of that /24; ``script`` (sh) starts its services
        inside, then becomes the reaping init of its PID namespace."""
        netns = f"sd{name}{self.tag}"
        s = Server(name, netns, f"10.219.{index}.2", self.base / name)
        s.dir.mkdir(exist_ok=True)
        self.servers.append(s)
        run("ip", "netns", "add", netns)
        run("ip", "-n", netns, "link", "set", "lo", "up")
        run("ip", "link", "add", f"c{name}{self.tag}", "netns", self.client_ns, "type", "veth",
            "peer", "name", f"s{name}{self.tag}", "netns", netns)
        run("ip", "-n", self.client_ns, "addr", "add", f"10.219.{index}.1/24", "dev", f"c{name}{self.tag}")
        run("ip", "-n", netns, "addr", "add", f"{s.address}/24", "dev", f"s{name}{self.tag}")
        run("ip", "-n", self.client_ns, "link", "set", f"c{name}{self.tag}", "up")
        run("ip", "-n", netns, "link", "set", f"s{name}{self.tag}", "up")
        (s.dir / "init.py").write_text(_INIT)
        (s.dir / "start.sh").write_text(
            "set -e\n"
            "mount -t tmpfs -o mode=1777 tmpfs /tmp\n"          # X displays and locks, X2Go's session dirs
            "mount -t tmpfs -o mode=0755 tmpfs /run/xrdp\n"
            "mkdir -m 1777 /run/xrdp/sockdir\n"
            f"{script}\n"
            f"exec {sys.executable} {s.dir / 'init.py'}\n")
        p = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "--pid", "--fork", "--mount",
                              "--propagation", "private", "--mount-proc", "sh", str(s.dir / "start.sh")],
                             stdin=subprocess.DEVNULL, stdout=open(s.dir / "start.log", "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        init = wait_for(lambda: run("pgrep", "-P", str(p.pid), check=False).stdout.split(), timeout=10)
        assert init, f"{name}: no init in its PID namespace: {(s.dir / 'start.log').read_text()}"
        s.init = int(init[0])
        return s

    def start_agent(self, s: Server, load: FakeLoad, **settings: str) -> Instance:
        """snmpd and snmplb-agent inside the server, on its address, reading its /proc for sessions."""
        s.fleet = Fleet(s.dir / "fleet", community=COMMUNITY, client_subnet="10.219.0.0/16",
                        agent_settings={"affinity_key_file": str(self.key), "session_proc": "/proc",
                                        "interval": "0.5", **settings})
        s.fleet.prefix = s.enter
        s.agent = s.fleet.add(s.name, load, host=s.address, port=161)
        return s.agent

    def add_user(self, name: str) -> str:
        password = secrets.token_urlsafe(12)
        run("useradd", "-m", "-s", "/bin/bash", name)
        self.users.append(name)
        run("chpasswd", input=f"{name}:{password}\n")
        return password

    def close(self) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for s in self.servers:
            if s.fleet is not None:
                s.fleet.stop_all()
            if s.init:
                try:
                    os.kill(s.init, signal.SIGKILL)  # the PID namespace dies with its init: every process in it
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for s in self.servers:
            wait_for(lambda s=s: not s.pids(), timeout=10)
            run("ip", "netns", "del", s.netns, check=False)
        run("ip", "netns", "del", self.client_ns, check=False)
        for user in self.users:
            run("pkill", "-KILL", "-u", user, check=False)
            wait_for(lambda user=user: run("pgrep", "-u", user, check=False).returncode != 0, timeout=10)
            run("userdel", "-r", user, check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- the thin client ----------------------------------------------------------------------------

    def session_env(self, user: str, display: str, **extra: str) -> dict[str, str]:
        servers = " ".join(f"{s.agent.address}" for s in self.servers if s.agent is not None)
        conf = self.base / f"session-{user}.conf"
        conf.write_text(f'LB_SERVERS="{servers}"\nLB_SNMP_COMMUNITY={COMMUNITY}\nLB_TIMEOUT_MS=1500\n'
                        f"LB_ALGORITHM=best\nLB_AFFINITY_KEY_FILE={self.key}\n")
        home = self.base / f"client-home-{user}"
        home.mkdir(exist_ok=True)
        return {"PATH": os.environ["PATH"], "HOME": str(home), "USER": user, "DISPLAY": display,
                "SNMPLB_SESSION_CONF": str(conf), "SNMPLB_PICK": f"{BIN / 'snmplb'} pick",
                "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", "SNMPLB_MESSAGE_TIMEOUT": "1", **extra}

    def wrapper(self, mode: str, env: dict[str, str], log: Path) -> subprocess.Popen:
        """The session wrapper on the thin client, as the display manager starts it."""
        p = subprocess.Popen(["ip", "netns", "exec", self.client_ns, str(SESSION), mode], env=env,
                             stdin=subprocess.DEVNULL, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def pick_json(self, user: str, env: dict[str, str]) -> dict:
        conf = {}
        for line in Path(env["SNMPLB_SESSION_CONF"]).read_text().splitlines():
            k, _, v = line.partition("=")
            conf[k] = v.strip('"')
        r = run("ip", "netns", "exec", self.client_ns, str(BIN / "snmplb"), "pick", "--json", "--user", user,
                check=False, env={**env, **conf})
        return json.loads(r.stdout)


def unplug(p: subprocess.Popen) -> None:
    """The thin client goes away (power cut, network lost): its wrapper and client are killed, no goodbye."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=10)


@pytest.fixture
def xvfb() -> Iterator[str]:
    """The thin client's X server (Xvfb; -displayfd chooses a free display). X clients in the client's
    network namespace reach it by its socket in /tmp/.X11-unix (the namespace shares the file system)."""
    need("Xvfb")
    r, w = os.pipe()
    p = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                         pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    try:
        yield f":{number}"
    finally:
        p.terminate()
        p.wait(timeout=10)


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site(secrets.token_hex(2))
    try:
        yield s
    finally:
        s.close()


def xrdp_script(s_dir: Path) -> str:
    """xrdp-sesman and xrdp from Debian's package with its own ini files: logs in the server's directory,
    the Xvnc session type (the backend that runs here) chosen at once for a client that brings its
    credentials; everything else as Debian ships it (display offset 10, KillDisconnected=false)."""
    s_dir.mkdir(exist_ok=True)
    xrdp_ini = Path("/etc/xrdp/xrdp.ini").read_text()
    xrdp_ini = xrdp_ini.replace("\nautorun=\n", "\nautorun=Xvnc\n", 1)
    xrdp_ini = xrdp_ini.replace("\nLogFile=xrdp.log", f"\nLogFile={s_dir}/xrdp.log", 1)
    sesman = Path("/etc/xrdp/sesman.ini").read_text()
    sesman = sesman.replace("\nLogFile=xrdp-sesman.log", f"\nLogFile={s_dir}/sesman.log", 1)
    for text in (xrdp_ini, sesman):
        assert f"LogFile={s_dir}" in text
    (s_dir / "xrdp.ini").write_text(xrdp_ini.replace("\nEnableSyslog=true", "\nEnableSyslog=false"))
    (s_dir / "sesman.ini").write_text(sesman.replace("\nEnableSyslog=true", "\nEnableSyslog=false"))
    return (f"xrdp-sesman -n -c {s_dir}/sesman.ini > {s_dir}/sesman.out 2>&1 &\n"
            f"xrdp -n -c {s_dir}/xrdp.ini > {s_dir}/xrdp.out 2>&1 &\n")


def xvnc_of(server: Server, user: str) -> dict[int, str]:
    return server.processes(user, "Xvnc")


def display_of(cmdline: str) -> int:
    return int(next(w for w in cmdline.split() if w.startswith(":"))[1:])


def test_xrdp_a_disconnected_user_goes_back_to_the_same_session_while_a_new_user_follows_the_load(site, xvfb):
    """Real xrdp 0.9.21 + Xvnc on two servers, real xfreerdp through sessions/snmplb-session:

    1. alice logs in: server a is idle and b busy, so a; xrdp-sesman starts her Xvnc there;
    2. her thin client is unplugged (wrapper and xfreerdp killed): the Xvnc stays and its agent says
       one session, one waiting (no xrdp connected to its RFB port);
    3. the loads turn: a busy, b idle; alice logs in again: back to a, to the same Xvnc (same PID and
       display; sesman logs "reconnected session"), and the agent says it no longer waits;
    4. bob's first login goes where the load says: b.
    """
    need("xrdp", "xrdp-sesman", "Xvnc", "xfreerdp", "nsenter", "unshare")
    a = site.add_server("a", 1, xrdp_script(site.base / "a"))
    b = site.add_server("b", 2, xrdp_script(site.base / "b"))
    for s in (a, b):
        assert wait_for(lambda s=s: run("ip", "netns", "exec", s.netns, "ss", "-Hltn", "( sport = :3389 )")
                        .stdout.strip(), timeout=15), (s.dir / "xrdp.out").read_text()
    site.start_agent(a, IDLE)
    site.start_agent(b, BUSY)
    alice_pw = site.add_user(f"sda{site.tag}")
    bob_pw = site.add_user(f"sdb{site.tag}")
    alice, bob = site.users
    options = "/cert:ignore /size:640x480 -clipboard /log-level:ERROR"

    # 1. alice's first login: the idle server.
    env = site.session_env(alice, xvfb, SNMPLB_RDP_OPTIONS=f"{options} /p:{alice_pw}")
    first = site.wrapper("rdp", env, site.base / "alice-1.log")
    assert wait_for(lambda: xvnc_of(a, alice), timeout=40), (site.base / "alice-1.log").read_text()
    (pid, cmdline), = xvnc_of(a, alice).items()
    display = display_of(cmdline)
    assert wait_for(lambda: a.established(5900 + display), timeout=20), "xrdp never connected to Xvnc"
    assert not xvnc_of(b, alice)
    assert f"{alice}: xfreerdp on {a.address}" in (site.base / "alice-1.log").read_text()

    # 2. unplugged: the session stays, and waits.
    unplug(first)
    assert wait_for(lambda: not a.established(5900 + display), timeout=20), "xrdp still connected"
    assert xvnc_of(a, alice) == {pid: cmdline}
    answer = wait_for(lambda: [(s["user_sessions"], s["user_waiting"]) for s in site.pick_json(alice, env)["servers"]]
                      == [(1, 1), (0, 0)] and site.pick_json(alice, env), timeout=10)
    assert answer, site.pick_json(alice, env)

    # 3. the loads turn; alice comes back to a, to the very same Xvnc.
    a.agent.set_load(BUSY)
    b.agent.set_load(IDLE)
    assert wait_for(lambda: site.pick_json(bob, env)["chosen"] == b.address, timeout=10)
    decision = site.pick_json(alice, env)
    assert decision["chosen"] == a.address and decision["affinity"], decision
    second = site.wrapper("rdp", env, site.base / "alice-2.log")
    assert wait_for(lambda: a.established(5900 + display), timeout=40), (site.base / "alice-2.log").read_text()
    assert xvnc_of(a, alice) == {pid: cmdline}, "not the same session"
    assert not xvnc_of(b, alice)
    assert wait_for(lambda: f"reconnected session: username {alice}, display :{display}.0"
                    in (a.dir / "sesman.log").read_text(), timeout=10)
    assert wait_for(lambda: [s["user_waiting"] for s in site.pick_json(alice, env)["servers"]] == [0, 0], timeout=10)

    # 4. bob's first login follows the load.
    bob_env = site.session_env(bob, xvfb, SNMPLB_RDP_OPTIONS=f"{options} /p:{bob_pw}")
    bob_session = site.wrapper("rdp", bob_env, site.base / "bob-1.log")
    assert wait_for(lambda: xvnc_of(b, bob), timeout=40), (site.base / "bob-1.log").read_text()
    assert not xvnc_of(a, bob)
    unplug(second)
    unplug(bob_session)
