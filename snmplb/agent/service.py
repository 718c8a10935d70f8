"""snmplb-agent: the pass_persist script that serves SNMPLB-MIB to snmpd.

snmpd starts it at the first request under the MIB's root and talks to it
over stdin/stdout. This module is the thin driver: it owns stdin and stdout,
runs a sampler thread that rebuilds an in-memory table every ``interval``
seconds, and hands each input line to the pure ``passpersist.Protocol``.

Two rules hold everywhere here because snmpd reads stdout as the protocol and
joins stderr to it: nothing but protocol is ever written to stdout, and
nothing at all to stderr (fd 2 is pointed at /dev/null before anything else
runs; problems go to syslog or the configured log file).
"""

from __future__ import annotations

import argparse
import collections
import io
import logging
import logging.handlers
import os
import select
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

from snmplb.agent import config as agentconf
from snmplb import mib
from snmplb.kvfile import field_docs
from snmplb.adminfile import UNREADABLE, AdminReading, AdminSettings, problem_line, read_admin, settle
from snmplb.agent.config import AgentConfig
from snmplb.errors import ConfigError
from snmplb.agent.loginpaths import PathChecker, assess
from snmplb.agent.passpersist import PONG, Entry, Protocol, Table
from snmplb.agent.procfs import ProcError, ProcSample, read_proc, swap_rates
from snmplb.safefile import TimedRead
from snmplb import affinity
from snmplb.agent.logins import SessionCount, count_sessions
from snmplb.agent.usersessions import (Answers, QuestionBudget, Sources, UserNames, UserSessions, XServerScan,
                                       collect as collect_user_sessions)
from snmplb.agent.values import DataAge, Row, compute_values
from snmplb.agent.tcpconns import Connecting, LoginRate, read_ssh

LINE_LIMIT = 4096
SPIN_AFTER_PONG = 0.0002
_OVERLONG = "\0overlong"  # fed in place of a line cut at LINE_LIMIT: never a command or an OID
log = logging.getLogger("snmplb.agent.service")


class LogLimiter:
    """Which problem lines to log: each distinct one at most once per ``period`` seconds, and at most
    ``burst`` lines per ``window`` seconds in all, then one line counting the ones held back.

    Bounded in memory (the ``memory`` most recent distinct messages, least recently seen forgotten
    first) and in output (``burst`` + 1 lines per window), however many distinct problems a broken
    file or a hostile path produces. Pure: the caller passes the time.
    """

    def __init__(self, period: float = 300.0, window: float = 60.0, burst: int = 10, memory: int = 256) -> None:
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._period, self._window, self._burst, self._memory = period, window, burst, memory
        self._window_start: float | None = None
        self._count = 0
        self._held = 0

    def admit(self, message: str, now: float) -> list[str]:
        """The lines to log for ``message`` seen at ``now`` (maybe a count of held-back ones first)."""
        out = self.flush(now)
        last = self._seen.get(message)
        if last is not None and now - last < self._period:
            self._seen.move_to_end(message)
            return out
        self._seen[message] = now
        self._seen.move_to_end(message)
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        if self._count >= self._burst:
            self._held += 1
            return out
        self._count += 1
        return out + [message]

    def flush(self, now: float) -> list[str]:
        """At a window's end: the line counting the problems held back in it, if any."""
        if self._window_start is None:
            self._window_start = now
        if now - self._window_start < self._window:
            return []
        held, self._held, self._count, self._window_start = self._held, 0, 0, now
        return [f"{held} more problems not logged in the last {self._window:.0f} s"] if held else []


