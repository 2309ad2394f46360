"""Each worker in a cgroup of its own: a task past its memory resource is killed alone.

A task asking for `memory=200 MiB` allocates (and touches) 1 GiB, as a
runaway or hostile task would to take its node's memory. The kernel kills
its worker at the cgroup's limit, the caller gets OutOfMemoryError, and a
task running next to it on the same node finishes untouched. The driver
also reads the limits the agent wrote (memory from `memory`, CPU weight
from `num_cpus`) and, after shutdown, checks that no cgroup is left.

Skipped, with the agent's own reason, where the node cannot write cgroups.
"""

import ast
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.timeout(180)

DRIVER = textwrap.dedent("""
    import glob, os, re, sys, time
    import manta

    release = sys.argv[1]
    manta.init(num_cpus=3)
    session = glob.glob(os.path.join(os.environ["MANTA_TMPDIR"], "s*"))[0]
    text = open(os.path.join(session, "logs", "agent.log")).read()
    off = re.search(r"worker isolation by cgroups is off: (.*)", text)
    if off:
        print("OFF", off.group(1), flush=True)
        sys.exit(0)
    bases = re.search(r"workers run in cgroups \\((v[12])\\) under (.*)", text)
    print("BASES", bases.group(1), bases.group(2), flush=True)

    @manta.remote(num_cpus=1, max_retries=0)
    def bystander(release):
        deadline = time.time() + 90
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.02)
        return "untouched"

    @manta.remote(num_cpus=1, memory=200 * 1024**2, max_retries=0)
    def hog():
        data = b"x" * (1 << 30)  # written, so every page is really used
        return len(data)

    @manta.remote(num_cpus=2, memory=300 * 1024**2, max_retries=0)
    def my_cgroups(bases):
        # This worker's cgroup directories, and the limits written in them.
        mine = open("/proc/self/cgroup").read()
        names = {line.rsplit("/", 1)[1] for line in mine.splitlines() if "/manta-" in line}
        found = {}
        for base in bases:
            for name in names:
                for f in ("memory.max", "memory.limit_in_bytes", "cpu.weight", "cpu.shares"):
                    path = os.path.join(base, name, f)
                    if os.path.exists(path):
                        found[f] = open(path).read().strip()
        return mine, sorted(names), found

    running = bystander.remote(release)
    try:
        manta.get(hog.remote(), timeout=90)
        print("NO ERROR", flush=True)
    except manta.exceptions.OutOfMemoryError as e:
        print("OOM", str(e).replace(chr(10), " ")[:300], flush=True)
    bases = [b.strip() for b in bases.group(2).split(",")]
    print("CGROUPS", repr(manta.get(my_cgroups.remote(bases), timeout=60)), flush=True)
    # Each lease sets its worker's limit, whichever pooled worker it gets.
    again = [manta.get(my_cgroups.options(memory=mib << 20, num_cpus=1).remote(bases), timeout=60)[2]
             for mib in (400, 250)]
    print("AGAIN", repr(again), flush=True)

    @manta.remote(memory=200 * 1024**2, num_cpus=0, max_restarts=0)
    class Hoarder:
        def hoard(self):
            self.data = b"x" * (1 << 30)
            return len(self.data)

    hoarder = Hoarder.remote()
    try:
        manta.get(hoarder.hoard.remote(), timeout=90)
        print("ACTOR NO ERROR", flush=True)
    except manta.exceptions.ActorDiedError as e:
        print("ACTOR", str(e).replace(chr(10), " ")[:400], flush=True)
    open(release, "w").close()
    print("BYSTANDER", manta.get(running, timeout=60), flush=True)
    manta.shutdown()
""")


@pytest.fixture
def root():
    # Short: Unix socket paths under it must stay within 108 bytes.
    path = tempfile.mkdtemp(prefix="cg")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_task_past_its_memory_is_killed_alone_and_gets_out_of_memory_error(tmp_path, root):
    env = {**os.environ, "MANTA_TMPDIR": root,
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("MANTA_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "release")], env=env,
                          capture_output=True, text=True, timeout=170)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines() if " " in line}
    if "OFF" in lines:
        pytest.skip(f"this node cannot write cgroups: {lines['OFF']}")
    version, bases = lines["BASES"].split(" ", 1)
    assert "OOM" in lines, out + proc.stderr
    assert "memory limit of 209715200 bytes" in lines["OOM"]
    assert lines["BYSTANDER"] == "untouched"

    # The worker of `my_cgroups` ran in cgroups of its own under the node's,
    # limited as its task asked: 300 MiB, and the weight of two CPUs.
    mine, names, found = ast.literal_eval(lines["CGROUPS"])
    base_dirs = [b.strip() for b in bases.split(",")]
    assert len(names) == 1, mine
    if version == "v1":
        assert found == {"memory.limit_in_bytes": str(300 << 20), "cpu.shares": "2048"} or \
            found == {"memory.limit_in_bytes": str(300 << 20)}, (found, mine)
    else:
        assert found.get("memory.max") == str(300 << 20), (found, mine)
    memory_file = "memory.limit_in_bytes" if version == "v1" else "memory.max"
    again = ast.literal_eval(lines["AGAIN"])
    assert [f[memory_file] for f in again] == [str(400 << 20), str(250 << 20)], again
    # An actor past its memory dies of it, and says so.
    assert "memory limit of 209715200 bytes" in lines["ACTOR"], out
    # Everything made for the workers is gone after shutdown.
    for base in base_dirs:
        assert not os.path.exists(base), base
    assert not glob.glob(os.path.join(root, "s*", "cgroup", "*", "*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a cgroup hierarchy needs root")
def test_with_no_hierarchy_mounted_a_root_agent_mounts_one_and_unmounts_it(tmp_path):
    """The fallback for a container whose /sys/fs/cgroup is read-only or absent:
    told that nothing is mounted, `detect` mounts the v1 memory hierarchy
    itself; a process over its limit there is killed and seen as such, and
    close() leaves neither cgroup nor mount behind."""
    from manta._private.node import cgroups, limits

    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text("")  # as if no cgroup were mounted
    (proc / "cgroup").write_text(open("/proc/self/cgroup").read())
    mounts = tmp_path / "mnt"
    found = cgroups.detect(f"t{os.getpid()}", str(mounts), proc=str(proc))
    if not found.on:
        pytest.skip(f"this node cannot mount cgroups: {found.why}")
    worker = os.urandom(16)
    try:
        assert found.version == "v1" and all(b.startswith(str(mounts)) for b in found.bases.values())
        dirs = found.create(worker)
        found.limit(worker, limits.limits_of({"memory": 200 * 1024**2, "CPU": 1.0}))
        hog = subprocess.run([sys.executable, "-c", "b = b'x' * (1 << 30)"], preexec_fn=lambda: cgroups.join(dirs),
                             capture_output=True, timeout=60)
        assert hog.returncode == -9
        assert "memory limit of 209715200 bytes" in found.oom_reason(worker)
        found.remove(worker)
    finally:
        found.close()
    assert not any(str(mounts) in line.split()[1] for line in open("/proc/self/mounts"))
    assert not os.path.exists(mounts) or not os.listdir(mounts)
