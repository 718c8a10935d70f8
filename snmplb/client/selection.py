"""One login's selection, sans-IO: settings in, a plan out; the servers' states in, a decision out.

Every front end drives this object with its own I/O, and none re-derives any
of it: get_hosts, `snmplb pick` and `connect`, `snmplb status`, `snmplb feed`,
the chooser (through the feed's poll) and the simulator (bench/storm.py).

    selection = Selection(settings, rng, client_id)
    plan = selection.plan()               # which servers to poll, which to hold as the hedge
    ...poll plan.polled; poll plan.hedge too if selection.needs_hedge(...)...
    result = selection.decide(states, lbserver_choice)

Nothing here polls, sleeps, reads a file or the clock: a table of states in a
test fully determines the answer, and the same ``random.Random`` gives the
same draws (the simulator's seeds repeat across versions).
"""

from __future__ import annotations

from snmplb.client.algorithms import Context, Decision, decide, passes_thresholds
from snmplb.client.sampling import sample_servers, weight_drift
from snmplb.client.settings import ClientSettings, Server, pool_of, refusal, sample_weights_of
from snmplb.client.serverstate import Failure, ServerState
from snmplb.record import record

TYPE_CHECKING = False  # typing's flag without importing typing; mypy knows the name
if TYPE_CHECKING:  # annotations only: collections.abc imports collections, get_hosts' start-up does without
    import random
    from collections.abc import Sequence


class User(record("User", "name groups question", defaults=((), b""))):
    """The user a login is for, where it is known (pick/connect --user, the session wrappers, the PAM hook).

    name (str); groups (tuple of str): theirs as NSS sees them on this client (LB_POOLS); question (bytes):
    the question about their sessions (``snmplb.affinity.question``), b"" when none is asked (no site key,
    or LB_AFFINITY=no).
    """

    __slots__ = ()


class Plan(record("Plan", "polled hedge early ask_lbserver refused question", defaults=(b"",))):
    """What to poll for one login.

    polled (tuple of Server): the servers to poll at once, in configured order.
    hedge (tuple of Server): the servers LB_SAMPLE left out; polled too only when ``Selection.needs_hedge``
    says so (the poller decides when: ``poller.hedge_time``).
    early (bool): the sampled mode's early cut (``poller.settle_wait``): once one polled server has a
    usable answer, the others are waited for only a few of its round trips.
    ask_lbserver (bool): ask ltsp-cluster's lbserver (LB_LBSERVER_URL) alongside the poll.
    refused (str): why nothing may be polled with these settings ("" when it may: ``settings.refusal``).
    question (bytes): the user's question, asked in each server's GET (b"": none).
    """

    __slots__ = ()


class Drift(record("Drift", "problem config seen")):
    """LB_SAMPLE_WEIGHTS disagreeing with the polled lbWeight, as a finding a front end can remember.

    problem (str): the message (also in Result.problems). config (str): each configured server's sample
    weight, ``host:port=weight`` in configured order: what the admin sets. seen (tuple of (str, int)):
    each polled server that answered with a weight, as ``host:port`` and its lbWeight. Host names and
    weights only: nothing here is a secret.
    """

    __slots__ = ()

    def news(self, kept: str) -> tuple[bool, str]:
        """Whether this finding is news against ``kept`` (what ``news`` returned at an earlier login; ""
        for none), and what to keep now.

        The rule: news when nothing was kept, when the configuration differs from the kept one (LB_SERVERS
        or LB_SAMPLE_WEIGHTS changed), or when a polled server publishes another lbWeight than the one kept
        for it. A server not kept yet, under the same configuration, is only added: the finding (these
        entries disagree with what the fleet publishes) was said, and LB_SAMPLE polls a different pair at
        each login. What is kept: one line for the configuration, one per server, each a short digest
        (blake2b) of its text, and the server's lbWeight; at most MAX_KEPT lines are read back.
        """
        import hashlib

        def digest(text: str) -> str:
            return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()

        lines = kept.splitlines()[:MAX_KEPT]
        config = "config " + digest(self.config)
        weights: dict[str, str] = {}
        if lines[:1] == [config]:
            for key, _, weight in (ln.partition(" ") for ln in lines[1:]):
                if len(key) == 16 and key.isascii() and key.isalnum() and weight.isascii() and weight.isdigit():
                    weights[key] = weight  # anything else is no line this wrote: dropped
        news = not weights and lines[:1] != [config]
        for server, weight in self.seen:
            key = digest(server)
            news = news or weights.get(key, str(weight)) != str(weight)
            weights[key] = str(weight)
        return news, "\n".join([config, *(f"{k} {w}" for k, w in list(weights.items())[-MAX_KEPT + 1:])]) + "\n"


