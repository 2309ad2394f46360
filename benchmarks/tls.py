"""What TLS costs across nodes: two 2-node clusters on this machine, one with
`--tls on` and one with `--tls off` (both over 127.0.0.1), measured in
alternating rounds in one run.

- transfer: a 300 MB object made by a task on the second node, read by a task
  on the head's node (the pull crosses the nodes' TCP link);
- small ops: synchronous round trips of a no-op task leased on the second node.

Reported as ratios, TLS-off time / TLS-on time (1.0: free; targets: transfer
>= 0.6, small ops >= 0.8):

    python benchmarks/tls.py [--rounds 3] [--mb 300] [--ops 300]
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
    manta.init(address=sys.argv[1])
    mb, ops = int(sys.argv[2]), int(sys.argv[3])
    @manta.remote(resources={"B": 1})
    def make(n): return np.ones(n, dtype=np.uint8)
    @manta.remote(num_cpus=1, resources={"A": 1})
    def read(a): return int(a[::4096].sum())
    @manta.remote(resources={"B": 1})
    def noop(): return 0
    manta.get(noop.remote())
    manta.get(read.remote(make.remote(1000)))
    transfer = []
    for _ in range(2):
        ref = make.remote(mb << 20)
        manta.wait([ref], fetch_local=False)
        t = time.perf_counter(); manta.get(read.remote(ref)); transfer.append(time.perf_counter() - t)
        del ref
    t = time.perf_counter()
    for _ in range(ops):
        manta.get(noop.remote())
    small = (time.perf_counter() - t) / ops
    print(json.dumps({"transfer": min(transfer), "small": small}))
    manta.shutdown()
""")


def cli(env: dict[str, str], *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env, capture_output=True, text=True,
                       timeout=180)
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    return r.stdout + r.stderr


class Pair:
    def __init__(self, tls: str, store: int) -> None:
        self.roots = [tempfile.mkdtemp(prefix="mtlsb"), tempfile.mkdtemp(prefix="mtlsb")]
        base = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.envs = [{**base, "MANTA_TMPDIR": r} for r in self.roots]
        self.address = ""
        cli(self.envs[0], "start", "--head", "--port", "0", "--num-cpus", "1", "--resources", '{"A": 1}',
            "--object-store-memory", str(store), "--tls", tls)
        (session,) = [os.path.join(self.roots[0], d) for d in os.listdir(self.roots[0])]
        with open(os.path.join(session, "cluster.json")) as f:
            self.address = json.load(f)["head_address"].partition(":")[2]
        cli(self.envs[1], "start", "--address", self.address, "--token-file", os.path.join(session, "token"),
            "--num-cpus", "1", "--resources", '{"B": 1}', "--object-store-memory", str(store), "--tls", tls)

    def run(self, mb: int, ops: int) -> dict[str, float]:
        r = subprocess.run([sys.executable, "-c", DRIVER, self.address, str(mb), str(ops)], env=self.envs[0],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.address:
            for env in reversed(self.envs):
                subprocess.run([sys.executable, "-m", "manta.cli", "stop", "--address", self.address], env=env,
                               capture_output=True, timeout=60)
        for r in self.roots:
            shutil.rmtree(r, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=300)
    ap.add_argument("--ops", type=int, default=300)
    args = ap.parse_args()
    store = max(3 * args.mb << 20, 512 << 20)
    pairs = {}
    try:
        for mode in ("on", "off"):
            pairs[mode] = Pair(mode, store)
        got: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for i in range(args.rounds):
            for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                got[mode].append(pairs[mode].run(args.mb, args.ops))
    finally:
        for p in pairs.values():
            p.stop()
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in ("transfer", "small")} for mode, rs in got.items()}
    out = {
        "transfer_ratio": med["off"]["transfer"] / med["on"]["transfer"],
        "small_ops_ratio": med["off"]["small"] / med["on"]["small"],
        "transfer_mb_s": {m: args.mb / med[m]["transfer"] for m in med},
        "small_op_us": {m: med[m]["small"] * 1e6 for m in med},
        "rounds": args.rounds,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
