"""The client server's sans-IO parts: the grace period and the addresses."""

import pytest

from manta._private.client.runtime import client_address
from manta._private.head.clients import Grace


def test_grace_ends_only_sessions_that_did_not_come_back():
    g = Grace(30.0)
    assert g.lost(b"a", 100.0) == 130.0
    g.lost(b"b", 110.0)
    assert g.expired(129.9) == []
    g.back(b"a")  # reconnected in time
    assert g.expired(200.0) == [b"b"]
    assert g.expired(300.0) == []  # each session ends once


def test_a_session_lost_again_waits_a_full_period_again():
    g = Grace(5.0)
    g.lost(b"a", 0.0)
    g.back(b"a")
    g.lost(b"a", 4.0)
    assert g.expired(6.0) == []
    assert g.expired(9.0) == [b"a"]


def test_client_addresses():
    assert client_address("manta://10.0.0.1:10001") == "tcp:10.0.0.1:10001"
    assert client_address("ray://head:10001/") == "tcp:head:10001"
    assert client_address("10.0.0.1:6379") is None
    with pytest.raises(ValueError, match="manta://HOST:PORT"):
        client_address("manta://nohost")
