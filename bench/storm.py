"""Login-storm simulator: the project's own algorithms, unchanged, on a simulated fleet.

A deterministic (seeded) discrete-event simulation, 1 s steps. Every login
drives ``snmplb.client.selection.Selection`` -- the selection get_hosts runs, with the same
``ClientSettings`` -- and so the real ``algorithms.decide`` and the sampled mode.
Each server's published row is built by the agent's own code
(``agent.values.compute_values``, ``agent.verdict`` rules) from a simulated /proc sample,
and turned into the ``ServerState`` the poller would produce; a dead server is a
failed poll, a slow one answers in 800 ms.

The model (constants below, all in one place):
- its ssh connection is established 0.3-1 s after the choice (lbSshConnections;
  lbLoginRate counts the connections opened over the last 10 s, as the agent does;
  lbLoginsConnecting the ones no session has matched yet, by the agent's own
  ``tcpconns.Connecting``);
- a session appears on its server 3-8 s after the choice (ssh, PAM, logind);
- its desktop starts for 20 s (0.5 runnable task), then idles (0.1);
- its memory grows linearly to 500-900 MiB over 60 s after it appears;
- the load averages are Linux's: every 5 s, load = load*e + n*(1-e) with
  e = exp(-5/60), exp(-5/300), exp(-5/900);
- memory beyond RAM is swapped: the swap counters climb, the agent's rule
  (50 pages/s) then says "swapping";
- clients see rows published every T seconds (T = 0: every second), on top of
  the lags above; each agent refreshes on its own clock (a random phase per
  server, as agents started at different times do), and lbDataAge tells a
  client how old the row it got is. The report also shows the worst case,
  every agent refreshing at the same instants (--synchronized rows).

Switchable assumptions (``Model``, one per scenario): how fast the logins arrive
(``storm_s``), session memory (uniform 500-900 MiB, or lognormal with the same
mean and sigma 0.6), the login delay (``appear``), whether the agents' ssh
connection count works (``ssh_connections``) and how many steady non-login
ssh connections each server holds (``background_ssh``), whether the rows at
the storm's start were taken at each agent's last refresh before it
(``prestorm``; otherwise every agent refreshes as the storm starts), a
server that goes silent for a while (``silent``), every agent restarting at
once (``restart_s``: a configuration push restarting snmpd; its first row has
lbLoginRateSpan 0 and lbLoginRate 0, the next ones count only the connections
opened since, and the agents refresh together from then on), and arrivals
rising then falling (``rise_fall``: triangular, the peak at a third). In step or not: the report's
synchronized tables (every agent refreshing at the same instants).

Scenarios (from the spec's use cases and issue 12; ``SCENARIOS``):
- rudolfo: 1400 clients log in within 60 s on 30 servers: 10 big (16 CPUs,
  64 GiB, weight 200), 20 normal (8 CPUs, 32 GiB, weight 100), of which one
  never answers and one answers in 800 ms;
- flash: Rudolfo's clients within 20 s, rows up to T s old taken before it;
- sizes: 32 servers of four sizes (4/8/16/32 GiB, CPUs and weight scaled), 540 clients;
- lognormal, no-lbssh, background-ssh, slow-logins (sessions show 8-20 s
  after the choice), silent (a big server answers nothing from 20 s to 80 s):
  Rudolfo under those assumptions;
- restart (issue 23): Rudolfo with every agent restarted at 30 s, in the middle
  of the storm; rise-fall: Rudolfo's storm rising then falling, sessions
  showing 5-20 s after the choice;
- day: after Rudolfo's morning storm, an hour of logins and logouts (sessions of
  200 s plus an exponential half hour) holding 1400 sessions, lognormal memory:
  memory is in sight here, and what swaps is where the day's logins went;
- day85 (issue 23): the working day at 85 % of the fleet's memory (1490 sessions), lognormal sigma 1.0;
- hogs (issue 23): Rudolfo with CPU hogs (runnable tasks that are no session's) on four servers, 0.25-0.75
  per CPU; its max/mean, its blind-window floor and perfect placement by counts are over the capacity the
  hogs leave (``capacity_left``: the weight times the share of the CPUs the hog leaves);
- margot: 17 clients within 60 s on 3 desktops (4 CPUs/8 GiB twice, weight 100;
  8 CPUs/16 GiB, weight 200); margot-slow and margot-slow-big: one small
  desktop, or the big one, answering in 800 ms;
- wave: after Rudolfo's storm has settled, a new normal server joins; 120 s
  later 30 % of the clients log out and back in within 60 s;
- moves: every client chooses once on the settled fleet; then one server dies
  and they choose again (which clients move?), and a second day (who keeps
  their server?);
- reconnect (issue 19): after Rudolfo's storm has settled, a network blip: 40 %
  of the users come back within a minute, their xrdp/X2Go sessions waiting on
  their servers, while 140 new users log in. With affinity each returning
  login asks the user's question, and each server's state carries its agent's
  answer (lbUserSessions, lbUserWaiting) built from the simulator's own
  bookkeeping of who has a session where, from the same sample as its row;
  without, they choose afresh, and a session left behind keeps its memory.
  Landing on one's own server resumes the session either way.
Each scenario compares the default with the prototype, random, weighted, two
choices, sticky, and "perfect placement by counts": every login to the server
with the fewest sessions per capacity at that instant (the simulator's
knowledge, not a client's), the reference for what swapping placement by
counts cannot avoid; and "perfect placement by memory in sight": every login
to the server with the least memory in use plus, for each session younger
than its memory's growth, at least a typical session (what an agent reading
each session's age and memory could know, fresh): the reference for what
memory figures can avoid at best.

    .venv/bin/python bench/storm.py --jobs 2        # full report: docs/balance.md, .json and docs/balance-*.png
    .venv/bin/python bench/storm.py --seeds 2 --no-plots --out /tmp/x.md   # quick look
    .venv/bin/python bench/storm.py --scenarios-only --seeds 3 --periods 10 --out /tmp/s.md  # the site shapes
    .venv/bin/python bench/storm.py --reconnect-only --seeds 10 --periods 10 --out bench/results/reconnect.md

Measures, per algorithm and staleness T: max/mean (the fullest live server's
sessions per unit of capacity over the fleet's average), the worst peak memory
(over 100 % = swapping) and how many servers swapped (and for how many server-minutes: swap_minutes,
counted from the day's start in the working days), the share of logins
started on a server that was overloaded at that moment (swapping, or load per
CPU above 2), logins to the dead and to the slow server, the newcomer's share
of the wave against its fair (capacity) share and against the share that brings it to the fleet's
level (the slow start aims at the first), for the moves, the share of
clients that moved against the dead server's own share, and for the reconnect
wave, the returning users who got their session back and the sessions left
waiting.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from snmplb import mib  # noqa: E402
from snmplb.adminfile import AdminSettings  # noqa: E402
from snmplb.client.selection import Selection, User  # noqa: E402
from snmplb.client.balanced import IN_TIME_SHARE  # noqa: E402
from snmplb.agent.verdict import HealthPolicy  # noqa: E402
from snmplb.agent.procfs import ProcSample, swap_rates  # noqa: E402
from snmplb.agent.logins import SessionCount  # noqa: E402
from snmplb.agent.tcpconns import Connecting  # noqa: E402
from snmplb.agent.usersessions import UserSessions  # noqa: E402
from snmplb.affinity import QUESTION_SIZE  # noqa: E402
from snmplb.client.settings import ClientSettings, Server  # noqa: E402
from snmplb.agent.values import compute_values  # noqa: E402
from snmplb.client.serverstate import ServerState  # noqa: E402

APPEAR = (3.0, 8.0)
CONNECT = (0.3, 1.0)
START_S, START_CPU, IDLE_CPU = 20.0, 0.5, 0.1
MEM_RAMP_S, SESSION_MEM = 60.0, (500.0, 900.0)
BASE_MEM, BASE_RUN = 1536.0, 0.2
OVERLOAD_LOAD = 2.0
SWAP_PAGES_PER_MB = 256 / 10  # pages/s swapped per MiB beyond RAM
STORM_S, SETTLE_S = 60.0, 400.0
SLOW_RTT, FAST_RTT = 800.0, 1.0
EXP = (math.exp(-5 / 60), math.exp(-5 / 300), math.exp(-5 / 900))
POLICY = HealthPolicy()
LOGNORMAL_SIGMA = 0.6  # lognormal session memory: a few users with big browsers (same mean as the uniform)
LOGNORMAL_MAX = 8192.0  # MiB: one session's memory, at most
TYPICAL_MEM = statistics.fmean(SESSION_MEM)  # a session's mean memory, either distribution
DAY_SESSION_S, DAY_MIN_SESSION_S, DAY_STEP_S = 1800.0, 200.0, 30.0  # the working day (Sim.day)
# The reconnect wave (reconnect_metrics): at BLIP_AT, after the storm has settled, a network blip disconnects
# BLIP_SHARE of the users; they come back within BLIP_S, and RECONNECT_NEW new users log in within the same BLIP_S.
BLIP_AT, BLIP_SHARE, BLIP_S, RECONNECT_NEW = 3600.0, 0.4, 60.0, 140
# The question a returning user's login asks (its bytes never matter here: each server's answer is built from the
# simulator's bookkeeping, ``SimServer.user_answer``, as the agent's ``usersessions.Answers`` would give it).
SIM_QUESTION = bytes(QUESTION_SIZE)
DAY85_CLIENTS = 1490  # day85: the sessions that fill 85 % of Rudolfo's live memory (700 MiB each on average)


@dataclass(frozen=True)
class Model:
    """The model's switchable assumptions (the defaults are the model described above)."""

    storm_s: float = STORM_S  # the logins arrive uniformly within this many seconds
    session_mem: str = "uniform"  # "uniform": 500-900 MiB; "lognormal": same mean, sigma LOGNORMAL_SIGMA
    appear: tuple[float, float] = APPEAR  # a session shows on its server this long after the choice
    ssh_connections: bool = True  # False: the agents publish lbSshConnections 0 (tables unreadable)
    background_ssh: int = 0  # steady non-login ssh connections per server: uniform in [0, 2n], counted too
    prestorm: bool = False  # True: each row at the storm's start was taken at its agent's last refresh before
    silent: tuple[str, float, float] = ("", 0.0, 0.0)  # (server, from, until): it answers nothing then
    day_s: float = 0.0  # > 0: after the morning storm, a working day this long of logins and logouts (Sim.day)
    restart_s: float = 0.0  # > 0: every agent restarts at this second (a configuration push restarts snmpd)
    rise_fall: bool = False  # True: arrivals rise then fall (triangular over storm_s, the peak at a third)
    sigma: float = LOGNORMAL_SIGMA  # the lognormal session memory's sigma (same mean whatever it is)

    def session_memory(self, rng: random.Random) -> float:
        if self.session_mem == "lognormal":
            mean = statistics.fmean(SESSION_MEM)
            return min(LOGNORMAL_MAX, rng.lognormvariate(math.log(mean) - self.sigma ** 2 / 2, self.sigma))
        return rng.uniform(*SESSION_MEM)