class AdminWatch:
    """The admin file as the sampler sees it: read in a worker, waited for at most ``timeout`` seconds.

    A read that hangs (a dead NFS server) never holds up the sampler or the first answer: the last
    good settings stay meanwhile, and at most one read is outstanding. Problems follow the rules of
    ``adminfile.settle``; a file removed or emptied (``AdminReading.blank``) after it said something
    else than the defaults is a problem too: the last good settings stay until it is written again.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._reader = TimedRead(lambda: read_admin(path), timeout)
        self._last_good: AdminSettings | None = None
        self.problem = ""

    def update(self) -> tuple[AdminSettings, str, str]:
        """(the settings to publish, the problem line or "", a line to log when the problem changed)."""
        done, reading = self._reader.poll()
        if not done:
            reading = AdminReading(UNREADABLE, (f"{self.path}: reading it takes longer than {self.timeout:g} s "
                                                "(a hung network file system?)",))
        elif reading is None:
            reading = AdminReading(UNREADABLE, (f"{self.path}: could not be read",))
        elif reading.blank and self._last_good not in (None, AdminSettings()):
            # Gone or emptied after it said something else than the defaults (a mistaken rm, a config
            # manager, `: > admin.conf`, a save that failed on a full disk): the defaults would put a
            # drained or disabled server back in rotation.
            what = "removed" if reading.missing else "emptied (it sets nothing)"
            reading = AdminReading(UNREADABLE, (f"{self.path}: {what} after it was read; write it again with "
                                                "snmplb-admin (the last good settings stay meanwhile)",))
        settings, self._last_good = settle(self._last_good, reading)
        problem = problem_line(reading)
        note = ""
        if problem != self.problem:
            if problem:
                kept = "kept the last good settings" if self._last_good is not None else "no good reading yet"
                note = f"admin file problem: {problem}; {kept}: state {settings.state}, weight {settings.weight}"
            else:
                note = f"admin file {self.path} is good again"
        self.problem = problem
        return settings, problem, note


class UserSessionWatch:
    """Each user's sessions (``usersessions.collect``), read in a worker and waited for at most ``timeout``
    seconds: a process table, an NSS lookup or a database that hangs never holds up the sampler. Meanwhile
    the last reading stays (at most one read outstanding)."""

    def __init__(self, sources: Sources, timeout: float) -> None:
        self.sources, self.timeout = sources, timeout
        names, scan = UserNames(), XServerScan()
        self._reader = TimedRead(lambda: collect_user_sessions(sources, names, scan), timeout)
        self.users: dict[str, UserSessions] = {}

    def update(self) -> tuple[dict[str, UserSessions], list[str]]:
        """(each user's sessions to answer with, problem lines to log)."""
        done, got = self._reader.poll()
        if not done:
            return self.users, [f"reading user sessions takes longer than {self.timeout:g} s; "
                                "the last reading stays"]
        if got is None:
            return self.users, ["reading user sessions failed; the last reading stays"]
        self.users = got.users
        return self.users, list(got.problems)


def build_table(values: dict[str, int | str | DataAge | Row], users: Answers | None = None) -> Table:
    """The pass_persist table of the MIB's objects from their values by name, and the answers to
    lbUserTable's questions (``users``; None: no site key)."""
    return Table((Entry(o.instance, o.pass_type, values[o.name]) for o in mib.OBJECTS), users)


class Sampler:
    """Keeps the current table fresh: samples /proc, sessions and the admin file."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._history: collections.deque[ProcSample] = collections.deque(
            maxlen=max(2, int(config.rate_window / config.interval) + 2))
        self._limiter = LogLimiter()
        self._admin = AdminWatch(config.admin_file, min(max(config.interval, 0.5), 1.0))
        self._stop = threading.Event()
        self._logins = LoginRate()
        self._connecting = Connecting()
        self._paths = PathChecker(config.login_paths.split())  # statvfs off this thread: NFS may hang
        self._user_sessions = UserSessionWatch(
            Sources(logind_dir=str(config.sessions_dir), utmp=str(config.utmp), proc=config.session_proc,
                    x2go_db=config.x2go_db), min(max(config.interval, 0.2), 0.5))
        self._question_budget = QuestionBudget()  # the questions' HMACs, over every sample's answers
        # lbSessions' count, read in a worker too: a sessions_dir or utmp on a hung mount never stops sampling.
        self._session_count = TimedRead(lambda: count_sessions(config.sessions_dir, config.utmp),
                                        min(max(config.interval, 0.2), 0.5))
        self._last_count = SessionCount(0, 0, "none")
        self.table = Table(())  # replaced whole, never mutated: readers need no lock

    def warn(self, message: str, exc_info: bool = False) -> None:
        for line in self._limiter.admit(message, time.monotonic()):
            log.warning("%s", line, exc_info=exc_info and line == message)

    def sample(self) -> None:
        """Take one sample and replace the table; on error keep the last table (its age grows)."""
        cfg = self.config
        for line in self._limiter.flush(time.monotonic()):
            log.warning("%s", line)
        try:
            proc = read_proc(cfg.proc_root, time.monotonic())
        except ProcError as exc:
            self.warn(f"cannot read load figures: {exc}")
            return
        self._history.append(proc)
        admin, admin_problem, note = self._admin.update()
        if note:
            self.warn(note)
        done, counted = self._session_count.poll()
        if done and counted is not None:
            self._last_count = counted
        elif not done:
            self.warn(f"counting sessions in {cfg.sessions_dir} or {cfg.utmp} takes longer than "
                      f"{self._session_count.timeout:g} s; the last count stays")
        sessions = self._last_count
        rates = swap_rates(self._history, cfg.rate_window)
        conns, listening = read_ssh(cfg.proc_root, cfg.ssh_port)
        login_rate = self._logins.update(proc.taken_at, conns)
        connecting = self._connecting.update(proc.taken_at, conns, sessions.ids)
        paths = assess(self._paths, cfg.space_policy)
        if listening is False:
            self.warn(f"cannot take a login: nothing listens on ssh port {cfg.ssh_port}")
        if paths.state != "usable":
            self.warn(f"cannot take a login: login path {paths.path} is {paths.state}")
        self.table = build_table(compute_values(proc, rates, sessions, admin, cfg.policy, time.time(),
                                                len(conns or ()), login_rate, self._logins.span(proc.taken_at),
                                                connecting, listening, paths, admin_problem),
                                 self._user_answers())

    def _user_answers(self) -> Answers | None:
        """This sample's answers to lbUserTable's questions: None (every question NONE) without a usable
        site key (affinity_key_file; read at every sample, so that a new key is taken at once)."""
        cfg = self.config
        key, problem = affinity.read_key(cfg.affinity_key_file, "affinity_key_file", agent=True)
        if problem:
            self.warn(problem)
        if key is None:
            return None
        users, problems = self._user_sessions.update()
        for p in problems:
            self.warn(p)
        last = self.table.users
        if last is not None and last.key == key and last.users == users:
            # The same answers: kept whole, memo included. snmpd asks one varbind at a time, and a
            # question's lbUserWaiting may come after a new sample than its lbUserSessions.
            return last
        return Answers(key, users, self._question_budget)

    def guarded_sample(self) -> None:
        """``sample``, with any failure logged (rate-limited) and the last table kept."""
        try:
            self.sample()
        except Exception as exc:  # the sampler's outer edge: log and keep sampling
            self.warn(f"sampling failed: {type(exc).__name__}: {exc}", exc_info=True)

    def run(self) -> None:
        """Sample every ``interval`` seconds until stopped (the thread's body)."""
        while not self._stop.wait(self.config.interval):
            self.guarded_sample()

    def start(self) -> None:
        """The first sample (before the first answer, so that it has values), then the thread."""
        self.guarded_sample()
        threading.Thread(target=self.run, name="sampler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def _read_lines(stream: BinaryIO) -> Iterator[str]:
    """Yield input lines as text; a line over LINE_LIMIT is consumed whole and yields a marker."""
    while True:
        raw = stream.readline(LINE_LIMIT)
        if not raw:
            return
        if not raw.endswith(b"\n") and len(raw) >= LINE_LIMIT:
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(LINE_LIMIT)
            yield _OVERLONG
            continue
        yield raw.decode("ascii", "replace").rstrip("\r\n")


def _await_request(fd: int, poller: select.poll, budget: float) -> None:
    """Poll ``fd`` without sleeping for at most ``budget`` seconds.

    snmpd sends every request right after it reads our PONG. Sleeping in
    read() until then costs a process wake-up (~50 us here), which is most of
    a request's cost; polling for the few microseconds snmpd takes saves it.
    Bounded: after ``budget`` the caller blocks in read() as usual.
    """
    end = time.perf_counter() + budget
    while not poller.poll(0) and time.perf_counter() < end:
        os.sched_yield()  # let snmpd (or anyone) run on this CPU: busy machines must not lose by the spin


def serve(stdin: BinaryIO, stdout: BinaryIO, sampler: Sampler, spin: float = SPIN_AFTER_PONG) -> None:
    """Answer requests from ``stdin`` until EOF."""
    protocol = Protocol()
    poller = None
    if spin > 0:
        try:
            poller = select.poll()
            poller.register(stdin.fileno(), select.POLLIN)
        except (OSError, ValueError, io.UnsupportedOperation):
            poller = None  # not a real file (tests feed a BytesIO)
    for line in _read_lines(stdin):
        out = protocol.feed(line, sampler.table, time.monotonic())
        if out:
            stdout.write(out.encode("ascii", "replace"))
            stdout.flush()
            if poller is not None and out == PONG:
                _await_request(stdin.fileno(), poller, spin)


def _silence_stderr() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(os.devnull, "w")
    warnings.simplefilter("ignore")


def _setup_logging(log_file: str) -> None:
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s snmplb-agent[%(process)d]: %(message)s"))
    else:
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility="daemon")
        handler.setFormatter(logging.Formatter("snmplb-agent[%(process)d]: %(message)s"))
    logging.raiseExceptions = False  # a broken log target must not write to stderr
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised as ConfigError (its own way writes them to stderr, which
    is /dev/null here, and exits: snmpd's pass_persist line would fail without a word anywhere)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _setting_help() -> dict[str, str]:
    """Each setting's words from AgentConfig's docstring, its one description (``kvfile.field_docs``)."""
    docs = field_docs(AgentConfig)
    return {key: docs[key] for key in agentconf.KEYS if key in docs}


def _option_help() -> dict[str, str]:
    """Each option's help: its setting's words (``_setting_help``) with the default said as the manual page
    says it, "(default /proc)." (the docstring's "(/proc).")."""
    helps = _setting_help()
    for field in agentconf.FIELDS:
        default = str(field.default)
        if default:
            words = helps[field.name].removesuffix(f" ({default}).").removesuffix(f" ({default})")
            helps[field.name] = f"{words} (default {default})."
    return helps


def _parser() -> _Parser:
    ap = _Parser(prog="snmplb-agent", description="pass_persist agent for SNMPLB-MIB, run by snmpd from its "
                 "pass_persist line: it speaks the protocol on stdin and stdout, and logs to syslog (or log_file).",
                 epilog="Each option is also a key = value line of the --config file, its name without the "
                 "dashes and with _ for - (proc_root = /proc); the command line wins. A bad value is logged, and "
                 "the one in force (the file's, else the default) stays.")
    ap.add_argument("--config", type=Path, default=None, metavar="FILE",
                    help=f"key = value file of these settings (default {agentconf.DEFAULT_CONFIG} if present)")
    helps = _option_help()
    for field in agentconf.FIELDS:
        ap.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default=None, metavar="VALUE",
                        help=helps[field.name].replace("%", "%%"))
    return ap


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _terminal() -> int | None:
    """A copy of stderr when it is a terminal (a person trying the agent by hand; snmpd never gives it one),
    taken before stderr is silenced: what is wrong with the command line is said there too."""
    try:
        return os.dup(2) if os.isatty(2) else None
    except OSError:
        return None


def _tell(terminal: int | None, text: str) -> None:
    if terminal is not None:
        try:
            os.write(terminal, text.encode(errors="replace"))
        except OSError:
            pass


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a command line argparse refused (the last wins)."""
    value = None
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif word.startswith(name + "="):
            value = word[len(name) + 1:]
    return value


def _log_bad_command_line(argv: list[str], message: str) -> None:
    """Log a refused command line where the agent would have logged: ``--log-file`` if the line names one,
    else the configuration's ``log_file`` (``--config``, or the default file), else syslog."""
    log_file = _option(argv, "--log-file")
    if log_file is None:
        config_path = _option(argv, "--config")
        config, _ = agentconf.load(Path(config_path) if config_path else agentconf.DEFAULT_CONFIG, {})
        log_file = config.log_file
    try:
        _setup_logging(log_file)
    except OSError:
        _setup_logging("")
    shown = message if len(message) <= 300 else message[:300] + "..."
    log.error("not started: bad command line (the pass_persist line in snmpd.conf?): %s", shown)


def main(argv: list[str] | None = None) -> int:
    terminal = _terminal()
    _silence_stderr()
    try:
        args = _parse_args(argv)
    except ConfigError as exc:
        _log_bad_command_line(list(sys.argv[1:] if argv is None else argv), str(exc))
        _tell(terminal, f"{_parser().format_usage()}snmplb-agent: error: {exc} (not started; see --help)\n")
        return 2
    except SystemExit as exc:  # --help (printed on stdout: for a person at a terminal, never snmpd)
        return 0 if exc.code in (0, None) else 2
    overrides = {k: getattr(args, k) for k in agentconf.KEYS if getattr(args, k) is not None}
    config, problems = agentconf.load(args.config or agentconf.DEFAULT_CONFIG, overrides)
    for p in problems:
        _tell(terminal, f"snmplb-agent: {p}\n")
    if terminal is not None:
        os.close(terminal)
    try:
        _setup_logging(config.log_file)
    except OSError:
        _setup_logging("")
    sampler = Sampler(config)
    for p in problems:
        sampler.warn(p)
    try:
        sampler.start()
        serve(sys.stdin.buffer, sys.stdout.buffer, sampler)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    except Exception:  # the outer edge: never a traceback on stderr
        log.exception("agent stopped on an unexpected error")
        return 1
    finally:
        sampler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
