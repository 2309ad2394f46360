"""The dashboard's pages: static files inside the package, served by the
head's own HTTP server (docs/dashboard.md).

The page itself is open (it is the login form until the browser has a
session); everything it shows comes from routes that check the role
(state_routes.py, the Jobs API, `/api/metrics/history`). The chart
library is bundled into `static/vendor/` by `make dashboard` and
committed, so an installed package serves it offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from manta._private.head.http import auth

if TYPE_CHECKING:
    from manta._private.head.head import Head

STATIC = Path(__file__).parent / "static"
PREFIX = "/dashboard/"
# A strict policy: only the head's own scripts and styles run, and only it is fetched.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def index(request: web.Request) -> web.FileResponse:
    resp = web.FileResponse(STATIC / "index.html")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound(PREFIX)


def setup(app: web.Application, head: Head) -> None:
    app[auth.AUTH_KEY].open_path("/")
    app[auth.AUTH_KEY].open_path(PREFIX, prefix=True)
    app.router.add_get("/", root)
    app.router.add_get(PREFIX, index)
    app.router.add_static(PREFIX + "static/", STATIC, show_index=False, follow_symlinks=False)
