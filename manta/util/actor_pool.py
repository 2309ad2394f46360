"""`ActorPool`: work spread over a fixed set of actors, one call per actor
at a time, results in submission order or as they finish (Ray's API)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from manta._private import api
from manta._private.runtime.object_ref import ObjectRef


def _refs(future: Any) -> list[ObjectRef]:
    # A method with num_returns > 1 gives a list of refs: the call is done
    # when all of them are.
    return list(future) if isinstance(future, (list, tuple)) else [future]


class ActorPool:
    """`submit(fn, value)` calls `fn(actor, value)` on an idle actor (it must
    return the call's ref, or refs); with none idle, the value waits its
    turn. `get_next` returns results in submission order, `get_next_unordered`
    as they finish; `map` and `map_unordered` do both over many values."""

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        # Calls in flight: submission index -> (future, actor).
        self._in_flight: dict[int, tuple[Any, Any]] = {}
        # Indices whose results are still to be returned, oldest first.
        self._order: collections.deque[int] = collections.deque()
        # Calls whose results nobody will ask for (a new map() began); their
        # actors come back to the pool once they finish.
        self._abandoned: set[int] = set()
        self._next_index = 0
        self._pending_submits: list[tuple[Callable[[Any, Any], Any], Any]] = []

    # -- submitting ---------------------------------------------------------

    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        self._reclaim_abandoned()
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        future = fn(actor, value)
        index = self._next_index
        self._next_index += 1
        self._in_flight[index] = (future, actor)
        self._order.append(index)

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Submits every value now; yields their results in order."""
        return self._map(fn, values, self.get_next)

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Submits every value now; yields their results as they finish."""
        return self._map(fn, values, self.get_next_unordered)

    def _map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any], take: Callable[[], Any]) -> Iterator[Any]:
        self._abandon_results()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield take()

        return results()

    # -- results ------------------------------------------------------------

    def has_next(self) -> bool:
        """Whether any result is still to be returned."""
        return bool(self._order) or bool(self._pending_submits)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order. Raises TimeoutError if it is
        not ready within `timeout` s (or returns None, if `ignore_if_timedout`)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        self._ensure_in_flight()
        index = self._order[0]
        future, actor = self._in_flight[index]
        if timeout is not None:
            ready, _ = api.wait(_refs(future), num_returns=len(_refs(future)), timeout=timeout)
            if len(ready) < len(_refs(future)):
                if ignore_if_timedout:
                    return None
                raise TimeoutError("Timed out waiting for result")
        self._order.popleft()
        del self._in_flight[index]
        try:
            return api.get(future)
        finally:
            self._return_actor(actor)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Any finished result (the first to finish). Raises TimeoutError if
        none is within `timeout` s (or returns None, if `ignore_if_timedout`)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        self._ensure_in_flight()
        by_ref = {_refs(self._in_flight[i][0])[-1]: i for i in self._order}
        ready, _ = api.wait(list(by_ref), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise TimeoutError("Timed out waiting for result")
        index = by_ref[ready[0]]
        self._order.remove(index)
        future, actor = self._in_flight.pop(index)
        try:
            return api.get(future)
        finally:
            self._return_actor(actor)

    # -- the actors -----------------------------------------------------------

    def has_free(self) -> bool:
        """Whether an actor is idle (and no value waits for one)."""
        self._reclaim_abandoned()
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Takes an idle actor out of the pool; None if none is idle."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Adds an actor to the pool (it takes a waiting value at once, if any)."""
        busy = [a for _, a in self._in_flight.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        self._submit_pending()

    def _submit_pending(self) -> None:
        while self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))

    def _ensure_in_flight(self) -> None:
        self._submit_pending()
        while not self._order:
            # Every actor is busy with a dropped call: wait for one to finish.
            refs = [_refs(self._in_flight[i][0])[-1] for i in self._abandoned]
            api.wait(refs, num_returns=1)
            self._reclaim_abandoned()
            self._submit_pending()

    def _abandon_results(self) -> None:
        # A new map() returns only its own values' results: earlier ones
        # not yet collected are dropped, without waiting for them.
        self._abandoned.update(self._order)
        self._order.clear()
        self._pending_submits.clear()

    def _reclaim_abandoned(self) -> None:
        if not self._abandoned:
            return
        by_ref = {_refs(self._in_flight[i][0])[-1]: i for i in self._abandoned}
        ready, _ = api.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        for ref in ready:
            index = by_ref[ref]
            self._abandoned.discard(index)
            self._idle_actors.append(self._in_flight.pop(index)[1])
