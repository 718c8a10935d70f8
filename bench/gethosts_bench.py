"""Benchmark: get_hosts as a whole process against N local agents, with same-run baselines.

For N in (30, 200) real snmpd agents on loopback (the test fleet), with all
answering and with 3 more listed servers that receive but never answer, it
measures wall time, CPU time and peak RSS of whole processes:

- get_hosts: chroot/get_hosts run from a regular (non-editable) install of the
  package in a throw-away venv, as on a thin client; and the same with
  LB_SAMPLE=2 (the sampled mode: 2 servers polled, whatever the fleet's size;
  with silent servers listed, also its worst of SAMPLE_RUNS runs);
- get_hosts@REV (``--baseline REV``, default 00ac00a): the chroot/get_hosts and
  package of an earlier revision (`git archive`), installed the same way, so
  that before and after are timed in the same run;
- get_hosts_debian_python (when /usr/bin/python3 is the same minor version):
  the same install in a venv of Debian's python3 with its system site-packages,
  whose .pth files site runs at every start unless it is skipped (-S);
- snmpget: one net-snmp `snmpget` process per server, all started at once,
  waited for together (wall time; peak RSS of the largest process);
- pysnmp: a Python process using pysnmp's high-level asyncio API
  (get_cmd to every server, gathered; ``--no-pysnmp`` leaves it out).

All GET lbRow.0 with the same timeout and retries. Runs alternate, in an
order rotated at each run, so that noise hits every contender alike; medians are reported, and the ratios are
of medians taken in the same run. Peak RSS is measured in separate runs
under GNU time (`/usr/bin/time -f %M`): the rusage that wait4() gives a
Python parent also counts the pages its forked child held before exec, which
would charge every contender with the benchmark's own memory. CPU time (user
+ system of the process and its children, from wait4) is far less disturbed
by other load on a shared machine than wall time, and shows what start-up
costs.

``--steps`` adds where one get_hosts' start-up goes, against one server:
the bare interpreter (``-I``, ``-I -S``), get_hosts of both revisions, and
the median ``-X importtime`` of each module get_hosts imports.

    .venv/bin/python bench/gethosts_bench.py [--sizes 1 30 200] [--runs 7] [--steps] [--baseline REV]
                                             [--no-pysnmp] [--no-silent] [--json FILE]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
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
BASELINE = "00ac00a"  # the layout by role, before the start-up work of issue 11
DEBIAN_PYTHON = Path("/usr/bin/python3")

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


def thin_client_install(base: Path, name: str, source: Path = ROOT, python: str = sys.executable,
                        system_site: bool = False) -> Path:
    """A venv with the package of ``source`` copied in as a regular install would lay it out; returns its
    python. ``system_site``: the venv sees ``python``'s own site-packages (Debian's dist-packages)."""
    venv = base / name
    subprocess.run([python, "-m", "venv", "--without-pip", *(["--system-site-packages"] if system_site else []),
                    str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(source / "snmplb", Path(site) / "snmplb", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([str(py), "-m", "compileall", "-q", str(Path(site) / "snmplb")], check=True)
    return py


def revision_tree(rev: str, dest: Path) -> Path:
    """The package and the chroot scripts of ``rev`` (``git archive``), extracted under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "rev.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "snmplb", "chroot"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def measure(cmd: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds and stdout of one process."""
    secs, _, out = measure_cpu(cmd, env)
    return secs, out


def measure_cpu(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the process and what it waited for) and stdout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    return secs, usage.ru_utime + usage.ru_stime, out.decode()


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


