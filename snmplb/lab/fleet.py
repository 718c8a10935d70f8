"""A fleet of real snmpd instances on loopback, each with snmplb-agent and a fake /proc.

Used by the demo, the tests and the benchmarks. Each instance is a real
net-snmp snmpd running the project's drop-in (snmpd.d/snmplb.conf, with only
the agent's path and the community's source rewritten for the instance), on
its own UDP port of 127.0.0.1, with its own fake /proc, logind session
directory and admin file, so that each server "has" the load it is given.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from snmplb import mib, usm
from snmplb.adminfile import AdminSettings, save_admin
from snmplb.errors import FleetError
from snmplb.kvfile import write_atomic
from snmplb.admin.v3user import create_user_line

PROJECT = Path(__file__).resolve().parents[2]
DROP_IN = PROJECT / "snmpd.d" / "snmplb.conf"
SNMPD = "/usr/sbin/snmpd"
SYS_UPTIME = ".1.3.6.1.2.1.1.3.0"
_START_TRIES = 5


@dataclass(frozen=True)
class FakeLoad:
    """What a fake server's /proc and logind directory say. Memory in KiB."""

    load1: float = 0.10
    load5: float = 0.10
    load15: float = 0.10
    cpus: int = 4
    mem_total: int = 8 * 1024 * 1024
    mem_available: int = 6 * 1024 * 1024
    swap_total: int = 2 * 1024 * 1024
    swap_free: int = 2 * 1024 * 1024
    pswpin: int = 0
    pswpout: int = 0
    uptime: float = 86400.0
    sessions: tuple[tuple[str, str], ...] = ()  # (user, remote host)
    ssh_connections: int | None = None  # established connections to port 22; None: one per session
    ssh_listening: bool = True  # net/tcp has sshd's LISTEN line on port 22 (False: sshd stopped)


@dataclass(frozen=True)
class V3User:
    """An SNMPv3 authPriv user to create in every instance."""

    name: str
    auth_pass: str
    priv_pass: str
    auth_proto: str = usm.DEFAULT_AUTH  # one of usm.AUTH_PROTOCOLS (create_user_line refuses others)
    priv_proto: str = usm.DEFAULT_PRIV  # one of usm.PRIV_PROTOCOLS


def write_fake_proc(root: Path, load: FakeLoad) -> None:
    """Write loadavg, meminfo, vmstat and stat as Linux formats them."""
    write_atomic(root / "loadavg", f"{load.load1:.2f} {load.load5:.2f} {load.load15:.2f} 1/123 4567\n")
    write_atomic(root / "meminfo", (
        f"MemTotal:       {load.mem_total} kB\n"
        f"MemFree:        {load.mem_available // 2} kB\n"
        f"MemAvailable:   {load.mem_available} kB\n"
        f"Buffers:        1024 kB\n"
        f"Cached:         {load.mem_available // 3} kB\n"
        f"SwapTotal:      {load.swap_total} kB\n"
        f"SwapFree:       {load.swap_free} kB\n"))
    write_atomic(root / "vmstat", f"nr_free_pages 1000\npswpin {load.pswpin}\npswpout {load.pswpout}\n")
    cpus = "".join(f"cpu{i} 1 0 1 100 0 0 0 0 0 0\n" for i in range(load.cpus))
    write_atomic(root / "stat", f"cpu  4 0 4 400 0 0 0 0 0 0\n{cpus}intr 0\nctxt 0\n")
    write_atomic(root / "uptime", f"{load.uptime:.2f} {load.uptime * 3:.2f}\n")
    conns = len(load.sessions) if load.ssh_connections is None else load.ssh_connections
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = "".join(f"{i:4d}: 0B00A8C0:0016 {0x1400A8C0 + i:08X}:{40000 + i:04X} 01 00000000:00000000 00:00000000 "
                   f"00000000     0        0 {1000 + i} 1 0000000000000000 20 4 30 10 -1\n" for i in range(conns))
    listen = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1\n"
    (root / "net").mkdir(parents=True, exist_ok=True)
    write_atomic(root / "net" / "tcp", header + (listen if load.ssh_listening else "") + rows)


