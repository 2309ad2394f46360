"""What the public layer asks of a process's runtime, whichever it is.

Two runtimes fill the slot in `context`: the cluster's `CoreRuntime`
(runtime/core.py) and local mode's `LocalRuntime` (_private/local/), which
runs every task and actor in the driver, one at a time. The driver API
(`api`, `remote`, `session`), the public utilities and `ObjectRef` use only
what is declared here, so mypy checks that both runtimes provide it.
Read-only members are properties: each runtime may keep them as it likes.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from manta._private.ids import TaskIds
    from manta._private.protocol import messages as m
    from manta._private.runtime.generators import ObjectRefGenerator
    from manta._private.runtime.metrics import MetricsRegistry
    from manta._private.runtime.object_ref import ObjectRef
    from manta._private.runtime.placement_group import PlacementGroup
    from manta._private.runtime.story import StoryRecord


class ActorView(Protocol):
    """The actor (if any) that the current task runs in: `executor` below."""

    @property
    def actor(self) -> Any: ...
    @property
    def actor_id(self) -> bytes | None: ...
    @property
    def actor_class_name(self) -> str: ...
    @property
    def actor_name(self) -> str: ...
    @property
    def restart_count(self) -> int: ...
    @property
    def actor_gpu_ids(self) -> list[int]: ...
    def is_async_actor(self) -> bool: ...


class RefEntries(Protocol):
    """What ObjectRef's decoding reads of a runtime's reference table (`object_ref._rebuild_ref`):
    each entry's `local` count and `cap`."""

    @property
    def entries(self) -> dict[bytes, Any]: ...


class Runtime(Protocol):
    # -- who and where ------------------------------------------------------
    @property
    def is_driver(self) -> bool: ...
    @property
    def session(self) -> m.SessionInfo: ...
    @property
    def node_id(self) -> bytes: ...
    @property
    def worker_id(self) -> bytes: ...
    @property
    def address(self) -> str: ...
    @property
    def driver_address(self) -> str: ...
    @property
    def job_id(self) -> int: ...
    @property
    def namespace(self) -> str: ...
    @property
    def env_vars(self) -> dict[str, str]: ...
    @property
    def code_path(self) -> list[str]: ...
    @property
    def ids(self) -> TaskIds: ...
    @property
    def metrics(self) -> MetricsRegistry: ...
    @property
    def executor(self) -> ActorView | None:
        """What runs tasks here: None in a driver (outside local mode's tasks)."""

    # -- ObjectRef's hooks ----------------------------------------------------
    @property
    def lock(self) -> threading.RLock: ...
    @property
    def refs(self) -> RefEntries: ...
    def ref_deleted(self, object_id: bytes) -> None: ...
    def ref_escaped(self, object_id: bytes) -> None: ...
    def deserialized_ref(self, object_id: bytes, owner: str, cap: bytes = b"") -> ObjectRef: ...

    def ref_cap(self, object_id: bytes, owner: str) -> bytes: ...
    def future_for(self, ref: ObjectRef) -> concurrent.futures.Future[Any]: ...
    async def await_ref(self, ref: ObjectRef) -> Any: ...

    # -- objects ----------------------------------------------------------
    def get(self, refs: Any, timeout: float | None = None) -> Any: ...
    def put(self, value: Any) -> ObjectRef: ...
    def wait(
        self, refs: list[ObjectRef], num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]: ...
    def error_of(self, ref: ObjectRef, timeout: float | None) -> BaseException | None: ...
    def placement_group_ready(self, pg: PlacementGroup) -> ObjectRef: ...

    # -- tasks ------------------------------------------------------------
    def export_function(self, fn_id: bytes, blob: bytes, original: Any = None) -> None:
        """A function or class is about to be called: `blob` is it pickled (the
        cluster's workers load that), `original` the object itself."""
    def load_function(self, fn_id: bytes) -> Any: ...
    def package_env(self, runtime_env: dict[str, Any]) -> dict[str, str]: ...
    def prepare_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
    ) -> tuple[list[m.Arg], list[str], list[bytes]]: ...
    def submit_task(
        self,
        *,
        fn_id: bytes,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: bool | tuple[type, ...],
        env_vars: dict[str, str],
        placement: m.Placement | None = None,
        capture: tuple[bytes, int] = (b"", 0),
        backpressure: int = -1,
    ) -> list[ObjectRef]: ...
    def generator(self, end: ObjectRef) -> ObjectRefGenerator:
        """The ObjectRefGenerator of a streaming task whose end is `end`."""
    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None: ...
    def story(self, task_id: bytes) -> list[StoryRecord]: ...

    # -- actors -----------------------------------------------------------
    def create_actor(self, spec: m.ActorSpec, pinned: list[bytes]) -> m.ActorRegistered: ...
    def hold_actor(self, actor_id: bytes) -> ObjectRef:
        """The ref the creator's handles carry: the actor lives while it does."""
    def submit_actor_task(
        self,
        actor_id: bytes,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int,
        max_task_retries: int,
        name: str,
        retry_exceptions: bool | tuple[type, ...] = False,
        concurrency_group: str = "",
        backpressure: int = -1,
    ) -> list[ObjectRef]: ...
    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None: ...
    def get_named_actor(self, name: str, namespace: str) -> m.ActorState: ...

    # -- the cluster ----------------------------------------------------------
    def call_head(self, msg: Any, timeout: float | None = None) -> Any:
        """Asks the head (local mode answers what it can itself)."""
    def call_agent(self, msg: Any) -> Any: ...
    def shutdown(self) -> None: ...
