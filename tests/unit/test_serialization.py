import pickle
import threading

import numpy as np
import pytest

from manta import exceptions as exc
from manta._private.runtime import serialization as ser
from manta._private.runtime.serialization import describe_unpicklable, deserialize, serialize


def test_plain_values_round_trip():
    for v in (0, 1.5, "s", b"b", None, True, [1, {"a": (2, 3)}]):
        value, is_err = deserialize(serialize(v).to_bytes())
        assert value == v and not is_err


def test_numpy_buffers_are_out_of_band_and_aligned():
    a = np.arange(1000, dtype=np.float64)
    sv = serialize(a)
    assert len(sv.buffers) == 1
    data = sv.to_bytes()
    view = memoryview(data)
    b, _ = deserialize(view)
    assert np.array_equal(a, b)
    assert not b.flags.writeable  # bytes are immutable: a view, not a copy


def test_buffers_are_views_into_the_source():
    a = np.arange(100, dtype=np.int32)
    sv = serialize(a)
    region = bytearray(sv.size)
    sv.write_into(memoryview(region))
    b, _ = deserialize(memoryview(region).toreadonly())
    region[-4:] = (12345).to_bytes(4, "little")
    assert b[-1] == 12345


def test_errors_are_flagged():
    sv = serialize(ValueError("x"), flags=1)
    value, is_err = deserialize(sv.to_bytes())
    assert is_err and isinstance(value, ValueError)


def test_unpicklable_value_names_the_culprit():
    value = {"ok": 1, "bad": threading.Lock()}
    with pytest.raises(Exception) as info:
        serialize(value)
    text = describe_unpicklable(value, info.value)
    assert "['bad']" in text and "lock" in text.lower()


def test_task_error_is_instance_of_cause_and_survives_pickle():
    err = exc.RayTaskError("f", "Traceback...\nValueError: bad", ValueError("bad")).as_instanceof_cause()
    assert isinstance(err, ValueError) and isinstance(err, exc.RayTaskError)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ValueError) and isinstance(back, exc.RayTaskError)
    assert "Traceback" in str(back)


def test_get_timeout_error_is_timeout_error():
    assert issubclass(exc.GetTimeoutError, TimeoutError)
    assert issubclass(exc.ActorDiedError, exc.RayActorError)


def test_a_worker_loads_a_function_only_under_its_own_content_hash():
    from manta._private.ids import function_id
    from manta._private.runtime.serialization import dumps_function, load_function
    from manta.exceptions import RaySystemError

    blob = dumps_function(len)
    assert load_function(function_id(blob), blob) is len
    poison = dumps_function(abs)
    with pytest.raises(RaySystemError, match="is not the hash of"):
        load_function(function_id(blob), poison)  # a known id, another blob
    assert len(function_id(blob)) == 32 and function_id(blob) != function_id(poison)


def test_a_large_buffer_goes_into_the_layout_whole():
    # By threads into the store: tests/unit/test_region_write.py.
    value = np.arange(200_000, dtype=np.int64)
    sv = ser.serialize(value)
    out = bytearray(sv.size)
    sv.write_into(memoryview(out))
    assert (ser.deserialize(memoryview(out))[0] == value).all()
