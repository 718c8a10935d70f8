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

import ast
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
from support import HungMount

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

    def host_pid(self, pid: int) -> int | None:
        """The host's PID of this server's process ``pid`` (as its own /proc, and X2Go's database, say)."""
        for host in self.pids():
            try:
                for line in Path(f"/proc/{host}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[-1] == str(pid):
                        return host
            except OSError:
                continue
        return None

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
        password = "pw" + secrets.token_urlsafe(12)  # never "-...": the test hands it on an option line
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
        if not os.environ.get("SNMPLB_TEST_KEEP"):  # set: the logs stay in /var/tmp/snmplb-desktops-* to read
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


def collect_as_snmpd_user(server: Server, *groups: str, x2go_db: str = "/var/lib/x2go/x2go_sessions"
                          ) -> tuple[dict[str, tuple[int, int]], tuple[str, ...]]:
    """What the agent's collect finds inside ``server`` run as snmpd's user (Debian-snmp), with only the
    supplementary ``groups`` given: the permissions the agent has on a Debian server."""
    code = ("import snmplb.agent.usersessions as u; "
            f"r = u.collect(u.Sources('', '', '/proc', {x2go_db!r})); "
            "print(repr(({k: (v.sessions, v.waiting) for k, v in r.users.items()}, r.problems)))")
    extra = ["--groups", ",".join(groups)] if groups else ["--clear-groups"]
    r = run(*server.enter, "setpriv", "--reuid", "Debian-snmp", "--regid", "Debian-snmp", *extra,
            sys.executable, "-c", code, cwd="/")
    return ast.literal_eval(r.stdout.strip())


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


def xrdp_script(s_dir: Path, backend: str = "Xvnc") -> str:
    """xrdp-sesman and xrdp from Debian's package with its own ini files: logs in the server's directory,
    the session type ``backend`` (Xvnc: tigervnc's; Xorg: xorgxrdp's) chosen at once for a client that
    brings its credentials; everything else as Debian ships it (display offset 10, KillDisconnected=false)."""
    s_dir.mkdir(exist_ok=True)
    xrdp_ini = Path("/etc/xrdp/xrdp.ini").read_text()
    xrdp_ini = xrdp_ini.replace("\nautorun=\n", f"\nautorun={backend}\n", 1)
    xrdp_ini = xrdp_ini.replace("\nLogFile=xrdp.log", f"\nLogFile={s_dir}/xrdp.log", 1)
    sesman = Path("/etc/xrdp/sesman.ini").read_text()
    sesman = sesman.replace("\nLogFile=xrdp-sesman.log", f"\nLogFile={s_dir}/sesman.log", 1)
    for text in (xrdp_ini, sesman):
        assert f"LogFile={s_dir}" in text
    (s_dir / "xrdp.ini").write_text(xrdp_ini.replace("\nEnableSyslog=true", "\nEnableSyslog=false"))
    (s_dir / "sesman.ini").write_text(sesman.replace("\nEnableSyslog=true", "\nEnableSyslog=false"))
    return (f"xrdp-sesman -n -c {s_dir}/sesman.ini > {s_dir}/sesman.out 2>&1 &\n"
            f"xrdp -n -c {s_dir}/xrdp.ini > {s_dir}/xrdp.out 2>&1 &\n")


def display_of(cmdline: str) -> int:
    return int(next(w for w in cmdline.split() if w.startswith(":"))[1:])


def xrdp_connected(server: Server, backend: str, display: int) -> bool:
    """Whether xrdp is connected to the X server of ``display``: Xvnc, a TCP connection on its RFB port;
    xorgxrdp, a connected Unix socket on xrdp_display_N (as ss sees it in the server)."""
    if backend == "Xvnc":
        return server.established(5900 + display)
    r = run(*server.enter, "ss", "-Hx", "state", "connected", "src", f"/run/xrdp/sockdir/xrdp_display_{display}")
    return bool(r.stdout.strip())


@pytest.mark.parametrize("backend", ["Xvnc", "Xorg"])
def test_xrdp_a_disconnected_user_goes_back_to_the_same_session_while_a_new_user_follows_the_load(site, xvfb,
                                                                                                   backend):
    """Real xrdp 0.9.21 with each backend Debian ships that runs here (Xvnc from tigervnc-standalone-server,
    Xorg with xorgxrdp) on two servers, real xfreerdp through sessions/snmplb-session:

    1. alice logs in: server a is idle and b busy, so a; xrdp-sesman starts her X server there;
    2. her thin client is unplugged (wrapper and xfreerdp killed): the X server stays and its agent says
       one session, one waiting (no xrdp connected to it);
    3. the loads turn: a busy, b idle; alice logs in again: back to a, to the same X server (same PID and
       display; sesman logs "reconnected session"), and the agent says it no longer waits;
    4. bob's first login goes where the load says: b.
    """
    need("xrdp", "xrdp-sesman", "xfreerdp", "nsenter", "unshare", "setpriv",
         "Xvnc" if backend == "Xvnc" else "/usr/lib/xorg/Xorg")
    if backend == "Xorg" and not Path("/usr/lib/xorg/modules/drivers/xrdpdev_drv.so").exists():
        pytest.skip("xorgxrdp is missing (scripts/setup.sh installs it)")

    def x_server_of(server: Server, user: str) -> dict[int, str]:
        return server.processes(user, backend)
    a = site.add_server("a", 1, xrdp_script(site.base / "a", backend))
    b = site.add_server("b", 2, xrdp_script(site.base / "b", backend))
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
    assert wait_for(lambda: x_server_of(a, alice), timeout=40), (site.base / "alice-1.log").read_text()
    (pid, cmdline), = x_server_of(a, alice).items()
    display = display_of(cmdline)
    assert wait_for(lambda: xrdp_connected(a, backend, display), timeout=20), "xrdp never connected"
    assert not x_server_of(b, alice)
    assert f"{alice}: xfreerdp on {a.address}" in (site.base / "alice-1.log").read_text()

    # 2. unplugged: the session stays, and waits.
    unplug(first)
    assert wait_for(lambda: not xrdp_connected(a, backend, display), timeout=20), "xrdp still connected"
    assert x_server_of(a, alice) == {pid: cmdline}
    answer = wait_for(lambda: [(s["user_sessions"], s["user_waiting"]) for s in site.pick_json(alice, env)["servers"]]
                      == [(1, 1), (0, 0)] and site.pick_json(alice, env), timeout=10)
    assert answer, site.pick_json(alice, env)
    # What the agent reads needs no privilege: snmpd's user, without any group, finds the same.
    assert collect_as_snmpd_user(a, x2go_db="") == ({alice: (1, 1)}, ())

    # 3. the loads turn; alice comes back to a, to the very same Xvnc.
    a.agent.set_load(BUSY)
    b.agent.set_load(IDLE)
    assert wait_for(lambda: site.pick_json(bob, env)["chosen"] == b.address, timeout=10)
    decision = site.pick_json(alice, env)
    assert decision["chosen"] == a.address and decision["affinity"], decision
    second = site.wrapper("rdp", env, site.base / "alice-2.log")
    assert wait_for(lambda: xrdp_connected(a, backend, display), timeout=40), (site.base / "alice-2.log").read_text()
    assert x_server_of(a, alice) == {pid: cmdline}, "not the same session"
    assert not x_server_of(b, alice)
    assert wait_for(lambda: f"reconnected session: username {alice}, display :{display}.0"
                    in (a.dir / "sesman.log").read_text(), timeout=10)
    assert wait_for(lambda: [s["user_waiting"] for s in site.pick_json(alice, env)["servers"]] == [0, 0], timeout=10)

    # 4. bob's first login follows the load.
    bob_env = site.session_env(bob, xvfb, SNMPLB_RDP_OPTIONS=f"{options} /p:{bob_pw}")
    bob_session = site.wrapper("rdp", bob_env, site.base / "bob-1.log")
    assert wait_for(lambda: x_server_of(b, bob), timeout=40), (site.base / "bob-1.log").read_text()
    assert not x_server_of(a, bob)
    unplug(second)
    unplug(bob_session)


def x2go_script(s_dir: Path, address: str) -> str:
    """An X2Go server as Debian's x2goserver runs it: sshd (its own, on the server's address), a fresh
    session database of its own (x2godbadmin --createdb, on a private /var/lib/x2go) and
    x2gocleansessions, the daemon that x2goserver.service runs (it marks suspended sessions S)."""
    s_dir.mkdir(exist_ok=True)
    return ("mount -t tmpfs -o mode=0770 tmpfs /var/lib/x2go\n"
            "chown root:x2gouser /var/lib/x2go\n"
            f"x2godbadmin --createdb > {s_dir}/x2godb.out 2>&1\n"
            f"x2gocleansessions --debug > {s_dir}/cleansessions.out 2>&1 &\n"
            f"/usr/sbin/sshd -D -e -o ListenAddress={address} -o PidFile=none -o PasswordAuthentication=yes "
            f"-o KbdInteractiveAuthentication=no > {s_dir}/sshd.out 2>&1 &\n")


def x2go_sessions(server: Server) -> list[tuple[str, str, str, int]]:
    """(session, user, status, agent PID) rows of the server's own X2Go session database."""
    r = run(*server.enter, sys.executable, "-c",
            "import sqlite3; c = sqlite3.connect('file:/var/lib/x2go/x2go_sessions?mode=ro', uri=True); "
            "print(repr(c.execute('SELECT session_id, uname, status, agent_pid FROM sessions').fetchall()))")
    return ast.literal_eval(r.stdout.strip())


def test_x2go_a_suspended_session_is_resumed_on_its_server_while_a_new_user_follows_the_load(site, xvfb):
    """Real x2goserver 4.1.0.3 (sshd, x2goagent, its SQLite session database, x2gocleansessions) on two
    servers, real pyhoca-cli through sessions/snmplb-session (--try-resume, the wrapper's default):

    1. carol starts a session: a is idle, b busy, so a;
    2. her thin client is unplugged: x2goagent suspends the session (x2gocleansessions marks it S), and
       the agent says one session, one waiting;
    3. the loads turn; carol logs in again: back to a, where pyhoca-cli resumes the same session (same
       session name and x2goagent) and the database says R again;
    4. dave's first session goes where the load says: b.
    """
    need("x2goagent", "x2godbadmin", "x2gocleansessions", "pyhoca-cli", "xdotool", "setpriv", "/usr/sbin/sshd", "nsenter", "unshare")
    a = site.add_server("a", 1, x2go_script(site.base / "a", "10.219.1.2"))
    b = site.add_server("b", 2, x2go_script(site.base / "b", "10.219.2.2"))
    for s in (a, b):
        assert wait_for(lambda s=s: run("ip", "netns", "exec", s.netns, "ss", "-Hltn", "( sport = :22 )")
                        .stdout.strip(), timeout=15), (s.dir / "sshd.out").read_text()
    for s, load in ((a, IDLE), (b, BUSY)):
        site.start_agent(s, load, x2go_db="/var/lib/x2go/x2go_sessions")
    carol_pw = site.add_user(f"sdc{site.tag}")
    dave_pw = site.add_user(f"sdd{site.tag}")
    carol, dave = site.users

    def env_of(user: str, password: str) -> dict[str, str]:
        return site.session_env(user, xvfb, SNMPLB_X2GO_COMMAND="xev",  # one word: --try-resume matches it in the session name
                                SNMPLB_X2GO_OPTIONS=f"--password {password} --force-password --add-to-known-hosts "
                                                    "--try-resume -g 640x480")

    # 1. carol's first session: the idle server.
    env = env_of(carol, carol_pw)
    first = site.wrapper("x2go", env, site.base / "carol-1.log")
    running = wait_for(lambda: a.processes(carol, "x2goagent") and
                       [r for r in x2go_sessions(a) if r[1] == carol and r[2] == "R"], timeout=60)
    assert running, ((site.base / "carol-1.log").read_text()[-3000:], x2go_sessions(a))
    (session, _, _, _), = running
    assert wait_for(lambda: "Press CTRL+C to suspend" in (site.base / "carol-1.log").read_text(), timeout=30)
    # The session is up when xev's window shows on the thin client's screen (through X2Go's NX link):
    # pulling the plug while the session still starts is another story (X2Go may then end it).
    assert wait_for(lambda: run("xdotool", "search", "--name", "Event Tester", check=False,
                                env={"PATH": os.environ["PATH"], "DISPLAY": xvfb}).stdout.strip(), timeout=30)
    assert x2go_sessions(b) == []

    # 2. unplugged: the session is suspended, and waits.
    unplug(first)
    assert wait_for(lambda: [r[:3] for r in x2go_sessions(a)] == [(session, carol, "S")], timeout=40), \
        x2go_sessions(a)
    (_, _, _, agent_pid), = x2go_sessions(a)
    agent = a.host_pid(agent_pid)  # the session's x2goagent (nxagent under X2Go's name), the database's agent_pid
    assert agent in a.processes(carol, "x2goagent") and session in a.processes(carol, "x2goagent")[agent]
    assert wait_for(lambda: [(s["user_sessions"], s["user_waiting"]) for s in site.pick_json(carol, env)["servers"]]
                    == [(1, 1), (0, 0)], timeout=10), site.pick_json(carol, env)
    # snmpd's user reads X2Go's database only as a member of x2gouser (what the package's postinst grants).
    users, problems = collect_as_snmpd_user(a)
    assert users == {} and "needs group x2gouser" in problems[0]
    assert collect_as_snmpd_user(a, "x2gouser") == ({carol: (1, 1)}, ())

    # 3. the loads turn; carol is resumed on a.
    a.agent.set_load(BUSY)
    b.agent.set_load(IDLE)
    assert wait_for(lambda: site.pick_json(dave, env)["chosen"] == b.address, timeout=10)
    decision = site.pick_json(carol, env)
    assert decision["chosen"] == a.address and decision["affinity"], decision
    second = site.wrapper("x2go", env, site.base / "carol-2.log")
    assert wait_for(lambda: x2go_sessions(a) == [(session, carol, "R", agent_pid)], timeout=60), \
        (x2go_sessions(a), (site.base / "carol-2.log").read_text()[-3000:])
    assert a.host_pid(agent_pid) == agent and agent in a.processes(carol, "x2goagent"), "not the same session"
    assert x2go_sessions(b) == []

    # 4. dave's first session follows the load.
    dave_session = site.wrapper("x2go", env_of(dave, dave_pw), site.base / "dave-1.log")
    assert wait_for(lambda: [r for r in x2go_sessions(b) if r[1] == dave], timeout=60), \
        (site.base / "dave-1.log").read_text()[-3000:]
    assert [r for r in x2go_sessions(a) if r[1] == dave] == []
    unplug(second)
    unplug(dave_session)


def ssh_script(s_dir: Path, address: str) -> str:
    """sshd on the server's address, and a utmp of the server's own (a private /run): no logind here, so
    the agent counts ssh logins by utmp, its fallback."""
    s_dir.mkdir(exist_ok=True)
    return ("mount -t tmpfs -o mode=0755 tmpfs /run\n"
            "mkdir -p /run/sshd\n"
            ": > /run/utmp && chgrp utmp /run/utmp && chmod 0664 /run/utmp\n"
            f"/usr/sbin/sshd -D -e -o ListenAddress={address} -o PidFile=none -o PasswordAuthentication=no "
            f"-o KbdInteractiveAuthentication=no > {s_dir}/sshd.out 2>&1 &\n")


def test_ssh_a_returning_user_goes_back_to_the_server_of_their_login(site):
    """Real sshd, real ssh with `ProxyCommand snmplb connect --user %r %p`: erin's interactive login (a pty:
    a utmp record; no logind here) lands on the idle server a; the loads turn; her second login goes back
    to a (one session there, none waiting: an ssh login is never waiting), frank's first to b; once erin
    logged out, a has no session of hers."""
    need("/usr/sbin/sshd", "ssh", "ssh-keygen", "nsenter", "unshare")
    a = site.add_server("a", 1, ssh_script(site.base / "a", "10.219.1.2"))
    b = site.add_server("b", 2, ssh_script(site.base / "b", "10.219.2.2"))
    for s in (a, b):
        assert wait_for(lambda s=s: run("ip", "netns", "exec", s.netns, "ss", "-Hltn", "( sport = :22 )")
                        .stdout.strip(), timeout=15), (s.dir / "sshd.out").read_text()
    for s, load in ((a, IDLE), (b, BUSY)):
        site.start_agent(s, load, sessions_dir="/run/systemd/sessions", utmp="/var/run/utmp")
    site.add_user(f"sde{site.tag}")
    site.add_user(f"sdf{site.tag}")
    erin, frank = site.users
    key = site.base / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    for user in (erin, frank):
        ssh_dir = Path("/home") / user / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        shutil.chown(ssh_dir, user, user)
        shutil.chown(ssh_dir / "authorized_keys", user, user)
    env = site.session_env(erin, "")
    conf = dict(line.partition("=")[::2] for line in Path(env["SNMPLB_SESSION_CONF"]).read_text().splitlines())
    env = {**env, **{k: v.strip('"') for k, v in conf.items()}}

    def ssh(user: str, command: str, log: Path, tty: bool = False) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", site.client_ns, "ssh", "-F", "/dev/null", "-i", str(key),
                              *(["-tt"] if tty else ["-T"]), "-o", "BatchMode=yes",
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", f"ProxyCommand={BIN / 'snmplb'} connect --user %r %p",
                              f"{user}@application-server", command],
                             env=env, stdin=subprocess.PIPE if tty else subprocess.DEVNULL, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        site.procs.append(p)
        return p

    def where(user: str, log: Path) -> str:
        p = ssh(user, "echo addr=$(echo $SSH_CONNECTION | cut -d' ' -f3)", log)  # the server's address
        p.wait(timeout=60)
        text = log.read_text()
        return next((w[5:] for w in text.split() if w.startswith("addr=")), text)

    # erin's interactive login: the idle server.
    login = ssh(erin, "sleep 300", site.base / "erin-1.log", tty=True)
    assert wait_for(lambda: [(s["user_sessions"], s["user_waiting"]) for s in site.pick_json(erin, env)["servers"]]
                    == [(1, 0), (0, 0)], timeout=30), ((site.base / "erin-1.log").read_text(), site.pick_json(erin, env))
    # the loads turn: frank's first login goes to b, erin's second back to a.
    a.agent.set_load(BUSY)
    b.agent.set_load(IDLE)
    assert wait_for(lambda: site.pick_json(frank, env)["chosen"] == b.address, timeout=10)
    assert where(erin, site.base / "erin-2.log") == a.address
    assert where(frank, site.base / "frank-1.log") == b.address
    # erin logs out (her connection ends): no session of hers any more.
    unplug(login)
    assert wait_for(lambda: [s["user_sessions"] for s in site.pick_json(erin, env)["servers"]] == [0, 0],
                    timeout=30), site.pick_json(erin, env)


