"""The commands of deploy/kubernetes's pods, run here as the kubelet would
run them: $(VAR) expanded from each container's env (the downward API's
values computed from its limits), its Secret and ConfigMap volumes filled
from make-secrets.sh's files, its emptyDirs as temp directories. The head
and a worker come up in the foreground (--block) over TLS on the Secret's
CA, a driver in the head's pod runs a task only the worker can hold, and
SIGTERM (what Kubernetes sends) stops each pod's node.

What is changed, because this machine is not a Kubernetes node: ports are
free ones rather than 6380/8265, the head's Service name is 127.0.0.1, the
object store is 64 MB, and mount paths live under a temp directory."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from manta._private.auth import pki
from tests.security.kubernetes_support import KUBE, flags, manta_containers, quantity, workloads

STORE = str(64 * 2**20)
# Secret and ConfigMap keys -> make-secrets.sh's files.
FILES = {("manta-token", "token"): "token", ("manta-ca", "ca.pem"): "ca.pem", ("manta-ca", "ca.key"): "ca.key",
         ("manta-ca-hash", "ca-hash"): "ca-hash", ("manta-redis", "password"): "redis-password"}

DRIVER = textwrap.dedent("""
    import manta
    manta.init(address="auto")
    @manta.remote(num_cpus=3)  # the head has 2 CPUs: only the worker fits it
    def where():
        return manta.get_runtime_context().get_node_id()
    res = manta.cluster_resources()
    print(int(res["CPU"]), int(res["memory"]), manta.get(where.remote()) != manta.get_runtime_context().get_node_id())
    manta.shutdown()
""")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pod:
    """One container of a workload, laid out on this machine."""

    def __init__(self, workload: dict[str, Any], container: dict[str, Any], root: str, secrets: str,
                 ports: dict[str, int]) -> None:
        self.container, self.root = container, root
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        self.mounts: dict[str, str] = {}
        for m in container["volumeMounts"]:
            v = volumes[m["name"]]
            if m["mountPath"] == "/dev/shm":
                continue  # the machine's own
            local = os.path.join(root, m["name"])
            os.makedirs(local, mode=0o700)
            if "secret" in v:
                for item in v["secret"]["items"]:
                    target = os.path.join(local, item["path"])
                    shutil.copyfile(os.path.join(secrets, FILES[(v["secret"]["secretName"], item["key"])]), target)
                    os.chmod(target, v["secret"]["defaultMode"])
            self.mounts[m["mountPath"]] = local
        self.env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path)}
        for e in container["env"]:
            self.env[e["name"]] = self._value(e, secrets)
        self.env["OBJECT_STORE_BYTES"] = STORE
        self.env["MANTA_TMPDIR"] = self.path(self.env["MANTA_TMPDIR"])
        self.env["HOME"] = self.path(self.env["HOME"])
        self.args = [self._arg(a, ports) for a in container["command"] + container["args"]]
        self.args[0:1] = [sys.executable, "-m", "manta.cli"]
        self.proc: subprocess.Popen[bytes] | None = None

    def _value(self, e: dict[str, Any], secrets: str) -> str:
        if "value" in e:
            return str(e["value"])
        ref = e["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "status.podIP"
            return "127.0.0.1"
        if "configMapKeyRef" in ref:
            with open(os.path.join(secrets, FILES[(ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"])])) as f:
                return f.read().strip()
        field = ref["resourceFieldRef"]
        limit = quantity(self.container["resources"]["limits"][field["resource"].split(".", 1)[1]])
        # The kubelet rounds up to the divisor.
        return str(math.ceil(limit / quantity(field.get("divisor", "1"))))

    def path(self, p: str) -> str:
        for mount, local in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if p == mount or p.startswith(mount.rstrip("/") + "/"):
                return local + p[len(mount):]
        return p

    def _arg(self, arg: str, ports: dict[str, int]) -> str:
        arg = re.sub(r"\$\((\w+)\)", lambda m: self.env[m.group(1)], arg)
        name, eq, value = arg.partition("=")
        if not eq:
            return arg
        if name == "--port":
            value = str(ports["cluster"])
        elif name == "--dashboard-port":
            value = str(ports["dashboard"])
        elif name == "--address":
            value = f"127.0.0.1:{ports['cluster']}"
        elif value.startswith("/"):
            value = self.path(value)
        return f"{name}={value}"

    def start(self) -> None:
        log = open(os.path.join(self.root, "pod.log"), "wb")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()

    def log(self) -> str:
        with open(os.path.join(self.root, "pod.log"), errors="replace") as f:
            return f.read()

    def terminate(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what it started
                self.proc.wait(10)
        return self.proc.returncode


def _wait_port(port: int, pod: Pod, timeout: float = 60.0) -> None:
    """The head's readinessProbe: a TCP connect to the cluster port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert pod.proc is not None and pod.proc.poll() is None, pod.log()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the head's port never opened: {pod.log()}")


