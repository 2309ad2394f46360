"""A real head facing 100, 500 and 2,000 simulated nodes from one machine (issue 12).

    PYTHONPATH=. .venv/bin/python benchmarks/simnodes.py [--nodes 100,500,2000] [--json out.json]

For each size, in a fresh temp dir and a fresh driver process:

1. `manta start --head --num-cpus 0` (the head and its own agent, as the
   CLI starts them; port 0). Its idle CPU and RSS with that one node are the
   baseline.
2. N simulated nodes (`python -m manta._private.sim.main`, one process,
   `docs/simulation.md`) join it: the head's idle CPU (utime+stime from
   /proc over a window) and RSS with them; what is above the baseline,
   divided by N, is the cost per node. The agent of the head's node (real,
   0 CPUs) takes every ClusterView as the simulated ones do; its CPU is
   given too, and the fleet's own, to show it is not the bottleneck.
3. A driver (`manta.init(address=...)`) on the head's node, whose agent has
   no CPU, so every lease spills to simulated nodes: no-op tasks placed and
   "run" per second, with the default policy and with SPREAD, and how many
   nodes they reached; then tasks that each run 0.2 s, with SPREAD.
4. Time to place an actor (creation to its first method's answer) and a
   placement group of 8 one-CPU bundles (SPREAD, to `ready()`), medians.
5. Time for the head to declare a node dead (`manta.nodes()` polled): one
   whose connections close (a crash) and one whose heartbeats stop with
   its connections open (a hang, seen only after node_timeout_s).

Every process started is stopped by its PID (`manta stop` stops a session's
by the PIDs it recorded); every temp dir is removed. Each phase has a
deadline; a phase that misses it is reported as such, not waited for.
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
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- /proc ---------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


class CpuWindow:
    """CPU share (1.0 = one core) of some processes from now to `stop()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {k: cpu_s(p) for k, p in pids.items()}
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {k: round((cpu_s(p) - self.start[k]) / dt, 4) for k, p in self.pids.items()}


# -- one size, in its own process -----------------------------------------------


class Fleet:
    """The simulated nodes' process, driven over its stdin/stdout (sim/main.py)."""

    def __init__(self, head: str, token_file: str, nodes: int, cpus: float, env: dict[str, str], log: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "manta._private.sim.main", "--head", head, "--token-file", token_file,
             "--nodes", str(nodes), "--cpus", str(cpus)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO,
        )
        self.ready = self.read()["ready"]

    def read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the simulated nodes exited ({self.proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("stop\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()  # by its PID: the Popen's own
                self.proc.wait()


def _wait(pred: Any, timeout: float, step: float = 0.02) -> float | None:
    """Seconds until pred() is true, or None past `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def _alive(manta: Any) -> dict[str, bool]:
    return {n["NodeID"]: n["Alive"] for n in manta.nodes()}


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="simn")
    env = {**os.environ, "MANTA_TMPDIR": root, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MANTA_TOKEN", None)
    os.environ["MANTA_TMPDIR"] = root  # the driver finds its node's record there
    out: dict[str, Any] = {"nodes": n}
    fleet: Fleet | None = None
    manta: Any = None
    try:
        subprocess.run([sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0", "--num-cpus", "0",
                        "--object-store-memory", str(200 << 20), "--dashboard-port", "0"],
                       env=env, check=True, capture_output=True, timeout=60)
        (rec_path,) = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f == "cluster.json"]
        with open(rec_path) as f:
            rec = json.load(f)
        head_pid, agent_pid = rec["pids"]
        time.sleep(1.0)
        w = CpuWindow({"head": head_pid})
        time.sleep(args.idle_s)
        out["baseline"] = {"head_cpu": w.stop()["head"], "head_rss_mb": round(rss_mb(head_pid), 1)}

        t0 = time.monotonic()
        fleet_log = open(os.path.join(root, "fleet.log"), "w")  # noqa: SIM115 (closed with the temp dir)
        fleet = Fleet(rec["head_address"], rec["token_file"], n, args.cpus, env, fleet_log)
        out["join_s"] = round(time.monotonic() - t0, 2)
        import manta as manta_mod

        manta = manta_mod
        manta.init(address=rec["head_address"].partition(":")[2])
        seen = _wait(lambda: sum(_alive(manta).values()) >= n + 1, 60, 0.2)
        out["all_seen_s"] = None if seen is None else round(out["join_s"] + seen, 2)
        time.sleep(2.0)  # joining's burst of views settles

        pids = {"head": head_pid, "agent": agent_pid, "fleet": fleet.proc.pid, "driver": os.getpid()}
        before = fleet.ask("stats")["stats"]
        w = CpuWindow(pids)
        time.sleep(args.idle_s)
        idle_cpu = w.stop()
        after = fleet.ask("stats")["stats"]
        dt = args.idle_s
        out["idle"] = {
            "cpu": idle_cpu, "head_rss_mb": round(rss_mb(head_pid), 1),
            "agent_rss_mb": round(rss_mb(agent_pid), 1), "fleet_rss_mb": round(rss_mb(fleet.proc.pid), 1),
            "heartbeats_per_s": round((after["reports_sent"] - before["reports_sent"]) / dt, 1),
            "views_per_node_per_s": round((after["view_frames"] - before["view_frames"]) / dt / n, 2),
            "view_mb_per_s": round((after["view_bytes"] - before["view_bytes"]) / dt / 1e6, 1),
        }
        base = out["baseline"]
        out["per_node"] = {
            "head_cpu_ms_per_s": round((idle_cpu["head"] - base["head_cpu"]) * 1000 / n, 3),
            "head_rss_kb": round((out["idle"]["head_rss_mb"] - base["head_rss_mb"]) * 1000 / n, 1),
        }
        out["throughput"] = _throughput(manta, pids, args)
        out["actor_s"], out["pg_s"] = _placement(manta, args, fleet)
        out["death"] = _death(manta, fleet)
        out["pending_pg"] = _pending_pg(manta, pids, args)
    except Exception as e:  # noqa: BLE001 - one size's failure is its figure, the others still run
        out["error"] = f"{type(e).__name__}: {e}"
        out["logs"] = _log_tails(root)
    finally:
        if manta is not None:
            try:
                manta.shutdown()
            except Exception:  # noqa: BLE001
                pass
        if fleet is not None:
            fleet.stop()
        subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
    return out


