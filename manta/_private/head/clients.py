"""The client API server, on the head: sessions of drivers that are not on a node.

A client (`manta.init("manta://HOST:PORT")`) authenticates on the head's
TCP listener with a person's token (the cluster's owner token, or a
`submit`/`view` token) and sends `ClientConnect`. The head starts a proxy
driver for it on this node (`client/proxy_main.py`), which registers a job
with the client's own token, so it may do exactly what the client may. Each
`ClientCall` is relayed to the proxy as it is and its answer relayed back;
the head never decodes what a client asks of its proxy (docs/client.md).

A session outlives a lost client connection for `Config.client_reconnect_s`
(`Grace`, on an injected clock): the same principal may resume it with its
session id; after that its proxy is stopped, and with it the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Kind
from manta._private.transport.connection import Connection, ConnectionLost, MessageTooLarge, RemoteError

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)

PROXY_MAIN = "manta._private.client.proxy_main"
MESSAGES = (cm.ClientConnect, cm.ClientCall, cm.ProxyAttach, cm.ClientLog)
# Sessions at once: each is a process on the head's node.
MAX_SESSIONS = 256
# How long a proxy may take to start and register its job.
ATTACH_TIMEOUT_S = 60.0


class Grace:
    """Sans-IO: which detached sessions have waited out their grace period."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadlines: dict[bytes, float] = {}

    def lost(self, session_id: bytes, now: float) -> float:
        """The client's connection went: the session ends at the returned time unless it comes back."""
        deadline = self.deadlines[session_id] = now + self.seconds
        return deadline

    def back(self, session_id: bytes) -> None:
        self.deadlines.pop(session_id, None)

    def expired(self, now: float) -> list[bytes]:
        gone = [sid for sid, t in self.deadlines.items() if t <= now]
        for sid in gone:
            del self.deadlines[sid]
        return gone


@dataclass
class Session:
    session_id: bytes
    token_id: str
    who: str
    key: bytes
    proc: subprocess.Popen[bytes] | None = None
    client: Connection | None = None
    proxy: Connection | None = None
    # ClientConnects answered once the proxy has attached.
    waiting: list[tuple[Connection, cm.ClientConnect]] = field(default_factory=list)
    attached: cm.ProxyAttach | None = None
    ended: bool = False


