"""`manta logs`, `manta stack`, `manta memory` and `manta timeline`: the
observability commands (docs/observability.md), added to `manta` by cli.py.

Each asks the head, which routes to the node holding the log, process or
objects and checks the asker may see them (head/tools.py).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

_ADDRESS = click.option("--address", envvar="MANTA_ADDRESS", default=None,
                        help="HOST:PORT (default: this machine's cluster).")
_TOKEN_FILE = click.option("--token-file", default=None,
                           help="File holding your token (default: MANTA_TOKEN, else this machine's cluster owner's).")
_TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
                        help="Seconds to wait for the cluster's answer.")


def _session(address: str | None, token_file: str | None, body: Any) -> Any:
    from manta.cli_support import _head_session

    return _head_session(address, token_file, body)[1]


def _ask(conn: Any, msg: Any, timeout: float) -> Any:
    import asyncio

    # A little longer than the head's own wait, so its partial answer arrives first.
    return asyncio.wait_for(conn.request(msg), timeout + 5)


def _fail(message: str, code: int = 1) -> None:
    from manta.cli_support import _fail as fail

    fail(message, code)


def _hex(text: str | None, what: str) -> bytes:
    if not text:
        return b""
    try:
        return bytes.fromhex(text)
    except ValueError:
        _fail(f"{what} must be an id in hex, not {text!r}", 2)
    raise AssertionError("unreachable")


def _node_by_ip(node_id: str | None, node_ip: str | None, address: str | None, token_file: str | None) -> str | None:
    """--node-ip (Ray's) as a node id: the one live node with that address."""
    if not node_ip or node_id:
        return node_id
    from manta._private.protocol import messages as m

    info = _session(address, token_file, lambda conn: conn.request(m.GetClusterInfo()))
    found = [n.node_id.hex() for n in info.nodes if n.alive and n.address.split(":")[-2:-1] == [node_ip]]
    if len(found) != 1:
        _fail(f"{len(found) or 'no'} live nodes at {node_ip}" + ("; name one with --node-id: " + ", ".join(found)
                                                                 if found else ""), 2)
    return found[0]


def _size(n: int, units: str = "auto") -> str:
    if units == "B" or (units == "auto" and n < 1024):
        return f"{n} B"
    for unit, scale in (("KB", 2**10), ("MB", 2**20), ("GB", 2**30)):
        if units == unit or (units == "auto" and (n < scale * 1024 or unit == "GB")):
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _wide() -> Any:
    """A console for tables of ids: piped output is not cut at 80 columns."""
    from manta.cli_support import _console

    out = _console()
    if not out.is_terminal:
        out.width = 200
    return out


def _safe_write(text: str) -> None:
    """Log text from tasks, without the terminal controls it may carry (runtime/terminal.py)."""
    from manta._private.runtime.terminal import safe_line

    lines = text.split("\n")
    sys.stdout.write("\n".join(safe_line(line) for line in lines))
    sys.stdout.flush()


# -- manta logs ------------------------------------------------------------------

_KINDS = ("cluster", "actor", "task", "worker")


@click.command()
@click.argument("target", required=False)
@click.argument("glob", required=False)
@click.option("--node-id", default=None, help="The node holding the file (see `manta list nodes`).")
@click.option("--node-ip", default=None, help="The node at this address (Ray's flag), if only one is there.")
@click.option("--actor-id", default=None, help="The output of this actor's worker.")
@click.option("--task-id", default=None, help="This task's own lines of its worker's output.")
@click.option("--pid", type=int, default=None, help="The output of the worker with this pid.")
@click.option("--id", "id_", default=None, help="With `actor` or `task` (Ray's form): its id.")
@click.option("--err", is_flag=True, help="The worker's stderr rather than its stdout.")
@click.option("--tail", "-t", type=int, default=1000, show_default=True,
              help="Print the last N lines first (-1: the whole file).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what is appended, across rotations, until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
              help="Seconds between reads while following.")
@_TIMEOUT
@_ADDRESS
@_TOKEN_FILE
def logs(target: str | None, glob: str | None, node_id: str | None, node_ip: str | None, actor_id: str | None,
         task_id: str | None, pid: int | None, id_: str | None, err: bool, tail: int, follow: bool, interval: float,
         timeout: float, address: str | None, token_file: str | None) -> None:
    """List the log files of the cluster's nodes and workers, or print one.

    \b
    manta logs                          every node's log files
    manta logs 'worker*'                those whose names match
    manta logs agent.log --node-id N    one file (of node N; any node if only one has it)
    manta logs --task-id T              what task T printed (its worker's lines of it)
    manta logs --actor-id A -f          an actor's output, followed
    manta logs --pid P --err            a worker's stderr
    manta logs task --id T              Ray's form (also actor --id, worker --pid, cluster [GLOB])
    """
    if target in _KINDS:
        kind = target
        if kind == "actor":
            actor_id = actor_id or id_
        elif kind == "task":
            task_id = task_id or id_
        elif kind == "worker" and pid is None and id_:
            pid = int(id_) if id_.isdigit() else None
        name = None
        if kind == "cluster":
            name = glob
    else:
        if glob:
            _fail("give one file name or pattern", 2)
        name = target
    chosen = [x for x in (actor_id, task_id, pid) if x]
    if len(chosen) > 1:
        _fail("give one of --actor-id, --task-id or --pid", 2)
    if target == "actor" and not actor_id or target == "task" and not task_id or target == "worker" and not pid:
        _fail(f"`manta logs {target}` needs --id" + (" or --pid" if target == "worker" else ""), 2)
    node_id = _node_by_ip(node_id, node_ip, address, token_file)
    listing = not chosen and (not name or any(c in name for c in "*?["))
    if listing:
        if follow:
            _fail("--follow follows one file: name it, or a task, actor or worker", 2)
        _list_logs(node_id, name or "", timeout, address, token_file)
        return
    from manta._private.protocol import tool_messages as tm

    first = tm.ReadLog(node_id=_hex(node_id, "--node-id"), name=name or "", pid=pid or 0,
                       actor_id=_hex(actor_id, "--actor-id"), task_id=_hex(task_id, "--task-id"), err=err,
                       tail=tail, timeout_s=timeout)
    _follow(first, follow, interval, timeout, address, token_file)


def _list_logs(node_id: str | None, glob: str, timeout: float, address: str | None, token_file: str | None) -> None:
    from rich.table import Table

    from manta._private.protocol import tool_messages as tm
    from manta.cli_support import _cell, _console

    msg = tm.ListLogs(node_id=_hex(node_id, "--node-id"), glob=glob, timeout_s=timeout)
    answer = _session(address, token_file, lambda conn: _ask(conn, msg, timeout))
    out = _wide()
    for why in answer.missing:
        _console(stderr=True).print(f"manta: missing: {why}", markup=False)
    by_node: dict[bytes, list[Any]] = {}
    for f in answer.files:
        by_node.setdefault(f.node_id, []).append(f)
    if not by_node:
        out.print("(no log files)")
    for nid, files in by_node.items():
        out.print(f"node {nid.hex()}:")
        table = Table("file", "size", "modified", "job", "pid", box=None, pad_edge=False)
        table.columns[0].overflow = "fold"
        for f in files:
            table.add_row(_cell(f.name), _size(f.size), time.strftime("%H:%M:%S", time.localtime(f.mtime)),
                          str(f.job_id or "-"), str(f.pid or "-"))
        out.print(table)


def _follow(first: Any, follow: bool, interval: float, timeout: float, address: str | None,
            token_file: str | None) -> None:
    import asyncio

    from msgspec.structs import replace

    async def body(conn: Any) -> None:
        req = first
        while True:
            chunk = await _ask(conn, req, timeout)
            if chunk.rotated:
                print(f"manta: {chunk.name} was rotated or truncated: reading it from its start",
                      file=sys.stderr, flush=True)
            if chunk.data:
                _safe_write(chunk.data.decode("utf-8", "replace"))
            # Read on where this ended, from the same node and file (no new search).
            req = replace(req, node_id=chunk.node_id, name=chunk.name, pid=0, actor_id=b"", offset=chunk.offset,
                          inode=chunk.inode, in_task=chunk.in_task)
            if chunk.more:
                continue
            if not follow:
                return
            await asyncio.sleep(interval)

    try:
        _session(address, token_file, body)
    except KeyboardInterrupt:
        pass


# -- manta stack -----------------------------------------------------------------


@click.command()
@click.option("--pid", type=int, default=None, help="The worker with this pid.")
@click.option("--actor-id", default=None, help="The worker running this actor.")
@click.option("--node-id", default=None, help="Every worker of this node (or, with --pid, the node of that pid).")
@click.option("--native", is_flag=True, help="C frames too (py-spy only).")
@click.option("--method", type=click.Choice(["auto", "py-spy", "faulthandler"]), default="auto", show_default=True,
              help="auto: py-spy where it is installed and may attach, else the worker's faulthandler.")
@_TIMEOUT
@_ADDRESS
@_TOKEN_FILE
def stack(pid: int | None, actor_id: str | None, node_id: str | None, native: bool, method: str, timeout: float,
          address: str | None, token_file: str | None) -> None:
    """The Python stacks of a worker, an actor, or every worker of the cluster
    (or of a node): with py-spy where it is installed, else by the worker's
    faulthandler."""
    from manta._private.protocol import tool_messages as tm
    from manta.cli_support import _console

    msg = tm.DumpStacks(node_id=_hex(node_id, "--node-id"), pid=pid or 0, actor_id=_hex(actor_id, "--actor-id"),
                        native=native, method="" if method == "auto" else method, timeout_s=timeout)
    answer = _session(address, token_file, lambda conn: _ask(conn, msg, timeout))
    err = _console(stderr=True)
    for why in answer.missing:
        err.print(f"manta: missing: {why}", markup=False)
    if not answer.stacks:
        _console().print("(no worker to show)")
    for s in answer.stacks:
        click.echo(f"--- worker pid {s.pid} (node {s.node_id.hex()[:12]}, job {s.job_id or '-'}, "
                   f"by {s.method}) ---")
        if s.error:
            err.print(f"manta: pid {s.pid}: {s.error}", markup=False)
        _safe_write(s.text if s.text.endswith("\n") or not s.text else s.text + "\n")


# -- manta memory ------------------------------------------------------------------

_GROUPS = ("NODE_ADDRESS", "OWNER", "STATE")
_SORTS = ("OBJECT_SIZE", "PID", "REFERENCE_TYPE", "STATE")


@click.command()
@click.option("--group-by", type=click.Choice(_GROUPS, case_sensitive=False), default="NODE_ADDRESS",
              show_default=True, help="Group objects by the node holding them, their owner, or their state.")
@click.option("--sort-by", type=click.Choice(_SORTS, case_sensitive=False), default="OBJECT_SIZE",
              show_default=True, help="Order within a group (sizes largest first).")
@click.option("--units", type=click.Choice(["B", "KB", "MB", "GB", "auto"]), default="auto", show_default=True)
@click.option("--stats-only", is_flag=True, help="Only each node's store totals.")
@click.option("--num-entries", "num_entries", type=int, default=None, help="At most this many objects per group.")
@_TIMEOUT
@_ADDRESS
@_TOKEN_FILE
def memory(group_by: str, sort_by: str, units: str, stats_only: bool, num_entries: int | None, timeout: float,
           address: str | None, token_file: str | None) -> None:
    """Object-store use per node and by owner: every object, its size, and
    whether it is pinned (a value from get() alive), in memory, spilled to
    disk, inline (small, in its owner's memory) or lost."""
    import asyncio

    from rich.table import Table

    from manta._private.protocol import state_messages as sm
    from manta._private.protocol import tool_messages as tm
    from manta._private.runtime.memory_view import objects_view
    from manta.cli_support import _cell, _console

    async def body(conn: Any) -> tuple[Any, Any]:
        return await asyncio.gather(_ask(conn, tm.ListStore(timeout_s=timeout), timeout),
                                    _ask(conn, sm.ListObjects(timeout_s=timeout), timeout))

    stores, refs = _session(address, token_file, body)
    out, err = _wide(), _console(stderr=True)
    for why in [*stores.missing, *refs.missing]:
        err.print(f"manta: missing: {why}", markup=False)
    view = objects_view(stores.nodes, refs.processes)
    out.print("--- object store, per node ---")
    table = Table("node", "ip", "used", "capacity", "in memory", "pinned", "spilled", box=None, pad_edge=False)
    for n in view.nodes:
        table.add_row(n.node_id.hex()[:12], n.ip, f"{_size(n.used, units)} ({n.used / max(1, n.capacity):.0%})",
                      _size(n.capacity, units), str(n.in_memory), str(n.pinned),
                      f"{n.spilled} ({_size(n.spilled_bytes, units)})")
    out.print(table)
    out.print(f"total: {len(view.objects)} objects, {_size(sum(o.size for o in view.objects if o.size > 0), units)}; "
              + ", ".join(f"{k.lower()} {v}" for k, v in sorted(view.counts().items())))
    if stats_only:
        return
    groups: dict[str, list[Any]] = {}
    for o in view.objects:
        key = {"NODE_ADDRESS": o.where, "OWNER": o.owner, "STATE": o.state}[group_by.upper()]
        groups.setdefault(key or "-", []).append(o)
    order = sort_by.upper()
    for key in sorted(groups):
        rows = groups[key]
        if order == "OBJECT_SIZE":
            rows.sort(key=lambda o: -o.size)
        elif order == "PID":
            rows.sort(key=lambda o: o.owner_pid)
        elif order == "REFERENCE_TYPE":
            rows.sort(key=lambda o: o.reference_types)
        else:
            rows.sort(key=lambda o: o.state)
        out.print(f"--- {group_by.lower().replace('_', ' ')} {key}: {len(rows)} objects, "
                  f"{_size(sum(o.size for o in rows if o.size > 0), units)} ---")
        table = Table("object id", "state", "size", "where", "owner", "references", box=None, pad_edge=False)
        for o in rows[:num_entries] if num_entries is not None else rows:
            table.add_row(o.object_id.hex(), o.state, _size(o.size, units) if o.size >= 0 else "?", o.where or "-",
                          o.owner or "-", _cell(o.reference_types or "-"))
        out.print(table)


# -- manta timeline -------------------------------------------------------------------


@click.command()
@click.option("--output", "-o", default=None, help="Where to write the trace (default: "
              "manta-timeline-<time>.json here).")
@_ADDRESS
@_TOKEN_FILE
def timeline(output: str | None, address: str | None, token_file: str | None) -> None:
    """Write a Chrome trace of the cluster's recent tasks: open it in
    chrome://tracing or https://ui.perfetto.dev."""
    import json

    from manta._private.protocol import messages as m
    from manta._private.runtime.timeline import trace_events, trace_file

    msg = m.ListTasks(filters=[], limit=1 << 30)
    answer = _session(address, token_file, lambda conn: conn.request(msg))
    events = trace_events(answer.tasks)
    path = output or time.strftime("manta-timeline-%Y%m%d-%H%M%S.json")
    with open(path, "w") as f:
        json.dump(trace_file(events), f)
    n = sum(e["ph"] == "X" for e in events)
    click.echo(f"wrote {n} task{'s' if n != 1 else ''} to {path}: open it in chrome://tracing or "
               f"https://ui.perfetto.dev")


def register(main: click.Group) -> None:
    for command in (logs, stack, memory, timeline):
        main.add_command(command)
