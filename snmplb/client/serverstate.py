"""What the thin client knows about one server after a poll: a small frozen value.

The poller produces these, the algorithms, the status view and the
simulator consume them. Values come from lbRow (MIB units: load x100, KiB).
"""

from __future__ import annotations

from snmplb import mib
from snmplb.record import record

_ADMIN: dict[int, str] = {v: k for k, v in mib.obj("lbAdminState").enums.items()}
_STATUS: dict[int, str] = {v: k for k, v in mib.obj("lbStatus").enums.items()}
_SWAPPING = mib.enum("lbSwapping", "true")
_SWAPPING_VALUES = frozenset(mib.obj("lbSwapping").enums.values())
_MAX_WEIGHT = mib.maximum("lbWeight")
MAX_DATA_AGE_MS = 30_000
# Statuses in which a server may take a new login. Any other (disabled, draining, full, unavailable,
# or a value added to the MIB after this client) closes it, whatever else its row says.
OPEN_STATUSES = frozenset(("idle", "busy", "swapping"))


class Failure:
    """Why a server has no usable row: the kind, set where the failure happens (``reason`` has the
    details, for people). A class of names rather than an enum: get_hosts' start-up counts, and the
    values are what ``pick --json``, the status view and check_snmplb show.

    The agent was not reached (an NMS reports these CRITICAL):
        UNREACHABLE   no answer before the deadline, or the datagram could not be sent
        REFUSED       nothing listening on the port (ICMP port unreachable)
        NOT_RESOLVED  its host name did not resolve (or not before the deadline)
    It answered, but not with a row we may use (an NMS reports these UNKNOWN: the check, the agent or
    its set-up is wrong, not necessarily the server):
        AUTH          SNMPv3: the agent refused our credentials (a USM report: user, digest, privacy...)
        AGENT_ERROR   an SNMP error status (genErr, noAccess...)
        NO_ROW        no snmplb row there (noSuchObject: agent not installed, or not in the view)
        MALFORMED     a reply of the wrong shape: PDU, OID, type, or a partial or garbled row
        IMPLAUSIBLE   a row that cannot be true (a lying or broken agent)
        STALE         the agent's figures are too old (MAX_DATA_AGE_MS)
    Neither:
        NOT_POLLED    the settings forbid polling (``settings.refusal``)
        INTERNAL      a bug met on this server's reply; the other servers are unaffected
    """

    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    NOT_RESOLVED = "not-resolved"
    AUTH = "auth"
    AGENT_ERROR = "agent-error"
    NO_ROW = "no-row"
    MALFORMED = "malformed"
    IMPLAUSIBLE = "implausible"
    STALE = "stale"
    NOT_POLLED = "not-polled"
    INTERNAL = "internal"
    NOT_REACHED = frozenset((UNREACHABLE, REFUSED, NOT_RESOLVED))
    ALL = frozenset((UNREACHABLE, REFUSED, NOT_RESOLVED, AUTH, AGENT_ERROR, NO_ROW, MALFORMED, IMPLAUSIBLE, STALE,
                     NOT_POLLED, INTERNAL))


