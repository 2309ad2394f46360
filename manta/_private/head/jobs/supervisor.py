"""The I/O of the head's jobs: entrypoint processes, their logs, their
resources and their records in the head's storage (`table.py` decides).

Each job has a directory `<session>/jobs/<submission_id>/` (0700) with the
runner's spec, the unpacked working_dir and, when it ends, the exit code;
its output goes to `<session>/logs/job-driver-<submission_id>.log` (Ray's
name), rotated at `Config.job_log_bytes` (one older part kept).

The entrypoint runs on the head's machine as a process group of its own,
in the environment of its submitter's principal: MANTA_ADDRESS/RAY_ADDRESS
name this cluster and MANTA_TOKEN holds the submitter's token (the head
derives a person's token from its id; the owner's is `local-admin`), so a
driver it starts acts in the submitter's namespaces and role, never with
the cluster's credential. MANTA_JOB_CONFIG carries the job's namespace and
runtime_env to `manta.init()`.

Entrypoint resources (`entrypoint_num_cpus` etc.) are reserved as a
placement group of one bundle before the job starts (it is PENDING until
then) and released when it ends; the bundle may be on any node, while the
process itself runs on the head's machine (Ray runs it where the resources
are).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from manta._private.auth import os_user, tls_contexts
from manta._private.auth.credentials import LOCAL_ADMIN, AuthFailed
from manta._private.control import placement_groups as pgs
from manta._private.control.placement_groups import PGEntry
from manta._private.head.jobs import as_user
from manta._private.head.jobs.table import PENDING, RUNNING, JobError, JobRecord, JobTable, Signal
from manta._private.head.storage import decode, encode
from manta._private.ids import job_hex
from manta._private.protocol import messages as m
from manta._private.protocol.identity import Principal, Role

if TYPE_CHECKING:
    from manta._private.head.head import Head

log = logging.getLogger(__name__)

TABLE = "submissions"
PACKAGE_TABLE = "job_packages"
PACKAGES_NAMESPACE = "_manta_packages"  # the KV namespace drivers store runtime_env packages in
PG_NAMESPACE = "_manta_jobs"
POLL_S = 0.1
# Never handed to an entrypoint: the head's own secrets and credentials.
_SCRUBBED = ("MANTA_TOKEN", "MANTA_REDIS_PASSWORD", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MANTA_ADDRESS",
             "RAY_ADDRESS", "MANTA_JOB_CONFIG")


def may_see(p: Principal, job: JobRecord) -> bool:
    """Admins and tokens of every namespace see every job; others, their namespaces' and their own."""
    return (p.role >= Role.ADMIN or not p.namespaces or job.namespace in p.namespaces
            or (bool(p.token_id) and p.token_id == job.token_id))


_RAY_PKG = re.compile(r"^_ray_pkg_[0-9a-f]{1,64}\.zip$")


def package_ref(uri: str) -> tuple[str, str]:
    """What a package URI names: ("sha256", digest) for manta's `manta://_manta_pkg_<sha256>.zip`,
    ("ray", name) for Ray's `gcs://_ray_pkg_<hash>.zip`, whose hash is Ray's own (not of the zip)."""
    name = uri.rpartition("/")[2]
    if name.startswith("_manta_pkg_") and name.endswith(".zip"):
        digest = name[len("_manta_pkg_"):-4]
        if len(digest) == 64 and not digest.strip("0123456789abcdef"):
            return "sha256", digest
    if _RAY_PKG.match(name):
        return "ray", name
    raise JobError(f"runtime_env working_dir {uri!r} is not an uploaded package: upload the directory first "
                   f"(the client does, given a local path), e.g. manta://_manta_pkg_<sha256>.zip")


def package_digest(uri: str) -> str:
    """The sha256 of a manta package URI (JobError for any other)."""
    kind, digest = package_ref(uri)
    if kind != "sha256":
        raise JobError(f"internal error: {uri!r} was not resolved to its content hash")
    return digest


def package_uri(digest: str) -> str:
    return f"manta://_manta_pkg_{digest}.zip"


def ray_package_key(p: Principal, name: str) -> bytes:
    """Under what a Ray-named package's content hash is kept: the uploader's token and the
    name, since Ray's names are not hashes of the bytes (so no one can plant a package under
    a name another token's client would trust). Kept by the job manager, out of drivers' KV."""
    return f"{p.token_id or LOCAL_ADMIN}/{name}".encode()


