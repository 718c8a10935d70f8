"""check_snmplb's nagiosplugin part: acquisition, evaluation and presentation of one server's row.

Acquisition (RowResource), evaluation (the contexts) and presentation
(RowSummary) are separate, as nagiosplugin intends. Only snmplb.nms.check
imports this module, after it made sure nagiosplugin is installed (the
``nms`` extra): the command line, the secrets and every error are handled
there.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import nagiosplugin

from snmplb import mib
from snmplb.client.poller import poll
from snmplb.client.settings import from_env
from snmplb.client.serverstate import Failure, ServerState

_ADMIN_FILE_PROBLEM = mib.obj("lbAdminFileStatus").enums["problem"]
RESERVE_S = 0.25  # of -t, kept after the poll for the evaluation and the status line


def poll_deadline(timeout_ms: int, plugin_timeout_s: int, now: float) -> float:
    """The poll's one deadline (a ``time.monotonic`` time), from ``now``, just before -t's alarm is set:
    --timeout-ms later, but never later than ``RESERVE_S`` before -t runs out.

    A poll that outlived -t would end in nagiosplugin's Timeout, UNKNOWN: a dead
    server must be CRITICAL (unreachable) whatever -t and --timeout-ms are.
    """
    return now + min(timeout_ms / 1000, max(0.0, plugin_timeout_s - RESERVE_S))


SILENT_V2C = (" (SNMPv2c: also a wrong community (--secrets), this address not allowed by the agent's "
              "rocommunity, or snmpd not listening on that address)")


class RowResource(nagiosplugin.Resource):
    """Polls one server until ``deadline`` (``poll_deadline``) and turns its row into metrics."""

    def __init__(self, env: dict[str, str], deadline: float) -> None:
        self.env = env
        self.deadline = deadline
        self.state: ServerState | None = None

    @property
    def name(self) -> str:
        return "SNMPLB"

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        settings, problems = from_env(self.env)
        if problems:
            raise nagiosplugin.CheckError("; ".join(problems))
        state = poll(settings, deadline=self.deadline)[0]
        self.state = state
        if not state.ok:
            # The kind of failure, as the poller set it, decides: an agent not reached is CRITICAL; one that
            # answered without a usable row (or settings that forbid polling) is UNKNOWN (snmplb.nms.check).
            if state.failure in Failure.NOT_REACHED:
                reason = state.reason
                if settings.snmp_version == "2c" and state.failure == Failure.UNREACHABLE:
                    # SNMPv2c answers a wrong community, or an address its rocommunity does not allow, with
                    # silence: the words name those causes too (never the community itself).
                    reason += SILENT_V2C
                yield nagiosplugin.Metric("reachable", reason, context="reachable")
                return
            if state.failure == Failure.STALE:  # older than any --age-critical can be: a hung agent
                yield nagiosplugin.Metric("stale", state.reason, context="stale")
                return
            raise nagiosplugin.CheckError(f"{settings.servers[0].host}: {state.reason} [{state.failure}]")
        v = state.values
        yield nagiosplugin.Metric("load_per_cpu", mib.scaled("lbLoadPerCpu", v["lbLoadPerCpu"]), min=0, context="load")
        yield nagiosplugin.Metric("mem_available", v["lbMemAvailablePercent"], "%", min=0, max=100, context="memory")
        yield nagiosplugin.Metric("swap_pages_per_s", v["lbSwapInRate"] + v["lbSwapOutRate"], min=0, context="swap")
        if v["lbMaxSessions"]:
            free = max(0, v["lbMaxSessions"] - v["lbSessions"])
            yield nagiosplugin.Metric("sessions_free", free, min=0, max=v["lbMaxSessions"], context="slots")
        yield nagiosplugin.Metric("sessions", v["lbSessions"], min=0, context="info")
        yield nagiosplugin.Metric("users", v["lbUsers"], min=0, context="info")
        yield nagiosplugin.Metric("rating", v["lbRating"], min=0, max=100, context="info")
        yield nagiosplugin.Metric("data_age", mib.seconds("lbDataAge", v["lbDataAge"]), "s", min=0, context="age")
        yield nagiosplugin.Metric("admin_state", state.admin_state, context="admin")
        if v.get("lbAdminFileStatus") == _ADMIN_FILE_PROBLEM:  # the agent keeps the last good settings
            yield nagiosplugin.Metric("admin_file", "problem", context="admin_file")
        if state.status == "unavailable":  # answers SNMP, but a login would fail there (sshd down, disk full)
            from snmplb.client.describe import unavailable_reason

            yield nagiosplugin.Metric("login", unavailable_reason(state) or "unavailable", context="login")


class AdminFileContext(nagiosplugin.Context):
    """An admin file the agent cannot use is WARNING: the server runs on the last good settings, and
    the admin's next change is refused until the file is fixed (lbAdminFileProblem says what is wrong)."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: nagiosplugin.Resource) -> nagiosplugin.Result:
        return self.result_cls(nagiosplugin.Warn, "admin file has a problem (see lbAdminFileProblem)", metric)