class ClientSessions:
    def __init__(self, head: Head) -> None:
        self.head = head
        self.sessions: dict[bytes, Session] = {}
        self.by_key: dict[bytes, Session] = {}
        self.grace = Grace(head.config.client_reconnect_s)

    # -- messages -----------------------------------------------------------

    def handle(self, conn: Connection, msg: Any) -> None:
        t = type(msg)
        if t is cm.ClientCall:
            self._relay(conn, msg)
        elif t is cm.ClientConnect:
            self._connect(conn, msg)
        elif t is cm.ProxyAttach:
            self._attach(conn, msg)
        elif t is cm.ClientLog:
            s = self._of(conn, "proxy")
            if s is not None and s.client is not None:
                s.client.send(msg)

    def _of(self, conn: Connection, kind: str) -> Session | None:
        peer = conn.peer
        if isinstance(peer, tuple) and peer[0] == kind:
            return self.sessions.get(peer[1])
        return None

    def _relay(self, conn: Connection, msg: cm.ClientCall) -> None:
        s = self._of(conn, "client")
        if s is None or s.proxy is None or s.proxy.closed:
            conn.reply_error(msg, m.ErrorKind.RUNTIME, "this connection has no client session (send ClientConnect)")
            return

        def answered(reply: Any) -> None:
            if isinstance(reply, RemoteError):
                conn.reply_error(msg, reply.kind, reply.message)
            elif isinstance(reply, ConnectionLost):
                conn.reply_error(msg, m.ErrorKind.SYSTEM, f"the client's proxy driver is gone: {reply}")
            elif len(reply.body) >= cm.AS_IS:  # a value's chunk: relayed as it came, not copied
                try:
                    conn.send_split(cm.ClientReply(body=cm.EMPTY), "body", [reply.body], msg.rid)
                except MessageTooLarge as e:
                    conn.reply_error(msg, m.ErrorKind.VALUE, str(e))
            else:
                conn.reply(msg, cm.ClientReply(body=reply.body))

        if len(msg.body) >= cm.AS_IS:
            s.proxy.request_cb(cm.ClientCall(body=cm.EMPTY), answered, split=("body", [msg.body]))
        else:
            s.proxy.request_cb(cm.ClientCall(body=msg.body), answered)

    def _connect(self, conn: Connection, msg: cm.ClientConnect) -> None:
        p = conn.principal
        if p.kind is not Kind.PERSON or not p.token_id:
            conn.reply_error(msg, m.ErrorKind.AUTHORIZATION,
                             f"{p.describe()} cannot open a client session: connect with a token")
            return
        if conn.peer is not None:
            conn.reply_error(msg, m.ErrorKind.VALUE, "this connection already has a session")
            return
        if msg.resume:
            s = self.sessions.get(msg.resume)
            if s is None or s.ended or s.token_id != p.token_id:
                self.head.access.event("client.resume-refused", msg.resume.hex()[:16], detail=p.name)
                conn.reply_error(msg, m.ErrorKind.AUTHORIZATION,
                                 "no client session of yours to resume with that id: it ended (its grace period "
                                 "passed) or it belongs to another principal")
                return
            if s.client is not None and not s.client.closed:
                s.client.abort("the client resumed its session on a new connection")
            s.client = conn
            conn.peer = ("client", s.session_id)
            self.grace.back(s.session_id)
            self.head.access.event("client.resume", s.session_id.hex()[:16], detail=p.name)
            if s.attached is None:
                s.waiting.append((conn, msg))
            else:
                conn.reply(msg, self._session_reply(s, resumed=True))
            return
        if sum(not s.ended for s in self.sessions.values()) >= MAX_SESSIONS:
            conn.reply_error(msg, m.ErrorKind.VALUE, f"the head serves {MAX_SESSIONS} client sessions already")
            return
        s = Session(session_id=os.urandom(16), token_id=p.token_id, who=p.name, key=os.urandom(32))
        self.sessions[s.session_id] = s
        self.by_key[s.key] = s
        s.client = conn
        conn.peer = ("client", s.session_id)
        s.waiting.append((conn, msg))
        try:
            s.proc = self._spawn(s, msg)
        except OSError as e:
            self._end(s, f"its proxy could not start: {e}")
            return
        self.head.access.event("client.connect", s.session_id.hex()[:16], msg.namespace, detail=p.name)
        asyncio.get_running_loop().call_later(ATTACH_TIMEOUT_S, self._attach_timeout, s)

    def _spawn(self, s: Session, msg: cm.ClientConnect) -> subprocess.Popen[bytes]:
        head = self.head
        session_dir = head.session_dir
        local = next(a for a in head.addresses if a.startswith("unix:"))
        tcp = next((a for a in head.addresses if a.startswith("tcp:")), "")
        token = head.access.keys.token(s.token_id)
        setup = {
            "session_dir": session_dir, "head": local, "agent": f"unix:{session_dir}/agent.sock",
            "node_ip": tcp[4:].rpartition(":")[0] if tcp else "", "token": token, "key": s.key.hex(),
            "namespace": msg.namespace, "entrypoint": msg.entrypoint, "config": head.config.to_json(),
        }
        logs = os.path.join(session_dir, "logs")
        path = os.path.join(logs if os.path.isdir(logs) else session_dir, f"client-{s.session_id.hex()[:12]}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", PROXY_MAIN, "--session-dir", session_dir], stdin=subprocess.PIPE,
                stdout=fd, stderr=fd, start_new_session=True,
            )
        finally:
            os.close(fd)
        assert proc.stdin is not None
        # The token goes by pipe, never on a command line others can read.
        proc.stdin.write(json.dumps(setup).encode())
        proc.stdin.close()
        return proc

    def _attach(self, conn: Connection, msg: cm.ProxyAttach) -> None:
        s = self.by_key.get(msg.key)
        if s is None or s.ended or s.attached is not None or conn.principal.token_id != s.token_id:
            conn.reply_error(msg, m.ErrorKind.AUTHORIZATION, "no client session is waiting for this proxy")
            return
        s.proxy = conn
        s.attached = msg
        conn.peer = ("proxy", s.session_id)
        conn.reply(msg, m.Ack())
        for client, connect in s.waiting:
            client.reply(connect, self._session_reply(s, resumed=bool(connect.resume)))
        s.waiting.clear()

    def _session_reply(self, s: Session, resumed: bool) -> cm.ClientSession:
        a = s.attached
        assert a is not None
        limit = self.head.config.max_frame_bytes
        ca = b""
        path = os.path.join(self.head.session_dir, "tls", "ca.pem")
        if os.path.exists(path):
            with open(path, "rb") as f:
                ca = f.read()
        return cm.ClientSession(
            session_id=s.session_id, job_id=a.job_id, namespace=a.namespace, node_id=a.node_id, address=a.address,
            session_name=os.path.basename(self.head.session_dir.rstrip("/")),
            chunk_bytes=cm.chunk_bytes(limit), resumed=resumed, ca=ca,
        )

    def _attach_timeout(self, s: Session) -> None:
        if s.attached is None and not s.ended:
            self._end(s, f"its proxy did not start within {ATTACH_TIMEOUT_S:g} s")

    # -- connections ----------------------------------------------------------

    def on_close(self, conn: Connection) -> None:
        kind, sid = conn.peer
        s = self.sessions.get(sid)
        if s is None or s.ended:
            return
        if kind == "proxy" and s.proxy is conn:
            self._end(s, "its proxy driver exited")
        elif kind == "client" and s.client is conn:
            s.client = None
            deadline = self.grace.lost(sid, self.head.clock())
            delay = max(0.0, deadline - self.head.clock())
            asyncio.get_running_loop().call_later(delay + 0.01, self._check_grace)

    def _check_grace(self) -> None:
        for sid in self.grace.expired(self.head.clock()):
            s = self.sessions.get(sid)
            if s is not None and s.client is None and not s.ended:
                self._end(s, f"its client did not come back within {self.grace.seconds:g} s")

    def _end(self, s: Session, why: str) -> None:
        """Stops the proxy: its job ends when its driver connection closes."""
        if s.ended:
            return
        s.ended = True
        log.info("client session %s ends: %s", s.session_id.hex()[:12], why)
        self.head.access.event("client.end", s.session_id.hex()[:16], detail=why)
        self.by_key.pop(s.key, None)
        self.grace.back(s.session_id)
        for client, connect in s.waiting:
            client.reply_error(connect, m.ErrorKind.RUNTIME, f"the client session ended: {why}")
        s.waiting.clear()
        if s.client is not None:
            s.client.abort(f"client session ended: {why}", quiet=True)
        if s.proxy is not None:
            s.proxy.close()  # the proxy shuts its runtime down when this goes
        if s.proc is not None:
            self._reap(s.proc, asyncio.get_running_loop().time() + 10.0)
        self.sessions.pop(s.session_id, None)

    def _reap(self, proc: subprocess.Popen[bytes], kill_at: float) -> None:
        """Waits for an ended proxy (no zombie), killing it if it lingers."""
        if proc.poll() is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= kill_at:
            proc.kill()
            kill_at = float("inf")
        loop.call_later(0.2, self._reap, proc, kill_at)

    def stop(self) -> None:
        for s in list(self.sessions.values()):
            if s.proc is not None and s.proc.poll() is None:
                s.proc.terminate()
        for s in list(self.sessions.values()):
            if s.proc is not None:
                try:
                    s.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait()
