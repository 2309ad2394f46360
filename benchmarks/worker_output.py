"""What a worker's log file costs a task that prints (`runtime/worker_logs.py`):
the same task printing `--lines` lines, with its worker writing them to its
`worker_logs/` file as well as sending them to the driver, against the same
task with the file turned off in its worker, in one run of one cluster.

    python benchmarks/worker_output.py [--lines 20000] [--repeat 3]

Prints the best of `--repeat` rounds of each (µs per line) and their ratio
(with the file / without). The driver's own printing is off
(log_to_driver=False) so that the driver's terminal is not what is timed;
the lines still travel to it.
"""

from __future__ import annotations

import argparse
import sys
import time

import manta


@manta.remote
def chatter(lines: int, keep_file: bool) -> float:
    stream = sys.stdout
    saved = getattr(stream, "log", None)
    if not keep_file:
        stream.log = None  # type: ignore[attr-defined]  # this worker's TaskStream: no file for this round
    try:
        t = time.perf_counter()
        for i in range(lines):
            print(f"line {i} of the chatter task, about as long as a log line")
        sys.stdout.flush()
        return (time.perf_counter() - t) / lines
    finally:
        stream.log = saved  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    manta.init(num_cpus=1, log_to_driver=False)
    try:
        manta.get(chatter.remote(100, True))  # a warm worker
        with_file, without = [], []
        for _ in range(args.repeat):
            with_file.append(manta.get(chatter.remote(args.lines, True)))
            without.append(manta.get(chatter.remote(args.lines, False)))
        a, b = min(with_file), min(without)
        print(f"print() in a task, per line: with its log file {a * 1e6:.2f} us, without {b * 1e6:.2f} us; "
              f"ratio {a / b:.2f}")
    finally:
        manta.shutdown()


if __name__ == "__main__":
    main()
