"""Every message that crosses a manta connection, in one place.

Messages are msgspec structs encoded as msgpack arrays; the first element is
the type tag (the class name), so a handler dispatches on the Python type,
never on string literals. Decoding validates field types: a malformed frame
raises `msgspec.ValidationError` / `DecodeError` and the connection is closed.

User payloads (functions, arguments, results) travel as opaque `bytes`
fields and are unpickled only by the runtime, after the peer authenticated.

Requests that expect an answer carry `rid` (request id, unique per
connection and direction); the answer carries the same `rid`.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Msg(msgspec.Struct, array_like=True, tag=True, omit_defaults=False):
    pass


# --- handshake -------------------------------------------------------------


class Challenge(Msg):
    nonce: bytes


class Proof(Msg):
    nonce: bytes
    mac: bytes


class Welcome(Msg):
    mac: bytes


HandshakeMsg = Challenge | Proof | Welcome


# --- generic answers -------------------------------------------------------


class Ack(Msg):
    rid: int


class ErrorReply(Msg):
    """A request failed; `kind` names a public exception class."""

    rid: int
    kind: str
    message: str


# --- shared records --------------------------------------------------------


class Arg(msgspec.Struct, array_like=True):
    """A task argument: a serialized value, or a reference passed by value."""

    data: bytes | None = None
    object_id: bytes | None = None
    owner: str = ""
    # The referenced object is sealed in the node store of `node_id`.
    in_store: bool = False
    node_id: bytes = b""


class Placement(msgspec.Struct, array_like=True):
    """A scheduling strategy: DEFAULT (hybrid), SPREAD, or NODE_AFFINITY to `node_id`."""

    kind: str = "DEFAULT"
    node_id: bytes = b""
    soft: bool = False


class TaskSpec(msgspec.Struct, array_like=True):
    task_id: bytes
    job_id: int
    name: str
    fn_id: bytes
    args: list[Arg]
    kwarg_names: list[str]
    num_returns: int
    owner: str
    resources: dict[str, float]
    attempt: int = 0
    # Actor calls and actor creation.
    actor_id: bytes | None = None
    method: str | None = None
    actor_creation: bool = False
    max_concurrency: int = 1
    is_async_actor: bool = False
    restart_count: int = 0
    env_vars: dict[str, str] = {}
    namespace: str = ""
    # The job's driver: where print() output of the task goes.
    driver: str = ""
    # GPUs of the lease running this task (CUDA_VISIBLE_DEVICES).
    gpu_ids: list[int] = []
    placement: Placement = msgspec.field(default_factory=Placement)
    # placement_group_capture_child_tasks: children run in this group too.
    capture_pg: bytes = b""
    capture_pg_bundles: int = 0


class ReturnObject(msgspec.Struct, array_like=True):
    """A task result: inline bytes, or sealed in the store of `node_id`."""

    object_id: bytes
    data: bytes | None
    in_store: bool = False
    node_id: bytes = b""
    size: int = 0
    contained: list[tuple[bytes, str]] = []


class NodeInfo(msgspec.Struct, array_like=True):
    node_id: bytes
    address: str
    alive: bool
    resources: dict[str, float]
    available: dict[str, float]
    store_capacity: int
    # Resource shapes of lease requests waiting on this node, with counts.
    pending: list[tuple[dict[str, float], int]] = []


class ActorSpec(msgspec.Struct, array_like=True):
    actor_id: bytes
    job_id: int
    class_name: str
    creation: TaskSpec
    name: str = ""
    namespace: str = ""
    detached: bool = False
    max_restarts: int = 0
    get_if_exists: bool = False
    owner_pid: int = 0


# --- head requests ---------------------------------------------------------


class RegisterDriver(Msg):
    rid: int
    namespace: str
    pid: int
    env_vars: dict[str, str]
    # Non-zero when a driver comes back to a restarted head: its job so far.
    job_id: int = 0


class DriverRegistered(Msg):
    rid: int
    job_id: int
    namespace: str
    # The head keeps its state in external storage: if it goes away, wait
    # for it to come back (for a while) instead of giving up at once.
    persistent: bool = False


class RegisterNode(Msg):
    rid: int
    node: NodeInfo
    # Sent again to a restarted head: the actors' workers this node runs
    # (worker id, actor id) and the placement groups whose bundles it holds.
    actor_workers: list[tuple[bytes, bytes]] = []
    bundles: list[bytes] = []


class NodeRegistered(Msg):
    rid: int
    persistent: bool = False


# --- the head's key-value store (ray.experimental.internal_kv) -------------


class KvPut(Msg):
    rid: int
    namespace: str
    key: bytes
    value: bytes
    overwrite: bool = True


class KvGet(Msg):
    rid: int
    namespace: str
    key: bytes


class KvDel(Msg):
    rid: int
    namespace: str
    key: bytes
    by_prefix: bool = False


class KvList(Msg):
    rid: int
    namespace: str
    prefix: bytes


class KvValue(Msg):
    rid: int
    value: bytes | None = None
    # KvPut: whether the key existed; KvDel: how many keys went.
    count: int = 0
    keys: list[bytes] = []


class GetJobs(Msg):
    rid: int


class JobInfo(msgspec.Struct, array_like=True):
    job_id: int
    namespace: str
    driver_pid: int
    alive: bool
    start_time: float = 0.0
    end_time: float = 0.0


class JobList(Msg):
    rid: int
    jobs: list[JobInfo]


class PutFunction(Msg):
    rid: int
    fn_id: bytes
    blob: bytes


class GetFunction(Msg):
    rid: int
    fn_id: bytes


class FunctionBlob(Msg):
    rid: int
    blob: bytes


class CreateActor(Msg):
    rid: int
    spec: ActorSpec


class ActorRegistered(Msg):
    """The actor exists (maybe still starting); `existing` for get_if_exists."""

    rid: int
    actor_id: bytes
    existing: bool
    class_name: str
    creation_fn_id: bytes


class GetNamedActor(Msg):
    rid: int
    name: str
    namespace: str


class WaitActor(Msg):
    """Answered once the actor is ALIVE at an epoch above `known_epoch`, or DEAD."""

    rid: int
    actor_id: bytes
    known_epoch: int
    # Answer at once, whatever the state.
    now: bool = False


class ActorState(Msg):
    rid: int
    actor_id: bytes
    state: str  # PENDING | ALIVE | RESTARTING | DEAD
    address: str
    epoch: int
    death_cause: str
    class_name: str
    fn_id: bytes
    is_async: bool = False
    max_concurrency: int = 1
    node_id: bytes = b""
    # Not dead for good: it is (or will be) restarted.
    restartable: bool = False


class KillActor(Msg):
    rid: int
    actor_id: bytes
    no_restart: bool


class ReleaseActor(Msg):
    """The creator dropped its last handle to a never-shared actor."""

    actor_id: bytes


class GetClusterInfo(Msg):
    rid: int


class ClusterInfo(Msg):
    rid: int
    nodes: list[NodeInfo]
    # Where the head keeps its state ("in memory", "redis at HOST:PORT").
    storage: str = ""
    running_jobs: int = 0


class NodeResources(Msg):
    """Agent -> head: the node's current free resources."""

    node_id: bytes
    available: dict[str, float]
    pending: list[tuple[dict[str, float], int]] = []
    # Totals change when placement-group bundles are reserved here.
    total: dict[str, float] = {}


