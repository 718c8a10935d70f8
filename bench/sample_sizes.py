"""The sampled mode (LB_SAMPLE) on a fleet of four server sizes: uniform draws against draws by weight.

The storm model is bench/storm.py's (its ``Sim``, the agent's own code for the
rows, the login selection ``Selection`` for every login); only the fleet and
the settings differ:

- sizes: 8 servers each of 4, 8, 16 and 32 GiB of RAM, with 2, 4, 8 and 16
  CPUs and lbWeight 25, 50, 100 and 200 (capacity in proportion to both);
- 360 clients log in within 60 s: perfect placement by capacity puts 3
  sessions on a 4 GiB server (about 90 % of its RAM with the model's 1.5 GiB
  base and 500-900 MiB desktops) and 24 on a 32 GiB one (56 %).

Variants, all `balanced` (which decides by capacity-weighted two choices
in the sampled mode):
- LB_SAMPLE=k, uniform: the draw before issue 12, and still the draw without
  LB_SAMPLE_WEIGHTS (every server counts as weight 100);
- LB_SAMPLE=k, LB_SAMPLE_WEIGHTS = lbWeight: the draw in proportion to capacity;
- LB_SAMPLE=0: every server polled (the reference);
- perfect placement by counts: an oracle that sends every login to the
  server with the fewest sessions per capacity at that instant, counting the
  logins still connecting (what no client can do: the floor for swapping and
  max/mean that the sizes and the session-memory spread leave).
And bench/storm.py's blind-window floor for this fleet (``blind_floor``): what
no rule of independent clients deciding on T-second-old figures can beat.

Measures as bench/storm.py's: max/mean sessions per capacity, the worst peak
memory, and how many servers swapped (peak memory above RAM), means over the seeds.

    .venv/bin/python bench/sample_sizes.py --seeds 20 --json docs/sample_sizes.json   # docs/sampling.md
    .venv/bin/python bench/sample_sizes.py --seeds 2 --periods 10  # quick look
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
import storm  # noqa: E402
from storm import Session, Sim, SimServer, Variant  # noqa: E402

from snmplb.client.settings import ClientSettings  # noqa: E402

SIZES = ((4096.0, 2, 25), (8192.0, 4, 50), (16384.0, 8, 100), (32768.0, 16, 200))  # RAM MiB, CPUs, lbWeight
PER_SIZE = 8
CLIENTS = 360


def four_sizes_fleet() -> list[SimServer]:
    """8 servers of each size, 4 to 32 GiB, CPUs and lbWeight in proportion, in configured order by size."""
    return [SimServer(f"s{ram // 1024:02.0f}g{i}", cpus, ram, weight)
            for ram, cpus, weight in SIZES for i in range(PER_SIZE)]


class HintedSim(Sim):
    """Sim whose clients also set LB_SAMPLE_WEIGHTS (each server's lbWeight), when ``hints``."""

    def __init__(self, *args, hints: bool = False, **kw) -> None:
        self.hints = hints
        super().__init__(*args, **kw)

    def _settings(self) -> ClientSettings:
        base = super()._settings()
        if not self.hints:
            return base
        return base._replace(sample_weights=tuple((s.name, 0, s.weight) for s in self.fleet))


class OracleSim(Sim):
    """Perfect placement by counts: the fewest sessions (connecting included) per capacity, ties to the
    biggest server; it sees every server's true count at the instant of the login."""

    def login(self, client: str) -> str:
        live = [s for s in self.fleet if not s.dead]
        server = min(live, key=lambda s: ((len(s.clients) + 1) / s.weight, -s.weight))
        self.bad_starts += server.overloaded()
        server.ramping.append(Session(client, self.t + self.rng.uniform(*storm.APPEAR),
                                      self.rng.uniform(*storm.SESSION_MEM), self.t + self.rng.uniform(*storm.CONNECT)))
        server.clients.add(client)
        self.logins.append((self.t, client, server.name))
        return server.name


def blind_floor(period: float, seeds: int = 4000) -> float:
    """bench/storm.py's ``blind_floor`` for this fleet: what no rule of independent clients can beat.
    Every server perfectly level (by capacity) when its figures were last taken, then the logins of its
    blind window (uniform in [0, T] s; Poisson, by capacity) land by chance; max/mean as measured."""
    rng = random.Random(1)
    fleet = four_sizes_fleet()
    total = sum(s.weight for s in fleet)
    rate = CLIENTS / storm.STORM_S
    worst = []
    for _ in range(seeds):
        level = []
        for s in fleet:
            mean = rate * rng.uniform(0, period) * s.weight / total
            level.append((CLIENTS * s.weight / total - mean + storm._poisson(rng, mean)) / s.weight)
        worst.append(max(level) / (CLIENTS / total))
    return statistics.fmean(worst)


def metrics(sim: Sim) -> dict:
    sim.storm([f"c{i:04d}" for i in range(CLIENTS)], 0.0)
    live = [s for s in sim.fleet if not s.dead]
    small = [s for s in live if s.weight == SIZES[0][2]]
    return {"max_mean": sim.max_over_mean(), "peak_mem": max(s.peak for s in live),
            "swapping": sum(1 for s in live if s.peak > 1.0),
            "small_share": sum(len(s.clients) for s in small) / CLIENTS}


def variants(k: int) -> list[tuple[str, object]]:
    """(label, factory(period, seed) -> Sim)."""
    def sampled(hints: bool):
        return lambda T, seed: HintedSim(four_sizes_fleet(), Variant("b", "balanced", sample=k), T, seed, hints=hints)
    return [(f"LB_SAMPLE={k}, uniform draw (before; no LB_SAMPLE_WEIGHTS)", sampled(False)),
            (f"LB_SAMPLE={k}, draw by LB_SAMPLE_WEIGHTS = lbWeight", sampled(True))]


def run(seeds: int, periods: list[float], ks: list[int]) -> dict[str, dict[str, dict]]:
    rows: list[tuple[str, object]] = []
    for k in ks:
        rows += variants(k)
    rows.append(("LB_SAMPLE=0 (every server polled)",
                 lambda T, seed: Sim(four_sizes_fleet(), Variant("b", "balanced"), T, seed)))
    rows.append(("perfect placement by counts (oracle)",
                 lambda T, seed: OracleSim(four_sizes_fleet(), Variant("b", "balanced"), T, seed)))
    out: dict[str, dict[str, dict]] = {}
    for label, make in rows:
        for T in periods:
            runs = [metrics(make(T, seed)) for seed in range(seeds)]
            out.setdefault(label, {})[f"T={T:g}"] = {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}
    return out


def table(results: dict[str, dict[str, dict]], periods: list[float]) -> str:
    head = "| variant | " + " | ".join(f"max/mean, T = {T:g} s | servers swapping | worst peak memory | "
                                       f"4 GiB servers' share (fair {SIZES[0][2] / sum(w for *_, w in SIZES):.1%})"
                                       for T in periods) + " |"
    lines = [head, "|---|" + "---|---|---|---|" * len(periods)]
    for label, by_t in results.items():
        cells = []
        for T in periods:
            m = by_t[f"T={T:g}"]
            cells.append(f"{m['max_mean']:.2f} | {m['swapping']:.1f} | {m['peak_mem']:.0%} | {m['small_share']:.1%}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--periods", type=float, nargs="+", default=[0, 10])
    ap.add_argument("--samples", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--json", type=Path, help="also write the means here")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    results = run(args.seeds, args.periods, args.samples)
    print(f"Four sizes, {CLIENTS} clients within 60 s, means of {args.seeds} seeds:\n")
    print(table(results, args.periods))
    floors = {f"T={T:g}": blind_floor(T) for T in args.periods}
    print("\nBlind-window floor (max/mean no rule of independent clients can beat; `blind_floor`): "
          + ", ".join(f"{f:.2f} at {T.replace('=', ' = ')} s" for T, f in floors.items()) + ".")
    results["blind-window floor"] = {T: {"max_mean": f} for T, f in floors.items()}
    print(f"\n({time.monotonic() - t0:.0f} s to compute.)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
