"""`Queue`: a first-in first-out queue shared by tasks and actors (Ray's
`ray.util.queue`). It lives in an async actor; a `Queue` passed to a task
or actor is a handle to the same one."""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

from manta._private import api
from manta._private.remote import remote

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """get found the queue empty (at once, or until its timeout)."""


class Full(_stdlib_queue.Full):
    """put found the queue full (at once, or until its timeout)."""


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class _QueueActor:
    """The queue itself. Each operation answers (ok, value) rather than
    raising, so an empty or full queue costs no remote traceback."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except TimeoutError:
            return False
        return True

    async def get(self, timeout: float | None = None) -> tuple[bool, Any]:
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return False, None

    def put_nowait(self, item: Any) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def put_nowait_batch(self, items: list[Any]) -> str:
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            return (
                f"Cannot add {len(items)} items to queue of size {self.qsize()} "
                f"and maxsize {self.maxsize}."
            )
        for item in items:
            self.queue.put_nowait(item)
        return ""

    def get_nowait(self) -> tuple[bool, Any]:
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    def get_nowait_batch(self, num_items: int) -> tuple[bool, Any]:
        if num_items > self.qsize():
            return False, f"Cannot get {num_items} items from queue of size {self.qsize()}."
        return True, [self.queue.get_nowait() for _ in range(num_items)]


class Queue:
    """A queue of at most `maxsize` items (0: no bound).

    `actor_options` are the options of the actor holding it (by default it
    holds no CPU, as any actor).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        self.maxsize = maxsize
        self.actor: Any = remote(_QueueActor).options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return int(api.get(self.actor.qsize.remote()))

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return bool(api.get(self.actor.empty.remote()))

    def full(self) -> bool:
        return bool(api.get(self.actor.full.remote()))

    # -- put --------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Adds an item; blocks (up to `timeout` s) while the queue is full,
        unless `block` is False. Raises Full if it could not."""
        if not block:
            return self.put_nowait(item)
        _check_timeout(timeout)
        if not api.get(self.actor.put.remote(item, timeout)):
            raise Full

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            if not await self.actor.put_nowait.remote(item):
                raise Full
            return
        _check_timeout(timeout)
        if not await self.actor.put.remote(item, timeout):
            raise Full

    def put_nowait(self, item: Any) -> None:
        if not api.get(self.actor.put_nowait.remote(item)):
            raise Full

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Adds all of `items` at once, or none of them (raising Full)."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        refused = api.get(self.actor.put_nowait_batch.remote(list(items)))
        if refused:
            raise Full(refused)

    # -- get --------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Takes the oldest item; blocks (up to `timeout` s) while the queue
        is empty, unless `block` is False. Raises Empty if it could not."""
        if not block:
            return self.get_nowait()
        _check_timeout(timeout)
        ok, item = api.get(self.actor.get.remote(timeout))
        if not ok:
            raise Empty
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            ok, item = await self.actor.get_nowait.remote()
        else:
            _check_timeout(timeout)
            ok, item = await self.actor.get.remote(timeout)
        if not ok:
            raise Empty
        return item

    def get_nowait(self) -> Any:
        ok, item = api.get(self.actor.get_nowait.remote())
        if not ok:
            raise Empty
        return item

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Takes `num_items` items at once, or none (raising Empty)."""
        if not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        ok, result = api.get(self.actor.get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(result)
        return list(result)

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Ends the queue's actor; items still in it are lost."""
        if self.actor is not None:
            api.kill(self.actor)
        self.actor = None
