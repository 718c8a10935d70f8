"""Whether the paths a login writes to can take one: free space and inodes, checked in the background.

A login writes to /home (.Xauthority, .xsession-errors, the desktop's caches)
and to /tmp (X and ssh-agent sockets). When either is full the login fails
although the server's load looks perfect, so the agent publishes the figures
and folds a verdict into lbStatus (SNMPLB-MIB, lbLoginPathStatus).

statvfs() on a hung network filesystem (NFS with ``hard``, a dead FUSE
daemon) blocks in the kernel, possibly for ever. So it never runs on the
sampler's thread: ``PathChecker`` gives each path at most one worker thread at
a time, and the sampler only reads what the workers last reported. A check
outstanding for longer than the timeout makes the path ``notResponding``; no
second worker is started for that path until the first returns, so a hung
mount costs one blocked thread, not one per sample.

``judge`` and ``summarize`` are pure; ``PathChecker`` is the thin driver.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MIB = 1 << 20
_GAUGE_MAX = 2**32 - 1
SETTLE = 0.1  # how long one sample waits for the checks it just started (a local statvfs takes microseconds)


@dataclass(frozen=True)
class SpacePolicy:
    """Thresholds of lbLoginPathStatus (the agent's config can change them).

    min_free_mb: MiB available to ordinary users below which a path is lowSpace (100; 0: no check).
    min_free_inodes_percent: free inodes, in percent of the filesystem's, below which a path is
        lowInodes (1; 0: no check).
    timeout: seconds after which an outstanding statvfs makes its path notResponding (3).
    """

    min_free_mb: int = 100
    min_free_inodes_percent: int = 1
    timeout: float = 3.0


@dataclass(frozen=True)
class SpaceFigures:
    """One statvfs() result: bytes and inodes available to ordinary users, and the totals."""

    free_bytes: int
    total_bytes: int
    free_inodes: int
    total_inodes: int

    @classmethod
    def from_statvfs(cls, st: os.statvfs_result) -> SpaceFigures:
        # f_bavail/f_favail, not f_bfree/f_ffree: the root-reserved part is not available to the user
        # whose login writes there.
        return cls(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, st.f_favail, st.f_files)

    @property
    def free_mb(self) -> int:
        return self.free_bytes // MIB

    @property
    def free_inodes_percent(self) -> int:
        """Rounded down; 100 where the filesystem has no inode limit (f_files 0: btrfs, many FUSE)."""
        if self.total_inodes <= 0:
            return 100
        return max(0, min(100, self.free_inodes * 100 // self.total_inodes))


@dataclass(frozen=True)
class Outcome:
    """What the driver knows about one path now.

    figures: the last statvfs() that succeeded (None: none yet, or the last one failed).
    error: why the last statvfs() failed ("" if it did not).
    pending_for: seconds the outstanding statvfs() has been running (None: none outstanding).
    """

    figures: SpaceFigures | None = None
    error: str = ""
    pending_for: float | None = None


@dataclass(frozen=True)
class PathVerdict:
    """One path judged: state is a label of lbLoginPathStatus, problem says why ("" when usable)."""

    path: str
    state: str
    figures: SpaceFigures | None = None
    problem: str = ""


@dataclass(frozen=True)
class LoginPaths:
    """The objects the MIB publishes for all login paths together."""

    state: str = "usable"
    free_mb: int = _GAUGE_MAX
    free_inodes_percent: int = 100
    problem: str = ""
    path: str = ""  # the path the state is about ("" when usable)


def judge(path: str, outcome: Outcome, policy: SpacePolicy) -> PathVerdict:
    """The rules of lbLoginPathStatus for one path."""
    if outcome.pending_for is not None and outcome.pending_for >= policy.timeout:
        return PathVerdict(path, "notResponding", None,
                           f"{path}: statvfs has not returned for {int(outcome.pending_for)} s")
    if outcome.error:
        return PathVerdict(path, "error", None, f"{path}: {outcome.error}")
    f = outcome.figures
    if f is None:
        return PathVerdict(path, "usable")  # not checked yet: unknown is not down
    # A filesystem reporting no blocks (no inodes) at all, like an autofs mount point, has no such limit.
    if f.total_bytes > 0 and f.free_bytes < policy.min_free_mb * MIB:
        return PathVerdict(path, "lowSpace", f, f"{path}: {f.free_mb} MiB free, below {policy.min_free_mb} MiB")
    if f.total_inodes > 0 and f.free_inodes * 100 < policy.min_free_inodes_percent * f.total_inodes:
        return PathVerdict(path, "lowInodes", f, f"{path}: {f.free_inodes} of {f.total_inodes} inodes free, "
                                                 f"below {policy.min_free_inodes_percent}%")
    return PathVerdict(path, "usable", f)


def summarize(verdicts: Sequence[PathVerdict]) -> LoginPaths:
    """The first path (in configured order) that cannot take a login decides; figures are the least."""
    measured = [v.figures for v in verdicts if v.figures is not None]
    bad = next((v for v in verdicts if v.state != "usable"), None)
    return LoginPaths(
        state=bad.state if bad else "usable",
        free_mb=min((f.free_mb for f in measured), default=_GAUGE_MAX),
        free_inodes_percent=min((f.free_inodes_percent for f in measured), default=100),
        problem=bad.problem[:255] if bad else "",
        path=bad.path if bad else "",
    )


@dataclass
class _Slot:
    """One path's mutable state, guarded by PathChecker._lock."""

    started: float | None = None
    figures: SpaceFigures | None = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class PathChecker:
    """statvfs() of each path in a background worker: at most one outstanding per path, never waited on
    for longer than ``settle`` seconds per call.

    ``statvfs`` and ``clock`` are the system's by default; they are parameters so that the driver can
    run where a filesystem cannot be mounted (the tests use real ones: a tmpfs and a FUSE mount).
    """

    def __init__(self, paths: Sequence[str], settle: float = SETTLE,
                 statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = tuple(dict.fromkeys(paths))
        self._settle = settle
        self._statvfs = statvfs
        self._clock = clock
        self._lock = threading.Lock()
        self._slots = {p: _Slot() for p in self.paths}

    def check(self) -> list[Outcome]:
        """Start a check of every path that has none outstanding, wait briefly for those, and report."""
        started = []
        with self._lock:
            for path, slot in self._slots.items():
                if slot.started is None:
                    slot.started = self._clock()
                    slot.done = threading.Event()
                    started.append((path, slot.done))
        for path, _ in started:
            try:
                threading.Thread(target=self._work, args=(path,), name=f"statvfs {path}", daemon=True).start()
            except RuntimeError as exc:  # no thread to be had: report it, try again next sample
                self._finish(path, None, f"cannot start a check ({exc})")
        end = self._clock() + self._settle
        for _, done in started:
            done.wait(max(0.0, end - self._clock()))
        now = self._clock()
        with self._lock:
            return [Outcome(s.figures, s.error, None if s.started is None else now - s.started)
                    for s in self._slots.values()]

    def _work(self, path: str) -> None:
        try:
            figures, error = SpaceFigures.from_statvfs(self._statvfs(path)), ""
        except OSError as exc:
            figures, error = None, exc.strerror or type(exc).__name__
        except Exception as exc:  # the worker thread's outer edge: a failure is a verdict, not a crash
            figures, error = None, type(exc).__name__
        self._finish(path, figures, error)

    def _finish(self, path: str, figures: SpaceFigures | None, error: str) -> None:
        with self._lock:
            slot = self._slots[path]
            slot.figures, slot.error, slot.started = figures, error, None
            slot.done.set()


def assess(checker: PathChecker, policy: SpacePolicy) -> LoginPaths:
    """One sample of every login path, judged and summed up."""
    return summarize([judge(p, o, policy) for p, o in zip(checker.paths, checker.check())])
