"""Time, injected.

Every decision that depends on time (heartbeats, node-death detection, the
idle-lease sweep, the memory monitor's cadence) reads it from a `Clock`
passed in, never from `time` directly, so unit tests drive it by hand
without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Seconds on a monotonic scale; only differences mean anything.
Clock = Callable[[], float]

monotonic: Clock = time.monotonic