@dataclass
class Session:
    client: str
    appear: float
    mem: float
    connect: float


@dataclass
class SimServer:
    name: str
    cpus: int
    ram: float  # MiB
    weight: int
    dead: bool = False
    rtt: float = FAST_RTT
    joined_at: float = -86400.0
    phase: float = 0.0  # publishes at the seconds t where (t - phase) % T == 0
    published_at: float = 0.0
    ramping: list[Session] = field(default_factory=list)  # appeared less than the ramp ago, or pending
    steady: int = 0
    steady_mem: float = 0.0
    loads: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.2])
    pswp: int = 0
    history: list[ProcSample] = field(default_factory=list)
    mem: float = 0.0  # set by step()
    run: float = BASE_RUN
    peak: float = 0.0
    published: ServerState | None = None
    clients: set[str] = field(default_factory=set)
    base_mem: float = BASE_MEM
    background: int = 0  # steady ssh connections that are not logins (admins, rsync, monitoring)
    mem_of: dict[str, float] = field(default_factory=dict)  # each client's session memory
    waiting: set[str] = field(default_factory=set)  # users whose session here waits for a reconnect (disconnected)
    # Each user's sessions as of the last published row (the agent answers lbUserTable from the same sample as
    # lbRow): the users with a session that has appeared, and those of them waiting. Kept only when the run
    # asks users' questions (Sim.users).
    published_users: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    agent_start: float = -86400.0  # when its agent started: connections before are not counted as new
    hog: float = 0.0  # runnable tasks that are no session's (a backup, a runaway process), all the time
    swap_s: float = 0.0  # seconds with memory beyond RAM (swapping), counted from the storm (or the day)
    connecting: Connecting = field(default_factory=Connecting)  # the agent's lbLoginsConnecting, fed at each row

    @property
    def capacity_left(self) -> float:
        """The capacity a hog leaves: its weight times the share of its CPUs the hog does not take."""
        return self.weight * max(0.0, 1.0 - self.hog / self.cpus)

    def appeared(self, t: float) -> int:
        return self.steady + sum(1 for s in self.ramping if s.appear <= t)

    def connected(self, t: float) -> int:
        """Established ssh connections: sessions, and logins still connecting."""
        return self.background + self.steady + sum(1 for s in self.ramping if s.connect <= t)

    def step(self, t: float) -> None:
        """Advance memory, runnable tasks, swap counters and (every 5 s) the load averages to time t."""
        done = [s for s in self.ramping if t - s.appear >= max(MEM_RAMP_S, START_S)]
        for s in done:
            self.ramping.remove(s)
            self.steady += 1
            self.steady_mem += s.mem
        mem, run = self.base_mem + self.steady_mem, BASE_RUN + self.hog + IDLE_CPU * self.steady
        for s in self.ramping:
            age = t - s.appear
            if age >= 0:
                mem += self.seen(s, t)
                run += START_CPU if age < START_S else IDLE_CPU
        self.mem, self.run = mem, run
        overflow = max(0.0, mem - self.ram)
        self.pswp += int(overflow * SWAP_PAGES_PER_MB)
        self.swap_s += overflow > 0
        if int(t) % 5 == 0:
            self.loads = [ld * e + run * (1 - e) for ld, e in zip(self.loads, EXP)]
        self.peak = max(self.peak, mem / self.ram)

    def seen(self, session: Session, t: float) -> float:
        """How much of a session's memory shows at time t."""
        age = t - session.appear
        return session.mem * min(1.0, age / MEM_RAMP_S) if age >= 0 else 0.0

    def mature(self, session: Session, t: float) -> bool:
        return t - session.appear >= MEM_RAMP_S

    def in_sight(self, t: float) -> float:
        """Memory in use plus what a server could know is still to come, now: each session less than its
        growth time old counts at least TYPICAL_MEM (an agent that read each session's age and memory;
        the reference ORACLE_MEM places by it)."""
        mem = self.base_mem + self.steady_mem
        for x in self.ramping:
            seen = self.seen(x, t)
            mem += seen if self.mature(x, t) else max(seen, TYPICAL_MEM)
        return mem

    def overloaded(self) -> bool:
        return self.mem > self.ram or self.loads[0] / self.cpus > OVERLOAD_LOAD

    def user_sessions_now(self, t: float) -> frozenset[str]:
        """The users with a session here at time t as logind shows them: a login's session appears only
        ``appear`` after its choice (usersessions.collect counts logind's sessions)."""
        pending = {s.client for s in self.ramping if s.appear > t}
        return frozenset(c for c in self.clients if c not in pending)

    def user_table(self) -> dict[str, UserSessions]:
        """Each user's sessions here as the agent's sampler collected them with the last published row:
        what ``usersessions.Answers`` answers questions from (one session per user per server here; waiting:
        disconnected, as xrdp and X2Go keep a session after a network blip)."""
        present, waiting = self.published_users
        return {u: UserSessions(1, int(u in waiting)) for u in present}

    def user_answer(self, user: str) -> dict[str, int]:
        """lbUserSessions and lbUserWaiting for ``user``'s question, as the agent answers it from the last
        published sample (``Answers.answer`` on ``user_table``: 0 and 0 for a user with no session here),
        without an HMAC per user and server."""
        present, waiting = self.published_users
        return {"lbUserSessions": int(user in present), "lbUserWaiting": int(user in present and user in waiting)}

    def publish(self, t: float, login_rate: bool = True, ssh_connections: bool = True, users: bool = False) -> None:
        """The row a poll would return now, made by the agent's own code; ``users``: keep each user's
        sessions of the same sample too (``published_users``)."""
        if self.dead:
            self.published = ServerState(self.name, 161, None, "no answer within 1000 ms")
            return
        if users:
            self.published_users = (self.user_sessions_now(t), frozenset(self.waiting))
        proc = ProcSample(t, *self.loads, self.cpus, int(self.ram * 1024), int(max(0.0, self.ram - self.mem) * 1024),
                          8 << 20, 8 << 20, self.pswp, self.pswp, t - self.joined_at)
        self.history = (self.history + [proc])[-12:]
        self.published_at = t
        n = self.appeared(t)
        since = max(t - 10, self.agent_start)  # the agent's LoginRate: 10 s window, from its first sample on
        opened = sum(1 for s in self.ramping if since < s.connect <= t)
        values = compute_values(proc, swap_rates(self.history, 10.0), SessionCount(n, n, "logind"),
                                AdminSettings(weight=self.weight), POLICY, wall_time=t,
                                ssh_connections=self.connected(t) if ssh_connections else 0,
                                login_rate=opened * 6, login_rate_span=int(min(10.0, t - self.agent_start)),
                                logins_connecting=self._connecting(t, ssh_connections))
        row = mib.decode_row(values["lbRow"].at(t))
        if not login_rate:
            del row["lbLoginRate"], row["lbLoginRateSpan"]
        self.published = ServerState(self.name, 161, row, "", self.rtt)

    def _connecting(self, t: float, ssh_connections: bool) -> int:
        """lbLoginsConnecting from the agent's own ``tcpconns.Connecting``, fed the connections (each
        client's, once connected, and the background ones) and the sessions (each client's, once it has
        appeared) as the agent would see them now; the agent samples every second, this only when a row
        is published, which gives the same count (a session matches the oldest waiting connection either
        way) but for the 60 s expiry, which no login here reaches."""
        if not ssh_connections:  # TCP tables unreadable: no connection is known to open
            return self.connecting.update(t, None, frozenset())
        later = {s.client for s in self.ramping if s.connect > t}
        pending = {s.client for s in self.ramping if s.appear > t}
        conns = frozenset(self.clients - later) | frozenset(f"background{i}" for i in range(self.background))
        return self.connecting.update(t, conns, frozenset(self.clients - pending))

    def fast_forward(self, t_from: float, t_to: float) -> None:
        """Jump over a quiet period: every session steady, load averages decay towards the run queue."""
        for s in list(self.ramping):
            self.ramping.remove(s)
            self.steady += 1
            self.steady_mem += s.mem
        self.step(t_to)
        span = t_to - t_from
        self.loads = [self.run + (ld - self.run) * math.exp(-span / tau) for ld, tau in zip(self.loads, (60, 300, 900))]

    def logout(self, client: str) -> None:
        """The client's session ends (steady by then)."""
        self.clients.discard(client)
        self.waiting.discard(client)
        self.steady -= 1
        self.steady_mem -= self.mem_of.pop(client)


