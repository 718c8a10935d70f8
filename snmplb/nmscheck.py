"""check_snmplb: a Nagios/Icinga plugin for one snmplb application server.

Reads the server's SNMPLB-MIB row (one GET, SNMPv2c or SNMPv3 authPriv, with
the same poller as get_hosts) and reports on load per CPU, available memory,
swap activity, free session slots (when a maximum is set), the admin state
(draining is WARNING, disabled CRITICAL unless --disabled-state warning) and
the age of the agent's data, with perfdata for graphing.

An unreachable server is CRITICAL; an agent that answers without a usable row
(object missing, wrong credentials, stale or implausible data) is UNKNOWN,
never OK. Secrets come from --secrets FILE (``community = ...``,
``auth_passphrase = ...``, ``priv_passphrase = ...``) or the environment
(SNMPLB_COMMUNITY, SNMPLB_AUTH_PASSPHRASE, SNMPLB_PRIV_PASSPHRASE), not from
the command line, where every user of the machine sees them.

Acquisition (RowResource), evaluation (the contexts) and presentation
(RowSummary) are separate, as nagiosplugin intends.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nagiosplugin

from .kvfile import parse_kv
from .poller import poll
from .settings import AUTH_PROTOCOLS, from_env
from .stats import ServerState


class RowResource(nagiosplugin.Resource):
    """Polls one server and turns its row into metrics."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.state: ServerState | None = None

    @property
    def name(self) -> str:
        return "SNMPLB"

    def probe(self):
        settings, problems = from_env(self.env)
        if problems:
            raise nagiosplugin.CheckError("; ".join(problems))
        state = poll(settings)[0]
        self.state = state
        if not state.ok:
            if state.unreachable:
                yield nagiosplugin.Metric("reachable", state.reason, context="reachable")
                return
            raise nagiosplugin.CheckError(f"{settings.servers[0].host}: {state.reason}")
        v = state.values
        yield nagiosplugin.Metric("load_per_cpu", v["lbLoadPerCpu"] / 100, min=0, context="load")
        yield nagiosplugin.Metric("mem_available", v["lbMemAvailablePercent"], "%", min=0, max=100, context="memory")
        yield nagiosplugin.Metric("swap_pages_per_s", v["lbSwapInRate"] + v["lbSwapOutRate"], min=0, context="swap")
        if v["lbMaxSessions"]:
            free = max(0, v["lbMaxSessions"] - v["lbSessions"])
            yield nagiosplugin.Metric("sessions_free", free, min=0, max=v["lbMaxSessions"], context="slots")
        yield nagiosplugin.Metric("sessions", v["lbSessions"], min=0, context="info")
        yield nagiosplugin.Metric("users", v["lbUsers"], min=0, context="info")
        yield nagiosplugin.Metric("rating", v["lbRating"], min=0, max=100, context="info")
        yield nagiosplugin.Metric("data_age", v["lbDataAge"] / 1000, "s", min=0, context="age")
        yield nagiosplugin.Metric("admin_state", state.admin_state, context="admin")


class ReachableContext(nagiosplugin.Context):
    """A server that did not answer is CRITICAL, with the poller's reason."""

    def evaluate(self, metric, resource):
        return self.result_cls(nagiosplugin.Critical, f"unreachable: {metric.value}", metric)


class AdminContext(nagiosplugin.Context):
    """enabled: OK; draining: WARNING; disabled: CRITICAL (or WARNING, by option)."""

    def __init__(self, disabled_state: str) -> None:
        super().__init__("admin")
        self.disabled = nagiosplugin.Critical if disabled_state == "critical" else nagiosplugin.Warn

    def evaluate(self, metric, resource):
        state = {"enabled": nagiosplugin.Ok, "draining": nagiosplugin.Warn}.get(metric.value, self.disabled)
        if metric.value not in ("enabled", "draining", "disabled"):
            state = nagiosplugin.Unknown
        return self.result_cls(state, f"admin state {metric.value}", metric)


