"""The fleet at a glance: one line per configured server, and what each algorithm would pick now.

Presentation only: ``gather`` (the same poll get_hosts makes) supplies the
servers' states, ``algorithms.decide`` the picks; this module turns them
into a table or JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from snmplb import mib
from snmplb.client.algorithms import REGISTRY, Decision
from snmplb.client.serverstate import ServerState

LABELS = {"down": "Down", "idle": "Idle", "busy": "Busy", "swapping": "Swapping", "full": "Full",
          "draining": "Draining", "disabled": "Disabled", "unavailable": "Unavailable"}
_LISTENING = {v: k for k, v in mib.obj("lbSshListening").enums.items()}
_PATH_STATES = {v: k for k, v in mib.obj("lbLoginPathStatus").enums.items()}
_PATH_WORDS = {"lowSpace": "login path full", "lowInodes": "login path out of inodes",
               "notResponding": "login path not responding", "error": "login path unreadable"}
_FILE_STATUS: dict[int, str] = {v: k for k, v in mib.obj("lbAdminFileStatus").enums.items()}
PROBLEM_MARK = "!"


def state_label(s: ServerState) -> str:
    return LABELS.get(s.status, s.status.title())


def unavailable_reason(s: ServerState) -> str:
    """Why the server cannot take a login, from its row ("" when nothing there says so).

    The path's name is not in lbRow (a string): lbLoginPathProblem on the server names it.
    """
    if not s.ok:
        return ""
    v = s.values
    reasons = []
    if _LISTENING.get(v.get("lbSshListening", 0)) == "notListening":
        reasons.append("ssh not listening")
    path_state = _PATH_STATES.get(v.get("lbLoginPathStatus", 0), "")
    if path_state in _PATH_WORDS:
        free = v.get("lbLoginPathFree")
        detail = f" ({free} MiB free)" if path_state == "lowSpace" and free is not None else ""
        reasons.append(_PATH_WORDS[path_state] + detail)
    return ", ".join(reasons)


def admin_file(s: ServerState) -> str | None:
    """The agent's word on its admin file: "ok", "problem", or None (no answer, or an agent too old)."""
    if not s.ok or "lbAdminFileStatus" not in s.values:
        return None
    return _FILE_STATUS.get(s.values["lbAdminFileStatus"], "unknown")


def server_record(s: ServerState) -> dict[str, object]:
    """A server's line as plain data (the JSON form)."""
    rec: dict[str, object] = {"host": s.name, "port": s.port, "state": state_label(s), "answer_ms": s.rtt_ms,
                 "eligible": s.eligible, "reason": s.reason,
                 "failure": s.failure or None}  # the kind (serverstate.Failure); None when it answered fine
    if s.ok:
        v = s.values
        rec.update({
            "load_per_cpu": mib.scaled("lbLoadPerCpu", v["lbLoadPerCpu"]), "load1": mib.scaled("lbLoad1", v["lbLoad1"]), "cpus": v["lbCpuCount"],
            "mem_available_kib": v["lbMemAvailable"], "mem_available_percent": v["lbMemAvailablePercent"],
            "swap_in_pages_s": v["lbSwapInRate"], "swap_out_pages_s": v["lbSwapOutRate"],
            "swapping": s.swapping, "sessions": v["lbSessions"], "users": v["lbUsers"],
            "max_sessions": v["lbMaxSessions"], "weight": v["lbWeight"], "rating": v["lbRating"],
            "admin_state": s.admin_state, "data_age_ms": v["lbDataAge"],
            # None from agents older than these objects
            "ssh_connections": v.get("lbSshConnections"), "logins_per_min": v.get("lbLoginRate"),
            "in_service_s": s.in_service,
            "ssh_listening": _LISTENING.get(v.get("lbSshListening", 0)),
            "login_path_status": _PATH_STATES.get(v.get("lbLoginPathStatus", 0)),
            "login_path_free_mb": v.get("lbLoginPathFree"),
            "login_path_free_inodes_percent": v.get("lbLoginPathFreeInodes"),
            "unavailable_reason": unavailable_reason(s),
            # "problem": the agent keeps the last good settings; lbAdminFileProblem says what is wrong
            "admin_file": admin_file(s),
        })
        if s.user_sessions is not None:  # a user's question was asked and answered (pick/status --user)
            rec.update({"user_sessions": s.user_sessions, "user_waiting": s.user_waiting})
    return rec


