"""Every message that crosses a manta connection, in one place.

Messages are msgspec structs encoded as msgpack arrays; the first element is
the type tag (the class name), so a handler dispatches on the Python type,
never on string literals. Decoding validates field types: a malformed frame
raises `msgspec.ValidationError` / `DecodeError` and the connection is closed.

User payloads (functions, arguments, results) travel as opaque `bytes`
fields and are unpickled only by the runtime, after the peer authenticated.

Requests that expect an answer carry `rid` (request id, unique per
connection and direction); the answer carries the same `rid`. Code builds
messages without one: `rid` is every message's last field, so its default 0
is the encoding's last byte, and the connection writes the real id in its
place (`encode_with_rid`) instead of copying the frozen message.

Messages are frozen: a message is made once and never changed. States and
kinds are enums, checked when a message is decoded.
"""

# Annotations not postponed (no __future__ import): msgspec then reads real
# types, not strings to compile (678 here, 10-15 ms of each process's start).

import enum
from typing import Any, Union

import msgspec
from msgspec.structs import replace as _replace

from manta._private.config import Config
from manta._private.protocol import (  # noqa: F401 (their messages join the union)
    auth_messages,
    client_messages,
    metrics_messages,
    state_messages,
    tool_messages,
)
from manta._private.protocol.auth_messages import Challenge, Proof, Refused, Welcome
from manta._private.protocol.framing import HEADER
from manta._private.protocol.identity import Credential, Principal
from manta._private.protocol.structs import Msg, Record

# --- enums ------------------------------------------------------------------


class ErrorKind(enum.StrEnum):
    """Why a request failed; each names the exception the requester raises.

    User errors never travel as a kind: they are pickled payloads (a task's
    `TaskDone.error`, an object whose `ObjectValue.is_error`), decoded only
    by the job's own processes.
    """

    VALUE = "ValueError"
    KEY = "KeyError"
    RUNTIME = "RuntimeError"
    SYSTEM = "RaySystemError"
    OBJECT_LOST = "ObjectLostError"
    STORE_FULL = "ObjectStoreFullError"
    OUT_OF_DISK = "OutOfDiskError"
    UNSCHEDULABLE = "TaskUnschedulableError"
    FREED = "ReferenceCountingAssertionError"
    RUNTIME_ENV_SETUP = "RuntimeEnvSetupError"
    AUTHORIZATION = "AuthorizationError"
    QUOTA = "QuotaExceededError"


class PlacementKind(enum.StrEnum):
    DEFAULT = "DEFAULT"  # Ray's hybrid policy
    SPREAD = "SPREAD"
    NODE_AFFINITY = "NODE_AFFINITY"


class ActorStatus(enum.StrEnum):
    PENDING = "PENDING"
    ALIVE = "ALIVE"
    RESTARTING = "RESTARTING"
    DEAD = "DEAD"


class PGStatus(enum.StrEnum):
    PENDING = "PENDING"
    CREATED = "CREATED"
    # Some bundles were on a node that died: they are being placed again.
    RESCHEDULING = "RESCHEDULING"
    REMOVED = "REMOVED"


class ClientKind(enum.StrEnum):
    DRIVER = "driver"
    WORKER = "worker"


# --- handshake -------------------------------------------------------------


HandshakeMsg = Challenge | Proof | Welcome | Refused


# --- generic answers -------------------------------------------------------


class Ack(Msg, frozen=True):
    rid: int = 0


class ErrorReply(Msg, frozen=True):
    """A request failed: what kind of failure, and what the requester is told."""

    kind: ErrorKind
    message: str
    rid: int = 0


# --- shared records --------------------------------------------------------


class Arg(Record, frozen=True):
    """A task argument: a serialized value, or a reference passed by value."""

    data: bytes | None = None
    object_id: bytes | None = None
    owner: str = ""
    # The referenced object is sealed in the node store of `node_id`.
    in_store: bool = False
    node_id: bytes = b""
    # The owner's proof that the ref was handed out (runtime/holders.py).
    cap: bytes = b""


class Placement(Record, frozen=True):
    """A scheduling strategy: DEFAULT (hybrid), SPREAD, or NODE_AFFINITY to `node_id`."""

    kind: PlacementKind = PlacementKind.DEFAULT
    node_id: bytes = b""
    soft: bool = False
    # Only nodes whose labels match (Ray's label_selector) may run it.
    selector: dict[str, str] = {}


