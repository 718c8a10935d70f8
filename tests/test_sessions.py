"""Current LTSP (19+, no LDM): the xsession wrapper and the boot-time SSH_SERVER, run against real agents.

sessions/snmplb-session runs as the logged-in user under the display manager; here it runs under a real
X server (Xvfb) with the real clients: xfreerdp (freerdp2-x11) and pyhoca-cli (X2Go). Nothing listens on
127.0.0.x port 3389: each client is observed trying to connect to the servers `snmplb pick --all` gives,
in order, from its own log ("connecting to peer HOST", "connecting to [HOST]:22"), then failing to
connect. Failing over (issue 19) is run against real servers where they can run here: Debian's xrdp (in
a mount namespace of the test's, on loopback) for a refused password, real sshd for X2Go's ssh leg,
closed ports, network namespaces for no route and a dropped SYN, and stand-ins only for a server that
accepts and closes and for one that reads the client's first packets. No desktop session starts (no X
backend for xrdp; X2Go's sessions need nxagent and a desktop).
The user's message is a real xmessage window on the Xvfb display, found by its title with xdotool.

sessions/snmplb-ssh-server runs at boot under `ltsp init` (PID 1, before systemd), which cannot run
here; it is run as the same root process would, against a pamltsp.conf in a temporary directory, and
the result is read back by sh exactly as pamltsp reads it (`. /etc/ltsp/pamltsp.conf`).
"""

from __future__ import annotations

import contextlib
import os
import re
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
    lines = [f'LB_SERVERS="{servers}"', f"LB_SNMP_COMMUNITY='{COMMUNITY}'", "LB_TIMEOUT_MS=3000",
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


def test_the_sessions_sort_after_every_desktop_session_ltsp_may_autologin_into():
    """`ltsp init` gives SDDM's autologin plasma.desktop, else the first of /usr/share/xsessions/*.desktop
    (LTSP's 55-display-manager.sh, configure_sddm): ours must never come first, in any collation."""
    ours = sorted(f.name for f in (ROOT / "sessions" / "xsessions").glob("*.desktop"))
    desktops = ["budgie-desktop.desktop", "cinnamon.desktop", "gnome.desktop", "i3.desktop", "LXDE.desktop",
                "lxqt.desktop", "mate.desktop", "openbox.desktop", "plasma.desktop", "ubuntu.desktop",
                "xfce.desktop", "xubuntu.desktop", "lightdm-xsession.desktop", "sway.desktop", "wmaker-common.desktop"]
    for key in (str, str.lower):
        first = sorted(desktops + ours, key=key)[0]
        assert first not in ours, first
        assert all(key(o) > key(d) for o in ours for d in desktops), key


def test_desktop_files_are_valid_xsessions():
    need("desktop-file-validate")
    files = sorted((ROOT / "sessions" / "xsessions").glob("*.desktop"))
    assert [f.name for f in files] == ["zz-snmplb-rdp.desktop", "zz-snmplb-x2go.desktop"]
    for f in files:
        r = subprocess.run(["desktop-file-validate", str(f)], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), f
        mode = f.stem.removeprefix("zz-snmplb-")
        # The repository's copies are the venv route's (README: installed in /opt/snmplb/sessions); the
        # package rewrites them to /usr/libexec/snmplb (debian/rules; tests/test_debian.py runs those).
        assert f"\nExec=/opt/snmplb/sessions/snmplb-session {mode}\n" in f.read_text()
        # Offered where it can start: the wrapper for RDP (it tells the user when no client is there), the
        # X2Go client itself for X2Go (pyhoca-cli is only suggested by the package).
        try_exec = {"rdp": "/opt/snmplb/sessions/snmplb-session", "x2go": "pyhoca-cli"}[mode]
        assert f"\nTryExec={try_exec}\n" in f.read_text()
        # The label promises what `snmplb pick` does: LB_ALGORITHM's choice (balanced by default spreads
        # the logins, sticky brings a user back), not "the least busy server".
        name = {"rdp": "RDP", "x2go": "X2Go"}[mode]
        assert f"\nName=Remote desktop ({name}, load-balanced)\n" in f.read_text()
        assert "least busy" not in f.read_text()
    assert subprocess.run(["sh", "-n", str(SESSION)], timeout=60).returncode == 0
    assert subprocess.run(["sh", "-n", str(SSH_SERVER)], timeout=60).returncode == 0
    assert subprocess.run(["sh", "-n", str(ROOT / "sessions" / "snmplb-pam-stash")], timeout=60).returncode == 0


def test_rdp_session_starts_real_xfreerdp_on_the_server_pick_chose_then_the_next(fleet, display, tmp_path):
    """Real xfreerdp under Xvfb, real agents. Nothing listens on port 3389 of these addresses, so xfreerdp
    fails to connect (its status 147, "transport failed"): the wrapper goes on to the next server in the
    decision's order (`snmplb pick --all`: the idle one first, then the busy one; never the draining one),
    logs each step, and tells the user once none could open the session. xfreerdp's DEBUG log shows whom
    it tried."""
    need("xfreerdp")
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    drained = fleet.add("drained", IDLE, admin=AdminSettings(state="draining"))
    servers = addrs([drained, busy, idle])
    chosen = subprocess.run([str(BIN / "snmplb"), "pick", "--all"], capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "LB_SERVERS": servers, "LB_ALGORITHM": "best",
                                 "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "800",
                                 "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf"}).stdout.split()
    assert chosen == [idle.host, busy.host]
    env = session_env(tmp_path, display, site_conf(servers, SNMPLB_RDP_OPTIONS="/cert:tofu /log-level:DEBUG"),
                      SNMPLB_RDP_CLIENT="xfreerdp")
    r = run_session("rdp", env)
    out = r.stdout + r.stderr
    assert f"tester: xfreerdp on {idle.host} (port 3389)" in r.stderr
    assert f"connecting to peer {idle.host}\n" in out, out[-3000:]
    assert (f"host {idle.host}: could not connect (xfreerdp exit status 147: transport failed: refused or "
            f"closed), trying {busy.host}") in r.stderr, r.stderr
    assert f"tester: xfreerdp on {busy.host} (port 3389)" in r.stderr
    assert f"connecting to peer {busy.host}\n" in out
    assert out.index(f"peer {idle.host}\n") < out.index(f"peer {busy.host}\n")
    assert f"host {busy.host}: could not connect (xfreerdp exit status 147" in r.stderr
    assert "no other server to try" in r.stderr
    assert drained.host not in out.replace(servers, "")
    assert r.returncode == 147, out[-2000:]
    assert "The remote desktop could not be opened on any server:" in r.stderr
    assert f"- {idle.host}: xfreerdp exit status 147" in r.stderr and f"- {busy.host}: xfreerdp exit status 147" in r.stderr
    assert COMMUNITY not in out


def first_packet(listener: socket.socket, accept_s: float) -> tuple[list[bytes], threading.Thread]:
    """A thread that accepts one connection on ``listener`` (within ``accept_s``) and keeps its first read
    (the client's first packet) in the returned list."""
    listener.settimeout(accept_s)
    first: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                first.append(conn.recv(4096))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return first, thread


def test_rdp_port_and_user_reach_the_chosen_server(fleet, display, tmp_path):
    """/port:N when it is not 3389, /u: the user unless SNMPLB_RDP_USER says otherwise, seen on the wire:
    a plain TCP listener on the chosen address and port reads xfreerdp's first RDP packet (X.224
    Connection Request, "Cookie: mstshash=USER"). It is no RDP server, so xfreerdp then waits on
    a closed connection; the test ends the session (its process group) once the packet is in."""
    need("xfreerdp")
    a = fleet.add("a", IDLE)
    listener = socket.create_server((a.host, 3390))
    first, thread = first_packet(listener, 60)
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


def test_x2go_session_starts_real_pyhoca_cli_on_the_server_pick_chose_then_the_next(fleet, display, tmp_path):
    """Real pyhoca-cli (Debian's X2Go command-line client); nothing listens on port 22 of these addresses. It
    logs whom it connects to, fails, and exits 0 all the same (pyhoca-cli's own behaviour): the wrapper
    reads its error line ("a socket error occured while establishing the connection"), goes on to the next
    server in the decision's order, and ends with status 1 once none could open the session."""
    need("pyhoca-cli")
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    env = session_env(tmp_path, display, site_conf(addrs([busy, idle]), SNMPLB_X2GO_SSH_PORT="22",
                                                   SNMPLB_X2GO_COMMAND="MATE"), TMPDIR=str(tmp_path))
    r = run_session("x2go", env)
    out = r.stdout + r.stderr
    assert f"tester: pyhoca-cli on {idle.host} (port 22)" in r.stderr
    assert f"connecting to [{idle.host}]:22" in out, out[-3000:]
    assert f"host {idle.host}: could not connect (pyhoca-cli: a socket error occured" in r.stderr, r.stderr
    assert f"trying {busy.host}\n" in r.stderr
    assert out.index(f"connecting to [{idle.host}]:22") < out.index(f"connecting to [{busy.host}]:22")
    assert r.returncode == 1 and "The remote desktop could not be opened on any server:" in r.stderr
    assert COMMUNITY not in out
    assert not list(tmp_path.glob("snmplb-session.*"))  # its copy of the client's output is gone


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
                     "mkdir", "chmod", "chown", "readlink", "mv", "rm")
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


