"""A chunk pulled from another node is checked against the length asked for.

A hostile (or broken) peer agent answers the real agent's pull with chunks
longer or shorter than requested. Before, the agent wrote whatever came at
the copy's offset: a long chunk overwrote the object stored after it, a
short one left a hole in an object then sealed as good. Now the pull fails
(the reader is told the object is lost, and would fetch it again), the
space is freed, and the neighbour is untouched.
"""

import asyncio
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
from tests_support import BACKEND  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own transfer protocol"),
    pytest.mark.timeout(120),
]

MB = 1 << 20


@pytest.fixture
def cluster():
    import manta
    from manta._private.runtime import context

    manta.init(num_cpus=1, object_store_memory=64 * MB)
    try:
        yield manta, context.require().session
    finally:
        manta.shutdown()


@pytest.mark.parametrize("extra", [4096, -4096])
def test_a_chunk_of_the_wrong_length_fails_the_pull_and_writes_nothing_out_of_bounds(cluster, extra):
    from manta._private.objectstore.allocator import align_up
    from manta._private.protocol import messages as m
    from manta._private.transport.connection import RemoteError, connect, serve

    manta, session = cluster
    d = tempfile.mkdtemp(prefix="pull")
    peer_address = f"unix:{d}/peer.sock"
    # X then its neighbour B; X freed leaves a hole of exactly its size right
    # before B, where a copy of X's size goes (first fit).
    x = manta.put(b"x" * MB)
    b_value = b"b" * MB
    b = manta.put(b_value)
    x_id = x._id
    size = 0

    def hostile_peer(conn, msg):
        if type(msg) is m.StorePin:
            conn.reply(msg, m.StorePinned(offset=0, size=size))
        elif type(msg) is m.StoreReadChunk:
            conn.send_chunk(msg.rid, memoryview(b"\xee" * (msg.length + extra)))

    async def attack():
        nonlocal x, size
        # A compromised node: it holds the cluster secret, so its pass is a node's.
        from manta._private import services
        from manta._private.auth.credentials import ClusterKeys, Identity
        from manta._private.runtime import context

        secret = services.read_token(os.path.join(session.session_dir, "token"))
        node = Identity.of(ClusterKeys(secret).node_credential("hostile node"))
        server, _ = await serve(peer_address, node, hostile_peer)
        agent = await connect(session.agent_address, context.require().identity, lambda c, msg: None)
        try:
            px = await agent.request(m.StorePin(object_id=x_id))
            pb = await agent.request(m.StorePin(object_id=b._id))
            agent.send(m.StoreUnpin(object_ids=[x_id, b._id]))
            assert pb.offset == px.offset + align_up(px.size)  # B starts where X's block ends
            size = px.size
            del x
            for _ in range(500):  # until the agent has freed X (a pin of it is refused)
                try:
                    await agent.request(m.StorePin(object_id=x_id))
                except RemoteError:
                    break
                agent.send(m.StoreUnpin(object_ids=[x_id]))
                await asyncio.sleep(0.02)

            fake = os.urandom(20)
            with pytest.raises(RemoteError) as info:
                await agent.request(m.StorePull(object_id=fake, source=peer_address))
            assert info.value.kind is m.ErrorKind.OBJECT_LOST
            assert f"sent {size + extra} bytes for the {size} at offset 0" in info.value.message
            # The copy's space was freed: nothing of it stays in the store.
            with pytest.raises(RemoteError):
                await agent.request(m.StorePin(object_id=fake))
        finally:
            agent.close()
            server.close()

    try:
        asyncio.run(attack())
    finally:
        os.unlink(f"{d}/peer.sock")
        os.rmdir(d)
    assert manta.get(b) == b_value  # the neighbour is untouched
    again = manta.put(b"y" * MB)  # and the node goes on serving
    assert manta.get(again) == b"y" * MB
    assert manta.get(manta.remote(lambda: 7).remote()) == 7
