"""Benchmark: what a user's question costs `snmplb pick` at 30 servers (issue 19), with and without, same run.

30 real snmpd agents on loopback (``snmplb.lab.fleet.Fleet``), each with a site key
(``affinity_key_file``) and USERS remote sessions of its own users; the asked user ``alice`` has
one on a single server. The same thin-client settings (LB_SERVERS: the 30, the key in
LB_AFFINITY_KEY_FILE, LB_ALGORITHM=balanced) for every contender:

- ``pick``: `snmplb pick`, no user (get_hosts' question: lbRow only);
- ``pick --user``: `snmplb pick --user alice`: NSS's groups are not asked (no LB_POOLS), the key is read,
  the question built and asked with its decoy in each server's GET beside lbRow (still one datagram
  per server: five varbinds) and answered by each agent; affinity decides (the output is alice's server: checked at every run);
- ``pick --user, LB_AFFINITY=no``: the user known but no question (what --user costs besides it).

With ``--baseline REV``, the same two picks of that revision's package too (``git archive``), in the
same rounds, against the same agents (this revision's): what a change to the client's side did.

Whole processes, interleaved (each round in a rotated order), ROUNDS rounds: median wall time and
median CPU time of the process (user + system from wait4), the ratio of medians to ``pick`` and the
median of the paired differences (each round's contender minus that round's ``pick``). Every
package byte-compiled first and the processes allowed to use it (PYTHONDONTWRITEBYTECODE dropped):
an installed package is compiled (Debian's dh_python does it at install).

Then the server side alone: on one of the agents, the round trip of one GET of lbRow against one of
lbRow with the question's and the decoy's four varbinds, as pick asks them (alternating, over one
UDP socket, a fresh question and decoy each time: snmpd relays each varbind to the agent separately,
and the agent computes one MAC per user of its own for each of the two); and ``usersessions.Answers.answer`` alone with N users (a fresh question each time), in a
process per package tree.

    .venv/bin/python bench/affinity_cost.py [--servers 30] [--rounds 60] [--baseline REV] [--json docs/affinity_cost.json]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
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
from snmplb import affinity, mib  # noqa: E402
from snmplb.lab.fleet import FakeLoad, Fleet, client_env  # noqa: E402

COMMUNITY = "snmplb-ltsp"
KEY = "bench-site-key-0123456789abcdef-0123456789"
USER = "alice"
LAUNCH = "import sys; sys.argv[0] = 'snmplb'; from snmplb.login.command import main; sys.exit(main())"


def measure_cpu(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the process) and stdout. ``cwd``: a directory without
    a package (``python -c`` puts it first on sys.path, before PYTHONPATH)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    p.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} exited with {os.waitstatus_to_exitcode(status)}")
    return secs, usage.ru_utime + usage.ru_stime, out.decode()


def load_for(i: int, users: int, home: int) -> FakeLoad:
    """Server i's load: ``users`` sessions of its own users, and alice's on server ``home``."""
    sessions = tuple((f"u{i:02d}x{k:03d}", "10.0.0.1") for k in range(users))
    if i == home:
        sessions += ((USER, "10.0.0.2"),)
    return FakeLoad(load1=0.5 + (i % 7) * 0.3, cpus=8, mem_total=32 << 20, mem_available=(16 + i % 5) << 20,
                    sessions=sessions)


def package_tree(rev: str, dest: Path) -> Path:
    """``rev``'s snmplb package, exported into ``dest`` and byte-compiled; its directory for PYTHONPATH."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "snmplb"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    compileall.compile_dir(dest / "snmplb", quiet=1)
    return dest


def pick_rounds(fleet: Fleet, key_file: Path, rounds: int, home: str, baseline: tuple[str, Path] | None) -> dict:
    env = dict(client_env(fleet.client_dir), LB_SERVERS=" ".join(i.address for i in fleet.instances),
               LB_COMMUNITY=COMMUNITY, LB_ALGORITHM="balanced", LB_AFFINITY_KEY_FILE=str(key_file),
               SNMPLB_CLIENT_CONF="/nonexistent", PYTHONPATH=str(ROOT))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pick = [sys.executable, "-c", LAUNCH, "pick"]
    contenders = {"pick": (pick, env), "pick --user": (pick + ["--user", USER], env),
                  "pick --user, LB_AFFINITY=no": (pick + ["--user", USER], dict(env, LB_AFFINITY="no"))}
    if baseline:
        rev, tree = baseline
        contenders[f"pick ({rev})"] = (pick, dict(env, PYTHONPATH=str(tree)))
        contenders[f"pick --user ({rev})"] = (pick + ["--user", USER], dict(env, PYTHONPATH=str(tree)))
    check = "import snmplb, sys; print(snmplb.__file__)"
    for cmd, cenv in contenders.values():  # each contender runs the package it names
        where = subprocess.run([sys.executable, "-c", check], env=cenv, cwd=fleet.client_dir, capture_output=True,
                               text=True, check=True).stdout
        if not where.startswith(cenv["PYTHONPATH"] + "/"):
            raise SystemExit(f"{cmd} runs {where}")
    for cmd, cenv in contenders.values():  # warm: every agent started, the page cache full
        measure_cpu(cmd, cenv, fleet.client_dir)
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    cpus: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            cmd, cenv = contenders[name]
            secs, cpu, out = measure_cpu(cmd, cenv, fleet.client_dir)
            if name.startswith("pick --user") and "LB_AFFINITY=no" not in name and out.strip() != home:
                raise SystemExit(f"pick --user chose {out.strip()!r}, not {USER}'s server {home}: no affinity")
            walls[name].append(secs)
            cpus[name].append(cpu)
    base_w, base_c = statistics.median(walls["pick"]), statistics.median(cpus["pick"])

    def paired(times: dict[str, list[float]], name: str) -> float:
        """The median of each round's difference to that round's ``pick``, in ms."""
        return round(1000 * statistics.median(a - b for a, b in zip(times[name], times["pick"])), 2)

    return {name: {"wall_ms_median": round(1000 * statistics.median(walls[name]), 2),
                   "cpu_ms_median": round(1000 * statistics.median(cpus[name]), 2),
                   "wall_ratio": round(statistics.median(walls[name]) / base_w, 4),
                   "cpu_ratio": round(statistics.median(cpus[name]) / base_c, 4),
                   "wall_ms_paired_difference": paired(walls, name), "cpu_ms_paired_difference": paired(cpus, name),
                   "wall_ms_quartiles": [round(1000 * q, 2) for q in statistics.quantiles(walls[name], n=4)]}
            for name in contenders}


