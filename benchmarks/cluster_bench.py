"""Multi-node figures on one machine: object transfer and task throughput.

    .venv/bin/python benchmarks/cluster_bench.py [--size-mb 500] [--tasks 3000]
    .venv/bin/python benchmarks/cluster_bench.py --checksums [--size-mb 300] [--rounds 5]

1. Cross-node transfer: a node makes a large array, a driver on another
   node gets it (pulled in chunks into its node's store, then mapped). The
   baseline, measured in the same run, is raw TCP over loopback between two
   processes moving the same bytes with large reads into a preallocated
   buffer; the ratio says how close the transfer gets to the link.
2. Tasks per second with 1, 2 and 4 nodes (1 CPU each), from one driver:
   no-op tasks submitted in batches and fetched.

With --checksums, only the cross-node transfer, with the keyed checksum of
every chunk (node/transfer.py) against without it (`transfer_checksums`
off on every node of a second cluster), the two clusters' rounds taken in
turn in one run; the ratio is the median rate with over the median without.

Each cluster runs in its own session directory and is stopped by its address.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


SENDER = """
import socket, sys
port, nbytes = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
chunk = memoryview(b"\\x01" * (4 << 20))
left = nbytes
while left > 0:
    n = min(left, len(chunk))
    s.sendall(chunk[:n])
    left -= n
s.close()
"""


def raw_tcp_gbps(nbytes: int, fresh: bool = False, rounds: int = 3) -> float:
    """Loopback TCP from another process, best of `rounds` (GB/s): into one
    buffer touched before, or each round into a fresh mapping. The sender is
    its own interpreter, not a fork: a fork would make the buffer's pages
    copy-on-write, and every write into them a fault."""
    warm = mmap.mmap(-1, nbytes)
    warm.write(b"\x00" * nbytes)
    rates = []
    for _ in range(rounds):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        sender = subprocess.Popen([sys.executable, "-c", SENDER, str(srv.getsockname()[1]), str(nbytes)])
        conn, _ = srv.accept()
        region = mmap.mmap(-1, nbytes) if fresh else warm
        view = memoryview(region)
        got = 0
        start = time.perf_counter()
        while got < nbytes:
            n = conn.recv_into(view[got:], min(4 << 20, nbytes - got))
            if n == 0:
                break
            got += n
        rates.append(got / (time.perf_counter() - start) / 1e9)
        view.release()
        if region is not warm:
            region.close()
        conn.close()
        srv.close()
        sender.wait()
    warm.close()
    return max(rates)


class Cluster:
    def __init__(self, nodes: int, cpus: float = 1, store_mb: int = 1500, resources: bool = True,
                 system_config: dict[str, object] | None = None, repo: str = REPO) -> None:
        """`repo`: the tree whose manta runs (another checkout, for a baseline)."""
        self.root = tempfile.mkdtemp(prefix="cb")
        self.env = {**os.environ, "MANTA_TMPDIR": self.root, "PYTHONPATH": repo}
        self.env.pop("MANTA_TOKEN", None)
        tunables = ["--system-config", json.dumps(system_config)] if system_config else []
        out = self.cli("start", "--head", "--port", "0", "--num-cpus", str(cpus),
                       "--object-store-memory", str(store_mb << 20), *tunables,
                       *(["--resources", json.dumps({"node0": 1})] if resources else []))
        self.address = out.split("started at ")[1].split()[0]
        token = out.split("token file: ")[1].split()[0]
        for i in range(1, nodes):
            self.cli("start", "--address", self.address, "--token-file", token, "--num-cpus", str(cpus),
                     "--object-store-memory", str(store_mb << 20), *tunables,
                     *(["--resources", json.dumps({f"node{i}": 1})] if resources else []))

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=self.env,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stdout + out.stderr)
        return out.stdout

    def driver(self, code: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True,
                             text=True, timeout=600)
        for line in out.stdout.splitlines():
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(out.stdout + out.stderr)

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "manta.cli", "stop", "--address", self.address], env=self.env,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


TRANSFER = """
import json, time, manta
import numpy as np
manta.init(address={address!r})