def write_fake_sessions(directory: Path, sessions: tuple[tuple[str, str], ...]) -> None:
    """Replace the logind session files with one remote ssh session per (user, host)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if old.is_file() and not old.name.endswith(".ref"):
            old.unlink()
    for i, (user, host) in enumerate(sessions, 1):
        write_atomic(directory / str(i), (
            "# This is private data. Do not parse.\n"
            f"UID={1000 + i}\nUSER={user}\nACTIVE=1\nIS_DISPLAY=0\nSTATE=active\nREMOTE=1\n"
            f"TYPE=tty\nCLASS=user\nSCOPE=session-{i}.scope\nREMOTE_HOST={host}\nSERVICE=sshd\n"))


def render_snmpd_conf(drop_in: str, agent_command: str, community: str, client_subnet: str) -> str:
    """The drop-in with the instance's agent command and community source; nothing else changes."""
    out = []
    for line in drop_in.splitlines():
        words = line.split()
        if words[:1] == ["pass_persist"]:
            line = f"pass_persist {words[1]} {agent_command}"
        elif words[:1] == ["rocommunity"]:
            line = " ".join(["rocommunity", community, client_subnet] + words[3:])
        out.append(line)
    return "\n".join(out) + "\n"


def agent_command(config_file: Path) -> str:
    """How snmpd starts this Python's snmplb-agent (pass_persist splits it on spaces)."""
    script = Path(sys.executable).parent / "snmplb-agent"
    prog = str(script) if script.exists() else f"{sys.executable} -m snmplb.agent.service"
    return f"{prog} --config {config_file}"


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]  # (host, port): the socket module types an address Any
        return port


def client_env(tmp: Path) -> dict[str, str]:
    """Environment for net-snmp client tools: no MIB loading, no writes to /var/lib/snmp."""
    env = dict(os.environ)
    env.update(MIBS="", SNMP_PERSISTENT_DIR=str(tmp), SNMPCONFPATH=str(tmp))
    return env


