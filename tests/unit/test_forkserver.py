"""The agent's fork server forked from the agent (`ForkServer.forked`).

The child is a copy of the agent, and its workers run user code: it must
start as a fork server started afresh would, with nothing of the agent's
but its imports. A fake `serve` reports what the child sees, over the pipe
the real one answers the agent on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import pytest

from manta._private.node.forkserver import SECRET_VARS, ZYGOTE_MAIN, ForkServer


def _report(fds_fd: int) -> None:
    # Runs in the forked child, as the fork server's main would.
    seen = {
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "fds_fd": fds_fd,
        "env": dict(os.environ),
        "argv": sys.argv,
        "cmdline": open("/proc/self/cmdline", "rb").read().rstrip(b"\0").split(b"\0")[:4],
        "handlers": len(logging.getLogger().handlers),
        "level": logging.getLogger().level,
        "ppid": os.getppid(),
    }
    os.write(1, json.dumps(seen, default=lambda b: b.decode()).encode() + b"\n")
    os.read(0, 1)  # until the agent's end closes


def _child_sees(server: ForkServer) -> dict:
    line = server.stdout.readline()
    return json.loads(line)


def test_forked_server_starts_clean(tmp_path, monkeypatch):
    for var in SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MANTA_TEST_VISIBLE", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    leaked = os.open(os.devnull, os.O_RDONLY)  # a descriptor of the agent's, as its ready pipe is
    logging.getLogger().addHandler(logging.NullHandler())
    log = tmp_path / "workers.log"
    try:
        server = ForkServer.forked(str(log), _report)
    finally:
        os.close(leaked)
    try:
        seen = _child_sees(server)
        assert seen["ppid"] == os.getpid()
        # stdin, stdout, stderr and the descriptor socket only: none of the agent's.
        # (4 is listdir's own, open while it reads the directory.)
        assert seen["fds"] == [0, 1, 2, 3, 4], seen["fds"]
        assert seen["fds_fd"] == 3
        assert seen["env"]["MANTA_TEST_VISIBLE"] == "1"
        assert seen["env"]["OMP_NUM_THREADS"] == "1"
        # As a new interpreter's: the agent's logging is not the workers'.
        assert seen["handlers"] == 0 and seen["level"] == logging.WARNING
        assert seen["argv"][1:] == ["3"]
        with open("/proc/self/cmdline", "rb") as f:
            room = len(f.read())
        title = [sys.executable, "-m", ZYGOTE_MAIN, "3"]
        if room >= len("\0".join(title)) + 1:  # an agent's command line always has room
            assert seen["cmdline"][1:4] == title[1:]
        else:  # this test's own is too short to write over: left as it was
            with open("/proc/self/cmdline", "rb") as f:
                assert seen["cmdline"] == [a.decode() for a in f.read().rstrip(b"\0").split(b"\0")[:4]]
    finally:
        server.kill()
    assert not os.path.exists(f"/proc/{server.pid}") or open(f"/proc/{server.pid}/stat").read().split()[2] != "Z"


def test_a_secret_in_the_environment_means_a_new_interpreter(tmp_path, monkeypatch):
    # Unset in a forked child, the token would still be in the memory it copied.
    monkeypatch.setenv("MANTA_TOKEN", "0" * 64)
    server = ForkServer.forked(str(tmp_path / "workers.log"), _report)
    try:
        deadline = time.monotonic() + 10
        argv = [b""]
        while argv == [b""] and time.monotonic() < deadline:  # empty for a moment after the exec
            with open(f"/proc/{server.pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        assert argv[1:3] == [b"-m", ZYGOTE_MAIN.encode()]
        with open(f"/proc/{server.pid}/environ", "rb") as f:
            assert b"MANTA_TOKEN" not in f.read()
    finally:
        server.kill()


@pytest.mark.parametrize("code", [0, 3])
def test_the_childs_exit_ends_it_without_running_the_parents_code(tmp_path, code):
    # serve's return (or SystemExit) ends the child there: it never goes back
    # into the agent's main, nor runs the agent's atexit handlers.
    def serve(fds_fd: int) -> None:
        os.write(1, b"up\n")
        if code:
            raise SystemExit(code)

    server = ForkServer.forked(str(tmp_path / "workers.log"), serve)
    assert server.stdout.readline() == b"up\n"
    _, status = os.waitpid(server.pid, 0)
    assert os.waitstatus_to_exitcode(status) == code
    server.pid = 0
    server.kill()


def test_a_worker_joins_its_cgroups_on_a_thread(tmp_path):
    # zygote._joining: the move is written while the worker builds its
    # runtime; worker_main waits for it (before_start) before it connects.
    from manta._private.node import zygote
    from manta._private.protocol import messages as m

    dirs = [tmp_path / "memory", tmp_path / "cpu"]
    for d in dirs:
        d.mkdir()
        (d / "cgroup.procs").write_text("")
    req = m.ForkWorker(worker_id=b"w" * 16, cgroups=[str(d) for d in dirs])
    wait = zygote._joining(req)
    assert wait is not None
    wait()
    assert [(d / "cgroup.procs").read_text() for d in dirs] == [str(os.getpid())] * 2
    assert zygote._joining(m.ForkWorker(worker_id=b"w" * 16, cgroups=[])) is None


def test_a_join_that_fails_unexpectedly_ends_the_worker(tmp_path, monkeypatch):
    # As the join in line did: only an OSError is reported and lived with.
    from manta._private.node import zygote
    from manta._private.protocol import messages as m

    def broken(dirs):
        raise RuntimeError("cgroup join broke")

    monkeypatch.setattr(zygote, "join_cgroups", broken)
    wait = zygote._joining(m.ForkWorker(worker_id=b"w" * 16, cgroups=[str(tmp_path)]))
    with pytest.raises(RuntimeError, match="cgroup join broke"):
        wait()
