"""Local mode's tasks: a call is built as the cluster builds it (a TaskSpec,
its arguments serialized, its return refs owned here), then run at once.

What the cluster decides in the worker and the owner is decided here the
same way, with the same pieces: arguments decoded as a worker decodes them
(a failed ref argument fails the task without running it), the task's
exception wrapped as `RayTaskError` (so `get` raises it as its own type
too), `retry_exceptions` retried by `should_retry`, `sys.exit()` taken as the
death of the task's worker, and `num_returns` split by `split_returns`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private import ids
from manta._private.local.running import STOPS_THE_PROGRAM, InlineRunner, Runner
from manta._private.protocol import messages as m
from manta._private.runtime.context import ExitActor, TaskContext
from manta._private.runtime.errors import format_task_error
from manta._private.runtime.executor import not_a_generator, split_returns
from manta._private.runtime.generators import DynamicObjectRefGenerator
from manta._private.runtime.leasing import died_error
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.serialization import (
    SerializedValue,
    deserialize,
    serialize,
    serialize_checked,
    serialize_error,
)
from manta._private.runtime.submission import FORCE_CANCEL_OF_ACTOR_CALL, should_retry
from manta._private.runtime.tasks import Task

if TYPE_CHECKING:
    from manta._private.local.actors import LocalActor
    from manta._private.local.runtime import LocalRuntime


# Files of the frames that run a call here, which a worker's traceback does
# not show either.
_MACHINERY = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(concurrent.futures.__file__)))


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """`tb` from the first frame that is not local mode's own."""
    start = tb
    while start is not None and start.tb_frame.f_code.co_filename.startswith(_MACHINERY):
        start = start.tb_next
    return start or tb


class DependencyFailed(Exception):
    """A ref argument holds an error: the task fails with it, unrun."""

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(eq=False, slots=True)
class Target:
    """What a task runs: where (`runner`), which function (`resolve`, looked
    up at each attempt, so a missing method is the call's error), and for an
    actor's call, the actor."""

    runner: Runner
    resolve: Callable[[], Callable[..., Any]]
    actor: LocalActor | None = None


@dataclass(eq=False, slots=True)
class Failure:
    """A run that failed: the error its refs hold, and what it was."""

    data: bytes
    text: str = ""
    traceback: TracebackType | None = None
    # The actor ended (exit_actor(), sys.exit()): its state says how.
    actor_ended: bool = False


@dataclass(eq=False)
class Deferred:
    """A call started on an async actor's loop that its caller did not wait for."""

    task: Task
    target: Target
    fut: concurrent.futures.Future[Any]
    done: threading.Event = field(default_factory=threading.Event)