def test_sources_on_a_hung_file_system_never_hold_up_the_agent(tmp_path):
    """Every source of the sessions (logind's directory, utmp, the process table, X2Go's database) on a
    real FUSE mount whose server never answers (a dead NFS server): snmpd still answers lbRow and the
    user's question at once (no sessions known: 0 and 0), the sampler goes on, one stuck reading per
    reader at most (not one more per sample), and the log says why. (Before this change, lbSessions'
    count_sessions read logind's directory and utmp on the sampler's thread: the agent never answered.)"""
    from snmplb import affinity, mib
    from snmplb.lab.fleet import client_env

    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse to mount a file system that hangs")
    try:
        hung = HungMount(tmp_path / "hung")
    except OSError as exc:
        pytest.skip(f"cannot mount FUSE here: {exc}")
    key = tmp_path / "site.key"
    key.write_text(secrets.token_hex(24) + "\n")
    key.chmod(0o600)
    h = hung.target
    try:
        with Fleet(tmp_path / "fleet", agent_settings={
                "affinity_key_file": str(key), "interval": "0.2", "sessions_dir": str(h / "sessions"),
                "utmp": str(h / "utmp"), "session_proc": str(h / "proc"), "x2go_db": str(h / "x2go")}) as fleet:
            inst = fleet.add("a", IDLE)
            question = affinity.question(key.read_text().strip().encode(), "alice", b"\1" * 8)
            oids = [mib.oid_str(mib.ROW.instance), *map(mib.oid_str, affinity.instances(question))]
            time.sleep(2)  # ten samples, each of which finds the reading still stuck
            start = time.monotonic()
            r = run("snmpget", "-v2c", "-c", fleet.community, "-r0", "-t3", "-On", inst.address, *oids,
                    env=client_env(tmp_path), check=False)
            assert time.monotonic() - start < 2.5 and r.returncode == 0, r.stdout + r.stderr
            lines = r.stdout.splitlines()
            assert len(lines) == 3 and "STRING" in lines[0] and lines[1].endswith("Gauge32: 0") \
                and lines[2].endswith("Gauge32: 0"), r.stdout
            pid, = inst.agent_pids()
            # main, sampler, and ONE stuck reading each for lbSessions' count and the user sessions
            assert len(os.listdir(f"/proc/{pid}/task")) <= 4
            log = (inst.dir / "agent.log").read_text()
            assert "reading user sessions takes longer than" in log and "counting sessions in" in log
    finally:
        hung.release()
