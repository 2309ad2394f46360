"""A worker's stdout/stderr stream at a task's end: what is waiting goes, and
nothing is done when nothing waits (the fast path of TaskStream.flush)."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace
from typing import Any

from manta._private.runtime.executor import TaskStream
from manta._private.runtime.worker_logs import WorkerLog


def _stream(tmp_path: Any) -> tuple[TaskStream, WorkerLog, io.StringIO]:
    rt: Any = SimpleNamespace(driver_address="", job_id=1)
    log = WorkerLog(str(tmp_path), b"\x01" * 8, call_later=lambda delay, fn: None)
    fallback = io.StringIO()
    return TaskStream(rt, False, fallback, log), log, fallback


def test_a_partial_line_goes_at_the_flush_and_reaches_the_file(tmp_path: Any) -> None:
    stream, log, fallback = _stream(tmp_path)
    stream.write("no newline yet")
    assert fallback.getvalue() == "" and not log.has_pending()  # buffered in the stream
    stream.flush()
    assert fallback.getvalue() == "no newline yet"
    assert not log.has_pending()
    with open(log.paths[0], "rb") as f:
        assert b"no newline yet" in f.read()


def test_a_flush_with_nothing_written_sends_and_writes_nothing(tmp_path: Any) -> None:
    stream, log, fallback = _stream(tmp_path)
    stream.flush()
    assert fallback.getvalue() == "" and not log.has_pending()
    assert not os.path.exists(log.paths[0])  # the file is made by a first write, not by a flush
    stream.write("a line\n")  # a whole line goes at once, and waits for the file
    assert fallback.getvalue() == "a line\n" and log.has_pending()
    stream.flush()
    assert not log.has_pending()