def silence_hint(servers: Sequence[ServerState], snmp_version: str = "2c") -> str:
    """What a silent SNMPv2c agent may mean ("" unless some server gave no answer at all, over SNMPv2c):
    SNMPv2c cannot tell a wrong community from a dead server, so the words name the likely causes."""
    from snmplb.client.serverstate import Failure

    if snmp_version != "2c" or not any(s.failure == Failure.UNREACHABLE and "no answer" in s.reason for s in servers):
        return ""
    return ("No answer can also mean, with SNMPv2c: a wrong community (LB_SNMP_COMMUNITY, check_snmplb's "
            "--secrets), this client's address not allowed by the agent's rocommunity line (snmpd.d drop-in), "
            "or snmpd not listening on that address (agentAddress); SNMPv2c answers none of these.")


def to_json(servers: Sequence[ServerState], picks: dict[str, Decision], problems: Sequence[str],
            affinity: str = "") -> str:
    return json.dumps({
        "servers": [server_record(s) for s in servers],
        "answered": sum(1 for s in servers if s.ok),
        "picks": {name: list(d.hosts) for name, d in picks.items()},
        "affinity": affinity or None,  # how the user's sessions decided (status --user), else None
        "problems": list(problems),
    }, indent=2)


def _mib(kib: int) -> str:
    return f"{kib / 1024 / 1024:.1f}G" if kib >= 1024 * 1024 else f"{kib // 1024}M"


def to_table(servers: Sequence[ServerState], picks: dict[str, Decision], configured: str,
             snmp_version: str = "2c") -> str:
    rows = [["SERVER", "STATE", "LOAD/CPU", "FREE MEM", "SWAP IN/OUT", "SESSIONS", "LOGINS/MIN", "WEIGHT",
             "RATING", "ANSWER"]]
    for s in servers:
        host = f"{s.name}:{s.port}"
        if not s.ok:
            rows.append([host, "Down", "-", "-", "-", "-", "-", "-", "-", s.reason])
            continue
        v = s.values
        limit = f"/{v['lbMaxSessions']}" if v["lbMaxSessions"] else ""
        rate = v.get("lbLoginRate")
        mark = PROBLEM_MARK if admin_file(s) not in (None, "ok") else ""
        rows.append([host, state_label(s) + mark, f"{mib.scaled('lbLoadPerCpu', v['lbLoadPerCpu']):.2f}",
                     f"{_mib(v['lbMemAvailable'])} ({v['lbMemAvailablePercent']}%)",
                     f"{v['lbSwapInRate']}/{v['lbSwapOutRate']} p/s", f"{v['lbSessions']}{limit}",
                     "?" if rate is None else str(rate), f"{v['lbWeight']}%", str(v["lbRating"]),
                     f"{s.rtt_ms:.1f} ms" + (f"  {why}" if (why := unavailable_reason(s)) else "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    answered = sum(1 for s in servers if s.ok)
    troubled = [f"{s.name}:{s.port}" for s in servers if admin_file(s) not in (None, "ok")]
    if troubled:
        lines.append("")
        lines.append(f"{PROBLEM_MARK} admin file has a problem, the agent keeps its last good settings "
                     f"(lbAdminFileProblem.0 says what): {' '.join(troubled)}")
    lines.append("")
    if not any(s.eligible for s in servers):
        # Nothing to choose from: every algorithm gives LDM the same fallback list, which is no choice.
        fallback = " ".join(picks[configured].hosts) or "(none)"
        lines.append(f"{answered} of {len(servers)} answered. No server may take a login now: get_hosts would "
                     f"give LDM the configured servers to try in order: {fallback}")
        hint = silence_hint(servers, snmp_version)
        if hint:
            lines.append(hint)
        return "\n".join(lines)
    lines.append(f"{answered} of {len(servers)} answered. Would pick now (LB_ALGORITHM={configured}):")
    for name in REGISTRY:
        d = picks[name]
        mark = "*" if name == configured else " "
        lines.append(f" {mark} {name:<12} {' '.join(d.hosts) or '(none)'}")
    return "\n".join(lines)
