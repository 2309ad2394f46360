"""deploy/kubernetes: every manifest is valid against the schemas of a pinned
Kubernetes (kubernetes-validate), every file is in its kustomization, and the
pods are locked down: non-root, no privilege escalation, all capabilities
dropped, Secrets referenced and never inlined, and each node's --num-cpus,
--memory and --num-gpus taken from its own container's limits. Where kubectl
or kustomize is installed, `kustomize build` renders too, with and without
the Redis component."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

import kubernetes_validate
import pytest
import yaml

from manta import cli
from tests.security.kubernetes_support import (
    CONFIG_MAPS,
    DOCKERFILE,
    KUBE,
    KUBERNETES_VERSION,
    ROOT,
    SECRETS,
    WORKLOADS,
    env_of,
    flags,
    head_with_redis,
    kustomizations,
    listed,
    load,
    manifests,
    manta_containers,
    quantity,
    workloads,
)

# -- files and kustomizations ---------------------------------------------------


def test_every_file_is_listed_and_every_listed_file_exists() -> None:
    assert kustomizations(), "no kustomization under deploy/kubernetes"
    for directory in kustomizations():
        _, resources, patches = listed(directory)
        for path in resources + patches:
            assert os.path.exists(path), f"{directory}/kustomization.yaml lists {path}, which does not exist"
        # A subdirectory with a kustomization of its own (a component) is its own list.
        here = {os.path.join(directory, f) for f in os.listdir(directory)
                if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
        missing = here - set(resources) - set(patches)
        assert not missing, f"not in {directory}/kustomization.yaml: {sorted(missing)}"


def test_the_redis_component_is_offered_in_the_kustomization() -> None:
    (k,) = load(os.path.join(KUBE, "redis", "kustomization.yaml"))
    assert k["kind"] == "Component"
    with open(os.path.join(KUBE, "kustomization.yaml")) as f:
        assert "# components:\n#   - redis\n" in f.read()


# -- schemas --------------------------------------------------------------------


def _validate(where: str, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{where}: {doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")


def test_every_manifest_validates_against_the_pinned_kubernetes() -> None:
    docs = manifests()
    assert {d["kind"] for _, d in docs} >= {"Namespace", "Deployment", "Service", "NetworkPolicy", "StatefulSet"}
    for where, doc in docs:
        _validate(where, doc)
    _validate("head + redis/head-storage-patch.yaml", head_with_redis())


def test_no_secret_is_inlined() -> None:
    for where, doc in manifests():
        assert doc["kind"] not in ("Secret", "ConfigMap"), f"{where}: made with kubectl create, never committed"
    for workload in [*workloads(), head_with_redis()]:
        spec = workload["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                if re.search(r"TOKEN|PASSWORD|SECRET|KEY", e["name"]):
                    assert "value" not in e, f"{c['name']}: {e['name']} inlined"
            for arg in c.get("command", []) + c.get("args", []):
                assert not re.match(r"--(redis-password|token)(=|$)", arg), f"{c['name']}: {arg} on a command line"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in SECRETS[ref["secretKeyRef"]["name"]]
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in CONFIG_MAPS[ref["configMapKeyRef"]["name"]]
        for v in spec.get("volumes", []):
            if "secret" in v:
                name = v["secret"]["secretName"]
                assert {i["key"] for i in v["secret"]["items"]} <= SECRETS[name], name
                # Readable by the pod's group (fsGroup), not by others.
                assert v["secret"]["defaultMode"] & 0o007 == 0, name
    with open(os.path.join(ROOT, "docs", "kubernetes.md")) as f:
        doc = f.read()
    for kind, names in (("secret generic", SECRETS), ("configmap", CONFIG_MAPS)):
        for name in names:
            assert re.search(rf"kubectl -n manta create {kind} {name} ", doc), f"docs/kubernetes.md: no {name}"


# -- the pods' security ---------------------------------------------------------


def test_pods_are_non_root_without_privileges_or_capabilities() -> None:
    with open(DOCKERFILE) as f:
        (image_user,) = re.findall(r"^USER\s+(\d+):(\d+)\s*$", f.read(), re.M)
    seen = 0
    for workload in workloads():
        name = workload["metadata"]["name"]
        spec = workload["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec.get("enableServiceLinks") is False, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{name}: {host}"
        for v in spec.get("volumes", []):
            assert "hostPath" not in v, f"{name}: hostPath {v['name']}"
        if name.startswith("manta-") and name != "manta-redis":
            assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == image_user, f"{name}: not the image's user"
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc.get("privileged") is not True, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            seen += 1
    assert seen >= 4


def test_manta_writes_only_to_its_empty_dirs() -> None:
    for workload in workloads():
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in manta_containers(workload):
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
            tmpdir = env_of(c)["MANTA_TMPDIR"]["value"]
            scratch = [p for p in mounts if tmpdir.startswith(p.rstrip("/") + "/")]
            assert scratch and "emptyDir" in mounts[scratch[0]], f"{c['name']}: {tmpdir} is not on an emptyDir"
            assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory", c["name"]
            for path, v in mounts.items():
                if "secret" in v:
                    assert next(m for m in c["volumeMounts"] if m["mountPath"] == path)["readOnly"] is True


# -- what each node offers is what its container is given -----------------------


def _from_limit(container: dict[str, Any], flag_value: str, resource: str) -> None:
    match = re.fullmatch(r"\$\((\w+)\)", flag_value)
    assert match, f"{container['name']}: {flag_value!r} is not $(VAR) from the downward API"
    ref = env_of(container)[match.group(1)]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == resource and ref.get("containerName", container["name"]) == container["name"]
    assert str(ref.get("divisor", "1")) == "1", f"{container['name']}: {resource} not in whole units"


def test_resources_map_to_the_node_flags() -> None:
    containers = [c for w in workloads() for c in manta_containers(w)]
    assert len(containers) >= 2
    for workload in workloads():
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        for c in manta_containers(workload):
            f, limits = flags(c), c["resources"]["limits"]
            # Guaranteed QoS: what is reserved is what may be used.
            assert c["resources"]["requests"] == limits, c["name"]
            _from_limit(c, f["--num-cpus"], "limits.cpu")
            _from_limit(c, f["--memory"], "limits.memory")
            # No downward API for extended resources: the flag must equal the limit.
            assert float(f["--num-gpus"]) == quantity(limits.get("nvidia.com/gpu", 0)), c["name"]
            store = re.fullmatch(r"\$\((\w+)\)", f["--object-store-memory"])
            assert store, c["name"]
            store_bytes = int(env_of(c)[store.group(1)]["value"])
            shm = next(volumes[m["name"]] for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm")
            # The store fits its tmpfs, which is charged to the container's memory.
            assert store_bytes <= quantity(shm["emptyDir"]["sizeLimit"]) < quantity(limits["memory"]), c["name"]


def test_flags_exist_and_the_nodes_meet() -> None:
    known = {opt for p in cli.start.params for opt in p.opts}
    head = next(w for w in workloads() if w["metadata"]["name"] == "manta-head")
    (hc,) = manta_containers(head)
    for workload in [*workloads(), head_with_redis()]:
        for c in manta_containers(workload):
            unknown = set(flags(c)) - known
            assert not unknown, f"{c['name']}: manta start has no {sorted(unknown)}"
            assert "--block" in flags(c), f"{c['name']}: not in the foreground"
    hf = flags(hc)
    assert "--head" in hf and hf["--tls"] == "on" and hf["--tls-ca-key"]
    assert hf["--dashboard-host"] == "0.0.0.0"
    (service,) = [d for _, d in manifests() if d["kind"] == "Service" and d["metadata"]["name"] == "manta-head"]
    labels = head["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    named = {p["name"]: p["containerPort"] for p in hc["ports"]}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert named == {"cluster": int(hf["--port"]), "dashboard": int(hf["--dashboard-port"])}
    for name, p in ports.items():
        assert named[p["targetPort"]] == p["port"], name
    workers = [w for w in workloads() if w["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
    assert workers
    for w in workers:
        for c in manta_containers(w):
            wf = flags(c)
            assert wf["--address"] == f"manta-head:{ports['cluster']['port']}", c["name"]
            assert wf["--tls"] == "on" and wf["--ca-hash"].startswith("$("), c["name"]
            assert wf["--host"] == "$(POD_IP)"
    redis = flags(next(manta_containers(head_with_redis())))
    assert redis["--storage"].startswith("redis://manta-redis:") and redis["--redis-password-file"]


def test_network_policies_admit_only_the_cluster() -> None:
    docs = [d for _, d in manifests()]
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)}

    def selects(spec: dict[str, Any], labels: dict[str, str]) -> bool:
        return spec["podSelector"]["matchLabels"].items() <= labels.items()

    for name, labels in pods.items():
        mine = [p for p in policies.values() if selects(p, labels)]
        assert mine, f"no NetworkPolicy selects {name}: it would admit anyone"
        for p in mine:
            assert p["policyTypes"] == ["Ingress"]
            for rule in p["ingress"]:
                for peer in rule["from"]:
                    assert "ipBlock" not in peer, f"{name}: admits addresses"
                    if "namespaceSelector" in peer:
                        # Clients from labelled namespaces: the head's two ports, nothing else.
                        assert peer["namespaceSelector"]["matchLabels"] == {"manta-client": "true"}
                        assert "head" in name and {q["port"] for q in rule["ports"]} == {6380, 8265}
                    else:
                        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "manta"
    redis = policies["manta-redis"]["ingress"]
    assert [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for r in redis
            for peer in r["from"]] == ["head"]


# -- kustomize build ------------------------------------------------------------


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.fixture(scope="module")
def kustomize() -> list[str]:
    cmd = _kustomize()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed: the manifests are checked file by file only")
    return cmd


def _build(cmd: list[str], directory: str) -> list[dict[str, Any]]:
    r = subprocess.run([*cmd, directory], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


def _check_rendered(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        _validate("kustomize build", doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "manta", doc["metadata"]["name"]
    for w in workloads(docs):
        spec = w["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["image"] != "manta", "the images: entry did not apply"


def test_kustomize_build_renders_valid_objects(kustomize: list[str]) -> None:
    docs = _build(kustomize, KUBE)
    _check_rendered(docs)
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] in WORKLOADS) == ["manta-head", "manta-worker"]


def test_kustomize_build_with_the_redis_component(kustomize: list[str]) -> None:
    # As docs/kubernetes.md says: uncomment the component in a copy of the tree.
    tmp = tempfile.mkdtemp(prefix="mk8s")
    try:
        copy_dir = os.path.join(tmp, "kubernetes")
        shutil.copytree(KUBE, copy_dir)
        path = os.path.join(copy_dir, "kustomization.yaml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("# components:\n#   - redis\n", "components:\n  - redis\n"))
        docs = _build(kustomize, copy_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _check_rendered(docs)
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] in WORKLOADS) == [
        "manta-head", "manta-redis", "manta-worker"]
    (head,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "manta-head"]
    (rendered,) = manta_containers(head)
    (patched,) = manta_containers(head_with_redis())
    assert rendered["args"] == patched["args"]  # kustomize's patch is the one the checks above read