# TaskSpec.num_returns of a generator task: its items stream to the owner as
# they are yielded, or (dynamic) all come back at its end, behind one ref.
STREAMING = -1
DYNAMIC = -2


class TaskSpec(Record, frozen=True):
    task_id: bytes
    job_id: int
    name: str
    fn_id: bytes
    args: list[Arg]
    kwarg_names: list[str]
    num_returns: int  # or STREAMING / DYNAMIC
    owner: str
    resources: dict[str, float]
    attempt: int = 0
    # Actor calls and actor creation.
    actor_id: bytes | None = None
    method: str | None = None
    actor_creation: bool = False
    # An actor's name (options(name=)), for its runtime context.
    actor_name: str = ""
    max_concurrency: int = 1
    # A call: the concurrency group it runs in ("" for its method's own, or
    # the default). A creation: the actor's groups and their sizes.
    concurrency_group: str = ""
    concurrency_groups: dict[str, int] = {}
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
    # Directories the job's code is found in (the driver script's, and
    # JobConfig.code_search_path): put on sys.path of workers running it.
    code_path: list[str] = []
    # A streaming generator: items its owner has from an earlier attempt (a
    # retry skips them), and how many may wait unconsumed before it pauses.
    stream_from: int = 0
    backpressure: int = -1


class ReturnObject(Record, frozen=True):
    """A task result: inline bytes, or sealed in the store of `node_id`."""

    object_id: bytes
    data: bytes | None
    in_store: bool = False
    node_id: bytes = b""
    size: int = 0
    contained: list[tuple[bytes, str]] = []


class NodeInfo(Record, frozen=True):
    node_id: bytes
    address: str
    alive: bool
    resources: dict[str, float]
    available: dict[str, float]
    store_capacity: int
    # Resource shapes of lease requests waiting on this node, with counts.
    pending: list[tuple[dict[str, float], int]] = []
    labels: dict[str, str] = {}


class ActorSpec(Record, frozen=True):
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
    # The class's __qualname__: the state API's class_name, as in Ray.
    qualname: str = ""
    # Only nodes whose labels match (Ray's label_selector) may hold it.
    label_selector: dict[str, str] = {}
    # Its calls may run in any order (async and threaded actors, or allow_out_of_order_execution):
    # a call need not wait behind one whose arguments are not ready.
    out_of_order: bool = False
    # What must be free where it is placed, beyond creation.resources, but
    # is not held: Ray places an actor where 1 CPU is free unless it says,
    # and runs it with none.
    placing: dict[str, float] = {}
    # The worker of the process that created it (empty for a driver, whose
    # job's end ends it): a non-detached actor dies with its owner.
    owner_worker: bytes = b""


# --- head requests ---------------------------------------------------------


class RegisterDriver(Msg, frozen=True):
    namespace: str
    pid: int
    env_vars: dict[str, str]
    # Non-zero when a driver comes back to a restarted head: its job so far.
    job_id: int = 0
    worker_id: bytes = b""
    # The public half of the key the driver's pass is to name.
    key: bytes = b""
    rid: int = 0


class DriverRegistered(Msg, frozen=True):
    job_id: int
    namespace: str
    # The head keeps its state in external storage: if it goes away, wait
    # for it to come back (for a while) instead of giving up at once.
    persistent: bool = False
    # The job's pass, for the driver to show agents and workers.
    pass_blob: bytes = b""
    pass_sig: bytes = b""
    cluster_key: bytes = b""
    rid: int = 0


class RegisterNode(Msg, frozen=True):
    node: NodeInfo
    # Sent again to a restarted head: the actors' workers this node runs
    # (worker id, actor id) and the placement groups whose bundles it holds.
    actor_workers: list[tuple[bytes, bytes]] = []
    bundles: list[bytes] = []
    # The agent's descriptor of its store, meaningful on its own machine only:
    # the head opens it there, over the Unix socket's peer pid, for the
    # entrypoints of jobs it runs as the worker user (head/jobs/as_user.py).
    store_fd: int = -1
    rid: int = 0


class NodeRegistered(Msg, frozen=True):
    persistent: bool = False
    rid: int = 0


# --- the head's key-value store (ray.experimental.internal_kv) -------------


