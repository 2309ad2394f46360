"""Time from `manta job submit` to the job running, against Ray's `ray job submit`
on this machine, measured in alternating rounds in one run.

One cluster of each (1 CPU, its HTTP server on a free port), each in its own
temp dir. A round runs the CLI (`job submit --no-wait -- python -c ...`) and
waits for the entrypoint to write the time it started; the figure is that
time minus the moment the CLI was started (CLI start-up, the request, the
head's supervisor, the entrypoint's Python start-up). Reported as medians
and as the ratio Ray / manta (above 1: manta is faster).

    python benchmarks/job_submit.py --ray /path/to/ray-venv/bin [--rounds 5]

Ray must be installed (with its dashboard: `pip install 'ray[default]'`) in a
virtual environment outside this repository. Ray's processes are stopped by
the PIDs found under its temp dir, never by name.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
STAMP = "import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_file(path: str, timeout: float = 120) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            if text:
                return float(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise TimeoutError(f"the job never wrote {path}")


def one_round(cli: list[str], env: dict[str, str], python: str, out_dir: str, n: int) -> float:
    stamp = os.path.join(out_dir, f"stamp-{n}")
    started = time.time()
    r = subprocess.run([*cli, "--no-wait", "--", python, "-c", STAMP, stamp], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return wait_file(stamp) - started


def pids_under(root: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if root in " ".join(p.info["cmdline"] or []):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def stop_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                             for p in pids):
            time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ray", required=True, help="the bin directory of a venv with ray[default]")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="jobbench")
    manta_env = {**os.environ, "MANTA_TMPDIR": os.path.join(root, "manta"), "PYTHONPATH": str(REPO_ROOT)}
    manta_env.pop("MANTA_TOKEN", None)
    os.makedirs(manta_env["MANTA_TMPDIR"])
    ray_tmp = os.path.join(root, "ray")
    ray_env = {k: v for k, v in os.environ.items() if not k.startswith(("MANTA_", "RAY_", "PYTHONPATH"))}
    ray_env["RAY_USAGE_STATS_ENABLED"] = "0"
    manta_cli = [sys.executable, "-m", "manta.cli"]
    ray_bin = args.ray.rstrip("/")
    manta_address = ""
    try:
        out = subprocess.run([*manta_cli, "start", "--head", "--port", "0", "--num-cpus", "1", "--dashboard-port",
                              "0"], env=manta_env, capture_output=True, text=True, timeout=120, check=True).stdout
        manta_address = out.split("started at ")[1].split()[0]
        (rec,) = [p for p in Path(manta_env["MANTA_TMPDIR"]).rglob("cluster.json")]
        manta_url = json.loads(rec.read_text())["dashboard_url"]
        ray_port = free_port()
        subprocess.run([f"{ray_bin}/ray", "start", "--head", "--num-cpus", "1", "--port", str(free_port()),
                        "--dashboard-port", str(ray_port), "--include-dashboard", "true", "--temp-dir", ray_tmp,
                        "--disable-usage-stats"], env=ray_env, capture_output=True, text=True, timeout=180,
                       check=True)
        ray_url = f"http://127.0.0.1:{ray_port}"
        sides = {
            "manta": ([*manta_cli, "job", "submit", "--address", manta_url], manta_env, sys.executable),
            "ray": ([f"{ray_bin}/ray", "job", "submit", "--address", ray_url], ray_env, f"{ray_bin}/python"),
        }
        for name, (cli, env, py) in sides.items():  # warm-up: the first job of each pays imports
            one_round(cli, env, py, root, -1 if name == "manta" else -2)
        times: dict[str, list[float]] = {"manta": [], "ray": []}
        for i in range(args.rounds):
            for name, (cli, env, py) in sides.items():
                times[name].append(one_round(cli, env, py, root, i * 2 + (name == "ray")))
        m, r = statistics.median(times["manta"]), statistics.median(times["ray"])
        print(f"rounds: {args.rounds}")
        print(f"{'':44}{'manta':>10}{'ray':>10}{'ray/manta':>11}")
        print(f"{'`job submit` to the entrypoint running':44}{m * 1000:>8.0f}ms{r * 1000:>8.0f}ms{r / m:>11.2f}")
        print("all (s): " + json.dumps({k: [round(v, 3) for v in vs] for k, vs in times.items()}))
    finally:
        if manta_address:
            subprocess.run([*manta_cli, "stop", "--address", manta_address], env=manta_env, capture_output=True,
                           timeout=60)
        stop_pids(pids_under(ray_tmp))
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
