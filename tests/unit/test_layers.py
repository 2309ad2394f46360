"""The layers of `manta/`, enforced: who may import whom, and no import cycles.

This file is where the rules are written down (docs/architecture.md draws
them). Every module belongs to one component; a component may import only
itself and the components listed for it. Imports under `TYPE_CHECKING` do
not count (they never run); imports inside functions do.

    public      manta/__init__, util/, experimental/, cli    anything
    driver      session, api, remote                          the local, runtime and launch layers
    launch      services, cluster                             starts processes by module name
    local       local/ (local mode's runtime, in the driver)  the runtime layer and the head's sans-IO tables
    client      client/ (a driver off the cluster, its proxy) the runtime layer
    runtime     runtime/ (drivers' and workers' core)         transport and below
    head        head/                                         control, transport and below
    node        node/                                         objectstore, transport and below
    sim         sim/ (simulated nodes for a real head)        node, runtime and below
    control     control/ (sans-IO tables of the head)         protocol, scheduling
    transport   transport/                                    auth, protocol
    auth        auth/ (credentials, handshake, policy, quotas) protocol
    scheduling                                                protocol
    objectstore, protocol                                     base only
    base        exceptions, ids, config, clock, private_files, each other
                cmdline

Process entry points (the `main` modules) may import anything, and no
library module imports them: they are started by module name (the fork
server's main calls the worker main in each child it forks). `_private` never imports the
public layer; `manta.exceptions` is a leaf that everyone may use.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "manta")

BASE = {"manta._private", "manta.exceptions", "manta._private.ids", "manta._private.config", "manta._private.clock",
        "manta._private.version", "manta._private.private_files", "manta._private.cmdline"}
ENTRY_POINTS = {
    "manta._private.head.main",
    "manta._private.node.main",
    "manta._private.node.zygote",
    "manta._private.runtime.worker_main",
    "manta._private.client.proxy_main",
    "manta._private.sim.main",
}
COMPONENT_PREFIXES = [
    ("driver", ("manta._private.session", "manta._private.api", "manta._private.remote", "manta._private.options",
                "manta._private.dag")),
    ("launch", ("manta._private.services", "manta._private.cluster")),
    ("local", ("manta._private.local",)),
    ("client", ("manta._private.client",)),
    ("runtime", ("manta._private.runtime",)),
    ("head", ("manta._private.head",)),
    ("node", ("manta._private.node",)),
    ("sim", ("manta._private.sim",)),
    ("control", ("manta._private.control",)),
    ("transport", ("manta._private.transport",)),
    ("auth", ("manta._private.auth",)),
    ("scheduling", ("manta._private.scheduling",)),
    ("objectstore", ("manta._private.objectstore",)),
    ("protocol", ("manta._private.protocol",)),
]
ALLOWED = {
    "driver": {"driver", "launch", "local", "client", "runtime", "transport", "auth", "scheduling", "objectstore",
               "protocol", "base"},
    "client": {"client", "runtime", "transport", "auth", "scheduling", "objectstore", "protocol", "base"},
    "local": {"local", "runtime", "control", "scheduling", "protocol", "base"},
    "launch": {"launch", "head", "transport", "auth", "protocol", "base"},
    "runtime": {"runtime", "transport", "auth", "scheduling", "objectstore", "protocol", "base"},
    "head": {"head", "control", "transport", "auth", "scheduling", "protocol", "base"},
    "node": {"node", "transport", "auth", "scheduling", "objectstore", "protocol", "base"},
    "sim": {"sim", "node", "runtime", "transport", "auth", "scheduling", "objectstore", "protocol", "base"},
    "control": {"control", "scheduling", "protocol", "base"},
    "transport": {"transport", "auth", "protocol", "base"},
    "auth": {"auth", "protocol", "base"},
    "scheduling": {"scheduling", "protocol", "base"},
    "objectstore": {"objectstore", "base"},
    "protocol": {"protocol", "base"},
    "base": {"base"},
}


def component(module: str) -> str:
    if module in BASE:
        return "base"
    if module in ENTRY_POINTS:
        return "entry"
    for name, prefixes in COMPONENT_PREFIXES:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    if module == "manta._private" or module.startswith("manta._private."):
        raise AssertionError(f"{module} belongs to no component: add it to test_layers.py")
    return "public"


def modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported manta module, line) for every import that can run."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[tuple[str, int]]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    # `from manta import exceptions` imports the submodule, not the package's names.
                    yield (sub if sub in known else target), node.lineno
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child])

    tree = ast.parse(open(path).read(), path)
    for target, line in walk(tree.body):
        if target in known and target != module:
            yield target, line


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {mod: {t for t, _ in imports_of(mod, path, known)} for mod, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_follows_the_layers() -> None:
    mods = modules()
    known = set(mods)
    broken = []
    for mod, path in sorted(mods.items()):
        src = component(mod)
        for target, line in imports_of(mod, path, known):
            dst = component(target)
            if dst == "entry" and src != "entry":
                broken.append(f"{mod}:{line} imports the entry point {target}; start it by module name")
            elif src in ("public", "entry"):
                continue
            elif dst == "public":
                broken.append(f"{mod}:{line} ({src}) imports the public module {target}")
            elif dst not in ALLOWED[src]:
                broken.append(f"{mod}:{line} ({src}) imports {target} ({dst})")
    assert broken == [], "\n".join(broken)


def test_entry_points_exist() -> None:
    assert ENTRY_POINTS <= set(modules())
