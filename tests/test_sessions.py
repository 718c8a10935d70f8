"""Current LTSP (19+, no LDM): the xsession wrapper and the boot-time SSH_SERVER, run against real agents.

sessions/snmplb-session runs as the logged-in user under the display manager; here it runs under a real
X server (Xvfb) with the real clients: xfreerdp (freerdp2-x11) and pyhoca-cli (X2Go). There is no RDP or
X2Go server here, and nothing listens on 127.0.0.x port 3389: each client is observed trying to connect
to the server `snmplb pick` chose, from its own log ("connecting to peer HOST", "connecting to
[HOST]:22"), then failing to connect. That is as far as a session can go without a server.
The user's message is a real xmessage window on the Xvfb display, found by its title with xdotool.

sessions/snmplb-ssh-server runs at boot under `ltsp init` (PID 1, before systemd), which cannot run
here; it is run as the same root process would, against a pamltsp.conf in a temporary directory, and
the result is read back by sh exactly as pamltsp reads it (`. /etc/ltsp/pamltsp.conf`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, COMMUNITY, wait_for
from snmplb.adminfile import AdminSettings
from snmplb.lab.fleet import FakeLoad
from support import IDLE, addrs

pytestmark = pytest.mark.fleet  # real processes throughout (conftest.py: markers)

ROOT = Path(__file__).resolve().parent.parent
SESSION = ROOT / "sessions" / "snmplb-session"
SSH_SERVER = ROOT / "sessions" / "snmplb-ssh-server"
BUSY = FakeLoad(load1=12.0, cpus=4)
TITLE = "Application server"


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (scripts/setup.sh installs it)")


@pytest.fixture
def display() -> Iterator[str]:
    """A real X server (Xvfb); -displayfd lets it choose a free display number (no race with other tests)."""
    need("Xvfb", "xdotool", "xmessage")
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x600x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()  # written once the server accepts connections
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def session_env(tmp_path: Path, display: str, conf: str, **extra: str) -> dict[str, str]:
    """The environment a display manager gives a session, and the site's session.conf."""
    (tmp_path / "home").mkdir(exist_ok=True)
    path = tmp_path / "session.conf"
    path.write_text(conf)
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "USER": "tester", "DISPLAY": display,
            "SNMPLB_SESSION_CONF": str(path), "SNMPLB_PICK": f"{BIN / 'snmplb'} pick",
            # We run as root: keep the machine's own /etc/snmplb/client.conf out of it.
            "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf", "SNMPLB_MESSAGE_TIMEOUT": "3", **extra}


def site_conf(servers: str, **more: str) -> str:
    lines = [f'LB_SERVERS="{servers}"', f"LB_SNMP_COMMUNITY='{COMMUNITY}'", "LB_TIMEOUT_MS=800",
             "LB_ALGORITHM=best"] + [f"{k}='{v}'" for k, v in more.items()]
    return "\n".join(lines) + "\n"


def run_session(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SESSION), mode], env=env, capture_output=True, text=True, timeout=120)


def recording(tmp_path: Path, program: str) -> Path:
    """A stand-in first on PATH that records that it was started, then execs the real program: used only
    where the test must prove the program was NOT started (a real program leaves no trace of not running)."""
    d = tmp_path / "recbin"
    d.mkdir(exist_ok=True)
    record = tmp_path / f"{program}.started"
    real = shutil.which(program) or f"/usr/bin/{program}"
    (d / program).write_text(f'#!/bin/sh\necho "$@" >> {record}\nexec {real} "$@"\n')
    (d / program).chmod(0o755)
    return record


