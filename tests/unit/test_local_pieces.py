"""Pieces of local mode (and the ones it shares with the cluster), without a session."""

from __future__ import annotations

import os
import sys
import types

from manta._private.local.running import env_vars_set
from manta._private.local.tasks import user_traceback
from manta._private.runtime.generators import Stream, take_next
from manta._private.runtime.refs import ReferenceTable


def test_env_vars_are_set_for_the_call_and_restored(monkeypatch):
    monkeypatch.setenv("LM_KEEP", "old")
    monkeypatch.delenv("LM_NEW", raising=False)
    with env_vars_set({"LM_KEEP": "new", "LM_NEW": "1"}):
        assert (os.environ["LM_KEEP"], os.environ["LM_NEW"]) == ("new", "1")
    assert os.environ["LM_KEEP"] == "old" and "LM_NEW" not in os.environ


def test_the_traceback_starts_at_user_code():
    import manta._private.local.tasks as tasks

    def user() -> None:
        raise ValueError("x")

    def machinery() -> None:
        user()

    # A frame that seems to be local mode's own, then the user's.
    machinery.__code__ = machinery.__code__.replace(co_filename=tasks.__file__)
    try:
        machinery()
    except ValueError:
        tb = sys.exc_info()[2]
    assert tb is not None
    names = []
    t = user_traceback(tb.tb_next)  # from machinery()'s frame down
    while t is not None:
        names.append(t.tb_frame.f_code.co_name)
        t = t.tb_next
    assert names == ["user"]


def test_take_next_hands_out_items_then_a_failed_end_once():
    table = ReferenceTable("me")
    rt = types.SimpleNamespace(refs=table, address="me", ref_deleted=table.remove_local)
    stream = Stream(b"t" * 16, b"end", -1)
    table.add_owned(b"end")
    table.add_owned(b"item", local=0)
    table.pin(b"item", "me")
    table.set_ready(b"item", b"v")
    stream.items.append(b"item")
    item, _ = take_next(rt, stream)
    assert item is not None and item._id == b"item"
    del item
    assert take_next(rt, stream) is None  # nothing yet, not ended
    table.set_ready(b"end", b"err", is_error=True)
    stream.ended = True
    ref, commands = take_next(rt, stream)
    assert ref is not None and ref._id == b"end" and commands == []
    assert take_next(rt, stream) == (None, [])
    del ref
    assert b"item" not in table.entries  # unpinned when handed out, freed with its ref


def test_an_escaped_ref_is_pinned_once():
    table = ReferenceTable("me")
    table.add_owned(b"x")
    table.escape(b"x")
    table.escape(b"x")
    assert table.entries[b"x"].pins == 1
    assert table.remove_local(b"x") == [] and b"x" in table.entries
