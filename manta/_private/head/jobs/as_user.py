"""Job entrypoints run as the worker user (`manta start --head --worker-user USER`).

An entrypoint is user code, as a task is: on a head started with a worker
user it runs as that user too, so it cannot read the session's secrets
(the cluster token, the TLS key's file, the logs, Redis' password) any
more than a worker can. It still drives its job as any driver on this
machine does, over what it is handed rather than paths it could open:

- the store: the head opens the agent's memfd through /proc (the agent
  said its descriptor's number when it registered, the Unix socket's
  peer credentials its pid) and the runner passes it down;
- the node's certificate and key, for the TLS its driver speaks to other
  nodes: a sealed memfd the head fills, passed down the same way;
- where the node is: `MANTA_JOB_NODE` names the session's sockets, which
  USER's group may connect to (`node/worker_user.prepare`), and those
  descriptors (`session.job_node` reads it in the driver).

Its directory is made for it: the job's directory only searchable by
USER's group (the runner's spec stays the head's), and the entrypoint's
working directory, the unpacked working_dir or an empty `work`, USER's.
"""

from __future__ import annotations

import json
import os
import stat

from manta._private.auth.os_user import WorkerUser


def open_store(local_agent: tuple[int, int, str] | None) -> int:
    """A descriptor of this machine's agent's store (the caller closes it)."""
    if local_agent is None:
        raise OSError("this machine's agent has not registered its store with the head yet")
    pid, fd, _ = local_agent
    return os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)


def node_ip(local_agent: tuple[int, int, str] | None) -> str:
    """The IP this machine's agent listens on ("" when it listens on its Unix socket only)."""
    address = local_agent[2] if local_agent else ""
    if not address.startswith("tcp:"):
        return ""
    return address[len("tcp:"):].rpartition(":")[0].strip("[]")


def open_dirs(jobs_root: str, job_dir: str, cwd: str, user: WorkerUser) -> None:
    """Lets `user` reach `cwd` (and own all of it) through the head's job directories."""
    for directory in (jobs_root, job_dir):
        os.chown(directory, -1, user.gid)
        os.chmod(directory, 0o710)
    os.makedirs(cwd, exist_ok=True)
    for base, dirs, files in os.walk(cwd):
        for name in (base, *(os.path.join(base, d) for d in dirs), *(os.path.join(base, f) for f in files)):
            if not stat.S_ISLNK(os.lstat(name).st_mode):
                os.chown(name, user.uid, user.gid, follow_symlinks=False)


def node_env(session_dir: str, address: str, node_ip: str, store_fd: int, tls_fd: int) -> dict[str, str]:
    """What the entrypoint's `manta.init()` needs to join as a driver of this machine's node."""
    return {"MANTA_JOB_NODE": json.dumps({
        "address": address, "session_dir": session_dir, "head": f"unix:{session_dir}/head.sock",
        "agent": f"unix:{session_dir}/agent.sock", "node_ip": node_ip, "store_fd": store_fd, "tls_fd": tls_fd,
    })}
