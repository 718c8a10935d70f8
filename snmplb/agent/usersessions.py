"""Each user's sessions on this server, and how many wait for a reconnect (lbUserTable).

What a client asks (``snmplb.affinity``): "has this user a session here that a
reconnect could go back to, and does one wait for it?". The counts come from
what each login path leaves behind; docs/sessions.md says what that is, as
found on real servers.

- logind (/run/systemd/sessions): every remote session that is not closing,
  by its USER (ssh and LDM logins, xrdp-sesman's sessions).

Pure parsers here, the driver is ``collect``; the agent's sampler calls it once
per sample, and ``Answers`` answers the questions from its result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from snmplb import affinity
from snmplb.agent.logins import is_remote_login, read_logind_dir


@dataclass(frozen=True)
class UserSessions:
    """One user's sessions here that a reconnect could go back to, and how many of them wait for one."""

    sessions: int = 0
    waiting: int = 0


def from_logind(session_files: Iterable[dict[str, str]]) -> dict[str, UserSessions]:
    """Each user's remote sessions that are not closing, among parsed logind session files."""
    out: dict[str, UserSessions] = {}
    for fields in session_files:
        user = fields.get("USER", "")
        if user and is_remote_login(fields):
            had = out.get(user, UserSessions())
            out[user] = UserSessions(had.sessions + 1, had.waiting)
    return out


def collect(logind_dir: Path) -> dict[str, UserSessions]:
    """Every user's sessions on this server (empty when nothing can be read)."""
    if not logind_dir.is_dir():
        return {}
    try:
        return from_logind(read_logind_dir(logind_dir))
    except OSError:
        return {}


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
