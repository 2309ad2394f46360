"""Principals and roles, attacked: people's tokens of each role, drivers of other
namespaces and forged node messages, against one real cluster.

Each attacker is a driver process holding a token made by `manta token
create`; each attack must be refused with a clear AuthorizationError (or
AuthenticationError), change nothing, and leave the cluster serving.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from tests_support import BACKEND  # noqa: E402

from tests.security.integrity_support import ATTEMPT  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own principals"),
    pytest.mark.timeout(180),
]

PRELUDE = ATTEMPT + """
import json, sys
import manta
from manta import exceptions
from manta._private import session
from manta._private.protocol import messages as m
from manta._private.protocol import auth_messages as am

def raw(msg):
    rt = session.current().rt
    return rt.call_head(msg)
"""


def cli(env, *args, check=True):
    r = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env, capture_output=True, text=True,
                       timeout=90)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def driver(env, body, token=None):
    """Runs a driver with `token` (None: the owner's); returns what it recorded."""
    e = dict(env)
    if token is not None:
        e["MANTA_TOKEN"] = token
    code = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT' + json.dumps(out))\n"
    r = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, r.stdout + r.stderr
    return json.loads(lines[-1][len("RESULT"):])


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="mtz")
    env = {**os.environ, "MANTA_TMPDIR": root, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MANTA_TOKEN", None)
    env.pop("MANTA_ADDRESS", None)
    cli(env, "start", "--head", "--port", "0", "--num-cpus", "4")
    try:
        # The owner's service in namespace "prod": a named actor, a KV entry, a placement group.
        driver(env, """
        manta.init(address="auto", namespace="prod")
        @manta.remote
        class Svc:
            def ping(self):
                return "pong"
        Svc.options(name="svc", lifetime="detached").remote().ping.remote()
        manta.get(manta.get_actor("svc").ping.remote())
        from manta.experimental import internal_kv
        internal_kv._internal_kv_put(b"secret", b"prod-value", namespace="prod")
        pg = manta.util.placement_group([{"CPU": 1}], name="prod-pg", lifetime="detached")
        manta.get(pg.ready())
        out["ok"] = True
        """)

        def token(*args):
            return cli(env, "token", "create", *args).stdout.strip().splitlines()[-1]

        yield env, {
            "view": token("--role", "view"),
            "team_a": token("--role", "submit", "--namespace", "team-a"),
        }
    finally:
        cli(env, "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def _prod_still_serves(env):
    seen = driver(env, """
    manta.init(address="auto", namespace="prod")
    attempt("ping", lambda: manta.get(manta.get_actor("svc").ping.remote(), timeout=30))
    from manta.experimental import internal_kv
    attempt("kv", lambda: internal_kv._internal_kv_get(b"secret", namespace="prod"))
    attempt("pg", lambda: [g["name"] for g in manta.util.placement_group_table().values()
                           if g["state"] == "CREATED"])
    attempt("square", lambda: manta.get(manta.remote(lambda x: x * x).remote(7)))
    """)
    assert seen["ping"] == ["ok", "'pong'"]
    assert seen["kv"] == ["ok", "b'prod-value'"]
    assert "prod-pg" in seen["pg"][1]
    assert seen["square"] == ["ok", "49"]


def test_a_view_token_reads_state_and_nothing_else(cluster):
    env, tokens = cluster
    seen = driver(env, """
    manta.init(address="auto", namespace="prod")
    from manta.util import state
    attempt("list", lambda: [a.class_name for a in state.list_actors()])
    attempt("task", lambda: manta.get(manta.remote(lambda: 1).remote(), timeout=20))
    attempt("kill", lambda: manta.kill(manta.get_actor("svc")))
    from manta.experimental import internal_kv
    attempt("kv_put", lambda: internal_kv._internal_kv_put(b"secret", b"mine", namespace="prod"))
    attempt("kv_del", lambda: internal_kv._internal_kv_del(b"secret", namespace="prod"))
    attempt("stop", lambda: raw(m.ShutdownCluster()))
    attempt("tokens", lambda: raw(am.CreateToken(role=2)))
    """, token=tokens["view"])
    assert "Svc" in seen["list"][1]
    for action in ("task", "kill", "kv_put", "kv_del", "stop", "tokens"):
        assert seen[action][0] == "AuthorizationError", (action, seen[action])
    assert "role view" in seen["kill"][1] and "submit role" in seen["kill"][1]
    assert "admin role" in seen["stop"][1]
    _prod_still_serves(env)


def test_a_submit_token_of_one_namespace_cannot_reach_another(cluster):
    env, tokens = cluster
    seen = driver(env, """
    manta.init(address="auto", namespace="team-a")
    attempt("own_task", lambda: manta.get(manta.remote(lambda x: x + 1).remote(1), timeout=30))
    @manta.remote
    class Mine:
        def who(self):
            return "team-a"
    attempt("own_actor", lambda: manta.get(Mine.options(name="mine").remote().who.remote(), timeout=30))
    attempt("lookup", lambda: manta.get_actor("svc", namespace="prod"))
    attempt("create_there", lambda: Mine.options(name="x", namespace="prod").remote())
    from manta.experimental import internal_kv
    attempt("own_kv", lambda: internal_kv._internal_kv_put(b"k", b"v", namespace="team-a"))
    attempt("kv_read", lambda: internal_kv._internal_kv_get(b"secret", namespace="prod"))
    attempt("kv_write", lambda: internal_kv._internal_kv_put(b"secret", b"pwned", namespace="prod"))
    from manta.util import state
    prod = [a for a in state.list_actors() if a.name == "svc"][0]
    attempt("kill_by_id", lambda: raw(m.KillActor(actor_id=bytes.fromhex(prod.actor_id), no_restart=True)))
    pg = [g for g in state.list_placement_groups() if g.name == "prod-pg"][0]
    attempt("remove_pg", lambda: raw(m.RemovePlacementGroup(pg_id=bytes.fromhex(pg.placement_group_id))))
    attempt("take_job", lambda: raw(m.RegisterDriver(namespace="prod", pid=1, env_vars={}, job_id=1)))
    attempt("stop", lambda: raw(m.ShutdownCluster()))
    """, token=tokens["team_a"])
    assert seen["own_task"] == ["ok", "2"]
    assert seen["own_actor"] == ["ok", "'team-a'"]
    assert seen["own_kv"][0] == "ok"
    for action in ("lookup", "create_there", "kv_read", "kv_write", "kill_by_id", "remove_pg", "take_job", "stop"):
        assert seen[action][0] == "AuthorizationError", (action, seen[action])
    assert "namespace 'prod'" in seen["kill_by_id"][1] and "'team-a'" in seen["kill_by_id"][1]
    _prod_still_serves(env)


def test_a_job_cannot_speak_for_a_node(cluster):
    env, tokens = cluster
    seen = driver(env, """
    manta.init(address="auto", namespace="team-a")
    rt = session.current().rt
    node = bytes.fromhex(manta.nodes()[0]["NodeID"])
    info = raw(m.GetClusterInfo()).nodes[0]
    attempt("register", lambda: raw(m.RegisterNode(node=info)))
    # One-way reports: sent, then checked to have changed nothing.
    rt.post(rt.send_head, m.NodeResources(node_id=node, available={"CPU": 0.0}, pending=[], total={"CPU": 999.0}))
    from manta.util import state
    prod = [a for a in state.list_actors() if a.name == "svc"][0]
    worker = [w for w in state.list_workers() if w.pid == prod.pid][0]
    rt.post(rt.send_head, m.WorkerExited(worker_id=bytes.fromhex(worker.worker_id), pid=worker.pid, reason="forged", exit_code=1))
    import time
    time.sleep(1.0)
    attempt("cpus", lambda: manta.cluster_resources()["CPU"])
    attempt("state", lambda: [a.state for a in state.list_actors() if a.name == "svc"])
    """, token=tokens["team_a"])
    assert seen["register"][0] == "AuthorizationError" and "cluster role" in seen["register"][1]
    assert seen["cpus"] == ["ok", "4.0"]
    assert seen["state"] == ["ok", "['ALIVE']"]
    _prod_still_serves(env)


def test_token_admin_is_for_admins_and_a_revoked_token_is_refused_at_once(cluster):
    env, tokens = cluster
    listed = cli(env, "token", "list").stdout
    assert "submit" in listed and "team-a" in listed and "view" in listed
    refused = cli({**env, "MANTA_TOKEN": tokens["team_a"]}, "token", "list", check=False)
    assert refused.returncode != 0 and "admin role" in refused.stdout + refused.stderr
    doomed = cli(env, "token", "create", "--role", "submit").stdout.strip().splitlines()[-1]
    assert driver(env, "manta.init(address='auto')\nout['ok'] = True\n", token=doomed) == {"ok": True}
    cli(env, "token", "revoke", doomed)
    seen = driver(env, "attempt('init', lambda: manta.init(address='auto'))\n", token=doomed)
    assert seen["init"][0] == "AuthenticationError" and "revoked" in seen["init"][1]
    valid = tokens["team_a"]
    forged = valid[:-4] + ("0000" if not valid.endswith("0000") else "1111")
    seen = driver(env, "attempt('init', lambda: manta.init(address='auto'))\n", token=forged)
    assert seen["init"][0] == "AuthenticationError" and "wrong token secret" in seen["init"][1]
    assert "revoked" in cli(env, "token", "list").stdout


def test_every_refusal_and_change_is_in_the_audit_log_without_a_secret(cluster):
    env, tokens = cluster
    driver(env, """
    manta.init(address="auto", namespace="team-a")
    from manta.experimental import internal_kv
    attempt("kv_write", lambda: internal_kv._internal_kv_put(b"secret", b"pwned", namespace="prod"))
    attempt("own_kv", lambda: internal_kv._internal_kv_put(b"mine", b"hidden-value", namespace="team-a"))
    """, token=tokens["team_a"])
    records = [json.loads(line) for line in cli(env, "audit", "--json").stdout.splitlines()]
    assert all(set(r) == {"time", "principal", "role", "namespace", "action", "target", "outcome", "peer", "detail"}
               for r in records)
    refused = [r for r in records if r["outcome"] == "refused" and r["action"] == "kv.put"]
    assert refused and refused[-1]["namespace"] == "prod" and refused[-1]["role"] == "submit"
    assert refused[-1]["principal"].startswith("job ") and "namespace 'prod'" in refused[-1]["detail"]
    written = [r for r in records if r["outcome"] == "ok" and r["action"] == "kv.put"]
    assert written[-1]["target"] == "team-a/mine"
    actions = {r["action"] for r in records}
    assert {"auth.login", "job.start", "job.end", "actor.create", "token.create", "token.revoke",
            "placement_group.create", "node.join"} <= actions
    assert any(r["action"] == "auth.failed" and "wrong token secret" in r["detail"] for r in records)
    text = cli(env, "audit").stdout
    assert "refused kv.put team-a" not in text and "kv.put prod/secret [prod]" in text
    raw_log = "\n".join(json.dumps(r) for r in records)
    for token in tokens.values():
        assert token.split(".")[2] not in raw_log
    assert "hidden-value" not in raw_log and "prod-value" not in raw_log


def test_a_task_and_an_actor_act_only_as_their_job(cluster):
    """User code runs with its job's pass: a task of a team-a job cannot do what its
    token may not, whatever it sends, and it holds no cluster secret."""
    env, tokens = cluster
    seen = driver(env, """
    manta.init(address="auto", namespace="team-a")

    @manta.remote
    def attack():
        import os
        from manta import exceptions
        from manta._private import session
        from manta._private.protocol import messages as m
        from manta._private.runtime import context
        from manta.experimental import internal_kv
        rt = context.require()
        got = {"principal": rt.identity.principal.name, "role": rt.identity.principal.role.name,
               "secret_in_env": any(k in os.environ for k in ("MANTA_TOKEN", "RAY_AUTH_TOKEN")),
               "has_cluster_secret": bool(getattr(rt.session.credential, "token", ""))}
        for name, fn in [
            ("kv_prod", lambda: internal_kv._internal_kv_put(b"secret", b"pwned", namespace="prod")),
            ("lookup_prod", lambda: manta.get_actor("svc", namespace="prod")),
            ("stop", lambda: rt.call_head(m.ShutdownCluster())),
            ("own_kv", lambda: internal_kv._internal_kv_put(b"t", b"v", namespace="team-a")),
        ]:
            try:
                fn()
                got[name] = "ok"
            except Exception as e:
                got[name] = type(e).__name__
        return got

    out["attack"] = manta.get(attack.remote(), timeout=60)
    """, token=tokens["team_a"])
    got = seen["attack"]
    assert got["role"] == "SUBMIT" and "job" in got["principal"], got
    assert not got["secret_in_env"] and not got["has_cluster_secret"]
    assert got["kv_prod"] == "AuthorizationError"
    assert got["lookup_prod"] == "AuthorizationError"
    assert got["stop"] == "AuthorizationError"
    assert got["own_kv"] == "ok"
    _prod_still_serves(env)
