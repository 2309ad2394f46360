"""The agent's handle on its fork server (`node/zygote.py`), and the pipe protocol.

Forking a warm process costs ~10 ms where a fresh interpreter costs 40-140
ms, so workers are forked by a process with manta's imports loaded. The
agent talks to it over its stdin and stdout in length-prefixed frames of
typed messages (`messages.ForkMessage`):

    agent -> zygote   ForkConfig (once, first), then ForkWorker per worker
    zygote -> agent   WorkerForked(worker_id, pid) | WorkerReaped(pid, code)

With the ForkConfig, the agent passes the store's memfd over a Unix
socketpair (SCM_RIGHTS); every worker inherits it at fork, so no worker
opens /proc/<agent>/fd/N (which one running as another user could not).

Workers die with the zygote (PR_SET_PDEATHSIG), and the zygote dies with
the agent, so no worker outlives its node.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from manta._private.config import OMP_FROM_USER
from manta._private.protocol import messages as m
from manta._private.protocol.framing import encode_frame

PR_SET_PDEATHSIG = 1
# Started by module name, so the agent never imports the worker runtime.
ZYGOTE_MAIN = "manta._private.node.zygote"
# Credentials the agent may have been started with: workers run user code,
# so they must not inherit them (each gets a pass of its own instead).
SECRET_VARS = frozenset({"MANTA_TOKEN", "RAY_AUTH_TOKEN", "MANTA_REDIS_PASSWORD", "REDIS_PASSWORD"})


class ForkServer:
    """The agent's handle on its fork server process.

    Spawned first thing in the agent process, so the server's imports
    overlap the agent's own start-up; configured once the agent knows its
    address.
    """

    def __init__(self, log_path: str, python: str = sys.executable, extra_env: dict[str, str] | None = None) -> None:
        # `python`: a runtime_env pip environment's interpreter, for its workers.
        env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
        env.update(extra_env or {})
        # One BLAS/OpenMP thread per worker unless the user asked otherwise:
        # N workers each spinning N threads would oversubscribe the cores.
        # Workers then set OMP_NUM_THREADS to each task's CPUs, unless the
        # user had set it (OMP_FROM_USER tells them).
        if "OMP_NUM_THREADS" in env:
            env[OMP_FROM_USER] = "1"
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        self._fds, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with open(log_path, "ab") as err, theirs:
            self.proc = subprocess.Popen(
                [python, "-m", ZYGOTE_MAIN, str(theirs.fileno())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, pass_fds=[theirs.fileno()],
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout

    def configure(self, msg: m.ForkConfig, store_fd: int) -> None:
        """The first message, and the store's descriptor for every worker."""
        self.send(msg)
        try:
            socket.send_fds(self._fds, [b"s"], [store_fd])
        except OSError:
            pass  # as in send

    def send(self, msg: m.ForkConfig | m.ForkWorker) -> None:
        try:
            write_message(self._in, msg)
        except (BrokenPipeError, OSError):
            pass  # the server is gone; the agent notices through its output closing

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._fds.close()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except Exception:
        pass


def write_message(fd: int, msg: Any) -> None:
    """Writes one framed message to a pipe, whole (it may take several writes)."""
    data = memoryview(encode_frame(m.encode(msg)))
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[n:]