class LoginContext(nagiosplugin.Context):
    """A server that says it cannot take a login (lbStatus unavailable) is CRITICAL, with why."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: nagiosplugin.Resource) -> nagiosplugin.Result:
        return self.result_cls(nagiosplugin.Critical, f"cannot take a login: {metric.value}", metric)


class ReachableContext(nagiosplugin.Context):
    """A server that did not answer is CRITICAL, with the poller's reason."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: nagiosplugin.Resource) -> nagiosplugin.Result:
        return self.result_cls(nagiosplugin.Critical, f"unreachable: {metric.value}", metric)


class StaleContext(nagiosplugin.Context):
    """Figures too old for any client to use (over 30 s, MAX_DATA_AGE_MS) are CRITICAL, as a data age
    over --age-critical is: an agent that hangs must not look better as its figures age."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: nagiosplugin.Resource) -> nagiosplugin.Result:
        return self.result_cls(nagiosplugin.Critical, metric.value, metric)


class AdminContext(nagiosplugin.Context):
    """enabled: OK; draining: WARNING; disabled: CRITICAL (or WARNING, by option)."""

    def __init__(self, disabled_state: str) -> None:
        super().__init__("admin")
        self.disabled = nagiosplugin.Critical if disabled_state == "critical" else nagiosplugin.Warn

    def evaluate(self, metric: nagiosplugin.Metric, resource: nagiosplugin.Resource) -> nagiosplugin.Result:
        state = {"enabled": nagiosplugin.Ok, "draining": nagiosplugin.Warn}.get(metric.value, self.disabled)
        if metric.value not in ("enabled", "draining", "disabled"):
            state = nagiosplugin.Unknown
        return self.result_cls(state, f"admin state {metric.value}", metric)


class RowSummary(nagiosplugin.Summary):
    """The status line; ``notes`` (warnings about the plugin's own set-up) are appended to it."""

    def __init__(self, notes: tuple[str, ...] = ()) -> None:
        self.notes = notes

    def _with_notes(self, text: str) -> str:
        return "; ".join((text, *self.notes))

    def ok(self, results: nagiosplugin.Results) -> str:
        r = {res.metric.name: res.metric.value for res in results if res.metric is not None}
        text = (f"{r['admin_state']}, load {r['load_per_cpu']:.2f}/CPU, {r['mem_available']}% memory available, "
                f"{r['swap_pages_per_s']} swap pages/s, {r['sessions']} sessions")
        return self._with_notes(text + (f" ({r['sessions_free']} free)" if "sessions_free" in r else ""))

    def problem(self, results: nagiosplugin.Results) -> str:
        worst = results.most_significant
        return self._with_notes(", ".join(str(res) for res in worst))


def run(args: argparse.Namespace, env: dict[str, str], notes: tuple[str, ...] = ()) -> None:
    """Poll, evaluate, print the plugin's output and exit with its status (nagiosplugin's Runtime).

    The poll's deadline is computed here, once, before -t's alarm is set (``poll_deadline``).
    """
    deadline = poll_deadline(args.timeout_ms, args.timeout, time.monotonic())
    check = nagiosplugin.Check(
        RowResource(env, deadline),
        ReachableContext("reachable"),
        StaleContext("stale"),
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
        LoginContext("login"),
        AdminFileContext("admin_file"),
        RowSummary(notes),
    )
    check.main(verbose=args.verbose, timeout=args.timeout)
