"""The Debian packages, built and installed for real.

dpkg-buildpackage builds them from a copy of this tree (Debian's own python3 and debhelper, a clean
environment: not this venv), lintian checks them, apt installs them on this machine; then Debian's own
snmpd runs with its stock configuration (only the listening address moved to a free loopback port) plus
the installed drop-in, the agent as Debian-snmp as in production, and snmpwalk reads the row by name;
the installed get_hosts and check_snmplb poll it. install-into-chroot.sh installs the client package into
a chroot. The last test purges the packages and checks that the machine is as it was (the package list,
/etc/snmplb); the module's fixture purges them again if a test failed before that.

The commands run with a clean environment and /usr/bin/python3, so they import the installed package from
/usr/lib/python3/dist-packages, never this checkout (installed editable in the venv running pytest).

apt never downloads: scripts/setup.sh installs every package the .deb files depend on or recommend,
and the test stops before installing if apt would fetch anything; its network traffic stays on loopback.

The chroot: debootstrap needs the Debian mirror (about a minute and 260 MB for minbase with python3,
traffic the tests may not send), so by default the chroot is an overlay of this machine's own root (a
Debian 12 system; writes go to a temporary upper layer). SNMPLB_DEBOOTSTRAP_CHROOT=DIR uses a chroot made
beforehand with `debootstrap --variant=minbase --include=python3 bookworm DIR` as the lower layer instead
(it stays unchanged).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from snmplb.build import mangen
from snmplb.lab.fleet import PROJECT

PACKAGES = ("python3-snmplb", "snmplb-agent", "snmplb-client", "snmplb-nms", "libpam-snmplb")
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
APT_ENV = {**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"}
DIST = Path("/usr/lib/python3/dist-packages")
ETC_SNMPLB = Path("/etc/snmplb")
COMMUNITY = "snmplb-ltsp"  # the installed drop-in's, which it allows from 127.0.0.1 (the server itself)
STAND_INS = "/usr/share/snmplb/mibs/stand-ins"
# For apt in the chroot: the dependencies are there (python3), the recommendations left out, and any
# download would go to a closed loopback port and fail: the test never reaches the Debian mirror.
NO_MIRROR = "--no-install-recommends -o Acquire::http::Proxy=http://127.0.0.1:9 -o Acquire::https::Proxy=http://127.0.0.1:9"
MIB_ARGS = ["-m", "SNMPLB-MIB"]  # the stand-ins are found without -M: /usr/share/snmp/snmp.conf names them
# Current LTSP's sessions in snmplb-client (README, "Current LTSP"): the scripts in /usr/libexec/snmplb (FHS
# 3.0, Debian Policy 9.1.1: programs run by other programs, not by users), the X sessions where display
# managers look for them.
LIBEXEC = Path("/usr/libexec/snmplb")
XSESSIONS = Path("/usr/share/xsessions")
SESSION_FILES = ("/usr/libexec/snmplb/snmplb-session", "/usr/libexec/snmplb/snmplb-ssh-server",
                 "/usr/share/xsessions/zz-snmplb-rdp.desktop", "/usr/share/xsessions/zz-snmplb-x2go.desktop")

pytestmark = [
    pytest.mark.fleet,  # real processes: dpkg-buildpackage, apt, snmpd, the installed commands
    pytest.mark.debian,  # ./test -m "not debian" leaves this machine's packages alone
    pytest.mark.skipif(os.geteuid() != 0, reason="installs packages: needs root"),
    pytest.mark.skipif(not shutil.which("dpkg-buildpackage", path=CLEAN_ENV["PATH"]) or
                       not shutil.which("apt-get", path=CLEAN_ENV["PATH"]),
                       reason="needs Debian's build tools (scripts/setup.sh installs them)"),
]


def run(cmd: list[str], timeout: float = 120, env: dict[str, str] | None = None, check: bool = True,
        **kw) -> subprocess.CompletedProcess:
    """``cmd`` with a clean environment (Debian's python3, not the venv's); output as text."""
    r = subprocess.run(cmd, env=env or CLEAN_ENV, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def installed_packages() -> set[str]:
    """Every package dpkg knows in any state but not-installed (config-files included)."""
    r = run(["dpkg-query", "-W", "-f", "${Package}:${Architecture} ${db:Status-Abbrev}\n"])
    return {line.split()[0] for line in r.stdout.splitlines() if len(line.split()) > 1 and line.split()[1] != "un"}


def snapshot(directory: Path) -> dict[str, bytes] | None:
    """The files under ``directory`` and their bytes (None when it does not exist)."""
    if not directory.exists():
        return None
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def purge(packages: set[str] | tuple[str, ...]) -> None:
    present = [p for p in packages if p.split(":")[0] in {q.split(":")[0] for q in installed_packages()}]
    if present:
        run(["apt-get", "purge", "-y", "-q", *present], env=APT_ENV, timeout=300)


@dataclass
class Built:
    debs: dict[str, Path]  # package name -> .deb
    changes: Path
    seconds: float


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The packages, built by dpkg-buildpackage from a copy of this tree (nothing is written here)."""
    top = tmp_path_factory.mktemp("debian-build")
    src = top / "snmplb"
    anywhere = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".pybuild")

    def ignore(directory: str, names: list[str]) -> set[str]:
        # build/ and dist/ of a local build, at the top only: snmplb/build (the generators) is source,
        # and debian/rules runs mangen from it
        top = {"build", "dist"} & set(names) if Path(directory) == PROJECT else set()
        return set(anywhere(directory, names)) | top

    shutil.copytree(PROJECT, src, symlinks=True, ignore=ignore)
    start = time.monotonic()
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, timeout=900, env={**CLEAN_ENV, "HOME": str(top)})
    debs = {p.name.split("_")[0]: p for p in top.glob("*.deb")}
    assert sorted(debs) == sorted(PACKAGES)
    return Built(debs, next(top.glob("*.changes")), time.monotonic() - start)


