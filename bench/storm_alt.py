"""A second login-storm model: the same scenarios and the same real algorithms, other physics.

bench/storm.py's results could be an artefact of its own model, which the
algorithms were tuned in. This model changes every assumption a client cannot
see, keeping the agent's code, the client's code and the scenarios:
- arrivals: a triangular profile over the storm (peak at a third of it), not uniform;
- login timing: the ssh connection after an exponential delay (mean 0.5 s, at
  most 3 s); the session after a further gamma delay (shape 3, mean 6 s, or
  the scenario's login delay plus half a second; at most 30 s): a heavy tail;
- memory: a session's memory approaches its size exponentially (time constant
  25 s) instead of linearly over 60 s; sizes as the scenario says;
- CPU: a desktop start takes one full runnable task for 10 s, then 0.05;
- load averages: Linux's formula, but each kernel's 5 s tick has its own phase.

    .venv/bin/python bench/storm_alt.py --seeds 5 --periods 10 30   # a table per scenario, on stdout

It prints max/mean and servers swapping for the same algorithms as the main
report's site-shape tables (no plots, no JSON).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import storm  # noqa: E402

TAU_S = 25.0  # memory approaches the session's size with this time constant
SETTLED_S = 6 * TAU_S  # after this, a session counts as steady (99.8 % of its memory)
START_S, START_CPU, IDLE_CPU = 10.0, 1.0, 0.05
CONNECT_MEAN, CONNECT_MAX = 0.5, 3.0
APPEAR_SHAPE, APPEAR_MAX = 3.0, 30.0


class AltServer(storm.SimServer):
    """A server whose memory, CPU and load average follow this model."""

    tick: int = 0  # its kernel's 5 s load-average tick falls on seconds t with t % 5 == tick

    def seen(self, session: storm.Session, t: float) -> float:
        age = t - session.appear
        return session.mem * (1.0 - math.exp(-age / TAU_S)) if age >= 0 else 0.0

    def mature(self, session: storm.Session, t: float) -> bool:
        return t - session.appear >= 3 * TAU_S  # 95 % of its memory

    def step(self, t: float) -> None:
        done = [s for s in self.ramping if t - s.appear >= SETTLED_S]
        for s in done:
            self.ramping.remove(s)
            self.steady += 1
            self.steady_mem += s.mem
        mem, run = self.base_mem + self.steady_mem, storm.BASE_RUN + self.hog + IDLE_CPU * self.steady  # a hog (hogs) runs all the time
        for s in self.ramping:
            age = t - s.appear
            if age >= 0:
                mem += self.seen(s, t)
                run += START_CPU if age < START_S else IDLE_CPU
        self.mem, self.run = mem, run
        self.pswp += int(max(0.0, mem - self.ram) * storm.SWAP_PAGES_PER_MB)
        if int(t) % 5 == self.tick:
            self.loads = [ld * e + run * (1 - e) for ld, e in zip(self.loads, storm.EXP)]
        self.peak = max(self.peak, mem / self.ram)


def alt_fleet(maker, rng: random.Random) -> list[AltServer]:
    """The scenario's fleet, as servers of this model."""
    out = []
    for s in maker():
        alt = AltServer(**{f.name: getattr(s, f.name) for f in fields(s)})
        alt.tick = rng.randrange(5)
        out.append(alt)
    return out


class AltSim(storm.Sim):
    """A run with this model's login timing and arrivals."""

    def login(self, client: str) -> str:
        name = super().login(client)
        session = self.by_name[name].ramping[-1]  # re-time the session the base model just placed
        connect = min(CONNECT_MAX, self.rng.expovariate(1 / CONNECT_MEAN))
        mean = statistics.fmean(self.model.appear) + 0.5
        appear = connect + min(APPEAR_MAX, self.rng.gammavariate(APPEAR_SHAPE, mean / APPEAR_SHAPE))
        session.connect, session.appear = self.t + connect, self.t + appear
        return name

    def storm(self, clients: list[str], start: float) -> None:
        span = self.model.storm_s
        self.run_until(start + storm.SETTLE_S,
                       [(start + self.rng.triangular(0, span, span / 3), c) for c in clients])


def metrics(sc: storm.Scenario, variant: storm.Variant, period: float, seed: int) -> dict:
    rng = random.Random(seed)
    sim = AltSim(alt_fleet(sc.fleet, rng), variant, period, seed, False, sc.model)
    clients = [f"c{i:04d}" for i in range(sc.clients)]
    sim.storm(clients, 0.0)
    if sc.model.day_s:
        sim.day(clients, sc.clients)
    return {"max_mean": sim.max_over_mean(), "swapping": sum(1 for s in sim.fleet if s.peak > 1.0),
            "to_dead": sim.to_silent + sum(1 for _, _, n in sim.logins if sim.by_name[n].dead)}


def _job(job: tuple) -> tuple[tuple, dict]:
    key, label, period, seed = job
    return job, metrics(storm.SCENARIO[key], storm.BY_LABEL[label], period, seed)


def report(seeds: int, periods: list[float], workers: int, keys: list[str]) -> str:
    jobs = [(sc.key, label, T, s) for sc in storm.SCENARIOS if sc.key in keys for label in storm.COMPARED
            for T in periods for s in range(storm.scenario_seeds(sc, seeds))]
    if workers > 1:
        import multiprocessing

        with multiprocessing.Pool(workers) as pool:
            done = dict(pool.imap_unordered(_job, jobs, chunksize=4))
    else:
        done = dict(map(_job, jobs))
    lines = [f"Second model (bench/storm_alt.py --seeds {seeds}): max/mean, servers swapping", ""]
    for sc in (sc for sc in storm.SCENARIOS if sc.key in keys):
        n = storm.scenario_seeds(sc, seeds)
        lines += [f"### {sc.key}", "", "| algorithm | " + " | ".join(f"T = {T:g} s" for T in periods) + " |",
                  "|---|" + "---|" * len(periods)]
        for label in storm.COMPARED:
            cells = []
            for T in periods:
                rs = [done[(sc.key, label, T, s)] for s in range(n)]
                cells.append(f"{statistics.fmean(r['max_mean'] for r in rs):.2f}, "
                             f"{statistics.fmean(r['swapping'] for r in rs):.1f} swapping"
                             + (f", {sum(r['to_dead'] for r in rs)} to dead" if any(r["to_dead"] for r in rs) else ""))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--periods", type=float, nargs="+", default=[10, 30])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--scenarios", nargs="+", default=[sc.key for sc in storm.SCENARIOS])
    args = ap.parse_args(argv)
    print(report(args.seeds, args.periods, args.jobs, args.scenarios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
