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


def netns_unavailable(probe: str):
    """Why network namespaces cannot be used here (None if they can): made
    and removed once under the name `probe` to find out."""
    import shutil

    if BACKEND != "manta":
        return "manta-specific"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*cmd):
    """Runs a command; fails the test unless it succeeds."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stderr}"