def contents(deb: Path) -> list[str]:
    """The paths a .deb installs (symbolic links by their own name), without the leading '.'."""
    lines = run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines()
    return [line.split(maxsplit=5)[5].split(" -> ")[0].lstrip(".") for line in lines]


def control(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()


def test_each_package_holds_its_role_and_no_lab_or_build_tooling(built: Built):
    files = {name: contents(deb) for name, deb in built.debs.items()}
    modules = {name: {f.split("/dist-packages/snmplb/")[1].split("/")[0] for f in fs
                      if "/dist-packages/snmplb/" in f and f.endswith(".py")} for name, fs in files.items()}
    assert modules["snmplb-client"] == {"client", "login", "gethosts.py"}
    assert modules["snmplb-agent"] == {"agent", "admin"}
    assert modules["snmplb-nms"] == {"nms", "nmscheck.py"}
    assert {"__init__.py", "_mibdata.py", "errors.py", "kvfile.py", "mib.py"} <= modules["python3-snmplb"]
    assert all(m.endswith(".py") for m in modules["python3-snmplb"])  # the top level only, no subpackage
    everything = [f for fs in files.values() for f in fs]
    assert not [f for f in everything if "/snmplb/lab/" in f or "/snmplb/build/" in f or "snmplb-demo" in f]
    assert "/usr/share/ltsp/get_hosts" in files["snmplb-client"]
    assert "/usr/lib/ltsp/get_hosts" in files["snmplb-client"]
    assert set(SESSION_FILES) <= set(files["snmplb-client"])
    assert not [f for f in everything if f.startswith("/opt/")]
    assert "/usr/lib/nagios/plugins/check_snmplb" in files["snmplb-nms"]
    assert "/usr/share/snmplb/nms/zabbix/snmplb_template.yaml" in files["snmplb-nms"]
    assert {"/usr/bin/snmplb-agent", "/usr/bin/snmplb-admin", "/usr/bin/snmplb-agent-check",
            "/etc/snmp/snmpd.conf.d/snmplb.conf", "/usr/share/snmp/mibs/SNMPLB-MIB.txt",
            "/usr/share/snmp/snmp.conf", f"{STAND_INS}/SNMPv2-SMI.txt"} <= set(files["snmplb-agent"])
    # Debian's own packages, and nothing the tests alone use (pysnmp, pyasn1) or Debian 12 cannot satisfy.
    assert "snmpd" in control(built.debs["snmplb-agent"], "Depends")
    assert "python3-nagiosplugin" in control(built.debs["snmplb-nms"], "Depends")
    assert "python3-cryptography" in control(built.debs["snmplb-client"], "Recommends")
    for deb in built.debs.values():
        assert "pysnmp" not in control(deb, "Depends") and "pyasn1" not in control(deb, "Depends")
    # Every manual page mangen makes, in its package, and no other (help2man's copies are gone).
    pages = {name: {f for f in fs if f.startswith("/usr/share/man/")} for name, fs in files.items()}
    want = {name: set() for name in PACKAGES}
    for page, package in mangen.pages():
        want[package] |= {f"/usr/share/man/man{page.section}/", f"/usr/share/man/man{page.section}/{page.filename}.gz"}
    assert {n: {f for f in fs if not f.endswith("/usr/share/man/")} for n, fs in pages.items()} == want


def test_the_package_version_is_the_python_package_version():
    import snmplb
    version = run(["dpkg-parsechangelog", "-S", "Version"], cwd=PROJECT).stdout.strip()
    assert version.split("-")[0] == snmplb.__version__


def test_lintian_finds_no_errors(built: Built):
    r = run(["lintian", "--no-tag-display-limit", str(built.changes)], check=False, timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EWIP]: ", line)]
    print("\n".join(tags))  # the warnings are reported, not hidden (shown with pytest -rP)
    assert not [t for t in tags if t.startswith("E: ")], r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


# What lintian says about manual pages: any tag on a page (or on a command without one), an override that
# matches nothing. Info tags included (-I): spare-manual-page is one, and must stay overridden only for the
# two programs that are not on the PATH and the PAM module (debian/*.lintian-overrides say why).
_MAN_TAGS = re.compile(r"manual|manpage|man-page|whatis|groff|-override\b|usr/share/man/")


def test_lintian_finds_nothing_about_the_manual_pages(built: Built):
    r = run(["lintian", "-I", "--show-overrides", "--tag-display-limit", "0", str(built.changes)], check=False,
            timeout=600)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EWIPXO]: ", line)]
    print("\n".join(tags))
    about_man = [t for t in tags if _MAN_TAGS.search(t)]
    overridden = sorted(t for t in about_man if t.startswith("O: "))
    assert [t for t in about_man if not t.startswith("O: ")] == [], r.stdout
    assert overridden == ["O: libpam-snmplb: spare-manual-page [usr/share/man/man8/pam_snmplb.8.gz]",
                          "O: snmplb-client: spare-manual-page [usr/share/man/man8/get_hosts.8.gz]",
                          "O: snmplb-nms: spare-manual-page [usr/share/man/man1/check_snmplb.1.gz]"], overridden