class KvPut(Msg, frozen=True):
    namespace: str
    key: bytes
    value: bytes
    overwrite: bool = True
    rid: int = 0


class KvGet(Msg, frozen=True):
    namespace: str
    key: bytes
    rid: int = 0


class KvDel(Msg, frozen=True):
    namespace: str
    key: bytes
    by_prefix: bool = False
    rid: int = 0


class KvList(Msg, frozen=True):
    namespace: str
    prefix: bytes
    rid: int = 0


class KvValue(Msg, frozen=True):
    value: bytes | None = None
    # KvPut: whether the key existed; KvDel: how many keys went.
    count: int = 0
    keys: list[bytes] = []
    rid: int = 0


class JobInfo(Record, frozen=True):
    """A job as the head stores it (the state API lists jobs with ListJobs)."""
    job_id: int
    namespace: str
    driver_pid: int
    alive: bool
    start_time: float = 0.0
    end_time: float = 0.0
    # The person's token its driver registered with: only its holder (or an
    # admin) may register as that job's driver again.
    token_id: str = ""


class PutFunction(Msg, frozen=True):
    fn_id: bytes
    blob: bytes
    rid: int = 0


class GetFunction(Msg, frozen=True):
    fn_id: bytes
    rid: int = 0


class FunctionBlob(Msg, frozen=True):
    blob: bytes
    rid: int = 0


class CreateActor(Msg, frozen=True):
    spec: ActorSpec
    rid: int = 0


class ActorRegistered(Msg, frozen=True):
    """The actor exists (maybe still starting); `existing` for get_if_exists."""

    actor_id: bytes
    existing: bool
    class_name: str
    creation_fn_id: bytes
    rid: int = 0


class GetNamedActor(Msg, frozen=True):
    name: str
    namespace: str
    rid: int = 0


class WaitActor(Msg, frozen=True):
    """Answered once the actor is ALIVE at an epoch above `known_epoch`, or DEAD."""

    actor_id: bytes
    known_epoch: int
    # Answer at once, whatever the state.
    now: bool = False
    rid: int = 0


class ActorState(Msg, frozen=True):
    actor_id: bytes
    state: ActorStatus
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
    out_of_order: bool = False
    # Why it died, where calls raise more than ActorDiedError (a runtime_env
    # that could not be set up).
    death_kind: ErrorKind | None = None
    rid: int = 0


class ListActors(Msg, frozen=True):
    rid: int = 0


class ActorInfo(Record, frozen=True):
    """An actor as the state API lists it."""

    actor_id: bytes
    class_name: str
    state: ActorStatus
    job_id: int
    name: str
    namespace: str
    node_id: bytes
    pid: int
    death_cause: str
    detached: bool
    restarts: int
    resources: dict[str, float]


class ActorList(Msg, frozen=True):
    actors: list[ActorInfo]
    rid: int = 0


# --- task states: every process -> head, batched; the state API reads them --


class TaskRecord(msgspec.Struct, array_like=True, gc=False):
    """One step of a task as a process's task log keeps it (see
    runtime/story.py), sent to the head as it is. Made in C and never tracked
    by the garbage collector: it holds only bytes, strings and numbers."""

    task_id: bytes
    step: str
    stimulus: int
    time: float
    detail: Any = ""


class RunningTask(Record, frozen=True):
    """A task a worker is running now."""

    task_id: bytes
    attempt: int
    name: str
    job_id: int
    actor_id: bytes | None
    actor_creation: bool
    started: float


class TaskEvents(Msg, frozen=True):
    """A process's task records since its last batch (times on its own
    monotonic clock, `wall` ahead of it), and, from a worker, what it runs."""

    records: list[TaskRecord]
    running: list[RunningTask]
    wall: float
    node_id: bytes
    worker_id: bytes
    pid: int
    # Records this process's log let go before they could be sent.
    lost: int = 0


class ListTasks(Msg, frozen=True):
    # (field, "=" or "!=", value), applied on the head.
    filters: list[tuple[str, str, str]] = []
    limit: int = 100
    rid: int = 0


class TaskList(Msg, frozen=True):
    # Ray's field names and values, one dict a task.
    tasks: list[dict[str, Any]]
    total: int
    # Tasks the head's bounded store, or a process's log, let go of.
    dropped: int
    rid: int = 0


class KillActor(Msg, frozen=True):
    actor_id: bytes
    no_restart: bool
    rid: int = 0