@manta.remote(resources={{"node1": 1}})
def make(i, n):
    return np.full(n, i % 251, dtype=np.uint8)

rates = []
for i in range({rounds}):
    ref = make.remote(i, {nbytes})
    manta.wait([ref], fetch_local=False)  # made on node 1, left there: only the move is timed below
    start = time.perf_counter()
    value = manta.get(ref)
    elapsed = time.perf_counter() - start
    assert value.nbytes == {nbytes} and int(value[-1]) == i % 251
    rates.append({nbytes} / elapsed / 1e9)
    del value, ref
    time.sleep({pause})  # for the unpin to reach the node: the next copy can take its space
print("@@" + json.dumps({{"gbps": max(rates), "all": rates}}))
manta.shutdown()
"""

TASKS = """
import json, time, manta
manta.init(address={address!r})

@manta.remote
def noop():
    return None

manta.get([noop.remote() for _ in range(200)])
start = time.perf_counter()
done = 0
while done < {tasks}:
    manta.get([noop.remote() for _ in range(500)])
    done += 500
rate = done / (time.perf_counter() - start)
print("@@" + json.dumps({{"tasks_per_s": rate}}))
manta.shutdown()
"""


def checksum_cost(size_mb: int, rounds: int) -> None:
    """Cross-node transfer with chunk checksums over without, in turns."""
    nbytes = size_mb << 20
    clusters = {
        "with checksums": Cluster(2, cpus=1, store_mb=size_mb * 3),
        "without": Cluster(2, cpus=1, store_mb=size_mb * 3, system_config={"transfer_checksums": False}),
    }
    rates: dict[str, list[float]] = {name: [] for name in clusters}
    try:
        for _ in range(rounds):
            for name, c in clusters.items():
                # A driver's first get maps fresh pages of its node's store, at a
                # fraction of the rate of later ones: left out of both.
                rates[name] += c.driver(TRANSFER.format(address=c.address, rounds=3, nbytes=nbytes, pause=0))["all"][1:]
    finally:
        for c in clusters.values():
            c.stop()
    for name, got in rates.items():
        print(f"cross-node transfer of {size_mb} MB, {name:14}: median {statistics.median(got):.2f} GB/s "
              f"(rounds: {', '.join(f'{r:.2f}' for r in got)})")
    ratio = statistics.median(rates["with checksums"]) / statistics.median(rates["without"])
    print(f"with checksums / without: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--checksums", action="store_true", help="Only the cost of transfer checksums.")
    args = parser.parse_args()
    if args.checksums:
        checksum_cost(args.size_mb, args.rounds)
        return
    nbytes = args.size_mb << 20

    raw = raw_tcp_gbps(nbytes)
    c = Cluster(2, cpus=1, store_mb=args.size_mb * 3)
    try:
        moved = c.driver(TRANSFER.format(address=c.address, rounds=args.rounds, nbytes=nbytes, pause=0))
    finally:
        c.stop()
    print(f"cross-node transfer of {args.size_mb} MB: {moved['gbps']:.2f} GB/s "
          f"(rounds: {', '.join(f'{r:.2f}' for r in moved['all'])})")
    print(f"raw loopback TCP, same bytes:   {raw:.2f} GB/s")
    print(f"transfer / raw TCP:             {moved['gbps'] / raw:.2f}")

    rates: dict[int, list[float]] = {}
    for _ in range(args.rounds):
        for n in (1, 2, 4):
            c = Cluster(n, cpus=1, store_mb=200, resources=False)
            try:
                rates.setdefault(n, []).append(
                    c.driver(TASKS.format(address=c.address, tasks=args.tasks))["tasks_per_s"]
                )
            finally:
                c.stop()
    print("tasks per second (no-op tasks, batches of 500, one driver, 1 CPU per node; median):")
    base = statistics.median(rates[1])
    for n in (1, 2, 4):
        med = statistics.median(rates[n])
        print(f"  {n} node{'s' if n > 1 else ' '}: {med:8,.0f} tasks/s  ({med / base:.2f}x one node)")


if __name__ == "__main__":
    main()
