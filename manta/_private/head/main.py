"""Entry point of the head process: `python -m manta._private.head.main ...`.

Started by `services` by module name; reports READY and its bound addresses
on `--ready-fd`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import shutil
import signal
import sys
import time

from manta._private.config import Config
from manta._private.head.head import Head
from manta._private.head.storage import StorageError, open_storage
from manta._private.services import read_token, service_arguments
from manta._private.transport.connection import new_event_loop


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
    args = parser.parse_args(argv)
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
        loop.run_until_complete(run_head(head, args.ready_fd, http, os.path.basename(args.session_dir.rstrip("/"))))
    except StorageError as e:
        log.error("%s", e)
        sys.exit(1)
    if args.embedded:
        _remove_session(args.session_dir, head.local_agent[0] if head.local_agent is not None else 0)


def _remove_session(session_dir: str, agent_pid: int, timeout: float = 5.0) -> None:
    """Removes an embedded cluster's session directory once its agent is gone.

    When the driver dies, the head and the agent get their SIGTERM together, and
    the agent may still make files in the directory (a new worker's log, the
    spill directory) while the head removes it. A file made in the middle of
    rmtree leaves its directory behind, and the session with it (seen in CI), so
    the head waits for the agent first, and removes again what raced it."""
    if agent_pid > 0:
        try:
            fd = os.pidfd_open(agent_pid)
        except OSError:  # gone already
            fd = -1
        if fd >= 0:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)  # readable once the process has exited
                poller.poll(timeout * 1000)
            finally:
                os.close(fd)
    for _ in range(3):
        shutil.rmtree(session_dir, ignore_errors=True)
        if not os.path.exists(session_dir):
            return
        time.sleep(0.1)


async def run_head(head: Head, ready_fd: int | None, http: tuple[str, int, bool] | None, session_name: str) -> None:
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
    if server is not None:
        await server.stop()
    await head.stop()


def _read_secret(fd: int) -> str:
    with os.fdopen(fd, "rb") as f:
        return f.read().decode()


if __name__ == "__main__":
    main()
