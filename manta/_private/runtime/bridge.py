"""The runtime's I/O thread and how other threads reach it.

Every connection of a driver or worker lives on one asyncio loop, run by a
daemon thread. User threads hand it work with `post` (fire and forget) or
`run` (wait for a coroutine's result).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from manta._private.transport.connection import new_event_loop


class IOThread:
    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.thread: threading.Thread | None = None
        self.ident = -1  # the I/O thread's, once it runs
        self.closing = False

    def start(self) -> None:
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="manta-io", daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        self.ident = threading.get_ident()
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()

    def on_loop(self) -> bool:
        return threading.get_ident() == self.ident

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Calls fn(*args) on the I/O thread, soon."""
        if self.closing and self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # loop closed during shutdown

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Runs a coroutine on the I/O thread and waits for its result (any other thread)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("blocking call on the manta I/O thread")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.closing = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