def run_size(n: int, args: argparse.Namespace, base: Path, pythons: dict[str, tuple[Path, Path]]) -> dict:
    """``pythons``: contender name -> (its chroot/get_hosts script, the python it runs)."""
    results: dict = {}
    runs = args.runs
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
        labels = (("all_answering", live), ("3_silent", live + silent)) if args.silent else (("all_answering", live),)
        for label, addrs in labels:
            gh_env = dict(env, LB_SERVERS=" ".join(addrs), LB_TIMEOUT_MS=str(TIMEOUT_MS), LB_RETRIES="3",
                          LB_ALGORITHM="thresholded", SNMPLB_CLIENT_CONF="/nonexistent")
            contenders = {name: ([str(script)], dict(gh_env, SNMPLB_PYTHON=str(py)))
                          for name, (script, py) in pythons.items()}
            script, py = pythons["get_hosts"]
            contenders["get_hosts_sample2"] = ([str(script)], dict(gh_env, SNMPLB_PYTHON=str(py), LB_SAMPLE="2",
                                                                   LB_ALGORITHM="balanced"))
            if args.pysnmp:
                contenders["pysnmp"] = ([sys.executable, "-c", PYSNMP_SCRIPT, str(TIMEOUT_MS / 1000), "3", *addrs], env)
            walls: dict[str, list[float]] = {k: [] for k in [*contenders, "snmpget"]}
            cpus: dict[str, list[float]] = {k: [] for k in contenders}
            answered = {}
            order = [*contenders, "snmpget"]
            for i in range(runs):
                # Each run in a rotated order: whoever follows the 30 snmpget processes (or a 1 s wait for the
                # silent servers) meets agents in another state; no contender may always be that one.
                for name in order[i % len(order):] + order[:i % len(order)]:
                    if name == "snmpget":
                        secs, ok = parallel_snmpget(addrs, env)
                        walls["snmpget"].append(secs)
                        answered["snmpget"] = ok
                        continue
                    cmd, cenv = contenders[name]
                    secs, cpu, out = measure_cpu(cmd, cenv)
                    walls[name].append(secs)
                    cpus[name].append(cpu)
                    answered[name] = int(out.strip() or 0) if name == "pysnmp" else len(out.split())
            rss = {name: peak_rss_kib(cmd, cenv) for name, (cmd, cenv) in contenders.items()}
            rss["snmpget"] = peak_rss_kib(snmpget_cmd(addrs[0]), env)
            med = {k: statistics.median(v) for k, v in walls.items()}
            results[label] = {
                "servers": len(addrs),
                **{f"{k}_median_ms": round(v * 1000, 1) for k, v in med.items()},
                **{f"{k}_cpu_median_ms": round(statistics.median(v) * 1000, 1) for k, v in cpus.items()},
                **{f"{k}_peak_rss_mb": round(v / 1024, 1) for k, v in rss.items()},
                **{f"{k}_answered": v for k, v in answered.items()},
                **{f"{k}_over_snmpget": round(med[k] / med["snmpget"], 3) for k in pythons},
            }
            if args.pysnmp:
                results[label]["get_hosts_over_pysnmp"] = round(med["get_hosts"] / med["pysnmp"], 3)
            if label == "3_silent":  # the sampled mode's worst case: a silent server drawn into the sample
                cmd, cenv = contenders["get_hosts_sample2"]
                worst = [measure(cmd, cenv)[0] for _ in range(SAMPLE_RUNS)]
                results[label][f"get_hosts_sample2_max_of_{SAMPLE_RUNS}_ms"] = round(max(worst) * 1000, 1)
                results[label][f"get_hosts_sample2_over_timeout_of_{SAMPLE_RUNS}"] = sum(
                    w * 1000 >= TIMEOUT_MS for w in worst)
        if args.steps and n >= 1:
            results["start_up_steps"] = start_up_steps(live[0], env, pythons, runs * 3)
        for s in silent_socks:
            s.close()
    results["fleet_start_s"] = round(start_s, 1)
    return results


