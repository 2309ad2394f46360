"""Where an actor's calls run, in its worker: its concurrency groups.

An actor has a default group (its `max_concurrency`) and any named groups
(`concurrency_groups={"io": 2}`), plus Ray's "_ray_system" group of one,
made when first used. A call runs in the group its caller named
(`.options(concurrency_group=)`), else its method's (`@method`), else the
default. Each group is a lane of its own, so a group whose calls all block
never holds up another:

    sync actor    a queue and `size` threads (the default group of a
                  one-at-a-time actor is the main thread, as before)
    async actor   an event loop on a thread of its own, with a semaphore of
                  `size`; sync methods of the group run on that loop
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The concurrency group every actor has for the system's own calls.
SYSTEM_GROUP = "_ray_system"

Item = Any  # (Connection, PushTask) or None: a lane's queue entries


def check_group_sizes(groups: dict[str, int]) -> None:
    """Raised where the actor starts (as in Ray), naming the bad groups."""
    bad = {name: size for name, size in groups.items() if size <= 0}
    if bad:
        raise ValueError(
            "max_concurrency must be greater than 0 in every concurrency group, got "
            + ", ".join(f"{name}={size}" for name, size in bad.items())
        )


@dataclass
class Lane:
    name: str
    size: int
    # A sync actor's: calls waiting for one of the lane's threads.
    queue: queue.SimpleQueue[Item] | None = None
    # An async actor's: the lane's loop and its bound on running calls.
    loop: asyncio.AbstractEventLoop | None = None
    sem: asyncio.Semaphore | None = None


def start_loop(size: int, name: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]:
    """An event loop running on a thread of its own, and a semaphore of
    `size` made on it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    made: list[asyncio.Semaphore] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        made.append(asyncio.Semaphore(size))
        loop.call_soon(ready.set)
        loop.run_forever()
        # Stopped (local mode ends its actors' loops; a worker's run until it exits).
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        except asyncio.CancelledError:
            pass  # a task still on the loop was cancelled as it stopped: nothing left to close
        loop.close()

    threading.Thread(target=run, name=name, daemon=True).start()
    ready.wait()
    return loop, made[0]


def start_lane(name: str, size: int, is_async: bool, drain: Callable[[queue.SimpleQueue[Item]], None]) -> Lane:
    if is_async:
        loop, sem = start_loop(size, f"manta-group-{name}")
        return Lane(name, size, loop=loop, sem=sem)
    q: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for i in range(size):
        threading.Thread(target=drain, args=(q,), name=f"manta-group-{name}-{i}", daemon=True).start()
    return Lane(name, size, queue=q)


def method_groups(cls: type) -> dict[str, str]:
    """The groups the class's methods name in @method(concurrency_group=)."""
    out = {}
    for name, member in inspect.getmembers(cls):
        group = getattr(member, "__manta_method_options__", {}).get("concurrency_group")
        if group:
            out[name] = group
    return out


class Lanes:
    """An actor's named groups (the default group is the executor's own)."""

    def __init__(self, groups: dict[str, int], by_method: dict[str, str], is_async: bool,
                 drain: Callable[[queue.SimpleQueue[Item]], None]) -> None:
        self.by_method = by_method
        self.is_async = is_async
        self.drain = drain
        self.lanes = {name: start_lane(name, size, is_async, drain) for name, size in groups.items()}
        for method, group in by_method.items():
            if group not in self.lanes:
                raise ValueError(
                    f"method {method} names concurrency group {group!r}, which the actor does not "
                    f"define (its groups: {', '.join(self.lanes) or 'none'})"
                )

    def lane_of(self, group: str, method: str | None) -> Lane | None:
        """The lane a call runs in, or None for the default group. Raises
        ValueError for a group the actor does not have."""
        name = group or self.by_method.get(method or "", "")
        if not name:
            return None
        lane = self.lanes.get(name)
        if lane is None:
            if name != SYSTEM_GROUP:
                raise ValueError(
                    f"concurrency group {name!r} is not defined for this actor "
                    f"(its groups: {', '.join(n for n in self.lanes if n != SYSTEM_GROUP) or 'none'})"
                )
            lane = self.lanes[name] = start_lane(name, 1, self.is_async, self.drain)
        return lane
