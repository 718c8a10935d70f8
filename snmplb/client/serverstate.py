"""What the thin client knows about one server after a poll: a small frozen value.

The poller produces these, the algorithms, the status view and the
simulator consume them. Values come from lbRow (MIB units: load x100, KiB).
"""

from __future__ import annotations

from collections import namedtuple

from snmplb import mib

_ADMIN = {v: k for k, v in mib.obj("lbAdminState").enums.items()}
_STATUS = {v: k for k, v in mib.obj("lbStatus").enums.items()}
MAX_DATA_AGE_MS = 30_000
# Statuses in which a server may take a new login. Any other (disabled, draining, full, unavailable,
# or a value added to the MIB after this client) closes it, whatever else its row says.
OPEN_STATUSES = frozenset(("idle", "busy", "swapping"))
# Failure reasons that mean "could not reach the agent" (the poller's words), as opposed to an agent
# that answered wrongly: an NMS reports the first CRITICAL and the second UNKNOWN.
UNREACHABLE = ("no answer within", "nothing listening", "name does not resolve", "name did not resolve",
               "cannot send")


class ServerState(namedtuple("ServerState", "name port values reason rtt_ms", defaults=(161, None, "", None))):
    """One configured server: whether it answered, how fast, and its row.

    name (str): the host as configured in LB_SERVERS (what get_hosts prints).
    port (int): its SNMP port.
    values (dict[str, int] | None): lbRow's fields by MIB name; None when it did not answer.
    reason (str): why it failed ("" when it answered with a plausible row).
    rtt_ms (float | None): answer time of the exchange that succeeded.
    """

    __slots__ = ()

    @property
    def ok(self) -> bool:
        return not self.reason and bool(self.values)

    @property
    def unreachable(self) -> bool:
        """Failed because nothing (or nothing in time) answered."""
        return self.reason.startswith(UNREACHABLE)

    @property
    def load_per_cpu(self) -> float:
        return self.values["lbLoadPerCpu"] / 100

    @property
    def cpus(self) -> int:
        return self.values["lbCpuCount"]

    @property
    def sessions(self) -> int:
        return self.values["lbSessions"]

    @property
    def weight(self) -> int:
        return self.values["lbWeight"]

    @property
    def max_sessions(self) -> int:
        return self.values["lbMaxSessions"]

    @property
    def rating(self) -> int:
        return self.values["lbRating"]

    @property
    def swapping(self) -> bool:
        return self.values["lbSwapping"] == 1

    @property
    def sessions_or_connecting(self) -> int:
        """Sessions, counting logins still connecting: the larger of lbSessions and lbSshConnections."""
        return max(self.values["lbSessions"], self.values.get("lbSshConnections", 0))

    @property
    def in_service(self) -> int | None:
        """Seconds since the server came into service (boot or the admin's enable); None from an agent
        too old to say."""
        return self.values.get("lbInService")

    @property
    def login_rate(self) -> float | None:
        """New logins per second arriving at this server (lbLoginRate); None from an agent too old to say."""
        rate = self.values.get("lbLoginRate")
        return None if rate is None else rate / 60

    @property
    def data_age_s(self) -> float:
        """How old the agent's figures were when it answered, in seconds."""
        return self.values["lbDataAge"] / 1000

    @property
    def admin_state(self) -> str:
        return _ADMIN.get((self.values or {}).get("lbAdminState", 0), "unknown")

    @property
    def status(self) -> str:
        """idle, busy, swapping, full, draining or disabled (the agent's verdict); 'down' if no answer."""
        if not self.ok:
            return "down"
        return _STATUS.get(self.values["lbStatus"], "unknown")

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


def implausible(values: dict[str, int]) -> str:
    """Why a row cannot be true ("" when it can): a lying or broken agent is never chosen."""
    v = values
    checks = (
        (1 <= v["lbCpuCount"] <= 1_000_000, "CPU count"),
        (v["lbMemTotal"] > 0 and v["lbMemAvailable"] <= v["lbMemTotal"], "memory figures"),
        (v["lbMemAvailablePercent"] <= 100 and v["lbRating"] <= 100, "percentages"),
        (v["lbSwapFree"] <= v["lbSwapTotal"], "swap figures"),
        (v["lbSwapping"] in (1, 2), "swapping flag"),
        (v["lbAdminState"] in _ADMIN and v["lbStatus"] >= 1, "state or status value"),
        (v["lbUsers"] <= v["lbSessions"], "users above sessions"),
        (v["lbWeight"] <= 10000, "weight"),
        (abs(v["lbLoadPerCpu"] - v["lbLoad1"] / v["lbCpuCount"]) <= 1 if v["lbCpuCount"] else False,
         "load per CPU"),
    )
    for good, what in checks:
        if not good:
            return f"implausible {what}"
    if v["lbDataAge"] > MAX_DATA_AGE_MS:
        return f"stale data ({v['lbDataAge'] // 1000} s old)"
    return ""