class RowSummary(nagiosplugin.Summary):
    def ok(self, results):
        r = {res.metric.name: res.metric.value for res in results if res.metric is not None}
        text = (f"{r['admin_state']}, load {r['load_per_cpu']:.2f}/CPU, {r['mem_available']}% memory available, "
                f"{r['swap_pages_per_s']} swap pages/s, {r['sessions']} sessions")
        return text + (f" ({r['sessions_free']} free)" if "sessions_free" in r else "")

    def problem(self, results):
        worst = results.most_significant
        return ", ".join(str(res) for res in worst)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="check_snmplb", description=__doc__.split("\n\n")[0])
    ap.add_argument("-H", "--host", required=True, help="the application server")
    ap.add_argument("-p", "--port", type=int, default=161, help="SNMP port (161)")
    ap.add_argument("-P", "--snmp-version", choices=("2c", "3"), default="2c")
    ap.add_argument("-C", "--community", help="SNMPv2c community (prefer --secrets or SNMPLB_COMMUNITY)")
    ap.add_argument("-s", "--secrets", type=Path, help="file with community / auth_passphrase / priv_passphrase")
    ap.add_argument("-u", "--user", default="snmplb", help="SNMPv3 user (snmplb)")
    ap.add_argument("-a", "--auth-protocol", choices=AUTH_PROTOCOLS, default="SHA")
    ap.add_argument("-x", "--priv-protocol", choices=("AES",), default="AES")
    ap.add_argument("--timeout-ms", type=int, default=3000, help="SNMP deadline (3000)")
    ap.add_argument("--load-warning", default="1.0", help="load per CPU, Nagios range (1.0)")
    ap.add_argument("--load-critical", default="2.0", help="load per CPU, Nagios range (2.0)")
    ap.add_argument("--mem-warning", default="10:", help="available memory %%, Nagios range (10:)")
    ap.add_argument("--mem-critical", default="5:", help="available memory %%, Nagios range (5:)")
    ap.add_argument("--swap-warning", default="50", help="swap pages/s in+out, Nagios range (50)")
    ap.add_argument("--swap-critical", default="500", help="swap pages/s in+out, Nagios range (500)")
    ap.add_argument("--slots-warning", default="5:", help="free session slots when a maximum is set (5:)")
    ap.add_argument("--slots-critical", default="1:", help="free session slots when a maximum is set (1:)")
    ap.add_argument("--age-warning", default="5", help="agent data age in s (5)")
    ap.add_argument("--age-critical", default="15", help="agent data age in s (15)")
    ap.add_argument("--disabled-state", choices=("critical", "warning"), default="critical",
                    help="what an admin-disabled server is (critical)")
    ap.add_argument("-t", "--timeout", type=int, default=10, help="plugin timeout in s (10)")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    return ap


def _environment(args: argparse.Namespace) -> dict[str, str]:
    secrets = {"community": os.environ.get("SNMPLB_COMMUNITY", ""),
               "auth_passphrase": os.environ.get("SNMPLB_AUTH_PASSPHRASE", ""),
               "priv_passphrase": os.environ.get("SNMPLB_PRIV_PASSPHRASE", "")}
    if args.secrets:
        try:
            pairs, _ = parse_kv(args.secrets.read_text())
        except OSError as exc:
            raise nagiosplugin.CheckError(f"{args.secrets}: {exc.strerror}") from None
        secrets.update({k: v for k, v in pairs.items() if k in secrets})
    if args.community:
        secrets["community"] = args.community
    host = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    return {"LB_SERVERS": host, "LB_SNMP_VERSION": args.snmp_version, "LB_SNMP_USER": args.user,
            "LB_SNMP_COMMUNITY": secrets["community"] or "snmplb-ltsp",
            "LB_SNMP_AUTH_PROTOCOL": args.auth_protocol, "LB_SNMP_PRIV_PROTOCOL": args.priv_protocol,
            "LB_SNMP_AUTH_PASSPHRASE": secrets["auth_passphrase"], "LB_SNMP_PRIV_PASSPHRASE": secrets["priv_passphrase"],
            "LB_TIMEOUT_MS": str(args.timeout_ms), "LB_RETRIES": "2"}


@nagiosplugin.guarded
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    env = _environment(args)
    check = nagiosplugin.Check(
        RowResource(env),
        ReachableContext("reachable"),
        nagiosplugin.ScalarContext("load", args.load_warning, args.load_critical,
                                   fmt_metric="load {value:.2f} per CPU"),
        nagiosplugin.ScalarContext("memory", args.mem_warning, args.mem_critical,
                                   fmt_metric="{value}% memory available"),
        nagiosplugin.ScalarContext("swap", args.swap_warning, args.swap_critical,
                                   fmt_metric="{value} swap pages/s"),
        nagiosplugin.ScalarContext("slots", args.slots_warning, args.slots_critical,
                                   fmt_metric="{value} free session slots"),
        nagiosplugin.ScalarContext("age", args.age_warning, args.age_critical, fmt_metric="data {value:.1f} s old"),
        nagiosplugin.ScalarContext("info"),
        AdminContext(args.disabled_state),
        RowSummary(),
    )
    check.main(verbose=args.verbose, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