@dataclass
class Instance:
    """One running snmpd with the snmplb agent."""

    name: str
    dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def proc_root(self) -> Path:
        return self.dir / "proc"

    @property
    def sessions_dir(self) -> Path:
        return self.dir / "sessions"

    @property
    def admin_file(self) -> Path:
        return self.dir / "admin.conf"

    @property
    def agent_conf(self) -> Path:
        return self.dir / "agent.conf"

    def set_load(self, load: FakeLoad) -> None:
        """Change what this server's fake /proc and sessions say."""
        write_fake_proc(self.proc_root, load)
        write_fake_sessions(self.sessions_dir, load.sessions)

    def set_admin(self, settings: AdminSettings) -> None:
        save_admin(self.admin_file, settings)

    def agent_pids(self) -> list[int]:
        """PIDs of the snmplb-agent processes that this snmpd started."""
        if self.process is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def log(self) -> str:
        try:
            return (self.dir / "snmpd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Fleet:
    """Start and stop snmpd instances under ``base``; a context manager."""

    def __init__(self, base: Path, community: str = "snmplb-ltsp", client_subnet: str = "127.0.0.1/32",
                 v3_user: V3User | None = None, agent_settings: dict[str, str] | None = None,
                 netns: str | None = None) -> None:
        self.base = Path(base)
        # Run snmpd (and the readiness probe) inside this network namespace (tests of host names do).
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.community = community
        self.client_subnet = client_subnet
        self.v3_user = v3_user
        self.agent_settings = {"interval": "0.5", **(agent_settings or {})}
        self.instances: list[Instance] = []
        self.base.mkdir(parents=True, exist_ok=True)
        self.client_dir = self.base / "client"
        self.client_dir.mkdir(exist_ok=True)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def add(self, name: str, load: FakeLoad = FakeLoad(), admin: AdminSettings | None = None,
            agent: str | None = None, settings: dict[str, str] | None = None,
            host: str | None = None, port: int | None = None) -> Instance:
        """Prepare and start one instance; returns when it answers a GET.

        Each instance listens on its own loopback address (127.0.0.11, .12, ...)
        so that host names printed by get_hosts tell them apart, as on a real LAN.
        ``agent`` replaces the pass_persist command (tests use a broken one).
        ``settings`` adds to (or overrides) this instance's agent.conf, e.g. its
        ``login_paths``. By default an instance checks no login path: the
        machine's real /home and /tmp never decide, and its figures do not
        move with the disk usage of whatever else runs on the machine.
        ``host`` and ``port`` replace the loopback address and the free port (an
        instance in a namespace of its own listens on that namespace's address).
        """
        if shutil.which("snmpd") is None and not Path(SNMPD).exists():
            raise FleetError("snmpd is not installed (apt-get install snmpd snmp)")
        n = len(self.instances)
        if n >= 240:
            raise FleetError("at most 240 instances (127.0.0.11 .. 127.0.0.250)")
        inst = Instance(name=name, dir=self.base / name, host=host or f"127.0.0.{11 + n}")
        (inst.dir / "persist").mkdir(parents=True, exist_ok=True)
        inst.set_load(load)
        inst.set_admin(admin or AdminSettings())
        conf_pairs = {"proc_root": inst.proc_root, "sessions_dir": inst.sessions_dir,
                      "utmp": inst.dir / "utmp", "admin_file": inst.admin_file,
                      "log_file": inst.dir / "agent.log", "login_paths": "",
                      "session_proc": "", "x2go_db": "",  # the machine's own desktops never answer
                      **self.agent_settings, **(settings or {})}
        write_atomic(inst.agent_conf, "".join(f"{k} = {v}\n" for k, v in conf_pairs.items()))
        conf = render_snmpd_conf(DROP_IN.read_text(), agent or agent_command(inst.agent_conf),
                                 self.community, self.client_subnet)
        conf = "dontLogTCPWrappersConnects yes\n" + conf
        write_atomic(inst.dir / "snmpd.conf", conf)
        if self.v3_user:
            u = self.v3_user
            write_atomic(inst.dir / "v3user.conf",
                         create_user_line(u.name, u.auth_pass, u.priv_pass, u.auth_proto, u.priv_proto), mode=0o600)
        last = ""
        for _ in range(_START_TRIES):
            inst.port = port or _free_udp_port(inst.host)
            self._spawn(inst)
            if self._wait_ready(inst, deadline=time.monotonic() + 15):
                self.instances.append(inst)
                if agent is None:
                    self._warm(inst)
                return inst
            last = inst.log()[-2000:]
            self._kill(inst)
        raise FleetError(f"snmpd for {name} did not answer; its log ends with:\n{last}")

    def _spawn(self, inst: Instance) -> None:
        files = [inst.dir / "snmpd.conf"] + ([inst.dir / "v3user.conf"] if self.v3_user else [])
        env = dict(os.environ, MIBS="", SNMP_PERSISTENT_DIR=str(inst.dir / "persist"),
                   SNMPCONFPATH=str(inst.dir / "persist"))
        cmd = [*self.prefix, shutil.which("snmpd") or SNMPD, "-f", "-Lf", str(inst.dir / "snmpd.log"), "-C",
               "-c", ",".join(map(str, files)), "-I", "-smux,mteTrigger,mteTriggerConf",
               "-p", str(inst.dir / "snmpd.pid"), f"udp:{inst.address}"]
        inst.process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def _wait_ready(self, inst: Instance, deadline: float) -> bool:
        env = client_env(self.client_dir)
        while time.monotonic() < deadline:
            if inst.process is None or inst.process.poll() is not None:
                return False
            r = subprocess.run([*self.prefix, "snmpget", "-v2c", "-c", self.community, "-r0", "-t0.3", "-On", "-Oq",
                                inst.address, SYS_UPTIME], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def _warm(self, inst: Instance) -> None:
        """Ask for lbRow once, so that snmpd has started the agent (pass_persist agents start at the first
        request under their OID, which on a loaded machine can take longer than a client's deadline).
        The answer does not matter: tests of a broken agent read it themselves."""
        subprocess.run([*self.prefix, "snmpget", "-v2c", "-c", self.community, "-r1", "-t5", "-On", "-Oq",
                        inst.address, mib.oid_str(mib.ROW.instance)], env=client_env(self.client_dir),
                       capture_output=True, text=True, timeout=30)

    @staticmethod
    def _kill(inst: Instance) -> None:
        p = inst.process
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)

    def stop(self, inst: Instance) -> None:
        """Stop one instance (its port then has nothing listening)."""
        self._kill(inst)

    def stop_all(self) -> None:
        for inst in self.instances:
            self._kill(inst)