def test_desktop_files_are_valid_xsessions():
    need("desktop-file-validate")
    files = sorted((ROOT / "sessions" / "xsessions").glob("*.desktop"))
    assert [f.name for f in files] == ["snmplb-rdp.desktop", "snmplb-x2go.desktop"]
    for f in files:
        r = subprocess.run(["desktop-file-validate", str(f)], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), f
        mode = f.stem.removeprefix("snmplb-")
        # The repository's copies are the venv route's (README: installed in /opt/snmplb/sessions); the
        # package rewrites them to /usr/libexec/snmplb (debian/rules; tests/test_debian.py runs those).
        assert f"\nExec=/opt/snmplb/sessions/snmplb-session {mode}\n" in f.read_text()
        assert f"\nTryExec=/opt/snmplb/sessions/snmplb-session\n" in f.read_text()
    assert subprocess.run(["sh", "-n", str(SESSION)], timeout=60).returncode == 0
    assert subprocess.run(["sh", "-n", str(SSH_SERVER)], timeout=60).returncode == 0


def test_rdp_session_starts_real_xfreerdp_on_the_server_pick_chose(fleet, display, tmp_path):
    """Real xfreerdp under Xvfb. No RDP server can run here, so it fails to connect (its status 147,
    "transport failed") and the wrapper tells the user so; its DEBUG log shows whom it tried."""
    need("xfreerdp")
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    drained = fleet.add("drained", IDLE, admin=AdminSettings(state="draining"))
    servers = addrs([drained, busy, idle])
    chosen = subprocess.run([str(BIN / "snmplb"), "pick"], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "LB_SERVERS": servers, "LB_ALGORITHM": "best",
                                 "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "800",
                                 "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf"}).stdout.strip()
    assert chosen == idle.host
    env = session_env(tmp_path, display, site_conf(servers, SNMPLB_RDP_OPTIONS="/cert:tofu /log-level:DEBUG"),
                      SNMPLB_RDP_CLIENT="xfreerdp")
    r = run_session("rdp", env)
    out = r.stdout + r.stderr
    assert f"tester: xfreerdp on {idle.host} (port 3389)" in r.stderr
    assert f"connecting to peer {idle.host}\n" in out, out[-3000:]
    assert busy.host not in out.replace(servers, "") and drained.host not in out.replace(servers, "")
    assert r.returncode >= 128, out[-2000:]
    assert f"The remote desktop on {idle.host} could not be opened (xfreerdp exit status {r.returncode})" in r.stderr
    assert COMMUNITY not in out


