"""The head's answers to the state API beyond its own tables: workers,
objects and runtime envs, asked of every node agent when someone lists
them, and the jobs with what their drivers told of themselves.

The head waits a little less than its asker for the agents (which wait a
little less again for their processes), so that it can answer with what
came in time and name what did not, rather than time out as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from manta._private.head.app_metrics import AppMetrics
from manta._private.protocol import metrics_messages as mm
from manta._private.protocol import state_messages as sm
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.head.head import Head

HANDLED = (sm.ListWorkers, sm.ListObjects, sm.ListRuntimeEnvs, sm.ListJobs, sm.JobDetails, mm.MetricsReport)

# Of its asker's time, what the head waits for the agents, and what it
# gives them for their processes: each answers before its asker gives up.
HEAD_SHARE = 0.9
AGENT_SHARE = 0.8


class StateQueries:
    def __init__(self, head: Head) -> None:
        self.head = head
        # What each job's driver told of itself (JobDetails), by job id.
        self.job_details: dict[int, sm.JobDetails] = {}
        # Every process's application metrics, for /metrics.
        self.app_metrics = AppMetrics()
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, conn: Connection, msg: Any) -> None:
        t = type(msg)
        if t is mm.MetricsReport:
            self.app_metrics.add(conn.principal.name, msg)
        elif t is sm.JobDetails:
            self.job_details[msg.job_id] = msg
        elif t is sm.ListJobs:
            conn.reply(msg, sm.JobRecordList(jobs=self._jobs()))
        elif t is sm.ListWorkers:
            self._spawn(self._gather(conn, msg, sm.ListWorkers(timeout_s=msg.timeout_s * AGENT_SHARE), _workers))
        elif t is sm.ListRuntimeEnvs:
            self._spawn(self._gather(conn, msg, sm.ListRuntimeEnvs(timeout_s=msg.timeout_s * AGENT_SHARE), _envs))
        elif t is sm.ListObjects:
            self._spawn(self._gather(conn, msg, sm.ListObjects(timeout_s=msg.timeout_s * AGENT_SHARE), _objects))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def _jobs(self) -> list[sm.JobRecord]:
        out = []
        for job in sorted(self.head.jobs.values(), key=lambda j: j.job_id):
            d = self.job_details.get(job.job_id)
            out.append(sm.JobRecord(
                job_id=job.job_id, namespace=job.namespace, driver_pid=job.pid, alive=job.alive,
                start_ms=int(job.start_time * 1000), end_ms=int(job.end_time * 1000),
                entrypoint=d.entrypoint if d else "", runtime_env=d.runtime_env if d else "{}",
                node_id=d.node_id if d else b"", ip=d.ip if d else "",
                submission_id=d.submission_id if d else "",
            ))
        return out

    async def _gather(self, conn: Connection, msg: Any, ask: Any, combine: Callable[[list[Any], list[str]], Any]) -> None:
        """Asks every live node's agent, then answers with what came in time."""
        nodes = [n for n in self.head.nodes.values() if n.alive]
        missing = [f"node {n.node_id.hex()}: not connected to the head" for n in nodes if not n.connected]
        asked = [n for n in nodes if n.connected]
        got, why = await ask_nodes(asked, ask, msg.timeout_s * HEAD_SHARE)
        missing += why
        for answer in got:
            missing += answer.missing
        if not conn.closed:
            conn.reply(msg, combine(got, missing))


async def ask_nodes(nodes: list[Any], ask: Any, wait: float) -> tuple[list[Any], list[str]]:
    """Every node's answer to `ask` within `wait` seconds, and why the others gave none."""
    answers = await asyncio.gather(*(asyncio.wait_for(n.request(ask), wait) for n in nodes), return_exceptions=True)
    got, missing = [], []
    for n, answer in zip(nodes, answers):
        if isinstance(answer, BaseException):
            why = f"no answer in {wait:g} s" if isinstance(answer, TimeoutError) else (
                str(answer) or type(answer).__name__)
            missing.append(f"node {n.node_id.hex()}: {why}")
        else:
            got.append(answer)
    return got, missing


def _workers(got: list[sm.WorkerList], missing: list[str]) -> sm.WorkerList:
    return sm.WorkerList(workers=[w for a in got for w in a.workers], missing=missing)


def _envs(got: list[sm.RuntimeEnvList], missing: list[str]) -> sm.RuntimeEnvList:
    return sm.RuntimeEnvList(envs=[e for a in got for e in a.envs], missing=missing)


def _objects(got: list[sm.ObjectList], missing: list[str]) -> sm.ObjectList:
    """Every node's processes' references, each with its size where any
    part knows it: the store holding the object, or a process holding its
    value (a borrower that has not read it yet does not know)."""
    sizes: dict[bytes, int] = {}
    for a in got:
        sizes.update(a.stored)
        for p in a.processes:
            for r in p.refs:
                if r.size >= 0:
                    sizes.setdefault(r.object_id, r.size)
    processes = []
    for a in got:
        for p in a.processes:
            if any(r.size < 0 and r.object_id in sizes for r in p.refs):
                refs = [replace(r, size=sizes[r.object_id]) if r.size < 0 and r.object_id in sizes else r
                        for r in p.refs]
                p = replace(p, refs=refs)
            processes.append(p)
    return sm.ObjectList(processes=processes, missing=missing)
