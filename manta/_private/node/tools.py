"""The node agent's side of `manta logs`, `manta stack` and `manta memory`:
the node's log files (its own, and each worker's), its workers' Python
stacks, and what its object store holds.

The head asks (these messages come only from the cluster's role, by the
agent's policy): it has checked who asks, and checks each answer's job
against the asker before passing it on. Names from a request are opened
only inside the node's two log directories, never through a link.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import os
import shutil
import signal
import stat
import sys
from typing import TYPE_CHECKING, Any

from manta._private.node.logfiles import open_private, read_chunk
from manta._private.protocol import messages as m
from manta._private.protocol import tool_messages as tm
from manta._private.transport.connection import Connection

if TYPE_CHECKING:
    from manta._private.node.agent import NodeAgent
    from manta._private.node.roster import Proc

HANDLED = (tm.ListLogs, tm.ReadLog, tm.DumpStacks, tm.ListStore)

WORKERS = tm.WORKER_LOG_DIR + "/"
# How long a worker has to write its faulthandler dump after the signal.
STACK_WAIT_S = 3.0


class NodeTools:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.log_dir = os.path.join(agent.session_dir, "logs")
        self.worker_dir = os.path.join(agent.session_dir, tm.WORKER_LOG_DIR)
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, conn: Connection, msg: Any) -> None:
        t = type(msg)
        if t is tm.ListLogs:
            conn.reply(msg, tm.LogFiles(files=self.list_logs(msg.glob)))
        elif t is tm.ReadLog:
            self._spawn(self._read(conn, msg))
        elif t is tm.DumpStacks:
            self._spawn(self._stacks(conn, msg))
        elif t is tm.ListStore:
            conn.reply(msg, tm.StoreReports(nodes=[self.store_report()]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- logs ------------------------------------------------------------------

    def _procs(self) -> dict[bytes, Proc]:
        roster = self.agent.roster
        return {**roster.exited, **roster.alive}

    def list_logs(self, glob: str = "") -> list[tm.LogFile]:
        node_id = self.agent.node_id
        procs = self._procs()
        out: list[tm.LogFile] = []
        for directory, prefix in ((self.log_dir, ""), (self.worker_dir, WORKERS)):
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for name in names:
                if prefix and ".stack" in name:
                    continue  # stack dumps are `manta stack`'s
                try:
                    st = os.stat(os.path.join(directory, name), follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = prefix + name
                if glob and not fnmatch.fnmatch(rel, glob) and not fnmatch.fnmatch(name, glob):
                    continue
                worker_id, pid = _worker_of(name) if prefix else (b"", 0)
                proc = procs.get(worker_id)
                out.append(tm.LogFile(node_id=node_id, name=rel, size=st.st_size, mtime=st.st_mtime,
                                      job_id=proc.job_id if proc else 0, worker_id=worker_id, pid=pid))
        return out

    def path_of(self, name: str) -> str:
        """The file `name` names inside the node's log directories; ValueError for any other."""
        directory, rel = (self.worker_dir, name[len(WORKERS):]) if name.startswith(WORKERS) else (self.log_dir, name)
        if not rel or "/" in rel or "\\" in rel or rel in (".", "..") or "\0" in rel:
            raise ValueError(f"{name!r} is not a log file's name (see `manta logs` for the list)")
        return os.path.join(directory, rel)

    def _worker_file(self, worker_id: bytes, pid: int, err: bool) -> str:
        procs = self._procs()
        if not worker_id and pid:
            found = [p for p in procs.values() if p.pid == pid and not p.driver]
            if not found:
                raise FileNotFoundError(f"no worker with pid {pid} on node {self.agent.node_id.hex()}")
            worker_id = found[-1].worker_id
        proc = procs.get(worker_id)
        pid = pid or (proc.pid if proc else 0)
        suffix = "err" if err else "out"
        if pid:
            name = tm.worker_log_name(worker_id, pid, suffix)
        else:
            head = f"worker-{worker_id.hex()}-"
            names = [n for n in _listdir(self.worker_dir) if n.startswith(head) and n.endswith("." + suffix)]
            if not names:
                raise FileNotFoundError(f"worker {worker_id.hex()} wrote no {suffix} file on this node")
            name = names[0]
        return WORKERS + name

    async def _read(self, conn: Connection, msg: tm.ReadLog) -> None:
        try:
            answer = await self.read(msg)
        except FileNotFoundError as e:
            conn.reply_error(msg, m.ErrorKind.KEY, str(e))
        except (ValueError, OSError) as e:
            conn.reply_error(msg, m.ErrorKind.VALUE, str(e))
        else:
            if not conn.closed:
                conn.reply(msg, answer)

    async def read(self, msg: tm.ReadLog) -> tm.LogChunk:
        # Names and jobs from the roster here, on the agent's loop; the file's
        # bytes on a thread (a task's lines may take a scan of 64 MiB).
        if msg.name:
            name = msg.name
        elif msg.worker_id or msg.pid:
            name = self._worker_file(msg.worker_id, msg.pid, msg.err)
        else:
            raise ValueError("name a log file, a worker, an actor or a task")
        path = self.path_of(name)
        job_id = self._job_of(name)
        node_id = self.agent.node_id
        read = functools.partial(read_chunk, path, offset=msg.offset, inode=msg.inode, tail=msg.tail,
                                 max_bytes=msg.max_bytes, task_id=msg.task_id.hex() if msg.task_id else "",
                                 in_task=msg.in_task)
        try:
            chunk = await asyncio.get_running_loop().run_in_executor(None, read)
        except FileNotFoundError:
            if name.startswith(WORKERS) and (msg.task_id or msg.worker_id or msg.pid):
                # A worker of this node that printed nothing to this stream (yet) has no file for it:
                # nothing to show, and a follower reads it from its start once it appears.
                return tm.LogChunk(node_id=node_id, name=name, data=b"", offset=0, inode=0, job_id=job_id)
            raise FileNotFoundError(f"no log file {name!r} on node {node_id.hex()}") from None
        return tm.LogChunk(node_id=node_id, name=name, data=chunk.data, offset=chunk.offset, inode=chunk.inode,
                           rotated=chunk.rotated, in_task=chunk.in_task, more=chunk.more, job_id=job_id)

    def _job_of(self, name: str) -> int:
        if not name.startswith(WORKERS):
            return 0
        proc = self._procs().get(_worker_of(name[len(WORKERS):])[0])
        return proc.job_id if proc else 0

    # -- stacks ----------------------------------------------------------------

    async def _stacks(self, conn: Connection, msg: tm.DumpStacks) -> None:
        alive = [p for p in self.agent.roster.alive.values() if not p.driver and p.pid]
        if msg.worker_id:
            targets = [p for p in alive if p.worker_id == msg.worker_id]
        elif msg.pid:
            targets = [p for p in alive if p.pid == msg.pid]
        else:
            targets = alive
        if (msg.worker_id or msg.pid) and not targets:
            conn.reply_error(msg, m.ErrorKind.KEY, f"no live worker {msg.worker_id.hex() or msg.pid} on node "
                                                    f"{self.agent.node_id.hex()}")
            return
        stacks = await asyncio.gather(*(self._stack(p, msg.native, msg.method, msg.timeout_s * 0.8) for p in targets))
        if not conn.closed:
            conn.reply(msg, tm.Stacks(stacks=list(stacks)))

    async def _stack(self, p: Proc, native: bool, method: str, timeout: float) -> tm.StackRecord:
        def record(text: str, method: str, error: str = "") -> tm.StackRecord:
            return tm.StackRecord(node_id=self.agent.node_id, pid=p.pid, worker_id=p.worker_id, job_id=p.job_id,
                                  text=text, method=method, error=error)

        spy = py_spy() if method != "faulthandler" else ""
        why = ""
        if method == "py-spy" and not spy:
            return record("", "py-spy", "py-spy is not installed on this node")
        if spy:
            text, why = await _run([spy, "dump", "--pid", str(p.pid), *(["--native"] if native else [])], timeout)
            if not why and not text.strip():
                why = "py-spy printed no stack"
            if not why or method == "py-spy":
                return record(text, "py-spy", why)
        text, error = await self._faulthandler(p)
        if error and why:
            error = f"py-spy: {why}; faulthandler: {error}"
        return record(text, "faulthandler", error)

    async def _faulthandler(self, p: Proc) -> tuple[str, str]:
        """The worker's faulthandler dump (runtime/worker_logs.py), asked for by signal.
        The file is the worker's to replace: opened as logs are, never through a link."""
        path = os.path.join(self.worker_dir, tm.worker_log_name(p.worker_id, p.pid, "stack"))
        try:
            fd = open_private(path)
        except (OSError, ValueError) as e:
            return "", f"cannot read the worker's stack file: {e}"
        try:
            start = os.fstat(fd).st_size
            try:
                os.kill(p.pid, signal.SIGUSR1)
            except OSError as e:
                return "", f"cannot signal pid {p.pid}: {e}"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STACK_WAIT_S
            size, still = start, 0
            # Done when the file grew and then stopped growing for a few polls.
            while loop.time() < deadline:
                await asyncio.sleep(0.02)
                now = os.fstat(fd).st_size
                still = still + 1 if now == size and now > start else 0
                size = now
                if still >= 3:
                    break
            if size <= start:
                return "", f"pid {p.pid} wrote no stack within {STACK_WAIT_S:g} s"
            return os.pread(fd, min(size - start, 4 << 20), start).decode("utf-8", "replace"), ""
        finally:
            os.close(fd)

    # -- the object store --------------------------------------------------------

    def store_report(self) -> tm.StoreReport:
        agent = self.agent
        store = agent.store
        entries = [
            tm.StoreEntry(object_id=oid, size=o.size, spilled=False, pins=o.pins, copy=oid in store.copies,
                          sealed=o.sealed)
            for oid, o in store.objects.items() if not o.freed
        ]
        entries += [tm.StoreEntry(object_id=oid, size=size, spilled=True) for oid, size in store.spilled.items()]
        return tm.StoreReport(node_id=agent.node_id, ip=agent.node_ip or "127.0.0.1", capacity=store.capacity,
                              used=store.used, spilled_bytes=sum(store.spilled.values()), entries=entries)


def py_spy() -> str:
    """py-spy's program, if installed (on PATH or beside this Python)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable)) or ""


async def _run(argv: list[str], timeout: float) -> tuple[str, str]:
    """(its output, "") or ("", why it failed)."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        return "", str(e)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "", f"no answer in {timeout:g} s"
    if proc.returncode != 0:
        return "", (err or out).decode("utf-8", "replace").strip()[-500:] or f"exit code {proc.returncode}"
    return out.decode("utf-8", "replace"), ""


def _worker_of(name: str) -> tuple[bytes, int]:
    """'worker-<hex id>-<pid>.out' (or .out.1, rotated) -> (id, pid); (b"", 0) for any other name."""
    stem = name.split(".", 1)[0]
    parts = stem.split("-")
    if len(parts) != 3 or parts[0] != "worker":
        return b"", 0
    try:
        return bytes.fromhex(parts[1]), int(parts[2])
    except ValueError:
        return b"", 0


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []
