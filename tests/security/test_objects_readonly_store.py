"""Readers map the store read-only: a task cannot write into an object it got.

A task gets a stored array, sees (in /proc/self/maps) that its mapping of
the store is not writable, and then tries to write through the array's
buffer the way code bypassing numpy's read-only flag would (a ctypes
pointer to its data). The write faults in that task's own process only,
and the object is intact for everyone else. The objects a process puts
are still written (through a mapping of their own extent).
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
from tests_support import BACKEND  # noqa: E402

import manta  # noqa: E402

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="reads manta's store mapping"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def cluster():
    manta.init(num_cpus=2)
    yield
    manta.shutdown()


def store_mappings():
    """The permissions of this process's mappings of the store's memfd."""
    with open("/proc/self/maps") as f:
        return [line.split()[1] for line in f if "memfd:manta-store" in line]


def test_a_reader_maps_the_store_read_only_and_its_puts_still_land(cluster):
    @manta.remote(max_retries=0)
    def mapping_of_a_reader(arr):
        assert int(arr[:10].sum()) == 70  # the get happened
        with open("/proc/self/maps") as f:
            return [line.split()[1] for line in f if "memfd:manta-store" in line]

    ref = manta.put(np.full(1 << 20, 7, dtype=np.uint8))
    perms = manta.get(mapping_of_a_reader.remote(ref))
    assert perms and all(p.startswith("r-") for p in perms), perms
    # The driver too, and what it wrote is there (it was put through its own extent's mapping).
    arr = manta.get(ref)
    assert not arr.flags.writeable
    assert store_mappings() and all(p.startswith("r-") for p in store_mappings()), store_mappings()
    assert int(arr.sum()) == 7 << 20


def test_a_write_through_a_got_buffer_fails_in_the_writer_and_the_object_is_intact(cluster):
    @manta.remote(max_retries=0)
    def scribble(arr):
        import ctypes

        ctypes.memset(arr.ctypes.data, 0, 16)  # faults: the page is mapped read-only
        return "wrote"

    ref = manta.put(np.full(1 << 20, 7, dtype=np.uint8))
    with pytest.raises(manta.exceptions.RayError):
        manta.get(scribble.remote(ref), timeout=120)
    assert int(manta.get(ref).sum()) == 7 << 20
    assert manta.get(manta.remote(lambda: "served").remote()) == "served"
