"""get_hosts: LDM runs it in the thin client to choose the application server.

Prints ONE line on stdout, host names separated by single spaces, the chosen
server first, then the other usable ones in preference order, and exits 0.
Never fails a login: bad settings are reported and defaults used, and on
any unexpected error the configured servers are printed in configured order.
Problems go to stderr and syslog; nothing else ever reaches stdout.

Kept small on purpose: it runs on weak thin clients at every login, so it
imports only what the poll needs (no pysnmp, no MIB loading).
"""

from __future__ import annotations

import os
import sys
import syslog  # at the top, not in the error path: with no file descriptor left, an import there fails

from snmplb.client.deadline import login_deadline
from snmplb.client.driver import select, selection_for
from snmplb.client.sources import configured_hosts, load

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    from collections.abc import Iterable, Mapping

    from snmplb.client.selection import Drift
    from snmplb.client.serverstate import ServerState

IDENT = "snmplb-get_hosts"
STATE_DIR = "/run/snmplb"  # what get_hosts remembers between logins (root's, on the thin client's tmpfs)
STATE_DIR_VARIABLE = "SNMPLB_STATE_DIR"  # names another directory (tests)
DRIFT_STATE = "get_hosts-drift"  # the LB_SAMPLE_WEIGHTS finding last said (selection.Drift.news)
MAX_STATE = 256 * 1024  # bytes read back from it


def report(message: str, level: str = "warning") -> None:
    """To stderr and syslog; never raises (a login must not fail on its own report).
    Messages never carry secrets (the settings parser never echoes them)."""
    try:
        syslog.openlog(IDENT, 0, syslog.LOG_USER)
        syslog.syslog(syslog.LOG_WARNING if level == "warning" else syslog.LOG_INFO, message)
    except Exception:  # an outer edge of its own: no syslog is no reason to fail a login
        pass
    if level == "warning":
        try:
            sys.stderr.write(f"get_hosts: {message}\n")
        except Exception:
            pass


def run(env: Mapping[str, str]) -> str:
    """The line to print for LDM."""
    settings, problems = load(env)
    deadline = login_deadline(settings.timeout_ms, env)
    for p in problems:
        report(p)
    if not settings.servers:
        return ""
    result, _choice, why = select(selection_for(settings), deadline=deadline)
    servers, decision = result.states, result.decision
    for p in (why, *result.problems):
        if p and not (result.drift is not None and p == result.drift.problem and said_before(result.drift, env)):
            report(p)
    failed = _grouped(servers)
    if not any(s.ok for s in servers):
        report("no server answered; " + "; ".join(failed))
    else:
        report(decision.note + "".join(f"; {f}" for f in failed), level="info")
    if decision.hosts and not result.usable:
        report(f"listing the configured servers: {decision.note}", level="info")
    return " ".join(decision.hosts)


def _grouped(servers: Iterable[ServerState]) -> list[str]:
    """The failed servers, those with the same reason in one entry: ``a:161, b:161: reason``."""
    by_reason: dict[str, list[str]] = {}
    for s in servers:
        if not s.ok:
            by_reason.setdefault(s.reason, []).append(f"{s.name}:{s.port}")
    return [f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()]


def said_before(drift: Drift, env: Mapping[str, str]) -> bool:
    """Whether an earlier login already said this LB_SAMPLE_WEIGHTS finding (``Drift.news`` decides what
    is news), keeping what this one saw in STATE_DIR/DRIFT_STATE ($SNMPLB_STATE_DIR names another
    directory). A one-shot process at every login remembers nothing else: without this, the same warning
    would reach the log at most logins of a fleet with missing entries.

    The state is trusted only where nobody but this user could have written it: the directory is created
    0755 if missing, and both it and the file (0600, opened without following a symbolic link) must be
    this user's own (root's, as LDM runs get_hosts), neither writable by anyone else, the file a plain
    file with one link. Whenever that does not hold, or anything fails, the answer is False: the finding
    is said again, as at every login before.
    """
    directory = env.get(STATE_DIR_VARIABLE) or STATE_DIR
    try:
        fd = _state_file(directory, DRIFT_STATE)
    except OSError:
        return False
    if fd is None:
        return False
    try:
        kept = os.read(fd, MAX_STATE).decode("ascii", "replace")
        news, keep = drift.news(kept)
        if keep != kept:
            os.ftruncate(fd, 0)
            os.pwrite(fd, keep.encode("ascii"), 0)
        return not news
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)


def _state_file(directory: str, name: str) -> int | None:
    """A read-write descriptor of ``directory``/``name``, created 0600 if missing, or None when either
    is not this user's own and private (``said_before``'s rule)."""
    import stat

    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        pass
    uid = os.geteuid()
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(dfd)
        if st.st_uid != uid or st.st_mode & 0o022:
            return None
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                     dir_fd=dfd)
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022 or st.st_nlink != 1:
        os.close(fd)
        return None
    return fd


def main() -> int:
    """get_hosts: whatever happens, ONE line on stdout (possibly empty) and exit status 0."""
    env = os.environ
    try:
        import warnings

        warnings.simplefilter("ignore")
        line = run(env)
    except Exception as exc:  # the outer edge: a login must not fail on our bug
        # Only the exception's type: its text may quote a setting's value, and some of those are secrets.
        report(f"internal error ({type(exc).__name__}); listing the configured servers")
        try:
            line = configured_hosts(env)
        except Exception:
            line = ""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except Exception:
        pass  # nobody to tell: stdout itself is gone
    return 0


def main_and_exit() -> None:
    """main(), then exit without the interpreter's clean-up: a one-shot process at every login
    has nothing to clean up, and skipping it saves a few ms on a thin client."""
    code = main()
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
