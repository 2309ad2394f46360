"""`concurrent.futures.Executor` over manta tasks (asked for in Ray #29456).

    with Executor(max_workers=8, num_cpus=1) as ex:
        results = list(ex.map(score, items))
        fut = ex.submit(train, config)

Each call runs as a task with the executor's task options. Its future
completes with the task's value or raises its error, as `get` would;
`cancel()` on a future cancels the task, even one already running (the
standard executors can only drop calls that have not started).
`max_workers` bounds the tasks in flight; the rest wait in the executor.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from manta._private import api
from manta._private.remote import RemoteFunction, remote


class _TaskFuture(concurrent.futures.Future[Any]):
    """A future whose cancel() also cancels its task. It stays "pending"
    while the task runs, so that cancel() can still succeed then."""

    def __init__(self) -> None:
        super().__init__()
        self._ref: Any = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        # Cancelled, told to whoever waits (concurrent.futures.wait counts
        # only a cancellation so notified).
        self.set_running_or_notify_cancel()
        if self._ref is not None:
            try:
                api.cancel(self._ref)
            except Exception:  # noqa: BLE001 - finished meanwhile: nothing to cancel
                pass
        return True


class Executor(concurrent.futures.Executor):
    def __init__(self, max_workers: int | None = None, **task_options: Any) -> None:
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers must be a positive integer or None, got {max_workers!r}")
        self._max = max_workers
        self._options = task_options
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[_TaskFuture, RemoteFunction, tuple[Any, ...], dict[str, Any]]] = (
            collections.deque()
        )
        self._in_flight = 0
        self._futures: set[_TaskFuture] = set()
        self._closed = False
        self._functions: dict[Any, RemoteFunction] = {}
        # Finished tasks, settled on the executor's own thread (None ends it).
        self._events: queue.SimpleQueue[tuple[_TaskFuture, concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def _remote(self, fn: Callable[..., Any]) -> RemoteFunction:
        rf = fn if isinstance(fn, RemoteFunction) else self._functions.get(fn)
        if rf is None:
            rf = self._functions[fn] = remote(fn)
        return rf.options(**self._options) if self._options else rf  # type: ignore[return-value]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if not callable(fn):
            raise TypeError(f"submit() takes a callable, got {type(fn).__name__}")
        rf = self._remote(fn)
        future = _TaskFuture()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to an Executor that was shut down")
            self._futures.add(future)
            if self._max is not None and self._in_flight >= self._max:
                self._waiting.append((future, rf, args, kwargs))
                return future
            self._in_flight += 1
        self._start(future, rf, args, kwargs)
        return future

    def _start(self, future: _TaskFuture, rf: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if future.cancelled():
            self._finished(future)
            return
        try:
            ref = rf.remote(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - a bad call fails its future
            future.set_exception(e)
            self._finished(future)
            return
        future._ref = ref
        # The runtime completes `ref.future()` on its I/O thread, which must
        # not run user callbacks nor submit (that may block): the executor's
        # own thread takes it from there.
        ref.future().add_done_callback(lambda done: self._events.put((future, done)))
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._settle_loop, name="manta-executor", daemon=True)
                self._thread.start()

    def _settle_loop(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            future, done = event
            if not future.cancelled():
                error = done.exception()
                try:
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(done.result())
                except concurrent.futures.InvalidStateError:
                    pass  # cancelled meanwhile
            self._finished(future)
            with self._lock:
                if self._closed and not self._futures:
                    return  # shut down without waiting: nothing more will come

    def _finished(self, future: _TaskFuture) -> None:
        """A call is done: waiting ones start, in a loop (a run of cancelled
        ones must not recurse)."""
        with self._lock:
            self._futures.discard(future)
            self._in_flight -= 1
        while True:
            with self._lock:
                if not self._waiting or (self._max is not None and self._in_flight >= self._max):
                    return
                nxt = self._waiting.popleft()
                self._in_flight += 1
            if not nxt[0].cancelled():
                self._start(*nxt)
                return
            with self._lock:
                self._futures.discard(nxt[0])
                self._in_flight -= 1

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1,
    ) -> Iterator[Any]:
        """Every call submitted at once, results in order (chunksize is
        accepted and ignored: each call is a task of its own)."""
        return super().map(fn, *iterables, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pending = list(self._futures)
            waiting = [f for f, *_ in self._waiting] if cancel_futures else []
            if cancel_futures:
                self._waiting.clear()
        for f in waiting:  # only calls not started, as the standard executors do
            f.cancel()
            with self._lock:
                self._futures.discard(f)
        if wait:
            concurrent.futures.wait(pending)
        if wait or not pending:
            self._events.put(None)  # the thread ends once what came before is settled


__all__ = ["Executor"]
