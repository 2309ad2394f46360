"""Entry point of the head process: `python -m manta._private.head.main ...`.

Started by `services` by module name; reports READY and its bound addresses
on `--ready-fd`. A driver's own cluster (`--agent`) has its node agent
forked from here, with the imports both need loaded once (`_fork_agent`);
the head's own are imported after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from manta._private.config import Config
from manta._private.services import read_token, service_arguments
from manta._private.transport.connection import new_event_loop

if TYPE_CHECKING:
    from manta._private.head.head import Head


def main(argv: list[str] | None = None) -> None:
    parser = service_arguments("manta-head")
    parser.add_argument("--embedded", action="store_true")
    parser.add_argument("--storage", default="")  # a URL without its password
    parser.add_argument("--redis-ca", default=None)
    # The Redis password comes on an inherited pipe: never argv, environment or a file.
    parser.add_argument("--redis-password-fd", type=int, default=None)
    parser.add_argument("--config", default="")
    parser.add_argument("--audit-log", default="", help="default: audit.log in the session directory")
    # The HTTP server (dashboard, /metrics, REST): -1, none (a driver's own cluster); 0, any free port.
    parser.add_argument("--dashboard-port", type=int, default=-1)
    parser.add_argument("--dashboard-host", default="127.0.0.1")
    # The port was not chosen by the user: if it is taken, any free one will do (Ray moves on too).
    parser.add_argument("--dashboard-port-fallback", action="store_true")
    # A driver's own cluster: its node agent's command line (JSON, without
    # --ready-fd), and the pipe it reports READY on.
    parser.add_argument("--agent", default="")
    parser.add_argument("--agent-ready-fd", type=int, default=None)
    args = parser.parse_args(argv)
    agent_pid = _fork_agent(json.loads(args.agent), args.session_dir, args.agent_ready_fd) if args.agent else 0
    from manta._private.head.head import Head
    from manta._private.head.storage import StorageError, open_storage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s head %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("manta.head")
    token = read_token(args.token_file)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    config = Config.from_json(args.config)
    password = _read_secret(args.redis_password_fd) if args.redis_password_fd is not None else None
    try:
        storage = open_storage(args.storage, password=password, ca=args.redis_ca, encrypt=config.storage_encryption)
    except StorageError as e:
        log.error("%s", e)
        sys.exit(1)
    head = Head(
        token=token, addresses=args.listen, embedded=args.embedded, storage=storage, config=config,
        audit_log=args.audit_log or os.path.join(args.session_dir, "audit.log"), session_dir=args.session_dir,
    )
    try:
        http = (args.dashboard_host, args.dashboard_port, args.dashboard_port_fallback) if args.dashboard_port >= 0 else None
        loop.run_until_complete(run_head(
            head, args.ready_fd, http, os.path.basename(args.session_dir.rstrip("/")), lambda: _stop(agent_pid),
        ))
    except StorageError as e:
        _stop(agent_pid)
        log.error("%s", e)
        sys.exit(1)
    if agent_pid:
        _end_agent(agent_pid)
    if args.embedded:
        _remove_session(args.session_dir)


def _end_agent(pid: int, grace: float = 5.0) -> None:
    """Reaps the agent this head forked, told to stop (`_stop`): killed if it
    has not ended within `grace`, so a hung agent is not left behind (an
    orphan, with its fork server and workers) once the head is gone."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # reaped already
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # readable once the process has exited
        if not poller.poll(grace * 1000):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    finally:
        os.close(fd)


def _fork_agent(argv: list[str], session_dir: str, ready_fd: int | None) -> int:
    """Forks this process into the node agent of `argv`; returns its pid.

    A new interpreter importing what this one already has (asyncio, msgspec,
    the messages, the transport and its TLS) cost 100 ms of CPU in init(),
    on 2 cores shared by the driver, head, agent and fork server (-X importtime
    and /proc/<pid>/stat, BENCHMARKS.md). Before anything of the head's is
    read: the token, the Redis password (an embedded head has none) or its
    storage. The agent dies with the head, as it died with its driver when
    the driver started it.
    """
    from manta._private.node import main as agent_main
    from manta._private.node.forkserver import die_with_parent, run_in_child

    if ready_fd is None:
        raise SystemExit("--agent needs --agent-ready-fd")
    log = os.open(os.path.join(session_dir, "logs", "agent.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:  # the head died before the signal was set
            os._exit(0)
        os.setsid()  # its own session, as when the driver started it (start_new_session)
        argv = [*argv, "--ready-fd", "3"]
        run_in_child(
            [0, log, log, ready_fd], [agent_main.__file__, *argv],
            [sys.executable, "-m", agent_main.__name__, *argv], lambda: agent_main.main(argv),
        )
    os.close(log)
    os.close(ready_fd)
    return pid


def _stop(agent_pid: int) -> None:
    if agent_pid:
        try:
            os.kill(agent_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _remove_session(session_dir: str) -> None:
    """Removes an embedded cluster's session directory, once its agent is gone
    (`_end_agent`): an agent still running may make files in it (a new
    worker's log, the spill directory), and a file made in the middle of
    rmtree leaves its directory behind, and the session with it (seen in CI).
    What raced it anyway is removed again."""
    for _ in range(3):
        shutil.rmtree(session_dir, ignore_errors=True)
        if not os.path.exists(session_dir):
            return
        time.sleep(0.1)


async def run_head(
    head: Head, ready_fd: int | None, http: tuple[str, int, bool] | None, session_name: str,
    on_stop: Callable[[], None] = lambda: None,
) -> None:
    """Runs the head, and its HTTP server (host, port, any port if that one is taken) when
    given, until it is told to stop. Its READY line lists its addresses, then the HTTP
    server's URL (http:// or https://)."""
    await head.start()
    server = None
    if http is not None:
        # Imported only when served: aiohttp stays out of a driver's own cluster.
        from manta._private.head.http.server import HttpServer

        host, port, fallback = http
        server = HttpServer(head, host, port, session_name)
        await server.start(fallback=fallback)
    if ready_fd is not None:
        shown = [*head.addresses, *([server.url] if server is not None else [])]
        os.write(ready_fd, ("READY " + " ".join(shown) + "\n").encode())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, head.stopping.set)
    await head.stopping.wait()
    on_stop()
    if server is not None:
        await server.stop()
    await head.stop()


def _read_secret(fd: int) -> str:
    with os.fdopen(fd, "rb") as f:
        return f.read().decode()


if __name__ == "__main__":
    main()
