"""`multiprocessing.Pool` over actors (Ray's `ray.util.multiprocessing`).

The pool's processes are actors, one CPU each by default, spread over the
cluster. Work goes to them in chunks, round robin; each chunk is one actor
call running the function over its items and answering every item's
outcome, so one failure does not lose the chunk's other results.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from multiprocessing import JoinableQueue, TimeoutError
from typing import Any

from manta._private import api
from manta._private.remote import remote
from manta._private.runtime.object_ref import ObjectRef

__all__ = ["JoinableQueue", "Pool", "PoolTaskError", "TimeoutError"]

Outcome = tuple[bool, Any]  # (True, value) or (False, the exception raised)


class PoolTaskError(Exception):
    """What `imap`/`imap_unordered` yield for an item that raised: the
    exception is its `underlying` (as in Ray)."""

    def __init__(self, underlying: BaseException) -> None:
        super().__init__(underlying)
        self.underlying = underlying


class _PoolWorker:
    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)

    def ready(self) -> bool:
        return True

    def run(self, fn: Callable[..., Any], items: list[Any], star: bool) -> list[Outcome]:
        out: list[Outcome] = []
        for item in items:
            try:
                out.append((True, fn(*item) if star else fn(item)))
            except Exception as e:
                out.append((False, e))
        return out

    def apply(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Outcome]:
        try:
            return [(True, fn(*args, **kwargs))]
        except Exception as e:
            return [(False, e)]


def _run_chunk(fn: Callable[..., Any], items: list[Any], star: bool, actor: Any) -> ObjectRef:
    return actor.run.remote(fn, items, star)  # type: ignore[no-any-return]


class AsyncResult:
    """The result of `apply_async` or `map_async`, as multiprocessing's."""

    def __init__(
        self,
        chunks: list[ObjectRef],
        single: bool,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self._chunks = chunks
        self._single = single
        self._outcomes: list[Outcome] | None = None
        if callback is not None or error_callback is not None:
            threading.Thread(
                target=self._call_back, args=(callback, error_callback), name="manta-pool-callback", daemon=True
            ).start()

    def _call_back(self, callback: Any, error_callback: Any) -> None:
        self.wait()
        error = self._first_error()
        if error is None:
            if callback is not None:
                callback(self._values())
        elif error_callback is not None:
            error_callback(error)

    def _collect(self) -> list[Outcome]:
        if self._outcomes is None:
            outcomes: list[Outcome] = []
            for ref in self._chunks:
                try:
                    outcomes.extend(api.get(ref))
                except Exception as e:  # the actor died (terminate), or the call failed
                    outcomes.append((False, e))
            self._outcomes = outcomes
        return self._outcomes

    def _first_error(self) -> BaseException | None:
        return next((v for ok, v in self._collect() if not ok), None)

    def _values(self) -> Any:
        values = [v for _, v in self._collect()]
        return values[0] if self._single else values

    def ready(self) -> bool:
        ready, _ = api.wait(self._chunks, num_returns=len(self._chunks), timeout=0)
        return len(ready) == len(self._chunks)

    def wait(self, timeout: float | None = None) -> None:
        if self._chunks:
            api.wait(self._chunks, num_returns=len(self._chunks), timeout=timeout)

    def get(self, timeout: float | None = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError("the result is not ready yet")
        error = self._first_error()
        if error is not None:
            raise error
        return self._values()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._first_error() is None


class IMapIterator:
    """Results of `imap` (in order) or `imap_unordered` (as they finish); an
    item that raised is returned as a PoolTaskError holding its exception."""

    def __init__(self, chunks: list[ObjectRef], ordered: bool) -> None:
        self._pending = list(chunks)
        self._ordered = ordered
        self._ready: list[Any] = []

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        if not self._ready:
            if not self._pending:
                raise StopIteration
            if self._ordered:
                ready, _ = api.wait(self._pending[:1], timeout=timeout)
            else:
                ready, _ = api.wait(self._pending, num_returns=1, timeout=timeout)
            if not ready:
                raise TimeoutError("no result is ready yet")
            self._pending.remove(ready[0])
            try:
                self._ready = [v if ok else PoolTaskError(v) for ok, v in api.get(ready[0])]
            except Exception as e:
                self._ready = [PoolTaskError(e)]
        return self._ready.pop(0)


class Pool:
    """A pool of `processes` actors (default: one per CPU in the cluster).

    `initializer(*initargs)` runs in each when it starts; after
    `maxtasksperchild` chunks an actor is replaced by a fresh one.
    `ray_remote_args` are the actors' options (default `num_cpus=1`).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] | None = None,
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ) -> None:
        if ray_address is not None and not api.is_initialized():
            api.init(address=ray_address)
        if processes is None:
            processes = max(1, int(api.cluster_resources().get("CPU", 1)))
        if processes < 1:
            raise ValueError("Processes must be a positive integer")
        if maxtasksperchild is not None and maxtasksperchild < 1:
            raise ValueError("maxtasksperchild must be a positive integer")
        self._processes = processes
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasks = maxtasksperchild
        self._cls = remote(_PoolWorker).options(**{"num_cpus": 1, **(ray_remote_args or {})})
        self._actors = [self._new_actor() for _ in range(processes)]
        self._counts = [0] * processes
        self._retired: list[Any] = []
        self._next = itertools.count()
        self._outstanding: list[ObjectRef] = []
        self._state = "running"
        # As multiprocessing does, the pool is ready once every process has
        # run its initializer.
        api.get([a.ready.remote() for a in self._actors])

    def _new_actor(self) -> Any:
        return self._cls.remote(self._initializer, self._initargs)

    def _check_running(self) -> None:
        if self._state != "running":
            raise ValueError("Pool not running")

    def _submit(self, call: Callable[[Any], ObjectRef]) -> ObjectRef:
        slot = next(self._next) % self._processes
        if self._maxtasks is not None and self._counts[slot] >= self._maxtasks:
            self._retired.append(self._actors[slot])
            self._actors[slot] = self._new_actor()
            self._counts[slot] = 0
        self._counts[slot] += 1
        ref = call(self._actors[slot])
        self._outstanding.append(ref)
        if len(self._outstanding) % 1024 == 0:
            # Keep only what join() still has to wait for.
            _, self._outstanding = api.wait(self._outstanding, num_returns=len(self._outstanding), timeout=0)
        return ref

    def _chunks(self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None, star: bool,
                default_chunks: bool) -> list[ObjectRef]:
        self._check_running()
        items = list(iter(iterable))  # raises TypeError for a non-iterable
        if chunksize is None:
            if default_chunks:
                chunksize, extra = divmod(len(items), self._processes * 4)
                chunksize += 1 if extra else 0
            chunksize = max(1, chunksize or 1)
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+")
        return [self._submit(partial(_run_chunk, fn, items[i:i + chunksize], star))
                for i in range(0, len(items), chunksize)]

    # -- the multiprocessing API --------------------------------------------

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None) -> Any:
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        self._check_running()
        a, k = tuple(args), dict(kwds or {})
        ref = self._submit(lambda actor: actor.apply.remote(func, a, k))
        return AsyncResult([ref], True, callback, error_callback)

    def map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        return self.map_async(func, iterable, chunksize).get()

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        return AsyncResult(self._chunks(func, iterable, chunksize, False, True), False, callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
                      callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """`map_async`, each item unpacked into the function's arguments."""
        return AsyncResult(self._chunks(func, iterable, chunksize, True, True), False, callback, error_callback)

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = 1) -> IMapIterator:
        return IMapIterator(self._chunks(func, iterable, chunksize, False, False), ordered=True)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = 1
    ) -> Iterator[Any]:
        return IMapIterator(self._chunks(func, iterable, chunksize, False, False), ordered=False)

    def close(self) -> None:
        """No more work is accepted; what was submitted still runs."""
        if self._state == "running":
            self._state = "closed"

    def terminate(self) -> None:
        """Stops the pool's actors at once: unfinished work fails."""
        self._state = "terminated"
        for actor in self._actors + self._retired:
            api.kill(actor)
        self._retired.clear()

    def join(self) -> None:
        """Waits for the submitted work (after close) and ends the actors."""
        if self._state == "running":
            raise ValueError("Pool is still running")
        if self._state == "closed":
            if self._outstanding:
                api.wait(self._outstanding, num_returns=len(self._outstanding))
            self.terminate()
        self._outstanding.clear()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise ValueError("Pool objects cannot be passed to tasks or actors")
