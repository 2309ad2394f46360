"""Terminal escapes: what a task prints reaches its driver's terminal, and a
task's control sequences must not.

A task prints sequences that would retitle the window, write the
clipboard, clear the screen and rewrite earlier lines, and ask the terminal
to answer (which a shell reads as typed input), to stdout and stderr, with
its own text after a carriage return meant to overwrite the driver's
`(pid=...)` prefix. The driver's output shows them as text (`\\x1b`), keeps
colours, and still shows every line.
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

pytestmark = [
    pytest.mark.skipif(BACKEND != "manta", reason="manta's log forwarding"),
    pytest.mark.timeout(120),
]

ATTACK = "\\x1b]0;pwned\\x07\\x1b]52;c;ZWNobyBoaQ==\\x07\\x1b[2J\\x1b[1A\\x1b[2K\\x1bP$q\\x1b\\\\\\x9b6n"


def test_a_tasks_control_sequences_reach_the_drivers_terminal_as_text():
    script = textwrap.dedent(f"""
        import sys, threading
        import manta

        class Watch:
            # The driver's stream, telling when the task's last line of it arrived.
            def __init__(self, inner, last):
                self.inner, self.last, self.seen = inner, last, threading.Event()
            def write(self, text):
                if self.last in text:
                    self.seen.set()
                return self.inner.write(text)
            def flush(self):
                self.inner.flush()

        sys.stdout, sys.stderr = Watch(sys.stdout, "green"), Watch(sys.stderr, "to stderr")
        manta.init(num_cpus=1)

        @manta.remote
        def hostile():
            print("innocent\\rFORGED LINE")
            print("before {ATTACK} after")
            print("\\x1b[32mgreen\\x1b[0m")
            print("to stderr {ATTACK}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            return 1

        manta.get(hostile.remote())
        assert sys.stdout.seen.wait(30) and sys.stderr.seen.wait(30), "the task's output never arrived"
        manta.shutdown()
    """)
    root = tempfile.mkdtemp(prefix="trm")  # short: Unix socket paths are limited
    env = {**os.environ, "MANTA_TMPDIR": root,
           "PYTHONPATH": os.pathsep.join([REPO_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("MANTA_ADDRESS", None)
    try:
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=90)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    out, err = r.stdout.decode(), r.stderr.decode()
    for stream, text in ((out, "before"), (err, "to stderr")):
        line = next(ln for ln in stream.splitlines() if text in ln)
        assert "\\x1b]0;pwned\\x07" in line and "\\x9b6n" in line, line
    tasks = [ln for ln in out.splitlines() if ln.startswith("(")]
    # No raw escape but the colour's, no C1 control, no carriage return.
    raw = "".join(tasks).replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "\x1b" not in raw and "\x9b" not in raw and "\x07" not in raw and "\r" not in out, tasks
    assert "\x1b" not in err.replace("\\x1b", "")
    # The forged text is shown after the driver's prefix, not over it; colours pass.
    assert any(ln.startswith("(") and ln.endswith(") FORGED LINE") for ln in tasks), tasks
    assert any(ln.endswith("\x1b[32mgreen\x1b[0m") for ln in tasks), tasks


def test_names_keys_and_causes_from_a_job_reach_the_cli_as_text():
    """`manta list` and `manta audit` print what jobs named (actors, their death
    causes, KV keys) on an operator's terminal: as text, never as controls or
    rich markup (which makes hyperlinks)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from integrity_support import cluster as start_cluster

    hostile = "evil\x1b]0;pwned\x07[link=https://evil.example]click[/link]\x9b6n"
    with start_cluster("trc", "--num-cpus", "1") as c:
        c.driver(f"""
            from manta.experimental import internal_kv

            @manta.remote
            class Sleeper:
                def __init__(self):
                    pass

                def ping(self):
                    return 1

            a = Sleeper.options(name={hostile!r}, lifetime="detached").remote()
            manta.get(a.ping.remote())
            internal_kv._internal_kv_put({hostile!r}.encode(), b"v")
            manta.shutdown()
        """)
        shown = c.cli("list", "actors").stdout + c.cli("audit", "--path", c.audit).stdout
    assert "\\x1b]0;pwned\\x07" in shown and "[link=https://evil.example]" in shown, shown
    assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown, repr(shown)
