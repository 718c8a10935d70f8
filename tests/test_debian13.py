"""Debian 13 (trixie, the current stable) and Debian 12 (bookworm): the packages built, installed and run in
a root of that release, made by debootstrap from Debian's own archive (the one this machine's apt uses).

Each release's root (scripts/debian-root.sh: minbase, the build dependencies, lintian, snmpd, snmp and the
packages' dependencies) is made once into SNMPLB_DEBIAN_ROOTS (default /var/cache/snmplb-test/SUITE-root)
and reused while complete. A test run works on an overlay of it (writes go to a tmpfs), inside a private
mount and PID namespace (unshare): /proc, /dev and /sys are mounted there only, every process of the root
(snmpd, the agent) runs there, and killing the namespace's first process ends them all and drops every
mount; the cached root stays unchanged. In the root, with the release's own tools: dpkg-buildpackage builds
the four packages from a copy of this tree, lintian checks them, apt installs them (it must download
nothing: the root holds every dependency), the release's snmpd runs its stock configuration on a free
loopback port with the package's drop-in and the agent as Debian-snmp, and snmpwalk reads the MIB by name,
get_hosts (from LDM's two paths), `snmplb pick` and check_snmplb poll it. Last, a purge leaves no trace.

Units in the place each release expects: the release's own snmpd.service shows where (/lib/systemd/system
on Debian 12, /usr/lib/systemd/system on 13, where /lib is only an alias of /usr/lib); dh_installsystemd
installs the packaging's units there, and the packaging names no unit directory itself.

The network: the archive, when a root is made (and the test skips, saying so, when it cannot be reached
then); the test's own traffic stays on loopback. SNMPLB_DEBIAN_MIRROR names another archive (a local
mirror) for the roots made from then on.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from snmplb.lab.fleet import PROJECT

SUITES = ("trixie", "bookworm")
VERSION_ID = {"trixie": "13", "bookworm": "12"}
# Where each release's systemd (and its snmpd package) keeps units: Debian 13 completed the merged /usr.
UNIT_DIR = {"trixie": "/usr/lib/systemd/system", "bookworm": "/lib/systemd/system"}
PACKAGES = ("python3-snmplb", "snmplb-agent", "snmplb-client", "snmplb-nms", "libpam-snmplb")
UNITS = ("snmplb-agent-check.service", "snmplb-agent-check.socket")
ROOTS = Path(os.environ.get("SNMPLB_DEBIAN_ROOTS", "/var/cache/snmplb-test"))
MAKE_ROOT = PROJECT / "scripts" / "debian-root.sh"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
APT_ENV = {**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"}
COMMUNITY = "snmplb-deb13-test"
MIB_ARGS = ["-M", "+/usr/share/snmplb/mibs/stand-ins", "-m", "+SNMPLB-MIB"]
# The names of the merged /usr's aliases: a Debian 13 package ships nothing under them.
ALIASED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
IN_ROOT = [
    pytest.mark.fleet,  # real processes: debootstrap, dpkg-buildpackage, apt, snmpd, the installed commands
    pytest.mark.debian,  # ./test -m "not debian" leaves them out (as root, they skip only without the archive)
]


def host_run(cmd: list[str], timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env=CLEAN_ENV, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _die_with_parent() -> None:
    """In the child, before exec: killed when the test's process ends, even by SIGKILL (PR_SET_PDEATHSIG),
    so that a namespace never outlives the test run."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Root:
    """An overlay of a cached release root in a private mount and PID namespace of its own.

    The namespace's first process (a ``sleep``) holds it: ``close`` kills it (``unshare --kill-child``
    passes the kill on), which ends every process started in the namespace and removes every mount.
    """

    def __init__(self, suite: str, lower: Path) -> None:
        self.suite = suite
        self.base = Path(tempfile.mkdtemp(prefix=f"snmplb-{suite}-"))  # empty seen from outside
        self.top = str(self.base / "root")  # the root's path inside the namespace
        script = ('set -e; b=$1; mount -t tmpfs -o mode=755 snmplb-test "$b"; mkdir "$b/upper" "$b/work" "$b/root"; '
                  'mount -t overlay overlay -o "lowerdir=$2,upperdir=$b/upper,workdir=$b/work" "$b/root"; '
                  'r=$b/root; mount -t proc proc "$r/proc"; mount --bind /dev "$r/dev"; '
                  'mount -t sysfs -o ro sysfs "$r/sys"; mount -t tmpfs -o mode=755 tmpfs "$r/run"; '
                  'echo ready; exec sleep infinity')
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--",
             "sh", "-c", script, "holder", str(self.base), str(lower)],
            env=CLEAN_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)
        try:
            ready, _, _ = select.select([self.holder.stdout], [], [], 60)
            assert ready, "the namespace's mounts took more than 60 s"
            line = self.holder.stdout.readline()  # the mounts are done (or sh failed: EOF)
            assert line == "ready\n", f"the namespace's mounts failed: {self.holder.stderr.read()}"
            children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
            assert len(children) == 1, children
            self.pid = int(children[0])  # the namespace's first process, seen from here
        except BaseException:
            self.close()
            raise

    def path(self, inside: str) -> Path:
        """A path of the root as this process reaches it (through the namespace's first process)."""
        return Path(f"/proc/{self.pid}/root{self.top}/{inside.lstrip('/')}")

    def command(self, cmd: list[str], timeout: float) -> list[str]:
        """``cmd`` run by the root's own programs, bounded by the root's own ``timeout``: a step that
        overruns ends in the root, not only on this side of the namespace."""
        return ["nsenter", "-t", str(self.pid), "--mount", "--pid", "--", "chroot", self.top,
                "timeout", "--kill-after=10", str(timeout), *cmd]

    def run(self, cmd: list[str], timeout: float = 60, env: dict[str, str] | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        r = subprocess.run(self.command(cmd, timeout), env=env or CLEAN_ENV, capture_output=True, text=True,
                           timeout=timeout + 30)
        if check:
            assert r.returncode == 0, f"{self.suite}: {cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout=30)
        for stream in (self.holder.stdout, self.holder.stderr):
            stream.close()
        self.base.rmdir()  # never rmtree: it is an empty directory here, whatever was mounted on it in there


# A root that could not be made is not tried again for each of the release's tests (pytest sets a module
# fixture up again after a skip or an error): suite -> (skip or fail, why).
_NOT_MADE: dict[str, tuple[bool, str]] = {}


def _make_root(suite: str, cached: Path) -> None:
    """The cached root, made or checked by scripts/debian-root.sh; skips when the archive is unreachable."""
    if suite in _NOT_MADE:
        skip, why = _NOT_MADE[suite]
        pytest.skip(why) if skip else pytest.fail(why)
    mirror = os.environ.get("SNMPLB_DEBIAN_MIRROR") or host_run([str(MAKE_ROOT), "--mirror"], timeout=30).stdout.strip()
    assert mirror, "no Debian archive in this machine's apt sources"
    start = time.monotonic()
    r = host_run([str(MAKE_ROOT), suite, str(cached), mirror], timeout=5700, check=False)  # the lock's wait, then the making
    if r.returncode == 3:
        _NOT_MADE[suite] = (True, f"Debian's archive cannot be reached, and no complete {suite} root is cached in "
                                  f"{cached}: {r.stderr.strip()}")
    elif r.returncode != 0:
        _NOT_MADE[suite] = (False, f"{MAKE_ROOT} {suite}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    if suite in _NOT_MADE:
        _make_root(suite, cached)
    print(f"{suite} root: {r.stdout.strip()} ({time.monotonic() - start:.0f} s)")


@pytest.fixture(scope="module", params=SUITES)
def root(request: pytest.FixtureRequest) -> Iterator[Root]:
    suite = request.param
    cached = ROOTS / f"{suite}-root"
    _make_root(suite, cached)  # apt's lists in it are what it was made from: it may be older than the archive
    made = Root(suite, cached)
    try:
        yield made
    finally:
        made.close()


@dataclass
class Built:
    root: Root
    debs: dict[str, str]  # package name -> the .deb's path in the root
    changes: str
    seconds: float

    def contents(self, name: str) -> list[str]:
        """The paths the package installs, without the leading '.' (symbolic links by their own name)."""
        lines = self.root.run(["dpkg-deb", "-c", self.debs[name]]).stdout.splitlines()
        return [line.split(maxsplit=5)[5].split(" -> ")[0].lstrip(".") for line in lines]


@pytest.fixture(scope="module")
def built(root: Root) -> Built:
    """The packages, built in the root by dpkg-buildpackage (the release's debhelper, dh-python, python3)."""
    anywhere = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".pybuild")

    def ignore(directory: str, names: list[str]) -> set[str]:
        # build/ and dist/ of a local build, at the top only: snmplb/build (the generators) is source
        top = {"build", "dist"} & set(names) if Path(directory) == PROJECT else set()
        return set(anywhere(directory, names)) | top

    shutil.copytree(PROJECT, root.path("/build/snmplb"), symlinks=True, ignore=ignore)
    # The build dependencies (build-essential included) are in the root: apt would install nothing.
    plan = root.run(["apt-get", "build-dep", "-s", "-q", "/build/snmplb"], env=APT_ENV, timeout=120).stdout
    missing = re.findall(r"^Inst (\S+)", plan, re.M)
    assert not missing, f"add {missing} to scripts/debian-root.sh's PACKAGES (the root is made again)"
    start = time.monotonic()
    root.run(["env", "-C", "/build/snmplb", "dpkg-buildpackage", "-us", "-uc", "-b"], timeout=1200)
    seconds = time.monotonic() - start
    print(f"{root.suite}: dpkg-buildpackage took {seconds:.0f} s")
    debs = {p.name.split("_")[0]: f"/build/{p.name}" for p in root.path("/build").glob("*.deb")}
    assert sorted(debs) == sorted(PACKAGES)
    return Built(root, debs, f"/build/{next(root.path('/build').glob('*.changes')).name}", seconds)


@dataclass
class Install:
    built: Built
    cleanups: list = field(default_factory=list)  # what must end before the purge (snmpd)


@pytest.fixture(scope="module")
def installed(built: Built) -> Install:
    """The four packages installed in the root with its apt, which downloads nothing (the root has the rest)."""
    root, debs = built.root, sorted(built.debs.values())
    plan = root.run(["apt-get", "install", "-s", "-q", *debs], env=APT_ENV, timeout=120).stdout
    others = set(re.findall(r"^Inst (\S+)", plan, re.M)) - set(PACKAGES)
    assert not others, f"add {sorted(others)} to scripts/debian-root.sh's PACKAGES (the root is made again)"
    root.run(["apt-get", "install", "-y", "-q", *debs], env=APT_ENV, timeout=300)
    return Install(built)


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Snmpd:
    root: Root
    port: int
    pid: int  # in the root's PID namespace

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def snmpd(installed: Install) -> Iterator[Snmpd]:
    """The release's snmpd as its systemd unit runs it (-u/-g Debian-snmp, -I -smux,...), with its stock
    configuration listening on a free loopback port, a community for the clients and the package's drop-in.

    The agent's configuration names a listener of the test's as sshd and checks no login path: the root
    has no sshd, and this machine's disks are not the server's concern here.
    """
    root = installed.built.root
    ssh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the same network namespace: loopback
    ssh.bind(("127.0.0.1", 0))
    ssh.listen()
    root.path("/etc/snmplb/agent.conf").write_text(f"ssh_port = {ssh.getsockname()[1]}\nlogin_paths =\n")
    port = free_udp_port()
    stock = root.path("/etc/snmp/snmpd.conf").read_text()
    moved, n = re.subn(r"^(\s*agentaddress\s+).*$", rf"\g<1>udp:127.0.0.1:{port}", stock, flags=re.M | re.I)
    assert n == 1, f"{root.suite}'s snmpd.conf has one agentaddress line"
    assert re.search(r"^includeDir /etc/snmp/snmpd.conf.d", moved, re.M), "the stock config reads the drop-ins"
    tmp = root.path("/srv/snmpd")
    (tmp / "persist").mkdir(parents=True)
    tmp.chmod(0o755)
    (tmp / "snmpd.conf").write_text(moved + f"\nrocommunity {COMMUNITY} 127.0.0.1 -V snmplbView\n")
    root.run(["chown", "Debian-snmp:Debian-snmp", "/srv/snmpd/persist"])
    env = {**CLEAN_ENV, "MIBS": "", "SNMP_PERSISTENT_DIR": "/srv/snmpd/persist"}
    proc = subprocess.Popen(root.command(
        ["/usr/sbin/snmpd", "-f", "-Lf", "/srv/snmpd/snmpd.log", "-p", "/srv/snmpd/snmpd.pid", "-C",
         "-c", "/srv/snmpd/snmpd.conf", "-u", "Debian-snmp", "-g", "Debian-snmp", "-I", "-smux,mteTrigger,mteTriggerConf",
         "-x", "unix:/srv/snmpd/agentx"], 3600), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        if (tmp / "snmpd.pid").exists():
            root.run(["kill", (tmp / "snmpd.pid").read_text().strip()], check=False)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # the namespace's end takes it with it anyway
            proc.kill()
            proc.wait(timeout=10)
        ssh.close()
        root.path("/etc/snmplb/agent.conf").unlink(missing_ok=True)

    installed.cleanups.append(stop)
    try:
        deadline = time.monotonic() + 30
        while True:  # ready when it answers the stock configuration's public sysDescr
            r = root.run(["snmpget", "-v2c", "-c", "public", "-r0", "-t1", "-On", f"127.0.0.1:{port}",
                          ".1.3.6.1.2.1.1.1.0"], check=False, env=client_env())
            if r.returncode == 0 or proc.poll() is not None or time.monotonic() > deadline:
                break
        log = tmp / "snmpd.log"
        assert r.returncode == 0, log.read_text(errors="replace") if log.exists() else r.stderr
        print(f"{root.suite}: {r.stdout.strip()}")
        yield Snmpd(root, port, int((tmp / "snmpd.pid").read_text()))
    finally:
        stop()


def client_env() -> dict[str, str]:
    """net-snmp's tools as a user runs them, their persistent files kept out of /var/lib/snmp."""
    return {**CLEAN_ENV, "HOME": "/srv/client", "SNMP_PERSISTENT_DIR": "/srv/client"}


def poll_env(snmpd: Snmpd, silent_port: int) -> dict[str, str]:
    """LB_* settings listing a silent server first and the real one second: only a client that really
    polled names the real one alone (get_hosts' fallback prints both, in this order). The thresholds are
    wide: this machine's own load must not make the server ineligible."""
    return {**CLEAN_ENV, "LB_SERVERS": f"127.0.0.2:{silent_port} {snmpd.address}", "LB_SNMP_COMMUNITY": COMMUNITY,
            "LB_TIMEOUT_MS": "5000", "LB_MAX_LOAD": "1000", "LB_MAX_RESPONSE_MS": "5000", "LB_SKIP_SWAPPING": "no"}


class TestRelease:
    pytestmark = IN_ROOT

    def test_the_root_is_the_release_from_the_archive(self, root: Root):
        release = dict(line.split("=", 1) for line in root.path("/etc/os-release").read_text().splitlines()
                       if "=" in line)
        assert release["VERSION_CODENAME"] == root.suite
        assert release["VERSION_ID"].strip('"') == VERSION_ID[root.suite]
        r = root.run(["python3", "-c", "import sys; print(sys.version_info >= (3, 10), sys.version.split()[0])"])
        print(f"{root.suite}: python3 {r.stdout.split()[1]}")
        assert r.stdout.startswith("True ")

    def test_units_are_where_the_release_keeps_them_and_nothing_is_under_an_alias(self, built: Built):
        root = built.root
        # The release's own snmpd.service says where its units go.
        snmpd_unit = [f for f in root.run(["dpkg", "-L", "snmpd"]).stdout.split() if f.endswith("/snmpd.service")]
        assert snmpd_unit == [f"{UNIT_DIR[root.suite]}/snmpd.service"], snmpd_unit
        files = {name: built.contents(name) for name in PACKAGES}
        units = sorted(f for f in files["snmplb-agent"] if f.endswith(UNITS))
        print(f"{root.suite}: {units}")
        assert units == [f"{UNIT_DIR[root.suite]}/{u}" for u in UNITS]
        if root.suite != "bookworm":  # Debian 13: the merged /usr's aliases hold no package's files
            aliased = [f for fs in files.values() for f in fs if f.split("/")[1] in ALIASED]
            assert not aliased, aliased
        # dh_installsystemd knew them: the maintainer scripts have its snippets (units neither enabled nor
        # started at install, their state removed at purge).
        postrm = root.run(["dpkg-deb", "-I", built.debs["snmplb-agent"], "postrm"]).stdout
        assert "snmplb-agent-check.service" in postrm and "deb-systemd-helper" in postrm, postrm

    def test_each_package_holds_its_role(self, built: Built):
        files = {name: built.contents(name) for name in PACKAGES}
        dist = "/usr/lib/python3/dist-packages/snmplb/"
        modules = {name: {f[len(dist):].split("/")[0] for f in fs if f.startswith(dist) and f.endswith(".py")}
                   for name, fs in files.items()}
        assert modules["snmplb-client"] == {"client", "login", "gethosts.py"}
        assert modules["snmplb-agent"] == {"agent", "admin"}
        assert modules["snmplb-nms"] == {"nms", "nmscheck.py"}
        assert {"__init__.py", "_mibdata.py", "mib.py"} <= modules["python3-snmplb"]
        assert {"/usr/share/ltsp/get_hosts", "/usr/lib/ltsp/get_hosts"} <= set(files["snmplb-client"])
        assert "/usr/lib/nagios/plugins/check_snmplb" in files["snmplb-nms"]
        assert {"/usr/bin/snmplb-agent", "/etc/snmp/snmpd.conf.d/snmplb.conf",
                "/usr/share/snmp/mibs/SNMPLB-MIB.txt"} <= set(files["snmplb-agent"])
        everything = [f for fs in files.values() for f in fs]
        assert not [f for f in everything if "/snmplb/lab/" in f or "/snmplb/build/" in f or f.startswith("/opt/")]

    def test_lintian_of_the_release_finds_no_errors(self, built: Built):
        r = built.root.run(["lintian", "--tag-display-limit", "0", built.changes], timeout=900, check=False)
        tags = [line for line in r.stdout.splitlines() if re.match(r"[EWIP]: ", line)]
        print(f"{built.root.suite}: lintian:\n" + "\n".join(tags))  # reported, not hidden (pytest -rP)
        assert not [t for t in tags if t.startswith("E: ")], r.stdout
        assert r.returncode == 0, r.stdout + r.stderr

    def test_apt_installs_them_and_the_units_land_where_systemd_looks(self, installed: Install):
        root = installed.built.root
        listed = root.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *PACKAGES]).stdout
        assert sorted(line.split()[0] for line in listed.splitlines() if line.split()[1] == "ii") == sorted(PACKAGES)
        conffiles = root.run(["dpkg-query", "-W", "-f", "${Conffiles}", "snmplb-agent"]).stdout
        assert "/etc/snmp/snmpd.conf.d/snmplb.conf" in conffiles
        assert "state = enabled" in root.path("/etc/snmplb/admin.conf").read_text()
        owned = root.run(["dpkg", "-L", "snmplb-agent"]).stdout.split()
        for unit in UNITS:
            assert f"{UNIT_DIR[root.suite]}/{unit}" in owned
            assert root.path(f"{UNIT_DIR[root.suite]}/{unit}").is_file()
        service = root.path(f"{UNIT_DIR[root.suite]}/snmplb-agent-check.service").read_text()
        assert re.search(r"^ExecStart=/usr/bin/snmplb-agent-check ", service, re.M), service
        assert not list(root.path("/etc/systemd/system").glob("*/snmplb-agent-check.*"))  # installed, not enabled
        # The release's python3 imports the installed package (byte-compiled for it by the postinst).
        r = root.run(["python3", "-I", "-c", "import sys, snmplb.client.gethosts as g, snmplb.agent; "
                      "print(g.__file__, sys.implementation.cache_tag)"])
        path, tag = r.stdout.split()
        assert path.startswith("/usr/lib/python3/dist-packages/snmplb/"), path
        assert list(root.path("/usr/lib/python3/dist-packages/snmplb/client/__pycache__").glob(f"*.{tag}.pyc"))

    def test_snmpwalk_reads_the_mib_by_name_from_the_agent_running_as_debian_snmp(self, snmpd: Snmpd):
        root = snmpd.root
        r = root.run(["snmpwalk", "-v2c", "-c", COMMUNITY, "-r1", "-t5", *MIB_ARGS, snmpd.address,
                      "SNMPLB-MIB::snmplbObjects"], env=client_env())
        print(f"{root.suite}: snmpwalk:\n{r.stdout}")
        assert re.search(r'^SNMPLB-MIB::lbRow\.0 = STRING: "?\d+( \d+)+"?$', r.stdout, re.M), r.stdout
        assert "SNMPLB-MIB::lbAdminState.0 = INTEGER: enabled(1)" in r.stdout
        assert re.search(r"SNMPLB-MIB::lbAgentVersion\.0 = STRING: .*snmplb", r.stdout), r.stdout
        ps = root.run(["ps", "-o", "user:20=,args=", "--ppid", str(snmpd.pid)]).stdout
        agents = [line for line in ps.splitlines() if "/usr/bin/snmplb-agent" in line]
        assert len(agents) == 1 and agents[0].split()[:2] == ["Debian-snmp", "/usr/bin/python3"], ps

    def test_get_hosts_from_both_ldm_paths_prints_the_server(self, snmpd: Snmpd):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.2", 0))
            for path in ("/usr/share/ltsp/get_hosts", "/usr/lib/ltsp/get_hosts"):
                r = snmpd.root.run([path], env=poll_env(snmpd, silent.getsockname()[1]), timeout=60)
                assert r.stdout == "127.0.0.1\n", (path, r.stdout, r.stderr)

    def test_snmplb_pick_chooses_the_server(self, snmpd: Snmpd):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.2", 0))
            silent_port = silent.getsockname()[1]
            env = {**poll_env(snmpd, silent_port), "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf"}
            r = snmpd.root.run(["snmplb", "pick", "--port", "3389"], env=env, timeout=60)
            assert r.stdout == "127.0.0.1:3389\n", (r.stdout, r.stderr)
            r = snmpd.root.run(["snmplb", "pick", "--json"], env=env, timeout=60)
        answer = json.loads(r.stdout)
        assert answer["chosen"] == "127.0.0.1" and answer["usable"], answer
        skipped = {(s["host"], s["port"]): s["skipped"] for s in answer["servers"]}
        assert skipped[("127.0.0.1", snmpd.port)] is None, skipped  # listed
        assert skipped[("127.0.0.2", silent_port)], skipped  # skipped, saying why

    def test_check_snmplb_says_ok(self, snmpd: Snmpd):
        # Thresholds this machine's own load, memory and swap cannot reach: the verdict is the server's state.
        wide = ["--load-warning", "1000", "--load-critical", "1000", "--mem-warning", "0:", "--mem-critical", "0:",
                "--swap-warning", "1000000000", "--swap-critical", "1000000000", "--age-warning", "60",
                "--age-critical", "60"]
        r = snmpd.root.run(["/usr/lib/nagios/plugins/check_snmplb", "-H", "127.0.0.1", "-p", str(snmpd.port),
                            "--timeout-ms", "5000", *wide], env={**CLEAN_ENV, "SNMPLB_COMMUNITY": COMMUNITY},
                           check=False)
        print(f"{snmpd.root.suite}: {r.stdout.strip()}")
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        assert r.stdout.startswith("SNMPLB OK - enabled"), r.stdout

    def test_zz_purge_leaves_nothing(self, installed: Install):
        root = installed.built.root
        while installed.cleanups:
            installed.cleanups.pop()()
        root.run(["apt-get", "purge", "-y", "-q", *PACKAGES], env=APT_ENV, timeout=300)
        listed = root.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *PACKAGES], check=False).stdout
        assert not [line for line in listed.splitlines() if len(line.split()) > 1 and line.split()[1] != "un"], listed
        for gone in ("/etc/snmplb", "/var/lib/snmplb-agent", "/etc/snmp/snmpd.conf.d/snmplb.conf",
                     "/usr/lib/python3/dist-packages/snmplb", "/usr/share/ltsp/get_hosts",
                     *(f"{UNIT_DIR[root.suite]}/{u}" for u in UNITS)):
            assert not root.path(gone).exists(), gone


def test_the_packaging_names_no_unit_directory():
    """dh_installsystemd installs the units from debian/ where the release building the packages keeps them;
    a unit directory named in debian/ (rules, an .install file) would pin one release's place on all."""
    named = [f"{p.name}:{n}: {line.strip()}" for p in sorted((PROJECT / "debian").iterdir())
             if p.is_file() and p.name not in ("changelog", "copyright")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if "systemd/system" in line and not line.lstrip().startswith("#")]  # comments may name both
    assert not named, named
