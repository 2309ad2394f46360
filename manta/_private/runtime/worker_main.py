"""Entry point of a worker process (called in a child of the fork server)."""

from __future__ import annotations

import atexit
import logging
import signal
import sys
from collections.abc import Callable

from manta._private.auth.tls_contexts import TlsContexts
from manta._private.config import Config
from manta._private.protocol import messages as m
from manta._private.runtime import context
from manta._private.runtime.core import CoreRuntime
from manta._private.runtime.executor import install_streams
from manta._private.runtime.worker_logs import WorkerLog, install_stack_dumps


def worker_main(
    session: m.SessionInfo, config: Config, worker_id: bytes, tls: TlsContexts | None = None,
    before_start: Callable[[], None] | None = None,
) -> None:
    """A worker's life. `before_start`: what must be done before it connects
    and may take a task (its fork server's cgroup join, run meanwhile)."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format=f"worker {worker_id.hex()[:8]} %(levelname)s %(name)s: %(message)s"
    )
    rt = CoreRuntime(session, config, is_driver=False, worker_id=worker_id, tls=tls)
    executor = rt.executor
    assert executor is not None
    context.install(rt)
    signal.signal(signal.SIGINT, executor.on_sigint)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    install_stack_dumps(session.session_dir, worker_id)
    if before_start is not None:
        before_start()
    rt.start()
    loop = rt.loop

    def later(delay: float, fn: Callable[[], None]) -> None:
        # From any thread: the flush runs on the I/O thread, after `delay`.
        loop.call_soon_threadsafe(loop.call_later, delay, fn)

    install_streams(rt, WorkerLog(session.session_dir, worker_id, later))
    executor.main_loop()
    # main_loop returns only when the actor ended itself (exit_actor): exit
    # as Python would, atexit handlers included (the fork server's child
    # ends with os._exit, which runs none).
    atexit._run_exitfuncs()
