"""`LocalRuntime`: the runtime of `init(local_mode=True)`, beyond Ray (which dropped it).

Every task and actor runs in the driver process, one at a time, when it is
called: no head, no node agent, no workers, no sockets. The program keeps
the API it has on a cluster and sees the same errors (values travel as
copies, a task's exception comes back from `get` with its own type), so
`pdb`, `breakpoint()` and coverage work on the code of its tasks and actors.

What needs a cluster is refused with `LocalModeUnsupported`, saying what it
was: placement groups, the state API's task and placement group lists, the
KV store, runtime_env working_dir, task stories. Of the head's requests,
local mode answers the cluster's resources and nodes, the actor list and
the job list itself (`call_head`).

Rooms: objects.py (put, get, wait over the ReferenceTable), tasks.py
(running a TaskSpec), streams.py (generators), actors.py (actors, names,
handles), running.py (which thread runs a call).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from typing import Any

from manta._private.ids import TaskIds, new_node_id, new_worker_id
from manta._private.local.actors import LocalActor, LocalActors
from manta._private.local.objects import LocalObjects
from manta._private.local.streams import LocalStreams
from manta._private.local.tasks import LocalTasks
from manta._private.protocol import messages as m
from manta._private.protocol import state_messages as sm
from manta._private.protocol.identity import Credential
from manta._private.protocol.runtime_env import PIP_ENV, PY_MODULES_ENV, WORKING_DIR_ENV
from manta._private.runtime.context import current_task
from manta._private.runtime.interface import ActorView
from manta._private.runtime.metrics import MetricsRegistry
from manta._private.runtime.object_ref import ObjectRef
from manta._private.runtime.packaging import PACKAGE_FIELDS
from manta._private.runtime.placement_group import PlacementGroup
from manta._private.runtime.refs import ReferenceTable
from manta._private.runtime.story import StoryRecord

# The environment entries of runtime_env fields local mode cannot honour.
PACKAGE_VARS = {WORKING_DIR_ENV: "working_dir", PY_MODULES_ENV: "py_modules", PIP_ENV: "pip"}

class LocalModeUnsupported(NotImplementedError):
    """What needs a cluster was asked of local mode."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not available in local mode (init(local_mode=True)): it runs every task and "
            f"actor in this process, without a cluster. Start one with init() to use it."
        )


class _PlainTask:
    """`executor` while a plain task (not an actor's call) runs."""

    actor: Any = None
    actor_id: bytes | None = None
    actor_class_name = ""
    actor_name = ""
    restart_count = 0
    actor_gpu_ids: list[int] = []

    def is_async_actor(self) -> bool:
        return False


_PLAIN_TASK = _PlainTask()

# The head's requests local mode refuses, by what they are for.
_REFUSED: dict[type, str] = {
    m.CreatePlacementGroup: "placement_group()",
    m.RemovePlacementGroup: "remove_placement_group()",
    m.GetPlacementGroups: "Placement groups",
    m.WaitPlacementGroup: "Placement groups",
    m.ListTasks: "The state API's task list (list_tasks, summarize_tasks, timeline)",
    m.KvPut: "The internal KV store",
    m.KvGet: "The internal KV store",
    m.KvDel: "The internal KV store",
    m.KvList: "The internal KV store",
}


