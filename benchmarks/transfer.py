#!/usr/bin/env python3
"""Cross-node transfer against raw loopback TCP, measured in one run.

    .venv/bin/python benchmarks/transfer.py [--size-mb 300] [--rounds 5] [--readers 4]
    .venv/bin/python benchmarks/transfer.py --baseline-root /path/to/other/checkout
    .venv/bin/python benchmarks/transfer.py --system-config '{"store_prewarm_bytes": 1073741824}'

The baseline is raw TCP between two processes on loopback, received with
large reads into a buffer already touched (the best a receiver can do), and
for reference into fresh memory (what the first touch of pages costs on
this machine). Then, on clusters of `manta start` nodes:

- first: the first pull into a node whose store has held nothing yet;
- warm: later pulls of a new object each, into space a freed copy left;
- concurrent: `--readers` nodes pull one object from one node at once, the
  total rate (bytes moved over the wall time of all of them).

With --baseline-root, the other checkout runs the same cases in turn with
this one (each case's clusters alternate), and the ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from cluster_bench import TRANSFER, Cluster, raw_tcp_gbps  # noqa: E402

MB = 1 << 20


# One object on node 1, read at once by a task on each of the other nodes.
CONCURRENT = """
import json, time, manta
import numpy as np
manta.init(address={address!r})

@manta.remote(resources={{"node1": 1}})
def make(n):
    return np.full(n, 7, dtype=np.uint8)

@manta.remote(num_cpus=0)
def read(a):
    return int(a[-1])

ref = make.remote({nbytes})
manta.wait([ref], fetch_local=False)
start = time.perf_counter()
got = manta.get([read.options(resources={{f"node{{i}}": 1}}).remote(ref) for i in range(2, {nodes})])
elapsed = time.perf_counter() - start
assert got == [7] * ({nodes} - 2)
print("@@" + json.dumps({{"gbps": ({nodes} - 2) * {nbytes} / elapsed / 1e9}}))
manta.shutdown()
"""


def run_case(repo: str, case: str, nbytes: int, rounds: int, readers: int,
             system_config: dict[str, object]) -> dict[str, float]:
    if case == "pulls":
        c = Cluster(2, cpus=1, store_mb=3 * nbytes // MB, repo=repo, system_config=system_config)
        try:
            # The first get pulls into a store that has held nothing; each later
            # one a new object into the space the last copy left.
            rates = c.driver(TRANSFER.format(address=c.address, rounds=rounds, nbytes=nbytes, pause=0.5))["all"]
        finally:
            c.stop()
        return {"first": rates[0], "warm": statistics.median(rates[1:])}
    nodes = readers + 2  # the driver's node, the source, the readers
    c = Cluster(nodes, cpus=1, store_mb=2 * nbytes // MB, repo=repo, system_config=system_config)
    try:
        return {"concurrent": c.driver(CONCURRENT.format(address=c.address, nbytes=nbytes, nodes=nodes))["gbps"]}
    finally:
        c.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="pulls per cluster (the first, then warm ones)")
    parser.add_argument("--repeats", type=int, default=2, help="clusters per case and tree")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--baseline-root", default="", help="another checkout, run in turn with this one")
    parser.add_argument("--cases", default="pulls,concurrent")
    parser.add_argument("--system-config", default="{}", help="JSON, for every node of both trees")
    args = parser.parse_args()
    nbytes = args.size_mb * MB
    config = json.loads(args.system_config)
    trees = {"manta": REPO, **({"base": args.baseline_root} if args.baseline_root else {})}
    got: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
    raw_warm = [raw_tcp_gbps(nbytes, fresh=False)]
    raw_fresh = raw_tcp_gbps(nbytes, fresh=True)
    for _ in range(args.repeats):
        for case in args.cases.split(","):
            for tree, repo in trees.items():
                for k, v in run_case(repo, case, nbytes, args.rounds, args.readers, config).items():
                    got[tree].setdefault(k, []).append(v)
    raw_warm.append(raw_tcp_gbps(nbytes, fresh=False))
    raw = statistics.median(raw_warm)
    print(f"{args.size_mb} MB; raw loopback TCP into a touched buffer {raw:.2f} GB/s "
          f"(before and after: {', '.join(f'{r:.2f}' for r in raw_warm)}), into fresh memory {raw_fresh:.2f}")
    labels = {"first": "first pull into a node", "warm": "later pulls (median)",
              "concurrent": f"{args.readers} nodes pulling at once, in total"}
    head = f"{'case':34}" + "".join(f"{t + ' GB/s':>12}{t + '/raw':>10}" for t in trees)
    print(head + ("   manta/base" if len(trees) > 1 else ""))
    for key, label in labels.items():
        if key not in got["manta"]:
            continue
        row = f"{label:34}"
        meds = {t: statistics.median(got[t][key]) for t in trees}
        for t in trees:
            row += f"{meds[t]:12.2f}{meds[t] / raw:10.2f}"
        if len(trees) > 1:
            row += f"   {meds['manta'] / meds['base']:.2f}x"
        print(row + f"   ({', '.join(f'{v:.2f}' for v in got['manta'][key])})")


if __name__ == "__main__":
    main()
