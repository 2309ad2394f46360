#!/usr/bin/env python3
"""Where the time of one sync task and one sync actor call goes, step by step.

Trace points are wrapped around the runtime's own methods in the driver and
in the worker (installed there by a first task), each taking
`time.perf_counter_ns()`: CLOCK_MONOTONIC, one clock for every process on
the machine, so steps that cross from one process to the other are timed
too. The median of each step over N round trips is printed next to the
floor measured in the same run: a blocking round trip of a small message
over a Unix socket pair between two processes, and the same with one
thread hand-off on each side (what a design with an I/O thread pays at the
least).

    python benchmarks/breakdown.py [--n 3000] [--py-spy]

`--py-spy` also samples the driver and the worker with py-spy (if installed)
during a plain run of the sync-task loop and prints the functions with the
most samples in each, a profiler's view of the same steps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

now = time.perf_counter_ns

# (step, from point, to point): each step is the time between two trace points.
TASK_STEPS = [
    # A leased worker idle: the caller pushes the task itself (the I/O thread
    # did, before; submit_io, point C, is then not reached).
    ("caller: serialize, build the spec, lease client", "A", "D"),
    ("caller: encode, write the push", "D", "E"),
    ("kernel + wake the worker's I/O thread", "E", "F"),
    ("worker I/O: read, decode, dispatch", "F", "G"),
    ("hand-off to the executing thread", "G", "H"),
    ("execute: args, call, pack the result", "H", "I"),
    ("executing thread: encode, write the reply", "I", "J"),
    ("kernel + wake the driver's I/O thread", "J", "K"),
    ("driver I/O: read, decode, dispatch", "K", "L"),
    ("driver I/O: lease client, store the result", "L", "M"),
    ("wake the caller, read the value", "M", "N"),
]
ACTOR_STEPS = [
    ("caller: serialize, build the spec", "A", "D"),
    ("caller: encode, write the call", "D", "E"),
    ("kernel + wake the actor's I/O thread", "E", "F"),
    ("actor I/O: read, decode, dispatch", "F", "G"),
    ("hand-off to the executing thread", "G", "H"),
    ("execute: args, call, pack the result", "H", "I"),
    ("executing thread: encode, write the reply", "I", "J"),
    ("kernel + wake the caller's I/O thread", "J", "K"),
    ("caller's I/O: read, decode, dispatch", "K", "L"),
    ("caller's I/O: store the result", "L", "M"),
    ("wake the caller, read the value", "M", "N"),
]


def small_value() -> bytes:
    return b"ok"


class Actor:
    def small_value(self) -> bytes:
        return b"ok"


def _wrap(cls: type, name: str, before: Callable[[tuple[Any, ...]], None] | None,
          after: Callable[[tuple[Any, ...]], None] | None = None) -> None:
    original = getattr(cls, name)

    def traced(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(args)
        result = original(*args, **kwargs)
        if after is not None:
            after(args)
        return result

    traced.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(cls, name, traced)


def _is(kind: str) -> Callable[[Any], bool]:
    return lambda msg: type(msg).__name__ == kind


def _trace_frames(marks: dict[str, list[int]], arrive: str, decoded: str, kind: str) -> None:
    """`arrive` when bytes reach the connection, `decoded` when the message of
    type `kind` in them is dispatched (frames of other messages are ignored)."""
    from manta._private.transport.connection import Connection

    last = [0]
    wanted = _is(kind)
    _wrap(Connection, "_frames", lambda a: last.__setitem__(0, now()))

    def on_dispatch(args: tuple[Any, ...]) -> None:
        if wanted(args[1]):
            marks[arrive].append(last[0])
            marks[decoded].append(now())

    _wrap(Connection, "_dispatch", on_dispatch)


def install_worker_points() -> bool:
    """Runs in the worker (as a task): trace points on its side."""
    from manta._private.runtime.executor import Executor
    from manta._private.transport.connection import Connection

    marks: dict[str, list[int]] = {k: [] for k in "FGHIJ"}
    Executor._breakdown = marks  # type: ignore[attr-defined]
    _trace_frames(marks, "F", "G", "PushTask")
    _wrap(Executor, "execute", lambda a: marks["H"].append(now()))
    _wrap(Connection, "reply_threadsafe", lambda a: marks["I"].append(now()),
          lambda a: marks["J"].append(now()))
    return True


def worker_points() -> dict[str, list[int]]:
    from manta._private.runtime.executor import Executor

    marks: dict[str, list[int]] = Executor._breakdown  # type: ignore[attr-defined]
    out = {k: list(v) for k, v in marks.items()}
    for v in marks.values():
        v.clear()
    return out


class TracedActor(Actor):
    def install(self) -> bool:
        return install_worker_points()

    def points(self) -> dict[str, list[int]]:
        return worker_points()


def install_driver_points(ray: Any, marks: dict[str, list[int]]) -> None:
    from manta._private.runtime.actors import ActorCalls
    from manta._private.runtime.submission import Submitter
    from manta._private.transport.connection import Connection

    def at(k: str) -> Callable[[tuple[Any, ...]], None]:
        return lambda a: marks[k].append(now())

    _wrap(Submitter, "submit_task", at("A"), at("B"))
    # The runtime keeps the bound method (one lookup less per task): bind again.
    rt = ray._private.session.runtime()
    rt.submit_task = rt.tasks.submit_task
    _wrap(Submitter, "submit_io", at("C"))
    _wrap(Submitter, "_push", at("D"), at("E"))
    _trace_frames(marks, "K", "L", "TaskDone")
    _wrap(Submitter, "complete", None, at("M"))
    # Actor calls: the caller writes the call itself.
    _wrap(ActorCalls, "submit", at("A"))
    rt.submit_actor_task = rt.actors.submit
    _wrap(Connection, "request_cb_threadsafe", at("D"), at("E"))
    _wrap(ActorCalls, "_on_reply", None, at("M"))


def _steps(marks: dict[str, list[int]], steps: list[tuple[str, str, str]], n: int) -> list[tuple[str, float]]:
    """Each round trip is the window between two returns of get (N); a
    point's time in it is its first mark there. Marks outside the windows
    (the calls that install and collect the points) are ignored, and so are
    round trips in which some point left no mark."""
    import bisect

    ends = marks["N"][-n:]
    points = sorted({k for _, a, b in steps for k in (a, b)} - {"N"})
    sorted_marks = {k: sorted(marks[k]) for k in points}
    rows = []
    for start, stop in zip(ends, ends[1:]):
        row = {"N": stop}
        for k in points:
            xs = sorted_marks[k]
            i = bisect.bisect_right(xs, start)
            if i == len(xs) or xs[i] > stop:
                break
            row[k] = xs[i]
        else:
            rows.append(row)
    if len(rows) < n // 2:
        raise SystemExit(f"only {len(rows)} of {n} round trips passed every trace point")
    return [(label, statistics.median((r[b] - r[a]) / 1000 for r in rows)) for label, a, b in steps]


def _loop(ray: Any, call: Callable[[], Any], n: int, marks: dict[str, list[int]]) -> float:
    for k in marks:
        marks[k].clear()
    t0 = now()
    for _ in range(n):
        ray.get(call())
        marks["N"].append(now())
    return (now() - t0) / n / 1000


# -- the floor -------------------------------------------------------------


def _echo(sock: socket.socket, handoff: bool) -> None:
    if not handoff:
        while True:
            data = sock.recv(4096)
            if not data:
                return
            sock.sendall(data)
    import queue

    q: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def run() -> None:
        while True:
            item = q.get()
            if not item:
                return
            sock.sendall(item)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    while True:
        data = sock.recv(4096)
        q.put(data)
        if not data:
            return


def socket_floor(n: int, handoff: bool) -> float:
    """Median µs of a 200-byte round trip between two processes."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        try:
            _echo(b, handoff)
        finally:
            os._exit(0)
    b.close()
    msg = b"x" * 200
    times = []
    if handoff:
        import queue

        back: queue.SimpleQueue[bytes] = queue.SimpleQueue()

        def reader() -> None:
            while True:
                data = a.recv(4096)
                back.put(data)
                if not data:
                    return

        threading.Thread(target=reader, daemon=True).start()
        for _ in range(n):
            t = now()
            a.sendall(msg)
            back.get()
            times.append(now() - t)
    else:
        for _ in range(n):
            t = now()
            a.sendall(msg)
            a.recv(4096)
            times.append(now() - t)
    # shutdown, not only close: a close leaves the socket open under the
    # reader thread's recv, and the echo would never see the end.
    a.shutdown(socket.SHUT_RDWR)
    a.close()
    os.waitpid(pid, 0)
    return statistics.median(times) / 1000


