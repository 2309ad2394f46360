"""Values written into the store by several threads (`Region.write_parallel`, `write_value`)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from manta._private.objectstore.region import Region
from manta._private.runtime import serialization
from manta._private.runtime.objects import write_value

MB = 1 << 20


@pytest.fixture
def regions():
    owner = Region.create(64 * MB)
    reader = Region(os.dup(owner.fd), 64 * MB, owns_fd=True, writable=False)  # a driver's or worker's
    yield owner, reader
    reader.close()
    owner.close()


def _faults_when_written(region: Region, offset: int) -> bool:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        import ctypes

        ctypes.memset(region.base + offset, 1, 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("offset", [0, 4096, 12_345])
def test_every_byte_lands_and_nothing_around_it(regions, threads, offset):
    owner, reader = regions
    owner.view[: 20 * MB] = b"\xee" * (20 * MB)
    data = np.random.default_rng(threads).integers(0, 255, 10 * MB + 321, dtype=np.uint8).tobytes()

    def fill(dest, lo, hi):
        dest[lo:hi] = data[lo:hi]

    reader.write_parallel(offset, len(data), fill, threads)
    assert owner.view[offset : offset + len(data)] == data
    assert owner.view[:offset] == b"\xee" * offset
    assert owner.view[offset + len(data) : 20 * MB] == b"\xee" * (20 * MB - offset - len(data))


def test_the_pages_are_read_only_again_after_the_write_and_after_a_failure(regions):
    _, reader = regions
    n = 8 * MB

    def fill(dest, lo, hi):
        dest[lo:hi] = b"\x01" * (hi - lo)

    reader.write_parallel(MB, n, fill, 2)
    assert _faults_when_written(reader, MB)
    assert _faults_when_written(reader, MB + n - 1)

    def broken(dest, lo, hi):
        if lo > 0:
            raise RuntimeError("a thread's part failed")
        fill(dest, lo, hi)

    with pytest.raises(RuntimeError, match="part failed"):
        reader.write_parallel(MB, n, broken, 2)
    assert _faults_when_written(reader, MB + n - 1)
    with pytest.raises(ValueError, match="outside the store"):
        reader.write_parallel(63 * MB, 2 * MB, fill, 2)


def test_a_large_value_goes_by_threads_and_reads_back_the_same(regions, monkeypatch):
    _, reader = regions
    monkeypatch.setattr(serialization, "PARALLEL_COPY_BYTES", 1 * MB)
    value = {"a": np.arange(1_000_000, dtype=np.int64), "b": np.ones(300_000), "s": "x" * 1000}
    sv = serialization.serialize(value)
    assert sv.copy_threads() == min(2, len(os.sched_getaffinity(0)))
    write_value(reader, 4096 * 3 + 64, sv)
    whole = bytearray(sv.size)
    sv.write_into(memoryview(whole))
    assert bytes(reader.view[4096 * 3 + 64 : 4096 * 3 + 64 + sv.size]) == bytes(whole)
    back, is_error = serialization.deserialize(bytes(reader.view[4096 * 3 + 64 : 4096 * 3 + 64 + sv.size]))
    assert not is_error
    assert np.array_equal(back["a"], value["a"]) and np.array_equal(back["b"], value["b"]) and back["s"] == value["s"]