def test_rdp_port_and_user_reach_the_chosen_server(fleet, display, tmp_path):
    """/port:N when it is not 3389, /u: the user unless SNMPLB_RDP_USER says otherwise, seen on the wire:
    a plain TCP listener on the chosen address and port reads xfreerdp's first RDP packet (X.224
    Connection Request, "Cookie: mstshash=USER"). It is no RDP server, so xfreerdp then waits on
    a closed connection; the test ends the session (its process group) once the packet is in."""
    need("xfreerdp")
    a = fleet.add("a", IDLE)
    listener = socket.create_server((a.host, 3390))
    listener.settimeout(60)
    first: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                first.append(conn.recv(4096))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    env = session_env(tmp_path, display, site_conf(a.address, SNMPLB_RDP_PORT="3390", SNMPLB_RDP_USER="alice",
                                                   SNMPLB_RDP_OPTIONS="/cert:ignore"),
                      SNMPLB_RDP_CLIENT="xfreerdp")
    p = subprocess.Popen([str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        thread.join(timeout=60)
        assert first and b"Cookie: mstshash=alice\r\n" in first[0], first
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        listener.close()
    assert f"tester: xfreerdp on {a.host} (port 3390)" in err
    r = run_session("rdp", {**env, "SNMPLB_SESSION_CONF": "/nonexistent", "LB_SERVERS": a.address,
                            "LB_SNMP_COMMUNITY": COMMUNITY, "SNMPLB_RDP_PORT": "99999"})
    assert r.returncode == 2 and "SNMPLB_RDP_PORT is not a TCP port" in r.stderr


def test_a_port_with_leading_zeros_is_the_same_number(tmp_path):
    """SNMPLB_RDP_PORT=003389 is port 3389 and SNMPLB_X2GO_SSH_PORT=0022 port 22, as the admin meant; the
    range is still 1-65535. Stand-ins for pick and the client (this is about the script's parsing): the
    client records the arguments it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args = tmp_path / "args"
    for name in ("fakerdp", "fakex2go"):
        (bin_dir / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\n')
    (bin_dir / "fakepick").write_text("#!/bin/sh\necho 127.0.0.1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "USER": "tester", "SNMPLB_SESSION_CONF": "/nonexistent",
           "SNMPLB_PICK": str(bin_dir / "fakepick"), "SNMPLB_RDP_CLIENT": "fakerdp", "SNMPLB_X2GO_CLIENT": "fakex2go"}
    for given, port in (("003389", 3389), ("03390", 3390), ("0001", 1), ("00000000000065535", 65535)):
        args.unlink(missing_ok=True)
        r = run_session("rdp", {**env, "SNMPLB_RDP_PORT": given})
        assert r.returncode == 0 and f"tester: fakerdp on 127.0.0.1 (port {port})" in r.stderr, (given, r.stderr)
        got = args.read_text().splitlines()
        assert [a for a in got if a.startswith("/port:")] == ([] if port == 3389 else [f"/port:{port}"]), got
    r = run_session("x2go", {**env, "SNMPLB_X2GO_SSH_PORT": "0022"})
    assert r.returncode == 0 and "(port 22)" in r.stderr, r.stderr
    got = args.read_text().splitlines()
    assert got[got.index("-p") + 1] == "22", got
    for bad in ("0", "000", "065536", "99999", "12a", "-1", "3389 "):
        r = run_session("rdp", {**env, "SNMPLB_RDP_PORT": bad})
        assert r.returncode == 2 and "SNMPLB_RDP_PORT is not a TCP port (1-65535)" in r.stderr, (bad, r.stderr)


def test_x2go_session_starts_real_pyhoca_cli_on_the_server_pick_chose(fleet, display, tmp_path):
    """Real pyhoca-cli (Debian's X2Go command-line client). No X2Go server (an sshd with x2goserver) runs
    here; it logs whom it connects to, fails, and exits 0 all the same (pyhoca-cli's own behaviour: the
    wrapper cannot tell a failed connection from a finished session, so it only logs the status)."""
    need("pyhoca-cli")
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    env = session_env(tmp_path, display, site_conf(addrs([busy, idle]), SNMPLB_X2GO_SSH_PORT="22",
                                                   SNMPLB_X2GO_COMMAND="MATE"))
    r = run_session("x2go", env)
    out = r.stdout + r.stderr
    assert f"tester: pyhoca-cli on {idle.host} (port 22)" in r.stderr
    assert f"connecting to [{idle.host}]:22" in out, out[-3000:]
    assert f"[{busy.host}]" not in out
    assert COMMUNITY not in out


def _window_titled(display: str, title: str, seconds: float) -> bool:
    def found() -> bool:
        r = subprocess.run(["xdotool", "search", "--name", title], capture_output=True, text=True, timeout=30,
                           env={"PATH": os.environ["PATH"], "DISPLAY": display})
        return r.returncode == 0 and bool(r.stdout.strip())
    return bool(wait_for(found, timeout=seconds, step=0.2))


def _run_until_message(display: str, env: dict[str, str], mode: str) -> tuple[int, str]:
    """Run the session wrapper; it must show the user a message window (closed when it ends).
    Returns its exit status and stderr."""
    p = subprocess.Popen([str(SESSION), mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _window_titled(display, TITLE, 20), "no message window"
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    return p.returncode, err


def test_no_usable_server_shows_a_message_and_never_starts_the_client(fleet, display, tmp_path):
    """Every server draining or disabled: pick says 3, the user sees a real xmessage window (closed by its
    timeout here, by the user's OK on a thin client) and the client program is never started. Proving it
    never ran needs a recording stand-in first on PATH (it would exec the real xfreerdp)."""
    need("xfreerdp")
    d = fleet.add("d", IDLE, admin=AdminSettings(state="draining"))
    off = fleet.add("off", IDLE, admin=AdminSettings(state="disabled"))
    record = recording(tmp_path, "xfreerdp")
    env = session_env(tmp_path, display, site_conf(addrs([d, off])), SNMPLB_RDP_CLIENT="xfreerdp",
                      PATH=f"{tmp_path / 'recbin'}:{os.environ['PATH']}")
    code, err = _run_until_message(display, env, "rdp")
    assert code == 3
    assert "No application server can take a new session right now" in err
    assert not record.exists()


def test_missing_client_program_shows_a_message(fleet, display, tmp_path):
    """A PATH with the tools the script needs and no xfreerdp, xfreerdp3 or pyhoca-cli."""
    a = fleet.add("a", IDLE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sed", "tr", "id", "logger", "xmessage"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for mode, names in (("rdp", "xfreerdp3 xfreerdp"), ("x2go", "pyhoca-cli")):
        env = session_env(tmp_path, display, site_conf(a.address), PATH=str(bin_dir))
        code, err = _run_until_message(display, env, mode)
        assert code == 127, err
        assert f"The remote desktop program ({names}) is not installed on this computer" in err
        time.sleep(0.1)
    r = subprocess.run([str(SESSION), "vnc"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


def _no_installed_snmplb() -> None:
    """The default pick command's fallbacks after PATH: the package's and the venv's."""
    for path in ("/usr/bin/snmplb", "/opt/snmplb/bin/snmplb"):
        if Path(path).exists():
            pytest.skip(f"{path} exists on this machine: the scripts would find it")


def _tools(tmp_path: Path, *tools: str) -> Path:
    """A PATH directory with only these real programs (symbolic links to them)."""
    d = tmp_path / "tools"
    d.mkdir(exist_ok=True)
    for tool in tools:
        if not (d / tool).exists():
            (d / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    return d


def test_without_snmplb_pick_the_scripts_run_snmplb_from_path(fleet, display, tmp_path):
    """No SNMPLB_PICK: `snmplb` from PATH (the package's /usr/bin, or wherever the site put it), then
    /usr/bin/snmplb, then the venv's /opt/snmplb/bin/snmplb. Here neither of those exists, so a session
    that reaches the chosen server used the venv's snmplb found on PATH. Without any, the user is told
    and the session ends (127); snmplb-ssh-server leaves pamltsp.conf alone and exits 0."""
    need("xfreerdp")
    _no_installed_snmplb()
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    on_path = _tools(tmp_path, "sh", "sed", "tr", "id", "logger", "xmessage", "xfreerdp", "grep", "dirname",
                     "mkdir", "chmod", "mv", "rm")
    (on_path / "snmplb").symlink_to(BIN / "snmplb")
    env = session_env(tmp_path, display, site_conf(addrs([busy, idle]), SNMPLB_RDP_OPTIONS="/cert:tofu /log-level:DEBUG"),
                      SNMPLB_RDP_CLIENT="xfreerdp", PATH=str(on_path))
    del env["SNMPLB_PICK"]
    r = run_session("rdp", env)
    assert f"tester: xfreerdp on {idle.host} (port 3389)" in r.stderr, r.stderr
    assert f"connecting to peer {idle.host}\n" in r.stdout + r.stderr
    conf = tmp_path / "pamltsp.conf"
    conf.write_text("SSH_SERVER='server'\n")
    boot = {"PATH": str(on_path), "SNMPLB_PAMLTSP_CONF": str(conf), "LB_SERVERS": addrs([busy, idle]),
            "LB_SNMP_COMMUNITY": COMMUNITY, "LB_ALGORITHM": "best", "LB_TIMEOUT_MS": "800",
            "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf"}
    r = subprocess.run([str(SSH_SERVER)], env=boot, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and pamltsp_reads(conf)["SSH_SERVER"] == idle.host, r.stderr

    (on_path / "snmplb").unlink()
    code, err = _run_until_message(display, env, "rdp")
    assert code == 127, err
    assert "The snmplb command is not installed on this computer" in err
    r = subprocess.run([str(SSH_SERVER)], env=boot, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "snmplb is not installed" in r.stderr and "SSH_SERVER not changed" in r.stderr
    assert conf.read_text() == f"SSH_SERVER='{idle.host}'\n"


# -- boot: SSH_SERVER for pamltsp ------------------------------------------------------------------------

def ssh_server(tmp_path: Path, conf: Path, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "SNMPLB_PICK": f"{BIN / 'snmplb'} pick", "SNMPLB_PAMLTSP_CONF": str(conf),
            **env}
    return subprocess.run([str(SSH_SERVER)], env=full, capture_output=True, text=True, timeout=60)


def pamltsp_reads(conf: Path) -> dict[str, str]:
    """The variables as pamltsp gets them: it sources the file with sh."""
    script = '. "$1"; printf "%s\\n%s\\n%s\\n" "$PAM_AUTH_TYPE" "${SSH_SERVER:-server}" "$SSH_OPTIONS"'
    out = subprocess.run(["sh", "-c", script, "sh", str(conf)], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"]}).stdout.split("\n")
    return {"PAM_AUTH_TYPE": out[0], "SSH_SERVER": out[1], "SSH_OPTIONS": out[2]}


def test_ssh_server_is_written_from_a_root_only_client_conf(fleet, tmp_path):
    """As `ltsp init` runs it (root): settings from a root-only client.conf, pamltsp.conf's other lines
    kept; a file LTSP did not write (no PAM_AUTH_TYPE/SSH_SERVER/SSH_OPTIONS in ltsp.conf) is created."""
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    client_conf = tmp_path / "client.conf"
    client_conf.write_text(f"LB_SERVERS = {addrs([busy, idle])}\nLB_SNMP_COMMUNITY = {COMMUNITY}\n"
                           "LB_ALGORITHM = best\nLB_TIMEOUT_MS = 800\n")
    client_conf.chmod(0o600)
    conf = tmp_path / "ltsp" / "pamltsp.conf"
    conf.parent.mkdir()
    conf.write_text("# Generated by `ltsp init`, see man:ltsp(8)\nPAM_AUTH_TYPE='Primary'\n"
                    "SSH_SERVER='server'\nSSH_OPTIONS='-o HostKeyAlias=farm'\n")
    r = ssh_server(tmp_path, conf, SNMPLB_CLIENT_CONF=str(client_conf))
    assert r.returncode == 0, r.stderr
    assert f"SSH_SERVER={idle.host} (until the next boot)" in r.stderr
    assert pamltsp_reads(conf) == {"PAM_AUTH_TYPE": "Primary", "SSH_SERVER": idle.host,
                                   "SSH_OPTIONS": "-o HostKeyAlias=farm"}
    assert conf.read_text().count("SSH_SERVER=") == 1 and oct(conf.stat().st_mode & 0o777) == "0o644"
    assert COMMUNITY not in r.stderr + r.stdout
    conf.unlink()
    r = ssh_server(tmp_path, conf, SNMPLB_CLIENT_CONF=str(client_conf))
    assert r.returncode == 0 and pamltsp_reads(conf)["SSH_SERVER"] == idle.host
    assert [p.name for p in conf.parent.iterdir()] == ["pamltsp.conf"]  # no temporary file left


def test_ssh_server_keeps_the_file_and_exits_0_when_nothing_is_usable(fleet, tmp_path):
    """Exit 0 always: `ltsp init` runs POST_INIT commands under `re`, and a failing one halts the boot."""
    d = fleet.add("d", IDLE, admin=AdminSettings(state="draining"))
    conf = tmp_path / "pamltsp.conf"
    before = "PAM_AUTH_TYPE=''\nSSH_SERVER='server'\nSSH_OPTIONS=''\n"
    conf.write_text(before)
    env = dict(LB_SERVERS=d.address, LB_SNMP_COMMUNITY=COMMUNITY, LB_TIMEOUT_MS="800",
               SNMPLB_CLIENT_CONF="/nonexistent/client.conf")
    r = ssh_server(tmp_path, conf, **env)
    assert r.returncode == 0 and "snmplb pick exit status 3: SSH_SERVER not changed" in r.stderr
    r = ssh_server(tmp_path, conf, **env, SNMPLB_PICK="/nonexistent/snmplb pick")
    assert r.returncode == 0 and "SSH_SERVER not changed" in r.stderr
    r = ssh_server(tmp_path, conf, **{**env, "LB_SERVERS": ""})
    assert r.returncode == 0 and "LB_SERVERS" in r.stderr
    missing = tmp_path / "none" / "pamltsp.conf"
    assert ssh_server(tmp_path, missing, **env).returncode == 0 and not missing.exists()
    assert conf.read_text() == before


def test_as_an_unprivileged_user_the_settings_come_from_session_conf(fleet, display):
    """The session runs as the user: root's client.conf (0600) cannot be read (pick goes on without it),
    so the site gives the users their SNMP settings in session.conf (0644). Run as `nobody` (setpriv).
    The tests' venv interpreter lives under this machine's /root (mode 0700), out of nobody's reach, so
    nobody's pick is the same package (the worktree and the venv's site-packages) run by Debian's own
    python3 of the same version."""
    need("xfreerdp", "setpriv")
    system_python = Path("/usr/bin/python3")
    probe = subprocess.run([str(system_python), "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=60) if system_python.exists() else None
    if probe is None or probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip("no /usr/bin/python3 of the tests' Python version to run pick as another user")
    a = fleet.add("a", IDLE)
    base = Path(tempfile.mkdtemp(prefix="snmplb-session-"))
    try:
        base.chmod(0o755)
        site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and str(p).startswith(sys.prefix))
        pick_cmd = base / "pick"
        pick_cmd.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT}:{site} exec {system_python} -c '
                            f'"import sys; from snmplb.login.command import main; sys.exit(main())" pick "$@"\n')
        pick_cmd.chmod(0o755)
        root_only = base / "client.conf"
        root_only.write_text("LB_SERVERS = 127.0.0.99\nLB_SNMP_COMMUNITY = root-only-secret\n")
        root_only.chmod(0o600)
        home = base / "home"
        home.mkdir()
        shutil.chown(home, "nobody")
        conf = base / "session.conf"
        conf.write_text(site_conf(a.address, SNMPLB_RDP_OPTIONS="/log-level:DEBUG"))
        conf.chmod(0o644)
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "USER": "nobody", "DISPLAY": display,
               "SNMPLB_SESSION_CONF": str(conf), "SNMPLB_PICK": str(pick_cmd), "SNMPLB_CLIENT_CONF": str(root_only),
               "SNMPLB_MESSAGE_TIMEOUT": "1", "SNMPLB_RDP_CLIENT": "xfreerdp"}
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(SESSION), "rdp"],
                           env=env, capture_output=True, text=True, timeout=120, cwd=base)
        out = r.stdout + r.stderr
        assert f"{root_only}: Permission denied; not used" in r.stderr  # named on purpose, so pick says so
        assert f"nobody: xfreerdp on {a.host} (port 3389)" in r.stderr, r.stderr
        assert f"connecting to peer {a.host}\n" in out
        assert "root-only-secret" not in out
    finally:
        shutil.rmtree(base)
