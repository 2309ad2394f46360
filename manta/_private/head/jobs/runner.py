"""Runs one job's entrypoint: `python -m manta._private.head.jobs.runner DIR`.

The head starts it as the leader of a new process group and it starts the
entrypoint (a shell command) in that group, so stopping the job signals
both. It outlives the signal the group gets (a handler, not a default, so
the entrypoint does not inherit it), copies the entrypoint's output to
DIR's log with rotation at `max_log_bytes` (the previous part kept as
`.1`), and writes the entrypoint's exit code to DIR/exit when it ends
(negative: the signal that killed it). A head restarted while the job runs
finds the runner by its pid and reads that file when it appears.

Its settings come in DIR/spec.json, written by the head (0600): the
entrypoint, its working directory and its log limits, and the user it runs
as with the descriptors it is handed (as_user.py). The environment
comes from the head, already the job's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


class RotatingLog:
    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.f = open(path, "ab", buffering=0)
        self.size = self.f.tell()

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes and self.size:
            self.f.close()
            os.replace(self.path, self.path + ".1")
            self.f = open(self.path, "ab", buffering=0)
            self.size = 0
        self.f.write(data)
        self.size += len(data)

    def close(self) -> None:
        self.f.close()


def run(job_dir: str) -> int:
    with open(os.path.join(job_dir, "spec.json")) as f:
        spec = json.load(f)
    # Only to stay alive to record the exit: the entrypoint gets the signal too.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    log = RotatingLog(spec["log"], int(spec["max_log_bytes"]))
    try:
        # As the worker user, with the descriptors the head handed on
        # (head/jobs/as_user.py), when the head has one: this runner stays
        # the head's, to write the log and the exit code where the job cannot.
        uid, gid = spec.get("user") or (None, None)
        child = subprocess.Popen(spec["entrypoint"], shell=True, cwd=spec["cwd"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=spec.get("fds", ()),
                                 user=uid, group=gid, extra_groups=[] if uid is not None else None)
    except OSError as e:
        log.write(f"manta: could not start the entrypoint: {e}\n".encode())
        code = 127
    else:
        assert child.stdout is not None
        fd = child.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not data:
                break
            log.write(data)
        code = child.wait()
    log.close()
    tmp = os.path.join(job_dir, "exit.tmp")
    with open(tmp, "w") as f:
        json.dump({"code": code}, f)
    os.replace(tmp, os.path.join(job_dir, "exit"))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
