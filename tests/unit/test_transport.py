"""Connection framing, handshake and thread-safe sends over a real socket pair.

No processes: both ends live in this process, on one event loop thread.
"""

import asyncio
import logging
import os
import tempfile
import threading

import pytest

from manta._private.auth.credentials import ClusterKeys, Identity
from manta._private.protocol import messages as m
from manta._private.transport.connection import AuthRejected, connect, serve

KEYS = ClusterKeys(b"k" * 32)
SERVER = Identity.of(KEYS.node_credential("server"))
CLIENT = Identity.of(KEYS.node_credential("client"))


def run(loop, coro, timeout=10):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@pytest.fixture
def pair(loop):
    d = tempfile.mkdtemp()
    addr = f"unix:{d}/s.sock"
    received = []
    done = threading.Event()
    expect = [1 << 60]

    def on_server(conn, msg):
        received.append(msg)
        if len(received) >= expect[0]:
            done.set()

    async def setup():
        server, _ = await serve(addr, SERVER, on_server)
        client = await connect(addr, CLIENT, lambda c, msg: None)
        return server, client

    server, client = run(loop, setup())
    yield client, received, done, expect
    loop.call_soon_threadsafe(client.close)
    loop.call_soon_threadsafe(server.close)
    os.unlink(f"{d}/s.sock")
    os.rmdir(d)


def test_sends_from_many_threads_keep_per_thread_order(loop, pair):
    client, received, done, expect = pair
    threads, per_thread = 4, 2000
    expect[0] = threads * per_thread

    def sender(k):
        for i in range(per_thread):
            # Mix the direct path with loop-side sends, as the runtime does.
            if i % 7 == 0:
                loop.call_soon_threadsafe(client.send, m.StoreUnpin(object_ids=[bytes([k]) + i.to_bytes(4, "big")]))
            else:
                client.send_threadsafe(m.StoreUnpin(object_ids=[bytes([k]) + i.to_bytes(4, "big")]))

    ts = [threading.Thread(target=sender, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert done.wait(20), f"received {len(received)} of {expect[0]}"
    seen = {k: [] for k in range(threads)}
    for msg in received:
        oid = msg.object_ids[0]
        seen[oid[0]].append(int.from_bytes(oid[1:], "big"))
    for k in range(threads):
        direct = [i for i in seen[k] if i % 7]
        assert direct == sorted(direct)
        assert sorted(seen[k]) == list(range(per_thread))


def test_large_frames_survive_partial_writes(loop, pair):
    client, received, done, expect = pair
    expect[0] = 3
    big = os.urandom(8 * 1024 * 1024)  # larger than a socket buffer: forces queuing
    for _ in range(3):
        client.send_threadsafe(m.LogLines(job_id=1, prefix="p", is_err=False, text=big.hex()[:6_000_000]))
    assert done.wait(20)
    assert all(len(msg.text) == 6_000_000 for msg in received)


def test_a_frame_encoded_once_arrives_whole_each_time_it_is_sent(loop, pair):
    client, received, done, expect = pair
    expect[0] = 3
    small = m.StoreUnpin(object_ids=[b"a"])
    big = m.LogLines(job_id=1, prefix="p", is_err=False, text="x" * 3_000_000)  # past BIG_FRAME
    parts_small, parts_big = m.frame_parts(small), m.frame_parts(big)
    loop.call_soon_threadsafe(client.send_encoded, small, *parts_small)
    loop.call_soon_threadsafe(client.send_encoded, big, *parts_big)
    loop.call_soon_threadsafe(client.send_encoded, small, *parts_small)
    assert done.wait(20)
    assert received == [small, big, small]


def test_a_pass_of_another_cluster_is_refused_with_the_reason(loop):
    d = tempfile.mkdtemp()
    addr = f"unix:{d}/s.sock"
    stranger = Identity.of(ClusterKeys(b"w" * 32).node_credential("stranger"))

    async def go():
        server, _ = await serve(addr, SERVER, lambda c, msg: None)
        try:
            with pytest.raises(AuthRejected, match="not signed by this cluster"):
                await connect(addr, stranger, lambda c, msg: None, timeout=5)
        finally:
            server.close()

    run(loop, go())
    os.unlink(f"{d}/s.sock")
    os.rmdir(d)


def test_a_connection_decodes_frames_with_its_own_decoder_once_it_is_replaced(loop):
    """The hook `sim/fleet.py` uses to drop the frames it ignores undecoded."""
    d = tempfile.mkdtemp()
    addr = f"unix:{d}/s.sock"
    got = []

    async def go():
        arrived = asyncio.Event()

        def on_server(conn, msg):
            conn.send(m.NodeDied(node_id=b"n", reason="a"))
            conn.send(m.NodeDied(node_id=b"n", reason="b"))

        def on_client(conn, msg):
            got.append(msg)
            if len(got) == 2:
                arrived.set()

        server, _ = await serve(addr, SERVER, on_server)
        client = await connect(addr, CLIENT, on_client)
        client.decode = lambda frame: ("raw", bytes(frame)) if b"a" in bytes(frame)[-2:] else m.decode(frame)
        client.send(m.JobEnded(job_id=1))
        await asyncio.wait_for(arrived.wait(), 5)
        client.close()
        server.close()

    run(loop, go())
    assert got[0] == ("raw", m.encode(m.NodeDied(node_id=b"n", reason="a")))
    assert got[1] == m.NodeDied(node_id=b"n", reason="b")
    os.unlink(f"{d}/s.sock")
    os.rmdir(d)


def test_peer_cred_names_the_process_at_the_other_end_of_a_unix_socket_and_nothing_over_tcp():
    import socket

    from manta._private.transport import peercred

    class Transport:  # what asyncio's transports answer
        def __init__(self, sock):
            self.sock = sock

        def get_extra_info(self, name):
            return self.sock if name == "socket" else None

    a, b = socket.socketpair(socket.AF_UNIX)
    tcp = socket.socket()
    try:
        if peercred.SUPPORTED:
            cred = peercred.peer_cred(Transport(a))
            assert cred is not None and (cred.pid, cred.uid) == (os.getpid(), os.getuid())
        assert peercred.is_unix(Transport(a))
        assert not peercred.is_unix(Transport(tcp)) and peercred.peer_cred(Transport(tcp)) is None
        assert peercred.peer_cred(None) is None
    finally:
        for s in (a, b, tcp):
            s.close()


def test_answers_nobody_asked_for_are_dropped_and_the_rest_handed_on(loop, pair, caplog):
    client, received, done, expect = pair
    caplog.set_level(logging.DEBUG, logger="manta._private.transport.connection")
    expect[0] = 1
    # Late or repeated answers: matched to no request, they reach no handler
    # (which refused them with an ErrorReply the other end refused in turn).
    client.send_threadsafe(m.TaskDone(task_id=b"t", returns=[], rid=77))
    client.send_threadsafe(m.ErrorReply(kind=m.ErrorKind.VALUE, message="late", rid=78))
    client.send_threadsafe(m.StoreUnpin(object_ids=[b"after"]))
    assert done.wait(10)
    assert received == [m.StoreUnpin(object_ids=[b"after"])]
    # Said once, as a warning: an answer given twice is a bug to see.
    warned = [r for r in caplog.records if "answers no request" in r.getMessage()]
    assert [r.levelname for r in warned] == ["WARNING", "DEBUG"]
