"""Real memory pressure: the agent's monitor kills workers before the kernel does.

The threshold is set 1.5 GiB above what the machine uses now, and a task
then allocates (and touches) memory until something stops it.
"""

import subprocess
import sys
import textwrap

import pytest

from manta._private.node.memory import memory_usage

pytestmark = pytest.mark.timeout(180)

DRIVER = """
import os, time
import numpy as np
import manta

manta.init(num_cpus=2, _system_config={{"memory_usage_threshold": {threshold}, "memory_monitor_refresh_ms": 100}})

def hog():
    chunks = []
    for _ in range(48):  # up to 6 GiB, 128 MiB at a time
        chunks.append(np.ones(128 << 20, dtype=np.uint8))
        time.sleep(0.02)
    return "never stopped"

@manta.remote(max_retries=2)
def retriable_hog(marker):
    if os.path.exists(marker):
        return "ran again"
    open(marker, "w").close()
    return hog()

@manta.remote(max_retries=0)
def bystander(release):
    # Running (and newer than the hog) until the driver has seen the hog re-run.
    deadline = time.time() + 60
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.02)
    return "untouched"

@manta.remote(max_retries=0)
def fixed_hog():
    return hog()

@manta.remote(max_restarts=0)
class Hoarder:
    def hoard(self):
        return hog()

start = time.time()
first = retriable_hog.remote({marker!r})
deadline = time.time() + 60
while not os.path.exists({marker!r}) and time.time() < deadline:
    time.sleep(0.01)  # the hog has started
later = bystander.remote({release!r})  # newer, but not retriable: spared
assert manta.get(first, timeout=60) == "ran again"
open({release!r}, "w").close()
assert manta.get(later, timeout=60) == "untouched"
print("RETRIED", round(time.time() - start, 1), flush=True)
try:
    manta.get(fixed_hog.remote(), timeout=60)
    print("NO ERROR")
except manta.exceptions.OutOfMemoryError as e:
    print("OOM", str(e).replace(chr(10), " ")[:300], flush=True)
h = Hoarder.remote()
try:
    manta.get(h.hoard.remote(), timeout=60)
    print("NO ERROR")
except manta.exceptions.ActorDiedError as e:
    print("ACTOR", "memory monitor" in str(e), flush=True)
manta.shutdown()
"""


def test_memory_monitor_kills_retriable_work_first_and_reports_oom(tmp_path):
    used, total = memory_usage()
    threshold = (used + (3 << 29)) / total
    if threshold > 0.9:
        pytest.skip(f"this machine is already {used / total:.0%} full")
    script = DRIVER.format(threshold=round(threshold, 4), marker=str(tmp_path / "attempted"),
                           release=str(tmp_path / "release"))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=150)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 3, out.stdout + out.stderr[-3000:]
    assert lines[0].startswith("RETRIED"), lines
    assert lines[1].startswith("OOM") and "memory_usage_threshold" in lines[1], lines
    assert lines[2] == "ACTOR True", lines
    print(f"\nmemory monitor (threshold {threshold:.2f} = in use + 1.5 GiB): the retriable hog was "
          f"killed and re-run, the newer non-retriable task spared ({lines[0].split()[1]} s); "
          f"a non-retriable hog failed with OutOfMemoryError; an actor hog died with the reason")
