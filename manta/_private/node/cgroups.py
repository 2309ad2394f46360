"""Each worker in a cgroup of its own: finding a writable hierarchy, and the files written there.

`limits.py` decides what a worker's cgroup is set to; this module finds
where cgroups can be made on this node and does the writing. In order:

    v2   the unified hierarchy, when this process's cgroup there has the
         memory controller and can hand it to children (memory.max, cpu.weight)
    v1   the memory (and cpu) hierarchies where they are mounted, under
         this process's own cgroup in each (memory.limit_in_bytes, cpu.shares)
    v1   mounted by the agent itself in its session directory, when it may
         mount (root in a container whose /sys/fs/cgroup is read-only)
    off  with one log line saying why

Workers' cgroups sit under `manta-<node>` in the agent's own cgroup, so the
limits of whatever contains the agent still hold. A forked worker joins
its cgroups itself (`join`), before it runs anything: no allocation of its
escapes the limit. The agent removes a worker's cgroups when it exits, and
all of them at shutdown.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from manta._private.node import limits as lim

log = logging.getLogger(__name__)

# A v1 controller and the options that mount its hierarchy (cpu is often
# mounted together with cpuacct, and then cannot be mounted alone).
V1_MOUNTS = {"memory": ("memory",), "cpu": ("cpu", "cpu,cpuacct")}
# How long shutdown waits for killed workers to leave their cgroups.
EMPTY_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class Mount:
    root: str  # the hierarchy's directory mounted here
    point: str
    fstype: str
    options: frozenset[str]


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts of a /proc/<pid>/mountinfo."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        out.append(Mount(_unescape(fields[3]), _unescape(fields[4]), rest[0], frozenset(rest[2].split(","))))
    return out


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """A /proc/<pid>/cgroup as controller -> path; "" is the v2 hierarchy."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def own_dir(mount: Mount, path: str) -> str | None:
    """The directory of cgroup `path` under `mount`, or None if the mount does not show it."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    return (mount.point.rstrip("/") + path[len(root):]).rstrip("/") or "/"


class Cgroups:
    """This node's workers' cgroups. `version` is "v2", "v1" or "off" (`why` says why)."""

    def __init__(self, version: str, bases: Mapping[str, str], why: str = "", mounted: tuple[str, ...] = ()) -> None:
        self.version = version
        # Controller ("" on v2) -> the directory holding the workers' cgroups.
        self.bases = dict(bases)
        self.why = why
        self._mounted = mounted
        # Each worker with cgroups here, and the limits it has now.
        self._workers: dict[bytes, lim.Limits] = {}
        # Exited workers whose cgroups could not be removed yet (a process
        # was still leaving them): tried again at each reap.
        self._gone: set[bytes] = set()

    @classmethod
    def off(cls, why: str) -> Cgroups:
        return cls("off", {}, why)

    @property
    def on(self) -> bool:
        return bool(self.bases)

    def dirs(self, worker_id: bytes) -> list[str]:
        return [os.path.join(base, worker_id.hex()[:16]) for base in self.bases.values()]

    def create(self, worker_id: bytes) -> list[str]:
        """Makes a worker's cgroups; returns the directories it joins (none when off)."""
        if not self.on:
            return []
        try:
            for d in self.dirs(worker_id):
                os.mkdir(d)
        except OSError as e:
            log.warning("cannot make a cgroup for worker %s: %s; it runs without limits", worker_id.hex()[:8], e)
            self._remove_dirs(worker_id)
            return []
        self._workers[worker_id] = lim.IDLE
        return self.dirs(worker_id)

    def limit(self, worker_id: bytes, limits: lim.Limits) -> None:
        """Sets a worker's limits (each lease may ask for others)."""
        if worker_id not in self._workers or self._workers[worker_id] == limits:
            return
        self._workers[worker_id] = limits
        if self.version == "v2":
            writes = {"": lim.v2_files(limits)}
        else:
            writes = {c: w for c, w in lim.v1_files(limits).items() if c in self.bases}
        for controller, files in writes.items():
            d = os.path.join(self.bases[controller], worker_id.hex()[:16])
            for name, value in files:
                try:
                    _write(os.path.join(d, name), value)
                except FileNotFoundError:
                    pass  # e.g. no swap accounting: memsw files are absent
                except OSError as e:
                    # v1 refuses (EBUSY) a memory limit below what the worker
                    # holds and cannot reclaim; it keeps its previous limit.
                    log.warning("worker %s: cannot set %s to %s: %s", worker_id.hex()[:8], name, value, e)

    def oom_reason(self, worker_id: bytes) -> str:
        """Why the kernel killed this worker, if it did for passing its memory limit ("" if not)."""
        limits = self._workers.get(worker_id)
        if limits is None or limits.memory is None or not self._oom_killed(worker_id):
            return ""
        return (f"the worker used more than its memory limit of {limits.memory} bytes "
                f"(the memory resource its task or actor asked for) and the kernel killed it")

    def _oom_killed(self, worker_id: bytes) -> bool:
        if self.version == "v2":
            path = os.path.join(self.bases[""], worker_id.hex()[:16], "memory.events")
        else:
            path = os.path.join(self.bases["memory"], worker_id.hex()[:16], "memory.oom_control")
        try:
            with open(path) as f:
                return lim.oom_kills(f.read()) > 0
        except OSError:
            return False

    def remove(self, worker_id: bytes) -> None:
        """Removes an exited worker's cgroups, now or (while a process is still
        leaving them) at a later `sweep`."""
        if self._workers.pop(worker_id, None) is not None and not self._remove_dirs(worker_id):
            self._gone.add(worker_id)

    def sweep(self) -> None:
        """Removes the cgroups of exited workers that could not be removed before."""
        for worker_id in list(self._gone):
            if self._remove_dirs(worker_id):
                self._gone.discard(worker_id)

    def _remove_dirs(self, worker_id: bytes) -> bool:
        done = True
        for d in self.dirs(worker_id):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done

    def close(self) -> None:
        """At shutdown, after the workers were killed: removes every cgroup made here."""
        deadline = time.monotonic() + EMPTY_WAIT_S
        for w in list(self._workers):
            self.remove(w)
        while self._gone and time.monotonic() < deadline:
            time.sleep(0.02)
            self.sweep()
        for base in self.bases.values():
            try:
                os.rmdir(base)
            except OSError:
                pass
        for point in self._mounted:
            subprocess.run(["umount", point], capture_output=True, check=False)
            try:
                os.rmdir(point)
            except OSError:
                pass
        if self._gone:
            log.warning("%d worker cgroups were still in use at shutdown and are left", len(self._gone))
        self.bases = {}


