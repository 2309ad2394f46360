"""rediss://: the head reaches a TLS Redis whose certificate its CA signed, and
refuses, saying why, one it cannot verify or a port that does not speak TLS."""

from __future__ import annotations

import json
import os
import signal

import pytest

from security.redis_support import LocalCluster, SecureRedis, free_port, kv_round, make_ca, start_refused

pytestmark = pytest.mark.timeout(240)

PASSWORD = "pw-tls-a81f"

def test_rediss_with_the_right_ca_carries_the_head_across_a_restart():
    with SecureRedis(PASSWORD, tls=True) as redis, LocalCluster("sec-tls", MANTA_NODE_TIMEOUT_S="5") as cluster:
        port = free_port()
        cluster.start_head("--num-cpus", "1", "--storage", redis.url, "--redis-ca", redis.ca,
                           "--redis-password-file", redis.password_file(), port=port)
        assert kv_round(cluster) is None
        status = cluster.cli("status")
        assert f"head state redis at 127.0.0.1:{redis.port} (TLS)" in status, status
        os.kill(cluster.head_pid(), signal.SIGKILL)
        # redis-py's own spelling of the CA, in the URL, works as well.
        out = cluster.cli("start", "--head", "--port", str(port), "--storage",
                          f"{redis.url}/?ssl_ca_certs={redis.ca}", "--redis-password-file", redis.password_file())
        assert "restarted" in out, out
        assert kv_round(cluster) == "stored"
        with open(os.path.join(cluster.nodes[0].session_dir, "cluster.json")) as f:
            assert json.load(f)["storage"].startswith("rediss://127.0.0.1:")


def test_a_tls_redis_that_the_ca_did_not_sign_is_refused_clearly():
    with SecureRedis(PASSWORD, tls=True) as redis, LocalCluster("sec-tls-ca") as cluster:
        other, _, _ = make_ca(redis.dir, "someone-else")
        said = start_refused(cluster, "--storage", redis.url, "--redis-ca", other, "--redis-password-file",
                        redis.password_file())
        assert (f"the TLS certificate of redis at 127.0.0.1:{redis.port} (TLS) is not trusted by the CA in "
                f"{other} (--redis-ca)") in said, said
        assert "certificate verify failed" in said, said
        said = start_refused(cluster, "--storage", redis.url, "--redis-password-file", redis.password_file())
        assert "is not trusted by the system's CAs (give the server's CA with --redis-ca PATH)" in said, said


def test_tls_and_plaintext_crossed_are_refused_with_the_fix():
    with SecureRedis(PASSWORD, tls=True) as tls, SecureRedis(PASSWORD) as plain, \
            LocalCluster("sec-tls-x") as cluster:
        said = start_refused(cluster, "--storage", f"rediss://127.0.0.1:{plain.port}", "--redis-ca", tls.ca,
                        "--redis-password-file", plain.password_file())
        assert f"no TLS handshake with redis at 127.0.0.1:{plain.port} (TLS)" in said, said
        assert "then use redis://" in said, said
        said = start_refused(cluster, "--storage", f"redis://127.0.0.1:{tls.port}", "--redis-password-file",
                        tls.password_file())
        assert f"redis at 127.0.0.1:{tls.port}" in said and "then use rediss://" in said, said
        said = start_refused(cluster, "--storage", f"redis://127.0.0.1:{plain.port}", "--redis-ca", tls.ca,
                        "--redis-password-file", plain.password_file())
        assert "--redis-ca is for a Redis reached over TLS: use rediss://" in said, said