class ActorExiting(Msg, frozen=True):
    """An actor's worker is ending it on purpose (exit_actor, __ray_terminate__):
    the actor is not to be restarted, and dies of `cause` once its worker exits."""

    actor_id: bytes
    cause: str
    rid: int = 0


class ReleaseActor(Msg, frozen=True):
    """The creator dropped its last handle to a never-shared actor."""

    actor_id: bytes


class GetClusterInfo(Msg, frozen=True):
    rid: int = 0


class ClusterInfo(Msg, frozen=True):
    nodes: list[NodeInfo]
    # Where the head keeps its state ("in memory", "redis at HOST:PORT").
    storage: str = ""
    running_jobs: int = 0
    rid: int = 0


class NodeResources(Msg, frozen=True):
    """Agent -> head: the node's current free resources."""

    node_id: bytes
    available: dict[str, float]
    pending: list[tuple[dict[str, float], int]] = []
    # Totals change when placement-group bundles are reserved here.
    total: dict[str, float] = {}


class PlacementGroupSpec(Record, frozen=True):
    pg_id: bytes
    bundles: list[dict[str, float]]
    strategy: str
    name: str = ""
    namespace: str = ""
    job_id: int = 0
    detached: bool = False


class CreatePlacementGroup(Msg, frozen=True):
    spec: PlacementGroupSpec
    rid: int = 0


class PlacementGroupState(Msg, frozen=True):
    spec: PlacementGroupSpec
    state: PGStatus
    nodes: list[bytes]
    error: str = ""
    rid: int = 0


class PlacementGroupList(Msg, frozen=True):
    groups: list[PlacementGroupState]
    rid: int = 0


class WaitPlacementGroup(Msg, frozen=True):
    """Answered when the group is CREATED or REMOVED."""

    pg_id: bytes
    rid: int = 0


class RemovePlacementGroup(Msg, frozen=True):
    pg_id: bytes
    rid: int = 0


class GetPlacementGroups(Msg, frozen=True):
    """All groups, or those named `name` in `namespace`."""

    name: str = ""
    namespace: str = ""
    rid: int = 0


class PrepareBundles(Msg, frozen=True):
    """Head -> agent: set aside these bundles' resources (phase one)."""

    pg_id: bytes
    bundles: list[tuple[int, dict[str, float]]]
    rid: int = 0


class CommitBundles(Msg, frozen=True):
    """Head -> agent: make prepared bundles usable (phase two)."""

    pg_id: bytes
    rid: int = 0


class CancelBundles(Msg, frozen=True):
    """Head -> agent: give back a group's bundles, prepared or committed
    (those with these indices, or all of them)."""

    pg_id: bytes
    indices: list[int] = []


class NodeDied(Msg, frozen=True):
    """Head -> everyone: a node stopped answering (or its agent went away)."""

    node_id: bytes
    reason: str


class JobEnded(Msg, frozen=True):
    """Head -> agents: a job's driver is gone; its idle workers stop (workers
    are never shared between jobs, so nothing else may use them)."""

    job_id: int


class WorkerExited(Msg, frozen=True):
    """Agent -> head: a worker process ended."""

    worker_id: bytes
    pid: int
    exit_code: int
    reason: str


class ShutdownCluster(Msg, frozen=True):
    rid: int = 0


# --- agent requests --------------------------------------------------------


class RegisterClient(Msg, frozen=True):
    kind: ClientKind
    worker_id: bytes
    job_id: int
    pid: int
    address: str
    rid: int = 0


class ClientRegistered(Msg, frozen=True):
    node_id: bytes
    store_pid: int
    store_fd: int
    store_capacity: int
    head_persistent: bool = False
    rid: int = 0


class RequestLease(Msg, frozen=True):
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
    # Must be free for the grant, beyond `resources`, but is not taken
    # (an actor's placement CPU: ActorSpec.placing).
    must_be_free: dict[str, float] = {}
    # From the head, asking on a job's behalf: the job's principal, for the
    # pass of the worker (`node.job_passes`).
    job_principal: Principal | None = None
    rid: int = 0


class LeaseSpill(Msg, frozen=True):
    """Answer to RequestLease: ask the agent of another node instead."""

    node_id: bytes
    address: str
    rid: int = 0