# -- py-spy ------------------------------------------------------------------


def _py_spy(ray: Any, seconds: float) -> None:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        print("py-spy not found: skipped")
        return
    f = ray.remote(small_value)
    worker_pid = ray.get(ray.remote(os.getpid).remote())
    tmp = tempfile.mkdtemp(prefix="manta-breakdown-")
    procs = {}
    for who, pid in (("driver", os.getpid()), ("worker", worker_pid)):
        out = os.path.join(tmp, f"{who}.txt")
        procs[who] = (out, subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "500",
             "--format", "raw", "--threads", "--nonblocking", "--output", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    deadline = time.monotonic() + seconds + 3
    while time.monotonic() < deadline and any(p.poll() is None for _, p in procs.values()):
        ray.get(f.remote())
    for who, (out, p) in procs.items():
        p.wait()
        _print_spy(who, out)
    shutil.rmtree(tmp, ignore_errors=True)


def _print_spy(who: str, path: str) -> None:
    """Self samples per function (the innermost frame), busiest first."""
    counts: dict[str, int] = {}
    total = 0
    try:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip().rpartition(" ")
                frames = stack.split(";")
                leaf = frames[-1] if frames else "?"
                counts[leaf] = counts.get(leaf, 0) + int(n)
                total += int(n)
    except OSError:
        print(f"{who}: no samples (py-spy needs ptrace rights)")
        return
    print(f"\n{who}: {total} samples, busiest functions (self, idle waits included):")
    for leaf, n in sorted(counts.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {100 * n / total:5.1f}%  {leaf[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=3000, help="round trips per measurement")
    parser.add_argument("--py-spy", action="store_true", help="also sample driver and worker with py-spy")
    args = parser.parse_args()
    n = args.n

    floor = socket_floor(n, handoff=False)
    floor_threads = socket_floor(n, handoff=True)

    import manta as ray

    ray.init(num_cpus=1)
    try:
        marks: dict[str, list[int]] = {k: [] for k in "ABCDEKLMN"}
        f = ray.remote(small_value)
        ray.get([f.remote() for _ in range(200)])  # warm
        assert ray.get(ray.remote(install_worker_points).remote())
        install_driver_points(ray, marks)
        getter = ray.remote(worker_points)
        _loop(ray, f.remote, 200, marks)
        ray.get(getter.remote())
        per_task = _loop(ray, f.remote, n, marks)
        marks.update(ray.get(getter.remote()))
        task_steps = _steps(marks, TASK_STEPS, n)

        actor = ray.remote(TracedActor).remote()
        assert ray.get(actor.install.remote())
        _loop(ray, actor.small_value.remote, 200, marks)
        ray.get(actor.points.remote())
        per_call = _loop(ray, actor.small_value.remote, n, marks)
        marks.update(ray.get(actor.points.remote()))
        actor_steps = _steps(marks, ACTOR_STEPS, n)

        def show(title: str, per: float, steps: list[tuple[str, float]]) -> None:
            print(f"\n{title}: {per:.0f} µs per round trip (mean of {n}); medians of each step:")
            for label, us in steps:
                print(f"  {us:7.1f} µs  {label}")
            print(f"  {sum(us for _, us in steps):7.1f} µs  sum of the medians")
            print(f"  {per / floor:7.1f}x     the bare socket round trip, {per / floor_threads:.1f}x the one "
                  f"with a thread hand-off on each side")

        print(f"floor: Unix socket round trip between two processes {floor:.1f} µs; "
              f"with a thread hand-off on each side {floor_threads:.1f} µs (medians of {n})")
        show("sync task", per_task, task_steps)
        show("sync actor call", per_call, actor_steps)
        if args.py_spy:
            _py_spy(ray, 5)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
