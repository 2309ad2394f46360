"""Two manta checkouts taking turns on one small operation: a finer A/B.

    python benchmarks/turns.py --a . --b /tmp/manta-base --case actor_sync

Each side is a driver process with a cluster of its own, started from its
checkout (PYTHONPATH). The parent tells one side to run a turn of `--ops`
operations and report its rate, then the other; `--turns` turns each,
after a warm-up. The figure is the median of the per-turn ratios a/b, so
the machine's drift over a run (these VMs are shared) hits both sides of
every ratio alike. Several `--launches` start fresh processes, the sides'
order swapped every launch; their medians are reported, then the median
of those. Two launches of the same code read about 0.99 (0.93-1.07).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import manta as ray

    ray.init(num_cpus=2)
    case = sys.argv[1]

    @ray.remote
    def noop():
        return 0

    @ray.remote
    class Actor:
        def noop(self):
            return 0

    @ray.remote
    class AsyncActor:
        async def noop(self):
            return 0

    ref = ray.put(0)
    actor = Actor.remote()
    async_actor = AsyncActor.remote()
    ops = {
        "tasks_sync": lambda: ray.get(noop.remote()),
        "actor_sync": lambda: ray.get(actor.noop.remote()),
        "async_actor_sync": lambda: ray.get(async_actor.noop.remote()),
        "get": lambda: ray.get(ref),
        "put": lambda: ray.put(0),
    }
    op = ops[case]
    for _ in range(200):
        op()
    print("READY", flush=True)
    for line in sys.stdin:
        n = int(line)
        t = time.perf_counter()
        for _ in range(n):
            op()
        print(json.dumps(n / (time.perf_counter() - t)), flush=True)
    ray.shutdown()
    """
)


def _start(root: str, case: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, case], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        cwd="/tmp",
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            return proc
    raise RuntimeError(f"the driver from {root} did not start")


def _turn(proc: subprocess.Popen[str], ops: int) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{ops}\n")
    proc.stdin.flush()
    return float(json.loads(proc.stdout.readline()))


def launch(a: str, b: str, case: str, ops: int, turns: int, swap: bool) -> float:
    """One launch: the median of a/b over the turns (b goes first if `swap`)."""
    sides = [("b", b), ("a", a)] if swap else [("a", a), ("b", b)]
    procs = [(name, _start(root, case)) for name, root in sides]
    try:
        for _ in range(3):  # warm-up turns
            for _, proc in procs:
                _turn(proc, ops)
        ratios = []
        for _ in range(turns):
            rates = {name: _turn(proc, ops) for name, proc in procs}
            ratios.append(rates["a"] / rates["b"])
        return statistics.median(ratios)
    finally:
        for _, proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default=".", help="checkout measured (default: this one)")
    parser.add_argument("--b", required=True, help="checkout it is compared with")
    parser.add_argument("--case", default="actor_sync",
                        choices=["tasks_sync", "actor_sync", "async_actor_sync", "get", "put"])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--launches", type=int, default=4)
    args = parser.parse_args()
    medians = [launch(args.a, args.b, args.case, args.ops, args.turns, swap=i % 2 == 1) for i in range(args.launches)]
    print(f"{args.case}: a/b {statistics.median(medians):.3f} "
          f"(launches: {', '.join(f'{m:.3f}' for m in medians)})")


if __name__ == "__main__":
    main()