class ClusterView(Msg, frozen=True):
    """Head -> agents: nodes' totals and free resources, for spillback; base 0
    is the whole view, else a delta on version `base` (scheduling/cluster_view.py)."""

    nodes: list[NodeInfo]
    removed: list[bytes] = []
    version: int = 0
    base: int = 0


class LeaseGranted(Msg, frozen=True):
    lease_id: int
    worker_id: bytes
    address: str
    pid: int
    node_id: bytes
    gpu_ids: list[int] = []
    rid: int = 0


class ReturnLease(Msg, frozen=True):
    lease_id: int
    kill: bool = False


class ReclaimLease(Msg, frozen=True):
    """Agent -> lease owner: others wait for what this lease holds; give it
    back once its current task is done instead of reusing it."""

    lease_id: int


class LeaseKilled(Msg, frozen=True):
    """Agent -> lease owner: the lease's worker is being killed, and why
    (the memory monitor): its task fails with OutOfMemoryError, not a crash."""

    lease_id: int
    reason: str


class WorkerBlocked(Msg, frozen=True):
    worker_id: bytes


class WorkerUnblocked(Msg, frozen=True):
    worker_id: bytes


class KillWorker(Msg, frozen=True):
    worker_id: bytes
    force: bool


class StoreCreate(Msg, frozen=True):
    object_id: bytes
    size: int
    rid: int = 0


class StoreCreated(Msg, frozen=True):
    offset: int
    rid: int = 0


class StoreSeal(Msg, frozen=True):
    object_id: bytes


class StorePin(Msg, frozen=True):
    object_id: bytes
    rid: int = 0


class StorePinned(Msg, frozen=True):
    offset: int
    size: int
    rid: int = 0


class StorePull(Msg, frozen=True):
    """Reader -> its agent: copy an object from another node's store, then pin it."""

    object_id: bytes
    source: str
    rid: int = 0


class StoreReadChunk(Msg, frozen=True):
    """Agent -> agent: bytes of a pinned object."""

    object_id: bytes
    offset: int
    length: int
    # Non-empty: answer with the chunk's tag for this nonce (node/transfer.py).
    nonce: bytes = b""
    rid: int = 0


class StoreChunk(Msg, frozen=True):
    # Sent only by `Connection.send_chunk`, which knows the request's rid;
    # `data` is last so that its bytes can follow an encoded prefix.
    rid: int
    digest: bytes  # the chunk's tag; b"" when not asked for
    # Encoded from a view of the store; on the reading side its bytes are
    # written (or decrypted) straight into the store as they arrive
    # (`Connection.request_into`), else decoded as a view into the frame.
    data: memoryview


class StoreUnpin(Msg, frozen=True):
    object_ids: list[bytes]


class StoreFree(Msg, frozen=True):
    object_ids: list[bytes]


class LogLines(Msg, frozen=True):
    job_id: int
    prefix: str
    is_err: bool
    text: str


class GetResources(Msg, frozen=True):
    rid: int = 0


class Resources(Msg, frozen=True):
    total: dict[str, float]
    available: dict[str, float]
    rid: int = 0


# --- owner <-> worker ------------------------------------------------------


class PushTask(Msg, frozen=True):
    spec: TaskSpec
    rid: int = 0


class TaskDone(Msg, frozen=True):
    task_id: bytes
    returns: list[ReturnObject]
    # Serialized exception when the task (or actor constructor) raised.
    error: bytes | None = None
    # The error as text, for the head (a failed actor constructor's cause): it never unpickles a worker's.
    error_text: str = ""
    rid: int = 0
    # Given back unrun, as its owner asked (CancelTask.recall).
    recalled: bool = False


class GeneratorItem(Msg, frozen=True):
    """Worker -> owner: item `index` (from 0) a streaming generator yielded."""

    task_id: bytes
    index: int
    item: ReturnObject


class GeneratorConsumed(Msg, frozen=True):
    """Owner -> worker: the caller has taken `consumed` items of the stream
    (its backpressure lets the generator go on)."""

    task_id: bytes
    consumed: int


class CancelTask(Msg, frozen=True):
    task_id: bytes
    force: bool
    # Cancel the tasks it submitted too (Ray's `cancel(recursive=True)`).
    recursive: bool = False
    # Only give it back, unrun, if it waits behind another (leasing: pipelining).
    recall: bool = False


# --- borrower <-> owner ----------------------------------------------------


