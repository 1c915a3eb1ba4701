"""Property tests of the frame codec: round trips, hostile bytes, and every bound the decoder enforces."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmcast.wire.codec import (
    FrameDecoder,
    decode_handshake,
    decode_payload,
    encode_handshake,
    encode_message,
    encode_payload,
)
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import (
    HANDSHAKE_LENGTH,
    MAX_CREDENTIAL_SIZE,
    MAX_FRAME_LENGTH,
    MAX_INDEX,
    MAX_METADATA_SIZE,
    MAX_PEX_PEERS,
    MAX_PIECE_SIZE,
    MAX_WINDOW_PIECES,
    PROTOCOL_MAGIC,
    PROTOCOL_VERSION,
    SIGNATURE_LENGTH,
    Cancel,
    Choke,
    CredentialKind,
    CredentialMessage,
    Goodbye,
    GoodbyeReason,
    Handshake,
    HandshakeFlags,
    Have,
    Interested,
    KeepAlive,
    Message,
    MessageType,
    Metadata,
    MetadataRequest,
    NotInterested,
    Pex,
    Piece,
    PieceFlags,
    Reject,
    Request,
    Unchoke,
    Window,
)

# -- strategies ----------------------------------------------------------------------------------------------------

indices = st.integers(min_value=0, max_value=MAX_INDEX)
piece_flags = st.integers(min_value=0, max_value=7).map(PieceFlags)
handshake_flags = st.integers(min_value=0, max_value=3).map(HandshakeFlags)
ports = st.integers(min_value=0, max_value=65535)
# str() of an ipaddress object is the canonical text the decoder produces.
hosts = st.ip_addresses().map(str)


@st.composite
def windows(draw: st.DrawFn, max_count: int = 300) -> Window:
    count = draw(st.integers(min_value=0, max_value=max_count))
    first = draw(st.integers(min_value=0, max_value=MAX_INDEX + 1 - count))
    have = tuple(draw(st.lists(st.booleans(), min_size=count, max_size=count)))
    random_access = tuple(draw(st.lists(st.booleans(), min_size=count, max_size=count)))
    return Window(first, have, random_access)


pieces = st.builds(
    Piece,
    index=indices,
    flags=piece_flags,
    signature=st.binary(min_size=SIGNATURE_LENGTH, max_size=SIGNATURE_LENGTH),
    data=st.binary(min_size=1, max_size=4096),
)
pexes = st.lists(st.tuples(hosts, ports), max_size=MAX_PEX_PEERS).map(lambda peers: Pex(tuple(peers)))

STRATEGIES: dict[MessageType, st.SearchStrategy[Message]] = {
    MessageType.KEEPALIVE: st.just(KeepAlive()),
    MessageType.CHOKE: st.just(Choke()),
    MessageType.UNCHOKE: st.just(Unchoke()),
    MessageType.INTERESTED: st.just(Interested()),
    MessageType.NOT_INTERESTED: st.just(NotInterested()),
    MessageType.WINDOW: windows(),
    MessageType.HAVE: st.builds(Have, index=indices, flags=piece_flags),
    MessageType.REQUEST: st.builds(Request, index=indices),
    MessageType.CANCEL: st.builds(Cancel, index=indices),
    MessageType.PIECE: pieces,
    MessageType.REJECT: st.builds(Reject, index=indices),
    MessageType.PEX: pexes,
    MessageType.GOODBYE: st.sampled_from(GoodbyeReason).map(Goodbye),
    MessageType.METADATA_REQUEST: st.just(MetadataRequest()),
    MessageType.METADATA: st.binary(max_size=4096).map(Metadata),
    MessageType.CREDENTIAL: st.builds(CredentialMessage, kind=st.sampled_from(CredentialKind),
                                      credential=st.binary(min_size=1, max_size=MAX_CREDENTIAL_SIZE)),
}
messages: st.SearchStrategy[Message] = st.one_of(*STRATEGIES.values())
handshakes = st.builds(
    Handshake,
    content_id=st.binary(min_size=20, max_size=20),
    peer_id=st.binary(min_size=20, max_size=20),
    listen_port=ports,
    flags=handshake_flags,
)


def _frame(type_byte: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload) + 1, type_byte) + payload


def _decode_error(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        FrameDecoder().feed(data)
    return info.value


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -- round trips ---------------------------------------------------------------------------------------------------


def test_every_message_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(MessageType)


@pytest.mark.parametrize("kind", list(MessageType), ids=lambda k: k.name)
@given(data=st.data())
def test_round_trip_each_type(kind: MessageType, data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[kind])
    encoded = encode_message(message)
    assert encoded[4] == kind
    assert struct.unpack(">I", encoded[:4])[0] == len(encoded) - 4
    decoder = FrameDecoder()
    assert decoder.feed(encoded) == [message]
    assert decoder.buffered == 0


@given(batch=st.lists(messages, max_size=20), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_round_trip_in_random_chunks(batch: list[Message], cuts: list[int]) -> None:
    stream = b"".join(encode_message(m) for m in batch)
    decoder = FrameDecoder()
    out: list[Message] = []
    for chunk in _split(stream, cuts):
        out.extend(decoder.feed(chunk))
    assert out == batch
    assert decoder.buffered == 0


@given(batch=st.lists(messages, min_size=1, max_size=5))
def test_round_trip_byte_by_byte(batch: list[Message]) -> None:
    stream = b"".join(encode_message(m) for m in batch)
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i : i + 1]))
    assert out == batch


@given(handshakes)
def test_handshake_round_trip(handshake: Handshake) -> None:
    encoded = encode_handshake(handshake)
    assert len(encoded) == HANDSHAKE_LENGTH
    assert encoded[:4] == PROTOCOL_MAGIC
    assert decode_handshake(encoded) == handshake


@settings(max_examples=5)
@given(first=st.integers(min_value=0, max_value=MAX_INDEX + 1 - MAX_WINDOW_PIECES), bits=st.booleans())
def test_full_window_round_trip(first: int, bits: bool) -> None:
    have = tuple((i % 3 == 0) ^ bits for i in range(MAX_WINDOW_PIECES))
    window = Window(first, have, tuple(not b for b in have))
    assert FrameDecoder().feed(encode_message(window)) == [window]


def test_largest_piece_and_metadata_round_trip() -> None:
    piece = Piece(MAX_INDEX, PieceFlags.RANDOM_ACCESS, b"\x01" * SIGNATURE_LENGTH, b"\xab" * MAX_PIECE_SIZE)
    encoded = encode_message(piece)
    assert len(encoded) == 4 + MAX_FRAME_LENGTH
    assert FrameDecoder().feed(encoded) == [piece]
    metadata = Metadata(b"d" * MAX_METADATA_SIZE)
    assert FrameDecoder().feed(encode_message(metadata)) == [metadata]


def test_documented_examples() -> None:
    """The worked examples in docs/protocol.md, byte for byte."""
    handshake = Handshake(bytes(range(1, 21)), b"-SC0100-" + bytes(range(0xA0, 0xAC)), 8621, HandshakeFlags.SOURCE)
    assert encode_handshake(handshake).hex(" ") == (
        "53 57 43 50 01 01 21 ad 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 "
        "2d 53 43 30 31 30 30 2d a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab"
    )
    assert encode_message(Have(1234, PieceFlags.RANDOM_ACCESS)).hex(" ") == "00 00 00 0a 06 00 00 00 00 00 00 04 d2 01"
    assert encode_message(Request(1234)).hex(" ") == "00 00 00 09 07 00 00 00 00 00 00 04 d2"
    assert encode_message(KeepAlive()).hex(" ") == "00 00 00 01 00"
    window = Window(
        1000,
        (True, False, True, True, False, False, False, False, True, True),
        (True, False, False, False, False, False, False, False, True, False),
    )
    assert encode_message(window).hex(" ") == "00 00 00 11 05 00 00 00 00 00 00 03 e8 00 00 00 0a b0 c0 80 80"
    assert encode_message(Pex((("192.0.2.7", 8621), ("2001:db8::1", 9000)))).hex(" ") == (
        "00 00 00 1c 0b 02 04 c0 00 02 07 21 ad 06 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01 23 28"
    )
    assert encode_message(Goodbye(GoodbyeReason.BANNED)).hex(" ") == "00 00 00 02 0c 01"


# -- hostile bytes -------------------------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_raise_protocol_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    with contextlib.suppress(ProtocolError):
        for chunk in chunks:
            decoder.feed(chunk)


# Frames with a plausible header, so that the payload decoders themselves see garbage.
framed_garbage = st.builds(_frame, st.integers(min_value=0, max_value=255), st.binary(max_size=300))


@given(st.lists(framed_garbage, min_size=1, max_size=4), st.lists(st.integers(min_value=0), max_size=6))
def test_framed_garbage_only_raises_protocol_error(frames: list[bytes], cuts: list[int]) -> None:
    decoder = FrameDecoder()
    with contextlib.suppress(ProtocolError):
        for chunk in _split(b"".join(frames), cuts):
            decoder.feed(chunk)


@given(st.integers(min_value=0, max_value=255), st.binary(max_size=300))
def test_decode_payload_only_raises_protocol_error(type_byte: int, payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_payload(type_byte, payload)


@given(st.one_of(st.binary(max_size=100), st.binary(min_size=44, max_size=44).map(lambda b: PROTOCOL_MAGIC + b)))
def test_decode_handshake_only_raises_protocol_error(data: bytes) -> None:
    handshake: Handshake | None = None
    code: ErrorCode | None = None
    try:
        handshake = decode_handshake(data)
    except ProtocolError as error:
        code = error.code
    if handshake is None:
        assert code is ErrorCode.BAD_HANDSHAKE
    else:
        assert encode_handshake(handshake) == data


# -- bounds --------------------------------------------------------------------------------------------------------


@given(st.integers(min_value=MAX_FRAME_LENGTH + 1, max_value=2**32 - 1), st.integers(min_value=0, max_value=255))
def test_oversized_frame_rejected_on_header_alone(length: int, type_byte: int) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", length)) == []  # four bytes: not a whole header yet
    with pytest.raises(ProtocolError) as info:
        decoder.feed(bytes([type_byte]))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_zero_length_frame_rejected() -> None:
    assert _decode_error(b"\x00\x00\x00\x00\x00").code is ErrorCode.FRAME_TOO_LARGE


def test_largest_frame_header_is_buffered() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">IB", MAX_FRAME_LENGTH, MessageType.PIECE)) == []
    assert decoder.buffered == 5


@pytest.mark.parametrize("type_byte", [16, 100, 255])
def test_unknown_type_rejected(type_byte: int) -> None:
    assert _decode_error(_frame(type_byte, b"")).code is ErrorCode.UNKNOWN_MESSAGE


def test_window_count_bound() -> None:
    count = MAX_WINDOW_PIECES + 1
    nbytes = (count + 7) // 8
    payload = struct.pack(">QI", 0, count) + b"\x00" * (2 * nbytes)
    assert _decode_error(_frame(MessageType.WINDOW, payload)).code is ErrorCode.MALFORMED_MESSAGE
    with pytest.raises(ValueError, match="MAX_WINDOW_PIECES"):
        encode_message(Window(0, (True,) * count, (False,) * count))


def test_window_past_max_index_rejected() -> None:
    payload = struct.pack(">QI", MAX_INDEX, 2) + b"\x00\x00"
    assert _decode_error(_frame(MessageType.WINDOW, payload)).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("extra", [-1, 1])
def test_window_bitfield_length_checked(extra: int) -> None:
    payload = struct.pack(">QI", 0, 16) + b"\xff" * (4 + extra)
    assert _decode_error(_frame(MessageType.WINDOW, payload)).code is ErrorCode.MALFORMED_MESSAGE


def test_pex_count_bound() -> None:
    count = MAX_PEX_PEERS + 1
    payload = bytes([count]) + b"\x04\x7f\x00\x00\x01\x00\x50" * count
    assert _decode_error(_frame(MessageType.PEX, payload)).code is ErrorCode.MALFORMED_MESSAGE
    with pytest.raises(ValueError, match="PEX"):
        encode_message(Pex((("127.0.0.1", 80),) * count))


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no count
        b"\x01",  # count, no entry
        b"\x01\x05" + b"\x00" * 6,  # unknown address family
        b"\x01\x04\x7f\x00\x00",  # truncated address
        b"\x01\x04\x7f\x00\x00\x01\x00",  # truncated port
        b"\x01\x04\x7f\x00\x00\x01\x00\x50\x00",  # trailing byte
    ],
)
def test_pex_malformed(payload: bytes) -> None:
    assert _decode_error(_frame(MessageType.PEX, payload)).code is ErrorCode.MALFORMED_MESSAGE


def test_piece_size_bound() -> None:
    header = struct.pack(">QB", 0, 0) + b"\x00" * SIGNATURE_LENGTH
    # Through the frame decoder, one byte too many already exceeds MAX_FRAME_LENGTH.
    too_big = _frame(MessageType.PIECE, header + b"\x00" * (MAX_PIECE_SIZE + 1))
    assert _decode_error(too_big).code is ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(ProtocolError) as info:
        decode_payload(MessageType.PIECE, header + b"\x00" * (MAX_PIECE_SIZE + 1))
    assert info.value.code is ErrorCode.MALFORMED_MESSAGE
    # A piece carries at least one byte of data.
    assert _decode_error(_frame(MessageType.PIECE, header)).code is ErrorCode.MALFORMED_MESSAGE
    with pytest.raises(ValueError, match="piece"):
        encode_message(Piece(0, PieceFlags.NONE, b"\x00" * SIGNATURE_LENGTH, b"\x00" * (MAX_PIECE_SIZE + 1)))
    with pytest.raises(ValueError, match="piece"):
        encode_message(Piece(0, PieceFlags.NONE, b"\x00" * SIGNATURE_LENGTH, b""))


def test_metadata_size_bound() -> None:
    frame = _frame(MessageType.METADATA, b"x" * (MAX_METADATA_SIZE + 1))
    assert _decode_error(frame).code is ErrorCode.MALFORMED_MESSAGE
    with pytest.raises(ValueError, match="descriptor"):
        encode_message(Metadata(b"x" * (MAX_METADATA_SIZE + 1)))


@pytest.mark.parametrize("flags", [8, 0x80, 0xFF])
def test_unknown_piece_flags_rejected(flags: int) -> None:
    have = _frame(MessageType.HAVE, struct.pack(">QB", 1, flags))
    assert _decode_error(have).code is ErrorCode.MALFORMED_MESSAGE
    piece = _frame(MessageType.PIECE, struct.pack(">QB", 1, flags) + b"\x00" * SIGNATURE_LENGTH + b"data")
    assert _decode_error(piece).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("flags", [8, 0x80, 0xFF])
def test_unknown_handshake_flags_rejected(flags: int) -> None:
    data = bytearray(encode_handshake(Handshake(b"c" * 20, b"p" * 20, 1)))
    data[5] = flags
    with pytest.raises(ProtocolError) as info:
        decode_handshake(bytes(data))
    assert info.value.code is ErrorCode.BAD_HANDSHAKE


@pytest.mark.parametrize(
    ("offset", "value"), [(0, ord("X")), (3, ord("Q")), (4, 0), (4, PROTOCOL_VERSION + 1)], ids=str
)
def test_bad_handshake_magic_or_version(offset: int, value: int) -> None:
    data = bytearray(encode_handshake(Handshake(b"c" * 20, b"p" * 20, 1)))
    data[offset] = value
    with pytest.raises(ProtocolError) as info:
        decode_handshake(bytes(data))
    assert info.value.code is ErrorCode.BAD_HANDSHAKE


@pytest.mark.parametrize("length", [0, 47, 49])
def test_handshake_length_checked(length: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_handshake((PROTOCOL_MAGIC + b"\x01" * 60)[:length])
    assert info.value.code is ErrorCode.BAD_HANDSHAKE


@pytest.mark.parametrize("kind", [MessageType.HAVE, MessageType.PIECE])
def test_index_above_max_rejected(kind: MessageType) -> None:
    payload = struct.pack(">QB", MAX_INDEX + 1, 0)
    if kind is MessageType.PIECE:
        payload += b"\x00" * SIGNATURE_LENGTH + b"x"
    assert _decode_error(_frame(kind, payload)).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("kind", [MessageType.REQUEST, MessageType.CANCEL, MessageType.REJECT])
@pytest.mark.parametrize("payload", [struct.pack(">Q", MAX_INDEX + 1), struct.pack(">Q", 2**64 - 1), b"\x00" * 7])
def test_index_messages_checked(kind: MessageType, payload: bytes) -> None:
    assert _decode_error(_frame(kind, payload)).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize(
    "kind",
    [
        MessageType.KEEPALIVE,
        MessageType.CHOKE,
        MessageType.UNCHOKE,
        MessageType.INTERESTED,
        MessageType.NOT_INTERESTED,
        MessageType.METADATA_REQUEST,
    ],
)
def test_empty_messages_take_no_payload(kind: MessageType) -> None:
    assert _decode_error(_frame(kind, b"\x00")).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("payload", [b"", b"\x01\x02"])
def test_goodbye_length_checked(payload: bytes) -> None:
    assert _decode_error(_frame(MessageType.GOODBYE, payload)).code is ErrorCode.MALFORMED_MESSAGE


@pytest.mark.parametrize("reason", [8, 200, 255])
def test_unknown_goodbye_reason_reads_as_other(reason: int) -> None:
    assert FrameDecoder().feed(_frame(MessageType.GOODBYE, bytes([reason]))) == [Goodbye(GoodbyeReason.OTHER)]


def test_encode_rejects_out_of_range_index() -> None:
    for message in (Have(MAX_INDEX + 1, PieceFlags.NONE), Request(-1), Cancel(MAX_INDEX + 1), Reject(-1)):
        with pytest.raises(ValueError, match="index"):
            encode_payload(message)


def test_error_leaves_no_messages_after_the_bad_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_message(Request(1))) == [Request(1)]
    with pytest.raises(ProtocolError):
        decoder.feed(_frame(99, b"") + encode_message(Request(2)))


@pytest.mark.parametrize(
    "build",
    [
        lambda: encode_message(Window(MAX_INDEX, (True, True), (False, False))),
        lambda: encode_message(Have(1, PieceFlags(8))),
        lambda: encode_message(Piece(1, PieceFlags(8), b"\x00" * SIGNATURE_LENGTH, b"x")),
        lambda: encode_handshake(Handshake(b"c" * 20, b"p" * 20, 1, HandshakeFlags(4))),
    ],
    ids=["window-past-max-index", "have-flags", "piece-flags", "handshake-flags"],
)
def test_encoder_refuses_what_the_decoder_rejects(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: our own misuse
        build()