@pytest.fixture
def pods() -> Iterator[tuple[Pod, Pod, str]]:
    tmp = tempfile.mkdtemp(prefix="mk8sp")
    secrets = os.path.join(tmp, "secrets")
    subprocess.run(["sh", os.path.join(KUBE, "make-secrets.sh"), secrets], check=True, capture_output=True,
                   timeout=60)
    ports = {"cluster": _free_port(), "dashboard": _free_port()}
    by_name = {w["metadata"]["name"]: w for w in workloads()}
    made = []
    try:
        for name in ("manta-head", "manta-worker"):
            (container,) = manta_containers(by_name[name])
            root = os.path.join(tmp, name)
            os.makedirs(root)
            made.append(Pod(by_name[name], container, root, secrets, ports))
        yield made[0], made[1], secrets
    finally:
        for pod in reversed(made):
            pod.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_pods_commands_make_a_cluster(pods: tuple[Pod, Pod, str]) -> None:
    head, worker, secrets = pods
    assert "--block" in flags(head.container) and "--block" in flags(worker.container)
    head.start()
    port = int(next(a for a in head.args if a.startswith("--port=")).partition("=")[2])
    _wait_port(port, head)
    worker.start()
    with open(os.path.join(secrets, "ca-hash")) as f:
        ca_hash = f.read().strip()
    # The worker joined with the pinned hash, and holds a certificate of the Secret's CA.
    deadline = time.monotonic() + 60
    node_pem = ""
    while time.monotonic() < deadline and not node_pem:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        sessions = os.listdir(worker.env["MANTA_TMPDIR"]) if os.path.isdir(worker.env["MANTA_TMPDIR"]) else []
        for s in sessions:
            candidate = os.path.join(worker.env["MANTA_TMPDIR"], s, "tls", "node.pem")
            if os.path.exists(os.path.join(worker.env["MANTA_TMPDIR"], s, "cluster.json")):
                node_pem = candidate
        time.sleep(0.2)
    assert node_pem, worker.log()
    with open(os.path.join(secrets, "ca.pem"), "rb") as f:
        ca = f.read()
    assert pki.fingerprint(ca) == ca_hash
    with open(node_pem, "rb") as f:
        pki.verify_chain(ca, f.read())
    # A driver in the head's pod (kubectl exec deploy/manta-head -- python job.py).
    r = subprocess.run([sys.executable, "-c", DRIVER], env=head.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + head.log() + worker.log()
    limits = [c["resources"]["limits"] for c in (head.container, worker.container)]
    cpus = sum(int(quantity(x["cpu"])) for x in limits)
    memory = sum(int(quantity(x["memory"])) for x in limits)
    assert r.stdout.split() == [str(cpus), str(memory), "True"]
    # Kubernetes stops a pod with SIGTERM: each node stops and its command returns.
    assert worker.terminate() == 0, worker.log()
    assert head.terminate() == 0, head.log()
