"""SSH_SERVER per login on current LTSP: pam_snmplb.so before Debian 12's real pamltsp, in a real PAM stack.

The parts, all real: LTSP's own pamltsp (Debian 12's ``ltsp`` 23.02, installed by scripts/setup.sh),
configured by its own ``pamltsp install`` (which writes /usr/share/pam-configs/ltsp and runs
pam-auth-update: the common-auth line every LTSP client has); Linux-PAM driven by ``pamtester``
(pam_authenticate for a local user whose shadow field is ``pamltsp``, the password on the
conversation); pam_snmplb.so compiled from sessions/pam_snmplb.c; the hook sessions/snmplb-pam-ssh-server
running this checkout's ``snmplb pick --user``; three application servers, each a real sshd (password
authentication, as pamltsp uses it) and a real snmpd with the project's agent, in a network namespace
the test creates (only ``lo``: nothing can leave it).

The client and the servers each see /etc (and the paths pamltsp and pam-auth-update write) through an
overlay on a tmpfs in a private mount namespace: the users the tests add (with ``pamltsp`` in the
client's shadow, a real password hash in the servers') exist only there, and everything disappears
with the namespaces; this machine's /etc, PAM configuration and users are never changed.

Which server took a login: the sshd whose log says ``Accepted password for USER``; and whose home pamltsp
mounted (SSHFS, as on a real client: each server serves the homes from a directory of its own, with a file
naming it).
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsdns
from conftest import BIN, COMMUNITY, IDLE
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import PROJECT, FakeLoad, Fleet, Instance

PAMLTSP = Path("/usr/share/ltsp/client/login/pamltsp")
HOOK = PROJECT / "sessions" / "snmplb-pam-ssh-server"
MODULE_SRC = PROJECT / "sessions" / "pam_snmplb.c"
SSH_SERVER_SCRIPT = PROJECT / "sessions" / "snmplb-ssh-server"
SERVICE = "snmplb-login"
USERS = {"alice": 64101, "bob": 64102, "carol": 64103}
PASSWORD = "pw-of-the-test-1"
CLEAN = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
LB_TIMEOUT_MS = 1500

pytestmark = pytest.mark.fleet


AFFINITY_KEY = "Pq3~Lm8!Rt5^Wz1|Hd6@KsXv7%Nb2*Gj4="  # the site key of the test's agents and client (affinity; 32 characters at least)


def _die_with_parent() -> None:
    """In the child, before exec: killed when the test's process ends (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Side:
    """A private mount and PID namespace inside the test's network namespace, holding overlays of /etc
    and of what pamltsp and pam-auth-update write, on a tmpfs; ``close`` ends it and every mount."""

    # /usr/bin: before an SSHFS mount pamltsp removes /usr/bin/gnome-keyring-daemon (where one is installed).
    OVERLAID = ("/etc", "/usr/share/pam-configs", "/var/lib/pam", "/usr/bin")

    def __init__(self, netns: str, name: str, extra: str = "") -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"snmplb-pam-{name}-"))
        mounts = "".join(
            f'mkdir -p "$b/u{i}" "$b/w{i}"; mount -t overlay overlay -o "lowerdir={d},upperdir=$b/u{i},workdir=$b/w{i}" {d}; '
            for i, d in enumerate(self.OVERLAID))
        script = ('set -e; b=$1; mount -t tmpfs -o mode=700 snmplb-pam "$b"; ' + mounts + extra
                  + 'echo ready; exec sleep infinity')
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--pid", "--fork", "--kill-child",
             "--propagation", "private", "--", "sh", "-c", script, "holder", str(self.base)],
            env=CLEAN, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)
        try:
            ready, _, _ = select.select([self.holder.stdout], [], [], 30)
            assert ready and self.holder.stdout.readline() == "ready\n", self.holder.stderr.read()
            children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
            assert len(children) == 1, children
            self.pid = int(children[0])
        except BaseException:
            self.close()
            raise

    def cmd(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "--", *argv]

    def run(self, *argv: str, timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(self.cmd(*argv), env=CLEAN, capture_output=True, text=True, timeout=timeout, **kw)
        if check:
            assert r.returncode == 0, f"{argv}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        return r

    def sh(self, script: str, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return self.run("sh", "-euc", script, "sh", *args, timeout=timeout, **kw)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.run("sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', "sh", path,
                 f"{mode:o}", input=text)

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


class Server:
    """One application server: the fleet's snmpd + agent at its address, and a real sshd on its port 22."""

    def __init__(self, side: Side, inst: Instance, host_key: Path, base: Path, homes: Path) -> None:
        self.inst, self.side = inst, side
        self.host = inst.host
        self.log = base / f"sshd-{inst.name}.log"
        # Each server serves the users' homes from a directory of its own, whose file served-by names it:
        # an SSHFS home mounted by pamltsp says where it came from.
        homes = homes / inst.name
        for user, uid in USERS.items():
            (homes / user).mkdir(parents=True)
            (homes / user / "served-by").write_text(inst.name + "\n")
            os.chown(homes / user, uid, uid)
        conf = base / f"sshd-{inst.name}.conf"
        conf.write_text(
            f"ListenAddress {self.host}:22\nPidFile none\nHostKey {host_key}\nUsePAM no\nStrictModes no\n"
            "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n"
            f"PermitRootLogin no\nSubsystem sftp internal-sftp\nForceCommand internal-sftp -d {homes}/%u\n"
            "UseDNS no\nPrintMotd no\n")
        self.proc = subprocess.Popen(side.cmd("/usr/sbin/sshd", "-D", "-e", "-f", str(conf)), env=CLEAN,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        end = time.monotonic() + 10
        while not self._listening():
            assert time.monotonic() < end and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)

    def _listening(self) -> bool:
        r = self.side.run("ss", "-Htln", f"src {self.host}:22", check=False, timeout=10)
        return bool(r.stdout.strip())

    def accepted(self, user: str) -> int:
        return self.log.read_text(errors="replace").count(f"Accepted password for {user} ")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Lab:
    """The client side (PAM, pamltsp, pam_snmplb, the hook) and three servers, in one network namespace."""

    def __init__(self, base: Path, ns: nsdns.Namespace, fleet: Fleet) -> None:
        self.base, self.ns, self.fleet = base, ns, fleet
        self.gates = base / "gates"
        self.gates.mkdir()
        self.module = base / "pam_snmplb.so"
        subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared", "-o", str(self.module),
                        str(MODULE_SRC), "-lpam"], check=True, env=CLEAN)
        # The agents know each user's sessions (logind's, here their fake session directory), asked by a
        # keyed hash: the site key, root-only, on both sides.
        agent_key = base / "affinity.key"
        agent_key.write_text(AFFINITY_KEY + "\n")
        agent_key.chmod(0o600)
        self.insts = [fleet.add(f"app{i}", IDLE, settings={"affinity_key_file": str(agent_key)}) for i in (1, 2, 3)]
        host_key = base / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, env=CLEAN)
        # The servers: the users with a real password (the farm's accounts).
        self.server_side = Side(ns.name, "servers")
        for user, uid in USERS.items():
            self.server_side.sh('useradd -M -d /nonexistent -s /bin/sh -u "$2" "$1"; echo "$1:$3" | chpasswd',
                                user, str(uid), PASSWORD)
        # The servers' homes: where the users may reach them (pytest's own directories are root's alone).
        self.server_homes = Path(tempfile.mkdtemp(prefix="snmplb-pam-homes-"))
        self.server_homes.chmod(0o755)
        self.servers = [Server(self.server_side, inst, host_key, base, self.server_homes) for inst in self.insts]
        # The client: snmplb as a venv install would put it (/opt/snmplb/bin/snmplb), this checkout's.
        opt = base / "opt"
        (opt / "snmplb" / "bin").mkdir(parents=True)
        wrapper = opt / "snmplb" / "bin" / "snmplb"
        wrapper.write_text(f"#!/bin/sh\nexec {BIN / 'snmplb'} \"$@\"\n")
        wrapper.chmod(0o755)
        self.homes = base / "homes"
        self.homes.mkdir()
        self.client = Side(ns.name, "client", extra=f'mount --bind {opt} /opt; mount -t tmpfs -o mode=755 tmpfs /run; ')
        pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        c = self.client
        for user, uid in USERS.items():
            c.sh('useradd -M -d "$3/$1" -s /bin/sh -u "$2" "$1"; usermod -p pamltsp "$1"', user, str(uid),
                 str(self.homes))
        c.write("/etc/snmplb/affinity.key", AFFINITY_KEY + "\n", mode=0o600)
        # Pools by group (NSS on the client): alice's group takes app2, bob's app3; carol is in none.
        c.sh('groupadd snmplb-t-b && groupadd snmplb-t-c && usermod -aG snmplb-t-b alice && usermod -aG snmplb-t-c bob')
        c.write("/etc/resolv.conf", "nameserver 127.0.0.1\n")  # the namespace's own (nothing leaves it)
        c.write("/etc/ltsp/ssh_known_hosts", "".join(f"{s.host} {pub}\n" for s in self.servers))
        # What `ltsp init` writes at boot (54-pam.sh) with SSH_SERVER=app1 in ltsp.conf, then pamltsp's own
        # install (pam-auth-update), then snmplb's per-login line.
        c.write("/etc/ltsp/pamltsp.conf", "# Generated by `ltsp init`, see man:ltsp(8)\nPAM_AUTH_TYPE='Primary'\n"
                f"SSH_SERVER='{self.servers[0].host}'\nSSH_OPTIONS=''\n")
        c.run(str(PAMLTSP), "install")
        assert "pamltsp pam_auth" in c.run("cat", "/etc/pam.d/common-auth").stdout
        assert "pamltsp pam_session" in c.run("cat", "/etc/pam.d/common-session").stdout
        # The README's ltsp.conf line, run as `ltsp init` runs a POST_INIT_x value (eval in its shell).
        (line,) = [ln for ln in (PROJECT / "README.md").read_text().splitlines()
                   if ln.startswith("POST_INIT_SNMPLB_PER_LOGIN=")]
        line = line.replace("/usr/libexec/snmplb/snmplb-ssh-server", str(SSH_SERVER_SCRIPT))
        c.sh(f'{line}\neval "$POST_INIT_SNMPLB_PER_LOGIN"')
        assert c.run("tail", "-n", "1", "/etc/ltsp/pamltsp.conf").stdout.endswith("(pam_snmplb)\n")
        self.set_client_conf()
        self.set_service()

    def set_client_conf(self, timeout_ms: int = LB_TIMEOUT_MS, algorithm: str = "balanced", pools: str = "",
                        affinity: str = "yes") -> None:
        servers = " ".join(f"{i.host}:{i.port}" for i in self.insts)
        self.client.write("/etc/snmplb/client.conf", f'LB_SERVERS="{servers}"\nLB_SNMP_COMMUNITY={COMMUNITY}\n'
                          f"LB_TIMEOUT_MS={timeout_ms}\nLB_ALGORITHM={algorithm}\nLB_AFFINITY={affinity}\n"
                          f"LB_AFFINITY_KEY_FILE=/etc/snmplb/affinity.key\nLB_POOLS=\"{pools}\"\n", mode=0o600)

    def set_service(self, module_args: str = "", gate: bool = False) -> None:
        """The display manager's PAM file: pam_snmplb, then (optionally) the test's gate, then common-auth."""
        args = module_args or f"hook={HOOK} timeout_ms=5000"
        stamp = f"auth optional pam_exec.so quiet {self.base / 'stamp'}"  # the time on each side of pam_snmplb
        lines = [f"{stamp} before", f"auth optional {self.module} {args}", f"{stamp} after"]
        if gate:
            lines.append(f"auth optional pam_exec.so quiet {self.base / 'gate'}")
        lines += ["@include common-auth", "account required pam_permit.so",
                  f"session optional {self.module} {args}",
                  f"session optional pam_exec.so quiet {self.base / 'probe'}",
                  "@include common-session"]  # pamltsp's session line (pam-auth-update put it there)
        self.client.write(f"/etc/pam.d/{SERVICE}", "\n".join(lines) + "\n")
        gate_script = self.base / "gate"
        # Records what this login's PAM environment holds, says it is here, and waits (at most 30 s) until
        # the test opens its gate: the test holds logins between pam_snmplb and pamltsp.
        gate_script.write_text(
            "#!/bin/sh\nset -u\ng=%s\nprintf '%%s\\n' \"${SNMPLB_SSH_SERVER:-}\" > \"$g/env-$PAM_USER\"\n"
            "touch \"$g/reached-$PAM_USER\"\ni=0\n"
            "while [ ! -e \"$g/go-$PAM_USER\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\nexit 0\n"
            % self.gates)
        gate_script.chmod(0o755)
        stamp_script = self.base / "stamp"
        stamp_script.write_text("#!/bin/sh\ndate +%%s.%%N > %s/stamp-$1-$PAM_USER\n" % self.gates)
        stamp_script.chmod(0o755)
        probe = self.base / "probe"
        probe.write_text("#!/bin/sh\nprintf '%%s\\n' \"${SNMPLB_SSH_SERVER:-}\" > %s/session-$PAM_USER\n" % self.gates)
        probe.chmod(0o755)

    def login(self, user: str, password: str = PASSWORD, session: bool = False,
              timeout: float = 60) -> subprocess.CompletedProcess:
        """pam_authenticate (and pam_open_session) for ``user`` through the service, as a display manager."""
        ops = ["authenticate"] + (["open_session"] if session else [])
        return self.client.run("pamtester", "-v", SERVICE, user, *ops, input=password + "\n", timeout=timeout,
                               check=False)

    def start_login(self, user: str) -> subprocess.Popen:
        p = subprocess.Popen(self.client.cmd("pamtester", "-v", SERVICE, user, "authenticate"), env=CLEAN,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert p.stdin is not None
        p.stdin.write(PASSWORD + "\n")
        p.stdin.close()
        p.stdin = None  # written and closed: communicate() only reads
        return p

    def home_from(self, user: str) -> str:
        """The server whose SSHFS home pamltsp mounted for ``user`` on the client ("" if none is mounted)."""
        r = self.client.run("sh", "-c", 'mountpoint -q "$1" && cat "$1/served-by"', "sh", str(self.homes / user),
                            check=False)
        return r.stdout.strip()

    def unmount_homes(self) -> None:
        """As after a logout: no SSHFS home stays mounted (pamltsp's own unmount waits for systemd-run)."""
        self.client.sh('for d in "$1"/*; do if mountpoint -q "$d"; then fusermount3 -u "$d" || umount -l "$d"; fi; done',
                       str(self.homes))

    def counts(self, user: str) -> dict[str, int]:
        """How many password logins of ``user`` each server accepted so far."""
        return {s.inst.name: s.accepted(user) for s in self.servers}

    def since(self, user: str, before: dict[str, int]) -> list[str]:
        """The servers that accepted a login of ``user`` since ``before`` (counts), once per login."""
        return [name for name, n in self.counts(user).items() for _ in range(n - before[name])]

    def close(self) -> None:
        for s in getattr(self, "servers", []):
            s.stop()
        for side in ("client", "server_side"):  # the client's end takes its SSHFS mounts with it
            if hasattr(self, side):
                getattr(self, side).close()
        if hasattr(self, "server_homes"):
            shutil.rmtree(self.server_homes, ignore_errors=True)


def _missing() -> str:
    if nsdns.available():
        return nsdns.available()
    for tool in ("pamtester", "gcc", "/usr/sbin/sshd", "nsenter", "ss", "pam-auth-update"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh)"
    if not PAMLTSP.exists() or not Path("/usr/include/security/pam_modules.h").exists():
        return "Debian's ltsp and libpam0g-dev are not installed (scripts/setup.sh)"
    return ""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if _missing():
        pytest.skip(_missing())
    base = tmp_path_factory.mktemp("pamltsp")
    with nsdns.Namespace(base, {}) as ns, Fleet(base / "fleet", community=COMMUNITY, netns=ns.name) as fleet:
        lab = None
        try:
            lab = Lab(base, ns, fleet)
            yield lab
        finally:
            if lab is not None:
                lab.close()


@pytest.fixture
def clean_lab(lab: Lab) -> Lab:
    """Every server idle and enabled, the default settings and PAM file, no gate open."""
    for inst in lab.insts:
        inst.set_load(IDLE)
        inst.set_admin(AdminSettings())
    lab.set_client_conf()
    lab.set_service()
    for f in lab.gates.iterdir():
        f.unlink()
    lab.unmount_homes()
    time.sleep(0.6)  # the agents sample every 0.5 s
    return lab


def _only(inst: Instance, lab: Lab) -> None:
    """Only ``inst`` may take a login (the others drained), as its agent says at the next sample."""
    for other in lab.insts:
        other.set_admin(AdminSettings() if other is inst else AdminSettings(state="draining"))
    time.sleep(0.8)


def test_the_login_goes_to_the_server_snmplb_picks_not_to_pamltsps_default(clean_lab: Lab) -> None:
    lab = clean_lab
    # pamltsp.conf says app1 (ltsp.conf's SSH_SERVER); snmplb may only take app3.
    _only(lab.insts[2], lab)
    before = lab.counts("alice")
    r = lab.login("alice")
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.since("alice", before) == ["app3"]
    assert lab.home_from("alice") == "app3"  # pamltsp mounted her home (SSHFS) from there
    # A wrong password is refused there too (pamltsp's answer is the login's, snmplb changes nothing).
    r = lab.login("alice", password="not-the-password")
    assert r.returncode != 0


def test_the_hook_gets_no_password_and_only_four_variables(clean_lab: Lab) -> None:
    lab = clean_lab
    seen = lab.base / "hook-saw"
    probe = lab.base / "probe-hook"
    probe.write_text(f"#!/bin/sh\n{{ env; echo ---; cat; }} > {seen}\nexit 1\n")
    probe.chmod(0o755)
    lab.set_service(module_args=f"hook={probe}")
    r = lab.client.run("env", "LB_SERVERS=elsewhere", "SNMPLB_PICK=/bin/false", "pamtester", "-v", SERVICE, "alice",
                       "authenticate", input=PASSWORD + "\n", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    env, stdin = seen.read_text().split("---\n")
    assert stdin == ""  # /dev/null
    assert PASSWORD not in env
    names = {line.split("=", 1)[0] for line in env.splitlines()}
    assert names - {"PWD", "SHLVL", "_"} == {"PATH", "PAM_USER", "PAM_SERVICE", "PAM_TYPE"}, env  # (sh adds those)
    assert "PAM_USER=alice" in env.splitlines() and "PAM_TYPE=auth" in env.splitlines()
    # A name nobody has (a password typed in the name field) never reaches the hook; pamltsp refuses it.
    seen.unlink()
    r = lab.client.run("pamtester", "-v", SERVICE, "Not-a-user-but-a-password-1", "authenticate",
                       input=PASSWORD + "\n", check=False)
    assert r.returncode != 0 and not seen.exists()


def test_two_logins_at_once_keep_their_own_choice(clean_lab: Lab) -> None:
    """alice's pick chooses app2, then the fleet changes and bob's pick chooses app3 while alice's login
    is still between pam_snmplb and pamltsp: each pamltsp uses its own login's choice."""
    lab = clean_lab
    lab.set_service(gate=True)
    app1, app2, app3 = lab.insts
    _only(app2, lab)
    before = {u: lab.counts(u) for u in ("alice", "bob")}
    a = lab.start_login("alice")
    try:
        assert _wait(lambda: (lab.gates / "reached-alice").exists(), 20), "alice's login never reached the gate"
        _only(app3, lab)
        b = lab.start_login("bob")
        try:
            assert _wait(lambda: (lab.gates / "reached-bob").exists(), 20), "bob's login never reached the gate"
            # Both logins are in progress at once, each with its own choice in its own PAM environment.
            assert (lab.gates / "env-alice").read_text() == f"{app2.host}\n"
            assert (lab.gates / "env-bob").read_text() == f"{app3.host}\n"
            (lab.gates / "go-bob").touch()
            (lab.gates / "go-alice").touch()
            out_b, _ = b.communicate(timeout=60)
            out_a, _ = a.communicate(timeout=60)
        finally:
            b.kill()
    finally:
        a.kill()
    assert a.returncode == 0 and b.returncode == 0, (out_a, out_b)
    assert lab.since("alice", before["alice"]) == ["app2"]
    assert lab.since("bob", before["bob"]) == ["app3"]
    assert (lab.home_from("alice"), lab.home_from("bob")) == ("app2", "app3")


def test_the_session_step_keeps_the_auth_steps_choice(clean_lab: Lab) -> None:
    lab = clean_lab
    _only(lab.insts[1], lab)
    r = lab.login("carol", session=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # The fleet changed since, but the session step of the same login saw the same server.
    assert (lab.gates / "session-carol").read_text() == f"{lab.insts[1].host}\n"


def test_nothing_usable_leaves_pamltsps_own_server(clean_lab: Lab) -> None:
    lab = clean_lab
    for inst in lab.insts:
        inst.set_admin(AdminSettings(state="disabled"))
    time.sleep(0.8)
    before = lab.counts("bob")
    r = lab.login("bob", session=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.since("bob", before) == ["app1"]  # pamltsp.conf's SSH_SERVER
    assert (lab.gates / "session-bob").read_text() == "\n"  # nothing set for this login


def test_a_dead_and_a_silent_server_cost_the_login_at_most_the_timeout(clean_lab: Lab) -> None:
    lab = clean_lab
    timeout_ms = 800
    lab.set_client_conf(timeout_ms=timeout_ms)
    app1, app2, app3 = lab.insts
    # app1's snmpd stopped (SIGSTOP: it never answers), app3 draining: only app2 can be chosen, but the
    # poll waits for app1 until LB_TIMEOUT_MS.
    app3.set_admin(AdminSettings(state="draining"))
    time.sleep(0.8)
    assert app1.process is not None
    os.killpg(app1.process.pid, signal.SIGSTOP)
    try:
        # Baseline: the same login without pam_snmplb, to subtract pamltsp's own ssh time.
        lab.set_service(module_args=f"hook=/bin/true timeout_ms=5000")
        t0 = time.monotonic()
        assert lab.login("alice").returncode == 0
        plain = time.monotonic() - t0
        lab.set_service()
        before = lab.counts("alice")
        t0 = time.monotonic()
        r = lab.login("alice")
        took = time.monotonic() - t0
        module = float((lab.gates / "stamp-after-alice").read_text()) - float((lab.gates / "stamp-before-alice").read_text())
    finally:
        os.killpg(app1.process.pid, signal.SIGCONT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.since("alice", before) == ["app2"]
    print(f"login with a stopped snmpd: {took:.2f} s, without pam_snmplb {plain:.2f} s, pam_snmplb's step "
          f"{module:.3f} s (with one pam_exec of date), LB_TIMEOUT_MS {timeout_ms}")
    # pick ends within LB_TIMEOUT_MS counted from the hook's start (measured here: 50 ms past it on a
    # loaded machine), the hook and the stamp's exec add a few ms.
    assert module < timeout_ms / 1000 + 0.3, module
    assert took - plain < timeout_ms / 1000 + 0.5, (took, plain)


def test_a_hung_hook_is_killed_at_timeout_ms_and_the_login_goes_on(clean_lab: Lab) -> None:
    lab = clean_lab
    hung = lab.base / "hung-hook"
    survived = lab.base / "hung-hook-survived"
    # It and a child of its own (the whole process group is killed) would leave a mark after 1.5 s.
    hung.write_text(f"#!/bin/sh\n(sleep 1.5; touch {survived}) &\nsleep 1.5\ntouch {survived}\nsleep 30\n")
    hung.chmod(0o755)
    lab.set_service(module_args=f"hook={hung} timeout_ms=400")
    before = lab.counts("bob")
    t0 = time.monotonic()
    r = lab.login("bob")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert lab.since("bob", before) == ["app1"]
    print(f"login with a hung hook (timeout_ms=400): {took:.2f} s")
    assert took < 0.4 + 3, took  # the hook's 400 ms, then pamltsp's ssh
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t0)))
    assert not survived.exists(), "the hook's processes outlived the timeout"


def test_bad_module_options_and_a_hook_that_lies_never_stop_a_login(clean_lab: Lab) -> None:
    lab = clean_lab
    liar = lab.base / "liar-hook"
    liar.write_text("#!/bin/sh\necho '-oProxyCommand=evil'\n")
    liar.chmod(0o755)
    for args in (f"hook={liar}", "timeout_ms=banana hook=relative/path unknown=1",
                 f"hook={lab.base / 'no-such-hook'}"):
        lab.set_service(module_args=args)
        before = lab.counts("carol")
        r = lab.login("carol", session=True)
        assert r.returncode == 0, (args, r.stdout + r.stderr)
        assert (lab.gates / "session-carol").read_text() == "\n", args
        assert lab.since("carol", before) == ["app1"], args


def test_the_second_login_of_a_user_goes_back_to_their_running_session(clean_lab: Lab) -> None:
    """Affinity through the PAM hook (`snmplb pick --user "$PAM_USER"`). alice's first login lands where the
    load says; that server then holds her running session (her logind record there, as its agent reads it:
    what an SSHFS home's ssh session leaves on a real server) and is the busiest; her second login goes
    back to it; with LB_AFFINITY=no (or for bob, who has no session anywhere) the load decides
    (LB_ALGORITHM=best: one answer) and another server is chosen."""
    lab = clean_lab
    lab.set_client_conf(algorithm="best")
    before = lab.counts("alice")
    assert lab.login("alice").returncode == 0
    first = lab.since("alice", before)
    assert len(first) == 1
    home = next(i for i in lab.insts if i.name == first[0])
    assert lab.home_from("alice") == home.name
    lab.unmount_homes()  # the second login comes as from another client: nothing mounted here
    for inst in lab.insts:
        inst.set_load(FakeLoad(load1=6.0, cpus=4, sessions=(("alice", "10.0.0.1"),)) if inst is home else IDLE)
    time.sleep(0.8)
    before = lab.counts("alice")
    assert lab.login("alice").returncode == 0
    assert lab.since("alice", before) == first
    assert lab.home_from("alice") == home.name
    before = lab.counts("bob")
    assert lab.login("bob").returncode == 0
    assert lab.since("bob", before) not in ([], first)
    lab.set_client_conf(algorithm="best", affinity="no")
    before = lab.counts("alice")
    assert lab.login("alice").returncode == 0
    assert lab.since("alice", before) not in ([], first)  # the test tells affinity from luck


def _wait(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_pools_by_group_two_users_at_once_each_in_their_own_pool(clean_lab: Lab) -> None:
    """Two users logging in at the same moment on one client, in different pools (their groups, as NSS
    sees them on the client): each lands in their own pool; a user in no pool gets the unpooled server."""
    lab = clean_lab
    app1, app2, app3 = lab.insts
    lab.set_client_conf(pools=f"snmplb-t-b: {app2.host}; snmplb-t-c: {app3.host}")
    before = {u: lab.counts(u) for u in ("alice", "bob", "carol")}
    logins = {u: lab.start_login(u) for u in ("alice", "bob", "carol")}
    try:
        outs = {u: p.communicate(timeout=60)[0] for u, p in logins.items()}
    finally:
        for p in logins.values():
            p.kill()
    assert all(p.returncode == 0 for p in logins.values()), outs
    assert lab.since("alice", before["alice"]) == ["app2"]
    assert lab.since("bob", before["bob"]) == ["app3"]
    assert lab.since("carol", before["carol"]) == ["app1"]
    assert [lab.home_from(u) for u in ("alice", "bob", "carol")] == ["app2", "app3", "app1"]


def _ssh_server(conf: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SSH_SERVER_SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**CLEAN, "SNMPLB_PAMLTSP_CONF": str(conf), "SNMPLB_LTSP_CONF": "/nonexistent", **env})


def _sourced(conf: Path, snmplb_ssh_server: str | None) -> str:
    """SSH_SERVER as pamltsp's main() sets it: the file sourced, then ${SSH_SERVER:-server}."""
    env = {**CLEAN} if snmplb_ssh_server is None else {**CLEAN, "SNMPLB_SSH_SERVER": snmplb_ssh_server}
    r = subprocess.run(["sh", "-c", '. "$1"; SSH_SERVER=${SSH_SERVER:-server}; printf %s "$SSH_SERVER"', "sh",
                        str(conf)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_per_login_line_is_added_once_kept_last_and_takes_only_a_host(tmp_path: Path) -> None:
    for script in (HOOK, SSH_SERVER_SCRIPT):
        assert subprocess.run(["sh", "-n", str(script)], timeout=60).returncode == 0
        assert "\nset -u\n" in script.read_text()
    conf = tmp_path / "pamltsp.conf"
    ltsp = b"# Generated by `ltsp init`, see man:ltsp(8)\nPAM_AUTH_TYPE='Primary'\nSSH_SERVER='10.0.0.1'\n" \
           b"SSH_OPTIONS='-o x=\xff\x00y'\n"  # LTSP's lines, kept byte for byte (invalid UTF-8, a NUL)
    conf.write_bytes(ltsp)
    conf.chmod(0o640)
    r = _ssh_server(conf, "--per-login")
    assert r.returncode == 0 and "SSH_SERVER per login" in r.stderr, r.stderr
    once = conf.read_bytes()
    assert once.startswith(ltsp) and once.count(b"pam_snmplb") == 1 and once.endswith(b"(pam_snmplb)\n")
    assert conf.stat().st_mode & 0o777 == 0o640
    assert _ssh_server(conf, "--per-login").returncode == 0 and conf.read_bytes() == once  # idempotent
    assert _sourced(conf, None) == "10.0.0.1"  # no choice for this login: LTSP's
    assert _sourced(conf, "") == "10.0.0.1"
    assert _sourced(conf, "app7.example") == "app7.example"
    assert _sourced(conf, "fd00::7") == "fd00::7"
    for bad in ("-oProxyCommand=x", "a;touch /tmp/x", "a b", "$(id)", "a\nb"):
        assert _sourced(conf, bad) == "10.0.0.1", bad
    # A per-boot choice afterwards replaces LTSP's SSH_SERVER and keeps the per-login line last.
    r = _ssh_server(conf, SNMPLB_PICK="echo 10.9.9.9")
    assert r.returncode == 0, r.stderr
    lines = conf.read_bytes().split(b"\n")
    assert lines[-3:] == [b"SSH_SERVER='10.9.9.9'", once.split(b"\n")[-2], b""]
    assert _sourced(conf, None) == "10.9.9.9" and _sourced(conf, "app7") == "app7"
    # Without a file (ltsp.conf set none of pamltsp's variables): one is made with the line alone.
    fresh = tmp_path / "new" / "pamltsp.conf"
    assert _ssh_server(fresh, "--per-login").returncode == 0
    assert _sourced(fresh, None) == "server" and _sourced(fresh, "app2") == "app2"


def test_the_hook_prints_a_host_or_nothing_and_never_a_bad_answer(tmp_path: Path) -> None:
    def hook(pick: str, user: str | None = "root") -> subprocess.CompletedProcess:  # root: a user NSS knows
        env = {**CLEAN, "SNMPLB_PICK": pick} if user is None else {**CLEAN, "SNMPLB_PICK": pick, "PAM_USER": user}
        return subprocess.run([str(HOOK)], capture_output=True, text=True, timeout=60, env=env)

    args = tmp_path / "args"
    fake = tmp_path / "fake-pick"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\necho app2\necho app3\necho "a message" >&2\n')
    fake.chmod(0o755)
    r = hook(str(fake))
    assert (r.returncode, r.stdout) == (0, "app2\n") and args.read_text() == "--user\nroot\n"
    assert (hook("printf app9").returncode, hook("printf app9").stdout) == (0, "app9\n")  # no last newline
    # pick's LB_TIMEOUT_MS counts from the hook's start: SNMPLB_WRAPPER_PID names pick's parent.
    parent = tmp_path / "parent-pick"
    parent.write_text('#!/bin/sh\necho "p${PPID}_w${SNMPLB_WRAPPER_PID:-none}"\n')
    parent.chmod(0o755)
    r = hook(str(parent))
    ppid, wrapper = r.stdout.strip()[1:].split("_w")
    assert r.returncode == 0 and ppid == wrapper, r.stdout
    for pick, status in (("sh -c 'exit 3'", 1), ("false", 1), ("echo -oProxyCommand=x", 1), ("echo 'a b'", 1),
                         ("true", 1)):
        r = hook(pick)
        assert (r.returncode, r.stdout) == (status, ""), pick
    args.unlink()
    for user in (None, "", "-x", "root\nbob", "root\tx", "Not-a-user-but-a-password-1"):
        r = hook(str(fake), user)
        assert (r.returncode, r.stdout) == (1, ""), repr(user)
    assert not args.exists()  # pick never ran: an unknown name (a password typed there?) is on no command line


def test_an_autologin_session_without_auth_gets_its_own_server(clean_lab: Lab) -> None:
    """LTSP's AUTOLOGIN: no auth step, pamltsp's session step logs in with the password that PASSWORDS_x
    put in the client's shadow (`pamltsp=` base64), and mounts the home. pam_snmplb's session line
    chooses for that login."""
    lab = clean_lab
    _only(lab.insts[1], lab)
    lab.client.sh('usermod -p "pamltsp=$(printf %s "$2" | base64)" "$1"', "carol", PASSWORD)
    try:
        before = lab.counts("carol")
        r = lab.client.run("pamtester", "-v", SERVICE, "carol", "open_session", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        lab.client.sh('usermod -p pamltsp "$1"', "carol")
    assert lab.since("carol", before) == ["app2"]
    assert lab.home_from("carol") == "app2"
    assert (lab.gates / "session-carol").read_text() == f"{lab.insts[1].host}\n"
