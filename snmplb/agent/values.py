"""From samples to the MIB's values: what one GET of the agent answers.

Pure: the agent's sampler gathers the inputs, this module computes every
object of SNMPLB-MIB from them, by name, and the pass_persist table is built
from the result with the MIB's OIDs and types.
"""

from __future__ import annotations

from dataclasses import dataclass

from snmplb import __version__
from snmplb.agent import verdict
from snmplb import mib
from snmplb.adminfile import AdminSettings
from snmplb.agent.loginpaths import LoginPaths
from snmplb.agent.procfs import ProcSample
from snmplb.agent.logins import SessionCount

AGENT_VERSION = f"snmplb-agent {__version__}"
_GAUGE_MAX = 2**32 - 1
_SOURCES = mib.obj("lbSessionSource").enums
_TRUTH = mib.obj("lbSwapping").enums
_LISTENING = mib.obj("lbSshListening").enums
_PATH_STATES = mib.obj("lbLoginPathStatus").enums
_FILE_STATUS = mib.obj("lbAdminFileStatus").enums
_PROBLEM_MAX = mib.obj("lbAdminFileProblem").range[1]
_SPAN_MAX = mib.obj("lbLoginRateSpan").range[1]


@dataclass(frozen=True)
class DataAge:
    """Placeholder for lbDataAge: milliseconds since ``taken_at``, computed when answering."""

    taken_at: float

    def at(self, now: float) -> int:
        return max(0, min(_GAUGE_MAX, int((now - self.taken_at) * 1000)))


@dataclass(frozen=True)
class Row:
    """lbRow's value: the fields' values, lbDataAge among them, rendered when answering."""

    fields: tuple[int | DataAge, ...]

    def at(self, now: float) -> str:
        return mib.encode_row([f.at(now) if isinstance(f, DataAge) else f for f in self.fields])


Dynamic = (DataAge, Row)


def in_service(uptime: float | None, enabled_since: int, wall_time: float) -> int:
    """Seconds since boot or since the admin enabled the server, whichever is later (lbInService).

    Unknown (no uptime, no enabling recorded) counts as long in service: no slow start.
    """
    spans = [s for s in (uptime, wall_time - enabled_since if enabled_since else None) if s is not None]
    return _gauge(max(0.0, min(spans))) if spans else _GAUGE_MAX


def display_string(text: str, limit: int) -> str:
    """``text`` as a DisplayString of at most ``limit`` characters: printable ASCII on one line
    (a garbled file's bytes end up in problem messages; anything else becomes '?')."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


def _gauge(x: float) -> int:
    return max(0, min(_GAUGE_MAX, int(round(x))))


def compute_values(
    proc: ProcSample,
    rates: tuple[float, float],
    sessions: SessionCount,
    admin: AdminSettings,
    policy: verdict.HealthPolicy,
    wall_time: float = 0.0,
    ssh_connections: int = 0,
    login_rate: int = 0,
    login_rate_span: int = 10,
    logins_connecting: int = 0,
    ssh_listening: bool | None = None,
    login_paths: LoginPaths = LoginPaths(),
    admin_problem: str = "",
) -> dict[str, int | str | DataAge | Row]:
    """Every object of the MIB, by name, in MIB units (``wall_time``: Unix time of the sample).

    ``login_rate_span``: the seconds of lbLoginRate's window watched (``tcpconns.LoginRate.span``; the
    default: all of it); ``logins_connecting``: lbLoginsConnecting (``tcpconns.Connecting``);
    ``ssh_listening`` None: the TCP tables could not be read; ``login_paths``: the login paths' check
    (the default: no path checked); ``admin_problem``: what is wrong with the admin file, "" when
    nothing is.
    """
    load_per_cpu = _gauge(proc.load1 * 100 / max(1, proc.cpus))
    swapping = verdict.is_swapping(rates[0], rates[1], policy)
    figures = verdict.Figures(
        load_per_cpu=load_per_cpu, mem_total=proc.mem_total, mem_available=proc.mem_available,
        swapping=swapping, sessions=sessions.sessions, weight=admin.weight,
        max_sessions=admin.max_sessions, admin_state=admin.state,
        ssh_listening=ssh_listening, login_paths_usable=login_paths.state == "usable",
    )
    status = verdict.server_status(figures, policy)
    values: dict[str, int | str | DataAge | Row] = {
        "lbLoad1": _gauge(proc.load1 * 100),
        "lbLoad5": _gauge(proc.load5 * 100),
        "lbLoad15": _gauge(proc.load15 * 100),
        "lbCpuCount": proc.cpus,
        "lbLoadPerCpu": load_per_cpu,
        "lbMemTotal": _gauge(proc.mem_total),
        "lbMemAvailable": _gauge(proc.mem_available),
        "lbMemAvailablePercent": verdict.mem_available_percent(proc.mem_total, proc.mem_available),
        "lbSwapTotal": _gauge(proc.swap_total),
        "lbSwapFree": _gauge(proc.swap_free),
        "lbSwapInRate": _gauge(rates[0]),
        "lbSwapOutRate": _gauge(rates[1]),
        "lbSwapInPages": proc.pswpin % 2**64,
        "lbSwapOutPages": proc.pswpout % 2**64,
        "lbSwapping": _TRUTH["true" if swapping else "false"],
        "lbSessions": sessions.sessions,
        "lbUsers": sessions.users,
        "lbWeight": admin.weight,
        "lbMaxSessions": admin.max_sessions,
        "lbAdminState": mib.obj("lbAdminState").enums[admin.state],
        "lbStatus": mib.obj("lbStatus").enums[status],
        "lbRating": verdict.rating(figures, status),
        "lbDataAge": DataAge(proc.taken_at),
        "lbAgentVersion": AGENT_VERSION,
        "lbSessionSource": _SOURCES[sessions.source],
        "lbInService": in_service(proc.uptime, admin.enabled_since, wall_time),
        "lbSshConnections": _gauge(ssh_connections),
        "lbLoginRate": _gauge(login_rate),
        "lbSshListening": _LISTENING[{True: "listening", False: "notListening", None: "unknown"}[ssh_listening]],
        "lbLoginPathStatus": _PATH_STATES[login_paths.state],
        "lbLoginPathFree": _gauge(login_paths.free_mb),
        "lbLoginPathFreeInodes": max(0, min(100, login_paths.free_inodes_percent)),
        "lbLoginPathProblem": login_paths.problem,
        "lbAdminFileStatus": _FILE_STATUS["problem" if admin_problem else "ok"],
        "lbAdminFileProblem": display_string(admin_problem, _PROBLEM_MAX),
        "lbLoginRateSpan": max(0, min(_SPAN_MAX, login_rate_span)),
        "lbLoginsConnecting": _gauge(logins_connecting),
    }
    values["lbRow"] = Row(tuple(values[o.name] for o in mib.ROW_FIELDS))  # type: ignore[misc]  # int or DataAge
    return values
