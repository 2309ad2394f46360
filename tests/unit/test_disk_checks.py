"""The pure checks behind what manta trusts on disk: owner and mode of a path,
the choice of the session root, which process is a session's service, what
a cluster record may name, the spill file layout, and the store's books
when a spill file fails its check."""

from __future__ import annotations

import os
import stat

import pytest

from manta._private.cluster import NodeRecord, is_service_of, record_problem
from manta._private.node import spill
from manta._private.objectstore.store import StoreTable
from manta._private.private_files import problem, session_subdir
from manta._private.services import SERVICE_MAINS, choose_session_root

ME, OTHER = 1000, 1001


def st(mode: int, uid: int = ME) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, uid, 0, 0, 0, 0))


def test_a_private_directory_or_file_is_trusted():
    assert problem(st(stat.S_IFDIR | 0o700), ME, directory=True) is None
    assert problem(st(stat.S_IFDIR | 0o755), ME, directory=True) is None  # readable is allowed
    assert problem(st(stat.S_IFREG | 0o600), ME, directory=False) is None


@pytest.mark.parametrize("st_, directory, why", [
    (st(stat.S_IFLNK | 0o777), True, "is a symbolic link"),
    (st(stat.S_IFREG | 0o700), True, "is not a directory"),
    (st(stat.S_IFDIR | 0o700), False, "is not a regular file"),
    (st(stat.S_IFDIR | 0o700, OTHER), True, "is owned by uid 1001, not by uid 1000 (the current user)"),
    (st(stat.S_IFDIR | 0o770), True, "is group-writable (mode 0770)"),
    (st(stat.S_IFDIR | 0o1777), True, "is group and world-writable (mode 1777)"),
    (st(stat.S_IFREG | 0o602), False, "is world-writable (mode 0602)"),
])
def test_links_others_paths_and_shared_modes_are_refused_with_the_reason(st_, directory, why):
    assert problem(st_, ME, directory=directory) == why


def test_the_session_root_is_per_user():
    def usable(path: str) -> bool:
        return path == "/run/user/1000"

    tmp = "/tmp"
    assert choose_session_root({}, ME, tmp, usable) == "/tmp/manta-1000"
    assert choose_session_root({"XDG_RUNTIME_DIR": "/run/user/1000"}, ME, tmp, usable) == "/run/user/1000/manta"
    # Not usable (someone else's, shared, missing) or relative: the per-uid /tmp one.
    assert choose_session_root({"XDG_RUNTIME_DIR": "/run/user/0"}, ME, tmp, usable) == "/tmp/manta-1000"
    assert choose_session_root({"XDG_RUNTIME_DIR": "run/user/1000"}, ME, tmp, lambda p: True) == "/tmp/manta-1000"
    assert choose_session_root({"MANTA_TMPDIR": "/x", "XDG_RUNTIME_DIR": "/run/user/1000"}, ME, tmp, usable) == "/x"


def _argv(module: str, session_dir: str) -> list[str]:
    return ["/usr/bin/python3", "-m", module, "--session-dir", session_dir, "--token-file", session_dir + "/token"]


def test_a_service_is_recognized_by_its_whole_command_line():
    head = SERVICE_MAINS["head"]
    d = "/tmp/manta-0/s1"
    assert is_service_of(_argv(head, d), d)
    assert is_service_of(_argv(SERVICE_MAINS["agent"], d), d)
    # A longer path that begins with it, a process that merely mentions it,
    # another program, a different flag: none is the session's.
    assert not is_service_of(_argv(head, d + "x"), d)
    assert not is_service_of(["python3", "-c", "pass", "--session-dir", d], d)
    assert not is_service_of(["sleep", "100", d], d)
    assert not is_service_of(["python3", "-m", "http.server", "--session-dir", d], d)
    assert not is_service_of(["python3", "-m", head, "--token-file", d], d)
    assert not is_service_of([], d)


def _rec(**kw) -> NodeRecord:
    d = "/root/s1"
    fields = dict(session_dir=d, role="head", head_address="tcp:127.0.0.1:1", agent_address=f"unix:{d}/agent.sock",
                  token_file=f"{d}/token", pids=[10, 11])
    fields.update(kw)
    return NodeRecord(**fields)


def test_a_record_must_name_its_own_directory_and_only_pids():
    same = os.path.normpath
    assert record_problem(_rec(), "/root/s1", same) is None
    assert "names the session directory '/home/victim'" in record_problem(_rec(session_dir="/home/victim"), "/root/s1",
                                                                           same)
    assert "outside its session directory" in record_problem(_rec(token_file="/etc/shadow"), "/root/s1", same)
    for pids in ([0], [-1], ["10"], [True], 5):
        assert "as its processes" in record_problem(_rec(pids=pids), "/root/s1", same)
    # A link to it counts as naming it (resolved paths are compared).
    links = {"/link": "/root/s1"}
    assert record_problem(_rec(session_dir="/link"), "/root/s1", lambda p: links.get(p, p)) is None


def test_spill_layout_counts_every_chunk_and_its_tag():
    c = spill.CHUNK
    assert spill.chunk_count(0) == 1 and spill.chunk_count(1) == 1
    assert spill.chunk_count(c) == 1 and spill.chunk_count(c + 1) == 2
    assert spill.file_size(0) == spill.HEADER + spill.TAG
    assert spill.file_size(2 * c + 5) == spill.HEADER + 2 * c + 5 + 3 * spill.TAG
    # Nonces differ by file and by chunk; the associated data names the object, its size and the chunk.
    nonces = {spill.chunk_nonce(p.to_bytes(8, "big"), i) for p in range(3) for i in range(3)}
    assert len(nonces) == 9 and all(len(n) == 12 for n in nonces)
    assert spill.chunk_aad(b"a" * 20, 5, 1) != spill.chunk_aad(b"a" * 20, 6, 1) != spill.chunk_aad(b"b" * 20, 6, 1)


def test_a_failed_restore_forgets_the_object_and_frees_its_room():
    t = StoreTable(1 << 20)
    t.create(b"x", 1000, "c")
    t.seal(b"x")
    t.spilled_out(b"x")
    t.create(b"x", 1000, "restore")  # room made to read it back
    t.restore_failed(b"x")
    assert b"x" not in t.objects and b"x" not in t.spilled and t.used == 0
    assert t.free(b"x") is False  # the owner's later free finds nothing


def test_a_session_subdirectory_never_makes_the_session_again(tmp_path):
    session = tmp_path / "s1"
    session.mkdir()
    session_subdir(str(session / "sockets"))
    session_subdir(str(session / "sockets"))  # there already: fine
    assert stat.S_IMODE(os.stat(session / "sockets").st_mode) == 0o700
    session_dir_gone = tmp_path / "s2"
    with pytest.raises(FileNotFoundError):
        session_subdir(str(session_dir_gone / "worker_logs"))
    assert not session_dir_gone.exists()
