"""The decisions behind `manta logs|memory|timeline` and the driver's
progress bars, without processes: reading log chunks (tails, a task's
lines, rotation), who may read a log, the memory view's states, the
trace's events, and how bars are drawn."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

from manta._private.head.tools import HeadTools
from manta._private.node.logfiles import read_chunk
from manta._private.protocol import state_messages as sm
from manta._private.protocol import tool_messages as tm
from manta._private.protocol.identity import Kind, Principal, Role
from manta._private.runtime.memory_view import objects_view
from manta._private.runtime.progress import Bars, BarState
from manta._private.runtime.timeline import trace_events


def test_tail_then_follow_across_rotation_and_truncation(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "a.log")
    with open(path, "w") as f:
        f.write("l1\nl2\nl3\n")
    c = read_chunk(path, tail=2)
    assert c.data == b"l2\nl3\n" and not c.rotated
    assert read_chunk(path, offset=c.offset, inode=c.inode).data == b""
    with open(path, "a") as f:
        f.write("l4\n")
    c = read_chunk(path, offset=c.offset, inode=c.inode)
    assert c.data == b"l4\n"
    os.rename(path, path + ".1")
    with open(path, "w") as f:
        f.write("new\n")
    c2 = read_chunk(path, offset=c.offset, inode=c.inode)
    assert c2.rotated and c2.data == b"new\n"
    with open(path, "w") as f:  # truncated in place: shorter than where the reader was
        f.write("x\n")
    c3 = read_chunk(path, offset=c2.offset, inode=c2.inode)
    assert c3.rotated and c3.data == b"x\n"
    # The last line without its newline is a line; tail 0 is nothing.
    with open(path, "w") as f:
        f.write("a\nb")
    assert read_chunk(path, tail=1).data == b"b"
    assert read_chunk(path, tail=0).data == b""
    assert read_chunk(path, tail=9).data == b"a\nb"


def test_long_reads_come_in_whole_lines(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "big.log")
    with open(path, "w") as f:
        f.write("".join(f"line {i}\n" for i in range(1000)))
    got, offset, inode = b"", -1, 0
    while True:
        c = read_chunk(path, offset=offset, inode=inode, max_bytes=100)
        assert c.data.endswith(b"\n")
        got += c.data
        offset, inode = c.offset, c.inode
        if not c.more:
            break
    assert got.decode().splitlines() == [f"line {i}" for i in range(1000)]


def test_a_tasks_lines_between_markers_followed(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "worker.out")
    m = tm.TASK_MARKER
    with open(path, "w") as f:
        f.write(f"{m}aa\nx1\n{m}bb\ny1\n{m}aa\nx2\npart")
    c = read_chunk(path, task_id="aa")
    assert c.data == b"x1\nx2\n" and c.in_task
    with open(path, "a") as f:
        f.write(f"ial\n{m}bb\ny2\n")
    c = read_chunk(path, task_id="aa", offset=c.offset, inode=c.inode, in_task=c.in_task)
    assert c.data == b"partial\n" and not c.in_task
    assert read_chunk(path, task_id="aa", tail=1).data == b"partial\n"
    assert read_chunk(path, task_id="cc").data == b""


def _principal(kind: Kind, role: Role, job_id: int = 0, namespaces: tuple[str, ...] = ()) -> Principal:
    return Principal(kind=kind, role=role, name="p", job_id=job_id, namespaces=list(namespaces))


def test_who_may_read_a_log() -> None:
    head = SimpleNamespace(jobs={1: SimpleNamespace(namespace="a"), 2: SimpleNamespace(namespace="b")})
    tools = HeadTools(head)  # type: ignore[arg-type]
    admin = _principal(Kind.PERSON, Role.ADMIN)
    job1 = _principal(Kind.JOB, Role.SUBMIT, job_id=1)
    viewer_a = _principal(Kind.PERSON, Role.VIEW, namespaces=("a",))
    viewer_all = _principal(Kind.PERSON, Role.VIEW)
    assert tools.refusal(admin, 0, "agent.log") == ""
    assert "admin" in tools.refusal(viewer_all, 0, "agent.log")
    assert tools.refusal(job1, 1, "x") == "" and "job 2" in tools.refusal(job1, 2, "x")
    assert tools.refusal(viewer_a, 1, "x") == "" and "namespace 'b'" in tools.refusal(viewer_a, 2, "x")
    assert tools.refusal(viewer_all, 2, "x") == ""


def test_memory_view_states() -> None:
    n1, n2 = b"\x01" * 16, b"\x02" * 16
    ids = {name: name.encode().ljust(20, b"\0") for name in ("pinned", "free", "spilled", "lost", "inline", "copy")}
    stores = [
        tm.StoreReport(node_id=n1, ip="10.0.0.1", capacity=100, used=30, spilled_bytes=7, entries=[
            tm.StoreEntry(object_id=ids["pinned"], size=10, spilled=False, pins=1),
            tm.StoreEntry(object_id=ids["free"], size=20, spilled=False),
            tm.StoreEntry(object_id=ids["spilled"], size=7, spilled=True),
        ]),
        tm.StoreReport(node_id=n2, ip="10.0.0.2", capacity=100, used=20, spilled_bytes=0, entries=[
            tm.StoreEntry(object_id=ids["free"], size=20, spilled=False, copy=True),
        ]),
    ]
    refs = [
        sm.RefRecord(object_id=ids["pinned"], reference_type="LOCAL_REFERENCE", task_status="FINISHED", owned=True),
        sm.RefRecord(object_id=ids["lost"], reference_type="LOCAL_REFERENCE", task_status="FINISHED", in_store=True,
                     owned=True),
        sm.RefRecord(object_id=ids["inline"], reference_type="LOCAL_REFERENCE", task_status="FINISHED", size=5,
                     owned=True),
    ]
    processes = [sm.ProcessObjects(pid=42, driver=True, node_id=n1, ip="10.0.0.1", refs=refs)]
    view = objects_view(stores, processes)
    state = {o.object_id: o for o in view.objects}
    assert state[ids["pinned"]].state == "PINNED" and state[ids["pinned"]].owner == "10.0.0.1 pid 42 (driver)"
    assert state[ids["free"]].state == "IN_MEMORY"
    assert state[ids["free"]].where.startswith("10.0.0.1")  # the primary copy first
    assert state[ids["spilled"]].state == "SPILLED" and state[ids["spilled"]].size == 7
    assert state[ids["lost"]].state == "LOST"
    assert state[ids["inline"]].state == "INLINE" and state[ids["inline"]].size == 5
    assert [(n.in_memory, n.pinned, n.spilled) for n in view.nodes] == [(2, 1, 1), (1, 0, 0)]
    assert view.counts() == {"PINNED": 1, "IN_MEMORY": 1, "SPILLED": 1, "LOST": 1, "INLINE": 1}


def test_trace_events() -> None:
    tasks = [
        {"task_id": "t1", "name": "f", "type": "NORMAL_TASK", "state": "FINISHED", "node_id": "n1", "worker_id": "w1",
         "worker_pid": 7, "creation_time_ms": 1000, "start_time_ms": 1010, "end_time_ms": 1030},
        # Finished between two reports of its worker: drawn from its submission.
        {"task_id": "t2", "name": "f", "type": "NORMAL_TASK", "state": "FAILED", "node_id": "n1", "worker_id": "w1",
         "creation_time_ms": 1040, "start_time_ms": None, "end_time_ms": 1050},
        {"task_id": "t3", "name": "g", "type": "ACTOR_TASK", "state": "RUNNING", "node_id": "n2", "worker_id": "w2",
         "creation_time_ms": 1000, "start_time_ms": 1100, "end_time_ms": None},
        {"task_id": "t4", "name": "h", "state": "PENDING_NODE_ASSIGNMENT", "creation_time_ms": 1000},
    ]
    events = trace_events(tasks, now_ms=1200)
    x = {e["args"]["task_id"]: e for e in events if e["ph"] == "X"}
    assert set(x) == {"t1", "t2", "t3"}
    assert x["t1"]["ts"] == 1010_000 and x["t1"]["dur"] == 20_000 and x["t1"]["args"]["start"] == "running"
    assert x["t2"]["args"]["start"] == "submitted" and x["t2"]["cname"] == "terrible"
    assert x["t3"]["dur"] == 100_000  # still running: drawn up to now
    assert x["t1"]["pid"] == x["t2"]["pid"] != x["t3"]["pid"] and x["t1"]["tid"] == x["t2"]["tid"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "worker w1 pid 7" in names and "node n1" in names


def test_bars_off_a_terminal_print_each_update_once() -> None:
    out = io.StringIO()
    bars = Bars(out, is_tty=False, clock=lambda: 10.0)
    s = BarState(uuid="u", desc="work", total=2, pid=5, ip="h", started=9.0)
    for n in (0, 1, 2):
        s.n = n
        bars.update(BarState.from_line(s.to_line()))  # type: ignore[arg-type]
    s.closed = True
    bars.update(s)  # closing after the last update printed adds nothing
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[2].startswith("work: 100%|") and " 2/2 " in lines[2]
    assert "(pid=5, ip=h)" in lines[0]
    assert BarState.from_line(tm.PROGRESS_PREFIX + "{not json") is None


def test_bars_on_a_terminal_stay_below_other_output() -> None:
    out = io.StringIO()
    bars = Bars(out, is_tty=True, clock=lambda: 10.0)
    bars.update(BarState(uuid="u", desc="work", total=4, n=1, started=9.0))
    bars.write("(f pid=1) hello\n")
    text = out.getvalue()
    # The bar was drawn, cleared (cursor up one line, erase below), the line written, the bar drawn again.
    first = text.index("work:")
    clear = text.index("\x1b[1A\r\x1b[J")
    assert first < clear < text.index("(f pid=1) hello") < text.rindex("work:")
    bars.update(BarState(uuid="u", desc="work", total=4, n=4, started=9.0, closed=True))
    assert not bars.bars and out.getvalue().rstrip().endswith("4/4 [00:01, 4.00it/s]")


def test_a_log_is_never_read_through_a_link(tmp_path: object) -> None:
    import pytest

    secret = os.path.join(str(tmp_path), "token")
    with open(secret, "w") as f:
        f.write("secret\n")
    soft, hard = os.path.join(str(tmp_path), "soft.out"), os.path.join(str(tmp_path), "hard.out")
    os.symlink(secret, soft)
    os.link(secret, hard)
    with pytest.raises(OSError):
        read_chunk(soft)
    with pytest.raises(ValueError, match="link"):
        read_chunk(hard)


def test_a_workers_file_rotates_at_its_bound_and_each_file_names_its_task(tmp_path: object, monkeypatch) -> None:
    from manta._private.runtime import worker_logs

    monkeypatch.setattr(worker_logs, "MAX_BYTES", 200)
    log = worker_logs.WorkerLog(str(tmp_path), b"\x01" * 16)
    task = b"\x02" * 16
    for i in range(20):
        log.write(False, task, f"line {i:02d} of the task\n")
    log.write(False, task, tm.PROGRESS_PREFIX + '{"uuid": "u"}\n')  # a bar's state: not kept
    path = log.paths[0]
    assert os.path.exists(path + ".1") and os.path.getsize(path) <= 200 + 64
    c = read_chunk(path, task_id=task.hex())
    assert c.data.endswith(b"line 19 of the task\n")  # the new file starts with its marker
    assert tm.PROGRESS_PREFIX.encode() not in open(path, "rb").read()


def test_a_workers_output_waits_for_a_flush_a_full_buffer_or_its_timer(tmp_path: object) -> None:
    from manta._private.runtime import worker_logs

    timers: list[tuple[float, object]] = []
    log = worker_logs.WorkerLog(str(tmp_path), b"\x01" * 16, lambda delay, fn: timers.append((delay, fn)))
    log.write(False, b"\x02" * 16, "first\n")
    log.write(False, b"\x02" * 16, "second\n")
    assert not os.path.exists(log.paths[0]) and len(timers) == 1  # one timer for what waits
    assert timers[0][0] == worker_logs.FLUSH_S
    timers[0][1]()  # type: ignore[operator]  # the timer fires (on the I/O thread)
    assert open(log.paths[0]).read().splitlines()[1:] == ["first", "second"]
    log.write(True, b"\x03" * 16, "x" * worker_logs.BUFFER_BYTES + "\n")  # a full buffer: written at once
    assert os.path.getsize(log.paths[1]) > worker_logs.BUFFER_BYTES
    log.write(False, b"\x04" * 16, "at the end of a task\n")
    log.flush()  # the executor flushes its streams before it answers
    assert read_chunk(log.paths[0], task_id=(b"\x04" * 16).hex()).data == b"at the end of a task\n"
