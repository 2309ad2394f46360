"""The cluster's recent tasks as a Chrome trace (chrome://tracing, Perfetto,
`manta timeline`, `manta.timeline()`), from the state API's task records.

One complete event ("X") per task attempt that ran or is running: a
process row per node and a thread row per worker, named by metadata
events, so a viewer shows which worker ran what, when, and which failed.
A task still running is drawn up to `now`.

Workers report when a task started running only while it runs (a record
per successful run would cost the hot path, runtime/executor.py), so a
short task that finished between reports starts, here, when its owner
submitted it: its bar then includes the wait for a worker, and its
`args.start` says "submitted" rather than "running".
"""

from __future__ import annotations

import time
from typing import Any

# Chrome's trace viewer colours by these reserved names.
_COLOURS = {"FAILED": "terrible", "RUNNING": "rail_animation"}


def trace_events(tasks: list[dict[str, Any]], now_ms: float | None = None) -> list[dict[str, Any]]:
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    nodes: dict[str, int] = {}
    # (node row, worker id) -> (thread row, the worker's pid if known)
    workers: dict[tuple[int, str], list[int]] = {}
    events: list[dict[str, Any]] = []
    # A task sent on a reused lease has no node in its record; its worker's other tasks tell.
    node_of = {t["worker_id"]: t["node_id"] for t in tasks if t.get("worker_id") and t.get("node_id")}
    for t in tasks:
        ran, end = t.get("start_time_ms") or 0, t.get("end_time_ms") or 0
        start = ran or (t.get("creation_time_ms") or 0 if end else 0)
        if not start:
            continue  # never ran: nothing to draw
        if not end:
            end = max(start, now_ms)
        node = t.get("node_id") or node_of.get(t.get("worker_id") or "", "")
        pid = nodes.setdefault(node, len(nodes) + 1)
        worker = t.get("worker_id") or ""
        row = workers.setdefault((pid, worker), [len(workers) + 1, 0])
        row[1] = row[1] or int(t.get("worker_pid") or 0)
        tid = row[0]
        event = {
            "cat": t.get("type", ""), "name": t.get("name", ""), "ph": "X",
            "ts": start * 1000, "dur": max(0, end - start) * 1000, "pid": pid, "tid": tid,
            "args": {
                "task_id": t.get("task_id", ""), "state": t.get("state", ""), "attempt": t.get("attempt_number", 0),
                "job_id": t.get("job_id", ""), "actor_id": t.get("actor_id") or "", "node_id": node,
                "worker_id": worker, "error_type": t.get("error_type") or "",
                "start": "running" if ran else "submitted",
            },
        }
        colour = _COLOURS.get(t.get("state", ""))
        if colour:
            event["cname"] = colour
        events.append(event)
    meta: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"node {node[:12] or '?'}"}}
        for node, pid in nodes.items()
    ]
    meta += [
        {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
         "args": {"name": f"worker {worker[:8] or '?'}" + (f" pid {wpid}" if wpid else "")}}
        for (pid, worker), (tid, wpid) in workers.items()
    ]
    return meta + sorted(events, key=lambda e: e["ts"])


def trace_file(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON object form of a trace, which chrome://tracing and Perfetto load."""
    return {"traceEvents": events, "displayTimeUnit": "ms"}
