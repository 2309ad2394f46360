"""The unprivileged OS user that user code runs as (`manta start --worker-user USER`):
a node's workers (node/worker_user.py) and, on the head, jobs' entrypoints
(head/jobs/as_user.py)."""

from __future__ import annotations

import pwd
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerUser:
    name: str
    uid: int
    gid: int


def resolve(name: str, euid: int) -> WorkerUser:
    """The user named by --worker-user; ValueError saying why it cannot be used."""
    if euid != 0:
        raise ValueError(f"--worker-user {name}: the node must run as root to start workers as another user")
    try:
        entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise ValueError(f"--worker-user {name}: no such user") from None
    if entry.pw_uid == 0:
        raise ValueError(f"--worker-user {name}: that is root; give an unprivileged user (e.g. nobody)")
    return WorkerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
