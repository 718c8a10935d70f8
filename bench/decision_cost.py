"""The CPU cost of one `balanced` decision at 30, 200 and 2000 servers, against a baseline revision.

    .venv/bin/python bench/decision_cost.py [--sizes 30 200 2000] [--decisions 30] [--baseline REV]

Each revision's package (``git archive``; the working tree for the current one) runs in a process of its
own, which builds a fleet of ``n`` polled states (seeded: sessions, memory, login rates and data ages
differ per server, as in a storm) and times ``decide("balanced", ...)`` with ``time.process_time`` over
``--decisions`` decisions, after a warm-up. Both revisions decide on the same states with the same seed;
the bench also checks that they choose the same hosts, so that the cost is compared on equal work.
Printed: ms of CPU per decision per revision, and the ratio (same run, so the machine's load cancels
out as far as it can; the load average is printed with it). docs/benchmarks.md has a run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gethosts_bench import revision_tree  # noqa: E402

BASELINE = "4947ddd"  # main before the decision's rate caps were made linear (quadratic in the fleet)

CHILD = r"""
import json, random, sys, time
import snmplb
from snmplb import mib
from snmplb.client.algorithms import Context, decide
from snmplb.client.settings import ClientSettings, Server
from snmplb.client.serverstate import ServerState

sizes, decisions = json.loads(sys.argv[1]), int(sys.argv[2])
STATUS, ADMIN = mib.obj("lbStatus").enums, mib.obj("lbAdminState").enums

def state(i, rng):
    cpus, total = 8, 32_000_000
    sessions = rng.randrange(0, 60)
    lpc = rng.randrange(10, 150)
    avail = rng.randrange(total // 10, total)
    values = {o.name: min(o.enums.values()) if o.enums else 0 for o in mib.ROW_FIELDS}
    values.update(lbLoad1=lpc * cpus, lbLoad5=lpc * cpus, lbLoad15=lpc * cpus, lbCpuCount=cpus, lbLoadPerCpu=lpc,
                  lbMemTotal=total, lbMemAvailable=avail, lbMemAvailablePercent=avail * 100 // total,
                  lbSwapTotal=100, lbSwapFree=100, lbSwapping=2, lbSessions=sessions, lbUsers=sessions,
                  lbWeight=rng.choice((50, 100, 200)), lbMaxSessions=0, lbAdminState=ADMIN["enabled"],
                  lbStatus=STATUS["busy" if lpc >= 100 else "idle"], lbDataAge=rng.randrange(0, 20_000),
                  lbSessionSource=1, lbInService=86400, lbRating=max(1, 100 - lpc // 2),
                  lbLoginRate=rng.randrange(0, 40), lbSshConnections=sessions + rng.randrange(0, 4))
    return ServerState(f"10.1.{i // 250}.{i % 250}", 161, values, "", 2.0, "")

out = {}
for n in sizes:
    rng = random.Random(n)
    states = [state(i, rng) for i in range(n)]
    settings = ClientSettings(servers=tuple(Server(s.name) for s in states))
    ctx = Context(settings, random.Random(7), "")
    for _ in range(5):
        decide("balanced", states, ctx)
    ctx = Context(settings, random.Random(7), "")
    chosen = []
    t0 = time.process_time()
    for _ in range(decisions):
        chosen.append(decide("balanced", states, ctx).hosts[0])
    out[n] = {"ms": (time.process_time() - t0) * 1000 / decisions, "chosen": chosen}
out["package"] = snmplb.__file__
print(json.dumps(out))
"""


def run(package_root: Path, sizes: list[int], decisions: int) -> dict[str, dict]:
    """One revision's costs, measured in a process of its own that imports the package from ``package_root``."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(package_root)}
    # -P: not the current directory first on sys.path (a checkout there would shadow the revision's package).
    r = subprocess.run([sys.executable, "-P", "-c", CHILD, json.dumps(sizes), str(decisions)], env=env,
                       capture_output=True, text=True, timeout=3600, check=True, cwd=package_root)
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30, 200, 2000])
    ap.add_argument("--decisions", type=int, default=30)
    ap.add_argument("--baseline", default=BASELINE, help=f"the revision to compare with (default {BASELINE})")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = run(revision_tree(args.baseline, Path(tmp)), args.sizes, args.decisions)
        now = run(ROOT, args.sizes, args.decisions)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.decisions} decisions per size")
    print(f"{'servers':>8} {'baseline ms':>12} {'now ms':>8} {'now/baseline':>13} {'same choices':>13}")
    print(f"baseline {args.baseline}: {base.pop('package')}; now: {now.pop('package')}")
    for n in map(str, args.sizes):
        b, c = base[n], now[n]
        print(f"{n:>8} {b['ms']:>12.3f} {c['ms']:>8.3f} {c['ms'] / b['ms']:>13.2f} {str(b['chosen'] == c['chosen']):>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
