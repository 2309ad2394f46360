"""Frames after authentication: a header that claims too much, and headers
that lie about what follows.

- A frame past `max_frame_bytes` closes that connection at its header,
  with a log line naming the sender and the cap; others are served.
- Headers under the cap that claim far more than is sent cost what was
  sent: 16 connections each claiming 120 MiB and sending 1 MiB grow the
  head's memory by tens of MiB, not 1.9 GiB.
- A sender never puts such a frame on the wire: a message larger than the
  cap raises a clear error where it is sent.
"""

from __future__ import annotations

import pytest

from manta._private.protocol import messages as m

from .dos_support import (
    HEADER,
    Cluster,
    RssSampler,
    authenticate,
    closed_by_peer,
    cluster_fixture,
    driver_in_process,
    served_meanwhile,
)

pytestmark = pytest.mark.timeout(240)

CAP = 128 << 20


cluster = cluster_fixture()


def test_huge_and_lying_headers(cluster: Cluster) -> None:
    with served_meanwhile(cluster):
        token = cluster.token("--role", "submit", "--namespace", "attacker")
        with driver_in_process(cluster, token, namespace="attacker") as rt:
            import manta

            # Past the cap: the connection closes at the header.
            s = authenticate(cluster.head_tcp, rt.identity)
            s.sendall(HEADER.pack(2**31) + b"x" * 1000)
            assert closed_by_peer(s, 10), "an oversized frame did not close its connection"
            s.close()
            log = cluster.log("head")
            assert "frame of 2147483648 bytes exceeds the limit of 134217728 bytes" in log, log
            assert f"from job {rt.job_id}" in log

            # Under the cap but lying: memory follows the bytes that came.
            sampler = RssSampler(cluster, every=0.05)
            liars = []
            for addr in (cluster.head_tcp, cluster.agent_unix):
                for _ in range(8):
                    s = authenticate(addr, rt.identity)
                    s.sendall(HEADER.pack(120 << 20) + b"\xab" * (1 << 20))
                    liars.append(s)
            # A real request on a fresh connection is answered meanwhile.
            assert manta.get(manta.put(b"ok")) == b"ok"
            growth = sampler.stop()
            for s in liars:
                s.close()
            assert growth["head"] < 64 << 20, growth
            assert growth["agent"] < 64 << 20, growth

            # The sender's side: too large a message is refused before it is sent.
            from manta.experimental import internal_kv as kv

            with pytest.raises(ValueError, match="max_frame_bytes"):
                kv._internal_kv_put("big", b"x" * (CAP + 1), namespace="attacker")
            kv._internal_kv_put("small", b"x", namespace="attacker")  # and the connection goes on
            assert rt.call_head(m.KvGet(namespace="attacker", key=b"small")).value == b"x"
        assert cluster.alive()