def _log_tails(root: str, lines: int = 40) -> dict[str, list[str]]:
    """The last lines of the head's, its agent's and the fleet's logs: what a failed size leaves to read."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f in ("head.log", "agent.log", "fleet.log"):
                with open(os.path.join(d, f), errors="replace") as fh:
                    out[f] = fh.read().splitlines()[-lines:]
    return out


def _throughput(manta: Any, pids: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    @manta.remote
    def task(duration: float) -> str:  # never runs: a simulated node answers for it
        return ""

    spread = task.options(scheduling_strategy="SPREAD")
    results: dict[str, Any] = {}
    for name, fn, count, duration in (
        ("default_noop", task, args.tasks, 0.0),
        ("spread_noop", spread, args.tasks, 0.0),
        ("spread_200ms", spread, args.tasks, 0.2),
    ):
        manta.get([fn.remote(0.0) for _ in range(50)], timeout=120)  # leases and function warmed up
        w = CpuWindow(pids)
        t0 = time.monotonic()
        try:
            where = manta.get([fn.remote(duration) for _ in range(count)], timeout=args.phase_timeout)
        except Exception as e:  # noqa: BLE001
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        dt = time.monotonic() - t0
        results[name] = {"tasks": count, "tasks_per_s": round(count / dt, 1), "nodes_used": len(set(where)),
                         "cpu": w.stop()}
    return results


def _placement(manta: Any, args: argparse.Namespace, fleet: Fleet) -> tuple[dict[str, Any], dict[str, Any]]:
    from manta.util.placement_group import placement_group, remove_placement_group

    @manta.remote(num_cpus=1)
    class Actor:
        def ping(self) -> str:  # never runs
            return ""

    times, actors, stuck = [], [], []
    for _ in range(args.rounds):
        t0 = time.monotonic()
        a = Actor.remote()
        actors.append(a)
        try:
            manta.get(a.ping.remote(), timeout=args.actor_timeout)
        except manta.exceptions.GetTimeoutError:
            # Never placed (BENCHMARKS.md says why): counted, described, and the next one goes on.
            from manta.util.state import list_actors

            stuck.append({"actor": str(list_actors()[-1]), "fleet": fleet.ask("stats")["stats"]})
            continue
        times.append(time.monotonic() - t0)
    for a in actors:
        manta.kill(a)
    actor: dict[str, Any] = {"never_placed": len(stuck), "stuck": stuck[:1]}
    if times:
        actor.update(median_ms=round(statistics.median(times) * 1000, 2), max_ms=round(max(times) * 1000, 2))
    times = []
    for _ in range(args.rounds):
        t0 = time.monotonic()
        pg = placement_group([{"CPU": 1}] * 8, strategy="SPREAD")
        manta.get(pg.ready(), timeout=args.phase_timeout)
        times.append(time.monotonic() - t0)
        remove_placement_group(pg)
    pg_out = {"bundles": 8, "median_ms": round(statistics.median(times) * 1000, 2),
              "max_ms": round(max(times) * 1000, 2)}
    return actor, pg_out


def _death(manta: Any, fleet: Fleet) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for word, index, timeout in (("kill", 1, 30.0), ("silence", 2, 60.0)):
        said = fleet.ask(f"{word} {index}")
        node = said["killed" if word == "kill" else "silenced"]
        took = _wait(lambda node=node: not _alive(manta).get(node, True), timeout, 0.01)
        # From the moment the fleet acted (its clock is this machine's).
        out["crash_s" if word == "kill" else "hang_s"] = None if took is None else round(time.time() - said["at"], 3)
    return out


def _pending_pg(manta: Any, pids: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """The head's CPU with no placement group pending, then while one waits for
    a node that can hold it (a bundle of 1,024 CPUs: none can), windows taken
    back to back: the head tries to place it again at every node's report."""
    from manta.util.placement_group import placement_group, remove_placement_group

    w = CpuWindow({"head": pids["head"]})
    time.sleep(args.idle_s)
    before = w.stop()["head"]
    pg = placement_group([{"CPU": 1024}], strategy="PACK")
    time.sleep(0.5)
    w = CpuWindow({"head": pids["head"]})
    time.sleep(args.idle_s)
    during = w.stop()["head"]
    remove_placement_group(pg)
    return {"head_cpu_before": before, "head_cpu": during}


