"""Benchmark: `ssh farm` through `ProxyCommand snmplb connect %p` against direct ssh, same run.

A real snmpd agent and a real sshd share one loopback address (tests/farm.py's farm); each round
sends SIZE MiB through `ssh farm 'cat > /dev/null'` (up) and receives SIZE MiB from
`ssh farm 'head -c SIZE /dev/zero'` (down), each twice, once through the ProxyCommand (the
pick, the connection, the relay) and once straight to the sshd (ProxyCommand none), alternating
which goes first. Also measured: a login's fixed cost (`ssh farm true`) both ways, and the relay
alone without ssh's encryption (SIZE MiB from a pipe through `snmplb connect` into a TCP sink,
against the same bytes sent to the sink by one process).

    .venv/bin/python bench/connect_bench.py [--size 200] [--rounds 5] [--json FILE]

Results and how they were taken: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from farm import Farm  # noqa: E402
from snmplb.lab.fleet import FakeLoad, Fleet  # noqa: E402

COMMUNITY = "snmplb-ltsp"
BIN = Path(sys.executable).parent


def _timed(cmd: list[str], env: dict[str, str], size_mib: int) -> float:
    """Seconds for ``cmd`` with SIZE MiB of zeros on its stdin (fed by dd, not by this process)."""
    start = time.perf_counter()
    dd = subprocess.Popen(["dd", "if=/dev/zero", "bs=1M", f"count={size_mib}", "status=none"], stdout=subprocess.PIPE)
    r = subprocess.run(cmd, env=env, stdin=dd.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    dd.wait(60)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {r.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


def _sink() -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.11", 0))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                buf = bytearray(1 << 20)
                while conn.recv_into(buf):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=200, help="MiB per transfer")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Fleet(Path(tmp) / "fleet", community=COMMUNITY) as fleet:
        inst = fleet.add("app1", FakeLoad(load1=0.4, cpus=4))
        with Farm(Path(tmp) / "farm", {"app1": inst.host}) as farm:
            env = {"PATH": os.environ["PATH"], "HOME": str(farm.base), "LB_SERVERS": inst.address,
                   "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1000",
                   "SNMPLB_CLIENT_CONF": str(Path(tmp) / "none")}
            ssh = ["ssh", "-F", str(farm.config)]
            via = [*ssh, "farm"]
            direct = [*ssh, "-o", "ProxyCommand=none", "-o", f"HostName={inst.host}", "farm"]
            results: dict[str, list[float]] = {k: [] for k in
                                               ("proxy_s", "direct_s", "down_proxy_s", "down_direct_s", "login_proxy_s",
                                                "login_direct_s",
                                                "relay_s", "plain_s")}
            srv, _ = _sink()
            port = srv.getsockname()[1]
            relay = [str(BIN / "snmplb"), "connect", str(port)]
            plain = [sys.executable, "-c",
                     "import socket,sys,shutil\ns=socket.create_connection(('127.0.0.11',%d))\n"
                     "f=s.makefile('wb',buffering=1<<20)\nshutil.copyfileobj(sys.stdin.buffer,f,1<<20)\n"
                     "f.close();s.shutdown(1)" % port]
            for r in range(args.rounds):
                pairs = [("proxy_s", via), ("direct_s", direct)]
                for key, cmd in (pairs if r % 2 == 0 else pairs[::-1]):
                    results[key].append(_timed([*cmd, "cat > /dev/null"], env, args.size))
                for key, cmd in ((("down_proxy_s", via), ("down_direct_s", direct))
                                 if r % 2 == 0 else (("down_direct_s", direct), ("down_proxy_s", via))):
                    results[key].append(_timed([*cmd, f"head -c {args.size}M /dev/zero"], env, 0))
                for key, cmd in ((("login_proxy_s", via), ("login_direct_s", direct))
                                 if r % 2 == 0 else (("login_direct_s", direct), ("login_proxy_s", via))):
                    results[key].append(_timed([*cmd, "true"], env, 0))
                for key, cmd in ((("relay_s", relay), ("plain_s", plain))
                                 if r % 2 == 0 else (("plain_s", plain), ("relay_s", relay))):
                    results[key].append(_timed(cmd, env, args.size))
            srv.close()
    summary = {"size_mib": args.size, "rounds": args.rounds, "raw": results}
    for key, xs in results.items():
        summary[key.replace("_s", "_median_s")] = round(statistics.median(xs), 3)
    for a, b in (("proxy", "direct"), ("down_proxy", "down_direct"), ("relay", "plain")):
        summary[f"{a}_mib_s"] = round(args.size / summary[f"{a}_median_s"], 1)
        summary[f"{b}_mib_s"] = round(args.size / summary[f"{b}_median_s"], 1)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