def test_get_hosts_without_a_venv_or_the_package_still_prints_the_configured_servers():
    # No /opt/snmplb: the script tries the system's python3 (where the package would be), which has no
    # snmplb here yet: LDM still gets its line.
    if Path("/opt/snmplb").exists() or run(["/usr/bin/python3", "-I", "-c", "import snmplb"], check=False).returncode == 0:
        pytest.skip("snmplb is installed for the system's python3 or in /opt/snmplb on this machine")
    r = run([str(PROJECT / "chroot" / "get_hosts")], env={**CLEAN_ENV, "LB_SERVERS": "app1 app2:1161 app1"})
    assert r.stdout == "app1 app2\n"
    assert "get_hosts: snmplb failed; listing the configured servers" in r.stderr


@dataclass
class Install:
    added: set[str]
    etc_before: dict[str, bytes] | None
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # what must end before the purge
    groups_before: str = ""  # snmpd's user's groups (the postinst may add x2gouser; purge takes it back)

    def purge(self) -> None:
        while self.cleanups:
            self.cleanups.pop()()
        purge(self.added)


def snmpd_groups() -> str:
    return subprocess.run(["id", "-nG", "Debian-snmp"], capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.fixture(scope="module")
def installed(built: Built) -> Iterator[Install]:
    """The four packages installed with apt; purged afterwards (with whatever apt added), in any case."""
    if any(p.split(":")[0] in PACKAGES for p in installed_packages()):
        pytest.skip("an snmplb package is installed on this machine: the test would replace it")
    before = installed_packages()
    etc_before = snapshot(ETC_SNMPLB)
    state = Install(set(), etc_before, groups_before=snmpd_groups())
    try:
        debs = [str(d) for d in built.debs.values()]
        # apt must find every dependency installed: never reach the mirror (--no-download cannot install
        # local files), so simulate first and stop if it would install anything else.
        plan = run(["apt-get", "install", "-s", "-q", *debs], env=APT_ENV, timeout=300).stdout
        others = {m for m in re.findall(r"^Inst (\S+)", plan, re.M)} - set(PACKAGES)
        assert not others, f"run scripts/setup.sh: apt would download {sorted(others)}"
        run(["apt-get", "install", "-y", "-q", *debs], env=APT_ENV, timeout=300)
        state.added = installed_packages() - before
        yield state
    finally:
        state.added = installed_packages() - before
        state.purge()


def test_apt_installs_only_snmplb_and_the_admin_file_is_made_once(installed: Install, built: Built):
    assert {p.split(":")[0] for p in installed.added} == set(PACKAGES), "setup.sh should install the dependencies"
    conffiles = run(["dpkg-query", "-W", "-f", "${Conffiles}", "snmplb-agent"]).stdout
    assert "/etc/snmp/snmpd.conf.d/snmplb.conf" in conffiles
    drop_in = Path("/etc/snmp/snmpd.conf.d/snmplb.conf").read_text()
    assert re.search(r"^pass_persist \S+ /usr/bin/snmplb-agent ", drop_in, re.M) and "/opt/snmplb" not in drop_in
    assert Path("/usr/lib/ltsp/get_hosts").resolve() == Path("/usr/share/ltsp/get_hosts")
    # Where x2goserver is installed (setup.sh installs it), snmpd's user joins x2gouser to read its sessions.
    if subprocess.run(["getent", "group", "x2gouser"], capture_output=True, timeout=30).returncode == 0:
        assert "x2gouser" in snmpd_groups().split()
    admin = ETC_SNMPLB / "admin.conf"
    if installed.etc_before is None or str(admin) not in installed.etc_before:
        assert "state = enabled" in admin.read_text()
        assert admin.stat().st_mode & 0o777 == 0o644  # snmpd's user reads it
    # The admin's change survives a reinstall: the postinst never overwrites the file.
    before = admin.read_bytes()
    run(["snmplb-admin", "drain"])
    try:
        run(["apt-get", "install", "-y", "-q", "--reinstall", str(built.debs["snmplb-agent"])], env=APT_ENV,
            timeout=300)
        assert "state = draining" in admin.read_text()
    finally:
        admin.write_bytes(before)


def test_installed_manual_pages_are_found_by_name_render_cleanly_and_name_installed_files(installed: Install):
    for page, _package in mangen.pages():
        r = run(["man", "-w", f"{page.section}", page.name])
        path = r.stdout.strip()
        assert path == f"/usr/share/man/man{page.section}/{page.filename}.gz", (page.filename, path)
        r = run(["man", "--warnings", "-E", "UTF-8", "-l", path], env={**CLEAN_ENV, "MANWIDTH": "80"})
        assert r.stderr == "" and f"{page.name} - " in r.stdout, (page.filename, r.stderr)
        # every file of the packages that a page names is there (the documents, the scripts, the NMS files)
        text = r.stdout.replace("\u2010\n", "").replace("-\n", "-")
        for named in set(re.findall(r"(/usr/(?:share|lib|libexec|bin)/[\w./-]*\w)", text)):
            if named.startswith(("/usr/share/man/", "/usr/lib/python3")) or "*" in named:
                continue
            assert Path(named).exists(), (page.filename, named)
    assert "snmplb-agent(8)" in Path("/etc/snmp/snmpd.conf.d/snmplb.conf").read_text()  # the conffile names it


def _stock_snmpd_conf(port: int) -> str:
    """Debian's /etc/snmp/snmpd.conf as installed, listening on ``port`` instead of 161 (which a running
    system snmpd may hold). Nothing else: the installed drop-in allows its community from 127.0.0.1."""
    stock = Path("/etc/snmp/snmpd.conf").read_text()
    moved, n = re.subn(r"^(\s*agentaddress\s+).*$", rf"\g<1>udp:127.0.0.1:{port}", stock, flags=re.M)
    assert n == 1, "Debian's snmpd.conf has one agentaddress line"
    assert re.search(r"^includeDir /etc/snmp/snmpd.conf.d", moved, re.M), "the stock config reads the drop-ins"
    return moved


@dataclass
class Snmpd:
    port: int
    proc: subprocess.Popen
    tmp: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def snmpd(installed: Install) -> Iterator[Snmpd]:
    """Debian's snmpd as its systemd unit runs it (-u/-g Debian-snmp, -I -smux,...), on a free loopback port.

    The agent's configuration says which port counts as sshd's (a listener of the test's) and that no
    login path is checked, so that this machine (no sshd here, maybe a full /home) is a usable server.
    """
    tmp = Path(tempfile.mkdtemp(prefix="snmplb-deb-"))
    tmp.chmod(0o755)  # snmpd's user writes its persistent files under it
    persist = tmp / "persist"
    persist.mkdir()
    snmp_user = pwd.getpwnam("Debian-snmp")
    os.chown(persist, snmp_user.pw_uid, snmp_user.pw_gid)
    ssh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ssh.bind(("127.0.0.1", 0))
    ssh.listen()
    agent_conf = ETC_SNMPLB / "agent.conf"
    saved = agent_conf.read_bytes() if agent_conf.exists() else None
    agent_conf.write_text(f"ssh_port = {ssh.getsockname()[1]}\nlogin_paths =\n")
    port = free_udp_port()
    conf = tmp / "snmpd.conf"
    conf.write_text(_stock_snmpd_conf(port))
    env = {**CLEAN_ENV, "MIBS": "", "SNMP_PERSISTENT_DIR": str(persist)}
    proc = subprocess.Popen(["/usr/sbin/snmpd", "-f", "-Lf", str(tmp / "snmpd.log"), "-C", "-c", str(conf),
                             "-u", "Debian-snmp", "-g", "Debian-snmp", "-I", "-smux,mteTrigger,mteTriggerConf",
                             "-x", f"unix:{tmp}/agentx"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for pid in children:  # the agent ends at EOF on stdin; make sure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ssh.close()
        if saved is None:
            agent_conf.unlink(missing_ok=True)
        else:
            agent_conf.write_bytes(saved)
        shutil.rmtree(tmp, ignore_errors=True)

    installed.cleanups.append(stop)
    try:
        deadline = time.monotonic() + 30
        while True:  # ready when it answers the stock configuration's public sysDescr
            r = run(["snmpget", "-v2c", "-c", "public", "-r0", "-t1", "-On", f"127.0.0.1:{port}", ".1.3.6.1.2.1.1.1.0"],
                    check=False, env=client_env(tmp))
            if r.returncode == 0 or proc.poll() is not None or time.monotonic() > deadline:
                break
        assert r.returncode == 0, (tmp / "snmpd.log").read_text(errors="replace")
        yield Snmpd(port, proc, tmp)
    finally:
        stop()


def client_env(tmp: Path) -> dict[str, str]:
    """net-snmp's tools as a user runs them, their persistent files kept out of /var/lib/snmp and ~."""
    d = tmp / "client"
    (d / "cert_indexes").mkdir(parents=True, exist_ok=True)  # as /var/lib/snmp has it: no "Created directory"
    return {**CLEAN_ENV, "HOME": str(d), "SNMP_PERSISTENT_DIR": str(d)}


def _children(pid: int) -> list[int]:
    out = run(["ps", "-o", "pid=", "--ppid", str(pid)], check=False).stdout
    return [int(x) for x in out.split()]


def test_the_readmes_check_works_as_written_with_the_packages(snmpd: Snmpd):
    """Issue 21: on a stock Debian 12 with the packages, the README's walk on the server itself, as written
    (COMMUNITY the drop-in's, localhost snmpd's port here): no flag for the stand-ins, nothing on stderr."""
    readme = (PROJECT / "README.md").read_text()
    (check,) = [ln for ln in readme.splitlines() if ln.startswith("snmpwalk ") and " localhost " in ln]
    words = [COMMUNITY if w == "COMMUNITY" else f"localhost:{snmpd.port}" if w == "localhost" else w
             for w in check.split()]
    assert "SNMPLB-MIB" in words and "-M" not in words
    assert "mibdirs -/usr/share/snmplb/mibs/stand-ins" in Path("/usr/share/snmp/snmp.conf").read_text()
    r = run(words, env=client_env(snmpd.tmp))
    assert r.stderr == "", r.stderr[-2000:]
    assert "SNMPLB-MIB::lbAdminState.0 = INTEGER: enabled(1)" in r.stdout, r.stdout


def test_snmpd_serves_the_row_by_name_from_the_agent_running_as_debian_snmp(snmpd: Snmpd):
    r = run(["snmpwalk", "-v2c", "-c", COMMUNITY, "-r1", "-t5", *MIB_ARGS, snmpd.address, "SNMPLB-MIB::lbRow"],
            env=client_env(snmpd.tmp))
    assert re.match(r'SNMPLB-MIB::lbRow\.0 = STRING: "?\d+( \d+)+"?$', r.stdout.strip()), r.stdout
    r = run(["snmpwalk", "-v2c", "-c", COMMUNITY, "-r1", "-t5", *MIB_ARGS, snmpd.address, "SNMPLB-MIB::snmplbObjects"],
            env=client_env(snmpd.tmp))
    assert "SNMPLB-MIB::lbAdminState.0 = INTEGER: enabled(1)" in r.stdout
    assert re.search(r"SNMPLB-MIB::lbAgentVersion\.0 = STRING: .*snmplb", r.stdout), r.stdout
    agents = [pid for pid in _children(snmpd.proc.pid)
              if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/usr/bin/python3",
                                                                              b"/usr/bin/snmplb-agent"]]
    assert len(agents) == 1, _children(snmpd.proc.pid)
    uid = int(re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{agents[0]}/status").read_text(), re.M).group(1))
    assert uid == pwd.getpwnam("Debian-snmp").pw_uid


def test_installed_agent_check_answers_haproxy_and_its_units_are_not_enabled(snmpd: Snmpd):
    unit = Path("/lib/systemd/system/snmplb-agent-check.service").read_text()
    assert re.search(r"^ExecStart=/usr/bin/snmplb-agent-check ", unit, re.M), unit
    assert not list(Path("/etc/systemd/system").glob("*/snmplb-agent-check.*"))  # installed, not enabled
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    responder = subprocess.Popen(["/usr/bin/snmplb-agent-check", "--listen", f"127.0.0.1:{port}"], env=CLEAN_ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        reply = ""
        while not reply.startswith("ready up") and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    reply = c.makefile().readline()
            except OSError:
                time.sleep(0.2)
        # The agent's configuration (agent.conf: sshd's port, no login paths) and the admin file: up.
        assert re.match(r"ready up \d+%", reply), reply
    finally:
        responder.terminate()
        responder.wait(timeout=10)


def _poll_env(snmpd: Snmpd, silent_port: int) -> dict[str, str]:
    """LB_* settings listing a silent server first and the real one second: only a get_hosts that really
    polled prints the real one alone (its fallback prints both, in this order). The thresholds are wide:
    this machine's own load must not make the server ineligible."""
    env = {**CLEAN_ENV, "LB_SERVERS": f"127.0.0.2:{silent_port} {snmpd.address}", "LB_SNMP_COMMUNITY": COMMUNITY,
           "LB_TIMEOUT_MS": "5000", "LB_MAX_LOAD": "1000", "LB_MAX_RESPONSE_MS": "5000", "LB_SKIP_SWAPPING": "no"}
    if Path("/opt/snmplb/bin/python3").exists():  # a venv install here: make the scripts use the package
        env["SNMPLB_PYTHON"] = "/usr/bin/python3"
    return env


def test_installed_get_hosts_polls_the_server_from_both_ldm_paths(snmpd: Snmpd):
    r = run(["/usr/bin/python3", "-I", "-c", "import snmplb.client.gethosts as g; print(g.__file__)"])
    assert r.stdout.startswith(str(DIST)), r.stdout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.2", 0))
        for path in ("/usr/share/ltsp/get_hosts", "/usr/lib/ltsp/get_hosts"):
            r = run([path], env=_poll_env(snmpd, silent.getsockname()[1]), timeout=60)
            assert r.stdout == "127.0.0.1\n", (r.stdout, r.stderr)


def _desktop_entry(path: Path) -> dict[str, str]:
    """The [Desktop Entry] group's keys of a .desktop file."""
    lines = path.read_text().splitlines()
    assert lines[0] == "[Desktop Entry]", path
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line and not line.startswith("#"))


def _session_env(tmp: Path, **more: str) -> dict[str, str]:
    """What a display manager gives the session of user `tester` (no X display: each message is logged
    only), no SNMPLB_PICK, and no site files: the LB_* settings come from the environment."""
    (tmp / "home").mkdir(exist_ok=True)
    return {**CLEAN_ENV, "HOME": str(tmp / "home"), "USER": "tester", "SNMPLB_SESSION_CONF": "/nonexistent/session.conf",
            "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", **more}


def test_installed_sessions_find_the_installed_snmplb_and_poll_the_server(snmpd: Snmpd, tmp_path: Path):
    """The current-LTSP sessions as the package installs them: the scripts in /usr/libexec/snmplb, the
    .desktop files in /usr/share/xsessions naming them; run as the display manager and `ltsp init` run them,
    without SNMPLB_PICK and with PATH=/usr/sbin:/usr/bin:/sbin:/bin, they find /usr/bin/snmplb (the
    package's) and poll the real snmpd. There is no X display here: xfreerdp (the real one) exits at once,
    after the wrapper logged which server it was started on."""
    for f in map(Path, SESSION_FILES):
        assert f.is_file(), f
    for script in LIBEXEC.iterdir():
        assert script.stat().st_mode & 0o777 == 0o755, script
        if script.name != "snmplb-pam-stash":  # the PAM helper runs no snmplb: it hands a password on
            assert "/opt/snmplb/bin/snmplb" in script.read_text()  # the venv is still the fallback
    assert {p.name for p in LIBEXEC.iterdir()} == {"snmplb-session", "snmplb-ssh-server", "snmplb-pam-stash",
                                                   "snmplb-pam-ssh-server"}
    assert not Path("/usr/bin/snmplb").is_symlink() and os.access("/usr/bin/snmplb", os.X_OK)
    commands = {}
    for mode in ("rdp", "x2go"):
        desktop = XSESSIONS / f"zz-snmplb-{mode}.desktop"
        entry = _desktop_entry(desktop)
        try_exec = f"{LIBEXEC}/snmplb-session" if mode == "rdp" else "pyhoca-cli"  # X2Go: offered with its client
        assert entry["Exec"] == f"{LIBEXEC}/snmplb-session {mode}" and entry["TryExec"] == try_exec
        program = Path(entry["Exec"].split()[0])
        assert program.is_file() and os.access(program, os.X_OK), program
        commands[mode] = entry["Exec"].split()
        if shutil.which("desktop-file-validate", path=CLEAN_ENV["PATH"]):
            r = run(["desktop-file-validate", str(desktop)], check=False)
            assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), desktop
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.2", 0))
        # pick exits 3 when nothing is usable (it has no fallback list): the real server alone is enough.
        lb = {k: v for k, v in _poll_env(snmpd, silent.getsockname()[1]).items() if k.startswith("LB_")}
        lb["LB_SERVERS"] = snmpd.address
        silent_only = {**lb, "LB_SERVERS": f"127.0.0.2:{silent.getsockname()[1]}", "LB_TIMEOUT_MS": "800"}
        # pamltsp's SSH_SERVER at boot, as root: the server the installed snmplb picked.
        conf = tmp_path / "ltsp" / "pamltsp.conf"
        r = run([f"{LIBEXEC}/snmplb-ssh-server"], timeout=60,
                env={**CLEAN_ENV, **lb, "SNMPLB_PAMLTSP_CONF": str(conf), "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf"})
        assert "SSH_SERVER=127.0.0.1 (until the next boot)" in r.stderr, r.stderr
        assert conf.read_text() == (f"# Generated by snmplb-ssh-server (POST_INIT), see {LIBEXEC}/snmplb-ssh-server\n"
                                    "SSH_SERVER='127.0.0.1'\n")
        # SSH_SERVER per login: the installed hook, run by hand as pam_snmplb runs it (PATH and PAM_*), finds
        # /usr/bin/snmplb; the installed module exports PAM's entry points.
        r = run([f"{LIBEXEC}/snmplb-pam-ssh-server"], check=False, timeout=60,
                env={**CLEAN_ENV, **lb, "PAM_USER": "root", "PAM_TYPE": "auth",  # a user NSS knows
                     "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf"})
        assert (r.returncode, r.stdout) == (0, "127.0.0.1\n"), r.stderr
        module = ctypes.CDLL(next(Path("/usr/lib").glob("*/security/pam_snmplb.so")))
        assert all(hasattr(module, f"pam_sm_{f}") for f in ("authenticate", "setcred", "open_session", "close_session"))
        # The RDP session, started by its .desktop's Exec line: the real xfreerdp on the server pick chose.
        if shutil.which("xfreerdp", path=CLEAN_ENV["PATH"]):
            r = run(commands["rdp"], env=_session_env(tmp_path, **lb, SNMPLB_RDP_CLIENT="xfreerdp"), check=False,
                    timeout=60)
            assert "snmplb-session: tester: xfreerdp on 127.0.0.1 (port 3389)" in r.stderr, r.stderr
        # Nothing usable: pick's own status 3 comes back, with the user's message (here on stderr only).
        # The wrapper checks that its client program exists before it polls: `true` is one every machine
        # has, and it is never started (pick answers 3 first).
        r = run(commands["rdp"], env=_session_env(tmp_path, **silent_only, SNMPLB_RDP_CLIENT="true"), check=False,
                timeout=60)
        assert r.returncode == 3, (r.returncode, r.stderr)
        assert "No application server can take a new session right now" in r.stderr
    assert COMMUNITY not in r.stdout + r.stderr


def test_installed_check_snmplb_reads_the_server(snmpd: Snmpd):
    env = {**CLEAN_ENV, "SNMPLB_COMMUNITY": COMMUNITY}
    if Path("/opt/snmplb/bin/python3").exists():
        env["SNMPLB_PYTHON"] = "/usr/bin/python3"
    # Thresholds this machine's own load, memory and swap cannot reach: the verdict is the server's state.
    wide = ["--load-warning", "1000", "--load-critical", "1000", "--mem-warning", "0:", "--mem-critical", "0:",
            "--swap-warning", "1000000000", "--swap-critical", "1000000000", "--age-warning", "60",
            "--age-critical", "60"]
    r = run(["/usr/lib/nagios/plugins/check_snmplb", "-H", "127.0.0.1", "-p", str(snmpd.port),
             "--timeout-ms", "5000", *wide], env=env, check=False)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("SNMPLB OK - enabled"), r.stdout
    assert re.search(r"\| .*load_per_cpu=[0-9.]+;1000", r.stdout) and "sessions=0" in r.stdout, r.stdout
    # Drained with the installed snmplb-admin: a reading within seconds says so (the agent re-reads the
    # admin file at every sample, once a second).
    admin = ETC_SNMPLB / "admin.conf"
    before = admin.read_bytes()
    run(["snmplb-admin", "drain"])
    try:
        deadline = time.monotonic() + 15
        while True:
            r = run(["/usr/lib/nagios/plugins/check_snmplb", "-H", "127.0.0.1", "-p", str(snmpd.port),
                     "--timeout-ms", "5000", *wide], env=env, check=False)
            if "admin state draining" in r.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.returncode == 1 and "admin state draining" in r.stdout, r.stdout
    finally:
        admin.write_bytes(before)


@pytest.fixture
def chroot_root(tmp_path: Path) -> Iterator[Path]:
    """A chroot: an overlay of this machine's root (or of SNMPLB_DEBOOTSTRAP_CHROOT), /dev and /proc in it."""
    lower = os.environ.get("SNMPLB_DEBOOTSTRAP_CHROOT", "/")
    base = Path(tempfile.mkdtemp(prefix="snmplb-chroot-"))
    upper, work, root = base / "upper", base / "work", base / "root"
    mounted: list[Path] = []
    try:
        r = run(["mount", "-t", "tmpfs", "tmpfs", str(base)], check=False)  # an upper layer on any root fs
        if r.returncode != 0:
            pytest.skip(f"mount is not permitted here (a container without CAP_SYS_ADMIN?): {r.stderr.strip()}")
        mounted.append(base)
        for d in (upper, work, root):
            d.mkdir()
        run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
             str(root)])
        mounted.append(root)
        run(["mount", "--bind", "/dev", str(root / "dev")])
        mounted.append(root / "dev")
        run(["mount", "-t", "proc", "proc", str(root / "proc")])
        mounted.append(root / "proc")
        yield root
    finally:
        for m in reversed(mounted):
            run(["umount", "-l", str(m)], check=False)
        try:
            base.rmdir()  # never rmtree: a mount left in place would be deleted through
        except OSError:
            pass


