"""Actor calls: creating actors, sending them calls, and their handles' lifetimes.

Each actor this process calls has an `ActorQueue` (sans-IO) deciding order,
epochs and retries, and a lock held around every use of it. A call made on
a user thread while nothing else is in flight goes straight to the actor's
socket from that thread (skipping two thread hand-offs); everything else is
carried out on the I/O thread, in order.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.runtime import actor_queue as aq
from manta._private.runtime import story
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.serialization import serialize, serialize_error
from manta._private.runtime.submission import should_retry
from manta._private.runtime.tasks import Task
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime

_NO_VALUE = serialize(None).to_bytes()  # an actor hold's value: nobody reads it


@dataclass(eq=False)
class ActorClient:
    queue: aq.ActorQueue
    # Reentrant: carrying out a command may answer a call of the same actor.
    lock: threading.RLock = field(default_factory=threading.RLock)
    conn: Connection | None = None
    # Commands not carried out yet, in order; drained by whoever started.
    backlog: collections.deque[Any] = field(default_factory=collections.deque)
    executing: bool = False
    # Calls failed by the queue, failed on the I/O thread once the lock is
    # released: a caller woken by one must not then wait for the lock.
    results: collections.deque[Any] = field(default_factory=collections.deque)
    # Calls a user thread handed to the I/O thread that it has not taken yet:
    # while any are, a later call may not overtake them on the direct path.
    posted: int = 0


class ActorCalls:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.clients: dict[bytes, ActorClient] = {}
        self._run: dict[type, Callable[[ActorClient, Any], None]] = {
            aq.Locate: self._locate,
            aq.Connect: self._connect,
            aq.Push: self._push,
            aq.SendCancel: self._send_cancel,
            aq.Fail: lambda client, c: client.results.append(c),
            aq.AskFate: self._ask_fate,
            aq.Release: self._release,
        }

    def client(self, actor_id: bytes) -> ActorClient:
        # Any thread: setdefault is atomic, so both threads see one client.
        return self.clients.get(actor_id) or self.clients.setdefault(
            actor_id, ActorClient(aq.ActorQueue(actor_id, self.rt.log))
        )

    # -- creating (caller's thread) -----------------------------------------

    def create(self, spec: m.ActorSpec, pinned: list[bytes]) -> m.ActorRegistered:
        rt = self.rt
        reply: m.ActorRegistered = rt.call_head(m.CreateActor(spec=spec))

        def release(_: Any = None) -> None:
            rt.references.run_commands(rt.references.unpin(pinned))

        if not reply.existing:
            # Creation arguments stay pinned until the actor has started or died.
            rt.post(rt.ask_head, m.WaitActor(actor_id=spec.actor_id, known_epoch=0), release)
        else:
            rt.post(release)
        self.client(reply.actor_id)
        return reply

    # -- calls --------------------------------------------------------------

    def submit(
        self,
        actor_id: bytes,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        max_task_retries: int,
        name: str,
        retry_exceptions: bool | tuple[type, ...] = False,
        concurrency_group: str = "",
        backpressure: int = -1,
    ) -> list[ObjectRef]:
        rt = self.rt
        task, refs = rt.tasks.new_task(
            name, args, kwargs, num_returns, actor_id=actor_id, method=method, retries=max_task_retries,
            retry_exceptions=retry_exceptions, concurrency_group=concurrency_group, backpressure=backpressure,
        )
        for rid in task.return_ids:
            rt.tasks.by_return[rid] = task
        spec_args = task.spec.args
        task.resolved = not spec_args or all(a.object_id is None for a in spec_args)
        client = self.clients.get(actor_id) or self.client(actor_id)
        if threading.get_ident() != rt.io.ident:
            with client.lock:
                conn = client.conn
                pushed = None
                if task.resolved and not client.posted and conn is not None:
                    pushed = client.queue.try_push(task)
                if pushed is None:
                    client.posted += 1
            if pushed is not None:
                # Fast path for a caller waiting on each call: straight from
                # this thread to the actor's socket (with calls in flight the
                # I/O thread's batched writes are cheaper: a socket write that
                # wakes the peer costs ~30 us here). Written outside the lock,
                # so that the answer, which may come back at once, never waits
                # for it; a later call sees this one in flight and goes
                # through the I/O thread, behind it.
                assert conn is not None
                if not conn.request_cb_threadsafe(m.PushTask(spec=task.spec), partial(self._on_reply, client, task)):
                    rt.post(self._unsent, client, task)
                rt.log.append(pushed)
                return refs
            rt.post(self._submit_io, client, task, True)
            return refs
        self._submit_io(client, task, False)
        return refs

    def _submit_io(self, client: ActorClient, task: Task, posted: bool) -> None:
        with client.lock:
            if posted:
                client.posted -= 1
            cmds = client.queue.submit(task)
            if len(cmds) == 1 and type(cmds[0]) is aq.Push and not client.executing:
                self._push(client, cmds[0])  # the common case, without the backlog
            else:
                self._execute(client, cmds)
        if client.results:
            self._deliver(client)
        if not task.resolved:
            self.rt.tasks.resolve(task, partial(self._resolved, client))

    def _execute(self, client: ActorClient, cmds: list[Any]) -> None:
        """I/O thread, with the lock held. A command whose effects reach this
        actor's queue again (a result that resolves a later call's argument)
        queues what that returns behind the rest: pushes keep their order."""
        backlog = client.backlog
        backlog.extend(cmds)
        if client.executing:
            return
        client.executing = True
        run = self._run
        try:
            while backlog:
                c = backlog.popleft()
                run[type(c)](client, c)
        finally:
            client.executing = False

    def _deliver(self, client: ActorClient) -> None:
        """I/O thread, lock not held: the failures the queue decided on, in order."""
        results = client.results
        while results:
            c = results.popleft()
            self.rt.tasks.fail(c.task, serialize_error(c.error).to_bytes())

    def _resolved(self, client: ActorClient, task: Task) -> None:
        with client.lock:
            self._execute(client, client.queue.resolved(task))
        self._deliver(client)

    def _on_reply(self, client: ActorClient, task: Task, reply: Any) -> None:
        if type(reply) is m.TaskDone:
            # The common case, without the lock (see ActorQueue.replied): a
            # caller submitting its next call must not wait for this one's
            # answer, nor this answer for the caller's submission.
            release = client.queue.replied(task, reply.error is not None)
            if reply.error is not None and self._retry_on_error(client, task, reply.error):
                return
            self.rt.tasks.complete(task, reply)
            if release:
                self._release(client, aq.Release())
            return
        with client.lock:
            broken = client.conn is not None and client.conn.closed
            if broken:
                client.conn = None
            self._execute(client, client.queue.lost(task, reply, broken or client.conn is None))
        self._deliver(client)

    def _retry_on_error(self, client: ActorClient, task: Task, error: bytes) -> bool:
        """I/O thread: the call raised. One of its retry_exceptions, with
        retries left: it is sent again (after the calls already sent), from
        the same budget as retries after actor restarts."""
        if not (task.may_retry_on_error() and should_retry(task, error)):
            return False
        task.next_attempt()
        self.rt.log.record(task.task_id, story.RETRIED, self.rt.log.stimulus(), "it raised one of its retry_exceptions")
        with client.lock:
            self._execute(client, client.queue.retry(task))
        return True

    def cancel(self, task: Task, recursive: bool) -> None:
        """I/O thread: `task` is an actor call being cancelled."""
        assert task.spec.actor_id is not None
        client = self.client(task.spec.actor_id)
        with client.lock:
            self._execute(client, client.queue.cancel(task, recursive))
        self._deliver(client)

    # -- carrying out the queue's commands (I/O thread, lock held) ------------

    def _locate(self, client: ActorClient, c: aq.Locate) -> None:
        msg = m.WaitActor(actor_id=client.queue.actor_id, known_epoch=c.known_epoch)
        self.rt.ask_head(msg, partial(self._located, client))

    def _located(self, client: ActorClient, reply: Any) -> None:
        with client.lock:
            self._execute(client, client.queue.located(reply))
        self._deliver(client)

    def _connect(self, client: ActorClient, c: aq.Connect) -> None:
        if c.node_id:
            self.rt.peers.peer_nodes[c.address] = c.node_id
        self.rt.peers.with_peer(c.address, partial(self._connected, client))

    def _connected(self, client: ActorClient, conn: Any) -> None:
        with client.lock:
            if isinstance(conn, BaseException):
                self._execute(client, client.queue.connect_failed())
            else:
                client.conn = conn
                self._execute(client, client.queue.connected())
        self._deliver(client)

    def _push(self, client: ActorClient, c: aq.Push) -> None:
        task = c.task
        conn = client.conn
        if conn is None or conn.closed:
            client.conn = None
            self._execute(client, client.queue.unsent(task))
            return
        conn.request_cb(m.PushTask(spec=task.spec), partial(self._on_reply, client, task))

    def _unsent(self, client: ActorClient, task: Task) -> None:
        """I/O thread: a call a user thread could not write (the link had closed)."""
        with client.lock:
            client.conn = None
            self._execute(client, client.queue.unsent(task))
        self._deliver(client)

    def _send_cancel(self, client: ActorClient, c: aq.SendCancel) -> None:
        if client.conn is not None:
            client.conn.send(m.CancelTask(task_id=c.task.task_id, force=False, recursive=c.recursive))

    def _ask_fate(self, client: ActorClient, c: aq.AskFate) -> None:
        """Asks the head whether the actor is coming back (ActorUnavailableError,
        as in Ray) or is dead for good (ActorDiedError, with the head's cause)."""
        rt = self.rt
        aid = client.queue.actor_id

        def fail(state: Any) -> None:
            rt.tasks.fail(c.task, serialize_error(aq.fate_error(c.task, aid, c.error, state)).to_bytes())

        def on_now(state: Any) -> None:
            if isinstance(state, BaseException) or state.restartable or state.state is m.ActorStatus.DEAD:
                fail(state)
            else:
                # The head has not seen the worker go yet: wait for its verdict.
                rt.ask_head(m.WaitActor(actor_id=aid, known_epoch=c.epoch), fail)

        rt.ask_head(m.WaitActor(actor_id=aid, known_epoch=c.epoch, now=True), on_now)

    def _release(self, client: ActorClient, c: aq.Release) -> None:
        aid = client.queue.actor_id
        self.rt.send_head(m.ReleaseActor(actor_id=aid))

    # -- handles ----------------------------------------------------------

    def hold(self, actor_id: bytes) -> ObjectRef:
        """A ref standing for this process's hold on an actor it created. Its
        handles carry it, so they are counted, pinned in flight and borrowed
        by other processes exactly as refs are; when the last goes, so does
        the actor (after the calls sent before)."""
        rt = self.rt
        oid = ids.object_id(rt.ids.next(), 0)
        with rt.lock:
            rt.refs.add_owned(oid)
            rt.refs.set_ready(oid, _NO_VALUE)
            rt.refs.actor_holds[oid] = actor_id
        return ObjectRef(oid, rt.address, rt)

    def release(self, actor_id: bytes) -> None:
        """I/O thread: the actor's last hold is gone."""
        client = self.clients.get(actor_id)
        if client is None:
            self.rt.send_head(m.ReleaseActor(actor_id=actor_id))
            return
        with client.lock:
            self._execute(client, client.queue.release())
        self._deliver(client)

    # -- the head's actor table ---------------------------------------------

    def kill(self, actor_id: bytes, no_restart: bool) -> None:
        self.rt.call_head(m.KillActor(actor_id=actor_id, no_restart=no_restart))

    def get_named(self, name: str, namespace: str) -> m.ActorState:
        return self.rt.call_head(m.GetNamedActor(name=name, namespace=namespace))  # type: ignore[no-any-return]