def get_rounds(address: str, rounds: int) -> dict:
    """One agent: lbRow alone against lbRow with the user's two varbinds, alternating, over one socket."""
    from agent_latency import encode_get, round_trip

    row = mib.oid_str(mib.ROW.instance)

    def asking() -> list[str]:  # a fresh nonce and decoy at every GET, as every login draws them (no memo hit)
        from snmplb.client.serverquery import oids_asked

        question = affinity.question(KEY.encode(), USER, os.urandom(affinity.NONCE_SIZE))
        return [mib.oid_str(o) for o in oids_asked(*affinity.with_decoy(question))]

    kinds = {"lbRow": lambda: [row], "lbRow + question + decoy": asking}
    host, port = address.rsplit(":", 1)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, int(port)))
        sock.settimeout(2.0)
        for r in range(rounds + 100):
            for k, oids in (kinds.items() if r % 2 else reversed(kinds.items())):
                t = round_trip(sock, encode_get(oids(), r + 1, COMMUNITY))
                if r >= 100:  # the first 100: warm-up
                    times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    asked = med["lbRow + question + decoy"]
    return {"lbRow_ms": round(1000 * med["lbRow"], 3), "lbRow_question_decoy_ms": round(1000 * asked, 3),
            "ratio": round(asked / med["lbRow"], 3)}


ANSWER_COST = """
import json, os, sys, time
from snmplb import affinity
from snmplb.agent.usersessions import Answers, UserSessions
key, out = sys.argv[1].encode(), {}
for n in map(int, sys.argv[3:]):
    users = {f"user{k:04d}": UserSessions(1, k % 2) for k in range(n)}
    asked = [affinity.question(key, f"user{q % n:04d}" if q % 2 else "nobody", os.urandom(affinity.NONCE_SIZE))
             for q in range(int(sys.argv[2]))]
    answers = Answers(key, users)
    t0 = time.perf_counter()
    for q in asked:
        answers.answer(affinity.SESSIONS.name, q)
        answers.answer(affinity.WAITING.name, q)
    out[str(n)] = 1e6 * (time.perf_counter() - t0) / len(asked)
print(json.dumps(out))
"""


def answer_cost(sizes: list[int], questions: int, trees: dict[str, Path], repeats: int = 3) -> dict:
    """Microseconds per question (both columns, as a GET asks them) in ``Answers`` with N users, for each
    package tree (a process each, alternating, ``repeats`` times; the median)."""
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(repeats):
        for name, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run([sys.executable, "-c", ANSWER_COST, KEY, str(questions), *map(str, sizes)], env=env,
                                 capture_output=True, text=True, check=True, cwd=str(tree))
            runs[name].append(json.loads(out.stdout))
    return {name: {str(n): round(statistics.median(r[str(n)] for r in rs), 1) for n in sizes}
            for name, rs in runs.items()}


def revision() -> str:
    """This tree's commit, with "+changes" when it differs from it."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "snmplb", "bench"], capture_output=True,
                           text=True).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=60, help="runs of each pick contender")
    ap.add_argument("--users", type=int, default=40, help="sessions of other users on each server")
    ap.add_argument("--gets", type=int, default=2000, help="GETs of each kind to one agent")
    ap.add_argument("--baseline", metavar="REV", help="also time this git revision's client (git archive)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    compileall.compile_dir(ROOT / "snmplb", quiet=1)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "affinity.key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        home = args.servers // 3
        with Fleet(Path(tmp) / "fleet", community=COMMUNITY,
                   agent_settings={"interval": "1.0", "affinity_key_file": str(key_file)}) as fleet:
            for i in range(args.servers):
                fleet.add(f"s{i:02d}", load_for(i, args.users, home))
            baseline = (args.baseline, package_tree(args.baseline, Path(tmp) / "baseline")) if args.baseline else None
            picks = pick_rounds(fleet, key_file, args.rounds, fleet.instances[home].host, baseline)
            gets = get_rounds(fleet.instances[0].address, args.gets)
        answers = answer_cost([1, 10, 50, 200, 1000], 2000,
                              {"this revision": ROOT, **({args.baseline: baseline[1]} if baseline else {})})
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    result = {"date": started, "servers": args.servers, "rounds": args.rounds, "users_per_server": args.users,
              "cores": os.cpu_count(), "python": platform.python_version(), "revision": revision(),
              "baseline": args.baseline, "loadavg_before": load_before, "loadavg_after": load_after,
              "pick": picks, "one_agent_get": gets, "answer_us_per_question_by_users": answers}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
