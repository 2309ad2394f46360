"""The head's side of `manta logs`, `manta stack` and `manta memory`: it
finds the node that holds what is asked for, asks that node's agent, and
checks what comes back against the asker before passing it on.

Who may read what (docs/observability.md):
- a node's own logs (agent, head, fork server) and stacks of workers that
  ran no job: the admin role (and the cluster);
- a worker's logs and stacks: the job whose worker it is (its driver and
  workers), or a person's token whose namespaces include the job's (a
  token with no namespace sees every job), or an admin;
- `manta memory`: any `view` principal, as `list_objects` is.
The policy table lets `view` send these; the job check is here, where the
answer says whose job the file or process is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from manta._private.head.state import ask_nodes
from manta._private.protocol import messages as m
from manta._private.protocol import tool_messages as tm
from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.transport.connection import Connection, RemoteError

if TYPE_CHECKING:
    from manta._private.head.head import Head, Node

log = logging.getLogger(__name__)

HANDLED = (tm.ListLogs, tm.ReadLog, tm.DumpStacks, tm.ListStore)
# Of its asker's time, what the head waits for the agents.
SHARE = 0.9


class Refused(Exception):
    """The asker may not see what it asked for (the message says why)."""


class HeadTools:
    """`ask(principal, msg)` answers for any front end: the wire (`handle`,
    below) or an HTTP route, which turns `Refused` into a 403, `LookupError`
    into a 404 and `ValueError` into a 400."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self._tasks: set[asyncio.Task[None]] = set()

    async def ask(self, principal: Principal, msg: Any) -> Any:
        runs: dict[type, Callable[[Principal, Any], Any]] = {
            tm.ListLogs: self.list_logs, tm.ReadLog: self.read_log, tm.DumpStacks: self.stacks,
            tm.ListStore: self.store,
        }
        answer = await runs[type(msg)](principal, msg)
        # An agent's answer passed on: whoever sends it gives it the asker's rid.
        return replace(answer, rid=0) if answer.rid else answer

    def handle(self, conn: Connection, msg: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(conn, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: Connection, msg: Any) -> None:
        try:
            answer = await self.ask(conn.principal, msg)
        except Refused as e:
            self.head.access.refuse(conn, msg, str(e))  # answered, and audited
            return
        except RemoteError as e:
            answer = e
        except LookupError as e:
            answer = RemoteError(m.ErrorKind.KEY, str(e.args[0]) if e.args else str(e))
        except ValueError as e:
            answer = RemoteError(m.ErrorKind.VALUE, str(e))
        except Exception as e:  # a bug here: the asker hears of it rather than waiting out its timeout
            log.exception("answering %s", type(msg).__name__)
            answer = RemoteError(m.ErrorKind.SYSTEM, f"{type(e).__name__}: {e}")
        if conn.closed:
            return
        if isinstance(answer, RemoteError):
            conn.reply_error(msg, answer.kind, answer.message)
        else:
            conn.reply(msg, answer)

    # -- who may read what -------------------------------------------------------

    def refusal(self, p: Principal, job_id: int, what: str) -> str:
        if p.role >= Role.ADMIN:
            return ""
        if not job_id:
            return f"{p.describe()} may not read {what}: a node's own logs and processes need the admin role"
        if p.kind is Kind.JOB:
            return "" if p.job_id == job_id else f"{p.describe()} may not read {what}: it is job {job_id}'s"
        job = self.head.jobs.get(job_id)
        namespace = job.namespace if job is not None else ""
        if p.in_namespace(namespace):
            return ""
        return f"{p.describe()} may not read {what}: job {job_id} runs in namespace {namespace!r}"

    # -- finding the node --------------------------------------------------------

    def _nodes(self, node_id: bytes) -> list[Node]:
        if node_id:
            node = self.head.nodes.get(node_id)
            if node is None or not node.alive:
                raise LookupError(f"no live node {node_id.hex()}")
            return [node]
        return [n for n in self.head.nodes.values() if n.alive and n.connected]

    def _task_place(self, task_id: bytes) -> tuple[bytes, bytes]:
        """(node id, worker id) of the task's latest attempt that ran. A task
        sent on a reused lease has no node in its record (b"": every node
        is asked, and the one that ran the worker answers)."""
        tasks, _ = self.head.task_states.query([("task_id", "=", task_id.hex())], 1 << 20)
        ran = [t for t in tasks if t.get("worker_id")]
        if not ran:
            actor = next((t["actor_id"] for t in tasks if t.get("actor_id")), None)
            if actor:  # an actor's call: its worker is the actor's
                return self._actor_place(bytes.fromhex(actor))
            raise LookupError(f"task {task_id.hex()} is not known to have run (yet): no log of it")
        last = max(ran, key=lambda t: t.get("attempt_number", 0))
        return bytes.fromhex(last["node_id"] or ""), bytes.fromhex(last["worker_id"])

    def _actor_place(self, actor_id: bytes) -> tuple[bytes, bytes]:
        entry = self.head.actors.get(actor_id)
        if entry is None:
            raise LookupError(f"no actor {actor_id.hex()}")
        if entry.worker_id and entry.node_id:
            return entry.node_id, entry.worker_id
        # Dead (or restarting): the worker its creation last ran on.
        tasks, _ = self.head.task_states.query([("actor_id", "=", actor_id.hex()),
                                                ("type", "=", "ACTOR_CREATION_TASK")], 1 << 20)
        ran = [t for t in tasks if t.get("worker_id")]
        if not ran:
            raise LookupError(f"actor {actor_id.hex()} has not run on any worker yet")
        last = ran[-1]
        return bytes.fromhex(last["node_id"] or ""), bytes.fromhex(last["worker_id"])

    # -- the requests ------------------------------------------------------------

    async def list_logs(self, p: Principal, msg: tm.ListLogs) -> tm.LogFiles:
        nodes = self._nodes(msg.node_id)
        got, missing = await ask_nodes(nodes, tm.ListLogs(glob=msg.glob), msg.timeout_s * SHARE)
        files = [f for a in got for f in a.files if not self.refusal(p, f.job_id, f.name)]
        return tm.LogFiles(files=files, missing=missing)

    async def read_log(self, p: Principal, msg: tm.ReadLog) -> tm.LogChunk:
        node_id, worker_id = msg.node_id, msg.worker_id
        # A follower's next read names the node and file the first one found: no search again.
        if not (msg.name and node_id):
            if msg.task_id:
                node_id, worker_id = self._task_place(msg.task_id)
            elif msg.actor_id:
                node_id, worker_id = self._actor_place(msg.actor_id)
        nodes = self._nodes(node_id)
        ask = tm.ReadLog(name=msg.name, worker_id=worker_id, pid=msg.pid, task_id=msg.task_id, err=msg.err,
                         tail=msg.tail, offset=msg.offset, inode=msg.inode, in_task=msg.in_task,
                         max_bytes=min(msg.max_bytes, 4 << 20))
        got, why = await ask_nodes(nodes, ask, msg.timeout_s * SHARE)
        if not got:
            if len(why) == 1 and nodes:
                raise LookupError(why[0])
            raise LookupError("no node has that log: " + "; ".join(why) if why else "no live node")
        if len(got) > 1:
            raise ValueError(f"{len(got)} nodes have a log {msg.name or msg.pid!r}; name one with --node-id: "
                             + ", ".join(c.node_id.hex() for c in got))
        chunk: tm.LogChunk = got[0]
        why_not = self.refusal(p, chunk.job_id, f"log {chunk.name}")
        if why_not:
            raise Refused(why_not)
        return chunk

    async def stacks(self, p: Principal, msg: tm.DumpStacks) -> tm.Stacks:
        node_id, worker_id = msg.node_id, msg.worker_id
        if msg.actor_id:
            entry = self.head.actors.get(msg.actor_id)
            if entry is None or not entry.worker_id:
                raise LookupError(f"actor {msg.actor_id.hex()} is not running on a worker now")
            node_id, worker_id = entry.node_id, entry.worker_id
        nodes = self._nodes(node_id)
        ask = tm.DumpStacks(pid=msg.pid, worker_id=worker_id, native=msg.native, method=msg.method,
                            timeout_s=msg.timeout_s * SHARE)
        got, why = await ask_nodes(nodes, ask, msg.timeout_s * SHARE)
        targeted = bool(msg.pid or worker_id)
        if targeted and not got:
            raise LookupError("; ".join(why) or "no live node")
        stacks = [s for a in got for s in a.stacks]
        allowed = [s for s in stacks if not self.refusal(p, s.job_id, "")]
        if targeted and stacks and not allowed:
            raise Refused(self.refusal(p, stacks[0].job_id, f"the stack of pid {stacks[0].pid}"))
        return tm.Stacks(stacks=allowed, missing=[] if targeted else why)

    async def store(self, p: Principal, msg: tm.ListStore) -> tm.StoreReports:
        got, missing = await ask_nodes(self._nodes(b""), tm.ListStore(), msg.timeout_s * SHARE)
        return tm.StoreReports(nodes=[r for a in got for r in a.nodes], missing=missing)
