"""What a worker's cgroup is set to (`node/limits.py`), and how the agent reads /proc to find cgroups."""

from manta._private.node import cgroups as cg
from manta._private.node import limits as lim


def test_a_lease_without_memory_has_no_limit_of_its_own():
    assert lim.limits_of({"CPU": 1.0}) == lim.Limits(memory=None, cpus=1.0)
    assert dict(lim.v2_files(lim.limits_of({"CPU": 1.0}))) == {
        "memory.max": "max", "memory.swap.max": "max", "cpu.weight": "100"}


def test_memory_becomes_a_hard_limit_with_swap_limited_too():
    limits = lim.limits_of({"CPU": 2.0, "memory": 200 * 1024**2})
    assert limits == lim.Limits(memory=200 << 20, cpus=2.0)
    assert lim.v2_files(limits) == [
        ("memory.max", str(200 << 20)), ("memory.swap.max", "0"), ("cpu.weight", "200")]
    # v1: memory+swap may never be below memory, so it is lifted first.
    assert lim.v1_files(limits) == {
        "memory": [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", str(200 << 20)),
                   ("memory.memsw.limit_in_bytes", str(200 << 20))],
        "cpu": [("cpu.shares", "2048")],
    }


def test_a_tiny_memory_token_is_raised_to_what_a_worker_needs():
    # Ray programs use memory=1 as a scheduling token; a 1-byte limit would
    # kill the worker before its task ran.
    assert lim.limits_of({"memory": 1.0}).memory == lim.MIN_MEMORY


def test_cpu_weight_is_proportional_and_clamped():
    # A 0-CPU actor still gets a tenth of a CPU's weight, never zero.
    assert dict(lim.v2_files(lim.Limits(None, 0.0)))["cpu.weight"] == "10"
    assert lim.v1_files(lim.Limits(None, 0.0))["cpu"] == [("cpu.shares", "102")]
    assert dict(lim.v2_files(lim.Limits(None, 1000.0)))["cpu.weight"] == "10000"
    assert lim.v1_files(lim.Limits(None, 1000.0))["cpu"] == [("cpu.shares", "262144")]


def test_oom_kills_read_from_either_version():
    assert lim.oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n") == 1
    assert lim.oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n") == 2
    assert lim.oom_kills("oom_kill_disable 0\nunder_oom 0\n") == 0


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /lxc/c1 /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /tmp/with\\040space rw - ext4 /dev/sda1 rw
"""


def test_mountinfo_gives_the_cgroup_mounts_and_their_roots():
    mounts = cg.parse_mountinfo(MOUNTINFO)
    assert [(mt.point, mt.fstype) for mt in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "cgroup"), ("/sys/fs/cgroup/memory", "cgroup"),
        ("/sys/fs/cgroup/unified", "cgroup2")]
    assert mounts[0].options >= {"cpu", "cpuacct"}
    assert mounts[1].root == "/lxc/c1"


def test_a_process_cgroup_is_found_under_the_mount_showing_it():
    own = cg.parse_proc_cgroup("4:memory:/lxc/c1/agent\n1:cpu,cpuacct:/\n0::/user.slice\n")
    assert own == {"memory": "/lxc/c1/agent", "cpu": "/", "cpuacct": "/", "": "/user.slice"}
    cpu, memory, unified = cg.parse_mountinfo(MOUNTINFO)
    assert cg.own_dir(memory, own["memory"]) == "/sys/fs/cgroup/memory/agent"
    assert cg.own_dir(cpu, own["cpu"]) == "/sys/fs/cgroup/cpu,cpuacct"
    assert cg.own_dir(unified, own[""]) == "/sys/fs/cgroup/unified/user.slice"
    # A mount of another part of the hierarchy does not show this process's cgroup.
    assert cg.own_dir(memory, "/other") is None


def test_off_cgroups_do_nothing():
    off = cg.Cgroups.off("no cgroup v1 memory hierarchy is mounted")
    assert not off.on and off.create(b"w" * 16) == []
    off.limit(b"w" * 16, lim.Limits(1 << 30, 1.0))
    assert off.oom_reason(b"w" * 16) == ""
    off.remove(b"w" * 16)
    off.close()


def _st(mode, uid=0, gid=0):
    import os

    return os.stat_result((mode, 0, 0, 0, uid, gid, 0, 0, 0, 0))


def test_who_may_pass_through_and_list_a_directory():
    import stat

    from manta._private.node.worker_user import WorkerUser, can_read_dir, can_search

    nobody = WorkerUser("nobody", 65534, 65534)
    d = stat.S_IFDIR
    assert not can_search(_st(d | 0o700), nobody)  # root's own
    assert can_search(_st(d | 0o710, gid=65534), nobody)  # the session directory, opened to the group
    assert not can_search(_st(d | 0o701, gid=65534), nobody)  # the group's bits decide for the group
    assert can_search(_st(d | 0o701), nobody)
    tree = {"/": _st(d | 0o755), "/root": _st(d | 0o700), "/root/py": _st(d | 0o755),
            "/usr": _st(d | 0o755), "/usr/lib": _st(d | 0o755), "/srv": _st(d | 0o711)}
    assert can_read_dir("/usr/lib", nobody, tree.__getitem__)
    # A Python under /root: its directory is readable, but nobody cannot reach it.
    assert not can_read_dir("/root/py", nobody, tree.__getitem__)
    # Searchable but not listable: imports from it would fail.
    assert not can_read_dir("/srv", nobody, tree.__getitem__)


def test_a_worker_user_must_be_someone_unprivileged_and_the_node_root():
    import pytest

    from manta._private.node.worker_user import resolve

    with pytest.raises(ValueError, match="must run as root"):
        resolve("nobody", euid=1000)
    with pytest.raises(ValueError, match="unprivileged"):
        resolve("root", euid=0)
    with pytest.raises(ValueError, match="no such user"):
        resolve("no-such-user-here", euid=0)
