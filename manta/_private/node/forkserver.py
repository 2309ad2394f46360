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
import logging
import os
import signal
import socket
import subprocess
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

from manta._private import cmdline
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

    The agent's own is forked from it at start (`forked`); a pip
    environment's is a new interpreter, that environment's. Configured once
    the agent knows its address.
    """

    def __init__(self, log_path: str, python: str = sys.executable, extra_env: dict[str, str] | None = None) -> None:
        # `python`: a runtime_env pip environment's interpreter, for its workers.
        self._fds, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with open(log_path, "ab") as err, theirs:
            proc = subprocess.Popen(
                [python, "-m", ZYGOTE_MAIN, str(theirs.fileno())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=worker_env(extra_env),
                pass_fds=[theirs.fileno()],
            )
        assert proc.stdin is not None and proc.stdout is not None
        self.pid = proc.pid
        self._popen: subprocess.Popen[bytes] | None = proc
        self._in = proc.stdin.fileno()
        self.stdout = proc.stdout

    @classmethod
    def forked(cls, log_path: str, serve: Callable[[int], None]) -> ForkServer:
        """A fork server forked from this process instead of started afresh:
        it begins with this process's imports loaded, and `serve(fd)` (the
        fork server's main, given the descriptor socket) runs in the child.

        A fresh interpreter importing them again cost 100-150 ms of CPU
        during `init()`, on the path to the first worker (node/main.py says
        how it was measured). Only for a process with one thread that holds
        no secret yet (the agent's main, before it reads its token): the
        child, and every worker it forks to run user code, is a copy of it.
        """
        if SECRET_VARS & os.environ.keys():
            # Unset in the child, a variable would still be in the memory it
            # copies (and in its /proc/<pid>/environ): a new interpreter then.
            return cls(log_path)
        self = cls.__new__(cls)
        self._fds, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = worker_env(None)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered here is written twice
        pid = os.fork()
        if pid == 0:
            os.environ.clear()
            os.environ.update(env)
            run_in_child(
                [in_r, out_w, err, theirs.fileno()],
                [serve.__code__.co_filename, "3"], [sys.executable, "-m", ZYGOTE_MAIN, "3"], lambda: serve(3),
            )
        for fd in (in_r, out_w, err):
            os.close(fd)
        theirs.close()
        self.pid = pid
        self._popen = None
        self._in = in_w
        self.stdout = os.fdopen(out_r, "rb")
        return self

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
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.kill()
            self._popen.wait()
        else:
            if self.pid:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                self.pid = 0
            if self._in >= 0:
                os.close(self._in)
                self._in = -1
        self._fds.close()


def run_in_child(fds: list[int], argv: list[str], orig_argv: list[str], main: Callable[[], None]) -> NoReturn:
    """In a child just forked, becomes the process `orig_argv` would have
    started, and runs its `main` there, to the end: `fds` become descriptors
    0, 1, 2... and every other is closed (the parent's pipes, logs and ready
    pipe); logging is a new interpreter's, so the new process's own
    configuration takes effect; `sys.argv` and the command line others see
    (`ps`, /proc) are its own. Never returns into the parent's code, nor runs
    the parent's atexit handlers."""
    code = 1
    try:
        # Every source is 3 or more (0-2 are open in every process), so only
        # descriptor 3, moved last, can be a source overwritten: by then moved.
        assert len(fds) <= 4
        for i, fd in enumerate(fds):
            if fd != i:
                os.dup2(fd, i)
        os.closerange(len(fds), os.sysconf("SC_OPEN_MAX"))
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        sys.argv = argv
        sys.orig_argv = orig_argv
        retitle(orig_argv)
        # `__main__` as `python -m <module>` would have it, not the parent's
        # main module (user code in workers may import __main__).
        main_module = types.ModuleType("__main__")
        main_module.__file__ = argv[0]
        main_module.__builtins__ = __builtins__  # type: ignore[attr-defined]
        sys.modules["__main__"] = main_module
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def worker_env(extra_env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a fork server, which its workers inherit."""
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
    return env


def retitle(argv: list[str]) -> None:
    """Makes this process's command line, as `ps` and /proc show it, `argv`
    (a forked fork server's is otherwise its agent's, which tools would take
    for the agent). It writes over the original arguments, so `argv` must be
    no longer; the rest is blanked. Left as it was where that cannot be done."""
    title = b"\0".join(os.fsencode(a) for a in argv) + b"\0"
    cmdline.rewrite(lambda args: title.ljust(len(args), b"\0") if len(title) <= len(args) else args)


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
