"""--storage-encryption: what the head keeps in Redis cannot be read there,
and still comes back after a head restart (one started without the flag
keeps encrypting)."""

from __future__ import annotations

import json
import os
import signal

import pytest
from chaos.chaos_support import read_json_line

from security.redis_support import LocalCluster, SecureRedis, free_port

pytestmark = pytest.mark.timeout(240)

PASSWORD = "pw-encrypt-0d3a"
SECRETS = [b"kv-plaintext-5e1f", b"fn-constant-9a2c", b"vault-actor-77b0"]

SETUP = """
from manta.experimental import internal_kv as kv

@manta.remote
def answer():
    return "fn-constant-9a2c"

@manta.remote
class Vault:
    def open(self):
        return "opened"

v = Vault.options(name="vault-actor-77b0", namespace="enc", lifetime="detached").remote()
assert manta.get(v.open.remote()) == "opened"
assert manta.get(answer.remote()) == "fn-constant-9a2c"
kv._internal_kv_put(b"k", b"kv-plaintext-5e1f", namespace="enc")
print("SETUP {}", flush=True)
manta.shutdown()
"""

VERIFY = """
import json
from manta.experimental import internal_kv as kv

v = manta.get_actor("vault-actor-77b0", namespace="enc")
kv._internal_kv_put(b"later", b"kv-after-restart-4c4c", namespace="enc")
print("VERIFY", json.dumps({"kv": kv._internal_kv_get(b"k", namespace="enc").decode(),
                            "vault": manta.get(v.open.remote(), timeout=60)}), flush=True)
manta.shutdown()
"""


def _readable_in_redis(redis: SecureRedis, secrets: list[bytes]) -> list[bytes]:
    """Which of `secrets` anyone with Redis's password can read: every key's DUMP and hash values."""
    r = redis.client()
    try:
        seen = b""
        for key in r.scan_iter("*"):
            seen += r.dump(key) or b""
            if r.type(key) == b"hash":
                seen += b"".join(r.hgetall(key).values())
        assert seen, "nothing stored in Redis"
        return [s for s in secrets if s in seen]
    finally:
        r.close()


def test_encrypted_storage_hides_values_and_survives_a_head_restart():
    with SecureRedis(PASSWORD) as redis, LocalCluster("sec-enc", MANTA_NODE_TIMEOUT_S="5") as cluster:
        port = free_port()
        cluster.start_head("--num-cpus", "2", "--storage", redis.url, "--redis-password-file",
                           redis.password_file(), "--storage-encryption", port=port)
        setup = cluster.driver(SETUP)
        read_json_line(setup, "SETUP", 90)
        assert setup.wait(timeout=30) == 0, setup.stderr.read()
        assert _readable_in_redis(redis, SECRETS) == []

        os.kill(cluster.head_pid(), signal.SIGKILL)
        # Restarted without the flag: the storage stays encrypted.
        out = cluster.cli("start", "--head", "--port", str(port), "--storage", redis.url,
                          "--redis-password-file", redis.password_file())
        assert "restarted" in out, out
        proc = cluster.driver(VERIFY)
        got = read_json_line(proc, "VERIFY", 90)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert got == {"kv": "kv-plaintext-5e1f", "vault": "opened"}, got
        assert _readable_in_redis(redis, [*SECRETS, b"kv-after-restart-4c4c"]) == []
        with open(os.path.join(cluster.nodes[0].session_dir, "logs", "head.log")) as f:
            log = f.read()
        assert "holds encrypted values, so new ones are encrypted too" in log, log[-3000:]
        assert "storage: dropped" not in log, log[-3000:]
        print(f"\nencrypted storage: {json.dumps(got)} back after a head restart; none of "
              f"{len(SECRETS) + 1} marker strings readable in Redis")