# -- the head's own costs, in this process --------------------------------------


class _CountingConn:
    """A node's connection as the head uses it: each message encoded, no socket."""

    closed = False

    def __init__(self, node_id: bytes) -> None:
        from manta._private.protocol.identity import Kind, Principal, Role

        self.principal = Principal(kind=Kind.NODE, role=Role.CLUSTER, name="node", node_id=node_id)
        self.sent = 0

    def send(self, msg: Any, rid: int = 0) -> None:
        from manta._private.protocol import messages as m

        self.sent += len(m.frame_parts(msg, rid)[1])

    def send_encoded(self, msg: Any, header: bytes, payload: bytes) -> None:
        self.sent += len(payload)

    def reply(self, request: Any, msg: Any) -> None:
        pass


def head_model(sizes: list[int]) -> list[dict[str, Any]]:
    """What one heartbeat and one ClusterView broadcast cost the real `Head`
    with N nodes, timed in this process without sockets (so without the
    syscalls: a floor). The broadcast is `Head._broadcast_view`'s body: the
    view built and encoded once, then queued to every node."""
    import asyncio

    from manta._private.head.head import Head, Node
    from manta._private.protocol import messages as m

    async def one(n: int, d: str) -> dict[str, Any]:
        head = Head(token=b"k" * 32, addresses=[], embedded=False, session_dir=d, audit_log=os.path.join(d, "audit"))
        conns = []
        for _ in range(n):
            nid = os.urandom(16)
            conns.append(_CountingConn(nid))
            head.nodes[nid] = Node(nid, "tcp:127.0.0.1:40000", {"CPU": 4.0}, {"CPU": 4.0}, 0, conns[-1])  # type: ignore[arg-type]
        head._view_scheduled = True  # the broadcast each heartbeat asks for is timed apart, below
        beats = [(c, m.NodeResources(node_id=c.principal.node_id, available={"CPU": 4.0}, total={"CPU": 4.0}))
                 for c in conns[:2000]]
        t0 = time.perf_counter()
        for c, msg in beats:
            head.handle(c, msg)  # type: ignore[arg-type]
        beat = (time.perf_counter() - t0) / len(beats)
        # A placement group no node can hold yet (a bundle of 64 CPUs): every
        # report tries to place it again, over every node.
        head._create_pg(conns[0], m.CreatePlacementGroup(spec=m.PlacementGroupSpec(  # type: ignore[arg-type]
            pg_id=os.urandom(16), bundles=[{"CPU": 64.0}], strategy="PACK")))
        t0 = time.perf_counter()
        for c, msg in beats[:200]:
            head.handle(c, msg)  # type: ignore[arg-type]
        beat_pg = (time.perf_counter() - t0) / len(beats[:200])
        # The head's own broadcast: the first sends every node the whole view
        # (as after a restart of the head); the next, after 1% of the nodes
        # reported a change, sends each node only those.
        head._view_dirty.update(head.nodes)  # as when every node has just registered
        t0 = time.perf_counter()
        head._send_view()
        broadcast = time.perf_counter() - t0
        whole_bytes = sum(c.sent for c in conns)
        for c in conns[: max(1, n // 100)]:
            head.handle(c, m.NodeResources(node_id=c.principal.node_id, available={"CPU": 3.0}))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        head._send_view()
        delta = time.perf_counter() - t0
        return {"nodes": n, "heartbeat_us": round(beat * 1e6, 2), "heartbeat_pending_pg_us": round(beat_pg * 1e6, 1),
                "broadcast_ms": round(broadcast * 1e3, 1), "broadcast_mb": round(whole_bytes / 1e6, 1),
                "delta_ms": round(delta * 1e3, 2),
                "delta_mb": round((sum(c.sent for c in conns) - whole_bytes) / 1e6, 2)}

    d = tempfile.mkdtemp(prefix="simmodel")
    try:
        logging_off()
        return [asyncio.run(one(n, d)) for n in sizes]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def logging_off() -> None:
    import logging

    logging.disable(logging.INFO)


# -- the table -------------------------------------------------------------------


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return "-"
        d = d[p]
    return d


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("nodes", ("nodes",)),
        ("join s", ("join_s",)),
        ("head CPU idle", ("idle", "cpu", "head")),
        ("head RSS MB", ("idle", "head_rss_mb")),
        ("agent CPU idle", ("idle", "cpu", "agent")),
        ("fleet CPU idle", ("idle", "cpu", "fleet")),
        ("driver CPU idle", ("idle", "cpu", "driver")),
        ("views/node/s", ("idle", "views_per_node_per_s")),
        ("view MB/s", ("idle", "view_mb_per_s")),
        ("head ms CPU/s/node", ("per_node", "head_cpu_ms_per_s")),
        ("head KB/node", ("per_node", "head_rss_kb")),
        ("noop tasks/s default", ("throughput", "default_noop", "tasks_per_s")),
        ("nodes used", ("throughput", "default_noop", "nodes_used")),
        ("head CPU then", ("throughput", "default_noop", "cpu", "head")),
        ("noop tasks/s SPREAD", ("throughput", "spread_noop", "tasks_per_s")),
        ("nodes used", ("throughput", "spread_noop", "nodes_used")),
        ("head CPU then", ("throughput", "spread_noop", "cpu", "head")),
        ("agent CPU then", ("throughput", "spread_noop", "cpu", "agent")),
        ("0.2s tasks/s SPREAD", ("throughput", "spread_200ms", "tasks_per_s")),
        ("nodes used", ("throughput", "spread_200ms", "nodes_used")),
        ("actor ms", ("actor_s", "median_ms")),
        ("actors never placed", ("actor_s", "never_placed")),
        ("PG(8) ms", ("pg_s", "median_ms")),
        ("dead: crash s", ("death", "crash_s")),
        ("dead: hang s", ("death", "hang_s")),
        ("head CPU, no PG", ("pending_pg", "head_cpu_before")),
        ("head CPU, PG pending", ("pending_pg", "head_cpu")),
    ]
    width = max(len(c) for c, _ in cols)
    lines = []
    for name, path in cols:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{str(_get(r, *path)):>10}" for r in rows))
    for r in rows:
        if "error" in r:
            lines.append(f"{r['nodes']} nodes: {r['error']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="100,500,2000", help="sizes, comma-separated ('' for none)")
    parser.add_argument("--cpus", type=float, default=4, help="CPUs of each simulated node")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="actors and placement groups placed")
    parser.add_argument("--idle-s", type=float, default=5.0, help="length of the idle CPU windows")
    parser.add_argument("--phase-timeout", type=float, default=120.0)
    parser.add_argument("--actor-timeout", type=float, default=60.0, help="an actor not placed by then counts as never")
    parser.add_argument("--json", default="", help="write the figures here")
    parser.add_argument("--model", default="100,500,2000,10000",
                        help="sizes at which to time the head's heartbeat and broadcast in process ('' for none)")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # a size, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    rows = []
    for n in [int(x) for x in args.nodes.split(",") if x]:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(n), "--cpus", str(args.cpus),
               "--tasks", str(args.tasks), "--rounds", str(args.rounds), "--idle-s", str(args.idle_s),
               "--phase-timeout", str(args.phase_timeout), "--actor-timeout", str(args.actor_timeout)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"nodes": n, "error": proc.stderr[-2000:]}
        rows.append(row)
        print(f"{n} nodes done", file=sys.stderr, flush=True)
    if rows:
        print(table(rows))
    model = head_model([int(x) for x in args.model.split(",")]) if args.model else []
    for r in model:
        print(f"head, in process, {r['nodes']:>6} nodes: one heartbeat {r['heartbeat_us']} us "
              f"({r['heartbeat_pending_pg_us']} us with a placement group pending); one broadcast "
              f"{r['broadcast_ms']} ms of CPU, {r['broadcast_mb']} MB whole; after 1% changed "
              f"{r['delta_ms']} ms, {r['delta_mb']} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "runs": rows, "head_model": model}, f, indent=1)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    return {"cpus": os.cpu_count(), "memory_gib": round(mem / 2**30, 1), "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
