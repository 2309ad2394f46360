"""The jobs the head supervises, and every decision about them, without I/O.

A job is PENDING until its entrypoint starts (and, when it asked for
entrypoint resources, until they are reserved), RUNNING while its process
lives, then SUCCEEDED, FAILED (with the exit code and a message) or
STOPPED. Every transition is in `TRANSITIONS`; anything else raises.

A stop sends SIGTERM to the entrypoint's process group at once and SIGKILL
`stop_timeout_s` later if it is still running (Ray waits 3 s the same way);
`tick(now)` says when. The clock is injected: tests move it by hand.
"""

from __future__ import annotations

import enum
import re
import secrets
import signal
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec.structs import replace


class JobStatus(enum.StrEnum):
    """Ray's job statuses, spelled as Ray spells them on the wire."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)


PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.STOPPED,
                                                 JobStatus.SUCCEEDED, JobStatus.FAILED)
TRANSITIONS = {
    (PENDING, RUNNING), (PENDING, FAILED), (PENDING, STOPPED),
    (RUNNING, SUCCEEDED), (RUNNING, FAILED), (RUNNING, STOPPED),
}
# Ray's messages, so tools that read them see the same words.
MESSAGES = {
    PENDING: "Job has not started yet.",
    RUNNING: "Job is currently running.",
    STOPPED: "Job was intentionally stopped.",
    SUCCEEDED: "Job finished successfully.",
}
SUBMISSION_PREFIX = "mantasubmit_"
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_ALPHABET = string.ascii_letters + string.digits


class IllegalTransition(RuntimeError):
    """An internal bug: a job asked to move where its status cannot go."""


class JobError(Exception):
    """A request about jobs that cannot be done; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One job, as stored (sealed, in the head's `submissions` table) and shown (Ray's JobDetails)."""

    submission_id: str
    entrypoint: str
    status: JobStatus = PENDING
    message: str = MESSAGES[PENDING]
    error_type: str = ""
    # Where it runs: the namespace its driver joins ("" lets the driver pick, as Ray's do).
    namespace: str = ""
    # Whose principal it runs as: the token's id ("local-admin": the cluster's owner), and its name.
    token_id: str = ""
    submitter: str = ""
    metadata: dict[str, str] = {}
    runtime_env: dict[str, Any] = {}
    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0
    entrypoint_memory: int = 0
    entrypoint_resources: dict[str, float] = {}
    start_time: int = 0  # ms since the epoch, as Ray gives them
    end_time: int = 0
    driver_exit_code: int | None = None
    # Its runner process, and when that started (so a restarted head can tell it is the same process).
    pid: int = 0
    pid_started: float = 0.0
    stop_at: float = 0.0  # when a stop was asked (0: never)
    killed: bool = False  # SIGKILL sent

    def needs(self) -> dict[str, float]:
        """The resources its entrypoint reserves (Ray's names)."""
        out = {k: float(v) for k, v in self.entrypoint_resources.items() if v}
        if self.entrypoint_num_cpus:
            out["CPU"] = self.entrypoint_num_cpus
        if self.entrypoint_num_gpus:
            out["GPU"] = self.entrypoint_num_gpus
        if self.entrypoint_memory:
            out["memory"] = float(self.entrypoint_memory)
        return out


@dataclass(frozen=True)
class Signal:
    """Send `sig` to the process group of job `submission_id`'s runner."""

    submission_id: str
    pid: int
    sig: int


def new_submission_id() -> str:
    return SUBMISSION_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def check_submission_id(sid: str) -> str:
    if not isinstance(sid, str) or not _ID_RE.match(sid):
        raise JobError("submission_id must be 1 to 128 letters, digits or _ . : -")
    return sid


class JobTable:
    def __init__(self, clock: Callable[[], float], stop_timeout_s: float = 3.0, max_jobs: int = 10_000) -> None:
        self.clock = clock
        self.stop_timeout_s = stop_timeout_s
        self.max_jobs = max_jobs
        self.jobs: dict[str, JobRecord] = {}
        # Ended jobs dropped to make room (the shell removes their stored records and logs).
        self.forgotten: list[str] = []

    def _ms(self) -> int:
        return int(self.clock() * 1000)

    def get(self, sid: str) -> JobRecord:
        job = self.jobs.get(sid)
        if job is None:
            raise JobError(f"Job {sid} does not exist", 404)
        return job

    def _move(self, job: JobRecord, new: JobStatus, **changes: Any) -> JobRecord:
        if (job.status, new) not in TRANSITIONS:
            raise IllegalTransition(f"job {job.submission_id}: {job.status.value} -> {new.value}")
        if new.is_terminal():
            changes.setdefault("end_time", self._ms())
        changes.setdefault("message", MESSAGES.get(new, ""))
        out = self.jobs[job.submission_id] = replace(job, status=new, **changes)
        return out

    # -- events -----------------------------------------------------------

    def submit(self, job: JobRecord) -> JobRecord:
        check_submission_id(job.submission_id)
        if job.submission_id in self.jobs:
            raise JobError(f"Job with submission_id {job.submission_id} already exists. "
                           f"Please use a different submission_id.")
        live = sum(1 for j in self.jobs.values() if not j.status.is_terminal())
        if len(self.jobs) >= self.max_jobs:
            if live >= self.max_jobs:
                raise JobError(f"the head already holds {live} unfinished jobs (its limit)", 429)
            self._forget_oldest()
        out = self.jobs[job.submission_id] = replace(job, status=PENDING, message=MESSAGES[PENDING],
                                                     start_time=self._ms(), end_time=0)
        return out

    def _forget_oldest(self) -> None:
        done = [j for j in self.jobs.values() if j.status.is_terminal()]
        oldest = min(done, key=lambda j: j.end_time)
        del self.jobs[oldest.submission_id]
        self.forgotten.append(oldest.submission_id)

    def started(self, sid: str, pid: int, pid_started: float) -> JobRecord:
        return self._move(self.get(sid), RUNNING, pid=pid, pid_started=pid_started)

    def could_not_start(self, sid: str, why: str) -> JobRecord:
        return self._move(self.get(sid), FAILED, message=why, error_type="JOB_SUPERVISOR_ACTOR_START_FAILURE")

    def exited(self, sid: str, code: int | None) -> JobRecord:
        """Its runner reported `code` (negative: killed by that signal; None: it left no code)."""
        job = self.get(sid)
        if job.stop_at:
            return self._move(job, STOPPED, driver_exit_code=code)
        if code == 0:
            return self._move(job, SUCCEEDED, driver_exit_code=0)
        if code is None:
            why = "Job entrypoint process ended without reporting its exit code."
        elif code < 0:
            why = f"Job entrypoint command was killed by signal {_signame(-code)}."
        else:
            why = f"Job entrypoint command failed with exit code {code}."
        return self._move(job, FAILED, driver_exit_code=code, message=why,
                          error_type="JOB_ENTRYPOINT_COMMAND_ERROR")

    def lost(self, sid: str, why: str) -> JobRecord:
        """A restarted head cannot find the job's process any more."""
        return self._move(self.get(sid), FAILED, message=why, error_type="JOB_SUPERVISOR_ACTOR_DIED")

    def stop(self, sid: str) -> tuple[bool, list[Signal]]:
        """(whether it was stopping anything, what to send)."""
        job = self.get(sid)
        if job.status.is_terminal():
            return False, []
        if job.status is PENDING:
            self._move(job, STOPPED)
            return True, []
        if job.stop_at:
            return True, []  # already stopping: the escalation is on its way
        self.jobs[sid] = replace(job, stop_at=self.clock())
        return True, [Signal(sid, job.pid, signal.SIGTERM)]

    def tick(self) -> list[Signal]:
        """SIGKILL for every stopping job whose SIGTERM has had its time."""
        now = self.clock()
        out = []
        for job in list(self.jobs.values()):
            if job.status is RUNNING and job.stop_at and not job.killed and now - job.stop_at >= self.stop_timeout_s:
                self.jobs[job.submission_id] = replace(job, killed=True)
                out.append(Signal(job.submission_id, job.pid, signal.SIGKILL))
        return out

    def next_tick(self) -> float | None:
        """Seconds until `tick` has something to do (None: nothing is stopping)."""
        now = self.clock()
        due = [j.stop_at + self.stop_timeout_s - now for j in self.jobs.values()
               if j.status is RUNNING and j.stop_at and not j.killed]
        return max(0.0, min(due)) if due else None

    def delete(self, sid: str) -> JobRecord:
        job = self.get(sid)
        if not job.status.is_terminal():
            raise JobError(f"Attempted to delete job with submission_id {sid}, but it is in a non-terminal "
                           f"state {job.status.value}. Stop it first.")
        return self.jobs.pop(sid)

    def restore(self, job: JobRecord) -> None:
        self.jobs[job.submission_id] = job

    def validate(self) -> None:
        for sid, job in self.jobs.items():
            assert sid == job.submission_id
            assert job.status.is_terminal() == bool(job.end_time), job
            assert job.status is not RUNNING or job.pid > 0, job
            assert not job.killed or job.stop_at, job


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