MAX_KEPT = 4096  # Drift.news: lines of an earlier login's state read back (a fleet's servers, and the configuration)


class Result(record("Result", "states decision problems drift affinity", defaults=(None, ""))):
    """A login's outcome: states (the polled servers', in configured order), decision (a Decision),
    problems (tuple of str) the poll revealed about the settings: LB_SAMPLE_WEIGHTS drifting from
    lbWeight, drift (a Drift, or None): that problem as a finding, for the front ends that say it
    once per change rather than at every login (get_hosts), and affinity (str): how the user's sessions
    decided ("" when they did not: no user, no question, or no session of theirs that may be resumed)."""

    __slots__ = ()

    @property
    def usable(self) -> bool:
        """Whether the decision chose among servers that may take a login, or sends the user back to a
        session of theirs (when neither, the decision is the configured list, so that LDM can still try)."""
        return any(s.eligible for s in self.states) or bool(self.affinity)


class Selection:
    """The login selection for one set of settings, a random source and this client's identity.

    ``settings``: the login's ClientSettings (``sources.load``). ``rng``: every random draw (the sample,
    the algorithms). ``client_id``: `sticky`'s identity (the default route's MAC unless LB_CLIENT_ID).
    ``user``: the user, where known (a ``User``): their pool (LB_POOLS) stands for LB_SERVERS in
    everything below, and their question is asked of every server of it (no sample: the server that
    holds their session must be asked).
    """

    __slots__ = ("settings", "rng", "client_id", "user", "pool")

    def __init__(self, settings: ClientSettings, rng: random.Random, client_id: str = "",
                 user: User | None = None) -> None:
        self.rng, self.client_id, self.user = rng, client_id, user
        self.pool = ""  # the user's pools' names ("" without pools, or without a user)
        if user is not None:
            servers, self.pool = pool_of(settings, user.groups)
            settings = settings._replace(servers=servers)
        self.settings = settings

    @property
    def sampled(self) -> bool:
        """The sampled mode (LB_SAMPLE): fewer servers polled than configured."""
        sample: int = self.settings.sample  # typed for mypy (a record's fields are Any to it)
        return 0 < sample < len(self.settings.servers)

    def plan(self, every: bool = False, ask_lbserver: bool | None = None) -> Plan:
        """What to poll. ``every``: poll every server, whatever LB_SAMPLE says (the views show them all);
        ``ask_lbserver``: default, when the algorithm is `lbserver` (the status view asks it always).

        In the sampled mode, the sample is drawn in proportion to LB_SAMPLE_WEIGHTS (``sample_servers``,
        which draws from ``rng``) and the rest held as the hedge.
        """
        s = self.settings
        ask = (s.algorithm == "lbserver") if ask_lbserver is None else ask_lbserver
        ask = ask and bool(s.lbserver_url)
        refused = refusal(s)
        question: bytes = self.user.question if self.user is not None else b""
        if every or question or not self.sampled:
            return Plan(s.servers, (), False, ask, refused, question)
        polled, unpolled = sample_servers(s.servers, s.sample, self.rng, sample_weights_of(s.servers, s.sample_weights))
        return Plan(tuple(polled), tuple(unpolled), True, ask, refused)

    def usable(self, state: ServerState) -> bool:
        """Whether an answer settles the sample: the server may be chosen and passes the thresholds
        (LB_MAX_LOAD, LB_MAX_RESPONSE_MS, LB_SKIP_SWAPPING), so that a sample of only swapping or slow
        servers makes the healthy rest be polled."""
        return state.eligible and passes_thresholds(state, self.settings)

    def needs_hedge(self, states: Sequence[ServerState]) -> bool:
        """Whether the hedge must be polled, once the polled servers' ``states`` are all in: none usable."""
        return not any(self.usable(st) for st in states)

    @staticmethod
    def not_polled(plan: Plan) -> list[ServerState]:
        """The states of a plan that must not poll (``plan.refused``): every server, failed NOT_POLLED."""
        # The reason is said once by the settings' own problem: each server says only that it was not polled.
        return [ServerState.failed(s.host, s.port, Failure.NOT_POLLED, "not polled (the settings forbid it)")
                for s in plan.polled + plan.hedge]

    def decide(self, plan: Plan, states: Sequence[ServerState], lbserver_choice: str | None = None,
               algorithm: str | None = None) -> Result:
        """The decision on the polled servers' ``states`` (the hedge's, if polled, after them).

        ``algorithm``: another registered algorithm than LB_ALGORITHM (the status view shows each).
        Servers that were never polled are never listed, unless nothing usable answered: then the
        configured list, as without sampling (``algorithms.decide``'s rule).
        """
        s = self.settings
        ordered = list(states)
        if plan.hedge:
            rank = {srv: i for i, srv in enumerate(s.servers)}
            ordered.sort(key=lambda st: rank.get(Server(st.name, st.port), len(rank)))
        decision = decide(algorithm or s.algorithm, ordered, Context(s, self.rng, self.client_id, lbserver_choice))
        if plan.hedge and not any(st.eligible for st in ordered):
            seen = {st.name for st in ordered}
            listed = set(decision.hosts) | {u.host for u in plan.hedge if u.host not in seen}
            in_order = tuple(h for h in dict.fromkeys(x.host for x in s.servers) if h in listed)
            decision = Decision(in_order[:s.max_hosts] if s.max_hosts else in_order,
                                decision.note + f"; {len(listed) - len(decision.hosts)} not polled")
        decision, why = self.affinity(decision, ordered)
        if self.user is not None and not s.servers:
            decision = Decision((), f"LB_POOLS: no server for {self.user.name} (in no pool, and every server is in one)")
        if plan.early:
            weights = sample_weights_of(tuple(Server(x.name, x.port) for x in ordered), s.sample_weights)
            problem = weight_drift(ordered, weights)
            if problem:
                config = " ".join(f"{x.host}:{x.port}={w}"
                                  for x, w in zip(s.servers, sample_weights_of(s.servers, s.sample_weights)))
                weights_seen = tuple((f"{x.name}:{x.port}", x.weight) for x in ordered if x.ok)
                return Result(tuple(ordered), decision, (problem,), Drift(problem, config, weights_seen), why)
        return Result(tuple(ordered), decision, (), None, why)

    def affinity(self, decision: Decision, states: Sequence[ServerState]) -> tuple[Decision, str]:
        """The decision with the user's own servers first, and why ("" when the user has none here).

        A server holding a session of theirs comes before the algorithm's choice: one with a session
        waiting for a reconnect first, then in configured order. A server that would take no new login
        (draining, full, weight 0) but may still be reconnected to (``takes_reconnect``) counts only with
        a session waiting: going back there resumes it, while a login next to a session in use (an ssh
        session, an X2Go session running elsewhere) would be a new session, which drain forbids.
        LB_AFFINITY=no asks no question (the driver's rule), and then no state carries an answer.
        """
        if self.user is None or not self.user.question or not self.settings.affinity:
            return decision, ""
        homes = [st for st in states if st.takes_reconnect and (st.user_sessions or 0) > 0
                 and (st.eligible or (st.user_waiting or 0) > 0)]
        if not homes:
            return decision, ""
        homes.sort(key=lambda st: 0 if (st.user_waiting or 0) > 0 else 1)  # stable: configured order kept
        hosts = tuple(dict.fromkeys([*(st.name for st in homes), *decision.hosts]))
        max_hosts: int = self.settings.max_hosts
        home = homes[0]
        waiting = home.user_waiting or 0
        count = home.user_sessions or 0
        why = (f"affinity: {self.user.name} has {count} session{'s' if count != 1 else ''} on {home.name}"
               + (f", {waiting} waiting for a reconnect" if waiting else "")
               + (" (draining: it still takes its own sessions back)" if home.admin_state == "draining" else ""))
        return Decision(hosts[:max_hosts] if max_hosts else hosts, f"{why}; otherwise {decision.note}"), why
