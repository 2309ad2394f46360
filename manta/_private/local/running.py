"""Where local mode runs user code: in the caller's thread, or on an async actor's loop.

A plain task or a sync actor's call runs in the thread that called
`.remote()` (or `get()`), so a debugger stepping through the driver steps
into it. An async actor has an event loop on a thread of its own, as in its
worker: its calls run there, and the caller waits for them, unless the
caller is itself inside an event loop (an async actor calling another, or
itself): then the call starts now and is waited for by `await` or `get`,
as in the cluster, so that the caller's loop is never blocked on its own work.

Either way the call runs with the task's context (`current_task`, what
`get_runtime_context()` reads) and its runtime_env env_vars set.
"""

from __future__ import annotations

import asyncio
import bdb
import concurrent.futures
import contextlib
import inspect
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from manta._private.runtime.concurrency import start_loop
from manta._private.runtime.context import TaskContext, current_task

# Exceptions a call never keeps as its error: the person at the keyboard (or
# quitting the debugger) means to stop the program, not the task.
STOPS_THE_PROGRAM = (KeyboardInterrupt, bdb.BdbQuit)


def in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def env_vars_set(env_vars: dict[str, str]) -> Iterator[None]:
    """The task's env_vars in os.environ while it runs (a worker has them for
    good; the driver gets its own back after)."""
    if not env_vars:
        yield
        return
    saved = {k: os.environ.get(k) for k in env_vars}
    os.environ.update(env_vars)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Runner:
    """Runs an actor's (or plain tasks') calls. `submit` returns a future of
    the call's result; `may_wait` says whether the calling thread may block
    on it now."""

    runs_a_loop = False  # an async actor's: coroutines and async generators run

    def submit(self, ctx: TaskContext, env: dict[str, str], fn: Callable[..., Any], args: list[Any],
               kwargs: dict[str, Any]) -> concurrent.futures.Future[Any]:
        raise NotImplementedError

    def may_wait(self) -> bool:
        return True

    def on_own_thread(self) -> bool:
        return False

    def cancel(self, fut: concurrent.futures.Future[Any]) -> None:
        pass

    def stop(self) -> None:
        pass


class InlineRunner(Runner):
    """Plain tasks and sync actors: the call runs now, in this thread."""

    def __init__(self, actor: bool) -> None:
        self.actor = actor

    def submit(self, ctx: TaskContext, env: dict[str, str], fn: Callable[..., Any], args: list[Any],
               kwargs: dict[str, Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        token = current_task.set(ctx)
        try:
            with env_vars_set(env):
                result = fn(*args, **kwargs)
                if self.actor and inspect.iscoroutine(result):
                    result = asyncio.run(result)  # as a worker runs a sync actor's coroutine
            fut.set_result(result)
        except STOPS_THE_PROGRAM:
            raise
        except BaseException as e:  # noqa: BLE001 - the call's outcome
            fut.set_exception(e)
        finally:
            current_task.reset(token)
        return fut


class LoopRunner(Runner):
    """An async actor: its calls on its event loop, `max_concurrency` at a time."""

    runs_a_loop = True

    def __init__(self, name: str, max_concurrency: int) -> None:
        self.loop, self.sem = start_loop(max_concurrency, f"manta-local-{name}")
        self.ident = asyncio.run_coroutine_threadsafe(_thread_ident(), self.loop).result()
        self.tasks: dict[concurrent.futures.Future[Any], asyncio.Task[None]] = {}

    def submit(self, ctx: TaskContext, env: dict[str, str], fn: Callable[..., Any], args: list[Any],
               kwargs: dict[str, Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        async def call() -> None:
            # Set here: the loop's tasks have contexts of their own.
            token = current_task.set(ctx)
            try:
                async with self.sem:
                    with env_vars_set(env):
                        result = fn(*args, **kwargs)
                        if inspect.isawaitable(result):
                            result = await result
                fut.set_result(result)
            except BaseException as e:  # noqa: BLE001 - the call's outcome, CancelledError included
                fut.set_exception(e)
            finally:
                current_task.reset(token)
                self.tasks.pop(fut, None)

        def start() -> None:
            task = self.tasks[fut] = self.loop.create_task(call())
            task.add_done_callback(cancelled_early)

        def cancelled_early(_: asyncio.Task[None]) -> None:
            # Cancelled before it started, call() never ran to say so.
            if not fut.done():
                fut.set_exception(asyncio.CancelledError())

        self.loop.call_soon_threadsafe(start)
        return fut

    def may_wait(self) -> bool:
        # A caller inside an event loop (this actor's or another's) must not
        # block it: the call goes on by itself and is awaited or got later.
        return not in_event_loop()

    def on_own_thread(self) -> bool:
        return threading.get_ident() == self.ident

    def cancel(self, fut: concurrent.futures.Future[Any]) -> None:
        def cancel() -> None:
            task = self.tasks.get(fut)
            if task is not None:
                task.cancel()

        self.loop.call_soon_threadsafe(cancel)

    def stop(self) -> None:
        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            # After the cancelled tasks' last steps, which are scheduled first.
            self.loop.call_soon(self.loop.stop)

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:
            pass  # stopped and closed already


async def _thread_ident() -> int:
    return threading.get_ident()
