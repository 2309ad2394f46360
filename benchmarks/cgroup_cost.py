"""What a worker's cgroup costs the agent: making it, limiting it and removing
it (`node/cgroups.py`, as the agent does for each worker), against a bare
fork, exit and wait of this process, in one run.

    python benchmarks/cgroup_cost.py [--n 200] [--repeat 3]

Prints the best of `--repeat` rounds of each (per worker) and their ratio
(cgroup time / fork time). A worker's real start (a fork of the warm fork
server, then its runtime's connections) costs several times a bare fork,
so the ratio printed is an upper bound of the share cgroups add.
Needs a node where cgroups are writable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from manta._private.node import cgroups, limits


def cgroup_round(found: cgroups.Cgroups, n: int) -> float:
    lease = limits.limits_of({"memory": 300 * 1024**2, "CPU": 1.0})
    t = time.perf_counter()
    for _ in range(n):
        worker = os.urandom(16)
        found.create(worker)
        found.limit(worker, lease)
        found.remove(worker)
    return (time.perf_counter() - t) / n


def fork_round(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.perf_counter() - t) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mounts = tempfile.mkdtemp(prefix="cgbench")
    found = cgroups.detect(f"bench{os.getpid()}", mounts)
    try:
        if not found.on:
            raise SystemExit(f"cgroup isolation is off here: {found.why}")
        cg = min(cgroup_round(found, args.n) for _ in range(args.repeat))
        fork = min(fork_round(args.n) for _ in range(args.repeat))
    finally:
        found.close()
        shutil.rmtree(mounts, ignore_errors=True)
    print(f"cgroups {found.version}: make+limit+remove {cg * 1e3:.3f} ms per worker, "
          f"bare fork+exit+wait {fork * 1e3:.3f} ms; ratio {cg / fork:.2f}")


if __name__ == "__main__":
    main()
