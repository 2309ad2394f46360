"""The session root and the records in it, attacked as a local user would.

Before, every user shared `/tmp/manta-sessions`, and `manta stop` trusted any
`cluster.json` there: it killed the PIDs a record listed whose command line
merely contained the record's path, and removed whatever directory the
record named. Another user on the machine could pre-create the root, plant
a record, or point `init("auto")` at their own cluster.

Now the root is per user ($XDG_RUNTIME_DIR/manta, else <tmp>/manta-<uid>),
refused unless it is the user's own, not a link and writable by no one
else; a record is trusted only when it and its directory are the user's own
and it names its own directory; PIDs are matched by their whole command
line and owner. Attacks that plant another user's files need root to make
them (chown), as the suite runs in CI; they are skipped otherwise.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
from tests_support import BACKEND  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's own session files"),
    pytest.mark.timeout(180),
]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's files takes chown (root)")


@pytest.fixture
def tmp():
    """A private stand-in for /tmp (short: socket paths stay under 108 bytes),
    and an environment whose only session root setting is TMPDIR=it."""
    d = tempfile.mkdtemp(prefix="dr")
    env = {**os.environ, "TMPDIR": d,
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    for var in ("MANTA_TMPDIR", "XDG_RUNTIME_DIR", "MANTA_TOKEN", "MANTA_ADDRESS"):
        env.pop(var, None)
    yield d, env
    subprocess.run([sys.executable, "-m", "manta.cli", "stop"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(d, ignore_errors=True)


def manta(env, *args):
    return subprocess.run([sys.executable, "-m", "manta.cli", *args], env=env, capture_output=True,
                          text=True, timeout=90)


def driver(env, code):
    """Runs a driver script; returns its output (stdout + stderr) and exit code."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                         text=True, timeout=90)
    return out.stdout + out.stderr, out.returncode


INIT = """
    import manta
    try:
        info = manta.init({address})
    except Exception as e:
        print("REFUSED", type(e).__name__, e)
    else:
        print("SESSION", info["session_dir"])
        print("ANSWER", manta.get(manta.remote(lambda: 42).remote()))
        manta.shutdown()
"""


def mode(path):
    return oct(os.lstat(path).st_mode & 0o7777)


def test_sessions_live_in_a_private_root_of_this_user(tmp):
    d, env = tmp
    out, _ = driver(env, INIT.format(address=""))
    root = os.path.join(d, f"manta-{os.geteuid()}")
    assert f"SESSION {root}/" in out and "ANSWER 42" in out, out
    assert mode(root) == "0o700"
    # With a usable XDG_RUNTIME_DIR, under it: a long-lived head, its record and token.
    xdg = os.path.join(d, "run")
    os.mkdir(xdg, 0o700)
    env = {**env, "XDG_RUNTIME_DIR": xdg}
    started = manta(env, "start", "--head", "--port", "0")
    assert started.returncode == 0, started.stdout + started.stderr
    token_file = started.stdout.split("token file: ")[1].split()[0]
    session = os.path.dirname(token_file)
    assert os.path.dirname(session) == os.path.join(xdg, "manta")
    assert (mode(os.path.join(xdg, "manta")), mode(session), mode(token_file)) == ("0o700", "0o700", "0o600")
    assert mode(os.path.join(session, "cluster.json")) == "0o600"
    out, _ = driver(env, INIT.format(address="'auto'"))
    assert "ANSWER 42" in out, out
    stopped = manta(env, "stop")
    assert "stopped the head" in stopped.stdout and not os.path.exists(session)


def _refused(env, root, why):
    """Both ways in refuse the root, naming it and what is wrong, and start nothing."""
    started = manta(env, "start", "--head", "--port", "0")
    assert started.returncode != 0
    text = " ".join(started.stderr.split())  # rich wraps long lines
    assert f"refuses the session root {root}" in text and why in text, started.stderr
    out, _ = driver(env, INIT.format(address=""))
    assert "REFUSED UnsafePath" in out and root in out and why in out, out


@as_root
def test_a_root_another_user_made_first_is_refused(tmp):
    d, env = tmp
    root = os.path.join(d, f"manta-{os.geteuid()}")
    os.mkdir(root, 0o755)  # the attacker got there first, in the shared /tmp
    os.chown(root, NOBODY, NOBODY)
    _refused(env, root, f"is owned by uid {NOBODY}, not by uid {os.geteuid()}")
    assert os.listdir(root) == []  # no session, token or socket was put in it


def test_a_world_writable_root_is_refused(tmp):
    d, env = tmp
    root = os.path.join(d, f"manta-{os.geteuid()}")
    os.mkdir(root)
    os.chmod(root, 0o777)
    _refused(env, root, "is group and world-writable (mode 0777)")
    assert os.listdir(root) == []