class ServerState(record("ServerState", "name port values reason rtt_ms failure",
                             defaults=(161, None, "", None, ""))):
    """One configured server: whether it answered, how fast, and its row.

    name (str): the host as configured in LB_SERVERS (what get_hosts prints).
    port (int): its SNMP port.
    values (dict[str, int] | None): lbRow's fields by MIB name; None when it did not answer.
    reason (str): why it failed, in words ("" when it answered with a plausible row).
    rtt_ms (float | None): answer time of the exchange that succeeded.
    failure (str): the kind of failure, one of ``Failure`` ("" when it answered with a plausible row).
    """

    __slots__ = ()

    @classmethod
    def failed(cls, name: str, port: int, failure: str, reason: str) -> ServerState:
        """A server without a usable row: ``failure`` (a ``Failure`` kind) and ``reason`` (its words)."""
        return cls(name, port, None, reason, None, failure)

    @property
    def ok(self) -> bool:
        return not self.reason and bool(self.values)

    @property
    def unreachable(self) -> bool:
        """Failed because nothing (or nothing in time) answered: the agent was not reached."""
        return self.failure in Failure.NOT_REACHED

    # The figures below are read from a state that answered: `row` is its values, typed for mypy (to
    # which a record's fields are Any).
    @property
    def load_per_cpu(self) -> float:
        return mib.scaled("lbLoadPerCpu", self.values["lbLoadPerCpu"])

    @property
    def cpus(self) -> int:
        row: dict[str, int] = self.values
        return row["lbCpuCount"]

    @property
    def sessions(self) -> int:
        row: dict[str, int] = self.values
        return row["lbSessions"]

    @property
    def weight(self) -> int:
        row: dict[str, int] = self.values
        return row["lbWeight"]

    @property
    def max_sessions(self) -> int:
        row: dict[str, int] = self.values
        return row["lbMaxSessions"]

    @property
    def rating(self) -> int:
        row: dict[str, int] = self.values
        return row["lbRating"]

    @property
    def swapping(self) -> bool:
        row: dict[str, int] = self.values
        return row["lbSwapping"] == _SWAPPING

    @property
    def in_service(self) -> int | None:
        """Seconds since the server came into service (boot or the admin's enable); None from an agent
        too old to say."""
        row: dict[str, int] = self.values
        return row.get("lbInService")

    @property
    def login_rate(self) -> float | None:
        """New logins per second arriving at this server (lbLoginRate); None from an agent too old to say."""
        rate = self.values.get("lbLoginRate")
        return None if rate is None else mib.per_second("lbLoginRate", rate)

    @property
    def user_sessions(self) -> int | None:
        """The asked user's sessions here (lbUserSessions); None when not asked or not answered."""
        row: dict[str, int] = self.values or {}
        return row.get("lbUserSessions")

    @property
    def user_waiting(self) -> int | None:
        """Of those, the ones waiting for a reconnect (lbUserWaiting); None when not asked or not answered."""
        row: dict[str, int] = self.values or {}
        return row.get("lbUserWaiting")

    @property
    def takes_reconnect(self) -> bool:
        """May a user go back to a session of theirs here: answered, not disabled, and able to take a
        login at all (not unavailable). Draining, full, swapping or weight 0 still do: a reconnect adds
        no session, and that is what drain means (the existing sessions stay)."""
        return (self.ok and self.admin_state in ("enabled", "draining")
                and self.status in OPEN_STATUSES | {"full", "draining"})

    @property
    def login_rate_span(self) -> int | None:
        """Seconds of lbLoginRate's 10 s window the agent had watched (lbLoginRateSpan: 0 just after it
        started, when no rate is known yet); None from an agent too old to say (the whole window)."""
        row: dict[str, int] = self.values
        return row.get("lbLoginRateSpan")

    @property
    def logins_connecting(self) -> int | None:
        """Logins still connecting, told from other ssh connections (lbLoginsConnecting); None from an agent
        too old to say."""
        row: dict[str, int] = self.values
        return row.get("lbLoginsConnecting")

    @property
    def data_age_s(self) -> float:
        """How old the agent's figures were when it answered, in seconds."""
        return mib.seconds("lbDataAge", self.values["lbDataAge"])

    @property
    def admin_state(self) -> str:
        row: dict[str, int] = self.values or {}
        return _ADMIN.get(row.get("lbAdminState", 0), "unknown")

    @property
    def status(self) -> str:
        """idle, busy, swapping, full, draining or disabled (the agent's verdict); 'down' if no answer."""
        if not self.ok:
            return "down"
        row: dict[str, int] = self.values
        return _STATUS.get(row["lbStatus"], "unknown")

    @property
    def eligible(self) -> bool:
        """Answered, enabled, weight above 0 and below its maximum sessions, and the agent's own
        status lets it take a login: may be chosen.

        The admin state and the status are both read, and the more conservative wins: a row
        that says enabled but reports itself disabled, draining, full or unavailable (cannot
        take a login), or a status this client does not know (a newer agent's), is not chosen.
        """
        if not self.ok or self.admin_state != "enabled" or self.weight <= 0:
            return False
        if self.status not in OPEN_STATUSES:
            return False
        return not (self.max_sessions and self.sessions >= self.max_sessions)


def check_row(values: dict[str, int]) -> tuple[str, str]:
    """("", "") for a row that can be true, else (its ``Failure`` kind, why): a lying or broken agent,
    or one whose figures are too old, is never chosen."""
    v = values
    checks = (
        (1 <= v["lbCpuCount"] <= 1_000_000, "CPU count"),
        (v["lbMemTotal"] > 0 and v["lbMemAvailable"] <= v["lbMemTotal"], "memory figures"),
        (v["lbMemAvailablePercent"] <= 100 and v["lbRating"] <= 100, "percentages"),
        (v["lbSwapFree"] <= v["lbSwapTotal"], "swap figures"),
        (v["lbSwapping"] in _SWAPPING_VALUES, "swapping flag"),
        (v["lbAdminState"] in _ADMIN and v["lbStatus"] >= 1, "state or status value"),
        (v["lbUsers"] <= v["lbSessions"], "users above sessions"),
        (v["lbWeight"] <= _MAX_WEIGHT, "weight"),
        (abs(v["lbLoadPerCpu"] - v["lbLoad1"] / v["lbCpuCount"]) <= 1 if v["lbCpuCount"] else False,
         "load per CPU"),
    )
    for good, what in checks:
        if not good:
            return Failure.IMPLAUSIBLE, f"implausible {what}"
    if v["lbDataAge"] > MAX_DATA_AGE_MS:
        return Failure.STALE, f"stale data ({int(mib.seconds('lbDataAge', v['lbDataAge']))} s old)"
    return "", ""


def implausible(values: dict[str, int]) -> str:
    """Why a row cannot be used ("" when it can): ``check_row``'s words."""
    return check_row(values)[1]
