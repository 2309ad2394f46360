"""Spill files, attacked on disk as a local user (or a task) would.

Before, spill files were plain copies of the objects, created with the
umask, opened by path (following links) and read back unchecked. Now each
is sealed with AES-GCM under a key only the agent's memory holds, created
0600 with O_CREAT|O_EXCL|O_NOFOLLOW in a 0700 directory, and checked when
read back: a file changed, cut short, swapped for another object's or
replaced by a link or a FIFO loses its object (the owner sees
ObjectLostError), logged once, and the node goes on serving.
"""

import json
import os
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
from tests_support import BACKEND  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own spill files"),
    pytest.mark.timeout(180),
]

MB = 1 << 20
PATTERN = b"PLAINTEXT-SECRET"


def _start(spill_dir=None):
    import manta

    config = {"object_spilling_threshold": 0.5}
    if spill_dir:
        config["object_spilling_config"] = json.dumps(
            {"type": "filesystem", "params": {"directory_path": spill_dir}})
    info = manta.init(num_cpus=1, object_store_memory=64 * MB, _system_config=config)
    return manta, info["session_dir"]


def _value(i):
    return bytes([i]) + PATTERN * (4 * MB // len(PATTERN))


def _wait_spilled(spill_dir, refs):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = set(os.listdir(spill_dir)) if os.path.isdir(spill_dir) else set()
        if any(r.hex() in names for r in refs):
            return [r for r in refs if r.hex() in names]
        time.sleep(0.02)
    raise AssertionError(f"nothing spilled to {spill_dir}")


def _serving(manta):
    @manta.remote
    def add(a, b):
        return a + b

    assert manta.get(add.remote(1, 2)) == 3
    big = manta.put(_value(99))
    assert manta.get(big) == _value(99)


def test_spill_files_are_private_and_sealed_and_tampering_loses_only_that_object():
    manta, session = _start()
    try:
        spill_dir = os.path.join(session, "spill")
        refs = [manta.put(_value(i)) for i in range(14)]
        spilled = _wait_spilled(spill_dir, refs)
        assert len(spilled) >= 5, len(spilled)
        assert stat.S_IMODE(os.lstat(spill_dir).st_mode) == 0o700
        for r in spilled:
            path = os.path.join(spill_dir, r.hex())
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            with open(path, "rb") as f:
                assert PATTERN[:8] not in f.read()  # nothing of the object in the clear

        flipped, cut, swapped, fifo, *intact = spilled
        with open(os.path.join(spill_dir, flipped.hex()), "r+b") as f:
            f.seek(2 * MB)
            byte = f.read(1)
            f.seek(2 * MB)
            f.write(bytes([byte[0] ^ 1]))
        os.truncate(os.path.join(spill_dir, cut.hex()), 3 * MB)
        # Another object's genuine file in its place: authentic, but not its own.
        os.replace(os.path.join(spill_dir, intact[0].hex()), os.path.join(spill_dir, swapped.hex()))
        intact = intact[1:]
        os.unlink(os.path.join(spill_dir, fifo.hex()))
        os.mkfifo(os.path.join(spill_dir, fifo.hex()), 0o600)

        for r in (flipped, cut, swapped, fifo):
            for _ in range(2):
                with pytest.raises(manta.exceptions.ObjectLostError):
                    manta.get(r, timeout=30)
        assert [manta.get(r)[0] for r in intact] == [refs.index(r) for r in intact]
        assert manta.get(intact[-1]) == _value(refs.index(intact[-1]))
        _serving(manta)
        with open(os.path.join(session, "logs", "agent.log")) as f:
            log = f.read()
        for r, why in ((flipped, "fails authentication"), (cut, "cut short"), (swapped, "fails authentication"),
                       (fifo, "bytes, not the")):
            lines = [line for line in log.splitlines() if f"object {r.hex()} is lost on this node" in line]
            assert len(lines) == 1 and why in lines[0], lines  # logged once, with the reason
    finally:
        manta.shutdown()


def test_a_link_planted_at_a_spill_path_is_not_followed(tmp_path):
    spill_dir = str(tmp_path / "spill")
    os.mkdir(spill_dir, 0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    manta, _ = _start(spill_dir)
    try:
        first = [manta.put(_value(i)) for i in range(3)]
        for r in first:  # planted before they spill
            os.symlink(victim, os.path.join(spill_dir, r.hex()))
        more = [manta.put(_value(i)) for i in range(3, 14)]
        spilled = _wait_spilled(spill_dir, first)
        assert spilled, "the planted paths were never spilled to"
        assert victim.read_bytes() == b"keep me"
        for r in spilled:
            st = os.lstat(os.path.join(spill_dir, r.hex()))
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        # Read back intact, whatever was planted.
        assert [manta.get(r) == _value(i) for i, r in enumerate(first + more)] == [True] * 14
        _serving(manta)
    finally:
        manta.shutdown()


def test_a_shared_spill_directory_is_refused(tmp_path):
    """A world-writable directory (say /tmp itself) is not spilled to: a put
    that needs the room fails with OutOfDiskError naming the directory."""
    spill_dir = str(tmp_path / "shared")
    os.mkdir(spill_dir)
    os.chmod(spill_dir, 0o1777)
    manta, _ = _start(spill_dir)
    try:
        held = []
        with pytest.raises(manta.exceptions.OutOfDiskError, match="world-writable") as info:
            for i in range(20):
                held.append(manta.put(_value(i)))
        assert spill_dir in str(info.value)
        assert os.listdir(spill_dir) == []
        del held
        _serving(manta)
    finally:
        manta.shutdown()
