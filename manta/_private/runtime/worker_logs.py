"""A worker's own log files, and its stack dumps for `manta stack`.

What tasks print goes to their driver (executor.TaskStream) and, here,
to `<session>/worker_logs/worker-<id>-<pid>.out|err` on the worker's node,
where the node agent serves it to `manta logs` long after the driver is
gone. Whenever the task printing changes, a marker line names it, so a
task's own lines can be found in a worker that ran many (concurrent ones
included: each write names the task current where it was made).

`install_stack_dumps` registers faulthandler for SIGUSR1 into the
worker's `.stack` file: the agent's fallback when py-spy cannot attach.
It costs nothing until the signal comes.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO

from manta._private.private_files import session_subdir
from manta._private.protocol.tool_messages import (
    PROGRESS_PREFIX,
    TASK_MARKER,
    WORKER_LOG_DIR,
    worker_log_name,
)

STACK_SIGNAL = signal.SIGUSR1
# A worker's file past this size is renamed to `<name>.1` (the one before
# that is dropped) and a new one started: a chatty task cannot fill the
# disk, and `manta logs --follow` reads on in the new file.
MAX_BYTES = 256 << 20
# Output waits at most this long, or until this much waits, before it is written.
FLUSH_S = 0.1
BUFFER_BYTES = 64 << 10


class WorkerLog:
    """The worker's .out and .err files; writes come from any thread.

    Writes are gathered and written in one go when `BUFFER_BYTES` are
    waiting, when the task ends (the executor flushes its streams before it
    answers), and at most `FLUSH_S` after the first waiting write, on the
    worker's I/O thread (`call_later`): a write per print() doubled the cost
    of printing (benchmarks/worker_output.py)."""

    def __init__(self, session_dir: str, worker_id: bytes,
                 call_later: Callable[[float, Callable[[], None]], None] | None = None) -> None:
        directory = os.path.join(session_dir, WORKER_LOG_DIR)
        pid = os.getpid()
        self.paths = [os.path.join(directory, worker_log_name(worker_id, pid, s)) for s in ("out", "err")]
        self.call_later = call_later
        self._fds = [-1, -1]
        self._pending: list[list[bytes]] = [[], []]
        self._pending_bytes = 0
        self._scheduled = False
        self._last: list[bytes | None] = [None, None]
        # The task whose lines end each file so far (what a rotated file's successor starts with).
        self._file_task: list[bytes | None] = [None, None]
        self._line_start = [True, True]
        self._sizes = [0, 0]
        self._lock = threading.Lock()
        self.broken = False

    def write(self, is_err: bool, task_id: bytes, text: str) -> None:
        if self.broken:
            return
        if PROGRESS_PREFIX in text:
            text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(PROGRESS_PREFIX))
            if not text:
                return
        i = int(is_err)
        data = text.encode("utf-8", "replace")
        with self._lock:
            if task_id != self._last[i]:
                self._last[i] = task_id
                marker = f"{'' if self._line_start[i] else chr(10)}{TASK_MARKER}{task_id.hex() or '-'}\n"
                self._pending[i].append(marker.encode())
            self._pending[i].append(data)
            self._line_start[i] = text.endswith("\n")
            self._pending_bytes += len(data)
            if self._pending_bytes >= BUFFER_BYTES or self.call_later is None:
                self._flush_locked()
            elif not self._scheduled:
                self._scheduled = True
                self.call_later(FLUSH_S, self.flush)

    def has_pending(self) -> bool:
        """Whether anything written waits to reach the files (read unlocked)."""
        return bool(self._pending[0] or self._pending[1])

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.broken:
            return
        try:
            for i in (0, 1):
                if self._pending[i]:
                    self._write_file(i, b"".join(self._pending[i]))
                    self._pending[i] = []
                    self._file_task[i] = self._last[i]
        except (OSError, ValueError) as e:
            # The task's print() must not fail for it: its lines still reach the driver.
            self.broken = True
            _warn(f"cannot write its log file, output goes only to the driver: {e}")
        self._pending = [[], []]
        self._pending_bytes = 0

    def _write_file(self, i: int, data: bytes) -> None:
        fd = self._fds[i]
        if fd >= 0 and self._sizes[i] >= MAX_BYTES:
            os.close(fd)
            os.replace(self.paths[i], self.paths[i] + ".1")
            fd = self._fds[i] = -1
            if not data.startswith(TASK_MARKER.encode()):
                # The new file starts with its task's marker.
                task = self._file_task[i]
                data = f"{TASK_MARKER}{task.hex() if task else '-'}\n".encode() + data
        if fd < 0:
            # Opened at the first write: a worker that prints nothing leaves no file.
            session_subdir(os.path.dirname(self.paths[i]))
            fd = self._fds[i] = os.open(self.paths[i], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                                        | os.O_CLOEXEC, 0o600)
            self._sizes[i] = os.fstat(fd).st_size
        while data:
            n = os.write(fd, data)
            data = data[n:]
            self._sizes[i] += n


def install_stack_dumps(session_dir: str, worker_id: bytes) -> None:
    """SIGUSR1 writes every thread's Python stack to the worker's .stack file."""
    directory = os.path.join(session_dir, WORKER_LOG_DIR)
    try:
        session_subdir(directory)
        path = os.path.join(directory, worker_log_name(worker_id, os.getpid(), "stack"))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        # `manta stack` then needs py-spy for this worker; the worker runs on.
        _warn(f"no stack dumps by signal: {e}")
        return
    f = os.fdopen(fd, "w")
    # Kept open for the process's life: faulthandler writes to its descriptor from the signal handler.
    _kept.append(f)
    faulthandler.register(STACK_SIGNAL, file=f, all_threads=True, chain=False)


_kept: list[IO[str]] = []


def _warn(text: str) -> None:
    """To the worker's own stderr (the fork server's log, workers.log)."""
    if sys.__stderr__ is not None:
        sys.__stderr__.write(f"manta worker {os.getpid()}: {text}\n")
