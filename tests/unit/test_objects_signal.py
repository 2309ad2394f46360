"""objects.Signal: the bare-lock event a blocking get() waits on."""

from __future__ import annotations

import threading
import time

from manta._private.runtime.objects import Signal


def test_a_signal_set_before_the_wait_returns_at_once_and_stays_set() -> None:
    s = Signal()
    s.set()
    s.set()  # twice is harmless
    assert s.wait(0) and s.wait() and s.wait(0.01)


def test_a_wait_times_out_unset_and_wakes_when_another_thread_sets_it() -> None:
    s = Signal()
    t0 = time.monotonic()
    assert not s.wait(0.05)
    assert time.monotonic() - t0 >= 0.04
    assert not s.wait(0)
    threading.Timer(0.05, s.set).start()
    assert s.wait(5)
    assert s.wait(0)


def test_many_setters_and_waiters_all_see_it_set() -> None:
    s = Signal()
    seen: list[bool] = []
    waiters = [threading.Thread(target=lambda: seen.append(s.wait(5))) for _ in range(8)]
    setters = [threading.Thread(target=s.set) for _ in range(8)]
    for t in waiters + setters:
        t.start()
    for t in waiters + setters:
        t.join()
    assert seen == [True] * 8 and s.wait(0)
