"""Prometheus alert rules and a Grafana dashboard for snmplb, over the metrics promgen exports.

Every metric name comes from ``promgen.metric_name`` and every state from the
MIB's enumerations (``_state`` raises KeyError for a label the MIB lacks), so a
renamed object or state regenerates these files instead of silently breaking
them. Written by ``python -m snmplb.build.nmsgen`` to nms/prometheus/snmplb-rules.yml
and nms/grafana/snmplb-dashboard.json; tests/prometheus/ holds promtool unit tests.
"""

from __future__ import annotations

import json

from snmplb import mib
from snmplb.build import promgen

JOB = "snmplb"  # the scrape job's name in prometheus.yml (nms/README.md)
DRAINING_FOR = "12h"
STALE_MS = 10_000
NEAR_MAXIMUM = 0.9
# Capacity still taking logins, in reference servers (weight 100 each): below this the fleet is nearly full.
MIN_FREE_WEIGHT = 100


def _m(name: str) -> str:
    """The exported metric of MIB object ``name``."""
    return promgen.metric_name(mib.obj(name))


def _state(name: str, label: str, sel: str = "") -> str:
    """The state-set series of ``name`` that is 1 when the object has enumeration ``label``."""
    o = mib.obj(name)
    if label not in o.enums:
        raise KeyError(f"{name} has no enumeration {label!r} in {mib.MODULE}")
    m = _m(name)
    return f'{m}{{{m}="{label}"{sel}}} == 1'


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, object]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


def rules() -> dict[str, object]:
    """The rule groups, as the rules file holds them."""
    up = f'up{{job="{JOB}"}}'
    enabled = _state("lbAdminState", "enabled")
    limited = f"({_m('lbMaxSessions')} > 0) and on(instance, job) {enabled}"
    taking = f"{_m('lbWeight')} and on(instance, job) {_m('lbRating')} > 0"
    alerts = [
        _alert("SnmplbServerDown",
               f"{up} == 0 or ({up} == 1 unless on(instance, job) {_m('lbDataAge')})", "5m", "critical",
               "snmplb server {{ $labels.instance }} does not answer",
               "The snmp_exporter scrape fails, or snmpd answers without SNMPLB-MIB's objects (agent not running)."),
        _alert("SnmplbSwapping", _state("lbSwapping", "true"), "5m", "warning",
               "{{ $labels.instance }} is swapping", "Thin clients avoid it; its users feel it."),
        _alert("SnmplbFull", _state("lbStatus", "full"), "15m", "warning",
               "{{ $labels.instance }} has reached its maximum sessions", "lbStatus full(4) for 15 minutes."),
        _alert("SnmplbUnavailable", _state("lbStatus", "unavailable"), "2m", "critical",
               "{{ $labels.instance }} cannot take a login",
               "sshd is not listening or a login path (home, /tmp) is full or hung: see lbLoginPathProblem."),
        _alert("SnmplbDrainingTooLong", _state("lbAdminState", "draining"), DRAINING_FOR, "info",
               "{{ $labels.instance }} has been draining for " + DRAINING_FOR,
               "Forgotten after maintenance? `snmplb-admin enable` puts it back in service."),
        _alert("SnmplbAdminFileProblem", _state("lbAdminFileStatus", "problem"), "5m", "warning",
               "The agent on {{ $labels.instance }} cannot use its admin file",
               "It keeps the last good settings; lbAdminFileProblem says what is wrong."),
        _alert("SnmplbDataStale", f"{_m('lbDataAge')} > {STALE_MS}", "2m", "warning",
               "The agent's data on {{ $labels.instance }} is {{ $value }} ms old",
               "The agent has stopped sampling; thin clients judge the server on old figures."),
        _alert("SnmplbFleetSessionsNearMaximum",
               f"sum by (job) ({_m('lbSessions')} and on(instance, job) {limited}) "
               f">= {NEAR_MAXIMUM} * sum by (job) ({limited})", "10m", "warning",
               "{{ $value }} sessions on the enabled servers: near the sum of their maximums",
               f"Enabled servers with a maximum (lbMaxSessions > 0) hold {NEAR_MAXIMUM:.0%} of it or more."),
        _alert("SnmplbFleetCapacityLow",
               f"(sum by (job) ({taking}) or sum by (job) ({up}) * 0) < {MIN_FREE_WEIGHT}", "10m", "critical",
               "Less than one reference server of capacity still takes logins",
               f"The weights (lbWeight) of the servers with a rating above 0 add up to less than {MIN_FREE_WEIGHT}: "
               "the others are full, swapping hard, draining, disabled or unavailable."),
    ]
    return {"groups": [{"name": "snmplb", "rules": alerts}]}