class PlacementGroupSpec(msgspec.Struct, array_like=True):
    pg_id: bytes
    bundles: list[dict[str, float]]
    strategy: str
    name: str = ""
    namespace: str = ""
    job_id: int = 0
    detached: bool = False


class CreatePlacementGroup(Msg):
    rid: int
    spec: PlacementGroupSpec


class PlacementGroupState(Msg):
    rid: int
    spec: PlacementGroupSpec
    state: str  # PENDING | CREATED | REMOVED
    nodes: list[bytes]
    error: str = ""


class PlacementGroupList(Msg):
    rid: int
    groups: list[PlacementGroupState]


class WaitPlacementGroup(Msg):
    """Answered when the group is CREATED or REMOVED."""

    rid: int
    pg_id: bytes


class RemovePlacementGroup(Msg):
    rid: int
    pg_id: bytes


class GetPlacementGroups(Msg):
    """All groups, or those named `name` in `namespace`."""

    rid: int
    name: str = ""
    namespace: str = ""


class PrepareBundles(Msg):
    """Head -> agent: set aside these bundles' resources (phase one)."""

    rid: int
    pg_id: bytes
    bundles: list[tuple[int, dict[str, float]]]


class CommitBundles(Msg):
    """Head -> agent: make prepared bundles usable (phase two)."""

    rid: int
    pg_id: bytes


class CancelBundles(Msg):
    """Head -> agent: give back a group's bundles, prepared or committed
    (those with these indices, or all of them)."""

    pg_id: bytes
    indices: list[int] = []


class NodeDied(Msg):
    """Head -> everyone: a node stopped answering (or its agent went away)."""

    node_id: bytes
    reason: str


class WorkerExited(Msg):
    """Agent -> head: a worker process ended."""

    worker_id: bytes
    pid: int
    exit_code: int
    reason: str


class ShutdownCluster(Msg):
    rid: int


# --- agent requests --------------------------------------------------------


class RegisterClient(Msg):
    rid: int
    kind: str  # driver | worker | head
    worker_id: bytes
    job_id: int
    pid: int
    address: str


class ClientRegistered(Msg):
    rid: int
    node_id: bytes
    store_pid: int
    store_fd: int
    store_capacity: int
    head_persistent: bool = False


class RequestLease(Msg):
    rid: int
    job_id: int
    resources: dict[str, float]
    env_vars: dict[str, str]
    for_actor: bool = False
    actor_id: bytes = b""
    # Whether its work is retried if the worker dies: the memory monitor
    # kills retriable work first.
    retriable: bool = True
    # Already redirected once: grant or queue here, never redirect again.
    spilled: bool = False
    placement: Placement = msgspec.field(default_factory=Placement)


class LeaseSpill(Msg):
    """Answer to RequestLease: ask the agent of another node instead."""

    rid: int
    node_id: bytes
    address: str


class ClusterView(Msg):
    """Head -> agents: every node's totals and free resources, for spillback."""

    nodes: list[NodeInfo]


class LeaseGranted(Msg):
    rid: int
    lease_id: int
    worker_id: bytes
    address: str
    pid: int
    node_id: bytes
    gpu_ids: list[int] = []


class ReturnLease(Msg):
    lease_id: int
    kill: bool = False


class LeaseKilled(Msg):
    """Agent -> lease owner: the lease's worker is being killed, and why
    (the memory monitor): its task fails with OutOfMemoryError, not a crash."""

    lease_id: int
    reason: str


class WorkerBlocked(Msg):
    worker_id: bytes


class WorkerUnblocked(Msg):
    worker_id: bytes


class KillWorker(Msg):
    worker_id: bytes
    force: bool


class StoreCreate(Msg):
    rid: int
    object_id: bytes
    size: int


class StoreCreated(Msg):
    rid: int
    offset: int


class StoreSeal(Msg):
    object_id: bytes


class StorePin(Msg):
    rid: int
    object_id: bytes


class StorePinned(Msg):
    rid: int
    offset: int
    size: int


class StorePull(Msg):
    """Reader -> its agent: copy an object from another node's store, then pin it."""

    rid: int
    object_id: bytes
    source: str


class StoreReadChunk(Msg):
    """Agent -> agent: bytes of a pinned object."""

    rid: int
    object_id: bytes
    offset: int
    length: int


class StoreChunk(Msg):
    rid: int
    # Decoded as a view into the received frame, encoded from a view of the
    # store: a chunk is copied once on each side, not three times.
    data: memoryview


class StoreUnpin(Msg):
    object_ids: list[bytes]


class StoreFree(Msg):
    object_ids: list[bytes]