class LocalRuntime:
    is_driver = True

    def __init__(
        self, *, namespace: str, env_vars: dict[str, str], resources: dict[str, float], code_path: list[str],
    ) -> None:
        self.worker_id = new_worker_id()
        self.node_id = new_node_id()
        self.address = f"local:{os.getpid()}:{self.worker_id.hex()[:8]}"
        self.driver_address = self.address
        self.session = m.SessionInfo(
            session_dir="", head_address="", agent_address="", credential=Credential(), node_id=self.node_id,
        )
        self.job_id = 1
        # As the head names a job that gave none.
        self.namespace = namespace or f"anonymous-{os.urandom(8).hex()}"
        self.env_vars = dict(env_vars)
        self.code_path = list(code_path)
        self.ids = TaskIds()
        self.metrics = MetricsRegistry()
        self.resources = dict(resources)
        self.started = time.time()
        self._functions: dict[bytes, Any] = {}
        # The rooms (see the module docstring).
        self.objects = LocalObjects(self)
        self.tasks = LocalTasks(self)
        self.streams = LocalStreams(self)
        self.actors = LocalActors(self)
        # The API, bound to the rooms' own methods.
        self.lock: threading.RLock = self.objects.lock
        self.refs: ReferenceTable = self.objects.refs
        self.get = self.objects.get
        self.put = self.objects.put
        self.wait = self.objects.wait
        self.error_of = self.objects.error_of
        self.future_for = self.objects.future_for
        self.await_ref = self.objects.await_ref
        self.ref_deleted = self.objects.ref_deleted
        self.ref_escaped = self.objects.escaped
        self.deserialized_ref = self.objects.deserialized_ref
        self.ref_cap = _no_cap
        self.prepare_args = self.tasks.prepare_args
        self.submit_task = self.tasks.submit_task
        self.cancel = self.tasks.cancel
        self.generator = self.streams.generator
        self.create_actor = self.actors.create
        self.hold_actor = self.actors.hold
        self.submit_actor_task = self.actors.submit
        self.kill_actor = self.actors.kill
        self.get_named_actor = self.actors.get_named

    @property
    def executor(self) -> ActorView | None:
        """The actor the current task runs in (a plain task's stand-in outside
        one); None in the driver's own code."""
        ctx = current_task.get()
        if ctx is None:
            return None
        actor: LocalActor | None = self.actors.actors.get(ctx.actor_id) if ctx.actor_id else None
        return actor if actor is not None else _PLAIN_TASK

    # -- functions --------------------------------------------------------

    def export_function(self, fn_id: bytes, blob: bytes, original: Any = None) -> None:
        # The program's own function or class runs, not a copy loaded from
        # `blob`: cloudpickle renames the file of code it pickles by value
        # ("<dynamic-code>"), so a debugger could not show a copy's source,
        # nor its breakpoints and coverage apply. (It was pickled all the
        # same, so what cannot be pickled fails as in the cluster.)
        self._functions.setdefault(fn_id, original if original is not None else pickle.loads(blob))

    def load_function(self, fn_id: bytes) -> Any:
        return self._functions[fn_id]

    # -- what local mode refuses ----------------------------------------------

    def package_env(self, runtime_env: dict[str, Any]) -> dict[str, str]:
        field = next(k for k in PACKAGE_FIELDS if runtime_env.get(k))
        raise LocalModeUnsupported(f"runtime_env {field}")

    def refuse_working_dir(self, env_vars: dict[str, str]) -> None:
        for var, field in PACKAGE_VARS.items():
            if var in env_vars:
                raise LocalModeUnsupported(f"runtime_env {field}")

    def placement_group_ready(self, pg: PlacementGroup) -> ObjectRef:
        raise LocalModeUnsupported("Placement groups")

    def story(self, task_id: bytes) -> list[StoryRecord]:
        raise LocalModeUnsupported("task_story()")

    # -- the head's and the agent's questions, answered here -------------------

    def call_head(self, msg: Any, timeout: float | None = None) -> Any:
        t = type(msg)
        if t is m.GetClusterInfo:
            return m.ClusterInfo(nodes=[self._node()], storage="local mode", running_jobs=1)
        if t is m.ListActors:
            return self.actors.list()
        if t is sm.ListJobs:
            return sm.JobRecordList(jobs=[sm.JobRecord(
                job_id=self.job_id, namespace=self.namespace, driver_pid=os.getpid(), alive=True,
                start_ms=int(self.started * 1000), end_ms=0, node_id=self.node_id, ip="127.0.0.1",
            )])
        raise LocalModeUnsupported(_REFUSED.get(t, f"The cluster request {t.__name__}"))

    def call_agent(self, msg: Any) -> Any:
        if type(msg) is m.GetResources:
            return m.Resources(total=dict(self.resources), available=dict(self.resources))
        raise LocalModeUnsupported(f"The node request {type(msg).__name__}")

    def _node(self) -> m.NodeInfo:
        return m.NodeInfo(
            node_id=self.node_id, address=self.address, alive=True, resources=dict(self.resources),
            available=dict(self.resources), store_capacity=int(self.resources.get("object_store_memory", 0)),
        )

    def shutdown(self) -> None:
        self.actors.stop_all()
        self.objects.clear()


def _no_cap(object_id: bytes, owner: str) -> bytes:
    """In local mode there is no other process to prove anything to."""
    return b""
