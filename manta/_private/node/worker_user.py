"""Workers run as an unprivileged user of their own (`manta start --worker-user USER`).

The agent runs as root (it may write cgroups and change uids); user code
in its workers then runs as USER, so it cannot read what the agent keeps
in the session directory: the cluster token, logs, spilled objects, other
processes' records. What a worker still needs reaches it without a path
it could open:

- the object store: the agent hands its memfd to the fork server over a
  Unix socket (SCM_RIGHTS, `forkserver.ForkServer.configure`), and each
  worker inherits that descriptor at fork;
- its logs: the fork server's stderr, inherited, and its own files in
  `<session>/worker_logs` (made like `sockets`, below);
- the Unix sockets of the agent, the head, drivers and other workers:
  the session directory (the agent's and head's sockets) and
  `<session>/sockets` (everyone else's) are made setgid to USER's group,
  and sockets in a setgid directory are created 0660 (`transport.serve`),
  so USER's group may connect (and then authenticate like anyone else);
  `sockets` is group-writable (not listable), for a worker's own socket. The session
  directory and its root are only searchable by that group: no listing,
  and no file in them is readable unless it is the group's;
- runtime_env packages: `<session>/runtime_resources/{packages,working_dir,
  py_modules}` belong to USER, where workers unpack them. pip
  environments stay root's (the agent runs their interpreter), readable.

`docs/isolation.md` says what this protects and what it does not.
"""

from __future__ import annotations

import logging
import os
import stat
import sysconfig
from collections.abc import Callable

from manta._private.auth.os_user import WorkerUser, resolve
from manta._private.protocol.tool_messages import WORKER_LOG_DIR

log = logging.getLogger(__name__)

# runtime_env package directories the workers themselves write (`runtime/packaging.py`).
WORKER_WRITTEN = ("packages", "working_dir", "py_modules")


def can_search(st: os.stat_result, user: WorkerUser) -> bool:
    """Whether `user` (with no supplementary groups) may pass through a directory with this stat."""
    mode = st.st_mode
    if st.st_uid == user.uid:
        return bool(mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def can_read_dir(path: str, user: WorkerUser, stat_of: Callable[[str], os.stat_result] = os.stat) -> bool:
    """Whether `user` may list `path` (Python's imports do) and pass through every directory above it."""
    path = os.path.abspath(path)
    try:
        st = stat_of(path)
        if not can_search(st, user):
            return False
        if st.st_uid == user.uid:
            readable = st.st_mode & stat.S_IRUSR
        else:
            readable = st.st_mode & (stat.S_IRGRP if st.st_gid == user.gid else stat.S_IROTH)
        while readable and path != os.path.dirname(path):
            path = os.path.dirname(path)
            if not can_search(stat_of(path), user):
                return False
    except OSError:
        return False
    return bool(readable)


def check_python(user: WorkerUser) -> None:
    """ValueError unless `user` can import what a worker imports after it dropped to it:
    Python's standard library and manta (a Python installed under /root cannot be)."""
    # The directory holding the manta package: four levels above this file.
    here = os.path.abspath(__file__)
    for _ in range(4):
        here = os.path.dirname(here)
    needed = {"Python's standard library": sysconfig.get_paths()["stdlib"], "manta": here}
    for what, path in needed.items():
        if not can_read_dir(path, user):
            raise ValueError(f"--worker-user {user.name}: workers running as {user.name} cannot read {what} "
                             f"at {path}; run the node with a Python (and manta) installed where that user "
                             f"can read it")


def prepare(session_dir: str, user: WorkerUser) -> None:
    """Opens to `user`'s group what its workers need of the session, and nothing else.

    Raises ValueError when a directory above the session, not the agent's
    to change, keeps the workers out.
    """
    gid = user.gid
    sockets = os.path.join(session_dir, "sockets")
    os.makedirs(sockets, exist_ok=True)
    # Where workers write their output and stack dumps (runtime/worker_logs.py):
    # like `sockets`, writable by the group, not listable, sticky.
    worker_logs = os.path.join(session_dir, WORKER_LOG_DIR)
    os.makedirs(worker_logs, exist_ok=True)
    # The session directory holds the agent's and the head's sockets, and
    # `sockets` every other process's. setgid: a socket made in either is
    # the group's (and `serve` makes it 0660); the session directory stays
    # unlistable and unwritable to the group; sticky `sockets`: a worker
    # cannot remove or replace another process's socket.
    for directory, mode in ((session_dir, 0o2710), (sockets, 0o3730), (worker_logs, 0o3730)):
        os.chown(directory, -1, gid)
        os.chmod(directory, mode)
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
                os.chown(path, -1, gid, follow_symlinks=False)
                os.chmod(path, 0o660)
    logs = os.path.join(session_dir, "logs")
    if os.path.isdir(logs):
        os.chmod(logs, 0o700)
    resources = os.path.join(session_dir, "runtime_resources")
    os.makedirs(resources, exist_ok=True)
    os.chmod(resources, 0o711)
    # pip environments: root's (the agent runs their interpreter), searchable
    # but not listable, their files readable as pip leaves them.
    os.makedirs(os.path.join(resources, "pip"), exist_ok=True)
    os.chmod(os.path.join(resources, "pip"), 0o711)
    for name in WORKER_WRITTEN:
        path = os.path.join(resources, name)
        os.makedirs(path, exist_ok=True)
        os.chown(path, user.uid, gid)
        os.chmod(path, 0o700)
    # The session root is made searchable by the workers' group (only); the
    # directories above it are not the agent's to change, so must let them pass.
    root = os.path.dirname(os.path.abspath(session_dir))
    st = os.stat(root)
    if not can_search(st, user) and st.st_uid == os.geteuid():
        os.chown(root, -1, gid)
        os.chmod(root, stat.S_IMODE(st.st_mode) | stat.S_IXGRP)
    parent = root
    while True:
        st = os.stat(parent)
        if not can_search(st, user):
            raise ValueError(f"workers running as {user.name} cannot reach the session directory: "
                             f"they may not search {parent} (mode {stat.S_IMODE(st.st_mode):04o}); "
                             f"set MANTA_TMPDIR to a directory they may pass through")
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def for_node(name: str, session_dir: str) -> WorkerUser | None:
    """The user this node's workers run as (None: the agent's own), with the
    session opened to it; logs which it is."""
    if not name:
        if os.geteuid() == 0:
            log.warning("workers run as root, as this agent does: start it with --worker-user USER "
                        "(e.g. nobody) to keep user code from the session's secrets")
        return None
    user = resolve(name, os.geteuid())
    check_python(user)
    prepare(session_dir, user)
    log.info("workers run as %s (uid %d, gid %d)", user.name, user.uid, user.gid)
    return user


def become(user_id: int, group_id: int) -> None:
    """Drops to the worker user in a forked worker (after it joined its cgroups)."""
    os.setgroups([])
    os.setgid(group_id)
    os.setuid(user_id)