def stub_pick(tmp_path: Path, host: str) -> str:
    """An SNMPLB_PICK that answers ``host`` (what `snmplb pick` prints for a server configured so)."""
    path = tmp_path / "pick"
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{host}'\n")
    path.chmod(0o755)
    return str(path)


def test_rdp_to_an_ipv6_server_puts_the_address_in_brackets(display, tmp_path):
    """`snmplb pick` prints an IPv6 literal bare (as LB_SERVERS names it); xfreerdp needs /v:[::1] (today it
    gets /v:::1, reads a port from the colons and never connects). Seen on the wire: a plain TCP listener on
    [::1]:3390 reads xfreerdp's first RDP packet."""
    need("xfreerdp")
    listener = socket.create_server(("::1", 3390), family=socket.AF_INET6)
    first, thread = first_packet(listener, 30)
    env = session_env(tmp_path, display, "SNMPLB_RDP_PORT=3390\nSNMPLB_RDP_OPTIONS=/cert:ignore\n",
                      SNMPLB_RDP_CLIENT="xfreerdp", SNMPLB_PICK=stub_pick(tmp_path, "::1"))
    p = subprocess.Popen([str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 60
        while thread.is_alive() and p.poll() is None and time.monotonic() < end:
            thread.join(timeout=0.2)
        thread.join(timeout=2)
        assert first and b"Cookie: mstshash=tester\r\n" in first[0], first
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        listener.close()
    assert "tester: xfreerdp on ::1 (port 3390)" in err, err


# -- boot: SSH_SERVER for pamltsp ------------------------------------------------------------------------

def ssh_server(tmp_path: Path, conf: Path, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "SNMPLB_PICK": f"{BIN / 'snmplb'} pick", "SNMPLB_PAMLTSP_CONF": str(conf),
            "SNMPLB_LTSP_CONF": str(tmp_path / "no-ltsp.conf"), **env}  # never this machine's ltsp.conf
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


LTSP_CONF = (b"# Generated by `ltsp init`, see man:ltsp(8)\nPAM_AUTH_TYPE='Primary'\n"
             b"SSH_SERVER='server'\nSSH_OPTIONS='-o HostKeyAlias=farm'\n")


@pytest.mark.parametrize("junk", [b"# a NUL \0 here\n", b"# not UTF-8: \xff\xfe\n"], ids=["NUL byte", "invalid UTF-8"])
def test_ssh_server_keeps_every_other_line_of_a_file_grep_calls_binary(tmp_path, junk):
    """grep reads a file with a NUL byte (or, in a UTF-8 locale, invalid UTF-8) as binary and prints none
    of its lines: PAM_AUTH_TYPE and SSH_OPTIONS were lost while success was logged."""
    conf = tmp_path / "pamltsp.conf"
    conf.write_bytes(junk + LTSP_CONF)
    r = ssh_server(tmp_path, conf, SNMPLB_PICK=stub_pick(tmp_path, "127.0.0.9"), LC_ALL="C.UTF-8")
    assert r.returncode == 0 and "SSH_SERVER=127.0.0.9 (until the next boot)" in r.stderr, r.stderr
    assert conf.read_bytes() == (junk + LTSP_CONF).replace(b"SSH_SERVER='server'\n", b"") + b"SSH_SERVER='127.0.0.9'\n"
    assert pamltsp_reads(conf) == {"PAM_AUTH_TYPE": "Primary", "SSH_SERVER": "127.0.0.9",
                                   "SSH_OPTIONS": "-o HostKeyAlias=farm"}


def test_ssh_server_keeps_the_mode_owner_and_link_and_leaves_a_directory_alone(tmp_path):
    """A 0600 file stays 0600 with its owner (it became 0644); a symbolic link stays a link and its target is
    rewritten (the link was replaced by a file); a directory is left as it is (the file was moved into it)."""
    pick = stub_pick(tmp_path, "127.0.0.9")
    conf = tmp_path / "pamltsp.conf"
    conf.write_bytes(LTSP_CONF)
    conf.chmod(0o600)
    os.chown(conf, 65534, 65534)  # nobody: the owner must stay too
    r = ssh_server(tmp_path, conf, SNMPLB_PICK=pick)
    assert r.returncode == 0 and pamltsp_reads(conf)["SSH_SERVER"] == "127.0.0.9", r.stderr
    st = conf.stat()
    assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == ("0o600", 65534, 65534)

    real = tmp_path / "real" / "pamltsp.conf"
    real.parent.mkdir()
    real.write_bytes(LTSP_CONF)
    link = tmp_path / "etc" / "pamltsp.conf"
    link.parent.mkdir()
    link.symlink_to(real)
    r = ssh_server(tmp_path, link, SNMPLB_PICK=pick)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert pamltsp_reads(real)["SSH_SERVER"] == "127.0.0.9" and pamltsp_reads(real)["PAM_AUTH_TYPE"] == "Primary"
    assert sorted(p.name for p in real.parent.iterdir()) == ["pamltsp.conf"]

    directory = tmp_path / "dir.conf"
    directory.mkdir()
    r = ssh_server(tmp_path, directory, SNMPLB_PICK=pick)
    assert r.returncode == 0 and "not a regular file" in r.stderr and "SSH_SERVER not changed" in r.stderr
    assert list(directory.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if ".snmplb." in p.name] == []  # no temporary file left


def readme_post_init_line() -> str:
    """The README's ltsp.conf line for snmplb-ssh-server, naming this checkout's script."""
    readme = (ROOT / "README.md").read_text()
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("POST_INIT_SNMPLB_SSH_SERVER=")]
    return line.replace("/usr/libexec/snmplb/snmplb-ssh-server", str(SSH_SERVER))


def ltsp_init(tmp_path: Path, ltsp_conf_vars: str, post_init: str, **env: str) -> subprocess.CompletedProcess:
    """What `ltsp init` does with ltsp.conf (LTSP 23, ltsp/common/ltsp/55-config.sh): its VAR=value lines
    become assignments in LTSP's own /bin/sh process, exported to no command, and each POST_INIT_x value is
    run with `eval` in that shell (run_parameters). ``post_init`` is the line as ltsp.conf has it."""
    script = f"{ltsp_conf_vars}\n{post_init}\neval \"$POST_INIT_SNMPLB_SSH_SERVER\"\n"
    full = {"PATH": os.environ["PATH"], "SNMPLB_PICK": f"{BIN / 'snmplb'} pick",
            "SNMPLB_PAMLTSP_CONF": str(tmp_path / "pamltsp.conf"), "SNMPLB_CLIENT_CONF": "/nonexistent/client.conf",
            "SNMPLB_LTSP_CONF": str(tmp_path / "ltsp.conf"), **env}
    (tmp_path / "ltsp.conf").write_text(f"[clients]\n{ltsp_conf_vars}\n{post_init}\n")
    return subprocess.run(["dash", "-c", script], env=full, capture_output=True, text=True, timeout=60)


def test_lb_lines_of_ltsp_conf_reach_ssh_server_through_the_readmes_post_init_line(fleet, tmp_path):
    """Issue 21: on LTSP 23, LB_* lines in ltsp.conf never reached snmplb-ssh-server (LTSP keeps ltsp.conf's
    values as unexported shell variables). The README's line (`set | ... --shell-vars`) hands them over."""
    need("dash")
    busy, idle = fleet.add("busy", BUSY), fleet.add("idle", IDLE)
    lb = (f'LB_SERVERS="{addrs([busy, idle])}"\nLB_SNMP_COMMUNITY={COMMUNITY}\nLB_ALGORITHM=best\n'
          'LB_TIMEOUT_MS=800')
    r = ltsp_init(tmp_path, lb, readme_post_init_line())
    assert r.returncode == 0, r.stderr
    assert pamltsp_reads(tmp_path / "pamltsp.conf")["SSH_SERVER"] == idle.host, r.stderr
    assert ("LB_* variables from LTSP's shell (ltsp.conf): LB_ALGORITHM LB_SERVERS LB_SNMP_COMMUNITY "
            "LB_TIMEOUT_MS") in r.stderr, r.stderr
    assert COMMUNITY not in r.stderr + r.stdout  # names only, never a value
    # The line LTSP 5 habits write (the script alone): the variables are lost, and it says so, loudly.
    (tmp_path / "pamltsp.conf").unlink()
    plain = f'POST_INIT_SNMPLB_SSH_SERVER="{SSH_SERVER}"'
    r = ltsp_init(tmp_path, lb, plain)
    assert r.returncode == 0 and not (tmp_path / "pamltsp.conf").exists(), r.stderr
    assert (f"sets LB_ALGORITHM LB_SERVERS LB_SNMP_COMMUNITY LB_TIMEOUT_MS, which LTSP does not pass to "
            "POST_INIT commands: not used") in r.stderr, r.stderr
    assert f'POST_INIT_SNMPLB_SSH_SERVER="set | {SSH_SERVER} --shell-vars"' in r.stderr
    assert "/etc/snmplb/client.conf" in r.stderr and COMMUNITY not in r.stderr


def test_shell_vars_take_only_lb_assignments_and_never_run_a_value(tmp_path):
    """`set` output is read as data: a value with $(...), backquotes, quotes or newlines is exported as it
    is and never run; a line inside another variable's value is not an assignment; only LB_* names."""
    need("dash")
    record = tmp_path / "env"
    pick = tmp_path / "pick"
    pick.write_text(f"#!/bin/sh\nenv -0 > '{record}'\nprintf '%s\\n' 127.0.0.9\n")
    pick.chmod(0o755)
    marker = tmp_path / "ran"
    vars_ = (f"LB_A=\"two words\"\nLB_B=\"it's\"\nLB_C='$(touch {marker}) `touch {marker}` ; \"q\" \\ end'\n"
             "LB_D=\"line 1\nline 2\"\nOTHER=\"x\nLB_EVIL='taken'\ny\"\nNOT_LB=1")
    r = ltsp_init(tmp_path, vars_, readme_post_init_line(), SNMPLB_PICK=str(pick))
    assert r.returncode == 0 and "SSH_SERVER=127.0.0.9" in r.stderr, r.stderr
    assert not marker.exists()
    got = dict(kv.split("=", 1) for kv in record.read_bytes().decode().split("\0") if kv.startswith("LB_"))
    assert got == {"LB_A": "two words", "LB_B": "it's", "LB_C": f"$(touch {marker}) `touch {marker}` ; \"q\" \\ end",
                   "LB_D": "line 1\nline 2"}


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


# -- the password, once (issue 21) ----------------------------------------------------------------------------

PAM_STASH = ROOT / "sessions" / "snmplb-pam-stash"


class FakeRdpServer:
    """An RDP endpoint on loopback that goes as far as the client's Client Info PDU (MS-RDPBCGR 2.2.1.11),
    where the client puts the user name and password: TLS (X.224 negotiation), MCS Connect Response with
    the GCC server data, Attach User and Channel Join confirms. It holds the connection, once that PDU is
    in, until ``release``: a real RDP server would go on to its login screen or the desktop.

    Not a server: enough of one that real xfreerdp sends what it would send xrdp, read back here."""

    def __init__(self, certdir: Path) -> None:
        import ssl

        _self_signed(certdir)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certdir / "cert.pem", certdir / "key.pem")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(60)
        self.port = self.sock.getsockname()[1]
        self.info = b""               # the Client Info PDU (decrypted: it came over TLS)
        self.info_in = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.thread.join(timeout=30)
        self.sock.close()

    @staticmethod
    def _exact(c, n: int) -> bytes:
        b = b""
        while len(b) < n:
            got = c.recv(n - len(b))
            if not got:
                raise EOFError("the client closed")
            b += got
        return b

    def _tpkt(self, c) -> bytes:
        head = self._exact(c, 4)
        assert head[0] == 3, head
        return self._exact(c, int.from_bytes(head[2:4], "big") - 4)

    @staticmethod
    def _send(c, payload: bytes, data: bool = True) -> None:
        payload = (b"\x02\xf0\x80" + payload) if data else payload  # X.224 Data TPDU
        c.sendall(b"\x03\x00" + (len(payload) + 4).to_bytes(2, "big") + payload)

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(60)
            request = self._tpkt(conn)  # X.224 Connection Request, its RDP_NEG_REQ last
            protocols = int.from_bytes(request[-4:], "little")
            # Connection Confirm: RDP_NEG_RSP, TLS (PROTOCOL_SSL) chosen.
            self._send(conn, b"\x0e\xd0\x00\x00\x12\x34\x00" + bytes((2, 0, 8, 0)) + (1).to_bytes(4, "little"),
                       data=False)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            channels = _requested_channels(self._tpkt(tls))
            self._send(tls, _connect_response(channels, protocols))
            user = 1007
            for _ in range(64):  # Erect Domain, Attach User, one join per channel, then Send Data
                pdu = self._tpkt(tls)[3:]
                kind = pdu[0] >> 2
                if kind == 10:    # Attach User Request -> Confirm
                    self._send(tls, b"\x2e\x00" + (user - 1001).to_bytes(2, "big"))
                elif kind == 14:  # Channel Join Request -> Confirm, the channel asked for
                    self._send(tls, b"\x3e\x00" + (user - 1001).to_bytes(2, "big") + pdu[3:5] + pdu[3:5])
                elif kind == 25:  # Send Data Request: the first is the Client Info PDU
                    self.info = pdu
                    break
            self.info_in.set()
            self.release.wait(60)
            tls.close()
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.info_in.set()


def _self_signed(d: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rdp-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))


def _ber_len(n: int) -> bytes:
    return bytes((n,)) if n < 0x80 else b"\x81" + bytes((n,)) if n < 0x100 else b"\x82" + n.to_bytes(2, "big")


def _per_len(n: int) -> bytes:
    return bytes((n,)) if n < 0x80 else (0x8000 | n).to_bytes(2, "big")


def _requested_channels(connect_initial: bytes) -> int:
    """How many static channels the client's CS_NET block asks for (its GCC user data, after "Duca")."""
    i = connect_initial.index(b"Duca") + 4
    i += 2 if connect_initial[i] & 0x80 else 1
    while i + 4 <= len(connect_initial):
        kind, size = int.from_bytes(connect_initial[i:i + 2], "little"), int.from_bytes(connect_initial[i + 2:i + 4],
                                                                                         "little")
        if size < 4:
            break
        if kind == 0xC003:
            return int.from_bytes(connect_initial[i + 4:i + 8], "little")
        i += size
    return 0


def _connect_response(channels: int, protocols: int) -> bytes:
    """MCS Connect Response (BER) with a GCC Conference Create Response (PER) carrying SC_CORE, SC_SECURITY
    (no RDP encryption: TLS) and SC_NET (the I/O channel 1003, one id per static channel)."""
    core = (0x0C01).to_bytes(2, "little") + (16).to_bytes(2, "little") + (0x00080004).to_bytes(4, "little") \
        + protocols.to_bytes(4, "little") + bytes(4)
    security = (0x0C02).to_bytes(2, "little") + (12).to_bytes(2, "little") + bytes(8)
    ids = b"".join((1004 + k).to_bytes(2, "little") for k in range(channels)) + (b"\0\0" if channels % 2 else b"")
    net = (0x0C03).to_bytes(2, "little") + (8 + len(ids)).to_bytes(2, "little") + (1003).to_bytes(2, "little") \
        + channels.to_bytes(2, "little") + ids
    server_data = core + security + net
    tail = b"\x14\x76\x0a\x01\x01\x00\x01\xc0\x00McDn" + _per_len(len(server_data)) + server_data
    gcc = b"\x00\x05\x00\x14\x7c\x00\x01" + _per_len(len(tail)) + tail
    params = b"".join(b"\x02" + _ber_len(len(v)) + v for v in
                      (b"\x22", b"\x03", b"\x00", b"\x01", b"\x00", b"\x01", b"\x00\xff\xf8", b"\x02"))
    body = b"\x0a\x01\x00" + b"\x02\x01\x00" + b"\x30" + _ber_len(len(params)) + params \
        + b"\x04" + _ber_len(len(gcc)) + gcc
    return b"\x7f\x66" + _ber_len(len(body)) + body


def _processes_showing(secret: bytes) -> list[str]:
    """Every process whose command line or environment holds ``secret`` (what ps and /proc show)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for what in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    if secret in (proc / what).read_bytes():
                        found.append(f"{proc.name} {what}")
    return found


def _as_nobody_key(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "keyctl", *args],
                          capture_output=True, text=True, timeout=60)


def _forget_nobody_key() -> None:
    """No snmplb:rdp key left in nobody's keyring (from an earlier run)."""
    for _ in range(10):
        found = _as_nobody_key("search", "@u", "user", "snmplb:rdp")
        if found.returncode != 0:
            return
        _as_nobody_key("invalidate", found.stdout.strip())
        time.sleep(0.1)
    raise AssertionError("nobody's snmplb:rdp key stays")


def test_rdp_password_from_the_login_is_asked_once_and_shows_nowhere(display):
    """The display manager's PAM stack runs snmplb-pam-stash as pam_exec does (root, in a session keyring
    of the display manager's, PAM_USER and PAM_TYPE, the password on stdin with pam_exec's NUL); the user's
    session (as nobody) with SNMPLB_RDP_PASSWORD=login starts real xfreerdp, which sends that password in
    its Client Info PDU: the RDP server has it and need not ask. Meanwhile no process shows it in its
    command line or environment; the key is gone once read; the logs do not hold it. A second session
    finds no key: xfreerdp sends no password (the server asks, as before) and the log says why."""
    need("xfreerdp", "setpriv", "keyctl")
    secret = "Tr0ub4dor &3 'x' \\ $HOME"
    base = Path(tempfile.mkdtemp(prefix="snmplb-rdp-pw-"))
    server = None
    try:
        base.chmod(0o755)
        home = base / "home"
        home.mkdir()
        shutil.chown(home, "nobody")
        (base / "certs").mkdir()
        server = FakeRdpServer(base / "certs")
        conf = base / "session.conf"

        def settings(port: int) -> None:
            conf.write_text(f"SNMPLB_RDP_PORT={port}\nSNMPLB_RDP_OPTIONS='/cert:ignore /log-level:ERROR'\n"
                            "SNMPLB_RDP_PASSWORD=login\n")
            conf.chmod(0o644)

        settings(server.port)
        pick = base / "pick"
        pick.write_text("#!/bin/sh\necho 127.0.0.1\n")
        pick.chmod(0o755)
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "USER": "nobody", "DISPLAY": display,
               "SNMPLB_SESSION_CONF": str(conf), "SNMPLB_PICK": str(pick), "SNMPLB_MESSAGE_TIMEOUT": "1",
               "SNMPLB_RDP_CLIENT": "xfreerdp"}
        _forget_nobody_key()

        stash = subprocess.run(["keyctl", "session", "-", str(PAM_STASH)], input=secret.encode() + b"\0",
                               env={"PAM_TYPE": "auth", "PAM_USER": "nobody", "PAM_SERVICE": "lightdm"},
                               capture_output=True, timeout=60)
        assert stash.returncode == 0, stash
        assert secret.encode() not in stash.stdout + stash.stderr
        assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode == 0, "no key for the session"

        session = ["keyctl", "session", "-", "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                   str(SESSION), "rdp"]
        p = subprocess.Popen(session, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=base, start_new_session=True)
        try:
            assert server.info_in.wait(60) and server.error is None, server.error
            assert secret.encode("utf-16-le") in server.info, server.info  # TS_INFO_PACKET: UTF-16LE
            assert "nobody".encode("utf-16-le") in server.info
            assert _processes_showing(secret.encode()) == []       # while xfreerdp is connected
            assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode != 0  # used once, gone
        finally:
            server.release.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            out, err = p.communicate(timeout=60)
        assert b"nobody: xfreerdp on 127.0.0.1 (port %d), with the login's password" % server.port in err, err
        assert secret.encode() not in out + err
        server.close()

        # No key (used, or the stash is not configured): xfreerdp sends no password; the server asks.
        server = FakeRdpServer(base / "certs")
        settings(server.port)
        p = subprocess.Popen(session, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=base, start_new_session=True)
        try:
            assert server.info_in.wait(60) and server.error is None, server.error
            assert "nobody".encode("utf-16-le") in server.info and secret.encode("utf-16-le") not in server.info
        finally:
            server.release.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            out, err = p.communicate(timeout=60)
        assert b"no login password was handed on" in err and b"the RDP server asks for it" in err, err
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(base)


def test_pam_stash_hands_nothing_on_outside_auth_for_root_or_an_unknown_user_and_never_fails(tmp_path):
    """pam_exec runs it for every PAM_TYPE it is configured for; only auth, for a known user other than
    root, stores a key. It exits 0 whatever happens (an optional step must never stop a login), and reads
    the password away so that pam_exec's write never blocks."""
    need("setpriv", "keyctl")
    _forget_nobody_key()
    cases = [{"PAM_TYPE": "open_session", "PAM_USER": "nobody"}, {"PAM_TYPE": "auth", "PAM_USER": "no-such-user-x"},
             {"PAM_TYPE": "auth", "PAM_USER": "-nobody"}, {"PAM_TYPE": "auth"}, {"PAM_TYPE": "auth", "PAM_USER": "root"}]
    for env in cases:
        r = subprocess.run(["keyctl", "session", "-", str(PAM_STASH)], input=b"secret-pw\0" * 10000, env=env,
                           capture_output=True, timeout=60)
        assert r.returncode == 0 and b"secret-pw" not in r.stdout + r.stderr, (env, r)
        assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode != 0, env
    r = subprocess.run(["keyctl", "search", "@u", "user", "snmplb:rdp"], capture_output=True, timeout=60)
    assert r.returncode != 0  # nothing in root's keyring either


def test_rdp_password_setting_is_checked_before_anything_runs(tmp_path):
    """SNMPLB_RDP_PASSWORD is server (the RDP server asks: the default) or login; anything else, or login
    with an empty SNMPLB_RDP_USER (whose password?), is a bad setting: exit 2, named, nothing started.
    X2Go does not read it."""
    pick = tmp_path / "pick"
    pick.write_text(f"#!/bin/sh\necho started > {tmp_path / 'picked'}\necho 127.0.0.1\n")
    pick.chmod(0o755)
    for conf, words in (("SNMPLB_RDP_PASSWORD=ask\n", "SNMPLB_RDP_PASSWORD is neither server nor login"),
                        ("SNMPLB_RDP_PASSWORD=login\nSNMPLB_RDP_USER=\n", "do not go together")):
        (tmp_path / "session.conf").write_text(conf)
        env = {"PATH": os.environ["PATH"], "USER": "tester", "SNMPLB_SESSION_CONF": str(tmp_path / "session.conf"),
               "SNMPLB_PICK": str(pick), "SNMPLB_RDP_CLIENT": "sh"}  # no DISPLAY: the message goes to stderr
        r = subprocess.run([str(SESSION), "rdp"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr, r
        assert not (tmp_path / "picked").exists()
    r = subprocess.run([str(SESSION), "x2go"], env={**env, "SNMPLB_X2GO_CLIENT": "true"}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and (tmp_path / "picked").exists(), r


# -- failing over (issue 19: a session that starts) ---------------------------------------------------------

def _listening(host: str, port: int) -> socket.socket:
    """A server that never answers: it only shows, afterwards, whether anybody connected (``_connected``)."""
    s = socket.create_server((host, port), backlog=8)
    s.setblocking(False)
    return s


def _connected(listener: socket.socket) -> bool:
    """Whether a connection is waiting on ``listener`` (called once the session wrapper has ended, so that any
    connection it made is already queued: no waiting involved)."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _closing_server(host: str, port: int) -> tuple[socket.socket, list[int], threading.Thread]:
    """A stand-in for a server whose service is broken: it accepts each connection and closes it at once
    (at most 5 within 60 s); the list counts them."""
    s = socket.create_server((host, port))
    s.settimeout(60)
    count: list[int] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            for _ in range(5):
                conn, _ = s.accept()
                conn.close()
                count.append(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return s, count, thread


def test_rdp_fails_over_past_a_refused_port_and_a_server_that_closes_to_the_one_that_answers(fleet, display,
                                                                                            tmp_path):
    """Real agents in the configured order (LB_ALGORITHM=fixed), real xfreerdp: the first server refuses the
    port (nothing listens), the second accepts and closes at once (both xfreerdp status 147), the third
    answers: its listener reads xfreerdp's first RDP packet, where the session goes on. A draining server
    configured first is never tried. Each step is logged with the next server's name."""
    need("xfreerdp")
    from farm import free_port

    drained = fleet.add("drained", IDLE, admin=AdminSettings(state="draining"))
    a, b, c = fleet.add("a", IDLE), fleet.add("b", IDLE), fleet.add("c", IDLE)
    port = free_port([drained.host, a.host, b.host, c.host])
    closer, closed, closer_thread = _closing_server(b.host, port)
    answer = socket.create_server((c.host, port))
    first, thread = first_packet(answer, 60)
    never = _listening(drained.host, port)
    env = session_env(tmp_path, display, site_conf(addrs([drained, a, b, c]), LB_ALGORITHM="fixed",
                                                   SNMPLB_RDP_PORT=str(port), SNMPLB_RDP_OPTIONS="/cert:ignore"),
                      SNMPLB_RDP_CLIENT="xfreerdp")
    p = subprocess.Popen([str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 90
        while thread.is_alive() and p.poll() is None and time.monotonic() < end:
            thread.join(timeout=0.2)
        thread.join(timeout=2)
        assert first and b"Cookie: mstshash=tester\r\n" in first[0], first
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        closer.close()
        answer.close()
    assert f"tester: xfreerdp on {a.host} (port {port})" in err, err
    assert (f"host {a.host}: could not connect (xfreerdp exit status 147: transport failed: refused or closed), "
            f"trying {b.host}\n") in err, err
    assert f"host {b.host}: could not connect (xfreerdp exit status 147" in err and f"trying {c.host}\n" in err, err
    assert f"tester: xfreerdp on {c.host} (port {port})" in err
    assert err.index(f"on {a.host} (") < err.index(f"on {b.host} (") < err.index(f"on {c.host} (")
    assert closed  # (xfreerdp connects twice: its security negotiation tries again without NLA)
    assert not _connected(never) and drained.host not in err.replace(addrs([drained, a, b, c]), "")
    never.close()


def test_rdp_failover_stops_when_its_time_is_spent_and_a_bad_setting_is_named(fleet, display, tmp_path):
    """SNMPLB_SESSION_TRY_SECONDS=0: the first server is tried, no other (logged, naming the setting). A value
    that is not a number of seconds is named and its default used: the failover goes on."""
    need("xfreerdp")
    from farm import free_port

    a, b = fleet.add("a", IDLE), fleet.add("b", IDLE)
    port = free_port([a.host, b.host])  # nothing listens there: each xfreerdp fails at once (147)
    conf = site_conf(addrs([a, b]), LB_ALGORITHM="fixed", SNMPLB_RDP_PORT=str(port), SNMPLB_RDP_OPTIONS="/cert:ignore")
    env = session_env(tmp_path, display, conf + "SNMPLB_SESSION_TRY_SECONDS=0\n", SNMPLB_RDP_CLIENT="xfreerdp")
    r = run_session("rdp", env)
    assert r.returncode == 147, r.stderr
    assert f"tester: xfreerdp on {a.host} (port {port})" in r.stderr
    assert (f"host {a.host}: could not connect (xfreerdp exit status 147: transport failed: refused or closed); "
            f"not trying {b.host}: SNMPLB_SESSION_TRY_SECONDS (0 s) have passed") in r.stderr
    assert f"xfreerdp on {b.host}" not in r.stderr
    assert f"The remote desktop could not be opened within 0 seconds: - {a.host}: xfreerdp exit status 147" in r.stderr
    # SNMPLB_RDP_WINDOW_SECONDS defaults to SNMPLB_SESSION_START_SECONDS's value.
    for name, bad, default, more in (("SNMPLB_SESSION_TRY_SECONDS", "soon", 60, ""),
                                     ("SNMPLB_SESSION_TRY_SECONDS", "-1", 60, ""),
                                     ("SNMPLB_SESSION_START_SECONDS", "99999", 30, ""),
                                     ("SNMPLB_SESSION_START_SECONDS", "2.5", 30, ""),
                                     ("SNMPLB_RDP_WINDOW_SECONDS", "5s", 30, ""),
                                     ("SNMPLB_RDP_WINDOW_SECONDS", "3601", 20, "SNMPLB_SESSION_START_SECONDS=20\n")):
        env = session_env(tmp_path, display, conf + more + f"{name}='{bad}'\n", SNMPLB_RDP_CLIENT="xfreerdp")
        r = run_session("rdp", env)
        assert (f"the session setting {name} is not a number of seconds from 0 to 3600: using {default}"
                in r.stderr), (name, bad, r.stderr)
        assert f"trying {b.host}\n" in r.stderr and f"tester: xfreerdp on {b.host}" in r.stderr, r.stderr


class RealXrdp:
    """Debian's own xrdp and xrdp-sesman (0.9.21; sesman checks passwords with PAM, this machine's accounts),
    run as root in a private mount namespace (unshare) so that /etc/xrdp and /run/xrdp (its pid files and
    sockets) are this test's copies: xrdp on ``host``:``port`` only, sesman on a free port of its own. No X
    backend (xorgxrdp) is needed: the tests end at the password. ``require_credentials`` is xrdp.ini's
    setting: a refused password ends the connection instead of showing xrdp's login screen again."""

    def __init__(self, base: Path, host: str, port: int, require_credentials: bool) -> None:
        from farm import free_port

        d = base / "xrdp"
        etc, run, self.logs = d / "etc", d / "run", d / "log"
        shutil.copytree("/etc/xrdp", etc, symlinks=True)
        (run / "sockdir").mkdir(parents=True)
        (run / "sockdir").chmod(0o3777)
        self.logs.mkdir()
        sesman = free_port(["127.0.0.1"])
        ini = (etc / "xrdp.ini").read_text().replace("\nport=3389\n", f"\nport=tcp://{host}:{port}\n")
        ini = ini.replace("LogFile=xrdp.log", f"LogFile={self.logs / 'xrdp.log'}").replace("EnableSyslog=true",
                                                                                          "EnableSyslog=false")
        if require_credentials:
            ini = ini.replace("#require_credentials=true", "require_credentials=true")
        (etc / "xrdp.ini").write_text(ini)
        ses = (etc / "sesman.ini").read_text().replace("ListenPort=3350", f"ListenPort={sesman}")
        ses = ses.replace("LogFile=xrdp-sesman.log", f"LogFile={self.logs / 'sesman.log'}")
        (etc / "sesman.ini").write_text(ses.replace("EnableSyslog=true", "EnableSyslog=false"))
        script = d / "run.sh"
        script.write_text(f"set -e\nmount --bind {etc} /etc/xrdp\nmount --bind {run} /run/xrdp\n"
                          "xrdp-sesman -n &\nexec xrdp -n\n")
        with open(d / "out", "wb") as out:
            self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", str(script)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

        def up() -> bool:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return "starting xrdp-sesman" in self.log("sesman.log")
            except OSError:
                return False
        if not wait_for(up, timeout=20, step=0.1):
            self.stop()
            raise AssertionError(f"xrdp did not start: {(d / 'out').read_text(errors='replace')[-2000:]}")

    def log(self, name: str = "xrdp.log") -> str:
        with contextlib.suppress(OSError):
            return (self.logs / name).read_text(errors="replace")
        return ""

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def _stash_for_nobody(secret: str) -> None:
    """What the display manager's PAM stack does at nobody's login (see the test above)."""
    _forget_nobody_key()
    stash = subprocess.run(["keyctl", "session", "-", str(PAM_STASH)], input=secret.encode() + b"\0",
                           env={"PAM_TYPE": "auth", "PAM_USER": "nobody", "PAM_SERVICE": "lightdm"},
                           capture_output=True, timeout=60)
    assert stash.returncode == 0, stash
    assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode == 0, "no key for the session"


def _nobody_rdp(base: Path, display: str, port: int, hosts: list[str]) -> tuple[list[str], dict[str, str]]:
    """The session command (as nobody, in a session keyring) and its environment: SNMPLB_RDP_PASSWORD=login,
    these hosts in this order. The pick is a stand-in here: snmplb pick cannot run as nobody from this
    machine's venv (under /root, mode 0700), and the order is what this is about."""
    home = base / "home"
    home.mkdir(exist_ok=True)
    shutil.chown(home, "nobody")
    conf = base / "session.conf"
    conf.write_text(f"SNMPLB_RDP_PORT={port}\nSNMPLB_RDP_OPTIONS='/cert:ignore /sec:tls /log-level:ERROR'\n"
                    "SNMPLB_RDP_PASSWORD=login\n")
    conf.chmod(0o644)
    pick = base / "pick"
    pick.write_text("#!/bin/sh\nprintf '%s\\n' " + " ".join(hosts) + "\n")
    pick.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "USER": "nobody", "DISPLAY": display,
           "SNMPLB_SESSION_CONF": str(conf), "SNMPLB_PICK": str(pick), "SNMPLB_MESSAGE_TIMEOUT": "1",
           "SNMPLB_RDP_CLIENT": "xfreerdp"}
    session = ["keyctl", "session", "-", "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
               str(SESSION), "rdp"]
    return session, env


@pytest.mark.parametrize("require_credentials", [True, False], ids=["require_credentials", "login screen"])
def test_a_password_xrdp_refuses_is_never_tried_on_another_server(display, require_credentials):
    """Real xrdp (Debian's, sesman checking the password with PAM) refuses nobody's stashed password (nobody
    has none that can match). With xrdp.ini's require_credentials=true it ends the connection at once
    (xfreerdp status 12, "logged off"): the wrapper tells the user and never tries the next server. With
    xrdp's default, its login screen comes back saying "login failed" (the user is told there, and may
    type the password): xfreerdp stays connected, and nothing goes to the next server either. The next
    server is a listener that shows whether anybody connected; the password shows in no output."""
    need("xfreerdp", "setpriv", "keyctl", "xrdp", "xrdp-sesman", "unshare")
    if os.geteuid() != 0:
        pytest.skip("xrdp runs in a mount namespace of its own: needs root")
    from farm import free_port

    secret = "not nobody's password 'x' $HOME"
    base = Path(tempfile.mkdtemp(prefix="snmplb-xrdp-"))
    base.chmod(0o755)
    port = free_port(["127.0.0.1", "127.0.0.2"])
    xrdp = RealXrdp(base, "127.0.0.1", port, require_credentials)
    other = _listening("127.0.0.2", port)
    try:
        session, env = _nobody_rdp(base, display, port, ["127.0.0.1", "127.0.0.2"])
        _stash_for_nobody(secret)
        p = subprocess.Popen(session, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=base, start_new_session=True)
        try:
            if require_credentials:
                out, err = p.communicate(timeout=90)
                assert p.returncode == 12, err
                assert ("The remote desktop on 127.0.0.1 closed as soon as it opened (xfreerdp exit status 12: "
                        "the user logged off)") in err, err
            else:
                assert wait_for(lambda: "login failed for user nobody" in xrdp.log(), timeout=60, step=0.2), xrdp.log()
                assert p.poll() is None  # on xrdp's login screen, which says "login failed"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            out, err = p.communicate(timeout=60)
        assert f"nobody: xfreerdp on 127.0.0.1 (port {port}), with the login's password" in err, err
        assert "login failed for user nobody" in xrdp.log()
        assert "AUTHFAIL: user=nobody" in xrdp.log("sesman.log")
        assert "trying" not in err and "127.0.0.2" not in err
        assert not _connected(other)
        assert secret not in out + err + xrdp.log() + xrdp.log("sesman.log")
        assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode != 0
    finally:
        xrdp.stop()
        other.close()
        shutil.rmtree(base)


def test_after_a_failover_the_next_server_asks_for_the_password_itself(display):
    """SNMPLB_RDP_PASSWORD=login: the stashed password is read once, into the first xfreerdp, and invalidated.
    That server cannot be reached (nothing listens: 147); the next one (the Client Info stand-in above, as
    far as xfreerdp's Client Info PDU) gets the user name and no password: it asks for it itself. A
    password is never sent to a second server, whatever made the first one fail."""
    need("xfreerdp", "setpriv", "keyctl")
    secret = "Tr0ub4dor &3 'x' \\ $HOME"
    base = Path(tempfile.mkdtemp(prefix="snmplb-rdp-fo-"))
    server = None
    try:
        base.chmod(0o755)
        (base / "certs").mkdir()
        server = FakeRdpServer(base / "certs")
        session, env = _nobody_rdp(base, display, server.port, ["127.0.0.2", "127.0.0.1"])
        _stash_for_nobody(secret)
        p = subprocess.Popen(session, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=base, start_new_session=True)
        try:
            assert server.info_in.wait(60) and server.error is None, server.error
            assert "nobody".encode("utf-16-le") in server.info
            assert secret.encode("utf-16-le") not in server.info
            assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode != 0
        finally:
            server.release.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            out, err = p.communicate(timeout=60)
        text = err.decode()
        assert f"nobody: xfreerdp on 127.0.0.2 (port {server.port}), with the login's password" in text, text
        assert f"host 127.0.0.2: could not connect (xfreerdp exit status 147" in text
        assert ("nobody: the login's password went to 127.0.0.2 (it is handed on once): 127.0.0.1 asks for it"
                in text), text
        assert f"nobody: xfreerdp on 127.0.0.1 (port {server.port})\n" in text
        assert secret.encode() not in out + err
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(base)


def _x2go_sshd(base: Path, name: str, host: str, port: int, authorized: Path, passwords: bool = False):
    """A real sshd for X2Go's ssh leg (no x2goserver here: it is not installed, see below); root logs in with
    a key (``authorized``) or, with ``passwords``, also by password (root's, which the test never knows)."""
    from farm import keygen, start_sshd

    d = base / name
    d.mkdir()
    keygen(d / "host")
    conf = d / "sshd_config"
    conf.write_text(f"ListenAddress {host}\nPort {port}\nPidFile {d / 'pid'}\nHostKey {d / 'host'}\n"
                    f"AuthorizedKeysFile {authorized}\nUsePAM no\nStrictModes no\n"
                    f"PasswordAuthentication {'yes' if passwords else 'no'}\nKbdInteractiveAuthentication no\n"
                    f"PermitRootLogin {'yes' if passwords else 'prohibit-password'}\nPrintMotd no\nLogLevel VERBOSE\n")
    return start_sshd(conf, host, port, d / "log"), d / "log"


def _x2go_keys(tmp_path: Path, home: Path) -> tuple[Path, Path]:
    """The user's key where pyhoca-cli looks for it (~/.ssh/id_ed25519: it discovers keys, -i is not used
    by the wrapper), as an authorized_keys file; and an authorized_keys file with another key only."""
    from farm import keygen

    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    keygen(home / ".ssh" / "id_ed25519")
    keygen(tmp_path / "other")
    mine, other = tmp_path / "authorized-mine", tmp_path / "authorized-other"
    shutil.copy(home / ".ssh" / "id_ed25519.pub", mine)
    shutil.copy(tmp_path / "other.pub", other)
    return mine, other


def test_x2go_fails_over_past_a_closed_port_and_a_server_without_x2go_and_stops_at_a_refused_login(
        fleet, display, tmp_path):
    """Real agents in the configured order, real pyhoca-cli, real sshd: the first server's port is closed
    (could not connect); the next accepts and closes at once (a stand-in: "Error reading SSH protocol
    banner", could not connect); the second is an sshd that takes the user's key where the X2Go session cannot
    start (without x2goserver installed, pyhoca-cli says so; with it, the session start fails at its sftp
    step, which this sshd does not offer: a traceback, status 1, within seconds); the third refuses the key,
    and pyhoca-cli, which would then ask for a password, has no terminal to ask on (as under a display
    manager): a refused login, which the user is told of, and the fourth is never tried."""
    need("pyhoca-cli", "ssh-keygen")
    if os.geteuid() != 0:
        pytest.skip("the sshd logs root in with a key in a file of its own: needs root")
    from farm import free_port, stop_sshd

    a, e, b, c, d = (fleet.add(n, IDLE) for n in "aebcd")
    port = free_port([a.host, e.host, b.host, c.host, d.host])
    closer, closed, _ = _closing_server(e.host, port)
    env = session_env(tmp_path, display, site_conf(addrs([a, e, b, c, d]), LB_ALGORITHM="fixed",
                                                   SNMPLB_X2GO_SSH_PORT=str(port)), USER="root", TMPDIR=str(tmp_path))
    mine, other = _x2go_keys(tmp_path, Path(env["HOME"]))
    no_x2go, no_x2go_log = _x2go_sshd(tmp_path, "b-sshd", b.host, port, mine)
    refusing, refusing_log = _x2go_sshd(tmp_path, "c-sshd", c.host, port, other)
    never = _listening(d.host, port)
    try:
        # No controlling terminal and no stdin, as under a display manager.
        r = subprocess.run([str(SESSION), "x2go"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=180, start_new_session=True)
    finally:
        stop_sshd(no_x2go)
        stop_sshd(refusing)
        closer.close()
    # paramiko's words after "Unable to connect" vary with timing (an "[Errno 104] Connection reset by peer"
    # may follow under load): the wrapper's own part of the line is what is checked.
    assert re.search(rf"host {re.escape(a.host)}: could not connect \(pyhoca-cli: a socket error occured while "
                     rf"establishing the connection: .*Unable to connect to port {port} on {re.escape(a.host)}.*\), "
                     rf"trying {re.escape(e.host)}\n", r.stderr), r.stderr
    assert (f"host {e.host}: could not connect (pyhoca-cli: Error reading SSH protocol banner), trying {b.host}\n"
            in r.stderr) and closed, r.stderr
    if shutil.which("x2goversion"):  # x2goserver is installed: the session start fails at its sftp step
        assert (f"host {b.host}: the session did not start (pyhoca-cli exit status 1: "
                f"paramiko.ssh_exception.SSHException: Channel closed.), trying {c.host}\n") in r.stderr, r.stderr
    else:
        assert (f"host {b.host}: the session did not start (pyhoca-cli: the remote server does not have the X2Go "
                f"Server software installed), trying {c.host}\n") in r.stderr, r.stderr
    assert "Accepted publickey for root" in no_x2go_log.read_text()
    assert (f"The X2Go server {c.host} did not accept your login (pyhoca-cli: no ssh key or ticket was accepted, "
            "and there is no terminal to type a password on)") in r.stderr, r.stderr
    assert "Accepted" not in refusing_log.read_text() and "root" in refusing_log.read_text()
    assert f"trying {d.host}" not in r.stderr and f"on {d.host}" not in r.stderr
    assert not _connected(never)
    never.close()
    assert r.returncode == 1
    assert not list(tmp_path.glob("snmplb-session.*"))


def test_x2go_a_password_sshd_refuses_is_not_tried_on_the_next_server(display, tmp_path):
    """Real pyhoca-cli and sshd. Where pyhoca-cli has a terminal (a pty here, the test typing), a refused key
    makes it ask for a password, three times: sshd refuses each ("Failed password": root's password is not
    the one typed), pyhoca-cli says "authentication failed" (and exits 0), and the wrapper tells the user
    and never tries the next server. The pick is a stand-in: this is about the wrapper's verdict."""
    need("pyhoca-cli", "ssh-keygen")
    if os.geteuid() != 0:
        pytest.skip("the sshd checks root's password: needs root")
    import pty
    import select

    from farm import free_port, stop_sshd

    port = free_port(["127.0.0.1", "127.0.0.2"])
    env = session_env(tmp_path, display, f"SNMPLB_X2GO_SSH_PORT={port}\n", USER="root", TMPDIR=str(tmp_path),
                      SNMPLB_PICK=str(tmp_path / "pick"))
    (tmp_path / "pick").write_text("#!/bin/sh\nprintf '127.0.0.1\\n127.0.0.2\\n'\n")
    (tmp_path / "pick").chmod(0o755)
    _, other = _x2go_keys(tmp_path, Path(env["HOME"]))
    sshd, sshd_log = _x2go_sshd(tmp_path, "sshd", "127.0.0.1", port, other, passwords=True)
    never = _listening("127.0.0.2", port)
    typed = 0
    text = b""
    try:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the wrapper, on the pty as its controlling terminal
            os.execve(str(SESSION), [str(SESSION), "x2go"], env)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the wrapper ended (EIO on the pty)
                break
            if not chunk:
                break
            text += chunk
            if text.count(b"Password:") > typed and typed < 5:
                typed += 1
                os.write(fd, b"not-the-password\n")
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    finally:
        stop_sshd(sshd)
    out = text.decode(errors="replace")
    assert typed == 3 and sshd_log.read_text().count("Failed password for root") == 3, (typed, out[-3000:])
    assert ("The X2Go server 127.0.0.1 did not accept your login (pyhoca-cli: the password was refused "
            "(authentication failed, too many failures during interactive login))") in out, out[-3000:]
    assert "127.0.0.2" not in out and not _connected(never)
    never.close()
    assert os.waitstatus_to_exitcode(status) == 1


@contextlib.contextmanager
def _blackhole_namespace() -> Iterator[str]:
    """A network namespace of the test's own (the machine's routes are never touched) where 10.98.0.0/24 is
    unreachable (an `unreachable` route: connect fails at once) and 10.97.0.0/24 is routed to a second
    namespace that does not forward (the SYN vanishes: connect times out), its own address 10.99.0.1."""
    name = f"snmplb-fo-{os.getpid()}"
    peer = f"{name}-b"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, timeout=30, capture_output=True)
    try:
        ip("netns", "add", name)
        ip("netns", "add", peer)
        ip("link", "add", "snmplb-fo-a", "netns", name, "type", "veth", "peer", "name", "snmplb-fo-b", "netns", peer)
        ip("-n", name, "addr", "add", "10.99.0.1/24", "dev", "snmplb-fo-a")
        ip("-n", peer, "addr", "add", "10.99.0.2/24", "dev", "snmplb-fo-b")
        for ns, dev in ((name, "snmplb-fo-a"), (peer, "snmplb-fo-b")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", name, "route", "add", "unreachable", "10.98.0.0/24")
        ip("-n", name, "route", "add", "10.97.0.0/24", "via", "10.99.0.2")
        subprocess.run(["ip", "netns", "exec", peer, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], check=True,
                       timeout=30)
        yield name
    finally:
        for ns in (name, peer):
            subprocess.run(["ip", "netns", "del", ns], timeout=30, capture_output=True)


def test_rdp_fails_over_past_no_route_and_a_connect_timeout_within_the_time_bound(display, tmp_path):
    """Real xfreerdp in a network namespace the test creates: no route to the first server (xfreerdp status
    141 at once), the second drops the connection's SYN (141 after FreeRDP's 15 s TCP connect timeout),
    and then SNMPLB_SESSION_TRY_SECONDS=10 has passed: the third is not tried, and the user is told. The
    pick is a stand-in: no agent can answer from inside that namespace, and the order is given."""
    need("xfreerdp", "ip")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    pick = tmp_path / "pick"
    pick.write_text("#!/bin/sh\nprintf '10.98.0.5\\n10.97.0.5\\n10.99.0.1\\n'\n")
    pick.chmod(0o755)
    env = session_env(tmp_path, display, "SNMPLB_RDP_OPTIONS=/cert:ignore\nSNMPLB_SESSION_TRY_SECONDS=10\n",
                      SNMPLB_RDP_CLIENT="xfreerdp", SNMPLB_PICK=str(pick))
    with _blackhole_namespace() as ns:
        r = subprocess.run(["ip", "netns", "exec", ns, str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
    assert ("host 10.98.0.5: could not connect (xfreerdp exit status 141: connect failed: no route, or no answer in "
            "time), trying 10.97.0.5\n"
            in r.stderr), r.stderr
    assert ("host 10.97.0.5: could not connect (xfreerdp exit status 141: connect failed: no route, or no answer in "
            "time); not trying 10.99.0.1: "
            "SNMPLB_SESSION_TRY_SECONDS (10 s) have passed") in r.stderr, r.stderr
    assert "xfreerdp on 10.99.0.1" not in r.stderr
    assert "The remote desktop could not be opened within 10 seconds:" in r.stderr
    assert r.returncode == 141


def test_pick_is_asked_for_every_usable_server_for_this_user(tmp_path):
    """The wrapper asks pick for the whole order (--all: the next servers to fail over to) and names the user
    (--user: their pool, back to a session of theirs; snmplb pick's own tests and test_affinity.py run the
    real decision). A stand-in pick records its arguments; the client is `true` (a session that ended)."""
    record = tmp_path / "args"
    pick = tmp_path / "pick"
    pick.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\necho 127.0.0.1\n")
    pick.chmod(0o755)
    for mode, client in (("rdp", "SNMPLB_RDP_CLIENT"), ("x2go", "SNMPLB_X2GO_CLIENT")):
        env = {"PATH": os.environ["PATH"], "USER": "o'brien x", "SNMPLB_SESSION_CONF": "/nonexistent",
               "SNMPLB_PICK": str(pick), client: "true", "TMPDIR": str(tmp_path)}
        r = subprocess.run([str(SESSION), mode], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert record.read_text().splitlines() == ["--all", "--user", "o'brien x"], record.read_text()
    # RDP logs in as SNMPLB_RDP_USER: that is the user asked about; empty (a kiosk, the RDP server asks who):
    # no user at all.
    for rdp_user, expected in (("ann", ["--all", "--user", "ann"]), ("", ["--all"])):
        conf = tmp_path / "session.conf"
        conf.write_text(f"SNMPLB_RDP_USER='{rdp_user}'\n")
        env = {"PATH": os.environ["PATH"], "USER": "seat01", "SNMPLB_SESSION_CONF": str(conf),
               "SNMPLB_PICK": str(pick), "SNMPLB_RDP_CLIENT": "true", "TMPDIR": str(tmp_path)}
        r = subprocess.run([str(SESSION), "rdp"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and record.read_text().splitlines() == expected, (rdp_user, r.stderr)


# -- the window watchdog: a server that accepts and never answers ---------------------------------------------

class SilentServer:
    """A stand-in for an RDP server that accepts the TCP connection and then never answers: it reads what the
    client sends (xfreerdp's X.224 Connection Request shows that it connected) and never writes. No real server
    does so on purpose; it is what a machine too loaded to run its RDP service looks like from the client's side
    (the kernel accepts, the service never reads), or a hung xrdp, or a middlebox that completes the handshake
    and forwards nothing, and none of those can be made to happen on cue here. xfreerdp 2.11 waits for the
    answer without a time limit (README: measured, still waiting after 75 s)."""

    def __init__(self, host: str, port: int) -> None:
        import selectors

        self.sock = socket.create_server((host, port))
        self.sock.setblocking(False)
        self.received: list[bytes] = []  # per connection, in order
        self.closed: list[bool] = []     # per connection: the client closed it
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import selectors

        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.1):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = self.sock.accept()
                        conn.setblocking(False)
                        self.received.append(b"")
                        self.closed.append(False)
                        self._sel.register(conn, selectors.EVENT_READ, len(self.received) - 1)
                    continue
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    got = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:  # reset: closed too
                    got = b""
                if got:
                    self.received[key.data] += got
                else:
                    self.closed[key.data] = True
                    self._sel.unregister(conn)
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        for key in list(self._sel.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self._sel.close()


def _in_session(sid: int) -> list[str]:
    """The live processes (not zombies) of session ``sid``, with their command lines: what a wrapper started
    with start_new_session leaves behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != "Z":
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{proc.name} {cmdline}")
    return found


def _rdp_client_for(sid: int, host: str) -> int | None:
    """The pid of the xfreerdp of session ``sid`` that connects to ``host``."""
    for line in _in_session(sid):
        pid, _, cmd = line.partition(" ")
        if cmd.split(" ")[0].endswith("xfreerdp") and f" /v:{host} " in f" {cmd} ":
            return int(pid)
    return None


def _windows_of(display: str, pid: int) -> list[str]:
    """The X windows whose _NET_WM_PID is ``pid``, each checked with xprop: that pid, WM_CLASS xfreerdp."""
    env = {"PATH": os.environ["PATH"], "DISPLAY": display}
    r = subprocess.run(["xdotool", "search", "--pid", str(pid)], capture_output=True, text=True, timeout=30, env=env)
    windows = r.stdout.split() if r.returncode == 0 else []
    for w in windows:
        props = subprocess.run(["xprop", "-id", w, "_NET_WM_PID", "WM_CLASS"], capture_output=True, text=True,
                               timeout=30, env=env).stdout
        assert f"_NET_WM_PID(CARDINAL) = {pid}\n" in props and 'WM_CLASS(STRING) = "xfreerdp"' in props, props
    return windows


WINDOW_S = 5  # SNMPLB_RDP_WINDOW_SECONDS in these tests: short, so that they are


def test_rdp_a_server_that_never_answers_is_left_after_the_window_bound_and_a_session_with_a_window_is_kept(
        display, tmp_path):
    """Real xfreerdp 2.11 under Xvfb. The first server accepts the connection and never answers (the stand-in
    above): xfreerdp opens no window, and SNMPLB_RDP_WINDOW_SECONDS later the wrapper ends it (its connection
    closes), logs the step and tries the next server: Debian's real xrdp (in a mount namespace of the test's,
    on loopback), whose login screen is an RDP session: xfreerdp's window appears (found as the wrapper finds
    it, by _NET_WM_PID, and checked with xprop), and that client is still there, the same process, well after
    the bound and the KILL grace. Ending the wrapper as the display manager does (TERM, to it alone) ends the
    client too: nothing of the session is left (no xfreerdp, watchdog, xdotool or sleep). The pick is a
    stand-in: the order is what this is about."""
    need("xfreerdp", "xrdp", "xrdp-sesman", "unshare", "xprop")
    if os.geteuid() != 0:
        pytest.skip("xrdp runs in a mount namespace of its own: needs root")
    from farm import free_port

    port = free_port(["127.0.0.1", "127.0.0.2"])
    silent = SilentServer("127.0.0.1", port)
    xrdp = RealXrdp(tmp_path, "127.0.0.2", port, require_credentials=False)
    pick = tmp_path / "pick"
    pick.write_text("#!/bin/sh\nprintf '127.0.0.1\\n127.0.0.2\\n'\n")
    pick.chmod(0o755)
    env = session_env(tmp_path, display, f"SNMPLB_RDP_PORT={port}\nSNMPLB_RDP_OPTIONS='/cert:ignore /log-level:ERROR'\n"
                      f"SNMPLB_RDP_WINDOW_SECONDS={WINDOW_S}\n", SNMPLB_RDP_CLIENT="xfreerdp", SNMPLB_PICK=str(pick))
    log = tmp_path / "session.log"
    moved_on = (f"host 127.0.0.1: no answer within {WINDOW_S} s (the RDP client opened no window), trying "
                "127.0.0.2\n")
    with open(log, "w") as out:
        p = subprocess.Popen([str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True)
    try:
        assert wait_for(lambda: silent.received and b"Cookie: mstshash=tester" in silent.received[0], timeout=20), \
            log.read_text()
        connected = time.monotonic()
        first = _rdp_client_for(p.pid, "127.0.0.1")
        assert first is not None and not _windows_of(display, first)
        assert wait_for(lambda: moved_on in log.read_text(), timeout=WINDOW_S + 3 + 15, step=0.05), log.read_text()
        took = time.monotonic() - connected
        assert WINDOW_S - 1 <= took <= WINDOW_S + 1 + 3 + 2, took  # the bound (whole seconds), TERM, KILL 3 s on
        assert wait_for(lambda: silent.closed and silent.closed[0], timeout=5)  # the ended client's connection
        assert _rdp_client_for(p.pid, "127.0.0.1") is None
        assert len(silent.received) == 1  # tried once

        second = wait_for(lambda: _rdp_client_for(p.pid, "127.0.0.2"), timeout=10)
        assert second, log.read_text()
        assert wait_for(lambda: _windows_of(display, second), timeout=30, step=0.2), log.read_text()  # xrdp's login
        started = time.monotonic()
        time.sleep(WINDOW_S + 3 + 2)  # past the bound and the KILL grace, counted from the window (later than
        # the client's start)
        assert _rdp_client_for(p.pid, "127.0.0.2") == second and _windows_of(display, second)
        assert p.poll() is None
        text = log.read_text()
        assert "127.0.0.2: no answer" not in text and "no other server" not in text, text
        assert time.monotonic() - started >= WINDOW_S + 3

        os.kill(p.pid, signal.SIGTERM)  # the display manager ends the session
        assert p.wait(timeout=30) == 143
        assert wait_for(lambda: not _in_session(p.pid), timeout=10), _in_session(p.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        xrdp.stop()
        silent.close()
    text = log.read_text()
    assert text.index("tester: xfreerdp on 127.0.0.1 (port") < text.index(moved_on) \
        < text.index("tester: xfreerdp on 127.0.0.2 (port"), text
    assert "Terminated" not in text.splitlines()  # the shell's own line for the ended client: the log says it


def test_rdp_after_a_silent_server_ends_the_next_one_asks_for_the_password_itself(display):
    """SNMPLB_RDP_PASSWORD=login with the watchdog: the stashed password goes to the first xfreerdp, on its
    pipe, and the key is invalidated; that server never answers (the stand-in above: it has the X.224 request
    and nothing of the password, which xfreerdp sends only inside TLS, after the server's answer). The client
    is ended after the bound and the next server (the Client Info stand-in) gets the user name and no
    password. No process shows the password."""
    need("xfreerdp", "setpriv", "keyctl")
    secret = "Tr0ub4dor &3 'x' \\ $HOME"
    base = Path(tempfile.mkdtemp(prefix="snmplb-rdp-wd-"))
    server = silent = None
    try:
        base.chmod(0o755)
        (base / "certs").mkdir()
        server = FakeRdpServer(base / "certs")
        silent = SilentServer("127.0.0.2", server.port)
        session, env = _nobody_rdp(base, display, server.port, ["127.0.0.2", "127.0.0.1"])
        conf = base / "session.conf"
        conf.write_text(conf.read_text() + "SNMPLB_RDP_WINDOW_SECONDS=3\n")
        _stash_for_nobody(secret)
        p = subprocess.Popen(session, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=base, start_new_session=True)
        try:
            assert wait_for(lambda: silent.received, timeout=20)
            assert _processes_showing(secret.encode()) == []  # while the first client waits
            assert server.info_in.wait(60) and server.error is None, server.error
            assert "nobody".encode("utf-16-le") in server.info
            assert secret.encode("utf-16-le") not in server.info
            assert _as_nobody_key("search", "@u", "user", "snmplb:rdp").returncode != 0
        finally:
            server.release.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            out, err = p.communicate(timeout=60)
        text = err.decode()
        assert f"nobody: xfreerdp on 127.0.0.2 (port {server.port}), with the login's password" in text, text
        assert ("host 127.0.0.2: no answer within 3 s (the RDP client opened no window), trying 127.0.0.1\n"
                in text), text
        assert ("nobody: the login's password went to 127.0.0.2 (it is handed on once): 127.0.0.1 asks for it"
                in text), text
        assert len(silent.received) == 1 and b"Cookie: mstshash=nobody" in silent.received[0]
        for form in (secret.encode(), secret.encode("utf-16-le")):
            assert form not in silent.received[0] and form not in out + err
    finally:
        if server is not None:
            server.close()
        if silent is not None:
            silent.close()
        shutil.rmtree(base)


def test_rdp_without_a_display_xdotool_or_a_known_client_there_is_no_window_watchdog_and_the_log_says_so_once(
        display, tmp_path):
    """Where no window can be looked for, a client that opened none cannot be told from a session, so nothing
    is ended: a client running past SNMPLB_RDP_WINDOW_SECONDS (1 here) is left alone, and the log says once
    (not per server) that a silent server would not be bounded. No DISPLAY (xfreerdp itself cannot run then:
    the real one exits 1 at once), no xdotool on PATH, and a client program other than xfreerdp/xfreerdp3.
    The clients are stand-ins: one that fails at once on the first server (147, as a refused port), then
    runs 3 s and ends normally on the second."""
    tools = _tools(tmp_path, "sh", "sed", "tr", "id", "logger", "date", "sleep", "xmessage")
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in ("xfreerdp", "other-rdp"):
        (fake / name).write_text("#!/bin/sh\ncase $1 in /v:127.0.0.1) exit 147 ;; esac\nsleep 3\n")
        (fake / name).chmod(0o755)
    pick = tmp_path / "pick"
    pick.write_text("#!/bin/sh\nprintf '127.0.0.1\\n127.0.0.2\\n'\n")
    pick.chmod(0o755)
    with_xdotool = f"{fake}:{tools}:{Path(shutil.which('xdotool') or '/usr/bin/xdotool').parent}"
    cases = [({"PATH": with_xdotool, "SNMPLB_RDP_CLIENT": "xfreerdp"}, "no X display (DISPLAY is not set), so no "
              "window to wait for"),
             ({"PATH": f"{fake}:{tools}", "SNMPLB_RDP_CLIENT": "xfreerdp", "DISPLAY": display},
              "xdotool is not installed, so the RDP client's window cannot be seen"),
             ({"PATH": with_xdotool, "SNMPLB_RDP_CLIENT": "other-rdp", "DISPLAY": display},
              "other-rdp is not xfreerdp or xfreerdp3, whose window the session waits for")]
    for extra, said in cases:
        env = session_env(tmp_path, display, "SNMPLB_RDP_WINDOW_SECONDS=1\n", SNMPLB_PICK=str(pick), **extra)
        if "DISPLAY" not in extra:
            del env["DISPLAY"]
        t0 = time.monotonic()
        r = subprocess.run([str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and time.monotonic() - t0 >= 3, (extra, r.stderr)
        assert r.stderr.count(said) == 1 and r.stderr.count("without a time bound") == 1, (extra, r.stderr)
        assert "trying 127.0.0.2" in r.stderr and "no answer" not in r.stderr, (extra, r.stderr)


def test_rdp_a_client_without_a_window_that_ignores_term_is_killed_after_the_grace(display, tmp_path):
    """The watchdog's TERM, then KILL 3 s later when the client is still there. A stand-in named xfreerdp that
    ignores TERM and opens no window (real xfreerdp ends on TERM at once: the test above), on the first
    server; on the second it fails at once (147). Nothing of the session is left."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "xfreerdp").write_text("#!/bin/sh\ncase $1 in /v:127.0.0.2) exit 147 ;; esac\ntrap '' TERM\nexec sleep 60\n")
    (fake / "xfreerdp").chmod(0o755)
    pick = tmp_path / "pick"
    pick.write_text("#!/bin/sh\nprintf '127.0.0.1\\n127.0.0.2\\n'\n")
    pick.chmod(0o755)
    env = session_env(tmp_path, display, "SNMPLB_RDP_WINDOW_SECONDS=1\n", SNMPLB_PICK=str(pick),
                      SNMPLB_RDP_CLIENT="xfreerdp", PATH=f"{fake}:{os.environ['PATH']}")
    t0 = time.monotonic()
    p = subprocess.Popen([str(SESSION), "rdp"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    took = time.monotonic() - t0
    assert "host 127.0.0.1: no answer within 1 s (the RDP client opened no window), trying 127.0.0.2\n" in err, err
    assert "host 127.0.0.2: could not connect (xfreerdp exit status 147" in err, err
    assert 1 + 3 <= took < 1 + 3 + 10, took
    assert p.returncode == 147
    assert not _in_session(p.pid), _in_session(p.pid)
