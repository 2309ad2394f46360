"""manta's own TLS layer (transport/tls_stream.py) over real loopback sockets.

No processes: both ends live in this process, on one event loop thread; the
senders of `send_threadsafe` are other threads, as a worker's are.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from manta._private.auth import pki, tls_contexts
from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.node.transfer import ChunkSums, checks_for
from manta._private.protocol import messages as m
from manta._private.protocol.framing import HEADER, FrameDecoder
from manta._private.transport import tls_stream
from manta._private.transport.connection import Connection, TlsRefused, connect, serve
from manta._private.transport.gate import Gate, Limits

KEYS = ClusterKeys(b"k" * 32)


def _identity(name: str, session: str | None) -> Identity:
    ident = Identity.of(KEYS.node_credential(name))
    ident.tls = tls_contexts.load_contexts(session) if session else None
    return ident


def _session(root: str, name: str, ca: tuple[bytes, bytes], trust: bytes = b"") -> str:
    """A session dir with a certificate of `ca`, trusting `trust` (by default `ca`)."""
    key = pki.new_key()
    cert = pki.issue(ca[0], ca[1], pki.make_csr(key, name), 30.0, hosts=("127.0.0.1",))
    d = os.path.join(root, name)
    tls_contexts.save_material(os.path.join(d, "tls"), tls_contexts.TlsMaterial(ca=trust or ca[0], cert=cert, key=pki.key_pem(key)))
    return d


@pytest.fixture(scope="module")
def sessions() -> Iterator[dict[str, str]]:
    root = tempfile.mkdtemp(prefix="mtlsu")
    ca = pki.make_ca()
    try:
        yield {
            "server": _session(root, "server", ca),
            "client": _session(root, "client", ca),
            "foreign": _session(root, "foreign", pki.make_ca()),
            # A certificate of another CA, but trusting ours: the server must refuse it.
            "intruder": _session(root, "intruder", pki.make_ca(), trust=ca[0]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(loop: asyncio.AbstractEventLoop, coro: Any, timeout: float = 20) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


class Link:
    """A TLS server and a client connected to it; what the server received."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sessions: dict[str, str]) -> None:
        self.loop = loop
        self.received: list[Any] = []
        self.expect = 1 << 60
        self.done = threading.Event()
        self.server_conns: list[Connection] = []

        def on_server(conn: Connection, msg: Any) -> None:
            self.received.append(msg)
            if len(self.received) >= self.expect:
                self.done.set()

        async def setup() -> tuple[asyncio.AbstractServer, Connection]:
            server, addr = await serve("tcp:127.0.0.1:0", _identity("s", sessions["server"]), on_server,
                                       on_connect=self.server_conns.append)
            client = await connect(addr, _identity("c", sessions["client"]), lambda c, msg: None)
            return server, client

        self.server, self.client = run(loop, setup())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.client.close)
        self.loop.call_soon_threadsafe(self.server.close)


@pytest.fixture
def link(loop: asyncio.AbstractEventLoop, sessions: dict[str, str]) -> Iterator[Link]:
    lk = Link(loop, sessions)
    yield lk
    lk.close()


def test_the_link_is_tls13_with_both_certificates(link: Link) -> None:
    assert link.client.encrypted
    obj = link.client.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
    assert obj.version() == "TLSv1.3"
    assert obj.getpeercert()  # the server's, verified against the CA
    assert run(link.loop, _wait(lambda: bool(link.server_conns)))
    server_side = link.server_conns[0].transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
    assert server_side.getpeercert()  # the client's: the listener requires one


async def _wait(cond: Any, timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_sends_from_threads_are_written_at_once_and_keep_order(link: Link, monkeypatch: Any) -> None:
    # The fast path: a thread encrypts and writes its frame itself, no hop to the loop.
    direct = []
    real = tls_stream.TlsLayer.send_now

    def counting(self: tls_stream.TlsLayer, data: bytes) -> bool:
        done = real(self, data)
        direct.append(done)
        return done

    monkeypatch.setattr(tls_stream.TlsLayer, "send_now", counting)
    threads, per_thread = 4, 1500
    link.expect = threads * per_thread

    def sender(k: int) -> None:
        for i in range(per_thread):
            msg = m.StoreUnpin(object_ids=[bytes([k]) + i.to_bytes(4, "big")])
            if i % 7 == 0:  # mixed with the loop's own sends, as the runtime does
                link.loop.call_soon_threadsafe(link.client.send, msg)
            else:
                link.client.send_threadsafe(msg)

    ts = [threading.Thread(target=sender, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert link.done.wait(20), f"received {len(link.received)} of {link.expect}"
    seen: dict[int, list[int]] = {k: [] for k in range(threads)}
    for msg in link.received:
        oid = msg.object_ids[0]
        seen[oid[0]].append(int.from_bytes(oid[1:], "big"))
    for k in range(threads):
        direct_sent = [i for i in seen[k] if i % 7]
        assert direct_sent == sorted(direct_sent)
        assert sorted(seen[k]) == list(range(per_thread))
    assert sum(direct) > len(direct) // 4, "threads' frames all took the hop to the loop"


def test_large_frames_from_threads_and_chunks_arrive_whole(link: Link) -> None:
    big = os.urandom(6 << 20)
    link.expect = 4
    for _ in range(2):  # larger than a socket buffer: part of it waits for the loop
        link.client.send_threadsafe(m.LogLines(job_id=1, prefix="p", is_err=False, text=big.hex()[:9_000_000]))
    # An object chunk, encrypted in pieces straight from the caller's memory.
    link.loop.call_soon_threadsafe(link.client.send_chunk, 7, memoryview(big), b"")
    link.loop.call_soon_threadsafe(link.client.send_chunk, 8, memoryview(big)[:1000], b"")
    assert link.done.wait(20), f"received {len(link.received)}"
    logs = [x for x in link.received if isinstance(x, m.LogLines)]
    chunks = sorted((x for x in link.received if isinstance(x, m.StoreChunk)), key=lambda x: x.rid)
    assert [len(x.text) for x in logs] == [9_000_000, 9_000_000]
    assert bytes(chunks[0].data) == big and bytes(chunks[1].data) == big[:1000]


@pytest.mark.parametrize(("server", "client", "why"), [
    ("foreign", "client", "does not vouch for"),  # a server of another CA
    # TLS 1.3: the client's side of the handshake is done before the server checks its certificate.
    ("server", "intruder", "refused this process's certificate"),
    ("", "client", "WRONG_VERSION_NUMBER"),  # a plaintext port
])
def test_refusals(loop: asyncio.AbstractEventLoop, sessions: dict[str, str], server: str, client: str,
                  why: str) -> None:
    async def go() -> None:
        listener, addr = await serve("tcp:127.0.0.1:0", _identity("s", sessions.get(server)), lambda c, msg: None)
        try:
            with pytest.raises(TlsRefused, match=why):
                await connect(addr, _identity("c", sessions[client]), lambda c, msg: None, timeout=5)
        finally:
            listener.close()

    run(loop, go())


def test_an_idle_or_garbage_peer_is_closed(loop: asyncio.AbstractEventLoop, sessions: dict[str, str]) -> None:
    async def listen() -> tuple[asyncio.AbstractServer, int]:
        server, addr = await serve("tcp:127.0.0.1:0", _identity("s", sessions["server"]), lambda c, msg: None,
                                   limits=Limits(handshake_timeout_s=0.5))
        return server, int(addr.rpartition(":")[2])

    server, port = run(loop, listen())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert s.recv(10) == b""  # no ClientHello within the timeout: closed
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x10\x00\x00\x00" + b"x" * 16)
            data = s.recv(4096)
            assert data == b"" or data[:1] == b"\x15"  # closed, or a TLS alert record
    finally:
        loop.call_soon_threadsafe(server.close)


def test_decoding_into_the_decoders_buffer_gives_the_same_frames() -> None:
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.choice((0, 5, 300, 70_000, 300_000, 4 << 20, 9 << 20))) for _ in range(30)]
    stream = b"".join(HEADER.pack(len(p)) + p for p in payloads)
    dec = FrameDecoder(16 << 20)
    got: list[bytes] = []
    pos = 0
    while pos < len(stream):
        buf = dec.buffer()
        n = min(len(buf), rng.randint(1, 400_000), len(stream) - pos)
        buf[:n] = stream[pos : pos + n]
        del buf
        pos += n
        got += [bytes(f) for f in dec.filled(n)]
    assert got == payloads
    assert dec.buffered == 0


def test_chunk_tags_are_skipped_only_on_tls_links(link: Link) -> None:
    # TLS authenticates every record: the per-chunk Poly1305 tag would check the same bytes again.
    sums = ChunkSums(b"t" * 32)
    assert checks_for(sums, True, link.client.encrypted) is None
    assert checks_for(sums, True, False) is sums  # plaintext: the only check
    assert checks_for(sums, False, False) is None  # turned off (transfer_checksums)


@pytest.mark.parametrize("tls", [True, False])
def test_chunks_asked_for_into_memory_land_there(loop: asyncio.AbstractEventLoop, sessions: dict[str, str],
                                                 tls: bool) -> None:
    data = os.urandom(12 << 20)

    def serve_chunks(conn: Connection, msg: Any) -> None:
        if isinstance(msg, m.StoreReadChunk):
            conn.send_chunk(msg.rid, memoryview(data)[msg.offset : msg.offset + msg.length], b"")

    async def go() -> None:
        server, addr = await serve("tcp:127.0.0.1:0", _identity("s", sessions["server"] if tls else None),
                                   serve_chunks)
        client = await connect(addr, _identity("c", sessions["client"] if tls else None), lambda c, msg: None)
        try:
            store = bytearray(len(data))
            views = [memoryview(store)[at : at + (4 << 20)] for at in range(0, len(data), 4 << 20)]
            asks = [client.request_into(m.StoreReadChunk(object_id=b"o", offset=at, length=4 << 20), view)
                    for at, view in zip(range(0, len(data), 4 << 20), views, strict=True)]
            replies = await asyncio.gather(*asks)
            assert [r.data is v for r, v in zip(replies, views, strict=True)] == [True] * 3  # landed: no copy
            assert store == data
            # One given up on mid-chunk: nothing more is written there, and the link goes on.
            store[:] = bytes(len(store))
            view = memoryview(store)[: 4 << 20]
            fut = client.request_into(m.StoreReadChunk(object_id=b"o", offset=0, length=4 << 20), view)
            assert await _wait(lambda: client._decoder.landing or fut.done())
            client.forget_landing(view)
            left = bytes(store)
            small = await client.request_into(m.StoreReadChunk(object_id=b"o", offset=5, length=100),
                                              memoryview(bytearray(100)))
            assert bytes(small.data) == data[5:105]
            if not fut.done():
                assert bytes(store) == left
        finally:
            client.close()
            server.close()

    run(loop, go())


def test_tls_handshakes_count_against_their_address(loop: asyncio.AbstractEventLoop,
                                                    sessions: dict[str, str]) -> None:
    # Before TLS is up nothing is authenticated: a flood of silent TCP
    # connections is turned away past the per-address limit, without waiting
    # for their handshake timeout, and the address gets in again once they go.
    limits = Limits(max_unauthenticated=3, handshake_timeout_s=30)
    gate = Gate(limits)

    async def listen() -> tuple[asyncio.AbstractServer, str]:
        return await serve("tcp:127.0.0.1:0", _identity("s", sessions["server"]), lambda c, msg: None,
                           limits=limits, gate=gate)

    server, addr = run(loop, listen())
    port = int(addr.rpartition(":")[2])
    flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
    try:
        for s in flood:
            s.settimeout(0.5)
        shut = 0
        for s in flood:
            try:
                shut += s.recv(10) == b""
            except TimeoutError:
                pass  # let in: waiting for its ClientHello
            except OSError:
                shut += 1
        assert shut == 3 and gate.turned_away == 3
        assert gate.unauthenticated("127.0.0.1") == 3
    finally:
        for s in flood:
            s.close()
    try:
        assert run(loop, _wait(lambda: gate.unauthenticated("127.0.0.1") == 0))
        client = run(loop, connect(addr, _identity("c", sessions["client"]), lambda c, msg: None, timeout=5))
        assert client.encrypted and gate.unauthenticated("127.0.0.1") == 0  # authenticated: no longer counted
        loop.call_soon_threadsafe(client.close)
    finally:
        loop.call_soon_threadsafe(server.close)


@pytest.mark.parametrize("tls", [True, False])
def test_messages_split_around_a_large_field_go_both_ways(loop: asyncio.AbstractEventLoop, sessions: dict[str, str],
                                                          tls: bool) -> None:
    from manta._private.protocol import client_messages as cm

    def echo(conn: Connection, msg: Any) -> None:
        if isinstance(msg, cm.ClientCall):  # answered from another thread, as the proxy does
            body = bytes(msg.body)[::-1]
            threading.Thread(target=conn.reply_split_threadsafe,
                             args=(msg, cm.ClientReply(body=cm.EMPTY), "body", [body[:5], memoryview(body)[5:]])
                             ).start()

    async def go() -> None:
        server, addr = await serve("tcp:127.0.0.1:0", _identity("s", sessions["server"] if tls else None), echo)
        client = await connect(addr, _identity("c", sessions["client"] if tls else None), lambda c, msg: None)
        try:
            big = os.urandom(3 << 20)
            parts: list[bytes | memoryview] = [memoryview(big)[: 1 << 20], memoryview(big)[1 << 20 :]]
            replies = await asyncio.gather(*(client.request_split(cm.ClientCall(body=cm.EMPTY), "body", parts)
                                             for _ in range(3)))
            assert all(bytes(r.body) == big[::-1] for r in replies)
        finally:
            client.close()
            server.close()

    run(loop, go())