def for_node(tag: str, session_dir: str) -> Cgroups:
    """This node's cgroups (`detect`), with the one log line saying what isolation there is."""
    found = detect(tag, os.path.join(session_dir, "cgroup"))
    if found.on:
        log.info("workers run in cgroups (%s) under %s", found.version, ", ".join(found.bases.values()))
    else:
        log.warning("worker isolation by cgroups is off: %s", found.why)
    return found


def join(dirs: list[str]) -> None:
    """Moves this process into each of `dirs` (a forked worker, first thing)."""
    pid = str(os.getpid())
    for d in dirs:
        _write(os.path.join(d, "cgroup.procs"), pid)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def detect(tag: str, mount_dir: str, proc: str = "/proc/self") -> Cgroups:
    """The cgroups this node can make its workers' in, or why none.

    `tag` names this node's directory (`manta-<tag>`); `mount_dir` is where
    v1 hierarchies are mounted when none is usable where it is.
    """
    mounts = parse_mountinfo(_read(f"{proc}/mountinfo"))
    own = parse_proc_cgroup(_read(f"{proc}/cgroup"))
    name = f"manta-{tag}"
    why_v2 = _try_v2(mounts, own, name)
    if isinstance(why_v2, Cgroups):
        return why_v2
    found = _try_v1(mounts, own, name)
    if isinstance(found, Cgroups):
        return found
    why_v1 = found
    if os.geteuid() == 0:
        try:
            mounted = _mount_v1(own, name, mount_dir)
        except OSError as e:  # no mount(8), or no room for the mount points
            mounted = str(e)
        if isinstance(mounted, Cgroups):
            return mounted
        why_v1 += f"; mounting one failed ({mounted})"
    return Cgroups.off(f"{why_v2}; {why_v1}")


