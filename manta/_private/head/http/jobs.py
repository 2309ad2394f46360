"""The Jobs REST API, with Ray's routes and fields (docs/jobs.md).

    POST   /api/jobs/                     submit: {"job_id", "submission_id"}      submit role
    GET    /api/jobs/                     every job the caller may see             view
    GET    /api/jobs/{id}                 one job (Ray's JobDetails)               view
    GET    /api/jobs/{id}/logs            {"logs": "..."}                          view
    GET    /api/jobs/{id}/logs/tail       websocket: the log as it grows           view
    POST   /api/jobs/{id}/stop            {"stopped": bool}                        submit
    DELETE /api/jobs/{id}                 {"deleted": bool}                        submit
    GET    /api/packages/{proto}/{name}   whether a working_dir package is there   view
    PUT    /api/packages/{proto}/{name}   upload one (its name holds its sha256)   submit

Errors are JSON `{"error": ..., "message": ...}` (http/auth.py) with the status the job manager chose (400
for bad input, naming the field; 403; 404 for a job the caller may not see,
as for one that does not exist).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from manta._private.head.http.auth import error, require
from manta._private.head.jobs.supervisor import PACKAGES_NAMESPACE, JobManager, package_ref
from manta._private.head.jobs.table import JobError, JobRecord, check_submission_id, new_submission_id
from manta._private.ids import job_hex
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Principal, Role
from manta._private.protocol.runtime_env import RESERVED_VARS

if TYPE_CHECKING:
    from manta._private.head.head import Head

MANAGER = web.AppKey("jobs", JobManager)
MAX_PACKAGE_BYTES = 100 * 1024 * 1024  # Ray's limit for a package
MAX_ENTRYPOINT = 64 * 1024
_FIELDS = {"entrypoint", "submission_id", "job_id", "runtime_env", "metadata", "entrypoint_num_cpus",
           "entrypoint_num_gpus", "entrypoint_memory", "entrypoint_resources", "namespace"}


def setup(app: web.Application, head: Head, session_dir: str = "") -> None:
    manager = JobManager(head, session_dir or head.session_dir)
    app[MANAGER] = manager

    async def on_startup(app: web.Application) -> None:
        manager.restore()

    async def on_cleanup(app: web.Application) -> None:
        await manager.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/api/jobs/", submit)
    app.router.add_get("/api/jobs/", list_jobs)
    app.router.add_get("/api/jobs/{id}", get_job)
    app.router.add_get("/api/jobs/{id}/logs", get_logs)
    app.router.add_get("/api/jobs/{id}/logs/tail", tail_logs)
    app.router.add_post("/api/jobs/{id}/stop", stop_job)
    app.router.add_delete("/api/jobs/{id}", delete_job)
    app.router.add_get("/api/packages/{protocol}/{name}", get_package)
    app.router.add_put("/api/packages/{protocol}/{name}", put_package)


def _peer(request: web.Request) -> str:
    return request.remote or ""


def details(job: JobRecord, manager: JobManager) -> dict[str, Any]:
    """Ray's JobDetails of a submission: `job_id` and `driver_info` are its driver's once one has
    registered (Ray's too), else `job_id` is the submission id."""
    driver = manager.driver_of(job)
    job_id, info = job.submission_id, None
    if driver is not None:
        job_id = job_hex(driver[0])
        info = {"id": job_id, "node_ip_address": driver[2], "pid": str(driver[1])}
    return {
        "type": "SUBMISSION", "job_id": job_id, "submission_id": job.submission_id,
        "driver_info": info, "status": job.status.value, "entrypoint": job.entrypoint, "message": job.message,
        "error_type": job.error_type or None, "start_time": job.start_time or None,
        "end_time": job.end_time or None, "metadata": dict(job.metadata), "runtime_env": dict(job.runtime_env),
        "driver_agent_http_address": None, "driver_node_id": None, "driver_exit_code": job.driver_exit_code,
        "entrypoint_num_cpus": job.entrypoint_num_cpus or None, "entrypoint_num_gpus": job.entrypoint_num_gpus or None,
        "entrypoint_memory": job.entrypoint_memory or None, "entrypoint_resources": dict(job.entrypoint_resources) or None,
        "namespace": job.namespace,
    }


def _number(body: dict[str, Any], name: str, integer: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise JobError(f"{name} must be a number of at least 0, got {v!r}")
    if integer and v != int(v):
        raise JobError(f"{name} must be a whole number of bytes, got {v!r}")
    return int(v) if integer else float(v)


def parse_submit(body: Any) -> JobRecord:
    """A submission's fields, checked (JobError naming the field that is wrong)."""
    if not isinstance(body, dict):
        raise JobError("the request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise JobError(f"unknown field(s) {', '.join(unknown)}; a job takes {', '.join(sorted(_FIELDS))}")
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise JobError("entrypoint must be a non-empty string (the shell command to run)")
    if len(entrypoint) > MAX_ENTRYPOINT:
        raise JobError(f"entrypoint is over {MAX_ENTRYPOINT} characters")
    sid = body.get("submission_id") or body.get("job_id") or new_submission_id()
    check_submission_id(sid)
    runtime_env = body.get("runtime_env") or {}
    if not isinstance(runtime_env, dict):
        raise JobError("runtime_env must be a JSON object")
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in env_vars.items()):
        raise JobError("runtime_env.env_vars must map strings to strings")
    for k in env_vars:
        if k in RESERVED_VARS or k in ("MANTA_TOKEN", "MANTA_ADDRESS", "RAY_ADDRESS", "MANTA_JOB_CONFIG"):
            raise JobError(f"runtime_env.env_vars may not set {k}: manta sets it for the job")
    if "working_dir" in runtime_env:
        if not isinstance(runtime_env["working_dir"], str):
            raise JobError("runtime_env.working_dir must be the URI of an uploaded package")
        package_ref(runtime_env["working_dir"])
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in metadata.items()):
        raise JobError("metadata must map strings to strings")
    resources = body.get("entrypoint_resources") or {}
    if not isinstance(resources, dict):
        raise JobError("entrypoint_resources must map resource names to numbers")
    for k, v in resources.items():
        if k in ("CPU", "GPU", "memory"):
            raise JobError(f"entrypoint_resources may not name {k}: use entrypoint_num_cpus, "
                           f"entrypoint_num_gpus or entrypoint_memory")
        _number({k: v}, f"entrypoint_resources.{k}")
    namespace = body.get("namespace") or ""
    if not isinstance(namespace, str) or len(namespace) > 256:
        raise JobError("namespace must be a string")
    return JobRecord(
        submission_id=sid, entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata, namespace=namespace,
        entrypoint_num_cpus=_number(body, "entrypoint_num_cpus"),
        entrypoint_num_gpus=_number(body, "entrypoint_num_gpus"),
        entrypoint_memory=_number(body, "entrypoint_memory", integer=True),
        entrypoint_resources={k: float(v) for k, v in resources.items()},
    )


async def submit(request: web.Request) -> web.Response:
    p = require(request, Role.SUBMIT)
    try:
        body = await request.json()
    except ValueError:
        raise error(400, "the request body is not JSON") from None
    try:
        job = parse_submit(body)
        rec = request.app[MANAGER].submit(p, job, _peer(request))
    except JobError as e:
        raise error(e.status, str(e)) from None
    return web.json_response({"job_id": rec.submission_id, "submission_id": rec.submission_id})


async def list_jobs(request: web.Request) -> web.Response:
    p = require(request, Role.VIEW)
    jobs = sorted(request.app[MANAGER].list_for(p), key=lambda j: j.start_time)
    return web.json_response([details(j, request.app[MANAGER]) for j in jobs])


def _visible(request: web.Request, p: Principal) -> JobRecord:
    try:
        return request.app[MANAGER].visible(p, request.match_info["id"])
    except JobError as e:
        raise error(e.status, str(e)) from None


async def get_job(request: web.Request) -> web.Response:
    p = require(request, Role.VIEW)
    return web.json_response(details(_visible(request, p), request.app[MANAGER]))


async def get_logs(request: web.Request) -> web.Response:
    p = require(request, Role.VIEW)
    job = _visible(request, p)
    return web.json_response({"logs": request.app[MANAGER].logs(job.submission_id)})


async def tail_logs(request: web.Request) -> web.WebSocketResponse:
    p = require(request, Role.VIEW)
    job = _visible(request, p)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)

    async def drain_incoming() -> None:  # the client sends nothing; a close ends the tail
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    reader = asyncio.ensure_future(drain_incoming())
    try:
        async for chunk in request.app[MANAGER].tail(job.submission_id):
            if ws.closed:
                break
            await ws.send_str(chunk)
    finally:
        reader.cancel()
        await ws.close()
    return ws