class LocalTasks:
    def __init__(self, rt: LocalRuntime) -> None:
        self.rt = rt
        self.objects = rt.objects
        self.inline = InlineRunner(actor=False)
        # Deferred calls not finished yet, by return id (cancel() finds them here).
        self.deferred: dict[bytes, Deferred] = {}

    # -- building tasks ---------------------------------------------------

    def prepare_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
    ) -> tuple[list[m.Arg], list[str], list[bytes]]:
        """Arguments as a TaskSpec carries them, and the refs pinned for it."""
        out: list[m.Arg] = []
        pinned: list[bytes] = []
        refs = self.objects.refs
        values = [*args, *kwargs.values()]
        for i, value in enumerate(values):
            if isinstance(value, ObjectRef):
                arg_refs = [value]
                out.append(m.Arg(object_id=value._id, owner=value._owner))
            else:
                label = f"argument {i}" if i < len(args) else f"keyword argument {list(kwargs)[i - len(args)]!r}"
                sv = serialize_checked(value, f"{label} of {name}() ({type(value).__name__})")
                arg_refs = sv.contained
                out.append(m.Arg(data=sv.to_bytes()))
            with self.objects.lock:
                for r in arg_refs:
                    refs.pin(r._id, r._owner)
                    pinned.append(r._id)
        return out, list(kwargs), pinned

    def load_args(self, spec: m.TaskSpec) -> tuple[list[Any], dict[str, Any]]:
        """The arguments as the function sees them: copies, with top-level refs
        replaced by their values. Raises DependencyFailed."""
        objects = self.objects
        values: list[Any] = []
        for arg in spec.args:
            if arg.data is not None:
                values.append(deserialize(arg.data)[0])
                continue
            assert arg.object_id is not None
            ref = ObjectRef(arg.object_id, arg.owner, None)  # uncounted: the spec pins it
            objects.ready([ref], 1, None)
            e = objects.refs.get(arg.object_id)
            if e is None or e.data is None:
                raise DependencyFailed(serialize_error(exc.ReferenceCountingAssertionError(ref.hex())).to_bytes())
            if e.is_error:
                raise DependencyFailed(e.data)
            values.append(deserialize(e.data)[0])
        n = len(spec.kwarg_names)
        if n:
            return values[:-n], dict(zip(spec.kwarg_names, values[-n:]))
        return values, {}

    def new_task(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        retries: int,
        retry_exceptions: bool | tuple[type, ...],
        **spec_fields: Any,
    ) -> tuple[Task, list[ObjectRef]]:
        rt = self.rt
        spec_args, kwnames, pinned = self.prepare_args(args, kwargs, name)
        task_id = rt.ids.next()
        actor_call = spec_fields.get("actor_id") is not None
        # As in the cluster: a generator has one id (its end), an actor's
        # call at least one (its error goes somewhere).
        n = 1 if num_returns < 0 else max(num_returns, 1) if actor_call else num_returns
        spec = m.TaskSpec(
            task_id=task_id, job_id=rt.job_id, name=name, fn_id=spec_fields.pop("fn_id", b""), args=spec_args,
            kwarg_names=kwnames, num_returns=num_returns, owner=rt.address,
            resources=spec_fields.pop("resources", {}), namespace=rt.namespace, driver=rt.driver_address,
            **spec_fields,
        )
        refs = [self.objects.owned_ref(rid) for rid in ids.return_ids(task_id, n)]
        return Task(task_id, spec, [r._id for r in refs], pinned, retries, retry_exceptions), refs

    def submit_task(
        self,
        *,
        fn_id: bytes,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: bool | tuple[type, ...],
        env_vars: dict[str, str],
        placement: m.Placement | None = None,
        capture: tuple[bytes, int] = (b"", 0),
        backpressure: int = -1,
    ) -> list[ObjectRef]:
        self.rt.refuse_working_dir(env_vars)
        task, refs = self.new_task(
            name, args, kwargs, num_returns, max_retries, retry_exceptions,
            fn_id=fn_id, resources=resources, env_vars=env_vars, backpressure=backpressure,
        )
        self.start(task, Target(self.inline, lambda: self.rt.load_function(fn_id)))
        return refs

    # -- running ------------------------------------------------------------

    def context(self, spec: m.TaskSpec, actor: LocalActor | None) -> TaskContext:
        method = actor is not None and not spec.actor_creation
        resources = actor.resources if actor is not None else spec.resources
        return TaskContext(
            spec.task_id, spec.name, spec.actor_id, dict(resources), spec.attempt,
            actor.restart_count if actor is not None else 0, False, threading.get_ident(),
            actor.actor_class_name if method and actor is not None else spec.name,
            "", spec.job_id, [], None, None, spec.actor_creation, spec,
        )

    def call(self, task: Task, target: Target) -> concurrent.futures.Future[Any]:
        """Starts one attempt; its future holds what the function returned or raised."""
        spec = task.spec
        args, kwargs = self.load_args(spec)
        resolve = target.resolve

        def run(*a: Any, **k: Any) -> Any:
            return resolve()(*a, **k)

        # An actor's calls have the env_vars it was created with (its worker's).
        env = spec.env_vars if target.actor is None else target.actor.entry.spec.creation.env_vars
        return target.runner.submit(self.context(spec, target.actor), env, run, args, kwargs)

    def start(self, task: Task, target: Target) -> None:
        """Runs the task: now, or (an async actor called from inside an event
        loop) on its loop, finishing when it does."""
        try:
            fut = self.call(task, target)
        except DependencyFailed as d:
            self.fail(task, Failure(d.data))
            return
        if fut.done() or target.runner.may_wait():
            self.finish(task, target, fut)
            return
        deferred = Deferred(task, target, fut)
        with self.objects.lock:
            for rid in task.return_ids:
                self.deferred[rid] = deferred
                self.objects.producers[rid] = self._waiter(deferred)
        if target.actor is not None:
            target.actor.deferred.add(deferred)
        fut.add_done_callback(lambda _: self._deferred_done(deferred))

    def _deferred_done(self, d: Deferred) -> None:
        # On the actor's loop: the call ended.
        self._forget(d)
        if not d.task.done:
            self.finish(d.task, d.target, d.fut)
        d.done.set()

    def abandon(self, d: Deferred, failure: Failure) -> None:
        """A deferred call's actor ended under it: it fails, and is not waited for."""
        self._forget(d)
        self.fail(d.task, failure)
        d.done.set()

    def _forget(self, d: Deferred) -> None:
        with self.objects.lock:
            for rid in d.task.return_ids:
                self.deferred.pop(rid, None)
        actor = d.target.actor
        if actor is not None and d in actor.deferred:
            actor.deferred.discard(d)
            self.rt.actors.idle(actor)

    def _waiter(self, d: Deferred) -> Any:
        from manta._private.local.objects import Producer

        def finish(timeout: float | None) -> None:
            if d.target.runner.on_own_thread():
                raise RuntimeError(
                    f"local mode: get() of {d.task.spec.name}() inside the same async actor would wait for "
                    f"itself forever; use 'await ref' instead"
                )
            d.done.wait(timeout)

        return Producer(finish, background=True)

    def finish(self, task: Task, target: Target, fut: concurrent.futures.Future[Any]) -> None:
        """What an attempt's outcome means: results, an error, a retry, a dead actor."""
        spec = task.spec
        try:
            result = fut.result()
        except STOPS_THE_PROGRAM:
            raise
        except (asyncio.CancelledError, exc.TaskCancelledError):
            self.fail(task, Failure(serialize_error(exc.TaskCancelledError(spec.task_id.hex())).to_bytes()))
            return
        except ExitActor as e:
            assert target.actor is not None
            self.rt.actors.ended(target.actor, str(e), may_restart=False)
            self.fail(task, self.rt.actors.fate(task, target.actor, e))
            return
        except SystemExit as e:
            self._worker_exited(task, target, e)
            return
        except BaseException as e:  # noqa: BLE001 - the task's own error
            failure = self.error(spec, e)
            if task.may_retry_on_error() and should_retry(task, failure.data):
                task.next_attempt()
                self.start(task, target)
                return
            self.fail(task, failure)
            return
        if spec.num_returns < 0:
            self.rt.streams.open(task, target, result)
            return
        try:
            values = self._returns(spec, result)
        except Exception as e:
            self.fail(task, self.error(spec, e))
            return
        for rid, sv in zip(task.return_ids, values):
            self.objects.set_value(rid, sv)
        self.done(task)

    def _returns(self, spec: m.TaskSpec, result: Any) -> list[SerializedValue]:
        n = spec.num_returns
        values = [] if n == 0 else [result] if n == 1 else split_returns(spec, result)
        return [serialize_checked(v, f"the return value of {spec.name}()") for v in values]

    def _worker_exited(self, task: Task, target: Target, e: SystemExit) -> None:
        """sys.exit() in a task ends its worker, in the cluster: the task is
        retried as after a crash (max_retries), an actor restarts or dies."""
        why = RuntimeError(f"{task.spec.name}() called sys.exit({e.code})")
        actor = target.actor
        if actor is None:
            if task.retries_left != 0:
                task.next_attempt()
                self.start(task, target)
                return
            self.fail(task, Failure(serialize_error(died_error(task, why, False)).to_bytes()))
            return
        cause = f"The actor died unexpectedly: its worker process exited ({why})."
        restarted = self.rt.actors.ended(actor, cause, may_restart=True)
        if restarted and task.retries_left != 0:
            task.next_attempt()
            self.start(task, target)
            return
        self.fail(task, self.rt.actors.fate(task, actor, why))

    def error(self, spec: m.TaskSpec, e: BaseException) -> Failure:
        """The task's exception as its caller sees it (as a worker reports it)."""
        e = e.with_traceback(user_traceback(e.__traceback__))
        err = format_task_error(spec.name, e)
        if spec.actor_id is not None:
            err.actor_id = spec.actor_id.hex()
        return Failure(serialize_error(err).to_bytes(), str(err), e.__traceback__)

    def not_a_generator(self, spec: m.TaskSpec, value: Any) -> Failure:
        return self.error(spec, not_a_generator(spec, value))

    def fail(self, task: Task, failure: Failure) -> None:
        if task.done:
            return
        for rid in task.return_ids:
            self.objects.set_error(rid, failure.data, failure.traceback)
        self.done(task)

    def done(self, task: Task) -> None:
        task.done = True
        if not task.args_released:
            task.args_released = True
            self.objects.unpin(task.pinned)

    def complete_dynamic(self, task: Task, item_ids: list[bytes]) -> None:
        """A dynamic generator's end: a DynamicObjectRefGenerator of its items."""
        rt = self.rt
        with self.objects.lock:
            for oid in item_ids:
                e = self.objects.refs.get(oid)
                if e is not None:
                    e.local += 1  # the ObjectRef made below
        refs = [ObjectRef(oid, rt.address, rt) for oid in item_ids]
        self.objects.set_value(task.return_ids[0], serialize(DynamicObjectRefGenerator(refs)))
        del refs  # the items live on, held by the value
        self.done(task)

    # -- cancel -------------------------------------------------------------

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        """Only what has not finished can be cancelled: a deferred call or a
        streaming generator not run to its end (everything else already ran)."""
        d = self.deferred.get(ref._id)
        if d is not None:
            if force:
                raise ValueError(FORCE_CANCEL_OF_ACTOR_CALL)
            d.target.runner.cancel(d.fut)
            return
        self.rt.streams.cancel(ref._id, force)
