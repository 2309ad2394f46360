"""The store's pages faulted in ahead of writes (`Region.prewarm`, `store_prewarm_bytes`)."""

from __future__ import annotations

import resource
import threading

import pytest

from manta._private.config import Config
from manta._private.objectstore.region import PREWARM_STEP, Region

MB = 1 << 20


def _faults_writing(region: Region, offset: int, n: int) -> int:
    data = b"\x07" * n  # its own pages fault in before the count
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    region.view[offset : offset + n] = data
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_prewarmed_pages_take_no_fault_when_written_and_the_rest_still_do():
    region = Region.create(96 * MB)
    try:
        assert region.prewarm(2 * PREWARM_STEP, threading.Event()) == 2 * PREWARM_STEP
        warm = _faults_writing(region, 0, 16 * MB)
        cold = _faults_writing(region, 80 * MB, 16 * MB)
        assert cold > 2000  # 4,096 pages of 4 KiB, at most 16 to a fault
        assert warm < cold / 20
        assert bytes(region.view[:4]) == b"\x07" * 4  # what was written stays; prewarming wrote nothing
    finally:
        region.close()


def test_prewarm_keeps_what_the_store_already_holds_and_stops_when_asked():
    region = Region.create(64 * MB)
    try:
        region.view[:5] = b"kept!"
        assert region.prewarm(1 << 40, threading.Event()) == 64 * MB  # no further than the store
        assert bytes(region.view[:5]) == b"kept!"
        stop = threading.Event()
        stop.set()
        assert region.prewarm(64 * MB, stop) == 0
    finally:
        region.close()


def test_prewarm_is_off_by_default_and_set_by_its_own_key_rays_or_the_environment():
    assert Config().store_prewarm_bytes == 0
    assert Config.build({"store_prewarm_bytes": 256 * MB}).store_prewarm_bytes == 256 * MB
    assert Config.build({"preallocate_plasma_memory": True}).store_prewarm_bytes >= 1 << 50  # the whole store
    assert Config.build({"preallocate_plasma_memory": False}).store_prewarm_bytes == 0
    assert Config.build(environ={"MANTA_STORE_PREWARM_BYTES": "1048576"}).store_prewarm_bytes == MB
    assert Config.build({"store_prewarm_bytes": 0}).store_prewarm_bytes == 0
    with pytest.raises(ValueError, match="store_prewarm_bytes"):
        Config.build({"store_prewarm_bytes": -1})
    with pytest.raises(ValueError, match="preallocate_plasma_memory.*true or false"):
        Config.build({"preallocate_plasma_memory": "yes"})