async def _act(request: web.Request, action: str) -> web.Response:
    """Stop or delete: {"stopped": bool} / {"deleted": bool}, as Ray answers."""
    p = require(request, Role.SUBMIT)
    manager = request.app[MANAGER]
    do = manager.stop if action == "stop" else manager.delete
    try:
        done = do(p, request.match_info["id"], _peer(request))
    except JobError as e:
        raise error(e.status, str(e)) from None
    return web.json_response({"stopped" if action == "stop" else "deleted": done})


async def stop_job(request: web.Request) -> web.Response:
    return await _act(request, "stop")


async def delete_job(request: web.Request) -> web.Response:
    return await _act(request, "delete")


def _package(request: web.Request) -> tuple[str, str, str]:
    """(uri, kind, name) of the package a route names (see `package_ref`)."""
    uri = f"{request.match_info['protocol']}://{request.match_info['name']}"
    try:
        return (uri, *package_ref(uri))
    except JobError as e:
        raise error(400, str(e)) from None


async def get_package(request: web.Request) -> web.Response:
    p = require(request, Role.VIEW)
    uri, _, _ = _package(request)
    if request.app[MANAGER].resolve(p, uri) is None:
        raise error(404, f"package {request.match_info['name']} is not on this cluster")
    return web.json_response({"exists": True})


async def put_package(request: web.Request) -> web.Response:
    p = require(request, Role.SUBMIT)
    _, kind, name = _package(request)
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > MAX_PACKAGE_BYTES:
            raise error(413, f"a package is at most {MAX_PACKAGE_BYTES >> 20} MiB")
        chunks.append(chunk)
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    if kind == "sha256" and digest != name:
        raise error(400, "the package's bytes do not hash to the sha256 its name gives")
    head = request.app[MANAGER].head
    # Stored by content hash (as drivers store theirs); a Ray name maps to it for this token only.
    msg = m.KvPut(namespace=PACKAGES_NAMESPACE, key=digest.encode(), value=data, overwrite=False)
    bad = head.bounds.refusal(msg) or head.quotas.refusal(p, msg)
    if bad:
        raise error(429, bad)
    head._kv(msg, p)
    if kind == "ray":
        request.app[MANAGER].name_package(p, name, digest)
    head.access.audit.record(p, "package.upload", target=name, namespace=PACKAGES_NAMESPACE,
                             peer=_peer(request), detail=f"{size} bytes, sha256 {digest}")
    return web.json_response({"uploaded": True})
