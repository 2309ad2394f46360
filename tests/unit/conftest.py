"""Fixtures of the unit tests (no processes, no sockets, no sleeping).

Every sans-IO table a test creates is checked with its own `validate()`
when the test ends, as dask's `ws` fixture does: each test checks the
invariants for free.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from manta._private.control.actors import ActorEntry
from manta._private.control.liveness import NodeLiveness
from manta._private.control.placement_groups import PGEntry
from manta._private.node.memory import MemoryMonitor
from manta._private.node.reporting import ReportSchedule
from manta._private.node.roster import Roster
from manta._private.objectstore.allocator import Allocator
from manta._private.objectstore.store import StoreTable
from manta._private.runtime.actor_queue import ActorQueue
from manta._private.runtime.leasing import LeaseClient
from manta._private.runtime.lineage import LineageTable
from manta._private.runtime.refs import ReferenceTable
from manta._private.scheduling.leases import LeaseTable
from manta._private.sim.node import SimNode
from manta._private.transport.connection import new_event_loop

SANS_IO_TABLES: list[type] = [
    ActorEntry, ActorQueue, Allocator, LeaseClient, LeaseTable, LineageTable, MemoryMonitor, NodeLiveness,
    PGEntry, ReferenceTable, ReportSchedule, Roster, SimNode, StoreTable,
]


@pytest.fixture(autouse=True)
def validate_tables(monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[Any] = []
    for cls in SANS_IO_TABLES:
        original = cls.__init__

        def init(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            __original(self, *args, **kwargs)
            made.append(self)

        monkeypatch.setattr(cls, "__init__", init)
    yield made
    for table in made:
        table.validate()


class FakeClock:
    """The injected clock, moved by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loop() -> Iterator[Any]:
    """An event loop (uvloop, as processes run) on its own thread, for the
    transport's tests over real sockets; other threads play the senders."""
    lp = new_event_loop()
    t = threading.Thread(target=lp.run_forever, daemon=True)
    t.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    t.join(5)
    lp.close()
