"""The head's HTTP server: one aiohttp application on the head's own event loop.

It serves every HTTP route of the cluster (docs/http.md): the version and
health checks, login, `/metrics`, and what each feature module adds. A
feature is a module with `setup(app, head)`, listed in `FEATURES`; its
handlers call `auth.require(request, Role.X)` for the principal. The
server listens on `--dashboard-host`:`--dashboard-port` (8265 by default
from `manta start --head`; 0: any free port), under TLS with the head's
certificate where the session has one.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from manta._private.head.http import auth, dashboard, jobs, metrics, state_routes
from manta._private.version import VERSION

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)

# The Jobs API version Ray's clients check (`ray.dashboard.modules.version`).
API_VERSION = "4"
# The Ray release whose API manta implements: Ray's clients refuse a server whose
# ray_version is below the one they need (1.9 for the Jobs API), so manta's own
# version (0.x) cannot go there; it is in manta_version.
RAY_API_VERSION = "2.60.0"
# Bodies larger than this are refused (413) by `request.read()`/`json()`;
# a route that takes uploads reads `request.content` in chunks instead.
MAX_BODY_BYTES = 1 << 20

Feature = Callable[[web.Application, "Head"], None]

# Every feature's routes; add yours here.
FEATURES: list[Feature] = [
    auth.setup,
    jobs.setup,
    metrics.setup,
    state_routes.setup,
    dashboard.setup,
]

HEAD_KEY = web.AppKey("manta.head", object)
SESSION_NAME_KEY = web.AppKey("manta.session_name", str)


def head_of(request: web.Request) -> Head:
    return request.app[HEAD_KEY]  # type: ignore[return-value]


async def version(request: web.Request) -> web.Response:
    return web.json_response({
        "version": API_VERSION, "ray_version": RAY_API_VERSION, "ray_commit": "", "manta_version": VERSION,
        "session_name": request.app[SESSION_NAME_KEY],
    })


async def healthz(request: web.Request) -> web.Response:
    """Ray's `/api/gcs_healthz`: the head answers, so its tables do."""
    if head_of(request).stopping.is_set():
        raise auth.error(503, "the head is stopping")
    return web.Response(text="success")


def make_app(head: Head, session_name: str = "") -> web.Application:
    app = web.Application(middlewares=[auth.middleware], client_max_size=MAX_BODY_BYTES)
    app[HEAD_KEY] = head
    app[SESSION_NAME_KEY] = session_name
    app[auth.AUTH_KEY] = auth.HttpAuth(head)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/gcs_healthz", healthz)
    app.router.add_get("/-/healthz", healthz)
    for setup in FEATURES:
        setup(app, head)
    return app


class HttpServer:
    """Runs `make_app(head)` on the head's loop; `url` is where it listens."""

    def __init__(self, head: Head, host: str, port: int, session_name: str = "") -> None:
        self.head = head
        self.host = host
        self.port = port
        self.app = make_app(head, session_name)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, fallback: bool = False) -> str:
        """Listens; with `fallback`, on any free port if `port` is taken."""
        tls = self.head.identity.tls
        ssl_context = tls.server(require_client_cert=False) if tls is not None else None
        # No access log: the audit log records who did what; per-request lines would flood head.log.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, ssl_context=ssl_context, backlog=128).start()
        except OSError as e:
            if not fallback or e.errno != errno.EADDRINUSE:
                await runner.cleanup()
                raise
            log.info("port %d is taken: the HTTP server listens on a free one", self.port)
            await web.TCPSite(runner, self.host, 0, ssl_context=ssl_context, backlog=128).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if ssl_context else 'http'}://{shown}:{port}"
        log.info("HTTP server (dashboard, /metrics, REST) at %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