class LogLines(Msg):
    job_id: int
    prefix: str
    is_err: bool
    text: str


class GetResources(Msg):
    rid: int


class Resources(Msg):
    rid: int
    total: dict[str, float]
    available: dict[str, float]


# --- owner <-> worker ------------------------------------------------------


class PushTask(Msg):
    rid: int
    spec: TaskSpec


class TaskDone(Msg):
    rid: int
    task_id: bytes
    returns: list[ReturnObject]
    # Serialized exception when the task (or actor constructor) raised.
    error: bytes | None = None
    # Refs this worker still borrows after the task (registered with owners).
    borrowed: list[bytes] = []
    # The error as text, for the head: a failed actor constructor's cause,
    # which the head reports without unpickling anything a worker sent.
    error_text: str = ""


class CancelTask(Msg):
    task_id: bytes
    force: bool


# --- borrower <-> owner ----------------------------------------------------


class GetObject(Msg):
    rid: int
    object_id: bytes
    # Set by a reader whose copy's node is gone: the owner rebuilds the
    # object (or says why it cannot) before it answers.
    lost_node: bytes = b""


class ObjectValue(Msg):
    rid: int
    object_id: bytes
    data: bytes | None
    in_store: bool
    is_error: bool
    node_id: bytes


class AddBorrow(Msg):
    rid: int
    object_ids: list[bytes]
    borrower: str


class RemoveBorrow(Msg):
    object_ids: list[bytes]
    borrower: str


Message = (
    Ack
    | ErrorReply
    | RegisterDriver
    | DriverRegistered
    | RegisterNode
    | NodeRegistered
    | KvPut
    | KvGet
    | KvDel
    | KvList
    | KvValue
    | GetJobs
    | JobList
    | PutFunction
    | GetFunction
    | FunctionBlob
    | CreateActor
    | ActorRegistered
    | GetNamedActor
    | WaitActor
    | ActorState
    | KillActor
    | ReleaseActor
    | GetClusterInfo
    | ClusterInfo
    | NodeResources
    | WorkerExited
    | ShutdownCluster
    | RegisterClient
    | ClientRegistered
    | RequestLease
    | LeaseGranted
    | ReturnLease
    | LeaseKilled
    | WorkerBlocked
    | WorkerUnblocked
    | KillWorker
    | StoreCreate
    | StoreCreated
    | StoreSeal
    | StorePin
    | StorePinned
    | NodeDied
    | CreatePlacementGroup
    | PlacementGroupState
    | PlacementGroupList
    | WaitPlacementGroup
    | RemovePlacementGroup
    | GetPlacementGroups
    | PrepareBundles
    | CommitBundles
    | CancelBundles
    | StorePull
    | StoreReadChunk
    | StoreChunk
    | LeaseSpill
    | ClusterView
    | StoreUnpin
    | StoreFree
    | LogLines
    | GetResources
    | Resources
    | PushTask
    | TaskDone
    | CancelTask
    | GetObject
    | ObjectValue
    | AddBorrow
    | RemoveBorrow
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(Message)
_hs_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(HandshakeMsg)

encode = _encoder.encode


def chunk_prefix(rid: int, size: int) -> bytes:
    """The encoding of `StoreChunk(rid, data)` up to `data`'s bytes.

    A chunk is sent as this prefix followed by the store's bytes themselves,
    so they are not copied into a message first. msgpack ends the encoding
    of an empty `data` with a bin8 header (c4 00); a bin32 header (c6 +
    big-endian length) takes its place.
    """
    empty = _encoder.encode(StoreChunk(rid=rid, data=memoryview(b"")))
    assert empty[-2:] == b"\xc4\x00"
    return empty[:-2] + b"\xc6" + size.to_bytes(4, "big")


def decode(payload: bytes | bytearray) -> Message:
    return _decoder.decode(payload)  # type: ignore[no-any-return]


def decode_handshake(payload: bytes) -> HandshakeMsg:
    return _hs_decoder.decode(payload)  # type: ignore[no-any-return]


DecodeError = (msgspec.DecodeError, msgspec.ValidationError)