def rudolfo_fleet() -> list[SimServer]:
    fleet = [SimServer(f"big{i:02d}", 16, 65536, 200) for i in range(10)]
    fleet += [SimServer(f"app{i:02d}", 8, 32768, 100) for i in range(20)]
    fleet[-1].dead = True
    fleet[-2].rtt = SLOW_RTT
    return fleet


def hogs_fleet() -> list[SimServer]:
    """Rudolfo's fleet with CPU hogs on four live servers (a backup, a runaway process: runnable tasks that
    are no session's, running since long before the storm): a big one at 0.5 per CPU, three normal ones at
    0.25, 0.5 and 0.75 per CPU."""
    fleet = rudolfo_fleet()
    for s, per_cpu in zip((fleet[0], fleet[10], fleet[11], fleet[12]), (0.5, 0.25, 0.5, 0.75)):
        s.hog = per_cpu * s.cpus
        s.loads = [BASE_RUN + s.hog] * 3
    return fleet


def margot_fleet() -> list[SimServer]:
    return [SimServer("desk1", 4, 8192, 100), SimServer("desk2", 4, 8192, 100), SimServer("desk3", 8, 16384, 200)]


def margot_slow_fleet() -> list[SimServer]:
    """Margot's lab, one small desktop answering SNMP in 800 ms (above LB_MAX_RESPONSE_MS = 500)."""
    fleet = margot_fleet()
    fleet[0].rtt = SLOW_RTT
    return fleet


def margot_slow_big_fleet() -> list[SimServer]:
    """Margot's lab, the big desktop (half the capacity) answering SNMP in 800 ms."""
    fleet = margot_fleet()
    fleet[2].rtt = SLOW_RTT
    return fleet


