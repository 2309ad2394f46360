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

from manta._private.auth import pki, tls_contexts
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
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"]}
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
        for e in container.get("env", []):
            self.env[e["name"]] = self._value(e, secrets)
        self.proc: subprocess.Popen[bytes] | None = None
        if container["command"][0] != "manta":
            # A shell script (Redis's): its paths and port moved here.
            *head, script = container["command"]
            for mount, local in self.mounts.items():
                script = re.sub(rf"(?<![\w/]){re.escape(mount)}(?![\w-])", local, script)
            self.args = [*head, script.replace("port 6379", f"port {ports['redis']}")]
            return
        self.env["OBJECT_STORE_BYTES"] = STORE
        self.env["MANTA_TMPDIR"] = self.path(self.env["MANTA_TMPDIR"])
        self.env["HOME"] = self.path(self.env["HOME"])
        self.args = [self._arg(a, ports) for a in container["command"] + container["args"]]
        self.args[0:1] = [sys.executable, "-m", "manta.cli"]

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
        elif name == "--storage":
            value = value.replace("manta-redis:6379", f"127.0.0.1:{ports['redis']}")
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


def _session(pod: Pod) -> str:
    """The pod's session directory once its node wrote its record there, else ""."""
    root = pod.env["MANTA_TMPDIR"]
    for s in os.listdir(root) if os.path.isdir(root) else []:
        if os.path.exists(os.path.join(root, s, "cluster.json")):
            return os.path.join(root, s)
    return ""


def _wait_session(pod: Pod, timeout: float = 60.0) -> str:
    """Until the pod's node has written its session record (`init("auto")` reads it).

    The port opens before the record is written, so a driver started at the
    first successful connect could find no cluster on this machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert pod.proc is not None and pod.proc.poll() is None, pod.log()
        if session := _session(pod):
            return session
        time.sleep(0.2)
    raise AssertionError(f"the node never wrote its session record: {pod.log()}")


class Site:
    """make-secrets.sh's files, free ports, and the pods laid out so far (stopped at the end)."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="mk8sp")
        self.secrets = os.path.join(self.tmp, "secrets")
        subprocess.run(["sh", os.path.join(KUBE, "make-secrets.sh"), self.secrets], check=True,
                       capture_output=True, timeout=60)
        self.ports = {"cluster": _free_port(), "dashboard": _free_port(), "redis": _free_port()}
        self.pods: list[Pod] = []

    def pod(self, workload: dict[str, Any], container: dict[str, Any] | None = None) -> Pod:
        if container is None:
            (container,) = manta_containers(workload)
        root = os.path.join(self.tmp, f"pod{len(self.pods)}-{workload['metadata']['name']}")
        os.makedirs(root)
        pod = Pod(workload, container, root, self.secrets, self.ports)
        self.pods.append(pod)
        return pod

    def close(self) -> None:
        for pod in reversed(self.pods):
            pod.terminate()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    try:
        yield s
    finally:
        s.close()


def _by_name() -> dict[str, dict[str, Any]]:
    return {w["metadata"]["name"]: w for w in workloads()}


def test_the_pods_commands_make_a_cluster(site: Site) -> None:
    head, worker, secrets = site.pod(_by_name()["manta-head"]), site.pod(_by_name()["manta-worker"]), site.secrets
    assert "--block" in flags(head.container) and "--block" in flags(worker.container)
    head.start()
    _wait_port(site.ports["cluster"], head)
    _wait_session(head)
    worker.start()
    with open(os.path.join(secrets, "ca-hash")) as f:
        ca_hash = f.read().strip()
    # The worker joined with the pinned hash, and holds a certificate of the Secret's CA.
    node_pem = os.path.join(_wait_session(worker), "tls", "node.pem")
    with open(os.path.join(secrets, "ca.pem"), "rb") as f:
        ca = f.read()
    assert tls_contexts.fingerprint(ca) == ca_hash
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


KV = textwrap.dedent("""
    import sys, manta
    from manta.experimental import internal_kv
    manta.init(address="auto")
    if sys.argv[1] == "put":
        internal_kv._internal_kv_put(b"k8s", b"kept-in-redis")
    print(internal_kv._internal_kv_get(b"k8s").decode())
    @manta.remote(num_cpus=3)  # only the worker fits it (the head has 2 CPUs)
    def where():
        return manta.get_runtime_context().get_node_id()
    print(manta.get(where.remote(), timeout=90))
    manta.shutdown()
""")



def _processes(pod: Pod) -> list[Any]:
    import psutil

    assert pod.proc is not None
    try:
        root = psutil.Process(pod.proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the Redis component's test runs redis-server")
def test_the_redis_component_keeps_the_state_of_a_new_head(site: Site) -> None:
    import redis

    from tests.security.kubernetes_support import head_with_redis, load

    (statefulset,) = [d for d in load(os.path.join(KUBE, "redis", "redis-statefulset.yaml"))]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    store = site.pod(statefulset, container)
    store.start()
    _wait_port(site.ports["redis"], store)
    with open(os.path.join(site.secrets, "redis-password")) as f:
        password = f.read().strip()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=site.ports["redis"], socket_timeout=5).ping()
    # The head with the component's patch, twice: a new pod, a new session, the same Redis.
    first = site.pod(head_with_redis())
    first.start()
    _wait_port(site.ports["cluster"], first)
    _wait_session(first)
    worker = site.pod(_by_name()["manta-worker"])
    worker.start()
    r = subprocess.run([sys.executable, "-c", KV, "put"], env=first.env, capture_output=True, text=True,
                       timeout=150)
    assert r.returncode == 0, r.stderr + first.log() + worker.log()
    value, worker_node = r.stdout.split()
    assert value == "kept-in-redis"
    for p in _processes(store) + _processes(first) + _processes(worker):
        # Neither Redis nor any process of the head has the password on its command line or in its env.
        assert password not in " ".join(p.cmdline()), p.cmdline()
        assert password not in " ".join(p.environ().values()), p.name()
    assert first.terminate() == 0, first.log()
    second = site.pod(head_with_redis())
    second.start()
    _wait_port(site.ports["cluster"], second)
    _wait_session(second)
    r = subprocess.run([sys.executable, "-c", KV, "get"], env=second.env, capture_output=True, text=True,
                       timeout=150)
    assert r.returncode == 0, r.stderr + second.log() + worker.log()
    # The value, and the same worker node running a task: its agent came back to
    # the new head (a new address behind the same Service) with no pod restart.
    assert r.stdout.split() == ["kept-in-redis", worker_node], r.stdout + second.log() + worker.log()
    assert worker.proc is not None and worker.proc.poll() is None
    # --storage-encryption: Redis holds no plaintext of the value.
    client = redis.Redis(port=site.ports["redis"], password=password, socket_timeout=5)
    dump = b"".join(client.dump(k) or b"" for k in client.keys("*"))
    assert dump and b"kept-in-redis" not in dump


def test_stop_keeps_state_is_for_a_head_with_storage() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "manta.cli", "start", "--head", "--port", "0", "--stop-keeps-state"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--stop-keeps-state: for a head with storage" in " ".join(r.stderr.split())
