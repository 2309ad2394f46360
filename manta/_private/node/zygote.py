"""Entry point of the fork server: a process with manta's imports loaded that forks workers.

Spawned by `forkserver.ForkServer` in the agent; see that module for the
pipe protocol.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from manta._private.node.forkserver import _emit, die_with_parent


def main() -> None:
    die_with_parent()
    if os.getppid() == 1:
        sys.exit(0)
    inp = sys.stdin.fileno()
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(inp, 65536)
        if not chunk:
            sys.exit(0)
        buf += chunk
    line, buf = buf.split(b"\n", 1)
    config = json.loads(line)
    # Loaded once here, shared copy-on-write by every forked worker.
    from manta._private.runtime.core import SessionInfo
    from manta._private.runtime.worker_main import worker_main

    session = SessionInfo(
        session_dir=config["session_dir"],
        head_address=config["head_address"],
        agent_address=config["agent_address"],
        token=bytes.fromhex(config["token"]),
        node_id=bytes.fromhex(config["node_id"]),
        node_ip=config.get("node_ip", ""),
    )
    out = sys.stdout.fileno()

    def reap(signum: int, frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _emit(out, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Prestarted workers are forked as soon as the imports are done, before
    # the agent even asks, so the first task rarely waits for a worker.
    for _ in range(int(config.get("prestart", 0))):
        _fork_worker(session, {"worker_id": os.urandom(16).hex(), "env": {}}, out, worker_main)
    warm = False
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            _fork_worker(session, json.loads(line), out, worker_main)
        if not warm and not select.select([inp], [], [], 0)[0]:
            # Idle: load what most workers will import, so later forks get it
            # for free. The first workers were forked before this, to start fast.
            warm = True
            _warm_imports()
        try:
            chunk = os.read(inp, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
    # The agent is gone; workers follow through their parent-death signal.
    sys.exit(0)


def _warm_imports() -> None:
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass


def _fork_worker(session: object, req: dict[str, object], out: int, worker_main: object) -> None:
    worker_id = bytes.fromhex(str(req["worker_id"]))
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        die_with_parent()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(2, 1)
        os.close(devnull)
        env: dict[str, str] = req.get("env") or {}  # type: ignore[assignment]
        os.environ.update(env)
        try:
            worker_main(session, worker_id)  # type: ignore[operator]
        finally:
            os._exit(0)
    _emit(out, {"started": req["worker_id"], "pid": pid})


if __name__ == "__main__":
    main()
