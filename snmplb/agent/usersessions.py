"""Each user's sessions on this server, and how many wait for a reconnect (lbUserTable).

What a client asks (``snmplb.affinity``): "has this user a session here that a
reconnect could go back to, and does one wait for it?". The counts come from
what each login path leaves behind; docs/sessions.md says what that is, as
found on real servers (xrdp 0.9.21 with Xvnc and with xorgxrdp, x2goserver 4.1.0.3, sshd;
Debian 12).

- logind (``sessions_dir``, /run/systemd/sessions): every remote session that
  is not closing, by its USER (ssh and LDM logins, and what PAM registers for
  xrdp-sesman and X2Go's ssh); where logind is absent, utmp's (``utmp``)
  USER_PROCESS entries with a remote host. None of them waits: logind and utmp
  do not know whether a desktop's client is connected.
- xrdp (``session_proc``, /proc): each X server that xrdp-sesman started is a
  session of its owner (an ``Xvnc`` whose ``-rfbauth`` is sesman's
  ``sesman_passwd-USER@HOST:N`` file, or an ``Xorg`` run with
  ``-config xrdp/xorg.conf``). It waits when no xrdp is connected to it: no
  established TCP connection on the Xvnc's RFB port (``-rfbport``, else
  5900 + display) in /proc/net/tcp or tcp6, no connected Unix socket on
  xorgxrdp's ``xrdp_display_N`` in /proc/net/unix.
- X2Go (``x2go_db``, /var/lib/x2go/x2go_sessions, x2goserver's SQLite session
  database, readable by group x2gouser): each session in state R (running) or
  S (suspended, waiting) whose agent process is alive in ``session_proc``.

A user's sessions are the desktops (xrdp + X2Go) or the logins (logind, else
utmp), whichever are more: a desktop's own login (X2Go's ssh, xrdp-sesman's
PAM session) is not counted twice. Waiting sessions are the desktops'.

Pure parsers here; ``collect`` is the driver. The agent's sampler runs it in a
worker thread that it waits for only briefly (``Sampler``): a process table,
an NSS lookup or a database that hangs never holds up snmpd. Anything a
source cannot give (missing, unreadable, garbage) counts as nothing from it.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from snmplb import affinity
from snmplb.agent.logins import is_remote_login, read_logind_dir
from snmplb.safefile import UnsafeFile, read_bounded


@dataclass(frozen=True)
class UserSessions:
    """One user's sessions here that a reconnect could go back to, and how many of them wait for one."""

    sessions: int = 0
    waiting: int = 0


@dataclass(frozen=True)
class Sources:
    """Where ``collect`` reads; an empty path ("") turns that source off.

    logind_dir: systemd-logind's session files; utmp: the fallback where that directory is absent;
    proc: the process table (xrdp's X servers, X2Go's agents, /proc/net); x2go_db: X2Go's session database.
    """

    logind_dir: str = "/run/systemd/sessions"
    utmp: str = "/var/run/utmp"
    proc: str = "/proc"
    x2go_db: str = "/var/lib/x2go/x2go_sessions"


@dataclass(frozen=True)
class XServer:
    """An X server that xrdp-sesman started: its owner's uid, display, and how xrdp reaches it."""

    uid: int
    display: int
    kind: str  # "vnc" (Xvnc, xrdp connects over TCP to rfb_port) or "xorg" (xorgxrdp's Unix socket)
    rfb_port: int = 0


Counts = dict[str, UserSessions]

_CMDLINE_LIMIT = 16 * 1024
_STATUS_LIMIT = 16 * 1024
_NET_LIMIT = 8 << 20  # /proc/net/tcp of a busy server: ~150 bytes a socket
_MAX_PIDS = 100_000
_MAX_X2GO_ROWS = 100_000
_TCP_ESTABLISHED = "01"
_UNIX_CONNECTED = "03"
_X_SERVERS = frozenset({"Xvnc", "Xtigervnc", "Xorg"})
_UTMP = struct.Struct("<h2xi32s4s32s256shhi2i4i20s")
_USER_PROCESS = 7


def _add(out: Counts, user: str, sessions: int = 1, waiting: int = 0) -> None:
    had = out.get(user, UserSessions())
    out[user] = UserSessions(had.sessions + sessions, had.waiting + waiting)


# -- logind and utmp ----------------------------------------------------------------------------------

def from_logind(session_files: Iterable[dict[str, str]]) -> Counts:
    """Each user's remote sessions that are not closing, among parsed logind session files."""
    out: Counts = {}
    for fields in session_files:
        user = fields.get("USER", "")
        if user and is_remote_login(fields):
            _add(out, user)
    return out


def from_utmp(data: bytes) -> Counts:
    """Each user's USER_PROCESS records with a remote host in a utmp file's bytes (a torn last record
    is ignored)."""
    out: Counts = {}
    size = _UTMP.size
    for off in range(0, len(data) - size + 1, size):
        rec = _UTMP.unpack_from(data, off)
        user, host = rec[4].split(b"\0", 1)[0], rec[5].split(b"\0", 1)[0]
        if rec[0] == _USER_PROCESS and user and host:
            _add(out, user.decode("utf-8", "surrogateescape"))
    return out


# -- xrdp: the X servers that xrdp-sesman started, and whether xrdp is connected to each -------------

def parse_x_server(argv: list[str], uid: int) -> XServer | None:
    """The X server of an xrdp session from its command line (``/proc/PID/cmdline`` split at NULs),
    None for any other process: an Xvnc with sesman's password file (``sesman_passwd-``), or an Xorg
    with xrdp's config (``xrdp/xorg.conf``)."""
    if not argv or os.path.basename(argv[0]) not in _X_SERVERS:
        return None
    display = next((a[1:] for a in argv[1:] if a.startswith(":") and a[1:].isdigit() and len(a) <= 8), None)
    if display is None:
        return None
    d = int(display)
    options = dict(zip(argv[1:], argv[2:]))
    if os.path.basename(argv[0]) == "Xorg":
        if options.get("-config", "").rstrip("/").endswith("xrdp/xorg.conf"):
            return XServer(uid, d, "xorg")
        return None
    if "sesman_passwd-" not in os.path.basename(options.get("-rfbauth", "")):
        return None  # a vncserver of the user's own, not xrdp's
    port_text = options.get("-rfbport", "")
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else 5900 + d
    return XServer(uid, d, "vnc", port if 0 < port < 65536 else 5900 + d)


def status_uid(text: str) -> int | None:
    """The real uid on the ``Uid:`` line of /proc/PID/status."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            words = line.split()
            if len(words) > 1 and words[1].isdigit():
                return int(words[1])
    return None


def established_ports(text: str) -> set[int]:
    """The local ports of the established connections in /proc/net/tcp or tcp6's text."""
    out = set()
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) > 3 and words[3] == _TCP_ESTABLISHED:
            _, sep, port = words[1].rpartition(":")
            try:
                if sep:
                    out.add(int(port, 16))
            except ValueError:
                continue
    return out


def connected_unix_paths(text: str) -> set[str]:
    """The paths of the connected Unix stream sockets in /proc/net/unix's text (the server side of an
    accepted connection carries its listener's path)."""
    out = set()
    for line in text.splitlines()[1:]:
        words = line.split(maxsplit=7)
        if len(words) == 8 and words[5] == _UNIX_CONNECTED:
            out.add(words[7])
    return out


def from_x_servers(servers: Iterable[XServer], users: Callable[[int], str | None],
                   tcp_established: set[int], unix_connected: Iterable[str]) -> Counts:
    """Each user's xrdp sessions, and those whose X server has no xrdp connected (waiting)."""
    xorg_connected = set()
    for path in unix_connected:
        name = path.rsplit("/", 1)[-1]
        if name.startswith("xrdp_display_") and name[13:].isdigit():
            xorg_connected.add(int(name[13:]))
    out: Counts = {}
    for s in servers:
        user = users(s.uid)
        if not user:
            continue
        connected = s.rfb_port in tcp_established if s.kind == "vnc" else s.display in xorg_connected
        _add(out, user, 1, 0 if connected else 1)
    return out


# -- X2Go: x2goserver's session database ---------------------------------------------------------------

def from_x2go_rows(rows: Iterable[tuple[object, object, object]], alive: Callable[[int], bool]) -> Counts:
    """Each user's X2Go sessions from (uname, status, agent_pid) rows: R running, S suspended (waiting);
    a session whose agent is gone (a stale row: x2gocleansessions not running) is none."""
    out: Counts = {}
    for uname, status, pid in rows:
        if not isinstance(uname, str) or not uname or status not in ("R", "S"):
            continue
        if not isinstance(pid, int) or pid <= 0 or not alive(pid):
            continue
        _add(out, uname, 1, 1 if status == "S" else 0)
    return out


def read_x2go_rows(path: str) -> list[tuple[object, object, object]]:
    """(uname, status, agent_pid) of every session in X2Go's SQLite database, read-only, never waiting
    on a lock (a busy database raises sqlite3.Error: this sample has no X2Go figures)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(f"{path}: not a regular file")
    finally:
        os.close(fd)
    uri = "file:" + path.replace("%", "%25").replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=0, check_same_thread=False)
    try:
        cur = con.execute("SELECT uname, status, agent_pid FROM sessions LIMIT ?", (_MAX_X2GO_ROWS,))
        return list(cur.fetchall())
    finally:
        con.close()


# -- combining the sources ----------------------------------------------------------------------------

def combine(logins: Counts, desktops: Iterable[Counts]) -> Counts:
    """Per user: the desktops' sessions (xrdp + X2Go) or the logins, whichever are more, and the
    desktops' waiting ones (a desktop's own login is not a second session)."""
    desk: Counts = {}
    for counts in desktops:
        for user, c in counts.items():
            _add(desk, user, c.sessions, c.waiting)
    out: Counts = {}
    for user in set(logins) | set(desk):
        d, login = desk.get(user, UserSessions()), logins.get(user, UserSessions())
        out[user] = UserSessions(max(d.sessions, login.sessions), d.waiting)
    return out


# -- the driver -------------------------------------------------------------------------------------------

def _read_text(path: str | Path, limit: int) -> str:
    return read_bounded(path, limit, truncate=True, follow=False).decode("utf-8", "surrogateescape")


def _logins(src: Sources) -> Counts:
    if src.logind_dir and os.path.isdir(src.logind_dir):
        return from_logind(read_logind_dir(Path(src.logind_dir)))
    if src.utmp:
        try:
            return from_utmp(read_bounded(src.utmp, _UTMP.size * 65536, truncate=True, follow=False))
        except (OSError, UnsafeFile, ValueError):
            return {}
    return {}


def _x_servers(proc: str) -> tuple[list[XServer], list[str]]:
    """xrdp's X servers in the process table ``proc``, and each one's /proc/PID."""
    found, dirs = [], []
    with os.scandir(proc) as it:
        for i, entry in enumerate(it):
            if i >= _MAX_PIDS:
                break
            if not entry.name.isdigit():
                continue
            try:
                raw = read_bounded(os.path.join(entry.path, "cmdline"), _CMDLINE_LIMIT, truncate=True)
                argv = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")]
                if not argv or os.path.basename(argv[0]) not in _X_SERVERS:
                    continue
                uid = status_uid(_read_text(os.path.join(entry.path, "status"), _STATUS_LIMIT))
            except (OSError, UnsafeFile):
                continue  # gone since scandir, or hidden (hidepid)
            server = parse_x_server(argv[:64], uid) if uid is not None else None
            if server is not None:
                found.append(server)
                dirs.append(entry.path)
    return found, dirs


def _net_text(proc: str, name: str) -> str:
    try:
        return _read_text(os.path.join(proc, "net", name), _NET_LIMIT)
    except (OSError, UnsafeFile):
        return ""


class UserNames:
    """uid -> user name through NSS, remembered (a lookup may go to LDAP; the worker thread bounds it)."""

    def __init__(self, lookup: Callable[[int], str] = lambda uid: pwd.getpwuid(uid).pw_name) -> None:
        self._lookup = lookup
        self._names: dict[int, str | None] = {}

    def __call__(self, uid: int) -> str | None:
        if uid not in self._names:
            if len(self._names) > 4096:
                self._names.clear()
            try:
                self._names[uid] = self._lookup(uid)
            except (KeyError, OSError, ValueError):
                self._names[uid] = None
        return self._names[uid]


class XServerScan:
    """xrdp's X servers, found by a scan of every process at most every ``rescan`` seconds (one cmdline
    read per process: ~14 ms of CPU per 1000 processes); in between, the ones found are kept while their
    /proc/PID lives (whether xrdp is connected to them is read at every sample all the same)."""

    def __init__(self, rescan: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rescan, self._clock = rescan, clock
        self._found: dict[str, tuple[float, list[XServer], list[str]]] = {}

    def __call__(self, proc: str) -> list[XServer]:
        now = self._clock()
        got = self._found.get(proc)
        if got is not None and now - got[0] < self.rescan:
            alive = [(s, d) for s, d in zip(got[1], got[2]) if os.path.isdir(d)]
            self._found[proc] = (got[0], [s for s, _ in alive], [d for _, d in alive])
            return [s for s, _ in alive]
        servers, dirs = _x_servers(proc)
        self._found = {proc: (now, servers, dirs)}
        return servers


def _xrdp(proc: str, users: Callable[[int], str | None], scan: Callable[[str], list[XServer]] | None) -> Counts:
    servers = scan(proc) if scan is not None else _x_servers(proc)[0]
    if not servers:
        return {}
    tcp = established_ports(_net_text(proc, "tcp")) | established_ports(_net_text(proc, "tcp6"))
    unix = connected_unix_paths(_net_text(proc, "unix")) if any(s.kind == "xorg" for s in servers) else set()
    return from_x_servers(servers, users, tcp, unix)


def _x2go(src: Sources) -> Counts:
    rows = read_x2go_rows(src.x2go_db)
    if src.proc:
        return from_x2go_rows(rows, lambda pid: os.path.exists(os.path.join(src.proc, str(pid))))
    return from_x2go_rows(rows, lambda pid: True)


@dataclass(frozen=True)
class Collected:
    """One collection: each user's sessions, and one line per source that could not be read."""

    users: Counts
    problems: tuple[str, ...] = ()


def collect(sources: Sources, users: Callable[[int], str | None] | None = None,
            scan: Callable[[str], list[XServer]] | None = None) -> Collected:
    """Every user's sessions on this server from every source in ``sources`` (a source that cannot be
    read gives nothing, and a problem line unless it is simply not there). ``users`` names a uid
    (default: NSS), ``scan`` finds xrdp's X servers (default: a full scan; the agent keeps an
    ``XServerScan``). Never raises."""
    names = users or UserNames()
    problems: list[str] = []
    logins: Counts = {}
    desktops: list[Counts] = []
    try:
        logins = _logins(sources)
    except (OSError, UnsafeFile, ValueError) as exc:
        problems.append(f"logind sessions {sources.logind_dir}: {exc}")
    if sources.proc:
        try:
            desktops.append(_xrdp(sources.proc, names, scan))
        except (OSError, ValueError) as exc:
            problems.append(f"xrdp sessions in {sources.proc}: {exc}")
    if sources.x2go_db:
        try:
            desktops.append(_x2go(sources))
        except FileNotFoundError:
            pass  # no x2goserver here
        except PermissionError:
            problems.append(f"X2Go sessions: cannot read {sources.x2go_db} (the agent's user needs group x2gouser)")
        except (OSError, UnsafeFile, sqlite3.Error, ValueError) as exc:
            problems.append(f"X2Go sessions: {sources.x2go_db}: {type(exc).__name__}: {exc}")
    return Collected(combine(logins, desktops), tuple(problems))


_MAX_REMEMBERED = 64  # questions answered per table (a login asks two varbinds with one question)
HMACS_PER_SECOND = 20_000  # about a tenth of a slow server's core: 200 questions a second with 100 users


class QuestionBudget:
    """How many HMACs the agent spends on questions: ``rate`` a second, ``rate`` at once. A distinct
    question costs one per user with sessions here, and snmpd waits on every answer: anyone with the
    community could otherwise send a datagram of a thousand distinct questions and hold snmpd (every
    login's GET included) for most of a second. Past the budget a question gets no answer (the client
    decides without affinity); the budget comes back with time. Used by the answering thread only."""

    __slots__ = ("rate", "clock", "_left", "_at")

    def __init__(self, rate: float = HMACS_PER_SECOND, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self._left, self._at = rate, clock()

    def spend(self, hmacs: int) -> bool:
        """Whether ``hmacs`` may be spent now (then they are)."""
        now = self.clock()
        self._left, self._at = min(self.rate, self._left + (now - self._at) * self.rate), now
        if hmacs > self._left:
            return False
        self._left -= hmacs
        return True


class Answers:
    """The answers of one sample: the site key and each user's sessions. Immutable once built, apart
    from a small memo of questions already matched (a GET carries the same question twice) and the
    agent's ``budget`` for them (shared by the samples' answers; None: unbounded)."""

    __slots__ = ("key", "users", "budget", "_memo", "_keyed")

    def __init__(self, key: bytes, users: dict[str, UserSessions], budget: QuestionBudget | None = None) -> None:
        self.key, self.users, self.budget = key, users, budget
        self._keyed = affinity.Keyed(key)  # the key's padded blocks hashed once per sample, not per user
        self._memo: dict[bytes, UserSessions] = {}

    def answer(self, column: str, asked: bytes) -> int | None:
        """lbUserSessions or lbUserWaiting (``column``) for the question ``asked``: 0 for no user of ours;
        None (no answer) past the budget."""
        found = self._memo.get(asked)
        if found is None:
            if self.budget is not None and not self.budget.spend(max(1, len(self.users))):
                return None
            user = affinity.who(self._keyed, asked, self.users)
            found = self.users[user] if user is not None else UserSessions()
            if len(self._memo) >= _MAX_REMEMBERED:
                self._memo.clear()
            self._memo[asked] = found
        return found.sessions if column == affinity.SESSIONS.name else found.waiting
