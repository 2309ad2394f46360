"""The node agent's answers to the state API: its workers and drivers
(from its `Roster`), the references each of them holds (asked of them
now), and the runtime environments its workers run in.

A process that does not answer in time is named in the answer's `missing`
instead of holding it up; one that exits while asked held nothing worth
listing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from manta._private.node.stats import TransferCounters, node_stats
from manta._private.protocol import metrics_messages as mm
from manta._private.protocol import state_messages as sm
from manta._private.transport.connection import Connection, ConnectionLost

if TYPE_CHECKING:
    from manta._private.node.agent import NodeAgent
    from manta._private.node.roster import Proc

HANDLED = (sm.ListWorkers, sm.ListObjects, sm.ListRuntimeEnvs, sm.RuntimeEnvSetUp, mm.GetNodeStats)


class NodeStateAnswers:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        # Queries under way (a task nobody else refers to could be collected).
        self._tasks: set[asyncio.Task[None]] = set()
        # Object bytes moved to and from other nodes, for GetNodeStats.
        self.transfers = TransferCounters()

    @property
    def ip(self) -> str:
        return self.agent.node_ip or "127.0.0.1"

    def handle(self, conn: Connection, msg: Any) -> None:
        agent = self.agent
        t = type(msg)
        if t is sm.ListWorkers:
            conn.reply(msg, sm.WorkerList(workers=agent.roster.records(agent.node_id, self.ip)))
        elif t is sm.ListRuntimeEnvs:
            conn.reply(msg, sm.RuntimeEnvList(envs=agent.roster.runtime_envs(agent.node_id)))
        elif t is mm.GetNodeStats:
            conn.reply(msg, node_stats(agent, self.transfers))
        elif t is sm.RuntimeEnvSetUp:
            agent.roster.env_set_up(msg.worker_id, msg.ms, msg.error)
        elif t is sm.ListObjects:
            task = asyncio.get_running_loop().create_task(self._objects(conn, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _objects(self, conn: Connection, msg: sm.ListObjects) -> None:
        agent = self.agent
        procs = agent.roster.clients()
        answers = await asyncio.gather(*(self._ask(p, msg.timeout_s) for p in procs), return_exceptions=True)
        processes: list[sm.ProcessObjects] = []
        missing: list[str] = []
        for p, answer in zip(procs, answers):
            if isinstance(answer, ConnectionLost):
                continue  # it exited meanwhile
            if isinstance(answer, BaseException):
                why = "no answer" if isinstance(answer, TimeoutError) else str(answer) or type(answer).__name__
                missing.append(f"{'driver' if p.driver else 'worker'} pid {p.pid} on node "
                               f"{agent.node_id.hex()}: {why} in {msg.timeout_s:g} s")
                continue
            processes.append(sm.ProcessObjects(
                pid=p.pid, driver=p.driver, node_id=agent.node_id, ip=self.ip,
                refs=self._with_pins(p, answer.refs),
            ))
        store = agent.store
        stored = {oid: o.size for oid, o in store.objects.items() if o.sealed}
        stored.update(store.spilled)
        if not conn.closed:
            conn.reply(msg, sm.ObjectList(processes=processes, stored=stored, missing=missing))

    async def _ask(self, p: Proc, timeout: float) -> Any:
        client = p.client
        if client is None or client.closed:
            raise ConnectionLost("gone")
        return await asyncio.wait_for(client.request(sm.GetReferences()), timeout)

    def _with_pins(self, p: Proc, refs: list[sm.RefRecord]) -> list[sm.RefRecord]:
        """A process reading an object from the store pins it there while
        the value lives (or a get is under way): Ray's PINNED_IN_MEMORY.
        Objects it pins without a ref of its own (a task's arguments) are
        listed too, as Ray lists them."""
        pins = self.agent.store.client_pins.get(id(p.client))
        if not pins:
            return refs
        held = {oid for oid, n in pins.items() if n > 0}
        out = [
            replace(r, reference_type="PINNED_IN_MEMORY")
            if r.object_id in held and r.reference_type != "ACTOR_HANDLE" else r
            for r in refs
        ]
        listed = {r.object_id for r in refs}
        node_id = self.agent.node_id
        out += [
            sm.RefRecord(object_id=oid, reference_type="PINNED_IN_MEMORY", task_status="NIL", in_store=True,
                         node_id=node_id)
            for oid in sorted(held - listed)
        ]
        return out
