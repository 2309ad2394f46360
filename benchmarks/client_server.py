"""Tasks through the client API server against a driver on a node, in one run.

One cluster on this machine (`manta start --head`, 127.0.0.1). The same
driver program runs twice per round, alternating which goes first: on the
node (`init(address="auto")`: Unix sockets, the store mapped) and as a
remote client (`init("manta://HOST:PORT")`: one TCP connection to the head,
relayed to its proxy driver). Measured:

- sync: round trips of a no-op task, one at a time;
- async: 1,000 no-op tasks submitted, then got together;
- actor: sync calls of an actor method;
- put+get: a 100 MB array put, then read back.

Reported as client figure over on-node figure for throughput (1.0: the
client server costs nothing; below 1: slower), the median of the rounds:

    python benchmarks/client_server.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

DRIVER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import manta
    manta.init(sys.argv[1])
    n_sync, n_async, mb = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    @manta.remote
    def noop(): return 0
    @manta.remote
    class A:
        def ping(self): return 0
    a = A.remote()
    manta.get([noop.remote() for _ in range(20)]); manta.get(a.ping.remote())
    out = {}
    t = time.perf_counter()
    for _ in range(n_sync):
        manta.get(noop.remote())
    out["sync"] = n_sync / (time.perf_counter() - t)
    t = time.perf_counter()
    manta.get([noop.remote() for _ in range(n_async)])
    out["async"] = n_async / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n_sync):
        manta.get(a.ping.remote())
    out["actor"] = n_sync / (time.perf_counter() - t)
    big = np.ones(mb << 20, dtype=np.uint8)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter(); back = manta.get(manta.put(big)); best = min(best, time.perf_counter() - t)
        del back
    out["put_get"] = mb / best
    print(json.dumps(out))
    manta.shutdown()
""")
UNITS = {"sync": "tasks/s", "async": "tasks/s", "actor": "calls/s", "put_get": "MB/s"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sync", type=int, default=300)
    ap.add_argument("--async-tasks", type=int, default=1000)
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mclb")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MANTA_TMPDIR": root}
    env.pop("MANTA_TOKEN", None)
    address = ""
    got: dict[str, list[dict[str, float]]] = {"node": [], "client": []}
    try:
        r = subprocess.run([sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0", "--num-cpus", "2"],
                           env=env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        (session,) = [os.path.join(root, d) for d in os.listdir(root)]
        with open(os.path.join(session, "cluster.json")) as f:
            address = json.load(f)["head_address"].partition(":")[2]
        with open(os.path.join(session, "token")) as f:
            token = f.read().strip()
        where = {"node": ("auto", env), "client": (f"manta://{address}", {**env, "MANTA_TOKEN": token})}
        for i in range(args.rounds):
            for kind in (("node", "client") if i % 2 == 0 else ("client", "node")):
                target, run_env = where[kind]
                r = subprocess.run([sys.executable, "-c", DRIVER, target, str(args.sync), str(args.async_tasks),
                                    str(args.mb)], env=run_env, capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    raise RuntimeError(r.stderr)
                got[kind].append(json.loads(r.stdout.strip().splitlines()[-1]))
    finally:
        if address:
            subprocess.run([sys.executable, "-m", "manta.cli", "stop", "--address", address], env=env,
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    med = {k: {m: statistics.median(r[m] for r in rs) for m in UNITS} for k, rs in got.items()}
    print(f"{'':10} {'unit':8} {'on a node':>10} {'client':>10} {'client/node':>12}")
    for metric, unit in UNITS.items():
        node, client = med["node"][metric], med["client"][metric]
        print(f"{metric:10} {unit:8} {node:10,.0f} {client:10,.0f} {client / node:12.2f}")
    print(json.dumps({"rounds": args.rounds, **med}))


if __name__ == "__main__":
    main()
