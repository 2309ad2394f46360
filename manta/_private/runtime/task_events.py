"""Task states and application metrics to the head: this process's task records, in batches.

The hot paths only append to the task log (story.py), as they did before
the state API. Every `interval` seconds, on the I/O thread, whatever was
appended since the last batch goes to the head as it is, with the tasks
this worker is running at that moment; the head folds them into task
states (control/task_states.py). Nothing is sent while nothing changes.

The process's application metrics (`manta.util.metrics`) go the same way,
whole, at most every `metrics_interval` seconds and only when something was
recorded since the last report (the head's /metrics, head/app_metrics.py).
A task that recorded any also reports them as it ends, before its answer,
never later: a worker is killed without warning when its job ends, and
what its last tasks counted must not go with it. (A short gap between
reports, to spare tasks that count in a tight loop, lost the last task's
counts in CI: its answer reached the driver, the job ended and the worker
was killed before the deferred report went.) Tasks that end together
share one report: each posts a flush, and only the first finds the
registry moved.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from manta._private.protocol import messages as m
from manta._private.protocol import metrics_messages as mm
from manta._private.runtime.metrics import HistogramValue

if TYPE_CHECKING:
    from manta._private.runtime.core import CoreRuntime


class TaskReporter:
    def __init__(self, rt: CoreRuntime, interval: float, metrics_interval: float = 1.0) -> None:
        self.rt = rt
        self.interval = interval
        self.metrics_interval = metrics_interval
        self._metrics_version = 0
        self._metrics_sent_at = 0.0
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
        self.flush()
        if time.monotonic() - self._metrics_sent_at >= self.metrics_interval:
            self._send_metrics()
        self._timer = self.rt.loop.call_later(self.interval, self._tick)

    def task_ended(self) -> None:
        """Any thread, as a task's answer is about to go: its metrics go first, if it recorded any."""
        if self.rt.metrics.version != self._metrics_version:
            self.rt.post(self._send_metrics)

    def _send_metrics(self) -> None:
        """I/O thread. From task_ended, posted before the task's answer, so sent ahead of it."""
        report = self.metrics()
        if report is not None:
            self._metrics_sent_at = time.monotonic()
            self.rt.send_head(report)

    def metrics(self) -> mm.MetricsReport | None:
        """This process's metrics, if anything was recorded since the last report."""
        rt = self.rt
        registry = rt.metrics
        version = registry.version
        if version == self._metrics_version:
            return None
        self._metrics_version = version
        definitions = registry.definitions()
        series = []
        for name, values in registry.snapshot().items():
            d = definitions[name]
            points = []
            for tags, v in values.items():
                tag_values = [value for _, value in tags]
                if isinstance(v, HistogramValue):
                    points.append(mm.MetricPoint(tag_values, buckets=list(v.bucket_counts), count=v.count, sum=v.sum))
                else:
                    points.append(mm.MetricPoint(tag_values, value=v))
            series.append(mm.MetricSeries(name, str(d.kind), d.description, list(d.tag_keys), list(d.boundaries),
                                          points))
        return mm.MetricsReport(worker_id=rt.worker_id, job_id=rt.job_id, node_id=rt.node_id, pid=os.getpid(),
                                series=series)

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
