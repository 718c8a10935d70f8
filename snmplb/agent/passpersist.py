"""The pass_persist protocol of net-snmp's snmpd, as a pure state machine.

snmpd writes requests to the script's stdin one line at a time (snmpd.conf(5)):
``PING`` (answer ``PONG``), ``get`` + OID, ``getnext`` + OID, ``set`` + OID +
``TYPE VALUE``. An answer is three lines ``OID``, ``TYPE``, ``VALUE`` or the
single line ``NONE``. snmpd waits for each answer with a blocking read and no
timeout, so this machine never waits for anything but its next input line,
and it answers every request exactly once.

Robustness rules (garbage must never kill or desynchronise the agent):
- empty lines are ignored (Debian's snmpd sends some);
- an unknown command line is skipped without an answer (snmpd never sends
  one, so answering would put an extra line in front of a real answer);
- a get/getnext whose OID line is not a numeric OID is answered ``NONE``;
- when a command word arrives where an argument was due, the pending request
  is answered (``NONE`` or ``not-writable``) and the new command starts: the
  stream resynchronises on the next command;
- set is always answered ``not-writable``: the MIB is read-only.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from snmplb import affinity
from snmplb.mib import Oid, oid_str, parse_oid
from snmplb.agent.values import Dynamic, DataAge, Row

TYPE_CHECKING = False
if TYPE_CHECKING:
    from snmplb.agent.usersessions import Answers

_COMMANDS = frozenset({"ping", "get", "getnext", "set"})
NONE = "NONE\n"
NOT_WRITABLE = "not-writable\n"
PONG = "PONG\n"


@dataclass(frozen=True)
class Entry:
    """One instance served: its OID, pass_persist type word and value."""

    oid: Oid
    type: str
    value: int | str | DataAge | Row


class Table:
    """An immutable, OID-ordered set of entries with get and getnext.

    Answers of static entries are rendered once here, when the sampler builds
    the table, not at every request: snmpd waits on each answer.

    ``users``: the answers to lbUserTable's questions (None: no site key, every question is
    answered NONE). A question is only ever answered to a get: getnext never lists one.
    """

    def __init__(self, entries: Iterable[Entry], users: Answers | None = None) -> None:
        self.users = users
        ordered = sorted(entries, key=lambda e: e.oid)
        self._entries = tuple(ordered)
        self._oids = [e.oid for e in ordered]
        self._by_oid = {e.oid: e for e in ordered}
        self._by_text = {oid_str(e.oid): e for e in ordered}
        self._static = {e.oid: render(e, 0.0) for e in ordered if not isinstance(e.value, Dynamic)}

    def get(self, oid: Oid) -> Entry | None:
        entry = self._by_oid.get(oid)
        if entry is None and self.users is not None:
            asked = affinity.parse_instance(oid)
            answer = None if asked is None else self.users.answer(*asked)
            if answer is not None:
                return Entry(oid, "gauge", answer)
        return entry

    def get_text(self, text: str) -> Entry | None:
        """Exact match on the OID as snmpd writes it (leading dot): the fast path of get."""
        return self._by_text.get(text)

    def answer(self, entry: Entry | None, now: float) -> str:
        """The answer for ``entry``: pre-rendered when static."""
        if entry is None:
            return NONE
        return self._static.get(entry.oid) or render(entry, now)

    def next(self, oid: Oid) -> Entry | None:
        """The first entry whose OID is numerically after ``oid`` (in the table or not)."""
        i = bisect.bisect_right(self._oids, oid)
        return self._entries[i] if i < len(self._entries) else None


def render(entry: Entry | None, now: float) -> str:
    """An answer: three lines for an entry, ``NONE`` for nothing."""
    if entry is None:
        return NONE
    value = entry.value
    if isinstance(value, Dynamic):
        value = value.at(now)
    text = str(value).replace("\r", " ").replace("\n", " ")
    return f"{oid_str(entry.oid)}\n{entry.type}\n{text}\n"


@dataclass
class Protocol:
    """Feed it input lines; it returns what to write back (possibly nothing)."""

    _pending: str | None = None
    _args: list[str] = field(default_factory=list)

    def feed(self, line: str, table: Table, now: float) -> str:
        """Consume one input line (without its newline) and return the output it causes."""
        word = line.strip()
        if self._pending is not None:
            if word.lower() in _COMMANDS:
                return self._abandon() + self._command(word.lower())
            if not word:
                return ""
            self._args.append(word)
            return self._complete(table, now)
        if not word:
            return ""
        if word.lower() in _COMMANDS:
            return self._command(word.lower())
        return ""  # unknown line: skipped

    def _command(self, cmd: str) -> str:
        if cmd == "ping":
            return PONG
        self._pending, self._args = cmd, []
        return ""

    def _abandon(self) -> str:
        """Answer a request whose arguments never came complete."""
        cmd, self._pending, self._args = self._pending, None, []
        return NOT_WRITABLE if cmd == "set" else NONE

    def _complete(self, table: Table, now: float) -> str:
        cmd = self._pending
        if cmd == "set":
            if len(self._args) < 2:
                return ""
            self._pending, self._args = None, []
            return NOT_WRITABLE
        text = self._args[0]
        self._pending, self._args = None, []
        if cmd == "get":
            entry = table.get_text(text)
            if entry is not None:
                return table.answer(entry, now)
        oid = parse_oid(text)
        if oid is None:
            return NONE
        entry = table.get(oid) if cmd == "get" else table.next(oid)
        return table.answer(entry, now)