def start_up_steps(address: str, env: dict, pythons: dict[str, tuple[Path, Path]], runs: int) -> dict:
    """Where one get_hosts' time goes, against one answering server: the bare interpreter with and
    without site, each get_hosts, alternating; and the median -X importtime of get_hosts' modules."""
    script, py = pythons["get_hosts"]
    gh_env = dict(env, LB_SERVERS=address, LB_TIMEOUT_MS=str(TIMEOUT_MS), LB_ALGORITHM="thresholded",
                  SNMPLB_CLIENT_CONF="/nonexistent")
    steps = {"python -I -c pass": ([str(py), "-I", "-c", "pass"], env),
             "python -I -S -c pass": ([str(py), "-I", "-S", "-c", "pass"], env),
             **{name: ([str(s)], dict(gh_env, SNMPLB_PYTHON=str(p))) for name, (s, p) in pythons.items()},
             "snmpget": (snmpget_cmd(address), env)}
    walls: dict[str, list[float]] = {k: [] for k in steps}
    cpus: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    for i in range(runs):
        for name in order[i % len(order):] + order[:i % len(order)]:  # rotated, as in run_size
            cmd, cenv = steps[name]
            secs, cpu, _ = measure_cpu(cmd, cenv)
            walls[name].append(secs)
            cpus[name].append(cpu)
    out: dict = {name: {"wall_median_ms": round(statistics.median(walls[name]) * 1000, 1),
                        "wall_min_ms": round(min(walls[name]) * 1000, 1),
                        "cpu_median_ms": round(statistics.median(cpus[name]) * 1000, 1)} for name in steps}
    out["import_time"] = {name: import_times(s, p, gh_env, runs) for name, (s, p) in pythons.items()}
    return out


def import_times(script: Path, python: Path, env: dict, runs: int) -> dict:
    """Median -X importtime of each module the get_hosts script imports (self time, us), and their sum."""
    with tempfile.TemporaryDirectory(prefix="snmplb-importtime-") as tmp:
        shim = Path(tmp) / "python3"
        shim.write_text(f'#!/bin/sh\nexec {python} -X importtime "$@"\n')
        shim.chmod(0o755)
        per: dict[str, list[int]] = {}
        for _ in range(runs):
            r = subprocess.run([str(script)], env=dict(env, SNMPLB_PYTHON=str(shim)), capture_output=True, text=True)
            for line in r.stderr.splitlines():
                if line.startswith("import time:") and "self [us]" not in line:
                    own, _, name = line[len("import time:"):].split("|")
                    per.setdefault(name.strip(), []).append(int(own))
    med = {k: statistics.median(v) for k, v in per.items()}
    top = sorted(med.items(), key=lambda kv: -kv[1])[:15]
    return {"modules": len(med), "sum_self_median_ms": round(sum(med.values()) / 1000, 2),
            "top_self_median_us": {k: round(v) for k, v in top}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30, 200])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline", default=BASELINE, help=f"the earlier revision to time alongside (default {BASELINE})")
    ap.add_argument("--steps", action="store_true", help="also time the start-up's steps against one server")
    ap.add_argument("--no-pysnmp", dest="pysnmp", action="store_false", help="leave the pysnmp contender out")
    ap.add_argument("--no-silent", dest="silent", action="store_false", help="only the all-answering runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = {"timeout_ms": TIMEOUT_MS, "runs": args.runs, "baseline": args.baseline,
           "revision": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                      capture_output=True, text=True).stdout.strip(),
           "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="snmplb-bench-") as tmp:
        base = Path(tmp)
        old = revision_tree(args.baseline, base / "baseline")
        pythons = {"get_hosts": (ROOT / "chroot" / "get_hosts", thin_client_install(base, "thin-venv")),
                   f"get_hosts@{args.baseline}": (old / "chroot" / "get_hosts",
                                                   thin_client_install(base, "thin-venv-old", source=old))}
        debian = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                                capture_output=True, text=True).stdout if DEBIAN_PYTHON.exists() else ""
        if debian.strip() == str(sys.version_info[:2]):  # the .pyc files are for this minor version
            pythons["get_hosts_debian_python"] = (ROOT / "chroot" / "get_hosts", thin_client_install(
                base, "debian-venv", python=str(DEBIAN_PYTHON), system_site=True))
            pythons[f"get_hosts@{args.baseline}_debian_python"] = (old / "chroot" / "get_hosts", thin_client_install(
                base, "debian-venv-old", source=old, python=str(DEBIAN_PYTHON), system_site=True))
        for n in args.sizes:
            out[str(n)] = run_size(n, args, base, pythons)
            print(json.dumps({str(n): out[str(n)]}, indent=2), flush=True)
    out["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
