"""The state API's messages (`manta.util.state`): what a driver asks the
head, what the head asks every node agent, and what an agent asks the
processes on its node, to list workers, objects, runtime envs and jobs.

Everything is gathered when someone asks: nothing is sent ahead of a
query, so listing costs the hot paths nothing. A query names how long its
asker waits (`timeout_s`); whoever fans it out waits a little less for
each part and names in `missing` what did not answer, so one busy or dead
process leaves a partial list with a warning instead of a hung call.

Values that the state API shows as Ray's words (reference types, task
statuses, exit types) travel as those words.
"""

# Annotations are not postponed: see protocol/messages.py.

from manta._private.protocol.structs import Msg, Record

# --- workers ----------------------------------------------------------------


class ListWorkers(Msg, frozen=True):
    """Driver -> head -> every node agent."""

    timeout_s: float = 30.0
    rid: int = 0


class WorkerRecord(Record, frozen=True):
    """A worker process or a driver, as the agent of its node knows it."""

    worker_id: bytes
    alive: bool
    driver: bool
    node_id: bytes
    ip: str
    pid: int
    # The job of its latest lease (a worker starts with none: 0).
    job_id: int = 0
    # Ray's WorkerExitType name, and what happened.
    exit_type: str = ""
    exit_detail: str = ""
    # Wall-clock ms: fork asked for, forked, registered (-1: never), ended (0: not yet).
    launch_ms: int = -1
    launched_ms: int = -1
    start_ms: int = -1
    end_ms: int = 0


class WorkerList(Msg, frozen=True):
    workers: list[WorkerRecord]
    # Nodes that did not answer in time, and why: their workers are missing.
    missing: list[str] = []
    rid: int = 0


# --- objects ----------------------------------------------------------------


class ListObjects(Msg, frozen=True):
    """Driver -> head -> every node agent."""

    timeout_s: float = 30.0
    rid: int = 0


class GetReferences(Msg, frozen=True):
    """Node agent -> each driver and worker on its node: its reference table."""

    rid: int = 0


class RefRecord(Record, frozen=True):
    """One entry of a process's reference table, in Ray's words."""

    object_id: bytes
    reference_type: str  # ACTOR_HANDLE, USED_BY_PENDING_TASK, LOCAL_REFERENCE, ...
    # The status of the task that makes it, as its owner sees it (NIL
    # elsewhere), and that task's attempt, counted from 1.
    task_status: str
    attempt: int = 1
    size: int = -1  # bytes; -1 while unknown
    # Sealed in the store of `node_id`: its size is the store's to tell.
    in_store: bool = False
    node_id: bytes = b""
    # This process owns it (made it with .remote() or put()): `manta memory`'s owner.
    owned: bool = False


class References(Msg, frozen=True):
    refs: list[RefRecord]
    rid: int = 0


class ProcessObjects(Record, frozen=True):
    """The references one driver or worker holds."""

    pid: int
    driver: bool
    node_id: bytes
    ip: str
    refs: list[RefRecord]


class ObjectList(Msg, frozen=True):
    processes: list[ProcessObjects]
    # From an agent: the size of each object in its node's store (the head
    # gives references their sizes from these before it answers).
    stored: dict[bytes, int] = {}
    # Processes or nodes that did not answer in time, and why.
    missing: list[str] = []
    rid: int = 0


# --- runtime envs -------------------------------------------------------------


class ListRuntimeEnvs(Msg, frozen=True):
    """Driver -> head -> every node agent."""

    timeout_s: float = 30.0
    rid: int = 0


class RuntimeEnvRecord(Record, frozen=True):
    """An environment a node's workers run in: workers are pooled by their
    environment variables, which name the runtime_env's parts."""

    node_id: bytes
    env: dict[str, str]
    success: bool
    # How long setting it up took (None: not set up yet).
    creation_ms: float | None
    error: str = ""
    # Live workers running in it (Ray's ref_cnt).
    workers: int = 0


class RuntimeEnvList(Msg, frozen=True):
    envs: list[RuntimeEnvRecord]
    missing: list[str] = []
    rid: int = 0


class RuntimeEnvSetUp(Msg, frozen=True):
    """Worker -> its agent, once per worker whose environment needs setting
    up beyond its variables (a working_dir): how long it took, or why it failed."""

    worker_id: bytes
    ms: float
    error: str = ""


# --- jobs ---------------------------------------------------------------------


class JobDetails(Msg, frozen=True):
    """Driver -> head, once after it registers: what the state API shows of
    its job beyond the head's job table."""

    job_id: int
    entrypoint: str
    runtime_env: str  # JSON
    node_id: bytes
    ip: str
    submission_id: str = ""  # the REST job it is the driver of (`manta job submit`), if any


class ListJobs(Msg, frozen=True):
    rid: int = 0


class JobRecord(Record, frozen=True):
    job_id: int
    namespace: str
    driver_pid: int
    alive: bool
    start_ms: int
    end_ms: int
    entrypoint: str = ""
    runtime_env: str = "{}"
    node_id: bytes = b""
    ip: str = ""
    submission_id: str = ""


class JobRecordList(Msg, frozen=True):
    jobs: list[JobRecord]
    rid: int = 0


# Answers, matched to their requests by the connection.
REPLIES = (WorkerList, References, ObjectList, RuntimeEnvList, JobRecordList)