def test_install_into_chroot_installs_the_client_package(built: Built, snmpd: Snmpd, chroot_root: Path):
    # The chroot may show this machine's install (an overlay of it): start from a chroot without snmplb.
    run(["chroot", str(chroot_root), "dpkg", "--purge", *PACKAGES], env=APT_ENV)
    debs = [str(built.debs["python3-snmplb"]), str(built.debs["snmplb-client"])]
    r = run([str(PROJECT / "chroot" / "install-into-chroot.sh"), str(chroot_root), *debs], timeout=300,
            env={**APT_ENV, "SNMPLB_APT_OPTIONS": NO_MIRROR})
    assert "snmplb-client installed" in r.stdout
    listed = run(["chroot", str(chroot_root), "dpkg-query", "-W", "-f", "${Package} ${Installed-Size}\n",
                  *PACKAGES], check=False).stdout
    sizes = dict(line.split() for line in listed.splitlines() if len(line.split()) == 2 and line.split()[1])
    assert set(sizes) == {"python3-snmplb", "snmplb-client"}, listed
    files = run(["chroot", str(chroot_root), "dpkg", "-L", "python3-snmplb", "snmplb-client"]).stdout.split()
    on_disk = sum((chroot_root / f.lstrip("/")).lstat().st_size for f in files
                  if (chroot_root / f.lstrip("/")).is_file())
    pyc = sum(p.stat().st_size for p in (chroot_root / str(DIST).lstrip("/") / "snmplb").rglob("*.pyc"))
    print(f"client part in the chroot: Installed-Size {sizes} KiB; files {on_disk // 1024} KiB + byte code "
          f"{pyc // 1024} KiB")
    assert not (chroot_root / str(DIST).lstrip("/") / "snmplb" / "agent").exists()
    assert not (chroot_root / "var/cache/snmplb-install").exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.2", 0))
        env = _poll_env(snmpd, silent.getsockname()[1])
        env.pop("SNMPLB_PYTHON", None)  # without a venv in the chroot, the script finds the package's python3
        if (chroot_root / "opt/snmplb/bin/python3").exists():  # an overlay of a machine with a venv install
            env["SNMPLB_PYTHON"] = "/usr/bin/python3"
        r = run(["chroot", str(chroot_root), "/usr/lib/ltsp/get_hosts"], env=env, timeout=60)
        assert r.stdout == "127.0.0.1\n", (r.stdout, r.stderr)


