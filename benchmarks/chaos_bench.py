"""What a worker killer costs: 2,000 short tasks with and without a SIGKILL a second.

Each backend runs the same driver twice in one process: once undisturbed
(the baseline), once while a thread SIGKILLs the worker that most recently
started a task, every second. Reported: the slowdown (killed / undisturbed
time), kills, re-runs, and whether every result was right. Run with Ray too
(installed in a separate venv) to compare the two under the same killer:

    python benchmarks/chaos_bench.py --ray-python /path/to/ray-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

DRIVER = """
import json, os, random, signal, sys, threading, time
import {backend} as ray

LOG = sys.argv[1]
ray.init(num_cpus=2, include_dashboard=False) if "{backend}" == "ray" else ray.init(num_cpus=2)

@ray.remote(max_retries=3)
def work(i):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{{i}} {{os.getpid()}}\\n".encode())
    os.close(fd)
    time.sleep(0.01)
    return i * i

def run(n):
    start = time.time()
    out = ray.get([work.remote(i) for i in range(n)], timeout=600)
    return time.time() - start, out == [i * i for i in range(n)]

def recent_pids():
    try:
        with open(LOG, "rb") as f:
            f.seek(max(0, os.path.getsize(LOG) - 2000))
            lines = f.read().decode(errors="ignore").split("\\n")[1:]
        return [int(l.split()[1]) for l in lines if len(l.split()) == 2]
    except OSError:
        return []

run(200)  # warm up the worker pool
os.unlink(LOG)
base, base_ok = run(2000)
os.unlink(LOG)
kills = []
stop = threading.Event()

def killer():
    rng = random.Random(7)
    while not stop.wait(1.0):
        pids = [p for p in set(recent_pids()[-20:]) if p != os.getpid()]
        if pids:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills.append(1)
            except ProcessLookupError:
                pass

t = threading.Thread(target=killer, daemon=True)
t.start()
killed, killed_ok = run(2000)
stop.set()
t.join()
runs = {{}}
for line in open(LOG).read().split("\\n"):
    if line.strip():
        i = int(line.split()[0])
        runs[i] = runs.get(i, 0) + 1
print("RESULT", json.dumps({{"base": base, "killed": killed, "ok": base_ok and killed_ok and len(runs) == 2000,
                            "kills": len(kills), "reruns": sum(runs.values()) - 2000,
                            "max_runs": max(runs.values())}}), flush=True)
ray.shutdown()
"""


def run_backend(backend: str, python: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="chaosbench") as tmp:
        env = dict(os.environ)
        if backend == "manta":
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        script = textwrap.dedent(DRIVER.format(backend=backend))
        out = subprocess.run([python, "-c", script, os.path.join(tmp, "runs.log")], env=env,
                             capture_output=True, text=True, timeout=900)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{backend} failed:\n{out.stdout}\n{out.stderr[-3000:]}")
        return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="interpreter for manta")
    parser.add_argument("--ray-python", help="interpreter with ray installed (adds ray)")
    args = parser.parse_args()
    results = {"manta": run_backend("manta", args.python)}
    if args.ray_python:
        results["ray"] = run_backend("ray", args.ray_python)
    print(f"{'backend':8} {'undisturbed s':>14} {'killed s':>9} {'slowdown':>9} {'kills':>6} {'re-runs':>8} "
          f"{'max runs':>9} {'correct':>8}")
    for name, r in results.items():
        print(f"{name:8} {r['base']:14.2f} {r['killed']:9.2f} {r['killed'] / r['base']:8.2f}x {r['kills']:6} "
              f"{r['reruns']:8} {r['max_runs']:9} {str(r['ok']):>8}")
    if "ray" in results:
        m, r = results["manta"], results["ray"]
        print(f"\nunder the killer, manta finishes 2,000 tasks {r['killed'] / m['killed']:.2f}x as fast as Ray")


if __name__ == "__main__":
    main()
