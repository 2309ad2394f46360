"""A node's drivers and worker processes, as the state API lists them, without I/O.

The agent tells the roster of each step in a process's life (a fork asked
for, forked, registered, leased to a job, being stopped, exited) and of
drivers coming and going; `list_workers` reads it, and `list_objects` finds
through it whom to ask for references. Exited processes are kept, the
latest `keep` of them, as Ray keeps its dead workers.

It also keeps how setting up each environment went (`list_runtime_envs`):
workers are pooled by their environment variables, so an environment is a
pool key. Its setup has parts: what the agent builds before a worker can
start (a pip environment) and what the first worker does (unpacking its
packages); each says how long it took or why it failed.

Every event is one dict operation: none happens per task.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

from manta._private.protocol import state_messages as sm

PoolKey = tuple[tuple[str, str], ...]

# Ray's WorkerExitType names.
SYSTEM_ERROR = "SYSTEM_ERROR"
INTENDED_SYSTEM_EXIT = "INTENDED_SYSTEM_EXIT"
INTENDED_USER_EXIT = "INTENDED_USER_EXIT"
NODE_OUT_OF_MEMORY = "NODE_OUT_OF_MEMORY"

DRIVER_EXIT = "The driver disconnected: it called shutdown(), or its program ended."
USER_EXIT = "The worker exited by itself with code 0 (exit_actor() or sys.exit())."


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False, slots=True)
class Proc:
    worker_id: bytes
    driver: bool
    env: PoolKey = ()
    pid: int = 0
    job_id: int = 0
    launch_ms: int = -1
    launched_ms: int = -1
    start_ms: int = -1
    end_ms: int = 0
    alive: bool = True
    exit_type: str = ""
    exit_detail: str = ""
    # Why the agent is ending it, when it is: (exit type, detail).
    ending: tuple[str, str] | None = None
    # The connection it registered on (the agent's; opaque here).
    client: Any = None


@dataclass(eq=False, slots=True)
class EnvSetup:
    # Each part's (ms, error): "node" (the agent's build), "worker".
    parts: dict[str, tuple[float, str]]

    @property
    def creation_ms(self) -> float:
        return sum(ms for ms, _ in self.parts.values())

    @property
    def error(self) -> str:
        return "; ".join(e for _, e in self.parts.values() if e)


class Roster:
    def __init__(
        self, wall_ms: Callable[[], int] = _wall_ms, keep: int = 1000, hidden: Collection[str] = (),
    ) -> None:
        self.wall_ms = wall_ms
        self.keep = keep
        # Variables of a pool key that are the agent's own, not the runtime_env's.
        self.hidden = frozenset(hidden)
        self.alive: dict[bytes, Proc] = {}
        self.exited: collections.OrderedDict[bytes, Proc] = collections.OrderedDict()
        self.setups: dict[PoolKey, EnvSetup] = {}
        # Environments that failed to build, no worker ever running in them.
        self.keep_failed = 100

    def validate(self) -> None:
        assert not set(self.alive) & set(self.exited), "a process both alive and exited"
        assert all(e.parts for e in self.setups.values()), "a setup with nothing set up"
        assert all(p.alive for p in self.alive.values()) and not any(p.alive for p in self.exited.values())
        assert len(self.exited) <= self.keep

    # -- events -------------------------------------------------------------

    def launching(self, worker_id: bytes, env: PoolKey) -> None:
        """The agent asked the fork server for this worker."""
        if self.hidden:
            env = tuple(kv for kv in env if kv[0] not in self.hidden)
        self.alive[worker_id] = Proc(worker_id, False, env, launch_ms=self.wall_ms())

    def launched(self, worker_id: bytes, pid: int) -> None:
        p = self.alive.get(worker_id)
        if p is None:  # prestarted by the fork server, unasked
            p = self.alive[worker_id] = Proc(worker_id, False)
        p.pid = pid
        p.launched_ms = self.wall_ms()

    def registered(self, worker_id: bytes, pid: int, driver: bool, job_id: int, client: Hashable) -> None:
        """A worker or a driver connected to the agent and said who it is."""
        p = self.alive.get(worker_id)
        if p is None:
            p = self.alive[worker_id] = Proc(worker_id, driver)
        p.pid = pid
        p.job_id = job_id or p.job_id
        p.start_ms = self.wall_ms()
        p.client = client

    def leased(self, worker_id: bytes, job_id: int) -> None:
        p = self.alive.get(worker_id)
        if p is not None:
            p.job_id = job_id

    def ending(self, worker_id: bytes, exit_type: str, detail: str) -> None:
        """The agent is about to stop this worker, for this reason."""
        p = self.alive.get(worker_id)
        if p is not None and p.ending is None:
            p.ending = (exit_type, detail)

    def exit(self, worker_id: bytes, code: int | None, reason: str) -> None:
        """The process's connection closed (`code` None) or the process was
        reaped. Either may come first; the exit code, once known, decides
        what an unexplained exit was."""
        p = self.alive.pop(worker_id, None)
        if p is not None:
            p.alive = False
            p.client = None
            p.end_ms = self.wall_ms()
            self.exited[worker_id] = p
            while len(self.exited) > self.keep:
                self.exited.popitem(last=False)
            setup = self.setups.get(p.env)
            if setup is not None and not setup.error and not any(q.env == p.env for q in self.alive.values()):
                # No worker runs in it any more: gone, as Ray drops unused environments.
                del self.setups[p.env]
        else:
            p = self.exited.get(worker_id)
            if p is None or code is None or p.ending is not None or p.driver:
                return
        if p.ending is not None:
            p.exit_type, p.exit_detail = p.ending
        elif p.driver:
            p.exit_type, p.exit_detail = INTENDED_USER_EXIT, DRIVER_EXIT
        elif code == 0:
            p.exit_type, p.exit_detail = INTENDED_USER_EXIT, USER_EXIT
        else:
            p.exit_type, p.exit_detail = SYSTEM_ERROR, f"The worker died unexpectedly: {reason}."

    def reaped(self, pid: int, code: int) -> None:
        """The fork server reaped a worker: its exit code says what its end
        was, whether or not its connection closed first."""
        found = next((p for p in self.alive.values() if p.pid == pid), None) or next(
            (p for p in reversed(self.exited.values()) if p.pid == pid), None)
        if found is not None:
            self.exit(found.worker_id, code, f"its process {pid} exited with code {code}")

    def env_set_up(self, worker_id: bytes, ms: float, error: str) -> None:
        """A worker set up its environment's packages (or failed to)."""
        p = self.alive.get(worker_id)
        if p is not None:
            self._setup_part(p.env, "worker", ms, error)

    def env_built(self, env: dict[str, str], ms: float, error: str) -> None:
        """The agent built what an environment needs before its workers
        can start (or failed to: then no worker may ever run in it)."""
        self._setup_part(tuple(sorted((k, v) for k, v in env.items() if k not in self.hidden)), "node", ms, error)
        failed = [k for k, e in self.setups.items() if e.error and not any(q.env == k for q in self.alive.values())]
        for key in failed[:-self.keep_failed]:
            del self.setups[key]

    def _setup_part(self, env: PoolKey, part: str, ms: float, error: str) -> None:
        """A part's first success stands; a failure stands until it succeeds."""
        setup = self.setups.setdefault(env, EnvSetup({}))
        known = setup.parts.get(part)
        if known is None or known[1]:
            setup.parts[part] = (ms, error)

    # -- queries ------------------------------------------------------------

    def clients(self) -> list[Proc]:
        """The registered processes alive now: who holds references."""
        return [p for p in self.alive.values() if p.client is not None]

    def records(self, node_id: bytes, ip: str) -> list[sm.WorkerRecord]:
        return [
            sm.WorkerRecord(
                worker_id=p.worker_id, alive=p.alive, driver=p.driver, node_id=node_id, ip=ip, pid=p.pid,
                job_id=p.job_id, exit_type=p.exit_type, exit_detail=p.exit_detail, launch_ms=p.launch_ms,
                launched_ms=p.launched_ms, start_ms=p.start_ms, end_ms=p.end_ms,
            )
            for p in (*self.exited.values(), *self.alive.values())
        ]

    def runtime_envs(self, node_id: bytes) -> list[sm.RuntimeEnvRecord]:
        """Each environment live workers run in (drivers have their own),
        with how setting it up went; `creation_ms` is None where no worker
        reported a setup (an environment of variables only needs none)."""
        counts = collections.Counter(p.env for p in self.alive.values() if not p.driver)
        failed = {k: 0 for k, e in self.setups.items() if e.error and k not in counts}
        out = []
        for env, n in {**counts, **failed}.items():
            setup = self.setups.get(env)
            out.append(sm.RuntimeEnvRecord(
                node_id=node_id, env=dict(env), success=setup is None or not setup.error,
                creation_ms=None if setup is None else setup.creation_ms,
                error=setup.error if setup is not None else "", workers=n,
            ))
        return out
