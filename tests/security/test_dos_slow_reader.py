"""A peer that asks and never reads its answers is cut off, rather than
growing the sender's memory.

With `max_send_buffer_bytes` at 8 MiB, an attacker authenticates, stores
a 512 KiB KV value in its own namespace, then sends 400 requests for it
(200 MiB of answers) and reads none. The head's send buffer passes the
bound, the head closes that connection with a log line saying why, its
memory stays bounded, and another driver is served as before.
"""

from __future__ import annotations

import pytest

from manta._private.protocol import messages as m

from .dos_support import (
    Cluster,
    RssSampler,
    authenticate,
    closed_by_peer,
    cluster_fixture,
    driver_in_process,
    served_meanwhile,
)

pytestmark = pytest.mark.timeout(240)

BOUND = 8 << 20


cluster = cluster_fixture({"max_send_buffer_bytes": BOUND})


def test_a_slow_reader_is_cut_off(cluster: Cluster) -> None:
    with served_meanwhile(cluster):
        token = cluster.token("--role", "submit", "--namespace", "slow")
        with driver_in_process(cluster, token, namespace="slow") as rt:
            rt.call_head(m.KvPut(namespace="slow", key=b"big", value=b"z" * (512 << 10)))
            s = authenticate(cluster.head_tcp, rt.identity)
            # Small kernel buffers, so the head's own buffer is what fills.
            s.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 64 << 10)
            sampler = RssSampler(cluster, every=0.05)
            ask = b"".join(m.frame(m.KvGet(namespace="slow", key=b"big"), rid) for rid in range(1, 401))
            s.setblocking(True)
            s.sendall(ask)
            # Now read: everything the head had sent before it gave up, then the end.
            assert closed_by_peer(s, 30), "the head kept a peer that does not read"
            s.close()
            growth = sampler.stop()
            assert growth["head"] < 4 * BOUND + (32 << 20), growth
            assert "is not reading" in cluster.log("head")
            # The attacker's own driver connection is another connection: still served.
            assert rt.call_head(m.KvGet(namespace="slow", key=b"big")).value == b"z" * (512 << 10)
        assert cluster.alive()
