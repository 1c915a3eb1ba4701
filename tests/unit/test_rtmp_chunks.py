"""RTMP framing (broadcaster/rtmp_chunks.py) and publish paths (rtmp_server.py), without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmcast.broadcaster.rtmp_chunks import (
    HANDSHAKE_SIZE,
    MAX_OPEN_CHUNK_STREAMS,
    MessageType,
    RtmpFraming,
    RtmpMessage,
    RtmpProtocolError,
    encode_message,
)
from swarmcast.broadcaster.rtmp_server import PublishRefusedError, check_key, parse_publish_path

C0C1 = b"\x03" + bytes(HANDSHAKE_SIZE)
C2 = bytes(HANDSHAKE_SIZE)


def framing_after_handshake(**kwargs: int) -> RtmpFraming:
    framing = RtmpFraming(**kwargs)
    assert framing.feed(C0C1) == []
    out = framing.data_to_send()
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE and out[0] == 3
    assert out[1 + HANDSHAKE_SIZE :] == C0C1[1:]  # S2 echoes C1
    assert framing.feed(C2) == []
    assert framing.handshake_done
    return framing


def test_handshake_then_messages_in_one_read_and_byte_by_byte() -> None:
    video = RtmpMessage(MessageType.VIDEO, 1, 40, bytes(range(256)) * 3, 6)
    wire = C0C1 + C2 + encode_message(video, 128)
    whole = RtmpFraming()
    assert whole.feed(wire) == [video]
    trickled = RtmpFraming()
    got = [m for i in range(len(wire)) for m in trickled.feed(wire[i : i + 1])]
    assert got == [video]


def test_not_rtmp_first_byte_is_an_error() -> None:
    with pytest.raises(RtmpProtocolError, match="first byte 0x47"):
        RtmpFraming().feed(b"GET / HTTP/1.1\r\n\r\n")


def test_set_chunk_size_changes_how_payloads_are_split() -> None:
    framing = framing_after_handshake()
    set_size = RtmpMessage(MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 4096), 2)
    video = RtmpMessage(MessageType.VIDEO, 1, 0, b"x" * 5000, 6)
    assert framing.feed(encode_message(set_size, 128) + encode_message(video, 4096)) == [set_size, video]


def test_interleaved_chunk_streams_assemble_separately() -> None:
    framing = framing_after_handshake()
    audio = encode_message(RtmpMessage(MessageType.AUDIO, 1, 10, b"a" * 300, 4), 128)
    video = encode_message(RtmpMessage(MessageType.VIDEO, 1, 20, b"v" * 300, 6), 128)
    # Chunks of 128: 1-byte basic header + 11 (first) then 1 + 128 per continuation.
    a_first, a_rest = audio[: 12 + 128], audio[12 + 128 :]
    v_first, v_rest = video[: 12 + 128], video[12 + 128 :]
    messages = framing.feed(a_first + v_first + a_rest + v_rest)
    assert [(m.type_id, m.payload[:1], len(m.payload)) for m in messages] == [(8, b"a", 300), (9, b"v", 300)]


def test_type3_chunk_starting_a_message_repeats_the_delta() -> None:
    framing = framing_after_handshake()
    first = encode_message(RtmpMessage(MessageType.AUDIO, 1, 1000, b"a" * 10, 4), 128)
    # Format 1 (delta 23, same length and type), then a format-3 chunk: a new message 23 ms later again.
    fmt1 = bytes([0x40 | 4]) + (23).to_bytes(3, "big") + (10).to_bytes(3, "big") + bytes([8]) + b"b" * 10
    fmt3 = bytes([0xC0 | 4]) + b"c" * 10
    messages = framing.feed(first + fmt1 + fmt3)
    assert [m.timestamp for m in messages] == [1000, 1023, 1046]
    assert [m.payload[:1] for m in messages] == [b"a", b"b", b"c"]


def test_extended_timestamp_on_continuation_chunks() -> None:
    """FFmpeg repeats the 4-byte extended timestamp on format-3 continuations (after 4 h 40 min of publishing);
    a reader that does not expect it loses the framing."""
    framing = framing_after_handshake()
    late = RtmpMessage(MessageType.VIDEO, 1, 0x01234567, b"v" * 300, 6)
    wire = encode_message(late, 128)
    assert wire.count((0x01234567).to_bytes(4, "big")) == 3  # the first chunk and both continuations
    after = RtmpMessage(MessageType.AUDIO, 1, 0x01234577, b"a", 4)
    assert framing.feed(wire + encode_message(after, 128)) == [late, after]


def test_message_over_the_limit_is_refused_before_it_is_kept() -> None:
    framing = framing_after_handshake(max_message_bytes=1000)
    header = bytes([6]) + (0).to_bytes(3, "big") + (1001).to_bytes(3, "big") + bytes([9]) + (1).to_bytes(4, "little")
    with pytest.raises(RtmpProtocolError, match="1001 bytes"):
        framing.feed(header + b"x" * 128)


def test_header_for_an_unknown_chunk_stream_is_an_error() -> None:
    framing = framing_after_handshake()
    with pytest.raises(RtmpProtocolError, match="no previous header"):
        framing.feed(bytes([0x80 | 7]) + b"\x00\x00\x01")


def test_too_many_half_assembled_chunk_streams() -> None:
    framing = framing_after_handshake()
    wire = b""
    for csid in range(3, 3 + MAX_OPEN_CHUNK_STREAMS + 1):
        # Only the first 128 of each 1000-byte message: each chunk stream stays half assembled.
        wire += encode_message(RtmpMessage(MessageType.VIDEO, 1, 0, b"x" * 1000, csid), 128)[: 12 + 128]
    with pytest.raises(RtmpProtocolError, match="chunk streams at once"):
        framing.feed(wire)


@pytest.mark.parametrize("size", [0, 1, 127])
def test_set_chunk_size_out_of_range(size: int) -> None:
    framing = framing_after_handshake()
    with pytest.raises(RtmpProtocolError, match=f"Set Chunk Size {size} "):
        framing.feed(encode_message(RtmpMessage(MessageType.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size), 2), 128))


@pytest.mark.parametrize(
    ("app", "name", "expected"),
    [
        ("live", "hello_world", ("hello_world", None)),  # rtmp://HOST/live/hello_world (FFmpeg's split)
        ("", "hello_world", ("hello_world", None)),  # rtmp://HOST/hello_world
        ("live/hello_world", "k3y", ("hello_world", "k3y")),  # rtmp://HOST/live/hello_world/k3y (FFmpeg)
        ("live", "hello_world/k3y", ("hello_world", "k3y")),  # OBS: server .../live, stream key id/key
        ("hello_world", "anything", ("hello_world", "anything")),  # app = id, the name is the key
        ("live", "cam1?token=x", ("cam1", None)),
    ],
)
def test_publish_paths(app: str, name: str, expected: tuple[str, str | None]) -> None:
    assert parse_publish_path(app, name) == expected


@pytest.mark.parametrize(("app", "name"), [("live", ""), ("", ""), ("live", "a/b/c"), ("live", "current"),
                                           ("live", "../etc"), ("live", "x" * 65), ("live", "sp ace")])  # fmt: skip
def test_bad_publish_paths(app: str, name: str) -> None:
    with pytest.raises(PublishRefusedError):
        parse_publish_path(app, name)


def test_publish_key() -> None:
    check_key(None, None)
    check_key(None, "whatever")
    check_key("s3cret", "s3cret")
    for attempt in (None, "s3cre", "s3cret!", ""):
        with pytest.raises(PublishRefusedError) as error:
            check_key("s3cret", attempt)
        assert error.value.code == "NetStream.Publish.Unauthorized"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_any_bytes_after_the_handshake_give_messages_or_our_error(chunks: list[bytes]) -> None:
    framing = framing_after_handshake(max_message_bytes=4096)
    try:
        for chunk in chunks:
            for message in framing.feed(chunk):
                assert len(message.payload) <= 4096
    except RtmpProtocolError:
        pass
    assert len(framing._buffer) <= 4096 + 64  # never more than one chunk's worth waits unparsed