class JobManager:
    def __init__(self, head: Head, session_dir: str, clock: Any = time.time) -> None:
        self.head = head
        config = head.config
        self.table = JobTable(clock, stop_timeout_s=config.job_stop_timeout_s, max_jobs=config.max_jobs)
        self.max_log_bytes = config.job_log_bytes
        self.root = os.path.join(session_dir, "jobs")
        self.log_dir = os.path.join(session_dir, "logs")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.reservations: dict[str, bytes] = {}
        self.ray_packages: dict[bytes, str] = {}  # ray_package_key -> sha256 of the bytes
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        # Entrypoints run as the worker user, as tasks do (as_user.py).
        self.user = os_user.resolve(config.worker_user, os.geteuid()) if config.worker_user else None

    # -- paths --------------------------------------------------------------

    def job_dir(self, sid: str) -> str:
        return os.path.join(self.root, sid)

    def log_path(self, sid: str) -> str:
        return os.path.join(self.log_dir, f"job-driver-{sid}.log")

    # -- requests -----------------------------------------------------------

    def submit(self, p: Principal, job: JobRecord, peer: str = "") -> JobRecord:
        """`job` as checked by the route (its fields' types); here what depends on who asks."""
        namespace = job.namespace
        if not namespace and p.namespaces and p.role < Role.ADMIN:
            namespace = p.namespaces[0]  # a namespace's token: its jobs run there
        if namespace and not p.in_namespace(namespace):
            raise JobError(f"{p.describe()} may not submit jobs in namespace {namespace!r} "
                           f"(it may act in {', '.join(map(repr, p.namespaces))})", 403)
        wd = job.runtime_env.get("working_dir")
        if wd:
            digest = self.resolve(p, str(wd))
            if digest is None:
                raise JobError(f"runtime_env working_dir {wd!r} was not uploaded to this cluster", 400)
            job = replace(job, runtime_env={**job.runtime_env, "working_dir": package_uri(digest)})
        job = replace(job, namespace=namespace, token_id=p.token_id or LOCAL_ADMIN, submitter=p.name)
        rec = self.table.submit(job)
        while self.table.forgotten:
            self._remove(self.table.forgotten.pop())
        self._save(rec)
        self.head.access.audit.record(p, "job.submit", target=rec.submission_id, namespace=namespace, peer=peer,
                                      detail=rec.entrypoint[:200])
        self._spawn(self._launch(rec.submission_id))
        return rec

    def resolve(self, p: Principal, uri: str) -> str | None:
        """The content hash of the package `uri` names for `p`, if it is stored."""
        kind, name = package_ref(uri)
        if kind == "ray":
            found = self.ray_packages.get(ray_package_key(p, name))
            if found is None:
                return None
            name = found
        return name if (PACKAGES_NAMESPACE, name.encode()) in self.head.kv else None

    def name_package(self, p: Principal, name: str, digest: str) -> None:
        key = ray_package_key(p, name)
        self.ray_packages[key] = digest
        self.head.storage.put(PACKAGE_TABLE, key, digest.encode())

    def driver_of(self, job: JobRecord) -> tuple[int, int, str] | None:
        """(job id, pid, ip) of the newest driver that said it runs this submission; only a driver
        of the submitter's own token counts, so no other job can pass itself off as this one's."""
        found = None
        for d in self.head.state_queries.job_details.values():
            if d.submission_id != job.submission_id:
                continue
            driver = self.head.jobs.get(d.job_id)
            if driver is not None and driver.token_id == job.token_id and (found is None or d.job_id > found[0]):
                found = (d.job_id, driver.pid, d.ip)
        return found

    def visible(self, p: Principal, sid: str) -> JobRecord:
        """The job of this submission id (or its driver's job id, as Ray finds jobs), if `p` may see it."""
        if sid not in self.table.jobs:
            for candidate in self.table.jobs.values():
                driver = self.driver_of(candidate)
                if driver is not None and job_hex(driver[0]) == sid.lower():
                    sid = candidate.submission_id
                    break
        job = self.table.get(sid)
        if not may_see(p, job):
            raise JobError(f"Job {sid} does not exist", 404)  # as if absent: names tell nothing
        return job

    def list_for(self, p: Principal) -> list[JobRecord]:
        return [j for j in self.table.jobs.values() if may_see(p, j)]

    def _may_act(self, p: Principal, job: JobRecord, what: str) -> None:
        if p.role < Role.SUBMIT:
            raise JobError(f"{p.describe()} may not {what} jobs: that needs the submit role", 403)
        if p.role < Role.ADMIN and p.token_id != job.token_id and not (p.namespaces and job.namespace in p.namespaces):
            raise JobError(f"{p.describe()} may not {what} job {job.submission_id}, which another token submitted",
                           403)

    def stop(self, p: Principal, sid: str, peer: str = "") -> bool:
        job = self.visible(p, sid)
        sid = job.submission_id
        self._may_act(p, job, "stop")
        stopped, signals = self.table.stop(sid)
        self.head.access.audit.record(p, "job.stop", target=sid, namespace=job.namespace, peer=peer,
                                      detail="" if stopped else "it had ended already")
        self._after(sid)
        self._send(signals)
        return stopped

    def delete(self, p: Principal, sid: str, peer: str = "") -> bool:
        job = self.visible(p, sid)
        sid = job.submission_id
        self._may_act(p, job, "delete")
        self.table.delete(sid)
        self._remove(sid)
        self.head.access.audit.record(p, "job.delete", target=sid, namespace=job.namespace, peer=peer)
        return True

    def _remove(self, sid: str) -> None:
        """An ended job's stored record, logs and directory."""
        self.head.storage.delete(TABLE, sid.encode())
        for path in (self.log_path(sid), self.log_path(sid) + ".1"):
            try:
                os.unlink(path)
            except OSError:
                pass
        shutil.rmtree(self.job_dir(sid), ignore_errors=True)

    def logs(self, sid: str, limit: int = 0) -> str:
        parts = []
        for path in (self.log_path(sid) + ".1", self.log_path(sid)):
            try:
                with open(path, "rb") as f:
                    parts.append(f.read())
            except OSError:
                pass
        data = b"".join(parts)
        if limit and len(data) > limit:
            data = data[-limit:]
        return data.decode(errors="replace")

    async def tail(self, sid: str) -> AsyncIterator[str]:
        """The log as it grows, from its start, until the job has ended and all of it was sent.
        Follows rotation: when the file is replaced, the rest of the old one, then the new one."""
        path = self.log_path(sid)
        f = None
        ino = -1
        while True:
            ended = sid not in self.table.jobs or self.table.jobs[sid].status.is_terminal()
            if f is None:
                try:
                    f = open(path, "rb")
                    ino = os.fstat(f.fileno()).st_ino
                except OSError:
                    f = None
            if f is not None:
                chunk = f.read(65536)
                if chunk:
                    yield chunk.decode(errors="replace")
                    continue
                try:
                    if os.stat(path).st_ino != ino:  # rotated: start the new file
                        f.close()
                        f = None
                        continue
                except OSError:
                    pass
            if ended:
                break
            await asyncio.sleep(POLL_S)
        if f is not None:
            f.close()

    # -- running ------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _save(self, job: JobRecord) -> None:
        self.head.storage.put(TABLE, job.submission_id.encode(), encode(job))

    async def _launch(self, sid: str) -> None:
        try:
            needs = self.table.get(sid).needs()
            if needs and not await self._reserve(sid, needs):
                return
            job = self.table.get(sid)
            if job.status.is_terminal():  # stopped while it waited
                self._release(sid)
                return
            proc = self._start(job)
        except Exception as e:  # noqa: BLE001 - the job fails with the reason; the head carries on
            log.exception("job %s could not start", sid)
            if sid in self.table.jobs and not self.table.jobs[sid].status.is_terminal():
                self._save(self.table.could_not_start(sid, f"Job could not start: {e}"))
            self._release(sid)
            return
        self.procs[sid] = proc
        self._save(self.table.started(sid, proc.pid, _started(proc.pid)))
        await self._watch(sid, proc.pid)

    async def _reserve(self, sid: str, needs: dict[str, float]) -> bool:
        """Holds the entrypoint's resources as a one-bundle placement group; False if the job ended first."""
        from manta._private.ids import new_placement_group_id

        head = self.head
        pg_id = new_placement_group_id()
        spec = m.PlacementGroupSpec(pg_id=pg_id, bundles=[needs], strategy="PACK", name=f"job-{sid}",
                                    namespace=PG_NAMESPACE, detached=True)
        head.pgs[pg_id] = pg = PGEntry(spec)
        self.reservations[sid] = pg_id
        head._save_pg(pg)
        head._place_pending_pgs()
        while pg.state is not pgs.CREATED:
            job = self.table.jobs.get(sid)
            if job is None or job.status.is_terminal() or pg.state is pgs.REMOVED:
                self._release(sid)
                return False
            await asyncio.sleep(POLL_S)
        return True

    def _release(self, sid: str) -> None:
        pg_id = self.reservations.pop(sid, None)
        pg = self.head.pgs.get(pg_id) if pg_id else None
        if pg is not None:
            self.head._remove_pg(pg, f"job {sid} ended")

    def _start(self, job: JobRecord) -> subprocess.Popen[bytes]:
        sid = job.submission_id
        try:  # a token revoked or expired since the submission starts nothing
            self.head.access.tokens.resolve(job.token_id or LOCAL_ADMIN)
        except AuthFailed as e:
            raise JobError(f"its submitter's token is no longer valid: {e}") from None
        jdir = self.job_dir(sid)
        os.makedirs(jdir, mode=0o700, exist_ok=True)
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        driver_env = {k: v for k, v in job.runtime_env.items() if k not in ("working_dir",)}
        cwd = jdir
        wd = job.runtime_env.get("working_dir")
        if wd:
            cwd = self._unpack(package_digest(str(wd)), os.path.join(jdir, "working_dir"))
            driver_env["working_dir"] = cwd  # the driver's tasks get it too (stored again under the same hash)
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(job.runtime_env.get("env_vars") or {})
        address = self._address()
        token = self.head.access.keys.token(job.token_id or LOCAL_ADMIN)
        env.update(MANTA_ADDRESS=address, RAY_ADDRESS=address, MANTA_TOKEN=token,
                   MANTA_JOB_CONFIG=json.dumps({"namespace": job.namespace, "runtime_env": driver_env,
                                                "submission_id": sid, "metadata": job.metadata}))
        if cwd != jdir:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [cwd, env.get("PYTHONPATH", "")]))
        spec: dict[str, Any] = {"entrypoint": job.entrypoint, "cwd": cwd, "log": self.log_path(sid),
                                "max_log_bytes": self.max_log_bytes}
        fds: list[int] = []
        try:
            if self.user is not None:
                spec["cwd"] = cwd = self._as_user(jdir, cwd, address, env, fds)
                spec.update(user=[self.user.uid, self.user.gid], fds=fds)
            fd = os.open(os.path.join(jdir, "spec.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(spec, f)
            return subprocess.Popen([sys.executable, "-m", "manta._private.head.jobs.runner", jdir], env=env,
                                    cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _as_user(self, jdir: str, cwd: str, address: str, env: dict[str, str], fds: list[int]) -> str:
        """Readies the entrypoint to run as the worker user: its directory, the
        descriptors it is handed (into `fds`) and their names in `env`; its cwd."""
        assert self.user is not None
        work = cwd if cwd != jdir else os.path.join(jdir, "work")
        as_user.open_dirs(self.root, jdir, work, self.user)
        local = self.head.local_agent
        fds.append(as_user.open_store(local))
        tls_dir = os.path.join(self.head.session_dir, "tls")
        if tls_contexts.has_material(tls_dir):
            fds.append(tls_contexts.sealed_material(tls_contexts.load_material(tls_dir)))
        env.update(as_user.node_env(self.head.session_dir, address, as_user.node_ip(local), fds[0],
                                    fds[1] if len(fds) > 1 else -1))
        env.update(HOME=work, USER=self.user.name, LOGNAME=self.user.name)
        return work

    def _address(self) -> str:
        for a in self.head.addresses:
            if a.startswith("tcp:"):
                return a[len("tcp:"):]
        return self.head.addresses[0]

    def _unpack(self, digest: str, target: str) -> str:
        data = self.head.kv.get((PACKAGES_NAMESPACE, digest.encode()))
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise JobError(f"the runtime_env package {digest} is missing or corrupt")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name in zf.namelist():  # nothing outside the target, whatever the zip says
                if name.startswith("/") or ".." in name.split("/"):
                    raise JobError(f"the runtime_env package {digest} holds a path outside it: {name!r}")
            zf.extractall(target)
        return target

    async def _watch(self, sid: str, pid: int) -> None:
        """Until the runner ends (a child of this head, or one a previous head started)."""
        exit_file = os.path.join(self.job_dir(sid), "exit")
        while True:
            proc = self.procs.get(sid)
            done = proc.poll() is not None if proc is not None else not _alive(pid)
            if done or os.path.exists(exit_file):
                if proc is not None:
                    proc.wait()
                break
            await asyncio.sleep(POLL_S)
        code: int | None = None
        try:
            with open(exit_file) as f:
                code = int(json.load(f)["code"])
        except (OSError, ValueError, KeyError, TypeError):
            proc = self.procs.get(sid)
            if proc is not None and proc.returncode is not None and proc.returncode < 0:
                code = proc.returncode  # the runner itself was killed (SIGKILL after a stop)
        self.procs.pop(sid, None)
        self._end_group(pid)
        self._release(sid)
        job = self.table.jobs.get(sid)
        if job is not None and not job.status.is_terminal():
            self._save(self.table.exited(sid, code))
            self.head.access.event("job.exit", sid, job.namespace, detail=f"exit code {code}")

    def _end_group(self, pid: int) -> None:
        """Whatever the entrypoint left behind in its group goes with it (Ray's supervisor does the same)."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _send(self, signals: list[Signal]) -> None:
        for s in signals:
            try:
                os.killpg(s.pid, s.sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _after(self, sid: str) -> None:
        job = self.table.jobs.get(sid)
        if job is not None:
            self._save(job)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.table.next_tick()
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_tick)

    def _on_tick(self) -> None:
        self._timer = None
        signals = self.table.tick()
        for s in signals:
            self._after(s.submission_id)
        self._send(signals)
        self._arm()

    # -- a restarted head ---------------------------------------------------

    def restore(self) -> None:
        """The records a previous head on this storage left; its running jobs re-attached if their
        runners are still there, else FAILED."""
        for key, value in self.head.storage.load_table(PACKAGE_TABLE).items():
            self.ray_packages[key] = value.decode()
        for data in self.head.storage.load_table(TABLE).values():
            try:
                job = decode(JobRecord, data)
            except Exception:  # noqa: BLE001 - one unreadable record must not stop the head
                log.warning("a stored job record could not be read; it is left out")
                continue
            self.table.restore(job)
            if job.status.is_terminal():
                continue
            sid = job.submission_id
            for pg in self.head.pgs.values():  # a reservation the previous head made
                if pg.spec.namespace == PG_NAMESPACE and pg.spec.name == f"job-{sid}" and pg.state is not pgs.REMOVED:
                    self.reservations[sid] = pg.spec.pg_id
            if job.status is PENDING:
                self._release(sid)
                self._spawn(self._launch(sid))
            elif _alive(job.pid) and abs(_started(job.pid) - job.pid_started) < 1.0:
                log.info("job %s: its entrypoint (pid %d) is still running; watching it again", sid, job.pid)
                self._spawn(self._watch(sid, job.pid))
            elif os.path.exists(os.path.join(self.job_dir(sid), "exit")):
                self._spawn(self._watch(sid, job.pid))  # it ended while the head was away
            else:
                self._save(self.table.lost(sid, "The head restarted and the job's entrypoint process was gone; "
                                                "it cannot be re-attached."))
                self._release(sid)
        if any(j.stop_at and not j.status.is_terminal() for j in self.table.jobs.values()):
            self._arm()

    async def close(self) -> None:
        """The head is stopping: its jobs stop with it (Ray's do too), SIGTERM then SIGKILL."""
        running = [j for j in self.table.jobs.values() if j.status is RUNNING]
        self._send([Signal(j.submission_id, j.pid, signal.SIGTERM) for j in running])
        deadline = time.monotonic() + self.table.stop_timeout_s
        while any(_alive(j.pid) for j in running) and time.monotonic() < deadline:
            for proc in self.procs.values():
                proc.poll()  # reaps those that ended, so they stop counting as alive
            await asyncio.sleep(POLL_S)
        for j in running:
            self._end_group(j.pid)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        for task in list(self._tasks):
            task.cancel()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _started(pid: int) -> float:
    """When `pid` started, in clock ticks since boot (0 if it is gone): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return float(f.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0

