"""One long-lived cluster (`manta start --head`) in a temp dir, and drivers
that connect to it, for the integrity attacks (tests/security/test_integrity_*)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Cluster:
    root: str
    env: dict[str, str]
    address: str = ""
    audit: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=self.env, capture_output=True,
                           text=True, timeout=90)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r

    def driver(self, body: str, *, check: bool = True, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs BODY as a driver connected to this cluster."""
        script = "import json, os, sys\nimport manta\nmanta.init(address='auto')\n" + textwrap.dedent(body)
        r = subprocess.run([sys.executable, "-c", script], env=env or self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r

    def result(self, body: str) -> object:
        """Runs BODY, which prints a JSON value last; returns that value."""
        return json.loads(self.driver(body).stdout.strip().splitlines()[-1])

    def audit_records(self) -> list[dict[str, str]]:
        with open(self.audit) as f:
            return [json.loads(line) for line in f]


@contextmanager
def cluster(prefix: str, *start_args: str, pythonpath: tuple[str, ...] = ()) -> Iterator[Cluster]:
    root = tempfile.mkdtemp(prefix=prefix)
    env = {**os.environ, "MANTA_TMPDIR": root,
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("MANTA_TOKEN", None)
    env.pop("MANTA_ADDRESS", None)
    c = Cluster(root, env, audit=os.path.join(root, "audit.log"))
    try:
        out = c.cli("start", "--head", "--port", "0", "--audit-log", c.audit, *start_args).stdout
        c.address = out.split("started at ")[1].split()[0]
        yield c
    finally:
        if c.address:
            c.cli("stop", "--address", c.address, check=False)
        shutil.rmtree(root, ignore_errors=True)
