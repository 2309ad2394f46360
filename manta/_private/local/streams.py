"""Local mode's generator tasks.

A streaming generator (`num_returns="streaming"`, a generator's default)
runs one step each time its `ObjectRefGenerator` is asked for the next ref,
so items are made as they are consumed, in the consumer's thread (or on its
async actor's loop); getting the task's end ref runs it to its end. A
dynamic generator (`num_returns="dynamic"`) runs to its end at once, as in a
worker. The caller's side is the cluster's: the same `ObjectRefGenerator`
over the same `Stream` record, handing out refs with `take_next`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from manta import exceptions as exc
from manta._private import ids
from manta._private.local.objects import Producer
from manta._private.local.running import STOPS_THE_PROGRAM
from manta._private.local.tasks import Failure, Target
from manta._private.protocol import messages as m
from manta._private.runtime.context import ExitActor, TaskContext
from manta._private.runtime.generators import ObjectRefGenerator, Stream, take_next
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.serialization import serialize, serialize_checked, serialize_error
from manta._private.runtime.submission import should_retry
from manta._private.runtime.tasks import Task

if TYPE_CHECKING:
    from manta._private.local.runtime import LocalRuntime


@dataclass(eq=False)
class Running:
    """A generator task not at its end yet."""

    task: Task
    target: Target
    ctx: TaskContext
    gen: Any
    stream: Stream | None  # None: dynamic, its items kept for the end
    items: list[bytes]
    # A retry's generator starts over: the items its caller has are skipped.
    skip: int = 0


class LocalStreams:
    def __init__(self, rt: LocalRuntime) -> None:
        self.rt = rt
        self.objects = rt.objects
        self.running: dict[bytes, Running] = {}  # by task id

    def open(self, task: Task, target: Target, gen: Any) -> None:
        """A generator task's function has returned `gen`: run it as its num_returns says."""
        spec = task.spec
        tasks = self.rt.tasks
        if not (inspect.isgenerator(gen) or (inspect.isasyncgen(gen) and target.runner.runs_a_loop)):
            tasks.fail(task, tasks.not_a_generator(spec, gen))
            return
        streaming = spec.num_returns == m.STREAMING
        stream = Stream(task.task_id, task.return_ids[0], spec.backpressure) if streaming else None
        run = Running(task, target, tasks.context(spec, target.actor), gen, stream, [])
        self.running[task.task_id] = run
        if target.actor is not None:
            target.actor.generators += 1
        if stream is None:
            while task.task_id in self.running:
                self._step(run)
            return
        with self.objects.lock:
            self.objects.producers[stream.end_id] = Producer(lambda _: self._drain(run), background=False)

    def generator(self, end: ObjectRef) -> ObjectRefGenerator:
        run = self.running.get(ids.task_of(end._id))
        if run is None or run.stream is None:
            # It failed before it yielded (or is not a generator): its end says why.
            stream = Stream(ids.task_of(end._id), end._id, -1, ended=True)
        else:
            stream = run.stream
        return ObjectRefGenerator(end, self, stream)

    # -- ObjectRefGenerator's source --------------------------------------

    def next(self, stream: Stream, timeout: float | None) -> ObjectRef | None:
        while True:
            with self.objects.lock:
                taken = take_next(self.rt, stream)
            if taken is not None:
                ref, commands = taken
                self.objects.run_commands(commands)
                return ref
            run = self.running.get(stream.task_id)
            if run is None:  # its end is set, so take_next has an answer now
                stream.ended = True
                continue
            self._step(run)

    def ready(self, stream: Stream) -> bool:
        return True  # next() never waits: it runs the generator

    def close(self, stream: Stream) -> None:
        """The program dropped the generator: the task stops where it is (its
        items not handed out are let go, its end is None)."""
        if self.objects.closing:
            return
        self.objects.unpin(stream.items[stream.taken:])
        stream.taken = len(stream.items)
        run = self.running.pop(stream.task_id, None)
        if run is not None:
            self._end(run, None)

    def cancel(self, oid: bytes, force: bool) -> None:
        run = self.running.get(ids.task_of(oid))
        if run is None or oid != run.task.return_ids[0]:
            return  # finished: nothing to cancel
        if force and run.target.actor is not None:
            from manta._private.runtime.submission import FORCE_CANCEL_OF_ACTOR_CALL

            raise ValueError(FORCE_CANCEL_OF_ACTOR_CALL)
        self.running.pop(run.task.task_id, None)
        spec = run.task.spec
        self._end(run, Failure(serialize_error(exc.TaskCancelledError(spec.task_id.hex())).to_bytes()))

    # -- running the generator ----------------------------------------------

    def _drain(self, run: Running) -> None:
        while run.task.task_id in self.running:
            self._step(run)

    def _step(self, run: Running) -> None:
        """Runs the generator to its next item (stored as the next of its refs) or its end."""
        runner = run.target.runner
        spec = run.task.spec
        if runner.on_own_thread():
            raise RuntimeError(
                f"local mode: the generator {spec.name}() runs on its async actor's loop, and is being "
                f"consumed on that same loop without 'async for': it would wait for itself forever"
            )
        gen = run.gen
        step = gen.__anext__ if inspect.isasyncgen(gen) else gen.__next__
        fut = runner.submit(run.ctx, spec.env_vars, step, [], {})
        try:
            value = fut.result()
        except (StopIteration, StopAsyncIteration):
            self.running.pop(spec.task_id, None)
            self._end(run, None)
            return
        except STOPS_THE_PROGRAM:
            raise
        except ExitActor as e:
            actor = run.target.actor
            assert actor is not None
            self.running.pop(spec.task_id, None)
            self.rt.actors.ended(actor, str(e), may_restart=False)
            self._end(run, self.rt.actors.fate(run.task, actor, e))
            return
        except BaseException as e:  # noqa: BLE001 - the generator's error: its end holds it
            failure = self.rt.tasks.error(spec, e)
            if not self._retry(run, failure):
                self.running.pop(spec.task_id, None)
                self._end(run, failure)
            return
        if run.skip:
            run.skip -= 1
            return
        index = len(run.items)
        oid = ids.item_id(spec.task_id, index)
        try:
            sv = serialize_checked(value, f"the return value of {spec.name}()")
        except Exception as e:
            self.running.pop(spec.task_id, None)
            self._end(run, self.rt.tasks.error(spec, e))
            return
        objects = self.objects
        with objects.lock:
            # Owned, and held by the stream until handed out (as in the cluster).
            objects.refs.add_owned(oid, local=0)
            objects.refs.pin(oid, self.rt.address)
        objects.set_value(oid, sv)
        run.items.append(oid)
        if run.stream is not None:
            run.stream.items.append(oid)

    def _retry(self, run: Running, failure: Failure) -> bool:
        """retry_exceptions: the generator runs again from its start, its
        caller's items skipped (streaming) or dropped (dynamic), as in a worker."""
        task = run.task
        if not (task.may_retry_on_error() and should_retry(task, failure.data)):
            return False
        task.stream = run.stream
        task.next_attempt()
        if run.stream is None:
            self.objects.unpin(run.items)
            run.items = []
        tasks = self.rt.tasks
        try:
            gen = tasks.call(task, run.target).result()
        except Exception:  # noqa: BLE001 - the first attempt's error stands
            return False
        if not inspect.isgenerator(gen) and not inspect.isasyncgen(gen):
            return False
        run.gen, run.ctx, run.skip = gen, tasks.context(task.spec, run.target.actor), task.spec.stream_from
        return True

    def _end(self, run: Running, failure: Failure | None) -> None:
        task = run.task
        tasks = self.rt.tasks
        if failure is not None:
            if run.stream is None:
                self.objects.unpin(run.items)
            tasks.fail(task, failure)
        elif run.stream is None:
            tasks.complete_dynamic(task, run.items)
            self.objects.unpin(run.items)  # the end's value holds them now
        else:
            self.objects.set_value(task.return_ids[0], serialize(None))
            tasks.done(task)
        if run.stream is not None:
            run.stream.ended = True
        actor = run.target.actor
        if actor is not None:
            actor.generators -= 1
            self.rt.actors.idle(actor)
