"""This process's command line as others see it (/proc/<pid>/cmdline, `ps`).

The kernel shows the bytes of the process's arguments area, which the
process may write over in place (never longer): the CLI blanks a password
it was given there (`cluster.hide_from_argv`), and a process forked to be
another one takes that one's command line (`node/forkserver.retitle`).
"""

from __future__ import annotations

from collections.abc import Callable


def rewrite(change: Callable[[bytes], bytes]) -> bool:
    """Writes `change(args)` over this process's arguments area `args` (of the
    same length; where it is unchanged, nothing is written). False where that
    cannot be done: no /proc, or a kernel that refuses writes to /proc/self/mem."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        # arg_start and arg_end are the stat fields 48 and 49; `fields` starts at field 3.
        start, end = int(fields[45]), int(fields[46])
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            args = mem.read(end - start)
            new = change(args)
            if len(new) != len(args):
                raise ValueError(f"a command line of {len(new)} bytes for an arguments area of {len(args)}")
            if new != args:
                mem.seek(start)
                mem.write(new)
        return True
    except (OSError, ValueError, IndexError):
        return False