def test_a_root_that_is_a_link_is_refused(tmp):
    d, env = tmp
    root = os.path.join(d, f"manta-{os.geteuid()}")
    elsewhere = os.path.join(d, "attacker")
    os.mkdir(elsewhere, 0o700)
    os.symlink(elsewhere, root)
    _refused(env, root, "is a symbolic link")
    assert os.listdir(elsewhere) == []


def _write(path, text, file_mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, file_mode)


def _record(session_dir, pids, token_file=None):
    import json

    return json.dumps(dict(session_dir=session_dir, role="node", head_address="tcp:127.0.0.1:9",
                           agent_address=f"unix:{session_dir}/agent.sock",
                           token_file=token_file or f"{session_dir}/token", pids=pids))


def test_stop_leaves_records_it_cannot_trust_alone(tmp):
    d, env = tmp
    root = os.path.join(d, "root")
    os.mkdir(root, 0o700)
    env = {**env, "MANTA_TMPDIR": root}
    victim_dir = os.path.join(d, "victim")
    os.mkdir(victim_dir)
    _write(os.path.join(victim_dir, "precious"), "keep me")
    # A victim process whose command line contains the paths (what the old
    # substring match took for a session's own service).
    trusted = os.path.join(root, "s5")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", victim_dir,
                               "--session-dir", trusted + "x", trusted])
    try:
        planted = {}
        if os.geteuid() == 0:
            # Another user's session directory and record.
            evil = os.path.join(root, "evil1")
            os.mkdir(evil, 0o700)
            _write(os.path.join(evil, "cluster.json"), _record(victim_dir, [victim.pid]))
            os.chown(os.path.join(evil, "cluster.json"), NOBODY, NOBODY)
            os.chown(evil, NOBODY, NOBODY)
            planted[evil] = f"its session directory is owned by uid {NOBODY}"
        group = os.path.join(root, "evil2")
        os.mkdir(group, 0o700)
        _write(os.path.join(group, "cluster.json"), _record(group, [victim.pid]), 0o664)
        planted[group] = "is group-writable (mode 0664)"
        naming = os.path.join(root, "evil3")
        os.mkdir(naming, 0o700)
        _write(os.path.join(naming, "cluster.json"), _record(victim_dir, [victim.pid]))
        planted[naming] = f"names the session directory '{victim_dir}', not the one it is in"
        linked = os.path.join(root, "evil4")
        _write(os.path.join(victim_dir, "cluster.json"), _record(linked, [victim.pid]))
        os.symlink(victim_dir, linked)
        planted[linked] = "its session directory is a symbolic link"
        # One record of ours, trusted, whose PID is not its service.
        os.mkdir(trusted, 0o700)
        _write(os.path.join(trusted, "cluster.json"), _record(trusted, [victim.pid]))

        stopped = manta(env, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        said = " ".join(stopped.stderr.split())
        for path, why in planted.items():
            assert f"not trusted: {path}/cluster.json: {why}" in said, said
        assert victim.poll() is None  # not killed
        assert open(os.path.join(victim_dir, "precious")).read() == "keep me"
        assert all(os.path.lexists(p) for p in planted)
        assert not os.path.exists(trusted)  # its own, verified session dir: removed
        # init("auto") connects by none of them either, and says why.
        out, _ = driver(env, INIT.format(address="'auto'"))
        assert "REFUSED ConnectionError" in out and "not trusted" in out, out
    finally:
        victim.kill()
        victim.wait()


@as_root
def test_auto_never_joins_another_users_cluster(tmp):
    d, env = tmp
    started = manta(env, "start", "--head", "--port", "0")
    assert started.returncode == 0, started.stdout + started.stderr
    session = os.path.dirname(started.stdout.split("token file: ")[1].split()[0])
    record = os.path.join(session, "cluster.json")
    for p in (record, session):  # as if another user had started it
        os.chown(p, NOBODY, NOBODY)
    try:
        out, _ = driver(env, INIT.format(address="'auto'"))
        assert "REFUSED ConnectionError" in out and f"{record}: its session directory is owned by uid {NOBODY}" in out
        status = manta(env, "status")
        assert status.returncode != 0 and "not trusted" in " ".join(status.stderr.split())
        stopped = manta(env, "stop")
        assert "left alone, not trusted" in stopped.stderr and os.path.exists(record)
    finally:
        for p in (record, session):
            os.chown(p, os.geteuid(), os.getegid())
    # Its own again: found, serving all along, and stopped.
    out, _ = driver(env, INIT.format(address="'auto'"))
    assert "ANSWER 42" in out, out
    stopped = manta(env, "stop")
    assert "stopped the head" in stopped.stdout and not os.path.exists(session)
