"""Authenticated message connections over asyncio (Unix sockets or TCP).

A `Connection` is an asyncio protocol: bytes in, frames out through the
sans-IO `FrameDecoder`, the credentials' handshake first (`auth.handshake`),
typed messages after. Once it completes, `principal` says who the peer is;
the service that handles its messages decides what that principal may do.
Writes issued during one loop iteration are joined into one syscall.
Malformed or oversized frames close only the offending connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec.structs import replace

from manta._private.auth.credentials import AuthFailed, Identity
from manta._private.auth.handshake import (
    MAX_HANDSHAKE_FRAME,
    ClientHandshake,
    ServerHandshake,
    TokenBook,
    refusal,
)
from manta._private.auth.tls_contexts import CLUSTER_NAME
from manta._private.protocol import auth_messages as am
from manta._private.protocol import client_messages as cm
from manta._private.protocol import messages as m
from manta._private.protocol import metrics_messages as mm
from manta._private.protocol import state_messages as sm
from manta._private.protocol import tool_messages as tm
from manta._private.protocol.chunks import Parts, chunk_head, chunk_prefix, split
from manta._private.protocol.framing import HEADER, FrameDecoder, FrameTooLarge, Landing
from manta._private.protocol.identity import NOBODY, Principal, Role
from manta._private.transport.gate import DEFAULT_LIMITS, LOCAL, Gate, Limits, peer_key
from manta._private.transport.tls_stream import TlsLayer, TlsTransport

log = logging.getLogger(__name__)

# Frames this large go out as they are, gathered by the kernel, instead of
# being joined with others into one more buffer.
BIG_FRAME = 256 * 1024

# Answers to a request: matched to the waiting future by `rid`.
REPLY_TYPES = (
    m.Ack,
    m.ErrorReply,
    m.DriverRegistered,
    m.NodeRegistered,
    m.KvValue,
    m.FunctionBlob,
    m.ActorRegistered,
    m.ActorState,
    m.ActorList,
    m.TaskList,
    m.ClusterInfo,
    m.ClientRegistered,
    m.LeaseGranted,
    m.StoreCreated,
    m.StorePinned,
    m.StoreChunk,
    m.PlacementGroupState,
    m.PlacementGroupList,
    m.LeaseSpill,
    m.Resources,
    m.TaskDone,
    m.ObjectValue,
    *sm.REPLIES,
    *am.REPLIES,
    *tm.REPLIES,
    *cm.REPLIES,
    *mm.REPLIES,
)

# Never sent but as an answer: one that matches no request is dropped.
ONLY_ANSWERS = frozenset({m.ErrorReply, m.TaskDone})


class ConnectionLost(ConnectionError):
    """The peer went away before answering."""


class PeerNodeDied(ConnectionLost):
    """The head declared the peer's node dead."""


class AuthRejected(ConnectionLost):
    """The peer refused our credential, or could not prove its own."""


class TlsRefused(AuthRejected):
    """TLS with the peer failed: a certificate of another CA, an expired one, or a plaintext end."""


class MessageTooLarge(ValueError):
    """A message we were about to send is larger than a peer accepts (max_frame_bytes)."""