class GetObject(Msg, frozen=True):
    object_id: bytes
    # Set by a reader whose copy's node is gone: the owner rebuilds the
    # object (or says why it cannot) before it answers.
    lost_node: bytes = b""
    rid: int = 0
    # Proof that the asker was handed the ref (runtime/holders.py).
    cap: bytes = b""


class ObjectValue(Msg, frozen=True):
    object_id: bytes
    data: bytes | None
    in_store: bool
    is_error: bool
    node_id: bytes
    rid: int = 0


class AddBorrow(Msg, frozen=True):
    object_ids: list[bytes]
    borrower: str
    rid: int = 0
    caps: list[bytes] = []  # one per object id, as GetObject.cap


class RemoveBorrow(Msg, frozen=True):
    object_ids: list[bytes]
    borrower: str


# --- agent <-> fork server (its stdin and stdout, not a connection) --------


class SessionInfo(Record, frozen=True):
    """Where a node's processes find their cluster."""

    session_dir: str
    head_address: str
    agent_address: str
    # What this process presents: a pass of its job, or a person's token.
    credential: Credential
    node_id: bytes = b""
    # Set on nodes of a multi-machine cluster: listen on TCP at this IP, so
    # processes on other machines can reach this one.
    node_ip: str = ""
    # A worker's descriptor of the node's store, inherited from its fork server.
    store_fd: int = -1


class ForkWorker(Msg, frozen=True):
    worker_id: bytes
    env: dict[str, str] = {}
    # The worker's pass: the fork server hands it to that worker alone.
    credential: Credential = Credential()
    # The cgroup directories the worker joins before it runs anything.
    cgroups: list[str] = []


class ForkConfig(Msg, frozen=True):
    """Agent -> fork server, first: what every worker it forks is told,
    and the workers to start at once, before the agent asks."""

    session: SessionInfo
    config: Config
    prestart: list[ForkWorker] = []
    # The user workers run as (--worker-user); -1: the fork server's own.
    worker_uid: int = -1
    worker_gid: int = -1


class WorkerForked(Msg, frozen=True):
    worker_id: bytes
    pid: int


class WorkerReaped(Msg, frozen=True):
    pid: int
    code: int


ForkMessage = ForkConfig | ForkWorker | WorkerForked | WorkerReaped


def _wire_union() -> Any:
    """Every message a connection carries: each Msg defined here or in the
    protocol modules imported above, but the handshake's and the fork
    server's, which have decoders of their own. Built from the classes, so
    a new message needs no second entry."""
    apart = set(HandshakeMsg.__args__) | set(ForkMessage.__args__)
    kinds = tuple(k for k in Msg.__subclasses__() if k not in apart)
    return Union[kinds]  # noqa: UP007 (a Union built at run time)


Message = _wire_union()

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(Message)
_hs_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(HandshakeMsg)
_fork_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(ForkMessage)

encode = _encode = _encoder.encode


_pack_header = HEADER.pack


def frame(msg: Msg, rid: int = 0) -> bytes:
    """The frame of `msg` (built with rid 0), as request or answer `rid` if given.

    With a rid, a shallow copy of the frozen message carries it (made in C,
    cheaper than patching the encoded bytes). `frame_parts` for a large one.
    """
    header, payload = frame_parts(msg, rid)
    return header + payload


def frame_parts(msg: Msg, rid: int = 0) -> tuple[bytes, bytes]:
    """`frame`'s header and payload, apart: a large payload is written after
    its header as it is, not copied once more to join them."""
    if rid:
        if msg.rid:  # type: ignore[attr-defined]  # every message with a rid ends with it
            raise ValueError(f"{type(msg).__name__} must be built without a rid (the connection sets it)")
        msg = _replace(msg, rid=rid)
    payload = _encode(msg)
    return _pack_header(len(payload)), payload


def decode(payload: bytes | bytearray) -> Msg:
    return _decoder.decode(payload)  # type: ignore[no-any-return]


def decode_handshake(payload: bytes) -> HandshakeMsg:
    return _hs_decoder.decode(payload)  # type: ignore[no-any-return]


def decode_fork(payload: bytes | bytearray) -> ForkMessage:
    return _fork_decoder.decode(payload)  # type: ignore[no-any-return]


DecodeError = (msgspec.DecodeError, msgspec.ValidationError)
