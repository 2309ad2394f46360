"""Entry point of the fork server: a process with manta's imports loaded that forks workers.

Spawned by `forkserver.ForkServer` in the agent; see that module for the
pipe protocol.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable

import msgspec

from manta._private.auth.tls_contexts import TlsContexts, load_contexts
from manta._private.node.cgroups import join as join_cgroups
from manta._private.node.forkserver import die_with_parent, write_message
from manta._private.node.worker_user import become
from manta._private.protocol import messages as m
from manta._private.protocol.framing import FrameDecoder

# Frames from the agent are small: a config, then a worker id and environment each.
MAX_FRAME = 1 << 20

WorkerMain = Callable[[m.SessionInfo, m.Config, bytes, TlsContexts | None, Callable[[], None] | None], None]


def main(fds_fd: int | None = None) -> None:
    """`fds_fd`: the socket the store's descriptor comes on (argv[1] when started afresh)."""
    die_with_parent()
    if os.getppid() == 1:
        sys.exit(0)
    # Loaded once here, shared copy-on-write by every forked worker. Before
    # the config, which comes once the agent is serving: forked from the
    # agent, this process has only the runtime's own modules left to import
    # (30-50 ms), and then forks the first workers as soon as the config
    # comes. After it, that import was on the way to the first result (init
    # 0.488 -> 0.441 s, medians of 20 alternating runs).
    from manta._private.runtime.worker_main import worker_main

    inp = sys.stdin.fileno()
    decoder = FrameDecoder(MAX_FRAME)
    frames: list[bytes | bytearray] = []
    while not frames:
        chunk = os.read(inp, 65536)
        if not chunk:
            sys.exit(0)
        frames = decoder.feed(chunk)
    first = m.decode_fork(frames.pop(0))
    if not isinstance(first, m.ForkConfig):
        raise SystemExit(f"fork server: expected ForkConfig first, got {type(first).__name__}")
    # The store's descriptor, sent with the config: every worker inherits it.
    with socket.socket(fileno=int(sys.argv[1]) if fds_fd is None else fds_fd) as fds:
        _, store, _, _ = socket.recv_fds(fds, 1, 1)
    if not store:
        raise SystemExit("fork server: the agent sent no store descriptor")
    first = msgspec.structs.replace(first, session=msgspec.structs.replace(first.session, store_fd=store[0]))
    out = sys.stdout.fileno()

    def reap(signum: int, frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            write_message(out, m.WorkerReaped(pid=pid, code=os.waitstatus_to_exitcode(status)))

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Prestarted workers are forked as soon as the imports are done, before
    # the agent even asks, so the first task rarely waits for a worker.
    for early in first.prestart:
        _fork_worker(first, early, out, worker_main)
    warm = asked = False
    while True:
        for frame in frames:
            req = m.decode_fork(frame)
            if isinstance(req, m.ForkWorker):
                _fork_worker(first, req, out, worker_main)
                asked = True
        frames = []
        if asked and not warm and not select.select([inp], [], [], 0)[0]:
            # Idle after the node asked for more than its prestarted workers:
            # load what most workers will import, so later forks get it for
            # free. Not before: an idle node whose prestarted workers suffice
            # keeps the 16 MB numpy costs this process (the idle footprint's
            # budget is 200 MB for the whole cluster).
            warm = True
            _warm_imports()
        try:
            chunk = os.read(inp, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        frames = decoder.feed(chunk)
    # The agent is gone; workers follow through their parent-death signal.
    sys.exit(0)


def _warm_imports() -> None:
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass


def _join_cgroups(req: m.ForkWorker) -> None:
    try:
        join_cgroups(req.cgroups)
    except OSError as e:
        print(f"manta worker {req.worker_id.hex()[:8]}: cannot join its cgroups, so it runs without "
              f"limits: {e}", file=sys.stderr)


def _joining(req: m.ForkWorker) -> Callable[[], None] | None:
    """The worker's cgroups being joined on a thread (None: there are none);
    the function returned waits for that, and raises what the join raised
    beyond the OSError it reports (as a join in line would end the worker)."""
    if not req.cgroups:
        return None
    failed: list[BaseException] = []

    def join() -> None:
        try:
            _join_cgroups(req)
        except BaseException as e:  # noqa: BLE001 - raised again in the worker's main thread
            failed.append(e)

    thread = threading.Thread(target=join, name="manta-cgroups", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait


def _fork_worker(config: m.ForkConfig, req: m.ForkWorker, out: int, worker_main: WorkerMain) -> None:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        die_with_parent()
        # A worker that stays the fork server's user joins its cgroups on a
        # thread while it builds its runtime, and waits for that before it
        # connects (so before any task): a move into a cgroup takes 11-21 ms
        # here, mostly waiting in the kernel, on the way to the first result
        # (timed in the worker around the write). One that changes user must
        # join first, while it still has the rights.
        joining = _joining(req) if config.worker_uid < 0 else None
        if joining is None:
            _join_cgroups(req)
        tls = None
        if config.worker_uid >= 0:
            # The node's certificate and key, read while the worker still may
            # (its user cannot read `<session>/tls`): it talks TLS to other
            # nodes' processes as every process of this node does.
            try:
                tls = load_contexts(config.session.session_dir)
            except OSError as e:
                print(f"manta worker {req.worker_id.hex()[:8]}: cannot read the node's TLS certificate: {e}",
                      file=sys.stderr)
                os._exit(1)
            # Last: joining cgroups needed the fork server's rights. Failing
            # to drop them ends the worker rather than run user code as root.
            try:
                become(config.worker_uid, config.worker_gid)
            except OSError as e:
                print(f"manta worker {req.worker_id.hex()[:8]}: cannot become uid {config.worker_uid}: {e}",
                      file=sys.stderr)
                os._exit(1)
            die_with_parent()  # a change of uid clears the parent-death signal
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(2, 1)
        os.close(devnull)
        os.environ.update(req.env)
        code = 0
        try:
            session = msgspec.structs.replace(config.session, credential=req.credential)
            worker_main(session, config.config, req.worker_id, tls, joining)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            # Said, and not code 0: a worker that failed to start (its agent
            # unreachable, say) ended as if it had exited by itself, silently.
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stderr, sys.__stderr__):
                try:
                    if stream is not None:
                        stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)
    write_message(out, m.WorkerForked(worker_id=req.worker_id, pid=pid))


if __name__ == "__main__":
    main()
