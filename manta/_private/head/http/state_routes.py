"""The dashboard's JSON routes: the cluster's state as the head knows it
(docs/dashboard.md).

Each route asks the head the state API's own questions (`ListTasks`,
`ListActors`, `ListObjects`, ...) as the request's principal, through
`Asker`: the head checks them against the policy table and audits them as
it does for a driver, so a route can show no more than `manta.util.state`
would. On top of that a principal whose token names namespaces sees only
the actors, placement groups, jobs and tasks of those namespaces.

The audit log is for admins only (`require(request, Role.ADMIN)`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from manta._private import ids
from manta._private.head.http import auth
from manta._private.protocol import messages as m
from manta._private.protocol import state_messages as sm
from manta._private.protocol import tool_messages as tm
from manta._private.protocol.identity import Principal, Role
from manta._private.transport.connection import RemoteError

if TYPE_CHECKING:
    from manta._private.head.head import Head

# How long a route waits for what the head gathers from the node agents.
ASK_TIMEOUT_S = 10.0
# The most tasks one list answers, and the timeline's default window.
MAX_TASKS = 2000
TIMELINE_WINDOW_S = 300.0
# The audit log is read from its end: at most this much of it.
AUDIT_TAIL_BYTES = 512 * 1024
MAX_AUDIT_ROWS = 1000

HEAD_KEY = web.AppKey("manta.state_routes.head", object)


class Asker:
    """An HTTP request seen by the head as a peer asking one question: it
    carries the request's principal and address (for the policy check and
    the audit log) and turns the head's answer into a future."""

    closed = False

    def __init__(self, principal: Principal, request: web.Request) -> None:
        self.principal = principal
        self.transport = request.transport
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def reply(self, request: Any, msg: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(msg)

    def reply_error(self, request: Any, kind: m.ErrorKind, message: str) -> None:
        if not self.answer.done():
            self.answer.set_exception(RemoteError(kind, message))

    def send(self, msg: Any) -> None:
        """Nothing the head pushes unasked is for an HTTP request."""


async def ask(request: web.Request, principal: Principal, msg: Any, timeout: float = ASK_TIMEOUT_S) -> Any:
    """The head's answer to `msg` asked as `principal`; a JSON 403 or 400
    when it refuses, a 504 when it does not answer in time."""
    head = _head(request)
    asker = Asker(principal, request)
    head.handle(asker, msg)  # type: ignore[arg-type]
    try:
        return await asyncio.wait_for(asker.answer, timeout + 2)
    except RemoteError as e:
        status = 403 if e.kind in (m.ErrorKind.AUTHORIZATION,) else 400
        raise auth.error(status, e.message) from None
    except TimeoutError:
        raise auth.error(504, f"the head did not answer {type(msg).__name__} in {timeout + 2:g} s") from None


def _head(request: web.Request) -> Head:
    return request.app[HEAD_KEY]  # type: ignore[return-value]


def _namespace_of_job(head: Head, job_id: int) -> str | None:
    job = head.jobs.get(job_id)
    return job.namespace if job is not None else None


def _sees_job(head: Head, p: Principal, job_id: int) -> bool:
    if p.role >= Role.ADMIN or not p.namespaces:
        return True
    namespace = _namespace_of_job(head, job_id)
    return namespace is not None and p.in_namespace(namespace)


def _job_int(job_hex: str | None) -> int:
    """The inverse of `ids.job_hex`."""
    try:
        return int.from_bytes(bytes.fromhex(job_hex), "little") if job_hex else 0
    except (ValueError, TypeError):
        return 0


# -- overview ------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    """Nodes with their resources (total, available), and counts of
    actors, tasks and jobs by state: the overview page's numbers."""
    p = auth.require(request, Role.VIEW)
    info = await ask(request, p, m.GetClusterInfo(rid=1))
    actors = (await ask(request, p, m.ListActors(rid=1))).actors
    tasks = await ask(request, p, m.ListTasks(filters=[], limit=0, rid=1))
    head = _head(request)
    nodes = [_node(n) for n in info.nodes]
    used: dict[str, float] = {}
    total: dict[str, float] = {}
    for n in info.nodes:
        if not n.alive:
            continue
        for k, v in n.resources.items():
            if k.startswith("node:"):
                continue
            total[k] = total.get(k, 0.0) + v
            used[k] = used.get(k, 0.0) + v - n.available.get(k, 0.0)
    actor_states: dict[str, int] = {}
    for a in actors:
        if _sees_job(head, p, a.job_id) and p.in_namespace(a.namespace):
            actor_states[a.state.value] = actor_states.get(a.state.value, 0) + 1
    return web.json_response({
        "nodes": nodes, "alive_nodes": sum(n["alive"] for n in nodes),
        "resources_total": total, "resources_used": used,
        "actors_by_state": actor_states, "tasks_total": tasks.total, "tasks_dropped": tasks.dropped,
        "running_jobs": info.running_jobs, "storage": info.storage, "now_ms": int(time.time() * 1000),
    })


def _node(n: m.NodeInfo) -> dict[str, Any]:
    return {
        "node_id": n.node_id.hex(), "address": n.address, "alive": n.alive,
        "is_head": "node:__internal_head__" in n.resources,
        "resources_total": {k: v for k, v in n.resources.items() if not k.startswith("node:")},
        "resources_available": {k: v for k, v in n.available.items() if not k.startswith("node:")},
        "store_capacity": n.store_capacity, "labels": n.labels,
        "pending": [{"shape": s, "count": c} for s, c in n.pending],
    }


# -- actors, tasks, placement groups ---------------------------------------------


async def actors(request: web.Request) -> web.Response:
    p = auth.require(request, Role.VIEW)
    head = _head(request)
    reply = await ask(request, p, m.ListActors(rid=1))
    out = []
    for a in reply.actors:
        if not p.in_namespace(a.namespace) or not _sees_job(head, p, a.job_id):
            continue
        out.append({
            "actor_id": a.actor_id.hex(), "class_name": a.class_name, "name": a.name,
            "namespace": a.namespace, "state": a.state.value, "job_id": ids.job_hex(a.job_id),
            "node_id": a.node_id.hex(), "pid": a.pid, "death_cause": a.death_cause or None,
            "is_detached": a.detached, "num_restarts": a.restarts, "required_resources": dict(a.resources),
        })
    return web.json_response({"actors": out})


def _task_filters(request: web.Request) -> list[tuple[str, str, str]]:
    q = request.query
    filters = []
    for field, key in (("state", "state"), ("func_or_class_name", "name"), ("job_id", "job"),
                       ("task_id", "task_id"), ("actor_id", "actor_id"), ("type", "type")):
        value = q.get(key, "").strip()
        if value:
            filters.append((field, "=", value))
    return filters


def _limit(request: web.Request, default: int, most: int) -> int:
    try:
        return max(0, min(most, int(request.query.get("limit", default))))
    except ValueError:
        raise auth.error(400, "limit must be a whole number") from None


async def tasks(request: web.Request) -> web.Response:
    """Tasks (their latest attempt), newest first: filter by `state`,
    `name` (the function or class), `job` (its hex id), `type`."""
    p = auth.require(request, Role.VIEW)
    head = _head(request)
    limit = _limit(request, 500, MAX_TASKS)
    # Newest first: ask for all that match (the head's store is bounded) and keep the last.
    reply = await ask(request, p, m.ListTasks(filters=_task_filters(request), limit=1 << 30, rid=1))
    seen = [t for t in reply.tasks if _sees_job(head, p, _job_int(t.get("job_id")))]
    shown = seen[::-1][:limit]
    return web.json_response({"tasks": shown, "total": len(seen), "dropped": reply.dropped})


async def task(request: web.Request) -> web.Response:
    """One task: its record, its error with the traceback, and its story as
    the head folded it from the processes' records."""
    p = auth.require(request, Role.VIEW)
    task_id = request.match_info["task_id"]
    try:
        bytes.fromhex(task_id)
    except ValueError:
        raise auth.error(400, f"{task_id!r} is not a task id (hex)") from None
    reply = await ask(request, p, m.ListTasks(filters=[("task_id", "=", task_id)], limit=1, rid=1))
    if not reply.tasks or not _sees_job(_head(request), p, _job_int(reply.tasks[0].get("job_id"))):
        raise auth.error(404, f"no task {task_id} in the head's task store")
    t = reply.tasks[0]
    return web.json_response({"task": t, "story": story_of(t)})


def story_of(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps the head knows of a task's latest attempt, oldest first."""
    steps: list[dict[str, Any]] = []
    if t.get("creation_time_ms"):
        steps.append({"time_ms": t["creation_time_ms"], "step": "submitted",
                      "detail": f"job {t.get('job_id')}" + (f", actor {t['actor_id']}" if t.get("actor_id") else "")})
    if t.get("attempt_number"):
        steps.append({"time_ms": t.get("creation_time_ms"), "step": "retried",
                      "detail": f"attempt {t['attempt_number'] + 1}"})
    if t.get("node_id") and t["state"] not in ("PENDING_ARGS_AVAIL", "PENDING_NODE_ASSIGNMENT"):
        steps.append({"time_ms": t.get("start_time_ms") or t.get("creation_time_ms"), "step": "granted",
                      "detail": f"node {t['node_id']}"})
    if t.get("start_time_ms"):
        who = f"worker {t['worker_id']}" if t.get("worker_id") else "a worker"
        steps.append({"time_ms": t["start_time_ms"], "step": "running",
                      "detail": f"{who}" + (f" (pid {t['worker_pid']})" if t.get("worker_pid") else "")})
    if t.get("end_time_ms"):
        failed = t["state"] == "FAILED"
        steps.append({"time_ms": t["end_time_ms"], "step": "failed" if failed else "finished",
                      "detail": t.get("error_type") or "" if failed else ""})
    return steps


async def timeline(request: web.Request) -> web.Response:
    """Tasks that ran in the last `window_s` seconds (or since `since_ms`),
    each with its worker, start and end (none while it runs): the task
    stream's bars."""
    p = auth.require(request, Role.VIEW)
    head = _head(request)
    now_ms = int(time.time() * 1000)
    try:
        window = float(request.query.get("window_s", TIMELINE_WINDOW_S))
        since = int(request.query.get("since_ms", now_ms - int(window * 1000)))
    except ValueError:
        raise auth.error(400, "window_s and since_ms must be numbers") from None
    reply = await ask(request, p, m.ListTasks(filters=[], limit=1 << 30, rid=1))
    bars = []
    for t in reply.tasks:
        # Workers report a run's start only while it runs or when it failed
        # (a record per successful run costs the hot path): a short task
        # that finished is drawn from its submission instead.
        start, end = t.get("start_time_ms") or t.get("creation_time_ms"), t.get("end_time_ms")
        worker = t.get("worker_id")
        if not start or not worker or (end and end < since) or not _sees_job(head, p, _job_int(t.get("job_id"))):
            continue
        pid = t.get("worker_pid")
        bars.append({"task_id": t["task_id"], "name": t["name"], "state": t["state"],
                     "worker": f"pid {pid}" if pid else f"worker {worker[:8]}",
                     "start_ms": start, "end_ms": end, "ran_from_start": bool(t.get("start_time_ms"))})
    bars = bars[-MAX_TASKS:]
    return web.json_response({"bars": bars, "now_ms": now_ms, "since_ms": since})


async def placement_groups(request: web.Request) -> web.Response:
    p = auth.require(request, Role.VIEW)
    reply = await ask(request, p, m.GetPlacementGroups(rid=1))
    out = []
    for g in reply.groups:
        spec = g.spec
        if not p.in_namespace(spec.namespace):
            continue
        nodes = [n.hex() for n in g.nodes] + [""] * (len(spec.bundles) - len(g.nodes))
        out.append({
            "placement_group_id": spec.pg_id.hex(), "name": spec.name, "namespace": spec.namespace,
            "creator_job_id": ids.job_hex(spec.job_id), "state": g.state.value, "strategy": spec.strategy,
            "is_detached": spec.detached,
            "bundles": [{"index": i, "resources": dict(b), "node_id": nodes[i] or None}
                        for i, b in enumerate(spec.bundles)],
        })
    return web.json_response({"placement_groups": out})


# -- objects, jobs, workers ----------------------------------------------------


async def objects(request: web.Request) -> web.Response:
    """Object references by owner process, and bytes per node: in each
    node's store (sealed there) and held by each process."""
    p = auth.require(request, Role.VIEW)
    # The processes' references and each store's own report (what `manta
    # memory` sees: pinned, spilled, used), asked at once.
    reply, stores = await asyncio.gather(ask(request, p, sm.ListObjects(timeout_s=ASK_TIMEOUT_S, rid=1)),
                                         ask(request, p, tm.ListStore(timeout_s=ASK_TIMEOUT_S, rid=1)))
    per_node: dict[str, dict[str, Any]] = {}
    owners = []
    counted: set[tuple[str, bytes]] = set()
    for proc in reply.processes:
        node = proc.node_id.hex()
        per_node.setdefault(node, {"node_id": node, "ip": proc.ip, "store_bytes": 0, "objects": 0})
        held = 0
        kinds: dict[str, int] = {}
        for r in proc.refs:
            size = max(r.size, 0)
            held += size
            kinds[r.reference_type] = kinds.get(r.reference_type, 0) + 1
            if r.in_store:
                where = (r.node_id or proc.node_id).hex()
                key = (where, r.object_id)
                if key not in counted:
                    counted.add(key)
                    e = per_node.setdefault(where, {"node_id": where, "ip": "", "store_bytes": 0, "objects": 0})
                    e["store_bytes"] += size
                    e["objects"] += 1
        owners.append({"pid": proc.pid, "driver": proc.driver, "node_id": node, "ip": proc.ip,
                       "refs": len(proc.refs), "bytes": held, "by_type": kinds,
                       "sample": [{"object_id": r.object_id.hex(), "type": r.reference_type, "size": r.size,
                                   "in_store": r.in_store, "task_status": r.task_status}
                                  for r in proc.refs[:20]]})
    for r in stores.nodes:
        node = r.node_id.hex()
        e = per_node.setdefault(node, {"node_id": node, "ip": r.ip, "store_bytes": 0, "objects": 0})
        e.update(ip=e["ip"] or r.ip, capacity=r.capacity, used=r.used, spilled_bytes=r.spilled_bytes,
                 pinned_bytes=sum(x.size for x in r.entries if x.pins and not x.spilled),
                 spilled_objects=sum(1 for x in r.entries if x.spilled))
    return web.json_response({"nodes": sorted(per_node.values(), key=lambda n: n["node_id"]),
                              "owners": owners, "missing": reply.missing + stores.missing})


async def jobs(request: web.Request) -> web.Response:
    """The cluster's jobs (drivers) as `list_jobs` shows them."""
    p = auth.require(request, Role.VIEW)
    reply = await ask(request, p, sm.ListJobs(rid=1))
    out = []
    for j in reply.jobs:
        if not p.in_namespace(j.namespace):
            continue
        out.append({"job_id": ids.job_hex(j.job_id), "namespace": j.namespace, "alive": j.alive,
                    "driver_pid": j.driver_pid, "start_ms": j.start_ms, "end_ms": j.end_ms or None,
                    "entrypoint": j.entrypoint, "node_id": j.node_id.hex(), "ip": j.ip})
    return web.json_response({"jobs": out})


async def workers(request: web.Request) -> web.Response:
    p = auth.require(request, Role.VIEW)
    head = _head(request)
    reply = await ask(request, p, sm.ListWorkers(timeout_s=ASK_TIMEOUT_S, rid=1))
    out = [{"worker_id": w.worker_id.hex(), "alive": w.alive, "driver": w.driver, "node_id": w.node_id.hex(),
            "ip": w.ip, "pid": w.pid, "job_id": ids.job_hex(w.job_id) if w.job_id else None,
            "exit_type": w.exit_type or None, "exit_detail": w.exit_detail or None}
           for w in reply.workers if not w.job_id or _sees_job(head, p, w.job_id)]
    return web.json_response({"workers": out, "missing": reply.missing})


# -- logs ------------------------------------------------------------------------


async def logs(request: web.Request) -> web.Response:
    """The log files of every node (or of `node`), each with the job whose
    worker wrote it; a principal sees the files it may read."""
    p = auth.require(request, Role.VIEW)
    node = _hex(request.query.get("node", ""), "node")
    reply = await ask(request, p, tm.ListLogs(node_id=node, glob=request.query.get("glob", ""),
                                              timeout_s=ASK_TIMEOUT_S, rid=1))
    return web.json_response({"files": [
        {"node_id": f.node_id.hex(), "name": f.name, "size": f.size, "mtime": f.mtime,
         "job_id": ids.job_hex(f.job_id) if f.job_id else None, "worker_id": f.worker_id.hex() or None,
         "pid": f.pid or None}
        for f in reply.files], "missing": reply.missing})


async def read_log(request: web.Request) -> web.Response:
    """A piece of one log file: from `offset` of the file `inode` (what
    the last read answered), or its last `tail` lines on a first read.
    Following is asking again with the answer's offset and inode."""
    p = auth.require(request, Role.VIEW)
    q = request.query
    try:
        offset, inode, tail = int(q.get("offset", -1)), int(q.get("inode", 0)), int(q.get("tail", 200))
        pid = int(q.get("pid", 0) or 0)
    except ValueError:
        raise auth.error(400, "offset, inode, tail and pid must be whole numbers") from None
    chunk = await ask(request, p, tm.ReadLog(
        node_id=_hex(q.get("node", ""), "node"), name=q.get("name", ""),
        worker_id=_hex(q.get("worker", ""), "worker"), pid=pid,
        task_id=_hex(q.get("task", ""), "task"), actor_id=_hex(q.get("actor", ""), "actor"),
        tail=tail, offset=offset, inode=inode, max_bytes=256 * 1024, timeout_s=ASK_TIMEOUT_S, rid=1))
    return web.json_response({"node_id": chunk.node_id.hex(), "name": chunk.name,
                              "text": chunk.data.decode(errors="replace"), "offset": chunk.offset,
                              "inode": chunk.inode, "rotated": chunk.rotated, "more": chunk.more})


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise auth.error(400, f"{what} must be a hex id, not {text!r}") from None


# -- the audit log ---------------------------------------------------------------


async def audit(request: web.Request) -> web.Response:
    """The newest audit records (admins only), newest first; `limit`,
    and `action` to keep those whose action starts with it."""
    auth.require(request, Role.ADMIN)
    path = _head(request).access.audit.path
    limit = _limit(request, 200, MAX_AUDIT_ROWS)
    prefix = request.query.get("action", "")
    if not path:
        return web.json_response({"records": [], "path": None})
    loop = asyncio.get_running_loop()
    lines = await loop.run_in_executor(None, _tail_lines, path, AUDIT_TAIL_BYTES)
    out = []
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and str(rec.get("action", "")).startswith(prefix):
            out.append(rec)
            if len(out) >= limit:
                break
    return web.json_response({"records": out, "path": path})


def _tail_lines(path: str, most: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - most))
            data = f.read(most)
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if size > most else lines  # the first may be cut


def setup(app: web.Application, head: Head) -> None:
    app[HEAD_KEY] = head
    r = app.router
    r.add_get("/api/state/overview", overview)
    r.add_get("/api/state/actors", actors)
    r.add_get("/api/state/tasks", tasks)
    r.add_get("/api/state/tasks/{task_id}", task)
    r.add_get("/api/state/timeline", timeline)
    r.add_get("/api/state/placement_groups", placement_groups)
    r.add_get("/api/state/objects", objects)
    r.add_get("/api/state/jobs", jobs)
    r.add_get("/api/state/workers", workers)
    r.add_get("/api/state/logs", logs)
    r.add_get("/api/state/logs/read", read_log)
    r.add_get("/api/audit", audit)
