"""Runs tasks and actor methods inside a worker process.

Plain tasks and sync actors run on the main thread, one at a time, in
arrival order (so calls from one caller keep their order). Threaded actors
(`max_concurrency > 1`) run calls on a thread pool; async actors run
coroutines on their own event loop, bounded by `max_concurrency`.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import io
import logging
import os
import queue
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from manta import exceptions as exc
from manta._private import ids
from manta._private.config import OMP_FROM_USER
from manta._private.protocol import messages as m
from manta._private.protocol.runtime_env import PY_MODULES_ENV, WORKING_DIR_ENV
from manta._private.runtime import story
from manta._private.runtime.concurrency import Lanes, check_group_sizes, method_groups, start_loop
from manta._private.runtime.context import ExitActor, TaskContext, current_task
from manta._private.runtime.errors import format_task_error
from manta._private.runtime.generators import Flow
from manta._private.runtime.objects import inline, inline_budget
from manta._private.runtime.packaging import set_up_packages
from manta._private.runtime.placement_group import PlacementGroup
from manta._private.runtime.serialization import deserialize, serialize_error
from manta._private.runtime.story import Rec
from manta._private.scheduling.bundles import unbundled
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime
    from manta._private.runtime.worker_logs import WorkerLog

# Cancelled task ids a worker remembers at most (see Executor.cancelled).
CANCELLED_KEPT = 10_000


logger = logging.getLogger(__name__)


class Mode(enum.Enum):
    """What this worker runs, and so how it takes calls."""

    TASKS = "tasks"  # plain tasks, one at a time on the main thread
    ACTOR = "actor"  # a sync actor: its calls on the main thread, in order
    THREADED = "threaded"  # an actor with max_concurrency > 1: a pool of threads
    ASYNC = "async"  # an async actor: coroutines on its own event loop


class Executor:
    def __init__(self, rt: CoreRuntime) -> None:
        self.rt = rt
        self.queue: queue.SimpleQueue[tuple[Connection, m.PushTask] | None] = queue.SimpleQueue()
        self.threaded_queue: queue.SimpleQueue[tuple[Connection, m.PushTask] | None] = queue.SimpleQueue()
        self.actor: Any = None
        self.actor_id: bytes | None = None
        self.actor_class_name = ""
        self.actor_name = ""
        self.mode = Mode.TASKS
        # An actor's concurrency groups other than the default (None: not an actor).
        self.lanes: Lanes | None = None
        self.aloop: asyncio.AbstractEventLoop | None = None
        self.sem: asyncio.Semaphore | None = None
        self.running: dict[bytes, TaskContext] = {}
        # The actor's methods by name, bound (see _method).
        self._methods: dict[str, Any] = {}
        # Tasks cancelled before or while they run, oldest first; bounded, for ids
        # of tasks that already ended (or never came) are never taken out.
        # Oldest first (an OrderedDict drops its oldest in O(1); a dict does not).
        self.cancelled: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.async_tasks: dict[bytes, asyncio.Task[Any]] = {}
        self.main_ctx: TaskContext | None = None
        self.restart_count = 0
        self.actor_gpu_ids: list[int] = []
        self.actor_resources: dict[str, float] = {}
        self.actor_group: Any = None
        # exit_actor() was called: no more calls run, and main_loop returns.
        self.exiting = False
        # The code directories last put on sys.path.
        self.code_path: list[str] = []
        # OMP_NUM_THREADS follows each task's CPUs (as in Ray), unless the
        # node's environment set it.
        self.omp_fixed = os.environ.get(OMP_FROM_USER) == "1"
        self.omp = ""
        # Streaming generators running here, by task id (their backpressure).
        self.flows: dict[bytes, Flow] = {}
        # The runtime_env packages (working_dir, py_modules) this worker runs with.
        self.packages: tuple[str, str] = ("", "")
        # Plain tasks sent here and not yet started, by id: one that waits
        # behind another may be asked back by its owner (leasing: pipelining).
        self.waiting: dict[bytes, tuple[Connection, m.PushTask]] = {}

    # -- dispatch (I/O thread) --------------------------------------------

    def on_push(self, conn: Connection, msg: m.PushTask) -> None:
        spec = msg.spec
        if spec.actor_id is None:
            self.waiting[spec.task_id] = (conn, msg)
            self.queue.put((conn, msg))
            return
        if spec.actor_creation:
            self.queue.put((conn, msg))
            return
        if self.lanes is not None and (spec.concurrency_group or self.lanes.by_method):
            try:
                lane = self.lanes.lane_of(spec.concurrency_group, spec.method)
            except ValueError as e:
                conn.reply(msg, self._error_reply(spec, e))
                return
            if lane is not None:
                if lane.loop is not None:
                    asyncio.run_coroutine_threadsafe(self._execute_async(conn, msg, lane.sem), lane.loop)
                else:
                    assert lane.queue is not None
                    lane.queue.put((conn, msg))
                return
        if self.mode is Mode.THREADED:
            self.threaded_queue.put((conn, msg))
        elif self.mode is Mode.ASYNC:
            assert self.aloop is not None
            asyncio.run_coroutine_threadsafe(self._execute_async(conn, msg, self.sem), self.aloop)
        else:
            self.queue.put((conn, msg))

    def recall(self, conn: Connection, task_id: bytes) -> None:
        """I/O thread: the owner (on `conn`, which sent it) asks for a task
        back if it has not started; it answers at once, as given back unrun.
        The task's own turn then passes (`execute`): whichever thread takes
        it out of `waiting` first has it."""
        msg = self._unqueue(conn, task_id)
        if msg is not None:  # else started (or done, or never here): it runs, and answers as usual
            conn.reply(msg, m.TaskDone(task_id=task_id, returns=[], recalled=True))

    def _unqueue(self, conn: Connection | None, task_id: bytes) -> m.PushTask | None:
        """Takes a task that waits here, pushed on `conn`, out of `waiting`
        (its turn then passes: `execute`); None if it started, or another
        connection sent it. The get and the pop see the same entry: only this
        (the I/O) thread adds entries, and the main thread only takes one out,
        or puts the same one back."""
        item = self.waiting.get(task_id)
        if item is None or item[0] is not conn or self.waiting.pop(task_id, None) is None:
            return None
        return item[1]

    def cancel(self, task_id: bytes, force: bool, recursive: bool, conn: Connection | None = None) -> None:
        """I/O thread: the owner (on `conn`) cancels a task sent here (and, if
        `recursive`, the tasks it submitted)."""
        msg = self._unqueue(conn, task_id)
        if msg is not None:
            # Waiting behind another task (pipelined): cancelled now, not
            # when its turn comes; it started nothing to cancel recursively.
            assert conn is not None
            conn.reply(msg, _cancelled(msg.spec))
            return
        if recursive:
            self.rt.tasks.cancel_children(task_id, force)
        ctx = self.running.get(task_id)
        if force and ctx is not None:
            os._exit(1)  # only for a task that runs here: an unknown id ends no worker
        self.cancelled[task_id] = None
        if len(self.cancelled) > CANCELLED_KEPT:
            self.cancelled.popitem(last=False)
        if ctx is None:
            return
        ctx.cancel_requested = True
        t = self.async_tasks.get(task_id)
        if t is not None:
            t.get_loop().call_soon_threadsafe(t.cancel)
        elif ctx.actor_id is None and ctx.thread_ident == threading.main_thread().ident:
            # A task is interrupted (KeyboardInterrupt), even inside time.sleep
            # or a blocking get. An actor's call is not, as in Ray: its state
            # would be left half-changed. It can ask is_canceled(), and its
            # caller gets TaskCancelledError whatever it returns.
            os.kill(os.getpid(), signal.SIGINT)

    def is_async_actor(self) -> bool:
        return self.mode is Mode.ASYNC

    def on_sigint(self, signum: int, frame: Any) -> None:
        ctx = self.main_ctx
        if ctx is not None and ctx.cancel_requested:
            raise KeyboardInterrupt

    # -- main thread ------------------------------------------------------

    def main_loop(self) -> None:
        self._drain(self.queue)

    def _drain(self, q: queue.SimpleQueue[tuple[Connection, m.PushTask] | None]) -> None:
        while True:
            item = q.get()
            if item is None or self.exiting:
                return
            self.execute(*item)

    def _context(self, spec: m.TaskSpec, conn: Connection | None = None) -> TaskContext:
        is_method = spec.actor_id is not None and not spec.actor_creation
        from_driver = not spec.actor_creation and spec.driver and spec.owner == spec.driver
        # Positional, in TaskContext's field order: keywords would cost a dict per task.
        return TaskContext(
            spec.task_id,
            spec.name,
            spec.actor_id,
            dict(self.actor_resources) if is_method else dict(spec.resources),
            spec.attempt,
            self.restart_count,
            False,  # cancel_requested
            threading.get_ident(),
            self.actor_class_name if is_method and self.actor_class_name else spec.name,
            spec.driver,
            spec.job_id,
            list(self.actor_gpu_ids) if is_method else list(spec.gpu_ids),
            conn if from_driver else None,
            self.actor_group if is_method else _captured_group(spec),
            spec.actor_creation,
            spec,
        )

    def _adopt_job(self, spec: m.TaskSpec) -> None:
        if spec.actor_id is not None and not spec.actor_creation:
            # An actor works for the job that made it, whoever calls it, as in
            # Ray: what a method starts is its creator's job's, and its pass
            # allows nothing else (the caller may be another job).
            return
        self.rt.adopt_job(spec)
        if spec.code_path and spec.code_path != self.code_path:
            # The job's code directories, ahead of the rest, once per change.
            self.code_path = spec.code_path
            sys.path[:0] = [p for p in spec.code_path if p not in sys.path]
        if spec.env_vars:
            os.environ.update(spec.env_vars)
        if not self.omp_fixed and (spec.actor_id is None or spec.actor_creation):
            self._set_omp(spec)  # an actor's calls keep what its creation set
        if spec.gpu_ids or spec.resources.get("GPU"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpu_ids))
        elif spec.actor_id is None or spec.actor_creation:
            # A task that asked for no GPU must not see one a previous task had.
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)

    def _set_omp(self, spec: m.TaskSpec) -> None:
        omp = spec.env_vars.get("OMP_NUM_THREADS")
        if omp is None:
            omp = str(max(1, int(unbundled(spec.resources).get("CPU") or 1)))
        if omp != self.omp:
            self.omp = omp
            os.environ["OMP_NUM_THREADS"] = omp

    def execute(self, conn: Connection, msg: m.PushTask) -> None:
        spec = msg.spec
        if spec.actor_id is None:
            item = self.waiting.pop(spec.task_id, None)
            if item is None or item[1] is not msg:
                # Given back to its owner unrun (recall, or cancelled while it
                # waited). A later push of the same task may wait behind.
                if item is not None:
                    self.waiting[spec.task_id] = item
                return
        self._adopt_job(spec)
        ctx = self._context(spec, conn)
        token = current_task.set(ctx)
        log = self.rt.log
        ctx.started = log.clock()
        self.running[spec.task_id] = ctx
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            self.main_ctx = ctx
        try:
            try:
                if spec.task_id in self.cancelled:
                    raise exc.TaskCancelledError(spec.task_id.hex())
                reply = self._run(spec, conn)
                if ctx.cancel_requested and spec.actor_id is not None and not spec.actor_creation:
                    raise exc.TaskCancelledError(spec.task_id.hex())
            finally:
                if on_main:
                    self.main_ctx = None
        except exc.TaskCancelledError:
            reply = _cancelled(spec)
        except KeyboardInterrupt as e:
            # Cancelled, unless the task caught the interrupt and returned.
            reply = _cancelled(spec) if ctx.cancel_requested else self._error_reply(spec, e)
        except ExitActor as e:
            # No answer: the call's caller learns the actor died, of this cause.
            self._end_actor(str(e))
            return
        except SystemExit as e:
            self._exit_now(e)
        finally:
            self.running.pop(spec.task_id, None)
            self.cancelled.pop(spec.task_id, None)
            current_task.reset(token)
        _flush_streams()
        self.rt.task_events.task_ended()
        conn.reply_threadsafe(msg, reply)
        self._record_run(ctx, reply)
        if spec.actor_creation and reply.error is not None:
            # A failed constructor ends the worker, as in Ray.
            self.rt.post(self._exit_soon)

    def _method(self, name: str) -> Any:
        """The actor's method `name` (see `actor_method`), kept for the next call."""
        method = self._methods[name] = actor_method(self.actor, name)
        return method

    def _end_actor(self, cause: str) -> None:
        """Ends this actor on purpose: the head marks it not to be restarted,
        calls not started are dropped (their callers learn the actor died),
        and the process exits through its atexit handlers."""
        if self.exiting:
            return
        self.exiting = True
        assert self.actor_id is not None
        try:
            self.rt.call_head(m.ActorExiting(actor_id=self.actor_id, cause=cause))
        except Exception:
            logger.warning("could not tell the head this actor is exiting", exc_info=True)
        self.queue.put(None)  # ends main_loop, wherever calls run

    def _exit_now(self, e: SystemExit) -> NoReturn:
        """sys.exit() in a task or actor method ends the worker, whichever
        thread ran it (as in Ray): its callers see it die, and an actor is
        restarted if it may be."""
        _flush_streams()
        os._exit(e.code if isinstance(e.code, int) else 1)

    def _exit_soon(self) -> None:
        self.rt.loop.call_later(0.2, os._exit, 0)

    def _error_reply(self, spec: m.TaskSpec, e: BaseException) -> m.TaskDone:
        err = format_task_error(spec.name, e)
        if spec.actor_id is not None:
            err.actor_id = spec.actor_id.hex()
        ctx = current_task.get()
        if ctx is not None and ctx.task_id == spec.task_id:
            ctx.error_text = str(err)
        return m.TaskDone(
            task_id=spec.task_id, returns=[], error=serialize_error(err).to_bytes(),
            error_text=str(err) if spec.actor_creation else "",
        )

    def _run(self, spec: m.TaskSpec, conn: Connection) -> m.TaskDone:
        try:
            env = spec.env_vars
            if env and (WORKING_DIR_ENV in env or PY_MODULES_ENV in env):
                packages = (env.get(WORKING_DIR_ENV, ""), env.get(PY_MODULES_ENV, ""))
                if packages != self.packages:
                    set_up_packages(self.rt, env, spec.job_id)
                    self.packages = packages
            args, kwargs = self._load_args(spec)
            if spec.actor_creation:
                cls = self.rt.load_function(spec.fn_id)
                self.actor_class_name = cls.__name__
                ctx = current_task.get()
                if ctx is not None:
                    ctx.label = cls.__name__
                self.actor_id = spec.actor_id
                self.actor_name = spec.actor_name
                self.actor_gpu_ids = list(spec.gpu_ids)
                self.actor_resources = dict(spec.resources)
                self.actor_group = _captured_group(spec)
                self.restart_count = spec.restart_count
                if ctx is not None:
                    ctx.restart_count = spec.restart_count
                check_group_sizes(spec.concurrency_groups)
                if spec.is_async_actor:
                    # The default group's loop, also this (main) thread's, so
                    # that __init__ and the default group's calls see one loop.
                    self.aloop, self.sem = start_loop(spec.max_concurrency, "manta-actor-loop")
                    asyncio.set_event_loop(self.aloop)
                self.actor = cls(*args, **kwargs)
                self._set_actor_mode(spec, cls)
                result: Any = None
            elif spec.method is not None:
                method = self._methods.get(spec.method) or self._method(spec.method)
                result = method(*args, **kwargs)
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
            else:
                fn = self.rt.load_function(spec.fn_id)
                result = fn(*args, **kwargs)
        except exc.TaskCancelledError:
            raise
        except Exception as e:
            return self._error_reply(spec, e)
        except (SystemExit, KeyboardInterrupt, ExitActor):
            raise
        except BaseException as e:
            # Another BaseException (a test framework's failure, say) is the
            # task's error too: the worker goes on serving.
            return self._error_reply(spec, e)
        if spec.num_returns < 0:
            return self._stream(spec, result, conn)
        return self._pack(spec, result)

    def _set_actor_mode(self, spec: m.TaskSpec, cls: type) -> None:
        self.lanes = Lanes(spec.concurrency_groups, method_groups(cls), spec.is_async_actor, self._drain)
        if spec.is_async_actor:
            self.mode = Mode.ASYNC
        elif spec.max_concurrency > 1:
            self.mode = Mode.THREADED
            # Plain threads on one queue: no Future per call, unlike an executor.
            for i in range(spec.max_concurrency):
                threading.Thread(
                    target=self._drain, args=(self.threaded_queue,), name=f"manta-actor-{i}", daemon=True
                ).start()
        else:
            self.mode = Mode.ACTOR

    async def _execute_async(self, conn: Connection, msg: m.PushTask, sem: asyncio.Semaphore | None) -> None:
        spec = msg.spec
        ctx = self._context(spec, conn)
        token = current_task.set(ctx)
        assert sem is not None
        try:
            async with sem:
                # Running from here: a call waiting for a slot is still queued.
                ctx.started = self.rt.log.clock()
                self.running[spec.task_id] = ctx
                if spec.task_id in self.cancelled:
                    raise exc.TaskCancelledError(spec.task_id.hex())
                task = asyncio.current_task()
                assert task is not None
                self.async_tasks[spec.task_id] = task
                try:
                    args, kwargs = await asyncio.get_running_loop().run_in_executor(
                        None, self._load_args, spec
                    ) if any(a.object_id is not None for a in spec.args) else self._load_args(spec)
                    method = self._methods.get(spec.method or "") or self._method(spec.method or "")
                    result = method(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                    if spec.num_returns < 0 and inspect.isasyncgen(result):
                        reply = await self._stream_async(spec, result, conn)
                    elif spec.num_returns < 0:
                        reply = self._stream(spec, result, conn)
                    else:
                        reply = self._pack(spec, result)
                except asyncio.CancelledError:
                    raise exc.TaskCancelledError(spec.task_id.hex()) from None
                except exc.TaskCancelledError:
                    raise
                except Exception as e:
                    reply = self._error_reply(spec, e)
        except exc.TaskCancelledError:
            reply = _cancelled(spec)
        except ExitActor as e:
            self._end_actor(str(e))
            return
        except SystemExit as e:
            self._exit_now(e)
        finally:
            self.async_tasks.pop(spec.task_id, None)
            self.running.pop(spec.task_id, None)
            self.cancelled.pop(spec.task_id, None)
            current_task.reset(token)
        _flush_streams()
        self.rt.task_events.task_ended()
        conn.reply_threadsafe(msg, reply)
        self._record_run(ctx, reply)

    def _record_run(self, ctx: TaskContext, reply: m.TaskDone) -> None:
        """A failed run's story, in one record made once the answer is on its
        way. A run that succeeded leaves none here: its owner records the
        result, and a record per run in the worker measured ~4% on sync
        actor calls. While a task runs, `story_of_running` tells."""
        if reply.error is None:
            return
        log = self.rt.log
        # The error's text (its traceback) goes to the head's task store with
        # the record, so the dashboard shows why a task failed without
        # unpickling what a worker sent; bounded, failures only.
        log.append(Rec(ctx.task_id, story.RAN_FAILED, log.stimulus(), log.clock(),
                       (ctx.attempt, ctx.started, ctx.error_text[:story.MAX_ERROR_TEXT])))
        self.rt.post(self.rt.task_events.flush)

    def story_of_running(self, task_id: bytes) -> list[story.StoryRecord]:
        ctx = self.running.get(task_id)
        if ctx is None:
            return []
        return [story.StoryRecord(task_id.hex(), story.Step.RUNNING, 0, ctx.started, str(ctx.attempt))]

    # -- arguments and results --------------------------------------------

    def _load_args(self, spec: m.TaskSpec) -> tuple[list[Any], dict[str, Any]]:
        rt = self.rt
        values: list[Any] = []
        refs_at: list[tuple[int, Any]] = []
        for arg in spec.args:
            if arg.data is not None:
                value, is_err = deserialize(arg.data)
                values.append(value)
            else:
                assert arg.object_id is not None
                ref = rt.deserialized_ref(arg.object_id, arg.owner, arg.cap)
                if arg.in_store:
                    with rt.lock:
                        e = rt.refs.get(arg.object_id)
                        if e is not None and not e.state:
                            rt.refs.set_ready(arg.object_id, None, in_store=True, node_id=arg.node_id)
                refs_at.append((len(values), ref))
                values.append(None)
        if refs_at:
            got = rt.get([r for _, r in refs_at])
            for (i, _), v in zip(refs_at, got):
                values[i] = v
        nkw = len(spec.kwarg_names)
        if nkw:
            return values[:-nkw], dict(zip(spec.kwarg_names, values[-nkw:]))
        return values, {}

    def _pack(self, spec: m.TaskSpec, result: Any) -> m.TaskDone:
        n = spec.num_returns
        if spec.actor_creation or n == 0:
            values: list[Any] = []
        elif n == 1:
            values = [result]
        else:
            try:
                values = split_returns(spec, result)
            except ValueError as err:
                return self._error_reply(spec, err)
        returns = []
        borrow_for_caller: dict[str, list[bytes]] = {}
        inlined = 0
        for i, value in enumerate(values, start=1):
            try:
                ret = self._return_object(spec, ids.object_id(spec.task_id, i), value, borrow_for_caller, inlined)
            except Exception as e:
                return self._error_reply(spec, e)
            if ret.data is not None:
                inlined += len(ret.data)
            returns.append(ret)
        return self._done(spec, returns, borrow_for_caller)

    def _done(self, spec: m.TaskSpec, returns: list[m.ReturnObject], borrow_for_caller: dict[str, list[bytes]]) -> m.TaskDone:
        if borrow_for_caller:
            self._register_for(borrow_for_caller, spec.owner)
        # Refs this task keeps (e.g. stored on an actor) must be known to their
        # owners before the caller drops its argument pins.
        self.rt.references.register_borrows()
        return m.TaskDone(task_id=spec.task_id, returns=returns)

    def _return_object(
        self, spec: m.TaskSpec, oid: bytes, value: Any, borrow_for_caller: dict[str, list[bytes]], inlined: int = 0,
    ) -> m.ReturnObject:
        """One result, inline (if `inlined` bytes of this answer leave room) or
        written to the store; the refs it holds are borrowed for the caller
        (raises if it cannot be serialized or stored)."""
        rt = self.rt
        sv = rt.serialize_value(value, f"the return value of {spec.name}()")
        contained = []
        for r in sv.contained:
            contained.append((r._id, r._owner))
            if r._owner == rt.address:
                with rt.lock:
                    rt.refs.add_borrower(r._id, spec.owner)
                rt.post(rt.references.watch_borrower, spec.owner)
            elif r._owner != spec.owner:
                borrow_for_caller.setdefault(r._owner, []).append(r._id)
        if inline(sv.size, inlined, inline_budget(rt.config.max_frame_bytes)):
            return m.ReturnObject(object_id=oid, data=sv.to_bytes(), contained=contained)
        rt.write_store(oid, sv)
        return m.ReturnObject(
            object_id=oid, data=None, in_store=True, node_id=rt.node_id, size=sv.size, contained=contained,
        )

    # -- generators (see generators.py) ------------------------------------

    def _stream(self, spec: m.TaskSpec, gen: Any, conn: Connection) -> m.TaskDone:
        """Runs a generator task: each item to the caller as it is yielded
        (streaming), or all of them with the answer (dynamic)."""
        if not inspect.isgenerator(gen):
            return self._error_reply(spec, not_a_generator(spec, gen))
        ctx = current_task.get()
        flow = self.flows[spec.task_id] = Flow(spec.backpressure)
        returns: list[m.ReturnObject] = []
        borrow: dict[str, list[bytes]] = {}
        try:
            for index, value in enumerate(gen):
                # Items the caller has from an earlier attempt are skipped.
                if index >= spec.stream_from and self._item(spec, index, value, conn, flow, returns, borrow):
                    flow.wait(lambda: ctx is not None and ctx.cancel_requested)
        except (exc.TaskCancelledError, SystemExit, KeyboardInterrupt, ExitActor):
            raise
        except BaseException as e:
            return self._error_reply(spec, e)
        finally:
            self.flows.pop(spec.task_id, None)
        return self._generator_done(spec, returns, borrow)

    async def _stream_async(self, spec: m.TaskSpec, agen: Any, conn: Connection) -> m.TaskDone:
        ctx = current_task.get()
        flow = self.flows[spec.task_id] = Flow(spec.backpressure, asyncio.get_running_loop())
        returns: list[m.ReturnObject] = []
        borrow: dict[str, list[bytes]] = {}
        index = -1
        try:
            async for value in agen:
                index += 1
                if index >= spec.stream_from and self._item(spec, index, value, conn, flow, returns, borrow):
                    await flow.wait_async(lambda: ctx is not None and ctx.cancel_requested)
        except (asyncio.CancelledError, exc.TaskCancelledError, SystemExit, KeyboardInterrupt, ExitActor):
            raise
        except BaseException as e:
            return self._error_reply(spec, e)
        finally:
            self.flows.pop(spec.task_id, None)
        return self._generator_done(spec, returns, borrow)

    def _item(
        self, spec: m.TaskSpec, index: int, value: Any, conn: Connection, flow: Flow,
        returns: list[m.ReturnObject], borrow: dict[str, list[bytes]],
    ) -> bool:
        """One yielded item: kept for the answer (dynamic), or sent to the
        caller now; True if sent (the generator may have to wait)."""
        if spec.num_returns == m.DYNAMIC:
            item = self._return_object(spec, ids.item_id(spec.task_id, index), value, borrow, flow.inlined)
            flow.inlined += len(item.data) if item.data is not None else 0
            returns.append(item)
            return False
        item = self._return_object(spec, ids.item_id(spec.task_id, index), value, borrow)
        conn.send_threadsafe(m.GeneratorItem(task_id=spec.task_id, index=index, item=item))
        flow.sent = index + 1
        return True

    def _generator_done(
        self, spec: m.TaskSpec, returns: list[m.ReturnObject], borrow: dict[str, list[bytes]],
    ) -> m.TaskDone:
        if spec.num_returns == m.STREAMING:
            # The end's own value (index 1): None, once every item was sent.
            returns = [self._return_object(spec, ids.object_id(spec.task_id, 1), None, borrow)]
        return self._done(spec, returns, borrow)

    def consumed(self, msg: m.GeneratorConsumed) -> None:
        """I/O thread: the caller took items of a stream this worker runs."""
        flow = self.flows.get(msg.task_id)
        if flow is not None:
            flow.took(msg.consumed)

    def _register_for(self, by_owner: dict[str, list[bytes]], borrower: str) -> None:
        refs = self.rt.references
        held = {owner: [(oid, refs.cap_of(oid, owner)) for oid in oids] for owner, oids in by_owner.items()}
        self.rt.run(refs.tell_owners(held, borrower))


# -- output -------------------------------------------------------------------


class TaskStream(io.TextIOBase):
    """sys.stdout/sys.stderr of a worker: lines go to the job's driver."""

    def __init__(self, rt: CoreRuntime, is_err: bool, fallback: Any, log: WorkerLog | None = None) -> None:
        self.rt = rt
        self.log = log
        self.pid = os.getpid()
        self.is_err = is_err
        self.fallback = fallback
        self._buf: list[str] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
            self._buf.append(s)
            if "\n" in s:
                self._send_locked()
        return len(s)

    def flush(self) -> None:
        # Read unlocked: at a task's end (both streams flush) there is most
        # often nothing to send, and the locks, join and flushes were ~2 us of
        # each sync task (timeit in a worker). A write racing with this
        # sends its own line, or is flushed with the next task's end.
        if self._buf:
            with self._lock:
                self._send_locked()
        if self.log is not None and self.log.has_pending():
            self.log.flush()  # a task's output is in its file when the task ends

    def _send_locked(self) -> None:
        text = "".join(self._buf)
        self._buf = []
        if not text:
            return
        ctx = current_task.get()
        if self.log is not None:
            self.log.write(self.is_err, b"" if ctx is None else ctx.task_id, text)
        driver = self.rt.driver_address if ctx is None else ctx.driver
        prefix = f"{'worker' if ctx is None else ctx.label} pid={self.pid}"
        job = self.rt.job_id if ctx is None else ctx.job_id
        if not driver:
            self.fallback.write(text)
            return
        msg = m.LogLines(job_id=job, prefix=prefix, is_err=self.is_err, text=text)
        if ctx is not None and ctx.log_conn is not None:
            ctx.log_conn.send_threadsafe(msg)
        else:
            self.rt.post(self.rt.send_log, driver, msg)

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def actor_method(actor: Any, name: str) -> Any:
    """The actor's method `name`, bound, as its class defines it (an instance
    attribute of the same name does not hide it, as in Ray), or a method
    every actor has."""
    cls = type(actor)
    try:
        attr = inspect.getattr_static(cls, name)
    except AttributeError:
        return _builtin_method(actor, name)
    return attr.__get__(actor, cls) if hasattr(attr, "__get__") else attr


def _builtin_method(actor: Any, name: str) -> Any:
    """The methods every actor has (as in Ray)."""
    if name == "__ray_ready__":
        return lambda: True
    if name == "__ray_call__":
        # Any function, run on the actor: fn(actor, *args, **kwargs).
        return lambda fn, *args, **kwargs: fn(actor, *args, **kwargs)
    if name == "__ray_terminate__":
        def terminate() -> None:
            raise ExitActor("The actor was terminated by __ray_terminate__().")
        return terminate
    return getattr(actor, name)  # raises AttributeError


def split_returns(spec: m.TaskSpec, result: Any) -> list[Any]:
    """The values of a task declared with num_returns > 1; ValueError if
    `result` is not a sequence of that many."""
    n = spec.num_returns
    try:
        values = list(result)
    except TypeError:
        values = []
    if len(values) != n:
        raise ValueError(
            f"{spec.name}() declared num_returns={n} but returned "
            f"{type(result).__name__} {'of length ' + str(len(values)) if values else ''}".strip()
        )
    return values


def _captured_group(spec: m.TaskSpec) -> Any:
    if not spec.capture_pg:
        return None
    return PlacementGroup(spec.capture_pg, [{}] * spec.capture_pg_bundles)


def not_a_generator(spec: m.TaskSpec, value: Any) -> TypeError:
    kind = "streaming" if spec.num_returns == m.STREAMING else "dynamic"
    return TypeError(
        f"{spec.name}() was called with num_returns='{kind}', which needs a generator "
        f"(a function that yields), but it returned {type(value).__name__}"
    )


def _cancelled(spec: m.TaskSpec) -> m.TaskDone:
    error = serialize_error(exc.TaskCancelledError(spec.task_id.hex()))
    return m.TaskDone(task_id=spec.task_id, returns=[], error=error.to_bytes())


def _flush_streams() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


def install_streams(rt: CoreRuntime, log: WorkerLog | None = None) -> None:
    sys.stdout = TaskStream(rt, False, sys.__stdout__, log)
    sys.stderr = TaskStream(rt, True, sys.__stderr__, log)



