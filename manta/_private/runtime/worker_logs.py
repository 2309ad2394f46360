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
from typing import IO

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


class WorkerLog:
    """The worker's .out and .err files; writes come from any thread."""

    def __init__(self, session_dir: str, worker_id: bytes) -> None:
        directory = os.path.join(session_dir, WORKER_LOG_DIR)
        pid = os.getpid()
        self.paths = [os.path.join(directory, worker_log_name(worker_id, pid, s)) for s in ("out", "err")]
        self._files: list[IO[str] | None] = [None, None]
        self._last: list[bytes | None] = [None, None]
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
        with self._lock:
            try:
                self._write_locked(i, task_id, text)
            except (OSError, ValueError) as e:
                # The task's print() must not fail for it: its lines still reach the driver.
                self.broken = True
                _warn(f"cannot write its log file, output goes only to the driver: {e}")

    def _write_locked(self, i: int, task_id: bytes, text: str) -> None:
        f = self._files[i]
        if f is not None and self._sizes[i] >= MAX_BYTES:
            f.close()
            os.replace(self.paths[i], self.paths[i] + ".1")
            f = self._files[i] = None
            self._last[i] = None  # the new file starts with its task's marker
            self._line_start[i] = True
        if f is None:
            # Opened at the first write: a worker that prints nothing leaves no file.
            os.makedirs(os.path.dirname(self.paths[i]), mode=0o700, exist_ok=True)
            fd = os.open(self.paths[i], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            f = self._files[i] = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
            self._sizes[i] = os.fstat(fd).st_size
        if task_id != self._last[i]:
            self._last[i] = task_id
            marker = f"{'' if self._line_start[i] else chr(10)}{TASK_MARKER}{task_id.hex() or '-'}\n"
            f.write(marker)
            self._sizes[i] += len(marker)
        f.write(text)
        self._sizes[i] += len(text)  # characters: near enough to bytes for a bound
        f.flush()
        self._line_start[i] = text.endswith("\n")


def install_stack_dumps(session_dir: str, worker_id: bytes) -> None:
    """SIGUSR1 writes every thread's Python stack to the worker's .stack file."""
    directory = os.path.join(session_dir, WORKER_LOG_DIR)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
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
