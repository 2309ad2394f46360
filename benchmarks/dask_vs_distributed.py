"""The same dask graphs on manta (`ray_dask_get`) and on dask's own
`distributed.LocalCluster`, alternating in one run.

    .venv/bin/python benchmarks/dask_vs_distributed.py [--workers 2] [--rounds 5] [--no-queuing]

Both sides get the same number of worker processes, one task at a time each
(manta: `init(num_cpus=N)`; distributed: `N` workers of one thread, with
nannies, as `LocalCluster` starts them). Each graph is computed once on each
side to warm up (worker imports, first leases), then timed `--rounds` times,
the side that goes first flipping every round so that slow drift of the
machine hits both equally. Every result is checked against the other
side's. Printed per graph: the median seconds of each side and
manta / distributed (below 1: manta is faster).

distributed's scheduler holds back tasks that read nothing (root-task
queuing, `distributed.scheduler.worker-saturation` 1.1 by default) and
sends a worker its next one only when it reports a finished one; that
costs it most on graphs of many small tasks. `--no-queuing` sets the
saturation to `inf` (every ready task sent at once), distributed's fastest
setting for such graphs.

Graphs:
- tree: `--leaves` small delayed tasks summed pairwise (2 x leaves - 1 tasks);
- array: `(x + x.T).sum()` of a `--size` square random array in 250 x 250
  chunks;
- dataframe: a groupby-sum over a frame of `--partitions` partitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from operator import add
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
# The workers import manta from this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)


def inc(i: int) -> int:
    return i + 1


def tree_graph(leaves: int) -> Any:
    import dask

    level = [dask.delayed(inc)(i) for i in range(leaves)]
    while len(level) > 1:
        level = [dask.delayed(add)(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def array_graph(size: int) -> Any:
    import dask.array as da

    x = da.random.default_rng(0).random((size, size), chunks=(250, 250))
    return (x + x.T).sum()


def dataframe_graph(partitions: int) -> Any:
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = partitions * 20_000
    pdf = pd.DataFrame({"k": rng.integers(0, 100, rows), "v": rng.random(rows)})
    df = dd.from_pandas(pdf, npartitions=partitions)
    return df.groupby("k").v.sum()


def same(a: Any, b: Any) -> bool:
    import numpy as np

    if hasattr(a, "sort_index"):
        a, b = a.sort_index(), b.sort_index()
    return bool(np.allclose(np.asarray(a), np.asarray(b)))


def timed(compute: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = compute()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--leaves", type=int, default=1024)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--no-queuing", action="store_true", help="distributed without root-task queuing")
    args = parser.parse_args()

    import dask
    import distributed

    import manta
    from manta.util.dask import ray_dask_get

    graphs = {
        f"tree ({2 * args.leaves - 1} tasks)": tree_graph(args.leaves),
        f"array (x + x.T).sum() {args.size}^2": array_graph(args.size),
        f"dataframe groupby-sum x{args.partitions}": dataframe_graph(args.partitions),
    }
    manta.init(num_cpus=args.workers)
    if args.no_queuing:
        # Read by the scheduler when it starts, in this process.
        dask.config.set({"distributed.scheduler.worker-saturation": float("inf")})
    cluster = distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    def on_distributed(graph: Any) -> Any:
        return dask.compute(graph, scheduler=client)[0]

    sides: dict[str, Callable[[Any], Any]] = {
        "manta": lambda g: dask.compute(g, scheduler=ray_dask_get)[0],
        "distributed": on_distributed,
    }

    def settle() -> None:
        """Waits (untimed) until distributed forgot the last run's keys: run
        again at once, the same graph would find them still in memory, or
        fail while they are being let go of."""
        deadline = time.monotonic() + 60
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
            if time.monotonic() > deadline:
                raise SystemExit("distributed kept the keys of a finished run for 60 s")
            time.sleep(0.02)

    times: dict[str, dict[str, list[float]]] = {name: {s: [] for s in sides} for name in graphs}
    expected: dict[str, Any] = {}
    try:
        for name, graph in graphs.items():
            warm = {}
            for s, run in sides.items():
                warm[s] = run(graph)
                settle()
            if not same(warm["manta"], warm["distributed"]):
                raise SystemExit(f"{name}: the two sides disagree: {warm}")
            expected[name] = warm["distributed"]
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name, graph in graphs.items():
                for s in order:
                    elapsed, value = timed(lambda s=s, graph=graph: sides[s](graph))
                    if not same(value, expected[name]):
                        raise SystemExit(f"{name}: {s} gave another result")
                    times[name][s].append(elapsed)
                    settle()
    finally:
        client.close()
        cluster.close()
        manta.shutdown()

    queuing = "off" if args.no_queuing else "on (default)"
    print(f"dask graphs, {args.workers} workers each, median of {args.rounds} rounds (seconds); "
          f"distributed's root-task queuing {queuing}:")
    print(f"{'graph':40} {'manta':>8} {'distributed':>12} {'manta/distributed':>18}")
    for name in graphs:
        m = statistics.median(times[name]["manta"])
        d = statistics.median(times[name]["distributed"])
        print(f"{name:40} {m:8.3f} {d:12.3f} {m / d:17.2f}x")


if __name__ == "__main__":
    main()
