"""Messages of the observability tools: `manta logs`, `manta stack` and
`manta memory` (docs/observability.md).

A CLI or driver asks the head; the head finds the node that holds what is
asked for (from its task and actor tables, or by asking every agent),
forwards the request to that node's agent, checks the answer against the
asker's principal and passes it on. Agents take these only from the
cluster (the head), so a job never reads another's logs by asking an agent
directly.

Reading a log is stateless on the serving side: each `ReadLog` names the
offset and the file identity (inode) it read up to, and the answer says
where to continue and whether the file was replaced or truncated meanwhile
(then it is read again from its start). Following a file is asking again.
"""

# Annotations are not postponed: see protocol/messages.py.

from manta._private.protocol.structs import Msg, Record

# --- logs ---------------------------------------------------------------------


class ListLogs(Msg, frozen=True):
    """CLI -> head -> every node agent (or the one of `node_id`)."""

    node_id: bytes = b""
    glob: str = ""
    timeout_s: float = 30.0
    rid: int = 0


class LogFile(Record, frozen=True):
    node_id: bytes
    name: str  # relative to the node's log directory: "agent.log", "worker/<id>-<pid>.out"
    size: int
    mtime: float
    # The job whose worker wrote it (0: the node's own log, or a worker
    # that never ran a job's task); who may read it depends on it.
    job_id: int = 0
    worker_id: bytes = b""
    pid: int = 0


class LogFiles(Msg, frozen=True):
    files: list[LogFile]
    missing: list[str] = []
    rid: int = 0


class ReadLog(Msg, frozen=True):
    """CLI -> head -> the agent of the node holding the file.

    Names a file (`name`), or a worker (`worker_id`, `pid`), or an actor or
    a task the head resolves to its worker (`actor_id`, `task_id`; a task
    id also selects that task's own lines of its worker's file)."""

    node_id: bytes = b""
    name: str = ""
    worker_id: bytes = b""
    pid: int = 0
    actor_id: bytes = b""
    task_id: bytes = b""
    err: bool = False  # the worker's stderr file rather than its stdout
    tail: int = -1  # the last N lines (-1: all), on a first read (offset < 0)
    offset: int = -1  # where the last read ended; -1: a first read
    inode: int = 0  # the file that read came from
    # With task_id: whether the last read ended inside the task's lines.
    in_task: bool = False
    max_bytes: int = 1 << 20
    timeout_s: float = 30.0
    rid: int = 0


class LogChunk(Msg, frozen=True):
    node_id: bytes
    name: str
    data: bytes
    offset: int  # the next read starts here
    inode: int
    # The file was replaced or truncated since the offset asked for: data
    # starts at its beginning.
    rotated: bool = False
    in_task: bool = False
    # More is there already (the answer was cut at max_bytes).
    more: bool = False
    job_id: int = 0
    rid: int = 0


# --- stacks -------------------------------------------------------------------


class DumpStacks(Msg, frozen=True):
    """CLI -> head -> node agents: the Python stacks of the worker with
    `pid` (or `worker_id`), of an actor's worker, or of every worker of a
    node (none of them given)."""

    node_id: bytes = b""
    pid: int = 0
    worker_id: bytes = b""
    actor_id: bytes = b""
    native: bool = False  # py-spy's --native: C frames too
    # "py-spy", "faulthandler", or "" (py-spy where it works, else faulthandler).
    method: str = ""
    timeout_s: float = 30.0
    rid: int = 0


class StackRecord(Record, frozen=True):
    node_id: bytes
    pid: int
    worker_id: bytes
    job_id: int
    text: str
    # "py-spy" or "faulthandler": what took it.
    method: str
    error: str = ""


class Stacks(Msg, frozen=True):
    stacks: list[StackRecord]
    missing: list[str] = []
    rid: int = 0


# --- the object store -----------------------------------------------------------


class ListStore(Msg, frozen=True):
    """CLI -> head -> every node agent: what each store holds."""

    timeout_s: float = 30.0
    rid: int = 0


class StoreEntry(Record, frozen=True):
    object_id: bytes
    size: int
    spilled: bool
    # Readers pinning it now (a value from get() alive in some process).
    pins: int = 0
    # A copy of another node's object (evictable once unpinned).
    copy: bool = False
    sealed: bool = True


class StoreReport(Record, frozen=True):
    node_id: bytes
    ip: str
    capacity: int
    used: int
    spilled_bytes: int
    entries: list[StoreEntry]


class StoreReports(Msg, frozen=True):
    nodes: list[StoreReport]
    missing: list[str] = []
    rid: int = 0


# Answers, matched to their requests by the connection.
REPLIES = (LogFiles, LogChunk, Stacks, StoreReports)


# --- where workers write (shared by the worker that writes and the agent that reads) ---

# Under the session directory: one file per worker and stream, and one its
# stack dumps go to (`runtime/worker_logs.py`).
WORKER_LOG_DIR = "worker_logs"
# A line a worker writes when the task printing differs from the last one:
# what follows it, up to the next marker, is that task's output.
TASK_MARKER = ":task_id:"
# Lines of this prefix are progress bars' updates (manta.experimental.tqdm_ray):
# sent to the driver, which draws them, and kept out of the worker's files.
PROGRESS_PREFIX = "__manta_progress__ "


def worker_log_name(worker_id: bytes, pid: int, suffix: str) -> str:
    """'worker-<id>-<pid>.out' (suffix out, err or stack)."""
    return f"worker-{worker_id.hex()}-{pid}.{suffix}"
