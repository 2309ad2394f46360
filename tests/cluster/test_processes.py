"""manta-only checks on real processes: cleanup, authentication, store limits.

These are about manta's own promises (no leaks, token on every connection),
so they do not run against Ray.
"""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from tests_support import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "manta", reason="manta-specific process checks")

psutil = pytest.importorskip("psutil")


def _descendants(pid):
    # A few snapshots, unioned: one scan of /proc can miss a process.
    seen = set()
    for _ in range(3):
        try:
            seen.update(p.pid for p in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return sorted(seen)


def _wait_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if alive:
            time.sleep(0.05)
    return alive


def _memfd_holders(pids):
    holders = []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if "manta-store" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                        holders.append(pid)
                except OSError:
                    pass
        except OSError:
            pass
    return holders


DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import manta
    info = manta.init(num_cpus=2)

    @manta.remote
    def f(x):
        return x * 2

    @manta.remote
    class A:
        def ping(self):
            return os.getpid()

    a = A.remote()
    assert manta.get([f.remote(i) for i in range(4)]) == [0, 2, 4, 6]
    manta.get(a.ping.remote())
    big = manta.put(b"x" * 5_000_000)
    print(info["session_dir"], flush=True)
    print("READY", flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
    if sys.argv[1] == "exit":
        manta.shutdown()
    print("DONE", flush=True)
    """
)


def _start_driver(mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode], stdout=subprocess.PIPE, text=True,
        env={**os.environ},
    )
    session_dir = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "READY"
    return proc, session_dir


def test_shutdown_leaves_no_process_socket_or_shared_memory():
    proc, session_dir = _start_driver("exit")
    children = _descendants(proc.pid)
    assert len(children) >= 2  # head and agent (fork server and workers below them)
    assert proc.stdout.readline().strip() == "DONE"
    proc.wait(timeout=30)
    assert _wait_gone(children) == []
    assert not os.path.exists(session_dir)
    assert _memfd_holders(children) == []


def test_interpreter_exit_without_shutdown_cleans_up():
    proc, session_dir = _start_driver("atexit")
    children = _descendants(proc.pid)
    assert proc.stdout.readline().strip() == "DONE"
    assert proc.wait(timeout=30) == 0
    assert _wait_gone(children) == []
    assert not os.path.exists(session_dir)


def test_driver_killed_with_sigkill_is_cleaned_up_by_the_head():
    proc, session_dir = _start_driver("hang")
    children = _descendants(proc.pid)
    assert os.path.isdir(session_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert _wait_gone(children) == []
    deadline = time.monotonic() + 10
    while os.path.exists(session_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(session_dir)


IDLE = textwrap.dedent(
    """
    import os, sys, time
    import manta
    manta.init(num_cpus=2)

    @manta.remote
    def f():
        return 1

    assert manta.get(f.remote()) == 1
    print(os.getpid(), flush=True)
    sys.stdin.readline()  # idle until told
    # More actors than prestarted workers: the fork server forks on demand.
    @manta.remote(num_cpus=0)
    class A:
        def ping(self):
            return 1

    actors = [A.remote() for _ in range(3)]
    assert manta.get([a.ping.remote() for a in actors]) == [1, 1, 1]
    print("MORE", flush=True)
    sys.stdin.readline()
    """
)


def _maps(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except OSError:
        return ""


def test_an_idle_cluster_loads_neither_numpy_nor_the_cryptography_package():
    # The idle footprint (BENCHMARKS.md): cryptography's extension is 6.6 MB of
    # each process that loads it, numpy 16 MB of the fork server. An idle
    # cluster needs neither; the fork server preloads numpy once the node asks
    # for more workers than it prestarted.
    proc = subprocess.Popen([sys.executable, "-c", IDLE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        driver = int(proc.stdout.readline())
        time.sleep(1.0)
        pids = [driver, *_descendants(driver)]
        assert len(pids) >= 5  # driver, head, agent, fork server, workers
        for pid in pids:
            maps = _maps(pid)
            assert "cryptography" not in maps, psutil.Process(pid).cmdline()
            assert "numpy" not in maps, psutil.Process(pid).cmdline()
        zygotes = [p for p in pids if "manta._private.node.zygote" in " ".join(psutil.Process(p).cmdline())]
        server = min(zygotes, key=lambda p: psutil.Process(p).create_time())
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "MORE"
        deadline = time.monotonic() + 20
        while "numpy" not in _maps(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "numpy" in _maps(server)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


FORKED = textwrap.dedent(
    """
    import os, manta
    manta.init(num_cpus=1)
    assert manta.get(manta.remote(lambda: 1).remote()) == 1
    from manta._private import session
    print(session.current().cluster.procs[0].pid, session.current().cluster.session_dir, flush=True)
    import sys
    sys.stdin.readline()
    """
)


def _open_files(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def test_a_drivers_agent_is_forked_from_its_head_and_ends_with_it():
    # head/main.py forks the agent (and the agent its fork server) once the
    # imports they share are loaded: each must then look, to tools and to
    # itself, like the process it replaces, and hold nothing of its parent's.
    from manta._private import cluster

    proc = subprocess.Popen([sys.executable, "-c", FORKED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        head_pid, session_dir = proc.stdout.readline().split()
        head = psutil.Process(int(head_pid))
        (agent,) = head.children()
        assert cluster.is_service_of(agent.cmdline(), session_dir), agent.cmdline()
        assert agent.cmdline()[2] == "manta._private.node.main"
        servers = [p for p in agent.children() if "manta._private.node.zygote" in p.cmdline()]
        assert len(servers) == 1, [p.cmdline() for p in agent.children()]
        agent_files = _open_files(agent.pid)
        assert agent_files[1].endswith("/logs/agent.log") and agent_files[2].endswith("/logs/agent.log")
        assert not [f for f in agent_files.values() if f.endswith("/logs/head.log")]
        server_files = _open_files(servers[0].pid)
        assert server_files[2].endswith("/logs/workers.log")
        assert not [f for f in server_files.values() if f.endswith(("/logs/agent.log", "/logs/head.log"))]
        everyone = [head.pid, *_descendants(head.pid)]
        assert len(everyone) >= 4  # head, agent, fork server, a worker
        head.kill()  # the agent dies with its head, the rest with the agent
        assert not _wait_gone(everyone)
    finally:
        proc.stdin.close()  # the driver's shutdown removes the session directory
        proc.wait(timeout=30)
    assert not os.path.exists(session_dir)


@pytest.fixture
def cluster():
    import manta

    manta.init(num_cpus=2, object_store_memory=64 * 1024 * 1024)
    try:
        yield manta
    finally:
        manta.shutdown()


def _session(manta):
    from manta._private.runtime import context

    return context.require().session


def test_session_files_are_private_and_listeners_local(cluster):
    s = _session(cluster)
    assert stat.S_IMODE(os.stat(s.session_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(s.session_dir, "token")).st_mode) == 0o600
    for name in ("head.sock", "agent.sock"):
        assert stat.S_IMODE(os.stat(os.path.join(s.session_dir, name)).st_mode) == 0o600
    from manta._private import session

    assert session.current().cluster.head_tcp.startswith("tcp:127.0.0.1:")


def _raw_unix(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def _closed_by_peer(sock):
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_peer_without_token_is_disconnected_and_nothing_is_unpickled(cluster, tmp_path):
    manta = cluster
    s = _session(manta)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle
    import struct

    payload = pickle.dumps(Evil())
    for target in ("agent.sock", "head.sock"):
        sock = _raw_unix(os.path.join(s.session_dir, target))
        sock.recv(4096)  # the server's challenge
        sock.sendall(struct.pack("<I", len(payload)) + payload)
        assert _closed_by_peer(sock)
        sock.close()
        # A frame far larger than any handshake message is refused too.
        sock = _raw_unix(os.path.join(s.session_dir, target))
        sock.recv(4096)
        sock.sendall(struct.pack("<I", 1 << 30) + b"x" * 1024)
        assert _closed_by_peer(sock)
        sock.close()
    assert not marker.exists()

    @manta.remote
    def still_works():
        return 42

    assert manta.get(still_works.remote()) == 42


def test_wrong_token_is_refused_over_tcp(cluster):
    import asyncio

    from manta._private import session
    from manta._private.auth.credentials import Identity, owner_credential
    from manta._private.transport.connection import AuthRejected, connect

    address = session.current().cluster.head_tcp

    async def attempt(secret):
        conn = await connect(address, Identity.of(owner_credential(secret)), lambda c, m: None, timeout=5)
        conn.close()

    with pytest.raises(AuthRejected, match="wrong token secret"):
        asyncio.run(attempt(b"w" * 32))
    asyncio.run(attempt(session.current().cluster.token))


def test_object_too_large_for_store_raises_with_sizes(cluster):
    manta = cluster
    with pytest.raises(manta.exceptions.ObjectStoreFullError) as info:
        manta.put(b"x" * (80 * 1024 * 1024))
    assert "83886" in str(info.value) and "bytes" in str(info.value)
    assert manta.get(manta.put(1)) == 1  # the store still serves


def test_full_store_raises_only_when_everything_is_in_use(cluster):
    manta = cluster
    np = pytest.importorskip("numpy")
    held = [manta.put(np.zeros(20 * 1024 * 1024, dtype=np.uint8)) for _ in range(3)]
    views = [manta.get(r) for r in held]  # being read: cannot be spilled
    with pytest.raises(manta.exceptions.ObjectStoreFullError, match="full"):
        manta.put(np.zeros(20 * 1024 * 1024, dtype=np.uint8))
    del views  # unread objects may go to disk to make room
    ref = manta.put(np.ones(20 * 1024 * 1024, dtype=np.uint8))
    assert int(manta.get(ref).sum()) == 20 * 1024 * 1024
    assert all(int(manta.get(r).sum()) == 0 for r in held)


def test_get_of_stored_array_is_a_zero_copy_view(cluster):
    manta = cluster
    np = pytest.importorskip("numpy")
    ref = manta.put(np.arange(1_000_000, dtype=np.int64))
    a, b = manta.get(ref), manta.get(ref)
    assert not a.flags.writeable
    # Both gets see the same shared-memory bytes: no copy was made.
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    with pytest.raises(ValueError):
        a[0] = 1


def test_store_bytes_outlive_refs_while_a_view_is_alive(cluster):
    manta = cluster
    np = pytest.importorskip("numpy")
    view = manta.get(manta.put(np.full(4_000_000, 7, dtype=np.uint8)))
    # The ref is gone; writing other objects must not reuse the view's bytes.
    for _ in range(10):
        manta.get(manta.put(np.full(4_000_000, 9, dtype=np.uint8)))
    assert int(view.min()) == 7 and int(view.max()) == 7


def test_output_printed_just_before_exit_is_not_lost():
    script = textwrap.dedent(
        """
        import manta

        @manta.remote
        def shout(i):
            print(f"line {i} from a task")
            return i

        @manta.remote
        class Speaker:
            def say(self, i):
                print(f"line {i} from an actor")
                return i

        s = Speaker.remote()
        for i in range(5):
            manta.get([shout.remote(i), s.say.remote(i)])
        manta.shutdown()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for i in range(5):
        assert f"line {i} from a task" in out.stdout
        assert f"line {i} from an actor" in out.stdout
    assert "(shout pid=" in out.stdout and "(Speaker pid=" in out.stdout


def test_driver_blocked_in_get_gets_a_clear_error_when_the_head_dies():
    script = textwrap.dedent(
        """
        import os, signal, time, manta
        manta.init(num_cpus=1)

        @manta.remote(max_retries=0)
        def forever():
            time.sleep(600)

        ref = forever.remote()
        from manta._private import session
        head = session.current().cluster.procs[0]
        start = time.time()
        os.kill(head.pid, signal.SIGKILL)
        try:
            manta.get(ref)
        except manta.exceptions.RaySystemError as e:
            print("RAISED", round(time.time() - start, 1), e, flush=True)
        manta.shutdown()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "RAISED" in out.stdout, out.stdout + out.stderr
    assert "lost the connection to the cluster's head" in out.stdout
    assert float(out.stdout.split("RAISED ")[1].split()[0]) < 10


def test_objects_spill_to_disk_and_come_back(tmp_path):
    import hashlib

    import manta

    np = pytest.importorskip("numpy")
    spill_dir = str(tmp_path / "spilled")
    config = {"type": "filesystem", "params": {"directory_path": spill_dir}}
    manta.init(num_cpus=1, object_store_memory=256 * 1024 * 1024,
               _system_config={"object_spilling_config": json.dumps(config)})
    try:
        refs, sums = [], []
        for i in range(150):
            a = np.random.default_rng(i).integers(0, 255, size=10 * 1024 * 1024, dtype=np.uint8)
            sums.append(hashlib.sha256(a).hexdigest())
            refs.append(manta.put(a))
        spilled = len(os.listdir(spill_dir))
        assert spilled >= 150 - 25  # at most ~25 fit in memory at once
        for i in range(0, 150, 7):
            assert hashlib.sha256(manta.get(refs[i])).hexdigest() == sums[i]

        @manta.remote
        def digest(x):
            return hashlib.sha256(x).hexdigest()

        assert manta.get(digest.remote(refs[3])) == sums[3]
        print(f"\nspilling: {spilled} of 150 x 10 MB objects on disk with a 256 MB store")
        del refs
        deadline = time.monotonic() + 10
        while os.listdir(spill_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(spill_dir) == []
    finally:
        manta.shutdown()


def test_store_spills_past_its_threshold_before_it_is_full(tmp_path):
    import manta

    np = pytest.importorskip("numpy")
    spill_dir = str(tmp_path / "spilled")
    config = {"type": "filesystem", "params": {"directory_path": spill_dir}}
    manta.init(num_cpus=1, object_store_memory=100 * 1024 * 1024,
               _system_config={"object_spilling_config": json.dumps(config), "object_spilling_threshold": 0.5})
    try:
        refs = [manta.put(np.full(10 * 1024 * 1024, i, dtype=np.uint8)) for i in range(8)]
        # 80 MB fit in the store, but past 50 MB the oldest go to disk.
        assert 2 <= len(os.listdir(spill_dir)) <= 4, os.listdir(spill_dir)
        assert [int(manta.get(r)[0]) for r in refs] == list(range(8))
    finally:
        manta.shutdown()


def _init_with_a_full_disk(tmp_path):
    """A 64 MB store whose spills would all take the disk past its limit:
    as if the disk were full, so nothing can leave the store."""
    import shutil

    import manta

    disk = shutil.disk_usage(tmp_path)
    config = {"type": "filesystem", "params": {"directory_path": str(tmp_path / "spilled")}}
    manta.init(num_cpus=1, object_store_memory=64 * 1024 * 1024,
               _system_config={"object_spilling_config": json.dumps(config),
                               "local_fs_capacity_threshold": max(0.01, disk.used / disk.total)})
    return manta


def test_full_disk_gives_out_of_disk_error_and_the_store_keeps_serving(tmp_path):
    np = pytest.importorskip("numpy")
    manta = _init_with_a_full_disk(tmp_path)
    try:
        held = []
        with pytest.raises(manta.exceptions.OutOfDiskError, match="local_fs_capacity_threshold"):
            for _ in range(20):
                held.append(manta.put(np.zeros(10 * 1024 * 1024, dtype=np.uint8)))
        assert len(held) >= 4  # what fit in memory is all there
        assert all(int(manta.get(r).sum()) == 0 for r in held)
        assert manta.get(manta.put("small")) == "small"
        del held
        ref = manta.put(np.ones(10 * 1024 * 1024, dtype=np.uint8))  # room again once freed
        assert int(manta.get(ref).sum()) == 10 * 1024 * 1024
    finally:
        manta.shutdown()


def test_objects_borrowed_by_a_dead_worker_are_freed(tmp_path):
    np = pytest.importorskip("numpy")
    # No spilling: a leaked 40 MB object would leave no room for the next one.
    manta = _init_with_a_full_disk(tmp_path)
    try:
        @manta.remote
        class Keeper:
            def keep(self, refs):
                self.refs = refs
                return len(refs)

        for _ in range(3):
            k = Keeper.remote()
            ref = manta.put(np.zeros(40 * 1024 * 1024, dtype=np.uint8))
            assert manta.get(k.keep.remote([ref])) == 1  # the actor borrows it
            manta.kill(k)
            del ref, k  # the borrower is dead and the owner let go: freed
            deadline = time.monotonic() + 10
            while True:
                try:
                    probe = manta.put(np.zeros(40 * 1024 * 1024, dtype=np.uint8))
                    break
                except (manta.exceptions.OutOfDiskError, manta.exceptions.ObjectStoreFullError):
                    assert time.monotonic() < deadline, "the dead borrower's object was never freed"
                    time.sleep(0.1)
            del probe
    finally:
        manta.shutdown()


def test_on_one_node_a_task_output_does_not_keep_its_arguments_alive(tmp_path):
    """Lineage (to rebuild outputs lost with another node) is not kept for
    outputs in the owner's own node, so arguments are freed as usual."""
    np = pytest.importorskip("numpy")
    manta = _init_with_a_full_disk(tmp_path)
    try:
        @manta.remote
        def head_of(a):
            return a[: 1024 * 1024].copy()  # 1 MB: stored, not inline

        x = manta.put(np.zeros(40 * 1024 * 1024, dtype=np.uint8))
        y = head_of.remote(x)
        assert manta.get(y).shape == (1024 * 1024,)
        del x  # y lives on; x must not
        z = manta.put(np.zeros(40 * 1024 * 1024, dtype=np.uint8))
        assert int(manta.get(z).sum()) == 0 and manta.get(y).shape == (1024 * 1024,)
    finally:
        manta.shutdown()
