"""Object chunks pulled from another node are checked against the sender's checksum.

The source node sends the object with the digest of each chunk (keyed with
a key only the cluster's nodes derive), and the bytes are damaged on the
way, as a faulty link or someone on a link without TLS would damage them.
Before, the receiving agent sealed whatever arrived as the object. Now it
asks again for a chunk that fails its check, and gets the object right; a
chunk that stays damaged fails the pull as a lost object, leaves nothing in
the store, and the node goes on serving. A sender that sends no digest is
refused the same way.
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
SIZE = 10 * MB + 12345  # three chunks, the last one short


@pytest.fixture(scope="module")
def node():
    import manta
    from manta._private.runtime import context

    manta.init(num_cpus=1, object_store_memory=64 * MB)
    try:
        yield manta, context.require()
    finally:
        manta.shutdown()


def pull_from_damaging_link(rt, damage):
    """Pulls a SIZE-byte object from a source node whose chunks `damage(offset,
    attempt, digest, data) -> (digest, data)` changes on the way; returns the
    pull's error (None if it succeeded) and, if it did, the bytes stored."""
    from manta._private import services
    from manta._private.auth.credentials import ClusterKeys, Identity
    from manta._private.node.transfer import ChunkSums
    from manta._private.protocol import messages as m
    from manta._private.transport.connection import RemoteError, connect, serve

    session = rt.session
    genuine = os.urandom(SIZE)
    keys = ClusterKeys(services.read_token(os.path.join(session.session_dir, "token")))
    sums = ChunkSums(keys.transfer_key)
    oid = os.urandom(20)
    attempts: dict[int, int] = {}

    def source(conn, msg):
        if type(msg) is m.StorePin:
            conn.reply(msg, m.StorePinned(offset=0, size=SIZE))
        elif type(msg) is m.StoreReadChunk:
            data = genuine[msg.offset : msg.offset + msg.length]
            digest = sums.tag(msg.object_id, msg.offset, data, msg.nonce) if msg.nonce else b""
            attempts[msg.offset] = attempts.get(msg.offset, 0) + 1
            digest, data = damage(msg.offset, attempts[msg.offset], digest, data)
            conn.send_chunk(msg.rid, memoryview(data), digest)

    async def run():
        d = tempfile.mkdtemp(prefix="xfer")
        address = f"unix:{d}/source.sock"
        server, _ = await serve(address, Identity.of(keys.node_credential("source node")), source)
        agent = await connect(session.agent_address, rt.identity, lambda c, msg: None)
        try:
            try:
                pinned = await agent.request(m.StorePull(object_id=oid, source=address))
            except RemoteError as e:
                with pytest.raises(RemoteError):  # nothing of the copy stays in the store
                    await agent.request(m.StorePin(object_id=oid))
                return e, None
            # Pinned for us now: read it in the store, as a reader on this node would.
            stored = bytes(rt.region.view[pinned.offset : pinned.offset + pinned.size])
            agent.send(m.StoreUnpin(object_ids=[oid]))
            return None, stored
        finally:
            agent.close()
            server.close()
            os.unlink(f"{d}/source.sock")
            os.rmdir(d)

    error, stored = asyncio.run(run())
    if stored is not None:
        assert stored == genuine
    return error, attempts


def flip(data: bytes, at: int = 1000) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_chunk_damaged_on_the_way_is_asked_for_again_and_the_object_arrives_intact(node):
    manta, rt = node
    # Each chunk's first copy is damaged (one bit flipped); the second arrives as sent.
    error, attempts = pull_from_damaging_link(
        rt, lambda at, attempt, digest, data: (digest, flip(data) if attempt == 1 else data))
    assert error is None
    assert sorted(attempts.values()) == [2, 2, 2]


def test_a_chunk_that_stays_damaged_fails_the_pull_as_a_lost_object(node):
    from manta._private.protocol import messages as m

    manta, rt = node
    error, attempts = pull_from_damaging_link(
        rt, lambda at, attempt, digest, data: (digest, flip(data) if at == 4 * MB else data))
    assert error is not None and error.kind is m.ErrorKind.OBJECT_LOST
    assert "failed its checksum" in error.message and "offset 4194304" in error.message
    assert attempts[4 * MB] == 3  # asked twice again, then given up
    assert manta.get(manta.put(b"y" * MB)) == b"y" * MB  # the node goes on serving
    assert manta.get(manta.remote(lambda: 7).remote()) == 7


def test_a_sender_without_digests_or_with_a_forged_one_is_refused(node):
    manta, rt = node
    for forge in (lambda digest: b"", lambda digest: bytes(16), lambda digest: digest[:-1]):
        error, _ = pull_from_damaging_link(rt, lambda at, attempt, digest, data, f=forge: (f(digest), flip(data)))
        assert error is not None and "failed its checksum" in error.message
