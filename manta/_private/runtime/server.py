"""Messages that arrive at a driver or worker, and which room handles each.

Every connection of the runtime (its listener, the head, the agent, peers
it dialled) delivers here, on the I/O thread. Answers to its own requests
never come here: the connection matches those to the waiting callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from manta._private.auth import policy
from manta._private.auth.handshake import rebind_proof
from manta._private.protocol import auth_messages as am
from manta._private.protocol import messages as m
from manta._private.protocol import state_messages as sm
from manta._private.protocol.identity import Principal, Role
from manta._private.runtime.introspect import reference_records
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime

log = logging.getLogger(__name__)


class Inbound:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.refusals = policy.Refusals(log)
        self._handlers: dict[type, Callable[[Connection, Any], None]] = {
            m.PushTask: self._push_task,
            m.GetObject: self._get_object,
            m.AddBorrow: self._add_borrow,
            m.RemoveBorrow: self._remove_borrow,
            m.CancelTask: self._cancel_task,
            m.LogLines: self._log_lines,
            m.NodeDied: self._node_died,
            m.LeaseKilled: lambda conn, msg: rt.tasks.lease_killed(conn, msg),
            m.GeneratorItem: lambda conn, msg: rt.streams.on_item(conn, msg),
            m.ReclaimLease: lambda conn, msg: rt.tasks.lease_reclaimed(conn, msg),
            m.GeneratorConsumed: self._consumed,
            sm.GetReferences: self._references,
            am.AssumeJob: self._assume_job,
        }

    def handle(self, conn: Connection, msg: Any) -> None:
        if type(msg) is m.PushTask:  # by far the most common, in a worker
            executor = self.rt.executor
            if executor is not None and self._may_push(conn.principal, msg.spec):
                executor.on_push(conn, msg)
                return
        why = policy.refusal(policy.RUNTIME, conn.principal, msg) or self._job_refusal(conn.principal, msg)
        if why:
            self.refusals.answer(conn, msg, why)
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            log.warning("unexpected %s from %s", type(msg).__name__, conn.name)
            return
        handler(conn, msg)

    def _may_push(self, p: Principal, spec: m.TaskSpec) -> bool:
        """A worker runs its own job's tasks, and calls to its actor from whoever may
        act in its namespace; a spare (no job yet) runs only what the cluster sends."""
        if p.role is Role.CLUSTER:
            return True
        if p.role < Role.SUBMIT:
            return False
        job = self.rt.identity.principal.job_id if self.rt.identity.principal is not None else 0
        if p.job_id == job and job:
            return True
        return bool(job) and spec.actor_id is not None and not spec.actor_creation and p.in_namespace(self.rt.namespace)

    def _job_refusal(self, p: Principal, msg: Any) -> str:
        if type(msg) is m.PushTask:
            return f"{p.describe()} may not run tasks in a worker of another job"
        if type(msg) is m.LogLines and p.role is not Role.CLUSTER and p.job_id != self.rt.job_id:
            return f"{p.describe()} may not write to the output of job {self.rt.job_id}"
        if type(msg) is m.CancelTask and p.role is not Role.CLUSTER and p.job_id != self.rt.job_id and (
            msg.force or not p.in_namespace(self.rt.namespace)
        ):
            # Another job may cancel only its own calls to an actor of its namespace, and never
            # by killing the worker (found by the fuzz run: any job could end any worker).
            return f"{p.describe()} may not cancel tasks of job {self.rt.job_id}"
        return ""

    def _assume_job(self, conn: Connection, msg: am.AssumeJob) -> None:
        """This spare worker is now its job's: it shows the job's pass from here on."""
        rt = self.rt
        rt.identity.assume(msg.credential)
        head = rt.head.conn if rt.head is not None else None
        if head is not None and not head.closed:
            ident = rt.identity
            head.request_cb(am.Rebind(
                pass_blob=ident.credential.pass_blob, pass_sig=ident.credential.pass_sig,
                proof=rebind_proof(ident, head.session_id),
            ), lambda reply: None if not isinstance(reply, Exception) else log.warning(
                "the head did not take this worker's job pass: %s", reply))
        conn.reply(msg, m.Ack())

    def _push_task(self, conn: Connection, msg: m.PushTask) -> None:
        executor = self.rt.executor
        if executor is None:
            conn.reply_error(msg, m.ErrorKind.SYSTEM, "this process does not run tasks")
            return
        executor.on_push(conn, msg)

    def _get_object(self, conn: Connection, msg: m.GetObject) -> None:
        why = self.rt.references.holders.read_refusal(conn.principal, msg.object_id, msg.cap)
        if why:
            self.refusals.answer(conn, msg, why)
            return
        self.rt.objects.serve_get(conn, msg)

    def _remove_borrow(self, conn: Connection, msg: m.RemoveBorrow) -> None:
        why = self.rt.references.holders.unborrow_refusal(conn.principal, msg.object_ids, msg.borrower)
        if why:
            self.refusals.answer(conn, msg, why)
            return
        self.rt.references.remove_borrower(msg)

    def _add_borrow(self, conn: Connection, msg: m.AddBorrow) -> None:
        why = self.rt.references.holders.borrow_refusal(conn.principal, msg.object_ids, msg.caps, msg.borrower)
        if why:
            self.refusals.answer(conn, msg, why)
            return
        freed = self.rt.references.add_borrower(msg)
        if freed is not None:
            conn.reply_error(msg, m.ErrorKind.FREED, freed.hex())
        else:
            conn.reply(msg, m.Ack())

    def _references(self, conn: Connection, msg: sm.GetReferences) -> None:
        rt = self.rt
        with rt.lock:
            refs = reference_records(rt.refs, rt.tasks.by_return.get)
        conn.reply(msg, sm.References(refs=refs))

    def _consumed(self, conn: Connection, msg: m.GeneratorConsumed) -> None:
        executor = self.rt.executor
        if executor is not None:
            executor.consumed(msg)

    def _cancel_task(self, conn: Connection, msg: m.CancelTask) -> None:
        executor = self.rt.executor
        if executor is None:
            return
        if msg.recall:
            executor.recall(conn, msg.task_id)
        else:
            executor.cancel(msg.task_id, msg.force, msg.recursive, conn)

    def _log_lines(self, conn: Connection, msg: m.LogLines) -> None:
        if self.rt.on_log is not None:
            self.rt.on_log(msg)

    def _node_died(self, conn: Connection, msg: m.NodeDied) -> None:
        self.rt.tasks.node_died(msg.node_id)
        self.rt.peers.node_died(msg.node_id, msg.reason)