class RemoteError(Exception):
    """The peer answered a request with an error."""

    def __init__(self, kind: m.ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


Handler = Callable[["Connection", Any], None]


class Connection(asyncio.BufferedProtocol):
    def __init__(
        self,
        identity: Identity,
        *,
        server_side: bool,
        handler: Handler,
        on_close: Callable[[Connection], None] | None = None,
        name: str = "",
        tokens: TokenBook | None = None,
        expect: Role | None = None,
        on_auth: Callable[[Connection, str], None] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        gate: Gate | None = None,
    ) -> None:
        self.server_side = server_side
        self.limits = limits
        # Server side: counts this connection against its peer's address until it authenticates.
        self.gate = gate
        self._peer_key = LOCAL
        self._gated = False
        self._hs_timer: asyncio.TimerHandle | None = None
        self._refusing = False
        # Server side: told the outcome of each handshake ("" on success, else why), for the audit log.
        self.on_auth = on_auth
        self.handler = handler
        self.on_close = on_close
        self.name = name
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        self._server_hs = ServerHandshake(identity, tokens) if server_side else None
        self._client_hs = None if server_side else ClientHandshake(identity, expect)
        # Who the peer proved to be; nobody until the handshake completes.
        self.principal: Principal = NOBODY
        # Both handshake nonces: what names this connection to both ends.
        self.session_id = b""
        self._refusal = ""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._proof_sent = False
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any] | Callable[[Any], None]] = {}
        self._out: list[bytes | memoryview] = []
        # Guards _out and socket writes: other threads may send (send_threadsafe).
        self._wlock = threading.Lock()
        self._fd = -1
        # Under TLS: our own TLS layer, which any thread may write through (tls_stream.py).
        self._tls: TlsTransport | None = None
        self._flush_scheduled = False
        self._dropped = False  # an answer to no request came (and was logged)
        self._out_big = False
        self._queued = 0  # bytes in _out: with the transport's buffer, bounded by max_send_buffer
        self._loop = asyncio.get_running_loop()
        # Free-form state for the service that owns this connection.
        self.peer: Any = None
        # Chunks asked for with `request_into`: rid -> where the answer's data goes.
        self._landings: dict[int, memoryview] = {}
        self._landing_now = 0  # the rid of the chunk the decoder is landing, if any
        self._landing_into: memoryview | None = None
        # Turns an authenticated frame into a message. A process that stands in
        # for many nodes (`sim/`) replaces it on its head links, so that frames
        # it ignores (every node's ClusterView) are not decoded once per node.
        self.decode: Callable[[bytes | bytearray], Any] = m.decode

    # -- asyncio protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if isinstance(transport, TlsTransport):
            # Writes from other threads encrypt and go to the socket at once (tls_stream.py).
            self._tls = transport
        elif sock is not None:
            # Writing straight to the fd skips the loop; under TLS it would skip the cipher.
            if transport.get_extra_info("ssl_object") is None:
                self._fd = sock.fileno()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._server_hs is not None:
            self._peer_key = peer_key(transport.get_extra_info("peername"))
            if self.gate is not None:
                if not self.gate.admit(self._peer_key):
                    self.abort("too many connections authenticating from this address", quiet=True)
                    return
                self._gated = True
            self._hs_timer = self._loop.call_later(self.limits.handshake_timeout_s, self._handshake_timeout)
            self._write_now(self._server_hs.start())

    @property
    def encrypted(self) -> bool:
        """Whether the link runs TLS (which authenticates every record)."""
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    # The socket is read (or the TLS layer decrypts) into the decoder's
    # buffer: an object chunk's bytes straight into the store they belong
    # in. As a plain Protocol, uvloop made a bytes object of every read and
    # the decoder copied it again: a whole copy more per byte of a transfer.
    # Pulls of 300 MB into used space, without chunk tags: 3.2 GB/s against
    # 2.65 (medians of 12, one run; raw loopback TCP 5.2).
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._refusing:
            return  # a failed handshake waits out its delay; nothing more is read
        self._frames(self._decoder.filled, nbytes)

    def _frames(self, decode: Callable[[Any], list[bytes | bytearray]], data: Any) -> None:
        try:
            frames = decode(data)
        except FrameTooLarge as e:
            if self.ready.done():
                self.abort(f"oversized frame from {self.principal.name}: {e} (Config.max_frame_bytes)")
            else:
                self._auth_failed(f"oversized handshake frame: {e}")
            return
        for frame in frames:
            if self.closed or self._refusing:
                return
            if type(frame) is m.StoreChunk:  # landed where it was asked to go (request_into)
                self._landing_now, self._landing_into = 0, None
                self._dispatch(frame)
                continue
            if not self.ready.done():
                self._handshake(bytes(frame))  # tiny: handshake frames are capped
                continue
            try:
                msg = self.decode(frame)
            except m.DecodeError as e:
                self.abort(f"malformed message: {e}")
                return
            self._dispatch(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)

    # -- handshake --------------------------------------------------------

    def _handshake(self, frame: bytes) -> None:
        try:
            if self._server_hs is not None:
                try:
                    self._write_now(self._server_hs.receive(frame))
                except AuthFailed as e:
                    self._auth_failed(str(e))
                    return
                assert self._server_hs.peer is not None
                self.principal = self._server_hs.peer
                self.session_id = self._server_hs.session_id
                self._ungate()
                if self.on_auth is not None:
                    self.on_auth(self, "")
            else:
                hs = self._client_hs
                assert hs is not None
                if hs.server_nonce is None:
                    self._write_now(hs.receive_challenge(frame))
                    self._proof_sent = True
                    return
                self.principal = hs.receive_welcome(frame)
                self.session_id = hs.session_id
        except AuthFailed as e:
            self._refusal = str(e)
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self.abort(f"authentication failed from {peer or 'a local process'}: {e}")
            return
        self._decoder.max_frame = self.limits.max_frame
        self._decoder.land = self._land  # only once authenticated
        self.ready.set_result(None)

    def _auth_failed(self, why: str) -> None:
        """Server side: the peer failed to authenticate. It is told why after a delay
        that grows with its address's failures (`Gate.failed`, which also logs it,
        rate-limited); meanwhile nothing more it sends is read."""
        if self.on_auth is not None:
            self.on_auth(self, why)
        self._refusing = True
        if self.gate is not None:
            delay = self.gate.failed(self._peer_key, why)
        else:
            delay = 0.0
            log.warning("authentication failed from %s: %s", self._peer_key, why)

        def refuse() -> None:
            self._write_now(refusal(why))  # the client learns why
            self.abort(f"authentication failed: {why}", quiet=True)

        if delay > 0:
            self._loop.call_later(delay, refuse)
        else:
            refuse()

    def _handshake_timeout(self) -> None:
        self._hs_timer = None
        if not self.ready.done() and not self.closed and not self._refusing:
            self._auth_failed(f"no handshake within {self.limits.handshake_timeout_s:g} s")

    def _ungate(self) -> None:
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        if self._gated:
            self._gated = False
            assert self.gate is not None
            self.gate.leave(self._peer_key)

    # -- sending ----------------------------------------------------------

    def _write_now(self, payload: bytes) -> None:
        if self.transport is not None and not self.closed:
            with self._wlock:
                self.transport.write(HEADER.pack(len(payload)) + payload)

    def send(self, msg: Any, rid: int = 0) -> None:
        """Queues `msg` (as answer or request `rid`, if given); everything
        queued in one loop iteration goes out in one write.

        Loop thread only; other threads use `send_threadsafe`.
        """
        if self.closed:
            return
        header, payload = m.frame_parts(msg, rid)
        self.send_encoded(msg, header, payload)

    def send_encoded(self, msg: Any, header: bytes, payload: bytes) -> None:
        """Queues `msg` already encoded (`m.frame_parts(msg)`): one message
        for many peers is encoded once (the head's cluster view, to every
        node). Loop thread only."""
        if self.closed:
            return
        size = 4 + len(payload)
        if size > self.limits.max_frame:
            raise self._too_large(msg, size)
        if size >= BIG_FRAME:
            self._queue((header, payload), True, size)  # written as it is: no copy to join them
        else:
            self._queue((header + payload,), False, size)

    def _too_large(self, msg: Any, size: int) -> MessageTooLarge:
        return MessageTooLarge(
            f"a {type(msg).__name__} of {size} bytes is larger than a peer accepts "
            f"(max_frame_bytes: {self.limits.max_frame}); pass large values as objects (put) instead"
        )

    def _queue(self, parts: tuple[bytes | memoryview, ...], big: bool, size: int) -> None:
        """Loop thread: adds a frame's parts to the next write."""
        with self._wlock:
            self._out += parts
            self._queued += size
            queued = self._queued
            self._out_big = self._out_big or big
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        if queued > self.limits.max_send_buffer:
            # Answers to many requests read in one go, not yet flushed.
            self._not_reading(queued)

    def _not_reading(self, waiting: int) -> None:
        # A peer that does not read its replies would hold our memory without bound.
        self.abort(
            f"{self.principal.name} is not reading: {waiting} bytes wait to be sent to it "
            f"(Config.max_send_buffer_bytes is {self.limits.max_send_buffer})"
        )

    def _flush(self) -> None:
        with self._wlock:
            self._flush_scheduled = False
            if self.transport is None or self.closed:
                return
            out = self._out
            self._out = []
            self._queued = 0
            if self._out_big:
                # Large payloads (object chunks) go out as they are, gathered
                # by the kernel, instead of being copied into one more buffer.
                self._out_big = False
                self.transport.writelines(out)
            elif out:
                data = b"".join(out)
                # Straight to the socket, as from other threads: uvloop's write
                # holds the GIL through the syscall, which wakes the peer
                # (12-14 us a write here, against 2 to a peer already awake),
                # and the caller's thread could not run Python meanwhile.
                n = self._write_direct(data)
                if n < len(data):
                    self.transport.write(data[n:] if n else data)
            waiting = self.transport.get_write_buffer_size()
        if waiting > self.limits.max_send_buffer:
            self._not_reading(waiting)

    def send_chunk(self, rid: int, data: memoryview, digest: bytes = b"") -> None:
        """Answers a StoreReadChunk with `data` written straight from the store.

        The bytes must stay as they are until written: the reader pins the
        object for the whole transfer. Loop thread only.
        """
        if self.closed:
            return
        prefix = chunk_prefix(rid, len(data), digest)
        self._queue((HEADER.pack(len(prefix) + len(data)), prefix, data), True, 4 + len(prefix) + len(data))

    def send_threadsafe(self, msg: Any, rid: int = 0) -> None:
        """Sends from any thread, writing straight to the socket when nothing is queued.

        Skipping the hop to the I/O thread saves two thread wake-ups per
        message. Order is kept: while anything is queued or buffered, the
        frame joins the one queue the loop drains.
        """
        if self.closed:
            return
        header, payload = m.frame_parts(msg, rid)
        size = 4 + len(payload)
        if size > self.limits.max_frame:
            raise self._too_large(msg, size)
        if size >= BIG_FRAME:
            self._queue_threadsafe((header, payload), size)
            return
        frame = header + payload
        with self._wlock:
            transport = self.transport
            if transport is None or self.closed:
                return
            n = 0
            if self._tls is not None:
                # Saves the hop to the loop thread, as below (tls_stream.py says how it was measured).
                if not self._out and self._tls.write_from_thread(frame):
                    return
            else:
                n = self._write_direct(frame)
            if n == len(frame):
                return
            self._out.append(frame[n:] if n else frame)
            self._queued += len(frame) - n
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon_threadsafe(self._flush)

    def _write_direct(self, data: bytes) -> int:
        """Under _wlock: writes what the plain socket takes of `data` now, with
        os.write (which lets go of the GIL); 0 if anything is queued before it,
        if the link runs TLS or is closing, or on EAGAIN or a broken socket
        (which the loop notices)."""
        transport = self.transport
        if self._fd < 0 or self._out or transport is None or transport.get_write_buffer_size() or transport.is_closing():
            return 0
        try:
            return os.write(self._fd, data)
        except OSError:
            return 0

    def _queue_threadsafe(self, parts: tuple[bytes | memoryview, ...], size: int) -> None:
        """Any thread: a large frame's parts, for the loop to write as they
        are, where a write from here would copy them to join them and again
        for what the socket did not take."""
        with self._wlock:
            if self.transport is None or self.closed:
                return
            self._out += parts
            self._queued += size
            self._out_big = True
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon_threadsafe(self._flush)

    # -- large fields sent as they are (chunks.split) ----------------------

    def _split_frame(self, msg: Any, field: str, data: Parts, rid: int) -> tuple[tuple[bytes | memoryview, ...], int]:
        if rid:
            msg = replace(msg, rid=rid)
        parts = split(msg, field, data)
        if parts is None:
            parts = [m.encode(replace(msg, **{field: b"".join(data)}))]
        size = 4 + sum(len(p) for p in parts)
        if size > self.limits.max_frame:
            raise self._too_large(msg, size)
        return (HEADER.pack(size - 4), *parts), size

    def send_split(self, msg: Any, field: str, data: Parts, rid: int = 0) -> None:
        """Sends `msg` with its bytes field `field` holding `data` joined,
        none of whose parts is copied: a value's chunk relayed for a remote
        client. The parts must stay as they are until written. Loop thread."""
        if self.closed:
            return
        parts, size = self._split_frame(msg, field, data, rid)
        self._queue(parts, True, size)

    def send_split_threadsafe(self, msg: Any, field: str, data: Parts, rid: int = 0) -> None:
        """`send_split` from any thread."""
        if self.closed:
            return
        parts, size = self._split_frame(msg, field, data, rid)
        self._queue_threadsafe(parts, size)

    def reply_split_threadsafe(self, request: Any, msg: Any, field: str, data: Parts) -> None:
        """`reply_threadsafe` of what `send_split` sends."""
        try:
            self.send_split_threadsafe(msg, field, data, request.rid)
        except MessageTooLarge as e:
            self.send_threadsafe(m.ErrorReply(kind=m.ErrorKind.VALUE, message=str(e), rid=request.rid))

    def request_split(self, msg: Any, field: str, data: Parts) -> asyncio.Future[Any]:
        """`request` of what `send_split` sends."""
        return self._ask(msg, None, (field, data))

    def request(self, msg: Any) -> asyncio.Future[Any]:
        """Sends `msg` with a fresh rid; the future resolves with the answer."""
        return self._ask(msg, None)

    def _ask(self, msg: Any, into: memoryview | None, split: tuple[str, Parts] | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.closed:
            fut.set_exception(ConnectionLost(f"connection to {self.name} is closed"))
            return fut
        rid = next(self._rids)
        self._pending[rid] = fut
        if into is not None:
            self._landings[rid] = into
        try:
            if split is None:
                self.send(msg, rid)
            else:
                self.send_split(msg, split[0], split[1], rid)
        except MessageTooLarge:
            del self._pending[rid]
            self._landings.pop(rid, None)
            raise
        return fut

    def request_into(self, msg: m.StoreReadChunk, into: memoryview) -> asyncio.Future[Any]:
        """`request` of a chunk whose bytes the decoder writes (or the TLS
        layer decrypts) straight into `into`, which must have the chunk's
        length: the answer's `data` is then `into` itself. A short answer, or
        an error, comes as `request`'s would. Loop thread only; a caller
        that stops waiting calls `forget_landing`, as `into` may be reused."""
        return self._ask(msg, into)

    def forget_landing(self, into: memoryview) -> None:
        """Nothing more is written into `into`, even by a chunk half landed."""
        for rid, dest in list(self._landings.items()):
            if dest is into:
                del self._landings[rid]
        if self._landing_now and self._decoder.landing and self._landing_into is into:
            self._decoder.divert()  # its answer never comes: nobody waits for it
            self._pending.pop(self._landing_now, None)
            self._landing_now, self._landing_into = 0, None

    def _land(self, head: bytes, size: int) -> Landing | None:
        """The decoder's question on a large frame: does it land somewhere?"""
        if not self._landings:
            return None
        parsed = chunk_head(head, size)
        if parsed is None:
            return None
        rid, digest, plen = parsed
        dest = self._landings.get(rid)
        if dest is None or len(dest) != size - plen:
            return None  # answered as a plain frame: the length check is the reader's
        del self._landings[rid]
        self._landing_now, self._landing_into = rid, dest
        return plen, dest, m.StoreChunk(rid=rid, digest=digest, data=dest)

    def request_cb(self, msg: Any, callback: Callable[[Any], None], split: tuple[str, Parts] | None = None) -> None:
        """Like `request`, but calls `callback(answer_or_exception)`: no
        future. With `split`, sends as `send_split` does."""
        if self.closed:
            callback(ConnectionLost(f"connection to {self.name} is closed"))
            return
        rid = next(self._rids)
        self._pending[rid] = callback
        try:
            if split is None:
                self.send(msg, rid)
            else:
                self.send_split(msg, split[0], split[1], rid)
        except MessageTooLarge:
            del self._pending[rid]
            raise

    def reply(self, request: Any, msg: Any) -> None:
        try:
            self.send(msg, request.rid)
        except MessageTooLarge as e:  # the asker learns why rather than waiting
            self.reply_error(request, m.ErrorKind.VALUE, str(e))
        except (OverflowError, TypeError, msgspec.EncodeError) as e:
            # An answer built from something a peer claimed that cannot be encoded.
            log.error("cannot encode a %s for %s: %s", type(msg).__name__, self.principal.name, e)
            self.reply_error(request, m.ErrorKind.SYSTEM, f"the answer could not be encoded: {e}")

    def reply_threadsafe(self, request: Any, msg: Any) -> None:
        try:
            self.send_threadsafe(msg, request.rid)
        except MessageTooLarge as e:
            self.send_threadsafe(m.ErrorReply(kind=m.ErrorKind.VALUE, message=str(e), rid=request.rid))

    def request_cb_threadsafe(self, msg: Any, callback: Callable[[Any], None]) -> bool:
        """`request_cb` from any thread; the callback runs on the loop thread.

        Returns False (sending nothing) if the connection is closed.
        """
        if self.closed:
            return False
        rid = next(self._rids)
        self._pending[rid] = callback
        if self.closed and self._pending.pop(rid, None) is not None:
            return False  # closed meanwhile, and _closed() will not call us
        try:
            self.send_threadsafe(msg, rid)
        except MessageTooLarge:
            self._pending.pop(rid, None)
            raise
        return True

    def reply_error(self, request: Any, kind: m.ErrorKind, message: str) -> None:
        self.send(m.ErrorReply(kind=kind, message=message, rid=request.rid))

    # -- receiving --------------------------------------------------------

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, REPLY_TYPES):
            if self._landings:
                self._landings.pop(msg.rid, None)  # answered some other way: a short chunk, an error
            waiter = self._pending.pop(msg.rid, None)
            if waiter is not None:
                result: Any = msg
                if isinstance(msg, m.ErrorReply):
                    result = RemoteError(msg.kind, msg.message)
                if isinstance(waiter, asyncio.Future):
                    if not waiter.done():
                        if isinstance(result, BaseException):
                            waiter.set_exception(result)
                        else:
                            waiter.set_result(result)
                else:
                    waiter(result)
                return
            if type(msg) in ONLY_ANSWERS:
                # An answer nobody waits for (late, or twice): dropped. Handed
                # on, it was refused with an ErrorReply, which the peer refused
                # in turn, each answering the other's, ~4,500 a second. Said
                # once a connection, so that an answer given twice shows.
                level = logging.DEBUG if self._dropped else logging.WARNING
                self._dropped = True
                log.log(level, "dropped a %s from %s that answers no request of ours",
                        type(msg).__name__, self.name)
                return
        try:
            self.handler(self, msg)
        except Exception:
            log.exception("handler failed on %s from %s", type(msg).__name__, self.name)

    # -- closing ----------------------------------------------------------

    def abort(self, reason: str, error: ConnectionLost | None = None, *, quiet: bool = False) -> None:
        """Drops the connection; waiting requests fail with `error` if given.

        `quiet`: the caller logged it already (through a rate limit)."""
        if not self.closed and not quiet:
            if self.gate is not None:
                # A peer's connections, closed for what it sent: logged at a bounded rate.
                who = self.principal.name if self.ready.done() else self._peer_key
                self.gate.notes.note(f"close {who}", "closing a connection from %s: %s", who, reason)
            else:
                log.warning("closing connection %s: %s", self.name, reason)
        if self.transport is not None:
            self.transport.abort()
        self._closed(error or ConnectionLost(reason))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()

    def _closed(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._ungate()
        with self._wlock:
            self._out, self._queued = [], 0  # what a peer never read is let go
        err: ConnectionLost
        if (self._refusal and not self.server_side) or (self._proof_sent and not self.ready.done()):
            err = AuthRejected(
                f"{self.name or 'the peer'} refused the connection during authentication: "
                f"{self._refusal or 'it does not accept this credential'}"
            )
        elif isinstance(exc, PeerNodeDied):
            err = exc
        else:
            err = ConnectionLost(f"connection to {self.name or 'peer'} lost: {exc or 'closed'}")
        if not self.ready.done():
            self.ready.set_exception(err)
            self.ready.exception()  # mark retrieved
        self._landings = {}
        pending = self._pending
        self._pending = {}
        for waiter in pending.values():
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_exception(err)
            else:
                try:
                    waiter(err)
                except Exception:
                    log.exception("close callback failed")
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                log.exception("on_close failed for %s", self.name)


# -- addresses ---------------------------------------------------------------


def parse_address(address: str) -> tuple[str, str, int]:
    """'unix:/path' -> ('unix', path, 0); 'tcp:host:port' -> ('tcp', host, port)."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return "unix", rest, 0
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return "tcp", host.strip("[]"), int(port)
    raise ValueError(f"bad address {address!r}: expected 'unix:/path' or 'tcp:HOST:PORT'")


async def connect(
    address: str,
    identity: Identity,
    handler: Handler,
    *,
    on_close: Callable[[Connection], None] | None = None,
    name: str = "",
    timeout: float = 30.0,
    expect: Role | None = None,
    limits: Limits = DEFAULT_LIMITS,
    tls: ssl.SSLContext | None = None,
) -> Connection:
    """Dials `address` and authenticates; `expect`: the role the server must prove (the
    head's and agents' is CLUSTER: a job's process posing as one is refused).

    TCP goes over TLS when the identity has certificates (`tls` overrides: a
    joining node's first contact); Unix sockets stay plaintext, being local
    and in a 0700 directory."""
    loop = asyncio.get_running_loop()
    kind, host, port = parse_address(address)

    def factory() -> Connection:
        return Connection(
            identity, server_side=False, handler=handler, on_close=on_close, name=name or address,
            expect=expect, limits=limits,
        )

    if kind == "unix":
        _, conn = await asyncio.wait_for(loop.create_unix_connection(factory, host), timeout)
    else:
        if tls is None and identity.tls is not None:
            identity.tls.refresh()
            tls = identity.tls.client()
        try:
            if tls is None:
                _, conn = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
            else:
                conn = await asyncio.wait_for(_dial_tls(loop, factory, host, port, tls), timeout)
        except ssl.SSLCertVerificationError as e:
            raise TlsRefused(f"{address} presented a certificate this cluster's CA does not vouch for: "
                             f"{e.verify_message}") from None
        except ssl.SSLError as e:
            raise TlsRefused(f"TLS with {address} failed ({e.reason or e}): is it a manta node with TLS on, "
                             "and of this cluster?") from None
    try:
        await asyncio.wait_for(conn.ready, timeout)
    except TimeoutError:
        if kind == "tcp" and tls is None:
            conn.close()
            # The server speaks first; a TLS listener waits for a ClientHello and says nothing.
            raise TlsRefused(f"{address} said nothing in {timeout:g} s: it may want TLS, and this process has no "
                             "certificates (run it on a node of the cluster, or start the cluster with --tls off)"
                             ) from None
        raise
    except AuthRejected:
        raise
    except ConnectionLost as e:
        if tls is not None:
            # TLS 1.3 checks the client's certificate after the client's side is done: a refusal is a close.
            raise TlsRefused(f"{address} closed the connection in the handshake: it refused this process's "
                             f"certificate (expired, or of another CA?) ({e})") from None
        raise
    return conn


async def _dial_tls(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], Connection], host: str, port: int, tls: ssl.SSLContext
) -> Connection:
    """TCP, then TLS run by `TlsLayer` (not the loop's: tls_stream.py says why)."""
    raw, layer = await loop.create_connection(
        lambda: TlsLayer(tls, factory, server_side=False, server_hostname=CLUSTER_NAME), host, port
    )
    try:
        conn = await layer.handshake
    except BaseException:
        raw.abort()
        raise
    assert isinstance(conn, Connection)
    return conn


async def serve(
    address: str,
    identity: Identity,
    handler: Handler,
    *,
    on_connect: Callable[[Connection], None] | None = None,
    on_close: Callable[[Connection], None] | None = None,
    tokens: TokenBook | None = None,
    on_auth: Callable[[Connection, str], None] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    gate: Gate | None = None,
    client_cert_optional: bool = False,
) -> tuple[asyncio.AbstractServer, str]:
    """Listens on `address` (port 0 picks a free port); returns the bound address.

    `tokens`: people's tokens are accepted only where given (the head).
    `on_auth(conn, why)`: each handshake's outcome ("" when it succeeded).
    `gate`: one per process, shared by its listeners (a new one if not given).
    `client_cert_optional`: the head's, for a node that joins (it has no
    certificate until the head issues one) and a person's driver elsewhere;
    the manta handshake authenticates them either way."""
    loop = asyncio.get_running_loop()
    kind, host, port = parse_address(address)
    gate = gate or Gate(limits)

    def factory() -> Connection:
        conn = Connection(
            identity, server_side=True, handler=handler, on_close=on_close, tokens=tokens, on_auth=on_auth,
            limits=limits, gate=gate,
        )
        if on_connect is not None:
            on_connect(conn)
        return conn

    if kind == "unix":
        server = await loop.create_unix_server(factory, host)
        # A setgid directory is shared with workers running as another user
        # (node/worker_user.py): its group may connect, then authenticate.
        shared = os.stat(os.path.dirname(host) or ".").st_mode & stat.S_ISGID
        os.chmod(host, 0o660 if shared else 0o600)
        return server, address
    contexts = identity.tls
    if contexts is None:
        server = await loop.create_server(factory, host, port)
    else:
        tls = contexts.server(not client_cert_optional)

        def layer() -> TlsLayer:
            contexts.refresh()  # before this connection's TLS starts: a renewed cert is used
            return TlsLayer(tls, factory, server_side=True, handshake_timeout=limits.handshake_timeout_s, gate=gate)

        server = await loop.create_server(layer, host, port)
    sockname = server.sockets[0].getsockname()
    return server, f"tcp:{sockname[0]}:{sockname[1]}"


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.new_event_loop()
