"""Shared pieces of the cluster tests."""

import os
import subprocess
import sys

BACKEND = (os.environ.get("MANTA_TEST_BACKEND") or "manta").strip()


def manta_cli(env, *args):
    """Runs `manta ARGS` with `env`; fails the test unless it succeeds. Returns stdout."""
    out = subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout
