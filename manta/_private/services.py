"""Starting and stopping the head and node agent processes.

`spawn_local_cluster` is what `manta.init()` with no address does: a
session directory (mode 0700) with the token file (0600), then a head as a
child process, which forks the node agent; each reports readiness over a
pipe of its own. The head stops the cluster by itself when its embedding
driver disconnects, so a driver killed with SIGKILL leaves nothing behind.

Processes are started by module name (`python -m manta._private.head.main`),
so this library never imports the services it starts.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from manta._private.config import Config
from manta._private.ids import new_token
from manta._private.private_files import UnsafePath, private_dir, problem
from manta._private.protocol.quantities import resources_problem

if TYPE_CHECKING:
    import argparse

PR_SET_PDEATHSIG = 1


def choose_session_root(
    env: Mapping[str, str], uid: int, tmpdir: str, usable: Callable[[str], bool]
) -> str:
    """Where this user's sessions live: MANTA_TMPDIR if set, else
    $XDG_RUNTIME_DIR/manta when that directory is usable (the user's own,
    not writable by others), else <tmpdir>/manta-<uid>. Per user, so no one
    else's records or sockets are ever looked at."""
    explicit = env.get("MANTA_TMPDIR")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and usable(runtime):
        return os.path.join(runtime, "manta")
    return os.path.join(tmpdir, f"manta-{uid}")


def _usable_runtime_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return problem(st, os.geteuid(), directory=True) is None and os.access(path, os.W_OK | os.X_OK)


def session_root() -> str:
    """The session root, made 0700 if missing; raises UnsafePath (naming it
    and what is wrong) for one that is a link, another user's, or writable
    by others, as a root in a shared /tmp made by someone else would be."""
    root = os.path.abspath(choose_session_root(os.environ, os.geteuid(), tempfile.gettempdir(), _usable_runtime_dir))
    try:
        return private_dir(root, "session root")
    except UnsafePath as e:
        raise UnsafePath(f"{e}; remove it, or set MANTA_TMPDIR to a directory of your own") from None


def new_session_dir() -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = tempfile.mkdtemp(prefix=f"s{stamp}-{os.getpid()}-", dir=session_root())
    os.chmod(d, 0o700)
    os.makedirs(os.path.join(d, "logs"))
    os.makedirs(os.path.join(d, "sockets"))
    return d


def write_token(session_dir: str, token: bytes) -> str:
    path = os.path.join(session_dir, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token.hex())
    return path


def read_token(path: str) -> bytes:
    # Here, not at the top: the driver starts its head before it loads TLS and
    # the credentials (services is on init()'s way to the spawn).
    from manta._private.auth.credentials import parse_token

    with open(path) as f:
        return parse_token(f.read())


def detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([x for x in visible.split(",") if x.strip()])
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return 0
    try:
        out = subprocess.run(
            [nvidia_smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=5,
        )
        return len([x for x in out.stdout.splitlines() if x.strip()]) if out.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError):
        return 0


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_store_size() -> int:
    return int(total_memory() * 0.3)


@dataclass
class LocalCluster:
    session_dir: str
    token: bytes
    head_address: str
    head_tcp: str
    agent_address: str
    resources: dict[str, float]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self, timeout: float = 10.0) -> None:
        # The head exits after its agent (which it forked, and waits up to
        # 5 s for, head/main.py): killed before, it would leave the agent's
        # cleanup (its workers' cgroups, the session directory) half done.
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.session_dir, ignore_errors=True)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def service_arguments(prog: str) -> argparse.ArgumentParser:
    """The command line every service main takes; each adds its own options."""
    import argparse  # here: a driver, which imports this module to start services, parses no arguments
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--ready-fd", type=int, default=None)
    return parser


# The entry point of each service, run as `python -m MODULE`.
SERVICE_MAINS = {"head": "manta._private.head.main", "agent": "manta._private.node.main"}


# Secrets the starting command may hold in its environment: no service (nor
# the workers an agent starts) inherits them; whoever needs one gets it
# another way (the head its Redis password on a pipe).
SECRET_ENV = ("MANTA_REDIS_PASSWORD",)


def _spawn(
    args: list[str], session_dir: str, log_name: str, detached: bool = False, pass_fds: tuple[int, ...] = (),
) -> tuple[subprocess.Popen[bytes], int]:
    """Starts a service process; it reports readiness on the returned pipe.

    Embedded services die with their driver (parent-death signal); detached
    ones (`manta start`) outlive the command that started them.
    """
    r, w = os.pipe()
    log = open(os.path.join(session_dir, "logs", log_name), "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVICE_MAINS[args[0]], *args[1:], "--ready-fd", str(w)],
            pass_fds=(w, *pass_fds),
            env={k: v for k, v in os.environ.items() if k not in SECRET_ENV},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Embedded: a Ctrl-C at the terminal is the driver's alone. Detached
            # (`manta start`): in the starting command's process group, as
            # `ray start` leaves its daemons, so whoever started that command
            # can end the whole node by its group (test harnesses do).
            start_new_session=not detached,
            preexec_fn=None if detached else _die_with_parent,
        )
    finally:
        os.close(w)
        log.close()
    return proc, r