def sizes_fleet() -> list[SimServer]:
    """Four sizes, 8 of each: 4/8/16/32 GiB with 2/4/8/16 CPUs, weight by size; base memory scales too."""
    return [SimServer(f"s{gib:02d}x{i}", gib // 2, gib * 1024.0, gib * 25 // 4, base_mem=BASE_MEM * gib / 32)
            for gib in (4, 8, 16, 32) for i in range(8)]


@dataclass(frozen=True)
class Variant:
    """An algorithm as an admin would configure it."""

    label: str
    algorithm: str
    sample: int = 0
    slow_start_s: int = 300
    login_rate: bool = True  # False: agents too old to publish lbLoginRate


VARIANTS = [Variant("thresholded (prototype)", "thresholded"), Variant("random", "random"),
            Variant("best", "best"), Variant("weighted", "weighted"), Variant("fixed", "fixed"),
            Variant("sticky", "sticky"), Variant("balanced", "balanced"),
            Variant("balanced, LB_SAMPLE=2", "balanced", sample=2),
            Variant("balanced, no slow start", "balanced", slow_start_s=0),
            Variant("balanced, agents without lbLoginRate (two choices)", "balanced", login_rate=False)]
TWO_CHOICES = "balanced, agents without lbLoginRate (two choices)"


@dataclass(frozen=True)
class Scenario:
    """A site shape: a fleet, how many clients log in, the model's assumptions."""

    key: str
    title: str
    fleet: object  # () -> list[SimServer]
    clients: int
    model: Model = Model()
    small: bool = False  # a few desktops: more seeds (the spread between seeds is large)


SCENARIOS = [
    Scenario("rudolfo", "Rudolfo: 1400 clients within 60 s, 30 servers (10 big), one dead, one slow",
             rudolfo_fleet, 1400),
    Scenario("flash", "Flash crowd: Rudolfo's 1400 clients within 20 s, rows at the start taken at each agent's last "
             "refresh before the storm (up to T s old, login rate 0)", rudolfo_fleet, 1400,
             Model(storm_s=20.0, prestorm=True)),
    Scenario("sizes", "Four sizes: 32 servers of 4/8/16/32 GiB (2/4/8/16 CPUs, weight 25/50/100/200), 540 clients",
             sizes_fleet, 540),
    Scenario("lognormal", "Rudolfo with lognormal session memory (mean 700 MiB, sigma 0.6: a few big browsers)",
             rudolfo_fleet, 1400, Model(session_mem="lognormal")),
    Scenario("no-lbssh", "Rudolfo with agents publishing lbSshConnections 0 (TCP tables unreadable)",
             rudolfo_fleet, 1400, Model(ssh_connections=False)),
    Scenario("background-ssh", "Rudolfo with 0-20 steady non-login ssh connections per server (admins, rsync, "
             "monitoring), counted in lbSshConnections", rudolfo_fleet, 1400, Model(background_ssh=10)),
    Scenario("slow-logins", "Rudolfo with slow logins: a session shows 8-20 s after the choice", rudolfo_fleet, 1400,
             Model(appear=(8.0, 20.0))),
    Scenario("silent", "Rudolfo with a big server silent from 20 s to 80 s (the storm's middle), then back",
             rudolfo_fleet, 1400, Model(silent=("big00", 20.0, 80.0))),
    Scenario("day", "A working day: after Rudolfo's morning storm, an hour of logins and logouts (sessions of "
             "about half an hour) holding 1400 sessions, lognormal session memory (the fleet's memory about 80 % "
             "used); servers that swapped during that hour", rudolfo_fleet, 1400,
             Model(session_mem="lognormal", day_s=3600.0)),
    Scenario("restart", "Rudolfo with every agent restarted at 30 s (a configuration push restarts snmpd "
             "everywhere in the middle of the storm): rows just after it carry the login rate of the connections "
             "opened since, 0 at first, and the agents refresh at the same instants from then on",
             rudolfo_fleet, 1400, Model(restart_s=30.0)),
    Scenario("rise-fall", "Rudolfo with arrivals rising then falling (triangular over 60 s, the peak at 20 s) "
             "and slow logins: a session shows 5-20 s after the choice", rudolfo_fleet, 1400,
             Model(rise_fall=True, appear=(5.0, 20.0))),
    Scenario("day85", "A working day at 85 % of the fleet's memory: as day, with 1490 sessions and heavier-tailed "
             "session memory (lognormal sigma 1.0, same mean); servers that swapped during that hour",
             rudolfo_fleet, DAY85_CLIENTS, Model(session_mem="lognormal", day_s=3600.0, sigma=1.0)),
    Scenario("hogs", "Rudolfo with CPU hogs on four servers (one big at 0.5 per CPU, three normal at 0.25, 0.5 and "
             "0.75 per CPU: a backup, a runaway process); max/mean over the capacity the hogs leave",
             hogs_fleet, 1400),
    Scenario("margot", "Margot: 17 clients within 60 s, 3 desktops", margot_fleet, 17, small=True),
    Scenario("margot-slow", "Margot with a small desktop (a quarter of the capacity) answering in 800 ms",
             margot_slow_fleet, 17, small=True),
    Scenario("margot-slow-big", "Margot with the big desktop (half the capacity) answering in 800 ms",
             margot_slow_big_fleet, 17, small=True),
]
SCENARIO = {sc.key: sc for sc in SCENARIOS}


def scenario_metrics(sc: Scenario, variant: Variant, period: float, seed: int, synchronized: bool = False) -> dict:
    """``storm_metrics`` for one scenario."""
    return storm_metrics(sc.fleet, variant, period, seed, sc.clients, synchronized, sc.model)


ORACLE = "perfect placement by counts"  # not an algorithm: the simulator places on true session counts
# Not an algorithm either: every login to the live server with the least memory in sight (``in_sight``)
ORACLE_MEM = "perfect placement by memory in sight"


class Sim:
    """One run: a fleet, a variant, a staleness T, a seed, a model."""

    def __init__(self, fleet: list[SimServer], variant: Variant, period: float, seed: int,
                 synchronized: bool = False, model: Model = Model()) -> None:
        self.fleet = fleet
        self.by_name = {s.name: s for s in fleet}
        self.variant = variant
        self.period = period
        self.rng = random.Random(seed)
        self.synchronized = synchronized
        self.model = model
        for s in fleet:
            self._phase(s)
        if model.background_ssh:
            for s in fleet:
                s.background = self.rng.randint(0, 2 * model.background_ssh)
        self.t = 0.0
        self.logins: list[tuple[float, str, str]] = []  # (time, client, server)
        self.bad_starts = 0
        self.to_silent = 0
        self.settings = self._settings()
        # The reconnect wave (``reconnect``): whether logins of returning users ask their question (affinity),
        # whether the servers keep each user's sessions with their rows (set when users are asked about),
        # the users coming back, and each return: (time, user, server, went home).
        self.affinity = False
        self.users = False
        self.coming_back: set[str] = set()
        self.returns: list[tuple[float, str, str, bool]] = []

    def _settings(self) -> ClientSettings:
        return ClientSettings(servers=tuple(Server(s.name) for s in self.fleet), algorithm=self.variant.algorithm,
                              sample=self.variant.sample, slow_start_s=self.variant.slow_start_s)

    def _phase(self, server: SimServer) -> None:
        """Each agent refreshes on its own clock (unless the run models a synchronized fleet)."""
        server.phase = 0.0 if self.synchronized or not self.period else float(self.rng.randrange(int(self.period)))

    def _publish(self, server: SimServer, t: float) -> None:
        server.publish(t, self.variant.login_rate, self.model.ssh_connections, self.users)

    def add_server(self, server: SimServer) -> None:
        self._phase(server)
        self.fleet.append(server)
        self.by_name[server.name] = server
        self.settings = self._settings()
        self._publish(server, self.t)

    def silent(self, server: SimServer) -> bool:
        name, start, end = self.model.silent
        return server.name == name and start <= self.t < end

    def login(self, client: str) -> str:
        if self.variant.algorithm == ORACLE:
            server = self._by_counts()
        elif self.variant.algorithm == ORACLE_MEM:
            server = self._by_memory()
        else:
            # The login selection get_hosts runs, driven by the simulated fleet: the hedge (the servers
            # LB_SAMPLE left out) is polled too when no sampled server has a usable answer.
            selection = Selection(self.settings, self.rng, client)
            plan = selection.plan()
            states = [self._aged(self.by_name[s.host]) for s in plan.polled]
            if plan.hedge and selection.needs_hedge(states):
                states += [self._aged(self.by_name[s.host]) for s in plan.hedge]
            server = self.by_name[selection.decide(plan, states).decision.hosts[0]]
        self._start(server, client)
        return server.name

    def _start(self, server: SimServer, client: str) -> None:
        """A new session for ``client`` on ``server``, chosen now."""
        self.bad_starts += server.overloaded()
        self.to_silent += self.silent(server)
        appear = self.t + self.rng.uniform(*self.model.appear)  # draws in this order: seeds repeat across versions
        mem = self.model.session_memory(self.rng)
        server.ramping.append(Session(client, appear, mem, self.t + self.rng.uniform(*CONNECT)))
        server.clients.add(client)
        server.mem_of[client] = mem
        self.logins.append((self.t, client, server.name))

    def blip(self, users: list[str]) -> None:
        """A network blip: each of ``users`` loses its connection, and its session waits on its server for a
        reconnect (xrdp and X2Go keep it until a timeout, by default none); they will come back
        (``coming_back``: ``run_until`` sends their arrivals to ``reconnect``)."""
        for s in self.fleet:
            for u in users:
                if u in s.clients:
                    s.waiting.add(u)
        self.coming_back.update(users)

    def reconnect(self, user: str) -> str:
        """A user back after the blip, from the same thin client, their session waiting on one server.

        With affinity the login asks the user's question, and each answering server's state carries its
        agent's answer (``asked``): the real Selection then sends the user home (``Selection.affinity``).
        Without, the login is a new one, as get_hosts' (no user). Either way, landing on the server where the
        session waits resumes it (xrdp-sesman and X2Go reconnect a user's disconnected session: no new
        session, no new memory); anywhere else a new session starts, and the old one keeps its memory.
        The references go home with affinity when home is up, else place as for a new login."""
        self.coming_back.discard(user)
        home = next((s for s in self.fleet if user in s.waiting), None)
        if self.variant.algorithm in (ORACLE, ORACLE_MEM):
            if self.affinity and home is not None and home in self._live():
                server = home
            else:
                server = self._by_counts() if self.variant.algorithm == ORACLE else self._by_memory()
        else:
            who = User(user, (), SIM_QUESTION) if self.affinity else None
            selection = Selection(self.settings, self.rng, user, who)
            plan = selection.plan()
            states = [self.asked(self.by_name[s.host], user) if who else self._aged(self.by_name[s.host])
                      for s in plan.polled]
            if plan.hedge and selection.needs_hedge(states):
                states += [self._aged(self.by_name[s.host]) for s in plan.hedge]
            server = self.by_name[selection.decide(plan, states).decision.hosts[0]]
        went_home = server is home
        self.returns.append((self.t, user, server.name, went_home))
        if went_home:
            server.waiting.discard(user)
        else:
            self._start(server, user)
        return server.name

    def asked(self, server: SimServer, user: str) -> ServerState:
        """The state a poll asking ``user``'s question sees: the aged row, and when the agent answered, its
        lbUserSessions and lbUserWaiting for the user (``SimServer.user_answer``; serverquery.row_from_pdu
        puts them in the same values)."""
        st = self._aged(server)
        if not st.ok:
            return st
        return st._replace(values={**st.values, **server.user_answer(user)})

    def _by_counts(self) -> SimServer:
        """The reference: every login to the live server with the fewest sessions per capacity right now
        (what no client can know), ties at random."""
        return min(self._live(), key=lambda s: ((len(s.clients) + 1) / max(1e-9, s.capacity_left), self.rng.random()))

    def _by_memory(self) -> SimServer:
        """The other reference (ORACLE_MEM): every login to the live server with the least memory in
        sight (``in_sight``) with a typical session added, per MiB of RAM; ties at random."""
        return min(self._live(), key=lambda s: ((s.in_sight(self.t) + TYPICAL_MEM) / s.ram, self.rng.random()))

    def _live(self) -> list[SimServer]:
        """The servers that are up and answering now."""
        return [s for s in self.fleet if not s.dead and not self.silent(s)]

    def _aged(self, server: SimServer) -> ServerState:
        """The published row as a poll now sees it: lbDataAge counts the time since it was taken."""
        if self.silent(server):
            return ServerState(server.name, 161, None, "no answer within 1000 ms")
        st = server.published
        if not st.ok:
            return st
        return st._replace(values={**st.values, "lbDataAge": int((self.t - server.published_at) * 1000)})

    def run_until(self, end: float, arrivals: list[tuple[float, str]]) -> None:
        """Step to ``end``; ``arrivals`` (time, client) log in as their time comes."""
        queue = sorted(arrivals)
        i = 0
        while self.t <= end:
            for s in self.fleet:
                s.step(self.t)
            if self.model.restart_s and self.t == self.model.restart_s:
                self._restart()
            for s in self.fleet:
                if s.published is None and self.model.prestorm and self.period and s.phase:
                    self._publish(s, s.phase - self.period)  # its last refresh before the storm (idle then)
                elif s.published is None or self.period == 0 or (self.t - s.phase) % self.period == 0:
                    self._publish(s, self.t)
            while i < len(queue) and queue[i][0] <= self.t:
                if queue[i][1] in self.coming_back:
                    self.reconnect(queue[i][1])
                else:
                    self.login(queue[i][1])
                i += 1
            self.t += 1.0

    def _restart(self) -> None:
        """Every agent restarts now (``Model.restart_s``): its first row at once (``run_until`` publishes
        it), its login rate counting only the connections opened since, and from then on every agent
        refreshes at the same instants."""
        for s in self.fleet:
            s.agent_start, s.phase, s.connecting = self.t, self.t, Connecting()

    def storm(self, clients: list[str], start: float) -> None:
        span = self.model.storm_s
        if self.model.rise_fall:  # rising then falling, as bench/storm_alt.py's storm
            times = [start + self.rng.triangular(0, span, span / 3) for _ in clients]
        else:
            times = [start + self.rng.uniform(0, span) for _ in clients]
        self.run_until(start + SETTLE_S, list(zip(times, clients)))

    def day(self, clients: list[str], steady: int) -> None:
        """A working day after the morning storm (``clients`` logged in, each ending after an exponential
        time of mean DAY_SESSION_S): the day's sessions end after DAY_MIN_SESSION_S plus an exponential time
        (mean DAY_SESSION_S), new ones arrive at random at the
        rate that keeps ``steady`` sessions, for ``model.day_s`` seconds. Each server's peak memory counts
        from the day's start: what swaps then swapped because of where the day's logins went."""
        where = {c: name for _, c, name in self.logins}
        ends = [(self.t + self.rng.expovariate(1 / DAY_SESSION_S), c) for c in clients]
        for s in self.fleet:
            s.peak, s.swap_s = 0.0, 0.0
        start, fresh = self.t, (f"d{i:05d}" for i in range(10 ** 6))
        rate = steady / (DAY_MIN_SESSION_S + DAY_SESSION_S)
        arrival = start + self.rng.expovariate(rate)
        while self.t < start + self.model.day_s:  # bounded: t grows by DAY_STEP_S each round
            stop = self.t + DAY_STEP_S
            arrivals = []
            while arrival <= stop - 1:  # run_until(stop - 1) places what arrives up to then
                arrivals.append((arrival, next(fresh)))
                arrival += self.rng.expovariate(rate)
            later = []
            for end, c in ends:
                server = self.by_name[where[c]]
                if end <= self.t and all(x.client != c for x in server.ramping):  # steady by then: it leaves
                    server.logout(c)
                else:
                    later.append((end, c))
            placed = len(self.logins)
            self.run_until(stop - 1, arrivals)
            for t, c, name in self.logins[placed:]:
                where[c] = name
                later.append((t + DAY_MIN_SESSION_S + self.rng.expovariate(1 / DAY_SESSION_S), c))
            ends = later

    def max_over_mean(self, in_use: bool = False) -> float:
        """The fullest live server's sessions per capacity over the fleet's: capacity is the weight, or
        what a CPU hog leaves of it (``capacity_left``) where a server has one; ``in_use``: without the
        sessions waiting for a reconnect (those the reconnect wave left behind)."""
        live = [s for s in self.fleet if not s.dead]
        held = {s.name: len(s.clients) - (len(s.waiting) if in_use else 0) for s in live}
        total = sum(held.values()) / sum(s.capacity_left for s in live)
        return max(held[s.name] / max(1e-9, s.capacity_left) for s in live) / total


def storm_metrics(fleet_maker, variant: Variant, period: float, seed: int, n_clients: int,
                  synchronized: bool = False, model: Model = Model()) -> dict:
    sim = Sim(fleet_maker(), variant, period, seed, synchronized, model)
    clients = [f"c{i:04d}" for i in range(n_clients)]
    sim.storm(clients, 0.0)
    if model.day_s:
        sim.day(clients, n_clients)
    dead = {s.name for s in sim.fleet if s.dead}
    slow = {s.name for s in sim.fleet if s.rtt == SLOW_RTT}
    return {
        "max_mean": sim.max_over_mean(),
        "peak_mem": max(s.peak for s in sim.fleet if not s.dead),
        "swapping": sum(1 for s in sim.fleet if s.peak > 1.0),
        "swap_minutes": sum(s.swap_s for s in sim.fleet) / 60,
        "bad_starts": sim.bad_starts / len(sim.logins),
        "to_dead": sum(1 for _, _, s in sim.logins if s in dead) + sim.to_silent,
        "to_slow": sum(1 for _, _, s in sim.logins if s in slow),
    }


def wave_metrics(variant: Variant, period: float, seed: int, model: Model = Model()) -> dict:
    sim = Sim(rudolfo_fleet(), variant, period, seed, model=model)
    clients = [f"c{i:04d}" for i in range(1400)]
    sim.storm(clients, 0.0)
    join = 3600.0
    for s in sim.fleet:
        s.fast_forward(sim.t, join)
    sim.t = join
    newcomer = SimServer("new00", 8, 32768, 100, joined_at=join)
    sim.add_server(newcomer)
    sim.run_until(join + 119, [])
    wave_start = sim.t
    leaving = sim.rng.sample(clients, int(0.3 * len(clients)))
    for c in leaving:
        for s in sim.fleet:
            if c in s.clients:
                s.logout(c)
    before = len(sim.logins)
    sim.run_until(wave_start + SETTLE_S, [(wave_start + sim.rng.uniform(0, sim.model.storm_s), c) for c in leaving])
    wave = sim.logins[before:]
    live_weight = sum(s.weight for s in sim.fleet if not s.dead)
    got = sum(1 for _, _, s in wave if s == newcomer.name) / len(wave)
    # The share that brings the newcomer to the fleet's level: the fleet's sessions per capacity after the
    # wave, times its capacity, over the wave's logins (about 3.3 times its capacity share in Rudolfo's fleet).
    level = sum(len(s.clients) for s in sim.fleet if not s.dead) / live_weight * newcomer.weight / len(wave)
    return {"new_share": got / (newcomer.weight / live_weight), "new_level_share": got / level,
            "max_mean": sim.max_over_mean(),
            "swapping": sum(1 for s in sim.fleet if s.peak > 1.0)}


def reconnect_metrics(variant: Variant, period: float, seed: int, affinity: bool, model: Model = Model()) -> dict:
    """Issue 19's reconnect wave: after Rudolfo's storm has settled (fast-forwarded to BLIP_AT), a network
    blip disconnects BLIP_SHARE of the users, whose sessions wait on their servers; they come back within
    BLIP_S while RECONNECT_NEW new users log in within the same BLIP_S. ``affinity``: the returning users'
    logins ask their question (LB_AFFINITY with a site key); without, they choose afresh and a session left
    behind keeps its memory. The same seed draws the same storm, blip and arrivals with or without affinity.

    home: the returning users who got their session back; max_mean: sessions held per capacity at the end
    (those left waiting included: they hold memory), fullest live server over the fleet's mean;
    max_mean_in_use: the same without the sessions left waiting (the users' own sessions only);
    swapping, peak_mem: from the blip on; left_waiting: sessions still waiting for a reconnect at the end
    (left behind); to_dead: logins sent to the dead server."""
    sim = Sim(rudolfo_fleet(), variant, period, seed, model=model)
    sim.users, sim.affinity = True, affinity
    clients = [f"c{i:04d}" for i in range(1400)]
    sim.storm(clients, 0.0)
    for s in sim.fleet:
        s.fast_forward(sim.t, BLIP_AT)
    sim.t = BLIP_AT
    sim.run_until(BLIP_AT + 29, [])  # the rows of the settled fleet, published on each agent's clock
    start = sim.t
    back = sim.rng.sample(clients, int(BLIP_SHARE * len(clients)))
    fresh = [f"n{i:04d}" for i in range(RECONNECT_NEW)]
    arrivals = [(start + sim.rng.uniform(0, BLIP_S), c) for c in back + fresh]
    for s in sim.fleet:
        s.peak = 0.0
    sim.blip(back)
    before = len(sim.logins)
    sim.run_until(start + SETTLE_S, arrivals)
    dead = {s.name for s in sim.fleet if s.dead}
    return {"home": sum(r[3] for r in sim.returns) / len(back), "max_mean": sim.max_over_mean(),
            "max_mean_in_use": sim.max_over_mean(in_use=True),
            "peak_mem": max(s.peak for s in sim.fleet if not s.dead),
            "swapping": sum(1 for s in sim.fleet if s.peak > 1.0),
            "left_waiting": sum(len(s.waiting) for s in sim.fleet),
            "to_dead": sum(1 for _, _, s in sim.logins[before:] if s in dead)}


def move_metrics(variant: Variant, seed: int) -> dict:
    """Who moves when a server dies, and who keeps their server on a second day (settled fleet, T = 0)."""
    sim = Sim(rudolfo_fleet(), variant, 0.0, seed)
    clients = [f"c{i:04d}" for i in range(1400)]
    sim.storm(clients, 0.0)
    first = {c: sim.login(c) for c in clients[:400]}  # decisions on the settled fleet (sessions added, ignored)
    again = {c: sim.login(c) for c in clients[:400]}
    victim = max((s for s in sim.fleet if not s.dead), key=lambda s: sum(1 for v in first.values() if v == s.name))
    victim.dead = True
    sim._publish(victim, sim.t)
    after = {c: sim.login(c) for c in clients[:400]}
    on_victim = sum(1 for v in first.values() if v == victim.name) / len(first)
    return {"kept": sum(first[c] == again[c] for c in first) / len(first),
            "moved": sum(first[c] != after[c] for c in first) / len(first), "ideal": on_victim}


def blind_floor(period: float, synchronized: bool, seeds: int = 2000, sc: Scenario | None = None) -> float:
    """What capacity-proportional chance gives: the scenario's fleet (Rudolfo's by default) perfectly
    level when each usable server's figures were last taken, then the logins of its blind window
    (Poisson, by capacity) -- nobody sees them before the storm ends. Blind window: T s when all agents
    refresh together at the storm's end, uniform in [0, T] s on their own clocks. max/mean as the storm
    reports it. A rule can pass it only by not spreading by capacity (``balanced`` gives big servers,
    whose counts vary less per unit of capacity, a little more)."""
    sc = sc or SCENARIO["rudolfo"]
    rng = random.Random(1)
    fleet = sc.fleet()
    usable = [s.capacity_left for s in fleet if not s.dead and s.rtt != SLOW_RTT]  # the weight, but hogs
    live = sum(s.capacity_left for s in fleet if not s.dead)
    if sum(usable) < IN_TIME_SHARE * live:  # as balanced's _pool: the slow servers then keep their share
        usable = [s.capacity_left for s in fleet if not s.dead]
    rate, n = sc.clients / sc.model.storm_s, sc.clients
    worst = []
    for _ in range(seeds):
        level = []
        for w in usable:
            blind = period if synchronized else rng.uniform(0, period)
            mean = rate * blind * w / sum(usable)
            level.append((n * w / sum(usable) - mean + _poisson(rng, mean)) / w)
        worst.append(max(level) / (n / live))
    return statistics.fmean(worst)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method (means here are below 50)."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit and k < 1000:
        k += 1
        p *= rng.random()
    return k


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


ORACLE_VARIANT = Variant(ORACLE, ORACLE)
ORACLE_MEM_VARIANT = Variant(ORACLE_MEM, ORACLE_MEM)
# What each scenario compares: the default against the usual alternatives, and the reference.
COMPARED = ["balanced", "thresholded (prototype)", "random", "weighted", TWO_CHOICES, "sticky", ORACLE, ORACLE_MEM]
REFERENCES = (ORACLE, ORACLE_MEM)  # the simulator's knowledge, not algorithms: never "the best other"
BY_LABEL = {v.label: v for v in VARIANTS + [ORACLE_VARIANT, ORACLE_MEM_VARIANT]}


def _job(job: tuple) -> tuple[tuple, dict]:
    """One run, by description (a process pool's unit of work; every run is seeded, so the result
    does not depend on which process runs it)."""
    kind, *rest = job
    if kind == "storm":
        key, label, T, seed, sync = rest
        return job, scenario_metrics(SCENARIO[key], BY_LABEL[label], T, seed, sync)
    if kind == "wave":
        label, T, seed = rest
        return job, wave_metrics(BY_LABEL[label], T, seed)
    if kind == "reconnect":
        label, T, seed, with_affinity = rest
        return job, reconnect_metrics(BY_LABEL[label], T, seed, with_affinity)
    label, seed = rest
    return job, move_metrics(BY_LABEL[label], seed)


def run_all(jobs: list[tuple], workers: int, cache: Path | None = None) -> dict[tuple, dict]:
    """Every job's metrics, by job; ``workers`` processes (1: in this process). ``cache``: a file of
    earlier runs' metrics (repr of a dict) to reuse, updated with the new ones (to rewrite the text
    without simulating again; delete it whenever the algorithms or the model change)."""
    import ast

    done = ast.literal_eval(cache.read_text()) if cache and cache.exists() else {}
    todo = [j for j in jobs if j not in done]
    if workers <= 1:
        done.update(map(_job, todo))
    else:
        import multiprocessing

        with multiprocessing.Pool(workers) as pool:
            done.update(pool.imap_unordered(_job, todo, chunksize=4))
    if cache:
        cache.write_text(repr(done))
    return done


def scenario_seeds(sc: Scenario, seeds: int) -> int:
    """Margot's lab is small and noisy: ten times the seeds (100 by default)."""
    return 10 * seeds if sc.small else seeds


def reconnect_jobs(seeds: int, periods: list[float]) -> list[tuple]:
    """The reconnect wave's runs: every compared algorithm with and without affinity, at T = 10 s (the
    reference staleness; the first period asked when 10 is not among them)."""
    return [("reconnect", label, T, s, aff) for label in COMPARED for T in reconnect_periods(periods)
            for aff in (True, False) for s in range(seeds)]


def reconnect_periods(periods: list[float]) -> list[float]:
    return [T for T in periods if T == 10.0] or periods[:1]


def reconnect_section(done: dict[tuple, dict], seeds: int, periods: list[float]) -> list[str]:
    """The reconnect wave's tables (``reconnect_metrics``), from the runs in ``done``."""
    lines = ["", "## Reconnect wave (issue 19): a network blip, 40 % of the users back within a minute", "",
             f"After Rudolfo's storm has settled, a network blip disconnects {BLIP_SHARE:.0%} of the 1400 users; "
             f"their xrdp/X2Go sessions wait on their servers. They come back within {BLIP_S:g} s while "
             f"{RECONNECT_NEW} new users log in within the same {BLIP_S:g} s. With affinity each returning "
             "user's login asks their question, and every server's answer (lbUserSessions, lbUserWaiting) is "
             "built from the simulator's bookkeeping as its agent would give it, from the same sample as its "
             "row; without, returning users choose afresh (a session left behind keeps holding its memory: "
             "xrdp and X2Go keep it until a timeout, by default none), and one who happens to land on their "
             "own server resumes their session. Home: returning users who got their session back. max/mean: "
             "sessions held per capacity at the end, those left waiting included (they hold memory, and logind "
             "and lbSessions count them); in use: without them. Swapping and peak memory "
             f"from the blip on. Means of {seeds} seeds; the same seed draws the same storm, blip and arrivals "
             "with and without affinity.", ""]
    for T in reconnect_periods(periods):
        lines += [f"### Stats published every {T:g} s", "",
                  "| algorithm | affinity | returning users home | max/mean | max/mean, sessions in use "
                  "| servers swapping | worst peak memory | sessions left waiting | logins to the dead server |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label in COMPARED:
            for aff in (True, False):
                r = [done[("reconnect", label, T, s, aff)] for s in range(seeds)]
                lines.append(f"| {label} | {'yes' if aff else 'no'} | {_mean(r, 'home'):.1%} | "
                             f"{_mean(r, 'max_mean'):.3f} | {_mean(r, 'max_mean_in_use'):.3f} | "
                             f"{_mean(r, 'swapping'):.1f} | {_mean(r, 'peak_mem'):.0%} | "
                             f"{_mean(r, 'left_waiting'):.0f} | {sum(x['to_dead'] for x in r)} |")
        lines.append("")
        def worse(label: str) -> list[str]:
            """Where affinity is worse than none for ``label``, at the tables' precision."""
            a = [done[("reconnect", label, T, s, True)] for s in range(seeds)]
            b = [done[("reconnect", label, T, s, False)] for s in range(seeds)]
            return [f"{name} {_mean(a, key):.{d}f} against {_mean(b, key):.{d}f}"
                    for key, name, d in (("max_mean", "max/mean", 3), ("swapping", "servers swapping", 1))
                    if round(_mean(a, key), d) > round(_mean(b, key), d)]

        own = worse("balanced")
        others = [f"{label}: {'; '.join(w)}" for label in COMPARED if label != "balanced" for w in [worse(label)] if w]
        lines += ["Target for the default (issue 19): with affinity no worse than without in max/mean and servers "
                  "swapping: " + ("**met**." if not own else "**not met**: " + "; ".join(own) + "."),
                  "", "Other rows where affinity is worse than none: " + ("; ".join(others) or "none") + ". "
                  f"Without affinity each returning user who lands elsewhere is one more login the algorithm places "
                  f"(about {int(BLIP_SHARE * 1400) + RECONNECT_NEW} instead of {RECONNECT_NEW}) and leaves a session "
                  "behind: more placements let it even out what the storm left (max/mean of sessions held falls "
                  "towards 1), while the memory held swaps more servers.", ""]
    return lines


def report(seeds: int, periods: list[float], plots: bool, out: Path, workers: int = 1,
           scenarios_only: bool = False, cache: Path | None = None) -> str:
    t0 = time.monotonic()
    lines = ["# Balance quality: the login-storm simulator", "",
             f"Generated by `bench/storm.py --seeds {seeds}` (means of {seeds} seeds, Margot's lab "
             f"{10 * seeds}; model and scenarios in its docstring). Regenerate (about 45 minutes on two cores): "
             "`.venv/bin/python bench/storm.py --jobs 2`; the numbers do not depend on `--jobs`.", ""]
    worst_periods = [T for T in periods if T >= 10]
    jobs: list[tuple] = []
    for sc in SCENARIOS:
        full = sc.key in ("rudolfo", "margot") and not scenarios_only
        labels = [v.label for v in VARIANTS] + [ORACLE, ORACLE_MEM] if full else COMPARED
        jobs += [("storm", sc.key, label, T, s, False) for label in labels for T in periods
                 for s in range(scenario_seeds(sc, seeds))]
    if scenarios_only:
        scen = {(sc.key, label, T): [done[("storm", sc.key, label, T, s, False)]
                                     for s in range(scenario_seeds(sc, seeds))]
                for done in [run_all(jobs, workers, cache)] for sc in SCENARIOS for label in COMPARED for T in periods}
        took = f"({time.monotonic() - t0:.0f} s to compute.)"
        return "\n".join(lines + _scenario_section(scen, periods) + ["", took, ""])
    jobs += [("storm", "rudolfo", v.label, T, s, True) for v in VARIANTS for T in worst_periods for s in range(seeds)]
    jobs += [("wave", v.label, T, s) for v in VARIANTS for T in periods for s in range(seeds)]
    jobs += [("moves", v.label, s) for v in VARIANTS for s in range(min(seeds, 3))]
    jobs += reconnect_jobs(seeds, periods)
    done = run_all(jobs, workers, cache)

    def runs(key: str, label: str, T: float, sync: bool = False) -> list[dict]:
        sc = SCENARIO[key]
        return [done[("storm", key, label, T, s, sync)] for s in range(scenario_seeds(sc, seeds))
                if ("storm", key, label, T, s, sync) in done]

    rud = {(v.label, T): runs("rudolfo", v.label, T) for v in VARIANTS + [ORACLE_VARIANT] for T in periods}
    mar = {(v.label, T): runs("margot", v.label, T) for v in VARIANTS for T in periods}
    wave = {(v.label, T): [done[("wave", v.label, T, s)] for s in range(seeds)] for v in VARIANTS for T in periods}
    moves = {v.label: [done[("moves", v.label, s)] for s in range(min(seeds, 3))] for v in VARIANTS}
    sync = {(v.label, T): runs("rudolfo", v.label, T, True) for v in VARIANTS for T in worst_periods}
    scen = {(sc.key, label, T): runs(sc.key, label, T) for sc in SCENARIOS for label in COMPARED for T in periods}

    lines += ["## Rudolfo: 1400 clients, 30 servers (10 big), one dead, one slow; storm within 60 s", ""]
    for T in periods:
        lines += [f"### Stats published every {T:g} s", "",
                  "| algorithm | max/mean | worst peak memory | servers swapping | logins started on an overloaded "
                  "server | logins to the dead server | logins to the slow server |",
                  "|---|---|---|---|---|---|---|"]
        for v in VARIANTS + [ORACLE_VARIANT]:
            r = rud[(v.label, T)]
            lines.append(f"| {v.label} | {_mean(r, 'max_mean'):.2f} | {_mean(r, 'peak_mem'):.0%} | "
                         f"{_mean(r, 'swapping'):.1f} | {_mean(r, 'bad_starts'):.1%} | {_mean(r, 'to_dead'):.0f} | "
                         f"{_mean(r, 'to_slow'):.1f} |")
        lines.append("")
    if worst_periods:
        lines += ["### Worst case: every agent refreshing at the same instants", "",
                  "| algorithm | " + " | ".join(f"max/mean, T = {T:g} s | servers swapping, T = {T:g} s"
                                                for T in worst_periods) + " |",
                  "|---|" + "---|---|" * len(worst_periods)]
        for v in VARIANTS:
            lines.append(f"| {v.label} | " + " | ".join(
                f"{_mean(sync[(v.label, T)], 'max_mean'):.2f} | {_mean(sync[(v.label, T)], 'swapping'):.1f}"
                for T in worst_periods) + " |")
        lines.append("")
    lines += [f"## Margot: 17 clients, 3 desktops; max/mean (means of {10 * seeds} seeds)", "",
              "| algorithm | " + " | ".join(f"T = {T:g} s" for T in periods) + " |",
              "|---|" + "---|" * len(periods)]
    for v in VARIANTS:
        lines.append(f"| {v.label} | " + " | ".join(f"{_mean(mar[(v.label, T)], 'max_mean'):.2f}" for T in periods)
                     + " |")
    lines += _scenario_section(scen, periods)
    lines += _wave_section(wave, periods)
    lines += ["", "## Moves: one server dies; a second day", "",
              "| algorithm | clients that moved | ideal (the dead server's clients) | kept their server on a second day |",
              "|---|---|---|---|"]
    for v in VARIANTS:
        r = moves[v.label]
        lines.append(f"| {v.label} | {_mean(r, 'moved'):.1%} | {_mean(r, 'ideal'):.1%} | {_mean(r, 'kept'):.1%} |")
    lines += reconnect_section(done, seeds, periods)
    def mm(label: str, T: float, digits: int = 2) -> str:
        return f"{_mean(rud[(label, T)], 'max_mean'):.{digits}f}" if (label, T) in rud else "n/a"

    def sw(label: str, T: float) -> str:
        return f"{_mean(rud[(label, T)], 'swapping'):.1f}" if (label, T) in rud else "n/a"

    def ms(label: str, T: float, digits: int = 2) -> str:
        return f"{_mean(sync[(label, T)], 'max_mean'):.{digits}f}" if (label, T) in sync else "n/a"

    def sws(label: str, T: float) -> str:
        return f"{_mean(sync[(label, T)], 'swapping'):.1f}" if (label, T) in sync else "n/a"

    floors = {(T, sy): blind_floor(T, sy) for T in worst_periods for sy in (False, True)}
    old_agents = "balanced, agents without lbLoginRate (two choices)"
    def sm(key: str, label: str, T: float, metric: str = "max_mean", digits: int = 2) -> str:
        return f"{_mean(scen[(key, label, T)], metric):.{digits}f}" if (key, label, T) in scen else "n/a"

    overloaded = [v.label for v in VARIANTS if any(_mean(rud[(v.label, T)], "bad_starts") > 0 for T in periods)]
    flat = {label: [_mean(rud[(label, T)], "max_mean") for T in periods]
            for label in ("thresholded (prototype)", "random")}
    T10 = 10.0
    lines += ["", "## Reading these numbers", "",
              "- Targets for the default (Rudolfo, T = 10 s): max/mean at most 1.15 and no more servers swapping "
              f"than perfect placement by counts. `balanced` reaches {mm('balanced', T10, 3)} with "
              f"{sw('balanced', T10)} servers swapping on average ({ms('balanced', T10, 3)} with "
              f"{sws('balanced', T10)} swapping when every agent refreshes at the same instants; perfect placement "
              f"by counts: {mm(ORACLE, T10, 3)} with {sw(ORACLE, T10)}); the prototype "
              f"{mm('thresholded (prototype)', T10)} with {sw('thresholded (prototype)', T10)} swapping. With "
              f"fresh stats (T = 0; snmplb's agent samples every second) it is {mm('balanced', 0.0)}.",
              "- How: every client that decides on the same figures should spread its logins the same way. "
              "From the fleet's login rate (the sum of lbLoginRate over the freshest rows, scaled to the whole "
              "capacity, each server's rate per capacity capped at twice the others' mean so that one liar cannot "
              "steer it) and the figures' age (lbDataAge), a client estimates how many logins share these figures, "
              "fills the servers with them from the emptiest up, keeping two standard deviations of each server's "
              "random count below the level, with no server above twice its capacity share, and draws its own "
              "server from those shares. When fewer than 5 logins share the figures (a small lab), without the margin "
              "and counting the login about to be added. With agents that do not publish lbLoginRate, two random "
              f"choices decide; alone, they reach {mm(old_agents, T10)} "
              "in Rudolfo's storm: the server that looks emptiest wins every pair it is drawn into, about twice its "
              "share of a window, whatever its real deficit.",
              "- What no rule can beat: clients decide independently, so the logins of each server's last blind "
              "window (between its last published figures and the end of the storm) land by chance. Even with "
              "the fleet perfectly level before it, capacity-proportional chance gives "
              + ", ".join(f"{floors[(T, False)]:.2f} at T = {T:g} s ({floors[(T, True)]:.2f} synchronized)"
                          for T in worst_periods)
              + f" (`blind_floor` in this script). `balanced`: {mm('balanced', T10)} and {ms('balanced', T10)} "
              "at T = 10 s. It can pass that floor because it gives big servers, whose counts vary less per "
              "unit of capacity, a little more than their share.",
              "- Logins started on an overloaded server (swapping, or load per CPU above 2): more than 0 % only for "
              + (", ".join(f"`{label}`" for label in overloaded) or "none")
              + ". Memory grows for a minute after a login, so servers overload only after the storm: the damage "
              "comes later than the decision, which is why fresh-looking numbers mislead.",
              "- `thresholded` and `random` hardly change with T ("
              + "; ".join(f"{label}: {min(v):.2f} to {max(v):.2f}" for label, v in flat.items())
              + "): in a storm no server passes 2.0 load per CPU or swaps before the storm is over, so the "
              "prototype's filter never acts in time.",
              "- Issue 12, Margot with a slow desktop (800 ms answers, above LB_MAX_RESPONSE_MS): the others hold "
              f"less than 80 % of the capacity without it, so `balanced` keeps it at its capacity: {sm('margot-slow-big', 'balanced', T10)} max/mean at T = 10 s with the big "
              f"desktop slow, against random's {sm('margot-slow-big', 'random', T10)}, weighted's "
              f"{sm('margot-slow-big', 'weighted', T10)} and two choices' {sm('margot-slow-big', TWO_CHOICES, T10)}.",
              "- Issue 12, rows older than a flash crowd (1400 logins in 20 s, rows up to 30 s old taken before it): "
              f"`balanced` {sm('flash', 'balanced', 30.0)} at T = 30 s against capacity-weighted `sticky`'s "
              f"{sm('flash', 'sticky', 30.0)}; {sm('flash', 'balanced', T10)} at T = 10 s.",
              "- Issue 23, every agent restarted 30 s into the storm (rows at each agent's first sample say "
              "lbLoginRateSpan 0: the login rate not known yet): `balanced` "
              f"{sm('restart', 'balanced', 30.0)} at T = 30 s with {sm('restart', 'balanced', 30.0, 'swapping')} "
              f"servers swapping, against `sticky`'s {sm('restart', 'sticky', 30.0)} (read as no logins: 1.74 "
              f"with 13.4 swapping); {sm('restart', 'balanced', T10)} at T = 10 s. A storm rising and falling "
              f"with 5-20 s logins: {sm('rise-fall', 'balanced', 0.0)} / {sm('rise-fall', 'balanced', T10)} at "
              f"T = 0 / 10 s against two choices' {sm('rise-fall', TWO_CHOICES, 0.0)} / "
              f"{sm('rise-fall', TWO_CHOICES, T10)}: the agents' lbLoginsConnecting counts the logins still "
              "connecting however long they take (counting only those of the last 10 s: 1.09 / 1.16).",
              "- Issue 12, logins in progress: with 0-20 steady non-login ssh connections per server, "
              f"{sm('background-ssh', 'balanced', T10)} at T = 10 s; with no connection count at all (lbSshConnections "
              f"0), {sm('no-lbssh', 'balanced', T10)} (Rudolfo as modelled: {mm('balanced', T10)}).",
              "- Issue 12, memory: a server with at least 75 % of its memory in use counts as full as its memory "
              "says, relative to the pool (`memory_loads`). In the working day (memory in sight), servers that "
              f"swapped during the hour at T = 10 s: `balanced` {sm('day', 'balanced', T10, 'swapping')}, perfect "
              f"placement by counts {sm('day', ORACLE, T10, 'swapping')}, two choices "
              f"{sm('day', TWO_CHOICES, T10, 'swapping')}, perfect placement by memory in sight "
              f"{sm('day', ORACLE_MEM, T10, 'swapping')}. In the lognormal storm a session's memory shows up to a "
              f"minute after the choice: `balanced` {sm('lognormal', 'balanced', T10, 'swapping')}, by counts "
              f"{sm('lognormal', ORACLE, T10, 'swapping')}, by memory in sight "
              f"{sm('lognormal', ORACLE_MEM, T10, 'swapping')} (fresh, every session's age known); the rest is "
              "the figures' age: docs/algorithms.md.",
              f"- The sampled mode (`LB_SAMPLE=2`) costs balance ({mm('balanced, LB_SAMPLE=2', T10)} against "
              f"{mm('balanced', T10)} at T = 10 s) for 2 SNMP requests per login instead of one per server."]
    raw = {"rudolfo": {f"{label} @ T={T:g}": {k: _mean(r, k) for k in r[0]} for (label, T), r in rud.items()},
           "margot": {f"{label} @ T={T:g}": _mean(r, "max_mean") for (label, T), r in mar.items()},
           "wave": {f"{label} @ T={T:g}": {k: _mean(r, k) for k in r[0]} for (label, T), r in wave.items()},
           "moves": {label: {k: _mean(r, k) for k in r[0]} for label, r in moves.items()},
           "reconnect": {f"{label} @ T={T:g}, affinity {'yes' if aff else 'no'}":
                         {k: _mean(r, k) for k in r[0]}
                         for T in reconnect_periods(periods) for label in COMPARED for aff in (True, False)
                         for r in [[done[("reconnect", label, T, s, aff)] for s in range(seeds)]]},
           "rudolfo_synchronized": {f"{label} @ T={T:g}": {k: _mean(r, k) for k in r[0]}
                                    for (label, T), r in sync.items()},
           "blind_floor": {f"T={T:g}{' synchronized' if sy else ''}": f for (T, sy), f in floors.items()},
           "scenarios": {f"{key}: {label} @ T={T:g}": {k: _mean(r, k) for k in r[0]}
                         for (key, label, T), r in scen.items()}}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
    lines += ["", f"Raw means: [{out.with_suffix('.json').name}]({out.with_suffix('.json').name})."]
    if plots:
        lines += ["", "![max/mean by staleness](balance-maxmean.png)", "",
                  "![worst peak memory by staleness](balance-peakmem.png)", "",
                  "![max/mean in every scenario](balance-scenarios.png)"]
        _plots(rud, periods, out.parent)
        _scenario_plot(scen, 10.0 if 10.0 in periods else periods[0], out.parent)
    reused = ", the runs read from a --cache file" if cache else ""
    lines += ["", f"({time.monotonic() - t0:.0f} s to compute{reused}.)", ""]
    return "\n".join(lines)


def _wave_section(wave: dict, periods: list[float]) -> list[str]:
    """The newcomer's share of the wave, against its capacity share and against the share that would bring it
    to the fleet's level; which of the two the slow start aims at."""
    lines = ["", "## Afternoon wave: a new server joins, 120 s later 30 % log back in within 60 s", "",
             "The newcomer's share of the wave's logins over two references: its capacity share (its weight over "
             "the fleet's: 1.0 takes the wave by capacity, as if the newcomer held the fleet's level already), and "
             "the share that brings it to the fleet's level (the fleet's sessions per capacity after the wave, "
             "times its weight; in Rudolfo's fleet about 3.3 times its capacity share: 1.0 fills it from empty "
             "in this one wave). The slow start aims at the capacity share: the newcomer's weight grows from 10 % "
             "to 100 % over LB_SLOW_START_S (300 s), so that an empty server does not take two capacity shares of "
             "a storm, as it does without (`balanced, no slow start`); it fills to the fleet's level over the "
             "following logins. About 0.3 of the level share is that aim met.", "",
             "| algorithm | " + " | ".join(f"capacity share, T = {T:g} s" for T in periods) + " | "
             + " | ".join(f"level share, T = {T:g} s" for T in periods) + " | max/mean after (T = 10 s) |",
             "|---|" + "---|" * (2 * len(periods) + 1)]
    for v in VARIANTS:
        cap = " | ".join(f"{_mean(wave[(v.label, T)], 'new_share'):.2f}" for T in periods)
        lev = " | ".join(f"{_mean(wave[(v.label, T)], 'new_level_share'):.2f}" for T in periods)
        after = _mean(wave[(v.label, 10.0)], 'max_mean') if 10.0 in periods else float('nan')
        lines.append(f"| {v.label} | {cap} | {lev} | {after:.2f} |")
    return lines


def _scenario_section(scen: dict, periods: list[float]) -> list[str]:
    """Every site shape's table, the default's distance to the best, and each algorithm's worst case."""
    lines = ["", "## Site shapes (issue 12): the default against the alternatives in every scenario", "",
             f"Two choices: `{TWO_CHOICES}`. `{ORACLE}`: every login to the live server with the fewest "
             "sessions per capacity at that instant, which no client can know (the reference for swapping).", ""]
    for sc in SCENARIOS:
        lines += [f"### {sc.key}: {sc.title}", "",
                  "| algorithm | " + " | ".join(f"max/mean, T = {T:g} s | swapping, T = {T:g} s" for T in periods)
                  + " | logins to a dead or silent server | logins to a slow server (T = 10 s) |",
                  "|---|" + "---|---|" * len(periods) + "---|---|"]
        for label in COMPARED:
            cells = " | ".join(f"{_mean(scen[(sc.key, label, T)], 'max_mean'):.2f} | "
                               f"{_mean(scen[(sc.key, label, T)], 'swapping'):.2f}" for T in periods)
            dead = sum(r["to_dead"] for T in periods for r in scen[(sc.key, label, T)])
            slow = _mean(scen[(sc.key, label, 10.0)], "to_slow") if 10.0 in periods else float("nan")
            lines.append(f"| {label} | {cells} | {dead} | {slow:.1f} |")
        lines.append("")
    days = [sc for sc in SCENARIOS if sc.model.day_s]
    lines += ["### Swapping server-minutes in the working days", "",
              "Minutes each server spent with its memory beyond RAM during the day's hour, summed over the fleet "
              "(issue 23's target for day85: half of what `balanced` left on main, 52.3 at T = 10 s).", "",
              "| algorithm | " + " | ".join(f"{sc.key}, T = {T:g} s" for sc in days for T in periods) + " |",
              "|---|" + "---|" * (len(days) * len(periods))]
    for label in COMPARED:
        lines.append(f"| {label} | " + " | ".join(f"{_mean(scen[(sc.key, label, T)], 'swap_minutes'):.1f}"
                                                for sc in days for T in periods) + " |")
    lines.append("")
    others = [label for label in COMPARED if label != "balanced" and label not in REFERENCES]
    lines += ["### The default against the best of the others, T at most 10 s", "",
              "max/mean of `balanced`, and of the best other algorithm (random, weighted, two choices, sticky, "
              "thresholded) in the same runs; the gap is `balanced` minus the best (negative: `balanced` is better). "
              "Floor: what capacity-proportional chance gives in the storm's last blind window with the fleet "
              "perfectly level before it (`blind_floor` on the scenario's fleet; not for the working day).",
              "", "| scenario | " + " | ".join(f"T = {T:g} s: balanced / best other (gap), floor" for T in periods
                                               if T <= 10) + " |", "|---|" + "---|" * len([T for T in periods if T <= 10])]
    for sc in SCENARIOS:
        cells = []
        for T in (T for T in periods if T <= 10):
            own = _mean(scen[(sc.key, "balanced", T)], "max_mean")
            best_label = min(others, key=lambda lb: _mean(scen[(sc.key, lb, T)], "max_mean"))
            best = _mean(scen[(sc.key, best_label, T)], "max_mean")
            short = {TWO_CHOICES: "two choices", "thresholded (prototype)": "thresholded"}.get(best_label, best_label)
            floor = "n/a" if sc.model.day_s else f"{blind_floor(T, False, 500, sc):.2f}"
            cells.append(f"{own:.2f} / {best:.2f} {short} ({own - best:+.2f}), {floor}")
        lines.append(f"| {sc.key} | " + " | ".join(cells) + " |")
    lines += ["", "### Each algorithm's worst case across the scenarios", "",
              "| algorithm | worst max/mean, T <= 10 s | worst max/mean, T = 30 s | most servers swapping, T <= 10 s "
              "| most servers swapping, T = 30 s |", "|---|---|---|---|---|"]
    for label in COMPARED:
        def worst(key: str, pick) -> str:
            cands = [(_mean(scen[(sc.key, label, T)], key), sc.key, T) for sc in SCENARIOS for T in periods if pick(T)]
            if not cands:
                return "n/a"
            v, where, T = max(cands)
            return f"{v:.2f} ({where}, T = {T:g} s)" if key == "max_mean" else f"{v:.2f} ({where}, T = {T:g} s)"
        lines.append(f"| {label} | {worst('max_mean', lambda T: T <= 10)} | {worst('max_mean', lambda T: T == 30)} | "
                     f"{worst('swapping', lambda T: T <= 10)} | {worst('swapping', lambda T: T == 30)} |")
    return lines


def _plots(rud: dict, periods: list[float], where: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [v for v in VARIANTS if v.label != "balanced, no slow start"]  # identical to balanced in a storm
    for key, name, ylabel, target in (("max_mean", "balance-maxmean.png", "max/mean sessions per capacity", 1.15),
                                      ("peak_mem", "balance-peakmem.png", "worst peak memory (1.0 = RAM full)", 1.0)):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for v in shown:
            ax.plot(periods, [_mean(rud[(v.label, T)], key) for T in periods], marker="o", label=v.label,
                    linewidth=2.5 if v.label == "balanced" else 1.2)
        ax.axhline(target, color="black", linestyle=":", linewidth=1, label=f"target / limit ({target:g})")
        ax.set_yscale("log")
        ax.set_yticks([1, 1.15, 1.5, 2, 3, 5, 10, 20])
        ax.get_yaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("stats published every T seconds")
        ax.set_ylabel(ylabel + " (log scale)")
        ax.set_title(f"Rudolfo's login storm (1400 clients, 30 servers): {ylabel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        fig.savefig(where / name, dpi=100)
        plt.close(fig)


def _scenario_plot(scen: dict, period: float, where: Path) -> None:
    """max/mean of each compared algorithm in every scenario at one staleness: grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(COMPARED)
    for k, label in enumerate(COMPARED):
        xs = [i + (k - len(COMPARED) / 2) * width for i in range(len(SCENARIOS))]
        ax.bar(xs, [_mean(scen[(sc.key, label, period)], "max_mean") for sc in SCENARIOS], width,
               label=label, edgecolor="black" if label == "balanced" else None)
    ax.axhline(1.15, color="black", linestyle=":", linewidth=1, label="1.15")
    ax.set_xticks(range(len(SCENARIOS)))
    ax.set_xticklabels([sc.key for sc in SCENARIOS], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(1.0, 2.5)
    ax.set_ylabel("max/mean sessions per capacity")
    ax.set_title(f"Every scenario, stats published every {period:g} s (bars above 2.5 cut)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(where / "balance-scenarios.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--periods", type=float, nargs="+", default=[0, 5, 10, 30])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "balance.md")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="processes to run the simulations in")
    ap.add_argument("--scenarios-only", action="store_true", help="only the site shapes' tables (no JSON, no plots)")
    ap.add_argument("--cache", type=Path, help="reuse and keep the runs' metrics in this file (see run_all)")
    ap.add_argument("--reconnect-only", action="store_true",
                    help="only the reconnect wave's tables (issue 19; T = 10 s when among --periods)")
    args = ap.parse_args(argv)
    if args.reconnect_only:
        t0 = time.monotonic()
        done = run_all(reconnect_jobs(args.seeds, args.periods), args.jobs, args.cache)
        text = "\n".join(["# The reconnect wave (bench/storm.py --reconnect-only)", "",
                          f"Generated by `.venv/bin/python bench/storm.py --reconnect-only --seeds {args.seeds} "
                          f"--periods {' '.join(f'{T:g}' for T in args.periods)} --out {args.out}`."]
                         + reconnect_section(done, args.seeds, args.periods)
                         + [f"({time.monotonic() - t0:.0f} s to compute.)", ""])
        args.out.write_text(text)
        print(text)
        return 0
    text = report(args.seeds, args.periods, not args.no_plots, args.out, args.jobs, args.scenarios_only, args.cache)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
