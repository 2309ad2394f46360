"""Local mode's actors: each one an instance in the driver, with the head's lifecycle.

An actor's state moves as the head's `ActorEntry` moves it (created, killed,
restarted within `max_restarts`, dead for good), names are kept per
namespace as the head keeps them, and callers are told what the cluster
tells them, in its words (`control.actors`, `actor_queue.fate_error`). Its
calls run where its runner says: inline for a sync actor (one at a time, so
a threaded actor's calls run one after another too), on its own loop for an
async one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private import ids
from manta._private.control import actors as texts
from manta._private.control.actors import ALIVE, DEAD, ActorEntry
from manta._private.local.running import STOPS_THE_PROGRAM, InlineRunner, LoopRunner, Runner
from manta._private.local.tasks import Deferred, DependencyFailed, Failure, Target
from manta._private.protocol import messages as m
from manta._private.runtime.actor_queue import fate_error
from manta._private.runtime.concurrency import check_group_sizes
from manta._private.runtime.executor import actor_method
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.objects import as_raised
from manta._private.runtime.serialization import deserialize, serialize, serialize_error
from manta._private.runtime.tasks import Task

if TYPE_CHECKING:
    from manta._private.local.runtime import LocalRuntime

_NO_VALUE = serialize(None).to_bytes()  # an actor hold's value: nobody reads it


@dataclass(eq=False)
class LocalActor:
    """One actor; also what `executor` shows while one of its calls runs."""

    entry: ActorEntry
    cls: type
    runner: Runner
    # Its creation's ref arguments, kept for restarts until it is dead.
    pinned: list[bytes]
    actor: Any = None
    # Work that goes on after the call that started it: deferred calls, and
    # generators not at their end. Its last handle's going waits for these.
    deferred: set[Deferred] = field(default_factory=set)
    generators: int = 0
    released: bool = False

    @property
    def actor_id(self) -> bytes:
        return self.entry.actor_id

    @property
    def actor_class_name(self) -> str:
        return self.entry.spec.class_name

    @property
    def actor_name(self) -> str:
        return self.entry.spec.name

    @property
    def restart_count(self) -> int:
        return self.entry.restarts

    @property
    def actor_gpu_ids(self) -> list[int]:
        return []

    @property
    def resources(self) -> dict[str, float]:
        return self.entry.spec.creation.resources

    def is_async_actor(self) -> bool:
        return self.entry.spec.creation.is_async_actor


class LocalActors:
    def __init__(self, rt: LocalRuntime) -> None:
        self.rt = rt
        self.actors: dict[bytes, LocalActor] = {}
        self.named: dict[tuple[str, str], bytes] = {}

    # -- creating -----------------------------------------------------------

    def create(self, spec: m.ActorSpec, pinned: list[bytes]) -> m.ActorRegistered:
        creation = spec.creation
        self.rt.refuse_working_dir(creation.env_vars)
        if spec.name:
            key = (spec.namespace, spec.name)
            existing = self.actors.get(self.named.get(key, b""))
            if existing is not None and existing.entry.state is not DEAD:
                self.rt.objects.unpin(pinned)
                if spec.get_if_exists:
                    return m.ActorRegistered(
                        actor_id=existing.actor_id, existing=True, class_name=existing.actor_class_name,
                        creation_fn_id=existing.entry.spec.creation.fn_id,
                    )
                raise ValueError(texts.name_taken(spec.name, spec.namespace))
            self.named[key] = spec.actor_id
        cls = self.rt.load_function(creation.fn_id)
        actor = self.actors[spec.actor_id] = LocalActor(ActorEntry(spec), cls, _runner(spec), pinned)
        self._construct(actor)
        return m.ActorRegistered(
            actor_id=spec.actor_id, existing=False, class_name=spec.class_name, creation_fn_id=creation.fn_id,
        )

    def _construct(self, actor: LocalActor) -> None:
        """Runs __init__ (again, on a restart): the actor is alive, or dead of its error."""
        spec = actor.entry.spec.creation
        tasks = self.rt.tasks
        task = Task(spec.task_id, spec, [], [])
        failure: Failure | None = None
        try:
            check_group_sizes(spec.concurrency_groups)
            actor.actor = tasks.call(task, Target(actor.runner, lambda: actor.cls, actor)).result()
        except DependencyFailed as d:
            failure = tasks.error(spec, as_raised(deserialize(d.data)[0]))
        except STOPS_THE_PROGRAM:
            raise
        except BaseException as e:  # noqa: BLE001 - the creation task's error
            failure = tasks.error(spec, e)
        if failure is None:
            actor.entry.created(self.rt.address, self.rt.worker_id)
            return
        actor.entry.no_restart = True
        self._dead(actor, texts.creation_failed(actor.actor_class_name, failure.text))

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
        tasks = self.rt.tasks
        task, refs = tasks.new_task(
            name, args, kwargs, num_returns, max_task_retries, retry_exceptions,
            actor_id=actor_id, method=method, concurrency_group=concurrency_group, backpressure=backpressure,
        )
        actor = self.actors.get(actor_id)
        if actor is None or actor.entry.state is DEAD:
            cause = texts.NO_SUCH_ACTOR if actor is None else actor.entry.death_cause
            error = exc.ActorDiedError(error_msg=cause, actor_id=actor_id.hex())
            tasks.fail(task, Failure(serialize_error(error).to_bytes()))
        else:
            tasks.start(task, Target(actor.runner, lambda: actor_method(actor.actor, method), actor))
        return refs

    def fate(self, task: Task, actor: LocalActor, error: BaseException) -> Failure:
        """What a call whose actor ended under it fails with (as the cluster says it)."""
        err = fate_error(task, actor.actor_id, error, actor.entry)
        return Failure(serialize_error(err).to_bytes())

    # -- handles and names --------------------------------------------------

    def hold(self, actor_id: bytes) -> ObjectRef:
        """The ref its creator's handles carry: when the last goes, so does the actor."""
        objects = self.rt.objects
        oid = ids.object_id(self.rt.ids.next(), 0)
        with objects.lock:
            objects.refs.add_owned(oid)
            objects.refs.set_ready(oid, _NO_VALUE)
            objects.refs.actor_holds[oid] = actor_id
        return ObjectRef(oid, self.rt.address, self.rt)

    def release(self, actor_id: bytes) -> None:
        """Its last handle is gone: it ends once what its calls started is done
        (as in the cluster, after the calls sent before)."""
        actor = self.actors.get(actor_id)
        if actor is not None and not actor.entry.spec.detached:
            actor.released = True
            self.idle(actor)

    def idle(self, actor: LocalActor) -> None:
        """Some work of the actor ended: a released actor with none left ends."""
        if actor.released and not actor.deferred and not actor.generators and actor.entry.state is ALIVE:
            actor.entry.no_restart = True
            self._dead(actor, texts.OUT_OF_SCOPE)

    def get_named(self, name: str, namespace: str) -> m.ActorState:
        actor = self.actors.get(self.named.get((namespace, name), b""))
        if actor is None or actor.entry.state is DEAD:
            raise ValueError(texts.no_named_actor(name, namespace))
        entry = actor.entry
        return m.ActorState(
            actor_id=actor.actor_id, state=entry.state, address=entry.address, epoch=entry.epoch,
            death_cause=entry.death_cause, class_name=actor.actor_class_name, fn_id=entry.spec.creation.fn_id,
            is_async=actor.is_async_actor(), node_id=self.rt.node_id,
        )

    def list(self) -> m.ActorList:
        return m.ActorList(actors=[
            m.ActorInfo(
                actor_id=a.actor_id, class_name=a.entry.spec.qualname or a.actor_class_name, state=a.entry.state,
                job_id=self.rt.job_id,
                name=a.actor_name, namespace=a.entry.spec.namespace, node_id=self.rt.node_id,
                pid=os.getpid() if a.entry.state is ALIVE else 0, death_cause=a.entry.death_cause,
                detached=a.entry.spec.detached, restarts=a.entry.restarts, resources=dict(a.resources),
            )
            for a in self.actors.values()
        ])

    # -- ending -------------------------------------------------------------

    def kill(self, actor_id: bytes, no_restart: bool) -> None:
        actor = self.actors.get(actor_id)
        if actor is None:
            raise ValueError(f"actor {actor_id.hex()} does not exist")
        if no_restart:
            actor.entry.no_restart = True
        self.ended(actor, texts.KILLED, may_restart=True)

    def ended(self, actor: LocalActor, cause: str, may_restart: bool) -> bool:
        """The actor's "worker" is gone (killed, exited, crashed): it restarts
        if it may and has restarts left (returns True), or is dead."""
        if actor.entry.state is DEAD:
            return False
        if not may_restart:
            actor.entry.no_restart = True
        restarting = actor.entry.died(cause)
        actor.actor = None
        # Calls it was running fail as the cluster fails them: unavailable
        # while it restarts, dead once it is.
        self._fail_deferred(actor, RuntimeError(cause))
        if not restarting:
            self._dead(actor, cause)
            return False
        actor.runner.stop()
        actor.runner = _runner(actor.entry.spec)
        self._construct(actor)
        return actor.entry.state is not DEAD

    def _dead(self, actor: LocalActor, cause: str) -> None:
        actor.entry.kill(cause)
        actor.actor = None
        self._fail_deferred(actor, RuntimeError(cause))
        actor.runner.stop()
        pinned, actor.pinned = actor.pinned, []
        self.rt.objects.unpin(pinned)

    def _fail_deferred(self, actor: LocalActor, error: BaseException) -> None:
        for d in list(actor.deferred):
            self.rt.tasks.abandon(d, self.fate(d.task, actor, error))

    def stop_all(self) -> None:
        for actor in self.actors.values():
            actor.runner.stop()
            actor.actor = None
        self.actors.clear()
        self.named.clear()


def _runner(spec: m.ActorSpec) -> Runner:
    creation = spec.creation
    if creation.is_async_actor:
        return LoopRunner(spec.class_name, creation.max_concurrency)
    return InlineRunner(actor=True)
