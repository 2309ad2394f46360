"""TLS over a plain TCP transport, run by manta itself rather than by the loop.

uvloop's own SSL transport (and asyncio's) serves one thread: a frame sent
from another thread (a worker's result, `Connection.send_threadsafe`) has to
hop to the loop thread first, and on a 2-core machine that hop (two thread
wake-ups) was the largest part of what TLS cost a small remote task
(`perf stat` on the remote worker while `benchmarks/tls.py`'s loop of sync
no-op tasks ran: 7.0 context switches and 220 us of CPU per task under
uvloop's TLS, 2.0 and 125 us in plaintext; libcrypto was under 5% of its
CPU). Here the `ssl.SSLObject` is ours, behind a lock, so any thread may
encrypt a frame and write it to the socket at once, as the plaintext fast
path does: with it, 1.85 context switches and 181 us per task under TLS
against 1.85 and 171 us in plaintext, measured the same way, and the
benchmark's small-ops ratio went from 0.55 to 0.93.

The same layer decrypts straight into the buffer the connection's frame
decoder hands it (`get_buffer`/`buffer_updated`): an object chunk is not
assembled from 16 KiB `bytes` joined again, which uvloop's transport does
for a protocol without those methods. And a large write is encrypted and
handed to the socket in `PIECE`-sized slices, which stay in the cache
between the cipher and the kernel's copy.

`TlsLayer` is the protocol of the raw TCP transport: it runs the TLS
handshake (a timeout on the server side), then makes the application's
protocol and gives it a `TlsTransport`. The protocol must have
`get_buffer(n) -> memoryview` and `buffer_updated(n)`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol, cast

from manta._private.transport.gate import Gate, peer_key

log = logging.getLogger(__name__)

# Plaintext encrypted per step of a large write: 16 TLS records, which fit
# in L2 between the cipher writing them and the socket copying them out.
PIECE = 256 * 1024
# What one read from the socket takes at most (uvloop's own TLS reads as much).
READ_SIZE = 256 * 1024


class App(Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def get_buffer(self, sizehint: int) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...


class TlsTransport(asyncio.Transport):
    """What the application writes to: plaintext in, TLS records to the socket.

    Every use of the SSL object holds `lock`: it may be called from any
    thread (`write_from_thread`) while the loop thread reads."""

    def __init__(self, layer: TlsLayer) -> None:
        super().__init__()
        self._layer = layer

    # -- writing ------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._layer.send((data,))

    def writelines(self, list_of_data: Any) -> None:
        self._layer.send(tuple(list_of_data))

    def write_from_thread(self, data: bytes) -> bool:
        """Any thread: encrypts `data` and writes it to the socket now, when
        nothing is waiting to go before it. False (nothing done) otherwise:
        the caller then queues it for the loop."""
        return self._layer.send_now(data)

    def get_write_buffer_size(self) -> int:
        return self._layer.waiting()

    def can_write_eof(self) -> bool:
        return False

    # -- the rest of a transport ------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._layer.sslobj
        if name == "peercert":
            return self._layer.sslobj.getpeercert()
        if name == "cipher":
            return self._layer.sslobj.cipher()
        raw = self._layer.raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def is_closing(self) -> bool:
        raw = self._layer.raw
        return raw is None or raw.is_closing()

    def close(self) -> None:
        self._layer.close()

    def abort(self) -> None:
        self._layer.abort()

    def pause_reading(self) -> None:
        if self._layer.raw is not None:
            self._layer.raw.pause_reading()

    def resume_reading(self) -> None:
        if self._layer.raw is not None:
            self._layer.raw.resume_reading()

    def is_reading(self) -> bool:
        raw = self._layer.raw
        return raw is not None and raw.is_reading()


class TlsLayer(asyncio.BufferedProtocol):
    """The raw TCP transport's protocol: TLS between it and the application.

    `handshake` resolves with the application protocol once TLS is up, or
    with the `ssl.SSLError` (or `ConnectionError`) that ended it."""

    def __init__(
        self,
        context: ssl.SSLContext,
        app_factory: Callable[[], App],
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.lock = threading.Lock()
        self._app_factory = app_factory
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Future[App] = self._loop.create_future()
        self.app: App | None = None
        self.transport = TlsTransport(self)
        self.raw: asyncio.Transport | None = None
        self._fd = -1
        # Ciphertext a thread could not write at once; the loop writes it next.
        self._backlog: list[bytes] = []
        self._backlog_size = 0
        self._drain_scheduled = False
        self._closing = False
        self._rbuf = memoryview(bytearray(READ_SIZE))
        # Server side: a TLS handshake is authenticating too, and counts
        # against its peer's address (`Gate`) until the application's
        # protocol, which counts it until its own handshake is done, takes over.
        self._gate = gate
        self._peer = ""

    # -- the raw transport's protocol -----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = self.raw = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._gate is not None:
            self._peer = peer_key(transport.get_extra_info("peername"))
            if not self._gate.admit(self._peer):
                self._peer = ""
                raw.abort()  # turned away before any TLS work is spent on it
                return
        if self._timeout:
            self._timer = self._loop.call_later(self._timeout, self._handshake_timed_out)
        self._shake()

    # The loop reads into our buffer: no `bytes` is made per read only to be
    # copied into the BIO, one of the five copies a received byte went
    # through (the receiving agent is the bottleneck of a TLS pull: perf
    # had it at 100% of a core, the sender at 60%).
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rbuf[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        with self.lock:
            self._incoming.write(data)
        if self.app is None:
            self._shake()
        if self.app is not None:
            self._read()

    def eof_received(self) -> bool:
        return False  # the peer is done: close, as TLS cannot half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._ungate()
        with self.lock:
            self._backlog, self._backlog_size = [], 0
        app, self.app = self.app, None
        if app is not None:
            app.connection_lost(exc)
        elif not self.handshake.done():
            self.handshake.set_exception(ConnectionResetError(f"the peer closed the connection in the TLS "
                                                              f"handshake ({exc or 'closed'})"))
        self.raw = None

    # -- the handshake ----------------------------------------------------------

    def _shake(self) -> None:
        try:
            with self.lock:
                self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_records()
            return
        except (ssl.SSLError, OSError) as e:
            self._flush_records()  # the alert that tells the peer why
            self._fail(e)
            return
        self._flush_records()
        self._cancel_timer()
        if self.handshake.done():  # timed out meanwhile
            return
        self._ungate()  # the application's protocol counts it from here
        app = self._app_factory()
        self.app = app
        app.connection_made(self.transport)
        self.handshake.set_result(app)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.app is None:
            self._fail(TimeoutError(f"no TLS handshake within {self._timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        if not self.handshake.done():
            self.handshake.set_exception(exc)
            self.handshake.exception()  # a server's failed handshake has nobody waiting
        log.debug("TLS handshake failed: %s", exc)
        if self.raw is not None:
            self.raw.close()

    def _ungate(self) -> None:
        if self._peer:
            assert self._gate is not None
            self._gate.leave(self._peer)
            self._peer = ""

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- reading ------------------------------------------------------------------

    def _read(self) -> None:
        """Decrypts what arrived into the application's buffer, as much as it takes."""
        sslobj, incoming = self.sslobj, self._incoming
        read = sslobj.read
        while self.app is not None:
            app = self.app
            got = 0
            eof = False
            buf = app.get_buffer(-1)
            size = len(buf)
            try:
                with self.lock:
                    # Stop when nothing is left rather than on SSLWantReadError:
                    # raising it costs more than the check. Once a read stopped
                    # short of the buffer, only new bytes in the BIO can give more.
                    if incoming.pending or sslobj.pending():
                        while got < size:
                            n = cast(int, read(size - got, buf[got:]))  # with a buffer: a count
                            if not n:
                                eof = True
                                break
                            got += n
                            if not incoming.pending:
                                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                eof = True
            except ssl.SSLError as e:
                # An alert (a refused certificate, in TLS 1.3 seen after the handshake) or garbage.
                del buf
                self._flush_records()
                if got:
                    app.buffer_updated(got)
                self._error(e)
                return
            del buf  # the decoder reuses a buffer nothing else refers to
            if self._outgoing.pending:
                self._flush_records()  # a key update or a session ticket's answer
            if got:
                app.buffer_updated(got)
            if eof:
                self.close()
                return
            if got < size:
                return

    def _error(self, exc: Exception) -> None:
        log.debug("TLS error: %s", exc)
        if self.raw is not None:
            self.raw.abort()

    # -- writing ------------------------------------------------------------------

    def send(self, parts: tuple[bytes | bytearray | memoryview, ...]) -> None:
        """Loop thread: encrypts `parts` and hands the records to the raw transport."""
        raw = self.raw
        if raw is None or self._closing:
            return
        with self.lock:
            if self._backlog:
                self._write_backlog(raw)
            for part in parts:
                if len(part) <= PIECE:
                    self.sslobj.write(part)
                    continue
                view = memoryview(part)
                for at in range(0, len(view), PIECE):
                    self.sslobj.write(view[at : at + PIECE])
                    raw.write(self._outgoing.read())
            if self._outgoing.pending:
                raw.write(self._outgoing.read())

    def send_now(self, data: bytes) -> bool:
        """Any thread: encrypt and write to the fd, if nothing waits before `data`."""
        raw = self.raw
        if raw is None or self._closing or self._fd < 0:
            return False
        with self.lock:
            if self._backlog or raw.get_write_buffer_size():
                return False
            try:
                self.sslobj.write(data)
            except ssl.SSLError:
                return True  # closed meanwhile: like a write to a closed socket
            records = self._outgoing.read()
            try:
                n = os.write(self._fd, records)
            except OSError:
                n = 0  # EAGAIN, or a broken socket the loop will notice
            if n < len(records):
                # Encrypted already, so these bytes must go next: the loop writes them.
                self._backlog.append(records[n:])
                self._backlog_size += len(records) - n
                if not self._drain_scheduled:
                    self._drain_scheduled = True
                    self._loop.call_soon_threadsafe(self._drain)
        return True

    def _drain(self) -> None:
        with self.lock:
            self._drain_scheduled = False
            if self.raw is not None and self._backlog:
                self._write_backlog(self.raw)

    def _write_backlog(self, raw: asyncio.Transport) -> None:
        raw.write(b"".join(self._backlog))
        self._backlog, self._backlog_size = [], 0

    def waiting(self) -> int:
        # The outgoing BIO is always emptied before the lock is let go: not counted.
        raw = self.raw
        return self._backlog_size + (raw.get_write_buffer_size() if raw is not None else 0)

    def _flush_records(self) -> None:
        raw = self.raw
        with self.lock:
            if self._backlog and raw is not None:
                self._write_backlog(raw)
            records = self._outgoing.read() if self._outgoing.pending else b""
            # Still under the lock: a thread's send_now between taking these
            # records and writing them would put its record first, and the
            # peer would fail the stream on the sequence number.
            if records and raw is not None:
                raw.write(records)

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Sends close_notify after what is queued, then closes the socket."""
        raw = self.raw
        if raw is None or self._closing:
            return
        self._closing = True
        try:
            with self.lock:
                self.sslobj.unwrap()
        except (ssl.SSLError, OSError):
            pass  # SSLWantReadError: the peer's close_notify is not awaited
        self._flush_records()
        raw.close()

    def abort(self) -> None:
        self._closing = True
        if self.raw is not None:
            self.raw.abort()
