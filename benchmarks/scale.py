#!/usr/bin/env python3
"""Ray's scalability envelope, shrunk to this machine: manta and Ray, one row at a time.

Ray publishes its envelope in `release/benchmarks/README.md`. Each row here
is one dimension of it, at Ray's number where it fits on this machine and
scaled down where it cannot (the row's `scaled` says why):

    args        10,000 arguments to one task (each a list of 10,000 ints, as Ray's test)
    returns     3,000 values returned from one task (num_returns=3000)
    get         10,000 store objects in one get (lists, then numpy arrays)
    queued      1,000,000 tasks queued behind 2 blocked CPUs from one driver:
                the submission rate, the driver's memory per pending task, the drain
    large       one numpy object through put and get, as large as the store allows
    actors      as many actors as memory allows, started, called and killed
    pgs         1,000 placement groups created, ready, removed, resources back
    broadcast   a 1 GiB object read by a task on each of 8 other nodes at once

Each row runs in a fresh child process (`--child ROW`) that imports the
backend as `ray`, so both backends run the same code; the cluster it starts
(`init()`, or `manta start` for the multi-node row) is its own. The harness
samples the proportional set size (PSS: shared pages split between their
mappers, so the store is counted once) of every process of the row, the
child and all it started, and reports the peak. Rows that do not fit a
backend are skipped for it, saying why.

    .venv/bin/python benchmarks/scale.py                       # every row, manta only
    .venv/bin/python benchmarks/scale.py --ray-python /tmp/rayenv/bin/python
    .venv/bin/python benchmarks/scale.py --rows args,get --quick   # a tenth of each size
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT = "@@SCALE@@ "
GIB = 1 << 30


# --------------------------------------------------------------------------
# The rows: each runs in the child, with `ray` the backend and `n` its size.


def row_args(ray: Any, n: int) -> dict[str, Any]:
    @ray.remote
    def sum_args(*args: list[int]) -> int:
        return sum(sum(arg) for arg in args)

    args = [[1] * 10_000 for _ in range(n)]
    start = time.perf_counter()
    assert ray.get(sum_args.remote(*args)) == n * 10_000
    return {"seconds": time.perf_counter() - start}


def row_returns(ray: Any, n: int) -> dict[str, Any]:
    @ray.remote(num_returns=n)
    def many() -> tuple[list[int], ...]:
        return tuple(list(range(10_000)) for _ in range(n))

    start = time.perf_counter()
    refs = many.remote()
    assert len(refs) == n
    expected = list(range(10_000))
    for ref in refs:
        assert ray.get(ref) == expected
    return {"seconds": time.perf_counter() - start}


def row_get(ray: Any, n: int) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    start = time.perf_counter()
    refs = [ray.put(list(range(10_000))) for _ in range(n)]
    out["put_lists_s"] = time.perf_counter() - start
    t = time.perf_counter()
    values = ray.get(refs)
    out["get_lists_s"] = time.perf_counter() - t
    expected = list(range(10_000))
    assert len(values) == n and all(v == expected for v in values)
    del values, refs
    t = time.perf_counter()
    refs = [ray.put(np.arange(10_000)) for _ in range(n)]
    out["put_arrays_s"] = time.perf_counter() - t
    t = time.perf_counter()
    arrays = ray.get(refs)
    out["get_arrays_s"] = time.perf_counter() - t
    want = np.arange(10_000)
    assert len(arrays) == n and all((a == want).all() for a in arrays)
    out["seconds"] = time.perf_counter() - start
    return out


def row_queued(ray: Any, n: int) -> dict[str, Any]:
    import resource
    import tempfile

    # The blockers hold their CPUs by waiting on a file, not in ray.get: a
    # task blocked in get lends its CPU to others (in Ray as in manta), and
    # the queued tasks would run.
    flag = os.path.join(tempfile.mkdtemp(prefix="scale-gate"), "open")

    @ray.remote(num_cpus=1)
    def block(path: str) -> None:
        while not os.path.exists(path):
            time.sleep(0.01)

    @ray.remote(num_cpus=1)
    def f() -> None:
        return None

    cpus = int(ray.cluster_resources()["CPU"])
    ray.get([f.remote() for _ in range(cpus)])  # the workers are up: their start is not in the rate
    blocked = [block.remote(flag) for _ in range(cpus)]
    rss_before = _rss_bytes()
    start = time.perf_counter()
    pending = [f.remote() for _ in range(n)]
    submit_s = time.perf_counter() - start
    rss_after = _rss_bytes()
    ready, _ = ray.wait(pending[:100], timeout=0)
    assert not ready, "the queued tasks ran while both CPUs were held"
    open(flag, "w").close()
    drain = time.perf_counter()
    for i in range(0, n, 10_000):
        assert ray.get(pending[i:i + 10_000]) == [None] * len(pending[i:i + 10_000])
    ray.get(blocked)
    os.remove(flag)
    os.rmdir(os.path.dirname(flag))
    return {
        "seconds": time.perf_counter() - start,
        "submit_s": submit_s,
        "submit_per_s": n / submit_s,
        "drain_per_s": n / (time.perf_counter() - drain),
        "driver_bytes_per_pending_task": (rss_after - rss_before) / n,
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def row_large(ray: Any, n: int) -> dict[str, Any]:
    import numpy as np

    obj = np.zeros(n, dtype=np.int8)
    start = time.perf_counter()
    ref = ray.put(obj)
    put_s = time.perf_counter() - start
    del obj
    t = time.perf_counter()
    big = ray.get(ref)
    get_s = time.perf_counter() - t
    assert big.nbytes == n and big[0] == 0 and big[-1] == 0
    return {"seconds": time.perf_counter() - start, "put_s": put_s, "get_s": get_s,
            "put_gb_per_s": n / put_s / 1e9}


def row_actors(ray: Any, n: int) -> dict[str, Any]:
    @ray.remote(num_cpus=0.25)
    class Actor:
        def foo(self) -> int:
            return os.getpid()

    start = time.perf_counter()
    actors = [Actor.remote() for _ in range(n)]
    pids = ray.get([a.foo.remote() for a in actors])
    up_s = time.perf_counter() - start
    assert len(set(pids)) == n, "two actors answered from one process"
    t = time.perf_counter()
    assert ray.get([a.foo.remote() for a in actors]) == pids
    call_s = time.perf_counter() - t
    for a in actors:
        ray.kill(a)
    return {"seconds": time.perf_counter() - start, "start_all_s": up_s, "actors_per_s": n / up_s,
            "one_call_each_s": call_s}


def row_pgs(ray: Any, n: int) -> dict[str, Any]:
    from ray.util.placement_group import placement_group, remove_placement_group

    before = ray.available_resources()
    start = time.perf_counter()
    pgs = [placement_group([{"slot": 1, "CPU": 0.001}, {"slot": 1}]) for _ in range(n)]
    for pg in pgs:
        ray.get(pg.ready(), timeout=120)
    ready_s = time.perf_counter() - start
    t = time.perf_counter()
    for pg in pgs:
        remove_placement_group(pg)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("slot") != before.get("slot"):
        assert time.monotonic() < deadline, (before, ray.available_resources())
        time.sleep(0.05)
    return {"seconds": time.perf_counter() - start, "create_ready_s": ready_s, "remove_s": time.perf_counter() - t,
            "pgs_per_s": n / ready_s}


def row_broadcast(ray: Any, n: int, nodes: int) -> dict[str, Any]:
    import numpy as np

    @ray.remote(resources={"node0": 0.001})
    def make(size: int) -> Any:
        return np.full(size, 7, dtype=np.uint8)

    def reader(i: int) -> Any:
        @ray.remote(resources={f"node{i}": 0.001})
        def read(value: Any) -> int:
            return int(value[-1]) + int(value.nbytes == n)

        return read

    ref = make.remote(n)
    ray.wait([ref], fetch_local=False)
    start = time.perf_counter()
    results = ray.get([reader(i).remote(ref) for i in range(1, nodes + 1)])
    seconds = time.perf_counter() - start
    assert results == [8] * nodes, results
    return {"seconds": seconds, "aggregate_gb_per_s": n * nodes / seconds / 1e9}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------
# What each row is on this machine, and how the child starts its cluster.


@dataclass(frozen=True)
class Row:
    name: str
    size: int
    ray_size: int  # Ray's number (release/benchmarks/README.md)
    unit: str
    scaled: str = ""  # why `size` is not Ray's number, if it is not
    store_gib: float = 2.0
    cpus: int = 2
    resources: dict[str, float] = field(default_factory=dict)
    nodes: int = 1
    # Which backends run it, and why another does not.
    skip: dict[str, str] = field(default_factory=dict)
    # Ray runs at most this size here (0: the same as manta), and why.
    ray_max: int = 0
    ray_why: str = ""


ROWS = {
    r.name: r for r in (
        Row("args", 10_000, 10_000, "arguments"),
        Row("returns", 3_000, 3_000, "returns"),
        Row("get", 10_000, 10_000, "objects", store_gib=4),
        Row("queued", 1_000_000, 1_000_000, "tasks", ray_max=100_000,
            ray_why="Ray drains a queue far slower: a million would take most of an hour here"),
        Row("large", 8 * GIB, 100 * GIB, "bytes",
            scaled="Ray's 100 GiB cannot fit in 24 GiB of memory; 8 GiB in an 11 GiB store (under the "
                   "spill threshold, 0.8 of it: in a 9 GiB store the object went to disk)", store_gib=11),
        Row("actors", 500, 40_000, "actors", cpus=128,
            scaled="40,000 actors is Ray's cluster figure; one machine of 24 GiB holds hundreds of processes",
            ray_max=100, ray_why="a Ray actor's process takes several times a manta actor's memory"),
        Row("pgs", 1_000, 1_000, "placement groups", resources={"slot": 2_000}),
        Row("broadcast", GIB, GIB, "bytes to 8 nodes", nodes=8, store_gib=1.5,
            scaled="Ray broadcasts to 50+ nodes; here 8 nodes share one machine's memory and 2 cores",
            skip={"ray": "Ray's multi-node cluster on one machine needs its test utilities (ray.cluster_utils)"}),
    )
}


# --------------------------------------------------------------------------
# The child: one row, one backend.


def child(name: str, backend: str, size: int) -> None:
    import importlib

    ray = importlib.import_module(backend)
    sys.modules.setdefault("ray", ray)
    row = ROWS[name]
    if row.nodes > 1:
        ray.init(address=os.environ["SCALE_ADDRESS"])
        out = row_broadcast(ray, size, row.nodes)
    else:
        ray.init(num_cpus=row.cpus, object_store_memory=int(row.store_gib * GIB), resources=row.resources or None)
        out = globals()[f"row_{name}"](ray, size)
    ray.shutdown()
    print(RESULT + json.dumps(out), flush=True)


# --------------------------------------------------------------------------
# The harness: memory sampling and the multi-node cluster.


def _children(pid: int, table: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(table.get(p, ()))
    return out


def _process_table() -> tuple[dict[int, list[int]], dict[int, int]]:
    """Each pid's children, and each pid's process group, from /proc."""
    kids: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        kids.setdefault(int(fields[1]), []).append(pid)
        groups[pid] = int(fields[2])
    return kids, groups


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler:
    """The peak total PSS of a process, what it started, and the process groups given."""

    def __init__(self, root: int, groups: set[int], every: float = 0.25) -> None:
        self.root, self.groups, self.every = root, groups, every
        self.peak = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids, groups = _process_table()
            pids = set(_children(self.root, kids))
            for group in self.groups:
                for pid in [p for p, g in groups.items() if g == group]:
                    pids.update(_children(pid, kids))
            total = sum(_pss(p) for p in pids)
            if total > self.peak:
                self.peak, self.peak_processes = total, len(pids)
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class MantaCluster:
    """`manta start` nodes in a session root of their own, stopped by address."""

    def __init__(self, nodes: int, store_gib: float) -> None:
        self.root = tempfile.mkdtemp(prefix="scale")
        self.env = {**os.environ, "MANTA_TMPDIR": self.root, "PYTHONPATH": str(REPO)}
        self.env.pop("MANTA_TOKEN", None)
        self.groups: set[int] = set()
        store = str(int(store_gib * GIB))
        out = self.cli("start", "--head", "--port", "0", "--num-cpus", "1", "--object-store-memory", store,
                       "--resources", json.dumps({"node0": 1}))
        self.address = out.split("started at ")[1].split()[0]
        token = out.split("token file: ")[1].split()[0]
        for i in range(1, nodes + 1):
            self.cli("start", "--address", self.address, "--token-file", token, "--num-cpus", "1",
                     "--object-store-memory", store, "--resources", json.dumps({f"node{i}": 1}))

    def cli(self, *args: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "manta.cli", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        # `manta start` leaves its daemons in its own process group: the sampler counts them by it.
        self.groups.add(proc.pid)
        out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(out + err)
        return out

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "manta.cli", "stop", "--address", self.address], env=self.env,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


def run_row(row: Row, backend: str, python: str, size: int, timeout: float) -> dict[str, Any]:
    cluster = MantaCluster(row.nodes, row.store_gib) if row.nodes > 1 else None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MANTA_TOKEN", None)
    if cluster is not None:
        env.update(cluster.env, SCALE_ADDRESS=cluster.address)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen([python, __file__, "--child", row.name, "--backend", backend, "--child-size", str(size)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        sampler = Sampler(proc.pid, cluster.groups if cluster else set())
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            return {"error": f"timed out after {timeout:.0f} s", "log": err[-2000:]}
        finally:
            sampler.stop()
        wall = time.perf_counter() - start
    finally:
        if cluster is not None:
            cluster.stop()
    for line in out.splitlines():
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT):])
            result.update(wall_s=wall, peak_pss_mib=sampler.peak / 2**20, peak_processes=sampler.peak_processes)
            return result
    return {"error": f"exit code {proc.returncode}", "log": (out + err)[-3000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--ray-python", help="an interpreter with Ray installed: its rows run too")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--size", action="append", default=[], metavar="ROW=N", help="a row's size")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row and backend")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--child")
    parser.add_argument("--backend", default="manta")
    parser.add_argument("--child-size", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.backend, args.child_size)
        return
    sizes = {k: int(float(v)) for k, v in (s.split("=", 1) for s in args.size)}
    backends = {"manta": sys.executable}
    if args.ray_python:
        backends["ray"] = args.ray_python
    results: dict[str, dict[str, Any]] = {}
    for name in args.rows.split(","):
        row = ROWS[name]
        size = sizes.get(name, row.size // 10 if args.quick else row.size)
        results[name] = {"size": size, "ray_size": row.ray_size, "unit": row.unit, "scaled": row.scaled}
        for backend, python in backends.items():
            if backend in row.skip:
                results[name][backend] = {"skipped": row.skip[backend]}
                continue
            n = min(size, row.ray_max) if backend == "ray" and row.ray_max else size
            res = results[name][backend] = run_row(row, backend, python, n, args.timeout)
            res["n"] = n
            if n != size:
                res["why_smaller"] = row.ray_why
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items() if k != "log"}
            print(f"{name:10} {backend:6} n={n:<11} {shown}", flush=True)
            if "log" in res:
                print(res["log"], file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
