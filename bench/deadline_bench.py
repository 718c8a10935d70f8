"""Benchmark: how long a whole get_hosts process takes when servers are silent, against LB_TIMEOUT_MS.

The promise (issue 10): the process as a whole, interpreter start-up included, ends within
LB_TIMEOUT_MS plus a few ms of printing. Measured here with real snmpd agents on loopback and
silent servers (UDP sockets that receive and never answer), so that every run waits for the
deadline, on an idle machine and with every core kept busy by spinning processes (a loaded thin
client). The same run measures a baseline: the get_hosts of an earlier revision (default
9bbb29d, whose poll counted its deadline from the first datagram), run from `git archive` of that
revision with the same interpreter. Runs alternate between the two.

    .venv/bin/python bench/deadline_bench.py [--runs 40] [--baseline REV] [--json FILE]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from gethosts_bench import revision_tree  # noqa: E402
from snmplb.lab.fleet import FakeLoad, Fleet  # noqa: E402

COMMUNITY = "snmplb-ltsp"
TIMEOUT_MS = 1000


def _spin(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def _baseline_tree(rev: str, dest: Path) -> Path:
    """The package and the chroot script of ``rev``, and a python wrapper that imports that package."""
    revision_tree(rev, dest)
    wrapper = dest / "python3"
    wrapper.write_text("#!/bin/sh\n# run the revision's get_hosts entry point (ignores the script's -I -c ...)\n"
                       f"exec {sys.executable} -c 'import sys; sys.path.insert(0, \"{dest}\"); "
                       "from snmplb.gethosts import main_and_exit; main_and_exit()'\n")  # old revisions' path, a shim now
    wrapper.chmod(0o755)
    return dest


def _run(script: Path, python: str, servers: str) -> float:
    env = {"PATH": os.environ["PATH"], "LB_SERVERS": servers, "LB_SNMP_COMMUNITY": COMMUNITY,
           "LB_TIMEOUT_MS": str(TIMEOUT_MS), "SNMPLB_PYTHON": python}
    t0 = time.monotonic()
    r = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30)
    took = (time.monotonic() - t0) * 1000
    if r.returncode != 0 or r.stdout.count("\n") != 1:
        raise SystemExit(f"get_hosts failed: {r}")
    return took


def _stats(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"runs": len(s), "median_ms": round(statistics.median(s), 1),
            "p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))], 1), "max_ms": round(s[-1], 1),
            "over_timeout_max_ms": round(s[-1] - TIMEOUT_MS, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--baseline", default="9bbb29d")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    results: dict = {"timeout_ms": TIMEOUT_MS, "runs": args.runs, "baseline": args.baseline, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, Fleet(Path(tmp) / "fleet", community=COMMUNITY) as fleet:
        live = [fleet.add(f"app{i}", FakeLoad(load1=0.5)) for i in range(3)]
        silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        for i, s in enumerate(silent):
            s.bind((f"127.0.0.{90 + i}", 0))
        servers = " ".join([i.address for i in live] + [f"127.0.0.{90 + i}:{s.getsockname()[1]}"
                                                       for i, s in enumerate(silent)])
        base = _baseline_tree(args.baseline, Path(tmp) / "baseline")
        contenders = {"this revision": (ROOT / "chroot" / "get_hosts", sys.executable),
                      f"baseline {args.baseline}": (base / "chroot" / "get_hosts", str(base / "python3"))}
        for load in ("idle", "all cores busy"):
            times: dict[str, list[float]] = {k: [] for k in contenders}
            spinners = []
            if load != "idle":
                stop_at = time.monotonic() + 600
                spinners = [multiprocessing.Process(target=_spin, args=(stop_at,), daemon=True)
                            for _ in range(os.cpu_count() or 1)]
                for p in spinners:
                    p.start()
            try:
                for _ in range(args.runs):
                    for name, (script, python) in contenders.items():
                        times[name].append(_run(script, python, servers))
            finally:
                for p in spinners:
                    p.terminate()
                    p.join(5)
            results[load] = {name: _stats(xs) for name, xs in times.items()}
            for name, st in results[load].items():
                print(f"{load:15} {name:18} median {st['median_ms']:7.1f} ms  p95 {st['p95_ms']:7.1f} ms  "
                      f"max {st['max_ms']:7.1f} ms  (timeout {TIMEOUT_MS} ms)")
        for s in silent:
            s.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
