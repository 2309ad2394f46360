import pytest

from manta._private.protocol import messages as m
from manta._private.protocol.chunks import chunk_prefix
from manta._private.protocol.framing import FrameDecoder, FrameTooLarge, encode_frame
from manta._private.protocol.identity import Credential


def test_frames_split_and_joined_arbitrarily():
    payloads = [b"", b"a", b"hello" * 100, bytes(range(256))]
    stream = b"".join(encode_frame(p) for p in payloads)
    for step in (1, 3, 7, len(stream)):
        dec = FrameDecoder(1 << 20)
        out = []
        for i in range(0, len(stream), step):
            out += dec.feed(stream[i : i + step])
        assert out == payloads
        assert dec.buffered == 0


def test_large_frames_among_small_ones_survive_any_split():
    big = bytes(range(256)) * (FrameDecoder.BIG // 256 + 7)  # past the own-buffer size
    payloads = [b"a", big, b"bc", big[::-1], b""]
    stream = b"".join(encode_frame(p) for p in payloads)
    for step in (1000, 65536, FrameDecoder.BIG - 3, len(stream)):
        dec = FrameDecoder(1 << 24)
        out = []
        for i in range(0, len(stream), step):
            out += dec.feed(stream[i : i + step])
        assert [bytes(f) for f in out] == payloads
        assert dec.buffered == 0


def test_large_frame_buffers_are_reused_only_once_nothing_holds_them():
    dec = FrameDecoder(1 << 24)
    stream = encode_frame(b"x" * FrameDecoder.BIG)

    def one_frame():
        (frame,) = dec.feed(stream[:100]) + dec.feed(stream[100:])
        return frame

    first = one_frame()
    view = memoryview(first)  # e.g. a decoded message's data
    second = one_frame()
    assert second is not first  # still in use: never overwritten
    del view, second
    third = one_frame()
    assert third is first or bytes(third) == b"x" * FrameDecoder.BIG
    del first
    ids = {id(one_frame()) for _ in range(5)}
    assert len(ids) <= 2  # with nothing held, buffers come back


def test_oversized_frame_is_rejected_before_buffering():
    dec = FrameDecoder(100)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(encode_frame(b"x" * 101)[:10])
    assert info.value.size == 101


def test_messages_round_trip_with_type_tags():
    spec = m.TaskSpec(
        task_id=b"t" * 16, job_id=1, name="f", fn_id=b"f" * 16, args=[m.Arg(data=b"1")],
        kwarg_names=[], num_returns=1, owner="unix:/x", resources={"CPU": 1.0},
    )
    msg = m.PushTask(rid=7, spec=spec)
    back = m.decode(m.encode(msg))
    assert type(back) is m.PushTask and back == msg


def test_malformed_message_raises_decode_error():
    with pytest.raises(m.DecodeError):
        m.decode(b"\x93\xa4Nope\x01\x02")
    with pytest.raises(m.DecodeError):
        m.decode(m.encode(m.Ack(rid=1))[:-1] + b"\xc1")


def test_a_chunk_sent_as_prefix_and_raw_bytes_decodes_as_a_store_chunk():
    data = bytes(range(256)) * 1000
    msg = m.decode(chunk_prefix(42, len(data), b"d" * 16) + data)
    assert isinstance(msg, m.StoreChunk) and msg.rid == 42 and bytes(msg.data) == data and msg.digest == b"d" * 16
    assert m.decode(chunk_prefix(1, 0)).data == b""


@pytest.mark.parametrize("rid", [1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**40])
def test_the_rid_is_written_into_a_frozen_message_without_copying_it(rid):
    msg = m.GetObject(object_id=b"x" * 20, lost_node=b"")
    (payload,) = FrameDecoder(1 << 20).feed(m.frame(msg, rid))
    got = m.decode(payload)
    assert got.rid == rid and got.object_id == msg.object_id
    assert msg.rid == 0  # unchanged


def test_a_message_built_with_a_rid_cannot_be_sent_as_a_request():
    with pytest.raises(ValueError, match="without a rid"):
        m.frame(m.Ack(rid=5), 9)


def test_messages_are_frozen():
    msg = m.Ack()
    with pytest.raises(AttributeError):
        msg.rid = 3  # type: ignore[misc]


def test_error_kinds_and_states_are_checked_when_decoded():
    good = m.encode(m.ErrorReply(kind=m.ErrorKind.VALUE, message="no"))
    assert m.decode(good).kind is m.ErrorKind.VALUE
    bad = good.replace(b"ValueError", b"SystemExit")
    with pytest.raises(m.DecodeError):
        m.decode(bad)


def test_fork_server_messages_round_trip():
    cfg = m.ForkConfig(
        session=m.SessionInfo(session_dir="/s", head_address="unix:/h", agent_address="unix:/a",
                              credential=Credential(cluster_key=b"k" * 32)),
        config=m.Config(heartbeat_s=0.2),
        prestart=[m.ForkWorker(worker_id=b"w", credential=Credential(pass_blob=b"p", pass_sig=b"s", key=b"k"))],
    )
    (payload,) = FrameDecoder(1 << 20).feed(m.frame(cfg))
    assert m.decode_fork(payload) == cfg
