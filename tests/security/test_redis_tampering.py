"""An attacker who can write to the head's Redis (it has the password, not
the cluster token) plants code and state for the next head to restore:
replaced function blobs, a forged actor, a value moved between keys. The
restarted head drops each, says so once per table, and serves."""

from __future__ import annotations

import os
import pickle
import signal

import msgspec
import pytest
from chaos.chaos_support import read_json_line

from manta._private.control.actors import PENDING
from manta._private.head.storage import ActorRecord, decode, encode
from security.redis_support import LocalCluster, SecureRedis, free_port

pytestmark = pytest.mark.timeout(240)

PASSWORD = "pw-tamper-51c2"

# The same first lines in both drivers: `square` pickles to the same blob,
# hence the same function id, in each.
COMMON = """
@manta.remote
def square(x):
    return x * x

import json
from manta.experimental import internal_kv as kv
"""

SETUP = COMMON + """
@manta.remote
class Keeper:
    def ping(self):
        return "pong"

k = Keeper.options(name="keeper", namespace="sec", lifetime="detached").remote()
assert manta.get(k.ping.remote()) == "pong"
assert manta.get(square.remote(3)) == 9
kv._internal_kv_put(b"a", b"value-of-a", namespace="sec")
kv._internal_kv_put(b"b", b"value-of-b", namespace="sec")
print("SETUP", json.dumps({"square": square._exported._exported[0].hex()}), flush=True)
manta.shutdown()
"""

VERIFY = COMMON + """
from manta.util import state

# A fresh worker (its own env): it loads `square` from the head.
fresh = square.options(runtime_env={"env_vars": {"FRESH_WORKER": "1"}})
result = manta.get(fresh.remote(5), timeout=60)
keeper = manta.get_actor("keeper", namespace="sec")
try:
    manta.get_actor("evil", namespace="sec")
    evil = "found"
except ValueError:
    evil = "absent"
print("VERIFY", json.dumps({
    "square": result, "square_id": square._exported._exported[0].hex(),
    "ping": manta.get(keeper.ping.remote(), timeout=60),
    "a": kv._internal_kv_get(b"a", namespace="sec").decode(),
    "b": kv._internal_kv_get(b"b", namespace="sec"),
    "evil": evil, "actors": sorted(a.name for a in state.list_actors()),
}), flush=True)
manta.shutdown()
"""


class Evil:
    """What the attacker plants: unpickling it runs code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_code_and_state_planted_in_redis_are_dropped_on_restore_and_the_head_serves():
    with SecureRedis(PASSWORD) as redis, LocalCluster("sec-tamper", MANTA_NODE_TIMEOUT_S="5") as cluster:
        port = free_port()
        cluster.start_head("--num-cpus", "1", "--storage", redis.url, "--redis-password-file",
                           redis.password_file(), port=port)
        cluster.add_node("--num-cpus", "1")
        setup = cluster.driver(SETUP)
        square_id = read_json_line(setup, "SETUP", 90)["square"]
        assert setup.wait(timeout=30) == 0, setup.stderr.read()
        os.kill(cluster.head_pid(), signal.SIGKILL)

        # The attack, with only Redis's password.
        marker = os.path.join(cluster.root, "pwned")
        evil = pickle.dumps(Evil(marker))
        r = redis.client()
        functions = r.hgetall("manta:functions")
        assert bytes.fromhex(square_id) in functions and len(functions) == 2  # square and Keeper
        # The blob a new driver's `square` will run, behind a made-up MAC.
        r.hset("manta:functions", bytes.fromhex(square_id), b"\x01" + os.urandom(32) + evil)
        # A forged actor, pending, so a restored head would create it from the planted class.
        actors = r.hgetall("manta:actors")
        (blob,) = actors.values()
        assert b"value-of-a" in r.hget("manta:kv", b"sec\0a")  # authenticated, not hidden
        rec = decode(ActorRecord, blob[33:])  # readable: values are authenticated, not encrypted
        evil_id, evil_fn = os.urandom(16), os.urandom(16)
        forged = msgspec.structs.replace(
            rec, state=PENDING, worker_id=b"", node_id=b"",
            spec=msgspec.structs.replace(
                rec.spec, actor_id=evil_id, name="evil",
                creation=msgspec.structs.replace(rec.spec.creation, fn_id=evil_fn, actor_id=evil_id),
            ),
        )
        r.hset("manta:actors", evil_id, b"\x01" + os.urandom(32) + encode(forged))
        r.hset("manta:functions", evil_fn, evil)  # raw, as an older manta stored blobs
        # A genuine value moved to another key: b's becomes a's.
        r.hset("manta:kv", b"sec\0b", r.hget("manta:kv", b"sec\0a"))
        r.close()

        out = cluster.cli("start", "--head", "--port", str(port), "--storage", redis.url,
                          "--redis-password-file", redis.password_file())
        assert "restarted" in out, out
        proc = cluster.driver(VERIFY)
        got = read_json_line(proc, "VERIFY", 120)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert got["square_id"] == square_id  # the function the attacker replaced
        assert got["square"] == 25 and got["ping"] == "pong" and got["a"] == "value-of-a", got
        assert got["b"] is None and got["evil"] == "absent" and "evil" not in got["actors"], got
        assert not os.path.exists(marker), "the planted pickle ran"

        with open(os.path.join(cluster.nodes[0].session_dir, "logs", "head.log")) as f:
            log = f.read()
        lines = [line for line in log.splitlines() if "storage: dropped" in line]
        by_table = {t: [line for line in lines if f"of table {t!r}" in line] for t in ("functions", "actors", "kv")}
        assert all(len(v) == 1 for v in by_table.values()) and len(lines) == 3, lines
        assert "dropped 2 of 3 values of table 'functions'" in by_table["functions"][0], lines
        assert "1 did not authenticate" in by_table["functions"][0], lines
        assert "1 had no format version" in by_table["functions"][0], lines
        assert "dropped 1 of 2 values of table 'actors'" in by_table["actors"][0], lines
        assert "dropped 1 of 2 values of table 'kv'" in by_table["kv"][0], lines
        print("\nRedis tampering: 2 planted function blobs, 1 forged actor and 1 moved KV value "
              "dropped at restore; nothing ran, the head served")