def test_xsessions_diverted_as_the_readme_says_stay_out_of_the_login_screen(installed: Install, built: Built):
    """README, "Current LTSP": an LTSP server whose own login screen must not offer the sessions diverts
    them to /usr/share/snmplb; a reinstall (an upgrade) then puts them there, not in /usr/share/xsessions."""
    diverted = {XSESSIONS / f"zz-snmplb-{mode}.desktop": Path(f"/usr/share/snmplb/zz-snmplb-{mode}.desktop")
                for mode in ("rdp", "x2go")}
    added: list[Path] = []
    try:
        for path, to in diverted.items():
            run(["dpkg-divert", "--local", "--rename", "--divert", str(to), "--add", str(path)])
            added.append(path)
        run(["apt-get", "install", "-y", "-q", "--reinstall", str(built.debs["snmplb-client"])], env=APT_ENV,
            timeout=300)
        for path, to in diverted.items():
            assert not path.exists(), path
            assert _desktop_entry(to)["Exec"].startswith(f"{LIBEXEC}/snmplb-session "), to
    finally:
        for path in added:
            run(["dpkg-divert", "--local", "--rename", "--remove", str(path)])
    assert all(path.is_file() and not to.exists() for path, to in diverted.items())
    assert "snmplb" not in run(["dpkg-divert", "--list"]).stdout


def test_zz_purge_leaves_the_machine_as_it_was(installed: Install):
    installed.purge()  # snmpd stopped and the test's agent.conf gone first
    assert not {p.split(":")[0] for p in installed_packages()} & set(PACKAGES)
    assert snapshot(ETC_SNMPLB) == installed.etc_before
    assert not Path("/var/lib/snmplb-agent").exists()
    assert snmpd_groups() == installed.groups_before
    assert not Path("/etc/snmp/snmpd.conf.d/snmplb.conf").exists()
    assert not (DIST / "snmplb").exists()
    assert not Path("/usr/share/ltsp/get_hosts").exists() and not Path("/usr/lib/ltsp/get_hosts").exists()
    assert not [f for f in SESSION_FILES if Path(f).exists()] and not LIBEXEC.exists()
