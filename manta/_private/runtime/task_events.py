"""Task states to the head: this process's task records, in batches.

The hot paths only append to the task log (story.py), as they did before
the state API. Every `interval` seconds, on the I/O thread, whatever was
appended since the last batch goes to the head as it is, with the tasks
this worker is running at that moment; the head folds them into task
states (control/task_states.py). Nothing is sent while nothing changes.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from manta._private.protocol import messages as m

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime


class TaskReporter:
    def __init__(self, rt: CoreRuntime, interval: float) -> None:
        self.rt = rt
        self.interval = interval
        self._timer: asyncio.TimerHandle | None = None
        # The running set last sent: sent again only when it changes.
        self._running_sent: frozenset[bytes] = frozenset()

    def start(self) -> None:
        """I/O thread."""
        if self.interval > 0:
            self._timer = self.rt.loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        batch = self.batch()
        if batch is not None:
            self.rt.send_head(batch)
        self._timer = self.rt.loop.call_later(self.interval, self._tick)

    def flush(self) -> None:
        """I/O thread: sends what is new now, not at the next tick. After a
        failed run (rare), so that its error reaches the head even if the
        worker is ended right after, as a job's workers are when it ends."""
        batch = self.batch()
        if batch is not None:
            self.rt.send_head(batch)

    def batch(self) -> m.TaskEvents | None:
        """What is new since the last batch, or None."""
        rt = self.rt
        records, lost = rt.log.take_new()
        running: list[m.RunningTask] = []
        executor = rt.executor
        if executor is not None:
            now = frozenset(executor.running)
            if now != self._running_sent:
                self._running_sent = now
                running = [
                    m.RunningTask(c.task_id, c.attempt, c.name, c.job_id, c.actor_id, c.actor_creation, c.started)
                    for c in list(executor.running.values())
                ]
        if not records and not running and not lost:
            return None
        return m.TaskEvents(
            records=records, running=running, wall=time.time() - rt.log.clock(),
            node_id=rt.node_id, worker_id=rt.worker_id, pid=os.getpid(), lost=lost,
        )
