"""The Redis password: given by file, environment or Ray's flag, it reaches the
head, and shows nowhere another local user or a log reader could see it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from chaos.chaos_support import Node

from security.redis_support import LocalCluster, SecureRedis, find_secret, free_port, kv_round, start_refused

pytestmark = pytest.mark.timeout(240)

PASSWORD = "pw-7c1e5a0b-never-shown"

def _cli(cluster: LocalCluster, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "manta.cli", *args], env={**cluster.env, **env},
                          capture_output=True, text=True, timeout=90)


def _restart_head(cluster: LocalCluster, port: int, *args: str, **env: str) -> str:
    os.kill(cluster.head_pid(), signal.SIGKILL)
    out = _cli(cluster, "start", "--head", "--port", str(port), *args, **env)
    assert out.returncode == 0 and "restarted" in out.stdout, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_the_password_reaches_the_head_three_ways_and_shows_nowhere():
    with SecureRedis(PASSWORD) as redis, LocalCluster("sec-pw", MANTA_NODE_TIMEOUT_S="5") as cluster:
        port = free_port()
        # 1. From the environment: the head's node (agent, workers) must not inherit it.
        cluster.env["MANTA_REDIS_PASSWORD"] = PASSWORD
        cluster.start_head("--num-cpus", "1", "--storage", redis.url, port=port)
        del cluster.env["MANTA_REDIS_PASSWORD"]
        cluster.add_node("--num-cpus", "1")
        assert kv_round(cluster) is None
        assert find_secret(PASSWORD, cluster) == []

        # 2. From a file, as a restarted head.
        said = _restart_head(cluster, port, "--storage", redis.url, "--redis-password-file",
                             redis.password_file())
        assert PASSWORD not in said and f"redis://127.0.0.1:{redis.port}" in said, said
        assert kv_round(cluster) == "stored"  # the restarted head reached Redis
        assert find_secret(PASSWORD, cluster) == []

        # 3. Ray's --redis-password, and a password inside the URL: moved out of argv.
        said = _restart_head(cluster, port, "--storage", redis.url, "--redis-password", PASSWORD)
        assert PASSWORD not in said, said
        said = _restart_head(cluster, port, "--storage", f"redis://:{PASSWORD}@127.0.0.1:{redis.port}")
        assert PASSWORD not in said and "restarted" in said, said
        assert kv_round(cluster) == "stored"
        status = cluster.cli("status")
        assert f"head state redis at 127.0.0.1:{redis.port}" in status and PASSWORD not in status, status
        with open(os.path.join(cluster.nodes[0].session_dir, "cluster.json")) as f:
            record = json.load(f)
        assert record["storage"] == f"redis://127.0.0.1:{redis.port}" and record["restarts"] == 3, record
        assert find_secret(PASSWORD, cluster) == []


def test_rays_redis_password_flag_leaves_the_command_line_at_once():
    with SecureRedis(PASSWORD) as redis, LocalCluster("sec-argv") as cluster:
        cli = subprocess.Popen(
            [sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0", "--num-cpus", "1", "--block",
             "--storage", redis.url, f"--redis-password={PASSWORD}"],
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            line = cli.stdout.readline()
            assert "manta head started at" in line, line + cli.stderr.read()
            (session,) = os.listdir(cluster.root)
            cluster.nodes.append(Node(os.path.join(cluster.root, session)))
            with open(f"/proc/{cli.pid}/cmdline", "rb") as f:
                argv = f.read()
            assert PASSWORD.encode() not in argv and b"--redis-password=" + b"*" * len(PASSWORD) in argv, argv
            assert find_secret(PASSWORD, cluster) == []
        finally:
            cli.send_signal(signal.SIGTERM)  # --block: stops its node
            cli.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and cluster.nodes[0].pids():
            time.sleep(0.1)


@pytest.mark.parametrize("how", ["file", "url", "none"])
def test_a_wrong_or_missing_password_is_refused_with_a_clear_message_that_does_not_show_it(how):
    wrong = "wrong-pw-3f9d"
    with SecureRedis(PASSWORD) as redis, LocalCluster("sec-wrong") as cluster:
        args = ["--storage", redis.url]
        if how == "file":
            path = os.path.join(redis.dir, "wrong")
            with open(path, "w") as f:
                f.write(wrong)
            args += ["--redis-password-file", path]
        elif how == "url":
            args = ["--storage", f"redis://:{wrong}@127.0.0.1:{redis.port}"]
        said = start_refused(cluster, *args)
        if how == "none":
            assert f"redis at 127.0.0.1:{redis.port} needs a password" in said, said
            assert "--redis-password-file" in said and "MANTA_REDIS_PASSWORD" in said, said
        else:
            assert f"wrong Redis password for redis at 127.0.0.1:{redis.port}" in said, said
        assert wrong not in said and PASSWORD not in said, said
