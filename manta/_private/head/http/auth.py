"""Who an HTTP request is from, and whether it may do what it asks.

Two ways to present a credential (docs/http.md):

- `Authorization: Bearer <token>`: a person's token (`manta token create`),
  or the cluster token file's content, which acts as the cluster's owner
  (the `local-admin` token a driver given the cluster token presents).
  Checked as the head checks tokens in handshakes: the token table derives
  the secret of the token's id and says whether it was revoked or expired.
- A browser session: `POST /api/login` with a token sets an HttpOnly,
  SameSite=Strict cookie and answers a CSRF token, which every
  state-changing request made with the cookie must carry in `X-CSRF-Token`.

`middleware` identifies every request before its handler runs: a request
with a bad credential, or with none on a route that is not open, is
refused with 401; a cookie request that changes state without its CSRF
token, with 403. Handlers then call `require(request, Role.X)`, which
raises 403 when the principal's role is too low. Every refusal and login
goes to the head's audit log. Errors are JSON: {"error": ..., "message": ...}.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web

from manta._private.auth.credentials import (
    LOCAL_ADMIN,
    AuthFailed,
    looks_like_person_token,
    parse_person_token,
    parse_token,
)
from manta._private.head.http.sessions import SessionTable, csrf_ok
from manta._private.protocol.identity import NOBODY, Principal, Role

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)

COOKIE = "manta_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes open to anyone: the version, health checks, and login itself.
OPEN_PATHS = frozenset({"/api/version", "/api/gcs_healthz", "/-/healthz", "/api/login"})
# A token is at most this long: anything longer is refused unread.
MAX_TOKEN_CHARS = 4096
# Phrases (cluster tokens given as words) already checked: each check costs
# ~0.1 s of scrypt, so the answer is kept, for a bounded number of phrases.
_PHRASE_CACHE = 64

PRINCIPAL_KEY = "manta.principal"
VIA_KEY = "manta.via"  # "bearer" | "cookie"
SESSION_KEY = "manta.session"


class JsonError(web.HTTPError):
    """An HTTP error of any status whose body is JSON: {"error": ..., "message": ...}."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        self.status_code = status  # read by Response.__init__: one class serves every status
        body = json.dumps({"error": _reason(status), "message": message, **extra})
        headers = {"WWW-Authenticate": 'Bearer realm="manta"'} if status == 401 else None
        super().__init__(text=body, content_type="application/json", headers=headers)


