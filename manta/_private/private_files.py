"""Directories and files that only their user may touch.

manta keeps its session directories, cluster records, tokens and spilled
objects on disk. Before it trusts such a path it checks, on the path itself
and never through a symbolic link, that the current user owns it and that
no one else can write to it. `problem` is that check as a pure function of
a stat result (unit-tested without files); the rest opens or creates with
O_NOFOLLOW and checks the result.
"""

from __future__ import annotations

import os
import stat


class UnsafePath(PermissionError):
    """A path manta would keep private is someone else's, shared or a link;
    the message names the path and what is wrong with it."""


def problem(st: os.stat_result, uid: int, *, directory: bool) -> str | None:
    """What makes a path with this `lstat` result unfit to trust, or None.

    Fit: a directory (or a regular file), not a symbolic link, owned by
    `uid`, and neither group- nor world-writable. Readable by others is
    allowed here; the callers that create a path create it 0700 or 0600.
    """
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if directory and not stat.S_ISDIR(mode):
        return "is not a directory"
    if not directory and not stat.S_ISREG(mode):
        return "is not a regular file"
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by uid {uid} (the current user)"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = " and ".join(w for bit, w in ((stat.S_IWGRP, "group"), (stat.S_IWOTH, "world")) if mode & bit)
        return f"is {who}-writable (mode {stat.S_IMODE(mode):04o})"
    return None


def check_dir(path: str, what: str) -> None:
    """Raises UnsafePath unless `path` is a directory fit to trust."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise UnsafePath(f"manta cannot use the {what} {path}: {e.strerror}") from None
    why = problem(st, os.geteuid(), directory=True)
    if why is not None:
        raise UnsafePath(f"manta refuses the {what} {path}: it {why}")


def private_dir(path: str, what: str) -> str:
    """`path` as a directory fit to trust: made 0700 if missing (its parents
    too), else checked as it is (an existing one keeps its mode)."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise UnsafePath(f"manta cannot create the {what} {path}: {e.strerror}") from None
    check_dir(path, what)
    return path


def open_private_dir(path: str, what: str) -> int:
    """A descriptor of the directory `path`, made 0700 if missing, checked
    through the descriptor itself: files opened relative to it stay in that
    directory even if its path is later replaced by a link."""
    private_dir(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise UnsafePath(f"manta cannot open the {what} {path}: {e.strerror}") from None
    why = problem(os.fstat(fd), os.geteuid(), directory=True)
    if why is not None:
        os.close(fd)
        raise UnsafePath(f"manta refuses the {what} {path}: it {why}")
    return fd


def session_subdir(path: str, mode: int = 0o700) -> None:
    """Makes `path`, one level only: its parent (a session directory) must exist.

    A worker that starts while its cluster is being torn down must not make
    the session directory again (os.makedirs would): the directory it made was
    left behind after the head removed the session (seen in CI). Raises
    FileNotFoundError when the session is gone."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