def rules_yml() -> str:
    return (f"# GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit. {promgen.SEE_README}\n"
            "# Prometheus alerting rules for snmplb; unit tests in tests/prometheus/ (promtool test rules).\n"
            + promgen.to_yaml(rules()))


_DS = {"type": "prometheus", "uid": "${datasource}"}


def _panel(pid: int, title: str, kind: str, pos: tuple[int, int, int, int], targets: list[tuple[str, str]],
           unit: str = "short", instant: bool = False) -> dict[str, object]:
    x, y, w, h = pos
    panel = {"id": pid, "title": title, "type": kind, "datasource": _DS,
             "gridPos": {"x": x, "y": y, "w": w, "h": h},
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
             "targets": [{"datasource": _DS, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                          **({"instant": True, "format": "table"} if instant else {})}
                         for i, (expr, legend) in enumerate(targets)]}
    return panel


def dashboard() -> str:
    """The Grafana dashboard JSON (schema 38, Grafana 9.4+ / 10 / 11)."""
    sel = '{instance=~"$instance"}'
    m = {n: _m(n) + sel for n in ("lbSessions", "lbMaxSessions", "lbWeight", "lbLoadPerCpu", "lbMemAvailablePercent",
                                   "lbSwapInRate", "lbSwapOutRate", "lbSwapInPages", "lbLoginRate",
                                   "lbSshConnections", "lbRating", "lbDataAge", "lbUsers")}
    inst = "{{instance}}"
    panels = [
        _panel(1, "Sessions per capacity", "timeseries", (0, 0, 12, 8),
               [(f"{m['lbSessions']} / ({m['lbMaxSessions']} > 0)", inst + " of maximum"),
                (f"{m['lbSessions']} / ({m['lbWeight']} / 100 > 0)", inst + " per reference server")], "short"),
        _panel(2, "State", "table", (12, 0, 12, 8),
               [(_m("lbStatus") + sel + " == 1", ""),
                (_m("lbAdminState") + sel + " == 1", "")], instant=True),
        _panel(3, "Sessions, users, maximum", "timeseries", (0, 8, 12, 8),
               [(m["lbSessions"], inst + " sessions"), (m["lbUsers"], inst + " users"),
                (f"{m['lbMaxSessions']} > 0", inst + " maximum")]),
        _panel(4, "Load per CPU (1 min)", "timeseries", (12, 8, 12, 8), [(m["lbLoadPerCpu"], inst)]),
        _panel(5, "Memory available", "timeseries", (0, 16, 12, 8), [(m["lbMemAvailablePercent"], inst)], "percent"),
        _panel(6, "Swap activity", "timeseries", (12, 16, 12, 8),
               [(f"{m['lbSwapInRate']} + {m['lbSwapOutRate']}", inst + " pages/s (agent window)"),
                (f"rate({m['lbSwapInPages']}[$__rate_interval])", inst + " swap-in pages/s")], "short"),
        _panel(7, "Login rate", "timeseries", (0, 24, 12, 8), [(m["lbLoginRate"], inst)], "short"),
        _panel(8, "Logins in progress (ssh connections)", "timeseries", (12, 24, 12, 8),
               [(m["lbSshConnections"], inst + " ssh connections"),
                (f"clamp_min({m['lbSshConnections']} - {m['lbSessions']}, 0)", inst + " not yet a session")]),
        _panel(9, "Rating (how welcome a new login is)", "timeseries", (0, 32, 12, 8), [(m["lbRating"], inst)]),
        _panel(10, "Agent data age", "timeseries", (12, 32, 12, 8), [(f"{m['lbDataAge']} / 1000", inst)], "s"),
    ]
    doc = {
        "title": "snmplb LTSP application servers", "uid": "snmplb-fleet", "schemaVersion": 38, "version": 1,
        "editable": True, "tags": ["snmplb", "ltsp"], "time": {"from": "now-6h", "to": "now"}, "refresh": "1m",
        "description": f"GENERATED from SNMPLB-MIB by `python -m snmplb.build.nmsgen`: do not edit. {promgen.SEE_README}",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
            {"name": "instance", "label": "Server", "type": "query", "datasource": _DS, "multi": True,
             "includeAll": True, "refresh": 2, "query": f"label_values({_m('lbStatus')}, instance)",
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }
    return json.dumps(doc, indent=2) + "\n"
