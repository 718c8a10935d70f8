"""What `snmplb feed` costs the fleet and the thin client, measured against a real snmpd + agent.

    .venv/bin/python bench/feed_cost.py [--seconds 20]

1. Datagrams per refresh per server: a counting UDP relay in front of one agent, `snmplb feed
   --count 10 --refresh 1` through it (expected: one GET and its answer per refresh).
2. The server's CPU per GET: the poll get_hosts and the feed use, in a loop for --seconds, with the
   CPU time of snmpd and its agent read from /proc before and after.
3. The feed's own cost on the thin client: CPU time per refresh and peak RSS of `snmplb feed`.

Prints one JSON document (docs/feed_cost.json) with the extrapolation for 1400 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from snmplb.client.deadline import after
from snmplb.client.driver import gather
from snmplb.client.selection import Selection
from snmplb.lab.fleet import FakeLoad, Fleet
from snmplb.client.sources import load

COMMUNITY = "snmplb-ltsp"
TICK = os.sysconf("SC_CLK_TCK")


class CountingRelay(threading.Thread):
    """Relays UDP datagrams to ``target`` and back, counting requests (bounded by ``until``)."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((host, 0))
        self.address = f"{host}:{self.front.getsockname()[1]}"
        self.target = target
        self.requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ, None)
        backs: dict[tuple, socket.socket] = {}
        while not self.stop.is_set():
            for key, _ in sel.select(0.2):
                if key.data is None:
                    data, client = self.front.recvfrom(65535)
                    self.requests += 1
                    if client not in backs:
                        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        b.connect(self.target)
                        backs[client] = b
                        sel.register(b, selectors.EVENT_READ, client)
                    backs[client].send(data)
                else:
                    self.front.sendto(key.fileobj.recv(65535), key.data)


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        f = Path(f"/proc/{pid}/stat").read_text()
        fields = f[f.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, Fleet(Path(tmp) / "fleet", community=COMMUNITY) as fleet:
        inst = fleet.add("app", FakeLoad(load1=1.0, cpus=4))
        env = {"PATH": os.environ["PATH"], "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1000",
               "SNMPLB_CLIENT_CONF": "/nonexistent"}
        # 1. requests per refresh
        relay = CountingRelay("127.0.0.61", (inst.host, inst.port))
        relay.start()
        refreshes = 10
        subprocess.run([str(bindir / "snmplb"), "feed", "--no-queue", "--no-json", "--count", str(refreshes),
                        "--refresh", "1"], env={**env, "LB_SERVERS": relay.address}, check=True,
                       capture_output=True, timeout=120)
        relay.stop.set()
        out["requests_per_refresh_per_server"] = relay.requests / refreshes
        # 2. the server's CPU per GET
        settings, _ = load({**env, "LB_SERVERS": inst.address})
        selection = Selection(settings, random.Random(1))
        plan = selection.plan()
        gather(selection, plan, deadline=after(settings.timeout_ms))  # snmpd starts the agent at the first request
        pids = [inst.process.pid, *inst.agent_pids()]
        before, n, t0 = cpu_s(pids), 0, time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            servers, _, _ = gather(selection, plan, deadline=after(settings.timeout_ms))
            n += 1 if servers[0].ok else 0
        elapsed = time.monotonic() - t0
        used = cpu_s(pids) - before
        out["server"] = {"gets": n, "seconds": round(elapsed, 1), "gets_per_s": round(n / elapsed),
                         "cpu_ms_per_get": round(used * 1000 / n, 3)}
        # 3. the feed's own cost: 2 s refresh for --seconds
        feed = subprocess.Popen([str(bindir / "snmplb"), "feed", "--no-json", "--queue", "/snmplb-bench-cost",
                                 "--idle", "0", "--for", str(args.seconds), "--refresh", "2"],
                                env={**env, "LB_SERVERS": inst.address}, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # past the interpreter's start
        start = cpu_s([feed.pid])
        time.sleep(args.seconds - 2)
        steady = cpu_s([feed.pid]) - start
        status = Path(f"/proc/{feed.pid}/status").read_text().splitlines()
        hwm = next(int(ln.split()[1]) for ln in status if ln.startswith("VmHWM:"))
        feed.wait(timeout=60)
        out["feed"] = {"refresh_s": 2, "cpu_ms_per_refresh_one_server": round(steady * 1000 / ((args.seconds - 2) / 2), 1),
                       "peak_rss_kib": hwm}
    per_get = out["server"]["cpu_ms_per_get"]
    out["extrapolation"] = {
        f"{clients}_clients_refresh_{r}s": {"gets_per_s_per_server": round(clients / r, 1),
                                            "server_cpu_percent_of_one_core": round(clients / r * per_get / 10, 2)}
        for clients in (50, 1400) for r in (2, 5, 10)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