def error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An HTTP error (4xx, 5xx) whose body is JSON naming what was wrong."""
    return JsonError(status, message, **extra)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def principal_json(p: Principal) -> dict[str, Any]:
    return {"name": p.name, "role": p.role.name.lower(), "namespaces": list(p.namespaces), "token_id": p.token_id,
            "expires": p.expires}


class HttpAuth:
    """The head's HTTP credentials: bearer tokens, sessions, and the audit of both."""

    def __init__(self, head: Head, sessions: SessionTable | None = None) -> None:
        self.head = head
        self.sessions = sessions or SessionTable(head.access.tokens.clock)
        self.open_paths: set[str] = set(OPEN_PATHS)
        # Prefixes a feature opens (e.g. the dashboard's static login page).
        self.open_prefixes: list[str] = []
        self._phrases: OrderedDict[bytes, bool] = OrderedDict()
        self._phrase_lock = asyncio.Lock()

    def open_path(self, path: str, prefix: bool = False) -> None:
        """Lets a feature serve `path` (or everything under it) without a credential."""
        if prefix:
            self.open_prefixes.append(path)
        else:
            self.open_paths.add(path)

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or any(path.startswith(p) for p in self.open_prefixes)

    @property
    def audit(self) -> Any:
        return self.head.access.audit

    # -- tokens -----------------------------------------------------------

    async def principal_of_token(self, text: str) -> Principal:
        """The principal a token stands for; AuthFailed(why) if it is not valid."""
        text = text.strip()
        if not text:
            raise AuthFailed("the token is empty")
        if len(text) > MAX_TOKEN_CHARS:
            raise AuthFailed(f"the token is over {MAX_TOKEN_CHARS} characters")
        parsed = parse_person_token(text)
        if parsed is not None:
            token_id, secret = parsed
            expected, principal = self.head.access.tokens.resolve(token_id)
            if not hmac.compare_digest(expected, secret):
                raise AuthFailed("wrong token secret")
            return principal
        if looks_like_person_token(text):
            raise AuthFailed("the token is not a well-formed manta token (mt1.<id>.<secret>)")
        if await self._is_cluster_token(text):
            return self.head.access.tokens.resolve(LOCAL_ADMIN)[1]
        raise AuthFailed("the token is neither a person's token of this cluster nor its cluster token")

    async def _is_cluster_token(self, text: str) -> bool:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) == 32:
            return hmac.compare_digest(raw, self.head.token)
        # A phrase: stretched with scrypt, off the loop and one at a time, so
        # a flood of guesses slows only other phrase logins.
        key = hashlib.sha256(text.encode()).digest()
        known = self._phrases.get(key)
        if known is not None:
            return known
        async with self._phrase_lock:
            loop = asyncio.get_running_loop()
            derived = await loop.run_in_executor(None, parse_token, text)
            ok = hmac.compare_digest(derived, self.head.token)
        self._phrases[key] = ok
        while len(self._phrases) > _PHRASE_CACHE:
            self._phrases.popitem(last=False)
        return ok

    # -- requests ---------------------------------------------------------

    async def identify(self, request: web.Request) -> None:
        """Sets who the request is from (nobody, if it has no credential); a bad one is a 401."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, text = header.partition(" ")
            if scheme.lower() != "bearer" or not text.strip():
                self._failed(request, "the Authorization header is not 'Bearer <token>'")
            try:
                principal = await self.principal_of_token(text)
            except AuthFailed as e:
                self._failed(request, str(e))
            request[PRINCIPAL_KEY] = principal
            request[VIA_KEY] = "bearer"
            return
        sid = request.cookies.get(COOKIE)
        if sid:
            session = self.sessions.get(sid)
            if session is None:
                self._failed(request, "the session expired or is not known: log in again")
            try:
                _, principal = self.head.access.tokens.resolve(session.token_id)
            except AuthFailed as e:
                self.sessions.close(sid)
                self._failed(request, f"the session's {e}")
            request[PRINCIPAL_KEY] = principal
            request[VIA_KEY] = "cookie"
            request[SESSION_KEY] = session

    def _failed(self, request: web.Request, why: str) -> NoReturn:
        self.audit.auth_failed(peer(request), f"http {request.method} {request.path}: {why}")
        raise error(401, why)

    def refuse(self, request: web.Request, principal: Principal, status: int, why: str) -> web.HTTPException:
        self.audit.refused(principal, f"http.{request.method.lower()}", target=request.path, peer=peer(request),
                           detail=why)
        return error(status, why)


def peer(request: web.Request) -> str:
    transport = request.transport
    name = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return request.remote or ""


AUTH_KEY = web.AppKey("manta.http_auth", HttpAuth)


def require(request: web.Request, role: Role) -> Principal:
    """The request's principal, if its role is at least `role`; else a 401
    (no credential) or a 403 (too low a role), audited."""
    auth = request.app[AUTH_KEY]
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is None:
        auth.audit.refused(NOBODY, f"http.{request.method.lower()}", target=request.path, peer=peer(request),
                           detail="no credential")
        raise error(401, f"{request.path} needs a credential: 'Authorization: Bearer <token>', "
                         "or a session from POST /api/login")
    if principal.role < role:
        raise auth.refuse(request, principal, 403,
                          f"{principal.describe()} may not {request.method} {request.path}: "
                          f"it needs role {role.name.lower()}")
    return principal


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication, CSRF, and errors as JSON (never a traceback)."""
    auth = request.app[AUTH_KEY]
    try:
        await auth.identify(request)
        principal: Principal | None = request.get(PRINCIPAL_KEY)
        if principal is None and not auth.is_open(request.path):
            require(request, Role.VIEW)  # the 401, audited
        session = request.get(SESSION_KEY)
        if (session is not None and request.method not in SAFE_METHODS and request.path != "/api/login"
                and not csrf_ok(session, request.headers.get(CSRF_HEADER))):
            assert principal is not None
            raise auth.refuse(request, principal, 403,
                              f"a {request.method} with a session cookie needs its CSRF token in {CSRF_HEADER}")
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            # aiohttp's own (404, 405, 413): said in JSON too, with their headers (Allow).
            body = {"error": _reason(e.status), "message": (e.text or e.reason).removeprefix(f"{e.status}: ")}
            return web.json_response(body, status=e.status, headers={
                k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")})
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        raise error(500, "the head could not answer this request (its log says why)") from None


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; a 400 naming what is wrong otherwise (a 413 if too large)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise error(413, f"the body is over {request.client_max_size} bytes") from None
    if not raw:
        raise error(400, "this request needs a JSON object as its body")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise error(400, f"the body must be a JSON object, not {type(data).__name__}")
    return data


# -- routes: login, logout, who am I -----------------------------------------


async def login(request: web.Request) -> web.Response:
    auth = request.app[AUTH_KEY]
    data = await json_body(request)
    token = data.get("token")
    if not isinstance(token, str):
        raise error(400, "the body must be {\"token\": \"<token>\"}")
    try:
        principal = await auth.principal_of_token(token)
    except AuthFailed as e:
        auth._failed(request, str(e))
    session = auth.sessions.open(principal.token_id, principal.expires)
    auth.audit.record(principal, "auth.login", peer=peer(request), detail="http session")
    resp = web.json_response({"csrf_token": session.csrf, "expires": session.expires,
                              "principal": principal_json(principal)})
    resp.set_cookie(COOKIE, session.session_id, httponly=True, samesite="Strict", path="/",
                    secure=request.secure, max_age=int(max(1.0, session.expires - auth.sessions.clock())))
    return resp


async def logout(request: web.Request) -> web.Response:
    principal = require(request, Role.VIEW)
    auth = request.app[AUTH_KEY]
    session = request.get(SESSION_KEY)
    if session is not None:
        auth.sessions.close(session.session_id)
        auth.audit.record(principal, "auth.logout", peer=peer(request), detail="http session")
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def whoami(request: web.Request) -> web.Response:
    """Who the credential is; for a session, its CSRF token too (a reloaded page gets it here)."""
    principal = require(request, Role.VIEW)
    body: dict[str, Any] = {"principal": principal_json(principal), "via": request.get(VIA_KEY)}
    session = request.get(SESSION_KEY)
    if session is not None:
        body["csrf_token"] = session.csrf
        body["expires"] = session.expires
    return web.json_response(body)


async def tokens(request: web.Request) -> web.Response:
    """People's tokens (never their secrets), as `manta token list`: admins only."""
    require(request, Role.ADMIN)
    table = request.app[AUTH_KEY].head.access.tokens.tokens
    return web.json_response({"tokens": [
        {"token_id": i.token_id, "role": i.role.name.lower(), "namespaces": list(i.namespaces),
         "created": i.created, "expires": i.expires, "revoked": i.revoked, "note": i.note,
         "created_by": i.created_by}
        for i in sorted(table.values(), key=lambda i: i.created)
    ]})


def setup(app: web.Application, head: Head) -> None:
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/session", whoami)
    app.router.add_get("/api/tokens", tokens)
