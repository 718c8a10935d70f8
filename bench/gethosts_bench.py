"""Benchmark: get_hosts as a whole process against N local agents, with two same-run baselines.

For N in (30, 200) real snmpd agents on loopback (the test fleet), with all
answering and with 3 more listed servers that receive but never answer, it
measures wall time and peak RSS of whole processes:

- get_hosts: chroot/get_hosts run from a regular (non-editable) install of the
  package in a throw-away venv, as on a thin client; and the same with
  LB_SAMPLE=2 (the sampled mode: 2 servers polled, whatever the fleet's size;
  with silent servers listed, also its worst of SAMPLE_RUNS runs);
- snmpget: one net-snmp `snmpget` process per server, all started at once,
  waited for together (wall time; peak RSS of the largest process);
- pysnmp: a Python process using pysnmp's high-level asyncio API
  (get_cmd to every server, gathered).

All three GET lbRow.0 with the same timeout and retries. Runs alternate so
that noise hits every contender alike; medians are reported. Peak RSS is
measured in separate runs under GNU time (`/usr/bin/time -f %M`): the
rusage that wait4() gives a Python parent also counts the pages its forked
child held before exec, which would charge every contender with the
benchmark's own memory.

    .venv/bin/python bench/gethosts_bench.py [--sizes 30 200] [--runs 7] [--json FILE]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from snmplb import mib  # noqa: E402
from snmplb.lab.fleet import FakeLoad, Fleet, client_env  # noqa: E402

COMMUNITY = "snmplb-ltsp"
ROW = mib.oid_str(mib.ROW.instance)
TIMEOUT_MS = 1000
SAMPLE_RUNS = 40

PYSNMP_SCRIPT = r"""
import asyncio, sys
from pysnmp.hlapi.v3arch import asyncio as h
targets = [a.rsplit(":", 1) for a in sys.argv[3:]]
async def one(engine, host, port):
    t = await h.UdpTransportTarget.create((host, int(port)), timeout=float(sys.argv[1]), retries=int(sys.argv[2]))
    return await h.get_cmd(engine, h.CommunityData("%s", mpModel=1), t, h.ContextData(),
                           h.ObjectType(h.ObjectIdentity("%s")))
async def main():
    engine = h.SnmpEngine()
    res = await asyncio.gather(*(one(engine, host, port) for host, port in targets))
    engine.close_dispatcher()
    print(sum(1 for err, st, _, vb in res if not err and not st))
asyncio.run(main())
""" % (COMMUNITY, ROW.lstrip("."))


def thin_client_install(base: Path) -> Path:
    """A venv with the package copied in as a regular install would lay it out; returns its python."""
    venv = base / "thin-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(ROOT / "snmplb", Path(site) / "snmplb", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([str(py), "-m", "compileall", "-q", str(Path(site) / "snmplb")], check=True)
    return py


def measure(cmd: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds and stdout of one process."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, r.stdout.decode()


def peak_rss_kib(cmd: list[str], env: dict) -> int:
    """Peak RSS of ``cmd`` (and what it execs), as GNU time reports it."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *cmd], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return int(out.read().split()[-1])


def snmpget_cmd(address: str) -> list[str]:
    return ["snmpget", "-v2c", "-c", COMMUNITY, "-t", str(TIMEOUT_MS / 1000), "-r", "3", "-Oqv", address, ROW]


def parallel_snmpget(addresses: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds, and number answered."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(snmpget_cmd(a), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for a in addresses]
    ok = 0
    for p in procs:
        out = p.stdout.read()
        ok += p.wait() == 0 and bool(out.strip())
    return time.perf_counter() - t0, ok


def run_size(n: int, runs: int, base: Path, thin_py: Path) -> dict:
    results: dict = {}
    with Fleet(base / f"fleet{n}", community=COMMUNITY, agent_settings={"interval": "1.0"}) as fleet:
        t0 = time.monotonic()
        for i in range(n):
            fleet.add(f"s{i}", FakeLoad(load1=0.5 + (i % 7) * 0.4, sessions=(("u", "h"),) * (i % 5)))
        start_s = time.monotonic() - t0
        live = [inst.address for inst in fleet.instances]
        silent_socks = []
        for i in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.1.{i + 1}", 0))
            silent_socks.append(s)
        silent = [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in silent_socks]
        env = client_env(fleet.client_dir)
        for a in live:  # start every agent (snmpd starts its pass_persist script at the first request)
            subprocess.run(["snmpget", "-v2c", "-c", COMMUNITY, "-r3", "-t1", a, ROW], env=env, capture_output=True)
        for label, addrs in (("all_answering", live), ("3_silent", live + silent)):
            gh_env = dict(env, LB_SERVERS=" ".join(addrs), LB_TIMEOUT_MS=str(TIMEOUT_MS), LB_RETRIES="3",
                          SNMPLB_PYTHON=str(thin_py), LB_ALGORITHM="thresholded")
            gh_cmd = [str(ROOT / "chroot" / "get_hosts")]
            ps_cmd = [sys.executable, "-c", PYSNMP_SCRIPT, str(TIMEOUT_MS / 1000), "3", *addrs]
            rows: dict[str, list[float]] = {"get_hosts": [], "get_hosts_sample2": [], "snmpget": [], "pysnmp": []}
            answered = {}
            for _ in range(runs):
                secs, out = measure(gh_cmd, gh_env)
                rows["get_hosts"].append(secs)
                answered["get_hosts"] = len(out.split())
                secs, out = measure(gh_cmd, dict(gh_env, LB_SAMPLE="2", LB_ALGORITHM="balanced"))
                rows["get_hosts_sample2"].append(secs)
                answered["get_hosts_sample2"] = len(out.split())
                secs, ok = parallel_snmpget(addrs, env)
                rows["snmpget"].append(secs)
                answered["snmpget"] = ok
                secs, out = measure(ps_cmd, env)
                rows["pysnmp"].append(secs)
                answered["pysnmp"] = int(out.strip() or 0)
            rss = {"get_hosts": peak_rss_kib(gh_cmd, gh_env),
                   "get_hosts_sample2": peak_rss_kib(gh_cmd, dict(gh_env, LB_SAMPLE="2")),
                   "snmpget": peak_rss_kib(snmpget_cmd(addrs[0]), env), "pysnmp": peak_rss_kib(ps_cmd, env)}
            med = {k: statistics.median(v) for k, v in rows.items()}
            results[label] = {
                "servers": len(addrs),
                **{f"{k}_median_ms": round(v * 1000, 1) for k, v in med.items()},
                **{f"{k}_peak_rss_mb": round(v / 1024, 1) for k, v in rss.items()},
                **{f"{k}_answered": v for k, v in answered.items()},
                "get_hosts_over_snmpget": round(med["get_hosts"] / med["snmpget"], 3),
                "get_hosts_over_pysnmp": round(med["get_hosts"] / med["pysnmp"], 3),
            }
            if label == "3_silent":  # the sampled mode's worst case: a silent server drawn into the sample
                worst = [measure(gh_cmd, dict(gh_env, LB_SAMPLE="2", LB_ALGORITHM="balanced"))[0]
                         for _ in range(SAMPLE_RUNS)]
                results[label][f"get_hosts_sample2_max_of_{SAMPLE_RUNS}_ms"] = round(max(worst) * 1000, 1)
                results[label][f"get_hosts_sample2_over_timeout_of_{SAMPLE_RUNS}"] = sum(
                    w * 1000 >= TIMEOUT_MS for w in worst)
        for s in silent_socks:
            s.close()
    results["fleet_start_s"] = round(start_s, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30, 200])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = {"timeout_ms": TIMEOUT_MS, "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="snmplb-bench-") as tmp:
        thin_py = thin_client_install(Path(tmp))
        for n in args.sizes:
            out[str(n)] = run_size(n, args.runs, Path(tmp), thin_py)
            print(json.dumps({str(n): out[str(n)]}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
