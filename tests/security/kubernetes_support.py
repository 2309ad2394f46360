"""Reading deploy/kubernetes as the kubelet and kustomize would: its
manifests, kustomizations, pods' flags and the Redis component's patch."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from typing import Any

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBE = os.path.join(ROOT, "deploy", "kubernetes")
DOCKERFILE = os.path.join(ROOT, "deploy", "docker", "Dockerfile")
# The oldest Kubernetes the manifests are for (docs/kubernetes.md says so too).
KUBERNETES_VERSION = "1.33.0"
# The Secrets and ConfigMaps the manifests use, made as docs/kubernetes.md shows.
SECRETS = {"manta-token": {"token"}, "manta-ca": {"ca.pem", "ca.key"}, "manta-redis": {"password"}}
CONFIG_MAPS = {"manta-ca-hash": {"ca-hash"}}
WORKLOADS = ("Deployment", "StatefulSet")
_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity ("4Gi", "500m", "2") as a number."""
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G)?", str(text))
    assert match, f"not a quantity: {text!r}"
    number, unit = float(match.group(1)), match.group(2) or ""
    return number / 1000 if unit == "m" else number * _UNITS[unit]


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomizations() -> list[str]:
    return sorted(root for root, _, files in os.walk(KUBE) if "kustomization.yaml" in files)


def listed(directory: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """A kustomization, its resource files and its patch files (paths)."""
    (k,) = load(os.path.join(directory, "kustomization.yaml"))
    resources = [os.path.normpath(os.path.join(directory, r)) for r in k.get("resources", [])]
    patches = [os.path.normpath(os.path.join(directory, p["path"])) for p in k.get("patches", []) if "path" in p]
    return k, resources, patches


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for directory in kustomizations():
        for path in listed(directory)[1]:
            if os.path.isfile(path):
                out.extend((os.path.relpath(path, KUBE), doc) for doc in load(path))
    return out


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The RFC 6902 `add` operations the Redis component uses (kustomize applies the same)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        else:
            node[last] = copy.deepcopy(op["value"])
    return doc


def head_with_redis() -> dict[str, Any]:
    (head,) = [d for _, d in manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == "manta-head"]
    return json_patch(head, load(os.path.join(KUBE, "redis", "head-storage-patch.yaml"))[0])


def workloads(docs: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    for doc in docs if docs is not None else [d for _, d in manifests()]:
        if doc["kind"] in WORKLOADS:
            yield doc


def manta_containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c.get("command", [])[:2] == ["manta", "start"]:
            yield c


def flags(container: dict[str, Any]) -> dict[str, str]:
    out = {}
    for arg in container["command"][2:] + container.get("args", []):
        name, _, value = arg.partition("=")
        out[name] = value
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}