def _await_ready(
    fds: dict[int, str], procs: list[subprocess.Popen[bytes]], session_dir: str, timeout: float,
    keep_session: bool = False,
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    out: dict[str, str] = {}
    bufs = {fd: b"" for fd in fds}
    while len(out) < len(fds):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select(list(bufs), [], [], min(left, 0.5))
        for fd in readable:
            chunk = os.read(fd, 4096)
            bufs[fd] += chunk
            if b"\n" in bufs[fd] and fds[fd] not in out:
                out[fds[fd]] = bufs[fd].split(b"\n", 1)[0].decode()
            if not chunk and fds[fd] not in out:
                out[fds[fd]] = ""
        if any(p.poll() is not None for p in procs) and len(out) < len(fds):
            break
    for fd in fds:
        os.close(fd)
    bad = [name for name in fds.values() if not out.get(name, "").startswith("READY")]
    if bad:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        logs = ""
        for name in bad:
            path = os.path.join(session_dir, "logs", f"{name}.log")
            try:
                with open(path) as f:
                    logs += f"\n--- {name}.log ---\n" + f.read()[-3000:]
            except OSError:
                pass
        if not keep_session:
            shutil.rmtree(session_dir, ignore_errors=True)
        raise RuntimeError(f"manta failed to start the {', '.join(bad)}:{logs}")
    return out


@dataclass
class PendingCluster:
    """Cluster processes spawned but not yet known to be ready."""

    session_dir: str
    token: bytes
    head_address: str
    agent_address: str
    resources: dict[str, float]
    procs: list[subprocess.Popen[bytes]]
    ready_fds: dict[int, str]

    def wait_ready(self, timeout: float = 60) -> LocalCluster:
        ready = _await_ready(self.ready_fds, self.procs, self.session_dir, timeout)
        head_addrs = ready["head"].split()[1:]
        tcp = next((a for a in head_addrs if a.startswith("tcp:")), "")
        return LocalCluster(
            self.session_dir, self.token, self.head_address, tcp, self.agent_address,
            self.resources, self.procs,
        )


def node_resources(
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    *,
    head: bool,
    ip: str = "127.0.0.1",
    memory: int | None = None,
) -> tuple[dict[str, float], int]:
    """A node's resources as Ray reports them, and its store size. `memory`:
    the `memory` resource in bytes (Ray's --memory), e.g. a container's limit,
    which the machine's total does not show."""
    if num_cpus is None:
        num_cpus = float(os.cpu_count() or 1)
    if num_gpus is None:
        num_gpus = float(detect_gpus())
    res: dict[str, float] = {"CPU": float(num_cpus)}
    if num_gpus:
        res["GPU"] = float(num_gpus)
    for name, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("object_store_memory", object_store_memory),
                    ("memory", memory)):
        why = resources_problem({name: v}) if v is not None else ""
        if why:
            raise ValueError(why)
    store = int(object_store_memory or default_store_size())
    res["memory"] = float(memory if memory is not None else int(total_memory() * 0.7))
    res["object_store_memory"] = float(store)
    res[f"node:{ip}"] = 1.0
    if head:
        res["node:__internal_head__"] = 1.0
    for k, v in (resources or {}).items():
        if k in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus instead of resources={{'{k}': ...}}")
        why = resources_problem({k: v})
        if why:
            raise ValueError(why)
        res[k] = float(v)
    return res, store


def agent_args(
    session_dir: str, token_file: str, head: str, res: dict[str, float], store: int, node_ip: str,
    config: Config,
) -> list[str]:
    """The command line of a node agent listening at <session>/agent.sock."""
    return [
        "agent", "--session-dir", session_dir, "--token-file", token_file,
        "--head", head, "--listen", f"unix:{session_dir}/agent.sock",
        "--resources", json.dumps(res), "--object-store-memory", str(store),
        "--prestart", str(min(int(res["CPU"]), 2)), "--node-ip", node_ip,
        "--config", config.to_json(),
    ]


def spawn_local_cluster(
    *,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    config: Config,
) -> PendingCluster:
    res, store = node_resources(num_cpus, num_gpus, resources, object_store_memory, head=True)
    session_dir = new_session_dir()
    token = new_token()
    token_file = write_token(session_dir, token)
    head_address = f"unix:{session_dir}/head.sock"
    agent_address = f"unix:{session_dir}/agent.sock"
    # The agent is forked by the head (head/main.py, `_fork_agent`): one
    # interpreter's imports serve both. It reports READY here, on its own pipe.
    agent = agent_args(session_dir, token_file, head_address, res, store, "", config)[1:]
    agent_fd, agent_w = os.pipe()
    try:
        head, head_fd = _spawn(
            ["head", "--session-dir", session_dir, "--token-file", token_file, "--embedded",
             "--listen", head_address, "--listen", "tcp:127.0.0.1:0", "--config", config.to_json(),
             "--agent", json.dumps(agent), "--agent-ready-fd", str(agent_w)],
            session_dir, "head.log", pass_fds=(agent_w,),
        )
    except BaseException:
        os.close(agent_fd)
        raise
    finally:
        os.close(agent_w)
    return PendingCluster(
        session_dir, token, head_address, agent_address, res, [head],
        {head_fd: "head", agent_fd: "agent"},
    )


