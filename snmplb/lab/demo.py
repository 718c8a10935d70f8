"""snmplb-demo: a small fleet of real snmpd agents on loopback, read by name, and get_hosts choosing.

Starts four snmpd instances with the project's drop-in and agent, each with
its own fake load (idle, busy, swapping, draining), reads every server's row
by name with net-snmp's snmpget, walks one server's whole subtree, then runs
chroot/get_hosts as LDM would (with a fifth, dead server in LB_SERVERS) for
each algorithm, and shows `snmplb status`. ``--keep`` leaves the fleet
running until Ctrl-C so you can try snmpwalk, get_hosts, snmplb status and
snmplb-admin yourself; the commands are printed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from snmplb import mib
from snmplb.build import mibgen
from snmplb.adminfile import AdminSettings
from snmplb.errors import SnmplbError
from snmplb.lab.fleet import PROJECT, FakeLoad, Fleet, Instance, client_env

GIB = 1024 * 1024
COMMUNITY = "snmplb-ltsp"
SERVERS = {
    "app1": (FakeLoad(load1=0.35, load5=0.30, load15=0.25, cpus=8, mem_total=16 * GIB, mem_available=12 * GIB,
                      sessions=tuple((f"pupil{i}", f"192.168.0.{20 + i}") for i in range(6))), None),
    "app2": (FakeLoad(load1=6.80, load5=5.90, load15=4.10, cpus=4, mem_total=8 * GIB, mem_available=2 * GIB,
                      sessions=tuple((f"pupil{i}", f"192.168.0.{40 + i}") for i in range(14))), None),
    "app3": (FakeLoad(load1=2.10, load5=2.00, load15=1.80, cpus=4, mem_total=4 * GIB, mem_available=GIB // 8,
                      swap_free=GIB // 2, pswpin=10_000, pswpout=20_000,
                      sessions=tuple((f"pupil{i}", f"192.168.0.{60 + i}") for i in range(9))), None),
    "app4": (FakeLoad(load1=0.10, cpus=4, sessions=(("teacher", "192.168.0.5"),)),
             AdminSettings(state="draining")),
}
SHOWN = ("lbStatus", "lbLoadPerCpu", "lbMemAvailablePercent", "lbSwapping", "lbSessions", "lbUsers",
         "lbWeight", "lbAdminState", "lbRating")


def _mibdirs() -> str:
    """net-snmp's -M for the project's MIB: pysmi's search order reversed, since net-snmp takes a module
    from the LAST directory that has it (snmpcmd(1)): the stand-ins first, so that real base modules
    (the system's, where installed) win over them, and the project's MIB last."""
    return ":".join(reversed(mibgen.mib_search_dirs()))


def _snmp(tool: str, inst: Instance, env: dict[str, str], *args: str) -> str:
    """Run a net-snmp tool against ``inst`` with SNMPLB-MIB loaded; ``args`` are options then OIDs."""
    cmd = [tool, "-M", _mibdirs(), "-m", mib.MODULE, "-v2c", "-c", COMMUNITY,
           "-t1", "-r1", *(a for a in args if a.startswith("-")), inst.address,
           *(a for a in args if not a.startswith("-"))]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SnmplbError(f"{tool} {inst.name}: {r.stderr.strip()}")
    return r.stdout


def _table(fleet: Fleet, env: dict[str, str]) -> str:
    rows = [["server", "address"] + [n[2:] for n in SHOWN]]
    for inst in fleet.instances:
        out = _snmp("snmpget", inst, env, "-Oqs", *(f"{n}.0" for n in SHOWN))
        values = [line.split(" ", 1)[1] if " " in line else "?" for line in out.splitlines()]
        rows.append([inst.name, inst.address] + values)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(base: Path, keep: bool) -> int:
    with Fleet(base, community=COMMUNITY) as fleet:
        print(f"starting {len(SERVERS)} snmpd instances with snmplb-agent on loopback ...", flush=True)
        for name, (load, admin) in SERVERS.items():
            inst = fleet.add(name, load, admin)
            print(f"  {name} on {inst.address}", flush=True)
        # app3 is swapping hard: its page counters climb while the demo runs.
        app3 = fleet.instances[2]
        load3 = SERVERS["app3"][0]
        env = client_env(fleet.client_dir)
        _snmp("snmpget", app3, env, "lbSwapInPages.0")  # starts app3's agent: snmpd starts it lazily
        time.sleep(0.6)
        app3.set_load(replace(load3, pswpin=load3.pswpin + 300, pswpout=load3.pswpout + 600))
        time.sleep(1.2)
        print("\nEach server's row, read by name (snmpget -m SNMPLB-MIB ... lbStatus.0 ...):\n")
        print(_table(fleet, env))
        first = fleet.instances[0]
        print(f"\nThe whole subtree of {first.name}, walked by name (snmpwalk -m SNMPLB-MIB ... snmplbObjects):\n")
        print(_snmp("snmpwalk", first, env, "snmplbObjects"), end="")
        servers = " ".join(i.address for i in fleet.instances) + " 127.0.0.99:161"
        lb_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LB_SERVERS": servers,
                  "LB_SNMP_COMMUNITY": COMMUNITY, "LB_TIMEOUT_MS": "1000", "SNMPLB_PYTHON": sys.executable}
        get_hosts = str(PROJECT / "chroot" / "get_hosts")
        print(f"\nget_hosts, as LDM runs it (LB_SERVERS=\"{servers}\"; 127.0.0.99 is dead):\n")
        for algorithm in ("balanced", "thresholded", "best", "weighted", "random", "sticky", "fixed"):
            t0 = time.monotonic()
            r = subprocess.run([get_hosts], env={**lb_env, "LB_ALGORITHM": algorithm, "LB_CLIENT_ID": "52:54:00:00:00:01"},
                               capture_output=True, text=True, timeout=30)
            ms = (time.monotonic() - t0) * 1000
            print(f"  LB_ALGORITHM={algorithm:<12} -> {r.stdout.strip()!r:<44} ({ms:.0f} ms)")
        print("\nsnmplb status (what the admin sees):\n")
        r = subprocess.run([str(Path(sys.executable).parent / "snmplb"), "status"], env=lb_env,
                           capture_output=True, text=True, timeout=30)
        print(r.stdout, end="")
        if keep:
            print("\nThe fleet keeps running until Ctrl-C. Try, for example:")
            print(f"  snmpwalk -M {shlex.quote(_mibdirs())} -m {mib.MODULE} -v2c -c {COMMUNITY} "
                  f"{first.address} snmplbObjects")
            print(f"  {Path(sys.executable).parent / 'snmplb-admin'} --file {first.admin_file} drain")
            print(f"  LB_SERVERS='{servers}' LB_SNMP_COMMUNITY={COMMUNITY} SNMPLB_PYTHON={sys.executable} {get_hosts}")
            print(f"  LB_SERVERS='{servers}' LB_SNMP_COMMUNITY={COMMUNITY} "
                  f"{Path(sys.executable).parent / 'snmplb'} status --watch 2")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print()
    print("fleet stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="snmplb-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the fleet running until Ctrl-C")
    ap.add_argument("--dir", type=Path, help="working directory (default: a temporary one)")
    args = ap.parse_args(argv)
    try:
        if args.dir:
            return run(args.dir, args.keep)
        with tempfile.TemporaryDirectory(prefix="snmplb-demo-") as tmp:
            return run(Path(tmp), args.keep)
    except SnmplbError as exc:
        print(f"snmplb-demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