def _try_v2(mounts: list[Mount], own: dict[str, str], name: str) -> Cgroups | str:
    path = own.get("")
    mount = next((mt for mt in mounts if mt.fstype == "cgroup2"), None)
    if path is None or mount is None:
        return "no cgroup v2 hierarchy"
    here = own_dir(mount, path)
    if here is None:
        return f"this process's cgroup v2 {path} is not under {mount.point}"
    controllers = set(_read(os.path.join(here, "cgroup.controllers")).split())
    if "memory" not in controllers:
        return f"cgroup v2 at {here} has no memory controller (it has: {' '.join(sorted(controllers)) or 'none'})"
    enable = " ".join(f"+{c}" for c in ("memory", "cpu") if c in controllers)
    base = os.path.join(here, name)
    try:
        _write(os.path.join(here, "cgroup.subtree_control"), enable)
        os.makedirs(base, exist_ok=True)
        _write(os.path.join(base, "cgroup.subtree_control"), enable)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return (f"cgroup v2 at {here} holds processes, so it cannot hand controllers to children "
                    f"(start the agent in a delegated cgroup of its own, e.g. systemd-run --scope -p Delegate=yes)")
        return f"cgroup v2 at {here} is not writable ({e.strerror})"
    return Cgroups("v2", {"": base})


def _try_v1(mounts: list[Mount], own: dict[str, str], name: str) -> Cgroups | str:
    bases: dict[str, str] = {}
    why = ""
    for controller in V1_MOUNTS:
        path = own.get(controller)
        candidates = [mt for mt in mounts if mt.fstype == "cgroup" and controller in mt.options]
        if path is None or not candidates:
            why = why or f"no cgroup v1 {controller} hierarchy is mounted"
            continue
        for mount in candidates:
            here = own_dir(mount, path)
            if here is None:
                continue
            base = os.path.join(here, name)
            try:
                os.makedirs(base, exist_ok=True)
            except OSError as e:
                why = why or f"cgroup v1 {controller} at {here} is not writable ({e.strerror})"
                continue
            bases[controller] = base
            break
    if "memory" not in bases:
        for base in bases.values():
            _rmdir(base)
        return why or "no cgroup v1 memory hierarchy shows this process's cgroup"
    return Cgroups("v1", bases)


def _mount_v1(own: dict[str, str], name: str, mount_dir: str) -> Cgroups | str:
    """Mounts the v1 memory and cpu hierarchies under `mount_dir` (needs CAP_SYS_ADMIN)."""
    points: list[str] = []
    mounts: list[Mount] = []
    why = ""
    for controller, options in V1_MOUNTS.items():
        point = os.path.join(mount_dir, controller)
        os.makedirs(point, mode=0o700, exist_ok=True)
        for opts in options:
            done = subprocess.run(["mount", "-t", "cgroup", "-o", opts, "manta", point],
                                  capture_output=True, text=True, check=False)
            if done.returncode == 0:
                points.append(point)
                # A fresh mount shows the whole hierarchy, from its root.
                mounts.append(Mount("/", point, "cgroup", frozenset(opts.split(","))))
                break
            why = why or done.stderr.strip() or f"mount exited with {done.returncode}"
        else:
            _rmdir(point)
    found = _try_v1(mounts, own, name)
    if isinstance(found, Cgroups):
        found._mounted = tuple(points)
        return found
    for point in points:
        subprocess.run(["umount", point], capture_output=True, check=False)
        _rmdir(point)
    return why or found


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
