"""Start-up time and memory of snmplb-chooser (Tk) and, for the choice of toolkit, of a minimal Tk and a
minimal GTK 3 (PyGObject) window, under Xvfb.

    .venv/bin/python bench/chooser_bench.py [--runs 10] [--gtk-python /usr/bin/python3]

Start-up: from spawning the process to its window being mapped (xdotool search --onlyvisible, every 10 ms).
Memory: the process's peak RSS (VmHWM) with its window up. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MIN_TK = "import tkinter; r = tkinter.Tk(); r.title('bench-tk'); tkinter.Label(r, text='x').pack(); r.mainloop()"
MIN_GTK = ("import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk; "
           "w = Gtk.Window(title='bench-gtk'); "
           "w.add(Gtk.Label(label='x')); w.show_all(); Gtk.main()")


def _free_display() -> int:
    return next(n for n in range(60, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                and not Path(f"/tmp/.X{n}-lock").exists())


def measure(cmd: list[str], title: str, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Our own 10 ms polling: xdotool's --sync waits 0.5 s between its tries.
        for _ in range(3000):
            r = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title], env=env,
                               timeout=60, capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.01)
        else:
            raise subprocess.SubprocessError("no window")
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
        hwm = next(int(ln.split()[1]) for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                   if ln.startswith("VmHWM:"))
        return elapsed, hwm
    finally:
        p.terminate()
        p.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--gtk-python", default="/usr/bin/python3")
    args = ap.parse_args()
    n = _free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1024x600x24", "-nolisten", "tcp"],
                            stderr=subprocess.DEVNULL)
    bindir = Path(sys.executable).parent
    env = {"PATH": os.environ["PATH"], "DISPLAY": f":{n}", "LB_SERVERS": "127.0.0.1:9", "LB_TIMEOUT_MS": "300",
           "SNMPLB_CLIENT_CONF": "/nonexistent"}
    cases = {"snmplb-chooser (Tk, polls itself)": ([str(bindir / "snmplb-chooser"), "--queue", "/snmplb-bench-none"],
                                                   "Choose a server"),
             "minimal Tk window (this Python)": ([sys.executable, "-c", MIN_TK], "bench-tk"),
             "minimal GTK 3 window (PyGObject)": ([args.gtk_python, "-c", MIN_GTK], "bench-gtk")}
    out = {}
    try:
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                break
            time.sleep(0.1)
        for name, (cmd, cls) in cases.items():
            try:
                runs = [measure(cmd, cls, env) for _ in range(args.runs)]
            except subprocess.SubprocessError as exc:
                out[name] = {"error": type(exc).__name__}
                continue
            times = sorted(r[0] for r in runs)
            out[name] = {"runs": args.runs, "startup_ms_median": round(statistics.median(times) * 1000),
                         "startup_ms_max": round(times[-1] * 1000),
                         "rss_kib_median": int(statistics.median(r[1] for r in runs))}
    finally:
        xvfb.terminate()
        xvfb.wait()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
