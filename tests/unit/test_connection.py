"""The sans-IO peer connection: two ``Connection``s wired in memory, a virtual clock, no sockets, no sleeps."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmcast.wire.codec import encode_handshake, encode_message
from swarmcast.wire.connection import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    Connection,
    ConnectionClosed,
    Event,
    HandshakeReceived,
    MessageReceived,
    State,
)
from swarmcast.wire.errors import ErrorCode
from swarmcast.wire.messages import (
    HANDSHAKE_LENGTH,
    MAX_FRAME_LENGTH,
    PROTOCOL_MAGIC,
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
    Pex,
    Piece,
    PieceFlags,
    Request,
    Unchoke,
    Window,
)

CONTENT_ID = bytes(range(20))
HS_A = Handshake(CONTENT_ID, b"A" * 20, 7764, HandshakeFlags.SOURCE)
HS_B = Handshake(CONTENT_ID, b"B" * 20, 8621, HandshakeFlags.SEEDER)
SIGNATURE = b"\x55" * 64

MESSAGES: list[Message] = [
    Window(10, (True, False, True), (True, False, False)),
    Interested(),
    Unchoke(),
    Have(13, PieceFlags.RANDOM_ACCESS),
    Request(12),
    Piece(12, PieceFlags.NONE, SIGNATURE, b"piece data" * 3),
    Pex((("10.0.0.1", 8621), ("::1", 7764))),
    Metadata(b"d1:ai1ee"),
    KeepAlive(),
]


def deliver(src: Connection, dst: Connection, now: float) -> list[Event]:
    return dst.receive_data(src.data_to_send(), now)


def opened(now: float = 0.0) -> tuple[Connection, Connection]:
    """An initiator ``a`` and an acceptor ``b`` past the handshake exchange."""
    a, b = Connection(now=now), Connection(now=now)
    a.send_handshake(HS_A, now)
    assert deliver(a, b, now) == [HandshakeReceived(HS_A)]
    b.send_handshake(HS_B, now)
    assert deliver(b, a, now) == [HandshakeReceived(HS_B)]
    return a, b


def messages_of(events: list[Event]) -> list[Message]:
    return [e.message for e in events if isinstance(e, MessageReceived)]


def closed_event(events: list[Event]) -> ConnectionClosed:
    assert events, "expected the connection to close"
    last = events[-1]
    assert isinstance(last, ConnectionClosed)
    return last


def frame(type_byte: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload) + 1, type_byte) + payload


# -- handshake -----------------------------------------------------------------------------------------------------


def test_handshake_initiator_first() -> None:
    a, b = Connection(now=0.0), Connection(now=0.0)
    a.send_handshake(HS_A, 0.0)
    assert a.state == State.AWAIT_HANDSHAKE
    assert deliver(a, b, 0.0) == [HandshakeReceived(HS_A)]
    assert b.state is State.OPEN
    assert b.remote_handshake == HS_A
    # The acceptor has not answered yet: it may not send frames.
    with pytest.raises(RuntimeError):
        b.send(KeepAlive(), 0.0)
    b.send_handshake(HS_B, 0.0)
    b.send(Interested(), 0.0)
    assert deliver(b, a, 0.0) == [HandshakeReceived(HS_B), MessageReceived(Interested())]
    assert a.state == State.OPEN  # type: ignore[comparison-overlap]  # mypy keeps the earlier narrowing
    assert a.remote_handshake == HS_B


def test_handshake_acceptor_reply_arrives_first() -> None:
    """Both send at once (or the reply overtakes): order of arrival does not matter."""
    a, b = Connection(now=0.0), Connection(now=0.0)
    a.send_handshake(HS_A, 0.0)
    a.send(Interested(), 0.0)  # frames may follow our handshake before the peer's arrives
    b.send_handshake(HS_B, 0.0)
    assert deliver(b, a, 0.0) == [HandshakeReceived(HS_B)]
    assert deliver(a, b, 0.0) == [HandshakeReceived(HS_A), MessageReceived(Interested())]
    assert a.state is b.state is State.OPEN


def test_handshake_misuse_raises() -> None:
    connection = Connection(now=0.0)
    with pytest.raises(RuntimeError):
        connection.send(KeepAlive(), 0.0)
    connection.send_handshake(HS_A, 0.0)
    with pytest.raises(RuntimeError):
        connection.send_handshake(HS_A, 0.0)


def test_unknown_content_answer() -> None:
    """What a node does for a content id it does not serve: its handshake, then GOODBYE(UNKNOWN_CONTENT)."""
    a, b = Connection(now=0.0), Connection(now=0.0)
    a.send_handshake(HS_A, 0.0)
    deliver(a, b, 0.0)
    b.send_handshake(Handshake(CONTENT_ID, b"B" * 20, 8621), 0.0)
    b.close(GoodbyeReason.UNKNOWN_CONTENT, 0.0)
    events = deliver(b, a, 0.0)
    assert isinstance(events[0], HandshakeReceived)
    closed = closed_event(events)
    assert closed.goodbye is GoodbyeReason.UNKNOWN_CONTENT
    assert closed.error is None
    assert a.state is State.CLOSED


# -- data split anywhere -------------------------------------------------------------------------------------------


def _stream() -> bytes:
    return encode_handshake(HS_A) + b"".join(encode_message(m) for m in MESSAGES)


EXPECTED: list[Event] = [HandshakeReceived(HS_A), *(MessageReceived(m) for m in MESSAGES)]


def test_data_split_at_every_byte_boundary() -> None:
    stream = _stream()
    for cut in range(len(stream) + 1):
        b = Connection(now=0.0)
        events = b.receive_data(stream[:cut], 1.0) + b.receive_data(stream[cut:], 1.0)
        assert events == EXPECTED, f"split at {cut}"
        assert b.bytes_received == len(stream)


def test_data_fed_byte_by_byte() -> None:
    stream = _stream()
    b = Connection(now=0.0)
    events: list[Event] = []
    for i in range(len(stream)):
        events += b.receive_data(stream[i : i + 1], 1.0)
    assert events == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(_stream())), max_size=20))
def test_data_split_anywhere(cuts: list[int]) -> None:
    stream = _stream()
    points = sorted({0, len(stream), *cuts})
    b = Connection(now=0.0)
    events: list[Event] = []
    for start, end in itertools.pairwise(points):
        events += b.receive_data(stream[start:end], 1.0)
    assert events == EXPECTED


# -- goodbye -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(GoodbyeReason), ids=lambda r: r.name)
def test_goodbye_ends_the_connection_with_its_reason(reason: GoodbyeReason) -> None:
    a, b = opened()
    a.send(Have(1, PieceFlags.NONE), 1.0)
    a.close(reason, 1.0)
    assert a.state is State.CLOSED
    a.send(Have(2, PieceFlags.NONE), 1.0)  # ignored once closed
    a.close(GoodbyeReason.OTHER, 1.0)  # so is a second close
    data = a.data_to_send()
    assert data == encode_message(Have(1, PieceFlags.NONE)) + encode_message(Goodbye(reason))
    events = b.receive_data(data + encode_message(Have(3, PieceFlags.NONE)), 1.0)
    assert messages_of(events) == [Have(1, PieceFlags.NONE)]
    closed = closed_event(events)
    assert closed.goodbye is reason
    assert closed.error is None
    assert reason.name in closed.reason
    assert b.state is State.CLOSED
    assert b.receive_data(encode_message(Have(4, PieceFlags.NONE)), 2.0) == []
    assert b.next_timer() is None
    assert b.handle_timer(1000.0) == []


def test_close_before_the_handshake_sends_nothing() -> None:
    connection = Connection(now=0.0)
    connection.close(GoodbyeReason.TOO_MANY_PEERS, 0.0)
    assert connection.state is State.CLOSED
    assert connection.data_to_send() == b""


# -- bad handshakes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", range(len(PROTOCOL_MAGIC)))
def test_bad_magic_closes_at_the_first_wrong_byte(position: int) -> None:
    connection = Connection(now=0.0)
    for byte in PROTOCOL_MAGIC[:position]:
        assert connection.receive_data(bytes([byte]), 0.0) == []
    wrong = bytes([PROTOCOL_MAGIC[position] ^ 0x20])
    closed = closed_event(connection.receive_data(wrong, 0.0))
    assert closed.error is not None
    assert closed.error.code is ErrorCode.BAD_HANDSHAKE
    assert connection.state is State.CLOSED
    assert connection.receive_data(encode_handshake(HS_A), 0.0) == []


def test_http_request_is_rejected_on_its_first_byte() -> None:
    connection = Connection(now=0.0)
    closed = closed_event(connection.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0))
    assert closed.error is not None
    assert closed.error.code is ErrorCode.BAD_HANDSHAKE


@pytest.mark.parametrize(("offset", "value"), [(4, 2), (4, 0), (5, 4), (5, 0x80)], ids=["v2", "v0", "flag4", "flag80"])
def test_bad_version_or_flags_close_on_the_last_handshake_byte(offset: int, value: int) -> None:
    data = bytearray(encode_handshake(HS_A))
    data[offset] = value
    connection = Connection(now=0.0)
    assert connection.receive_data(bytes(data[: HANDSHAKE_LENGTH - 1]), 0.0) == []
    closed = closed_event(connection.receive_data(bytes(data[HANDSHAKE_LENGTH - 1 :]), 0.0))
    assert closed.error is not None
    assert closed.error.code is ErrorCode.BAD_HANDSHAKE


# -- protocol errors -----------------------------------------------------------------------------------------------

BAD_FRAMES = {
    "unknown-type": frame(200, b""),
    "too-large": struct.pack(">IB", MAX_FRAME_LENGTH + 1, MessageType.PIECE),
    "zero-length": b"\x00\x00\x00\x00\x00",
    "short-have": frame(MessageType.HAVE, b"\x00" * 8),
    "have-flags": frame(MessageType.HAVE, b"\x00" * 8 + b"\x10"),
    "keepalive-payload": frame(MessageType.KEEPALIVE, b"\x00"),
}


@pytest.mark.parametrize("bad", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_nothing_after_a_protocol_error_is_delivered_byte_by_byte(bad: bytes) -> None:
    good_before, good_after = encode_message(Have(1, PieceFlags.NONE)), encode_message(Have(2, PieceFlags.NONE))
    stream = encode_handshake(HS_A) + good_before + bad + good_after + encode_message(Goodbye(GoodbyeReason.SHUTDOWN))
    connection = Connection(now=0.0)
    events: list[Event] = []
    for i in range(len(stream)):
        events += connection.receive_data(stream[i : i + 1], 0.0)
    assert events[:2] == [HandshakeReceived(HS_A), MessageReceived(Have(1, PieceFlags.NONE))]
    assert len(events) == 3
    closed = closed_event(events)
    assert closed.error is not None
    assert closed.goodbye is None
    assert connection.state is State.CLOSED
    assert connection.next_timer() is None


@pytest.mark.parametrize("bad", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_nothing_after_a_protocol_error_is_delivered_in_one_chunk(bad: bytes) -> None:
    _, b = opened()
    tail = encode_message(Have(2, PieceFlags.NONE)) + encode_message(Goodbye(GoodbyeReason.SHUTDOWN))
    events = b.receive_data(encode_message(Have(1, PieceFlags.NONE)) + bad + tail, 1.0)
    closed = closed_event(events)
    assert closed.error is not None
    assert Have(2, PieceFlags.NONE) not in messages_of(events)
    assert b.receive_data(tail, 1.0) == []
    assert b.handle_timer(1000.0) == []


# -- timers --------------------------------------------------------------------------------------------------------


def test_keepalive_after_silence() -> None:
    a, b = opened(now=100.0)
    assert a.next_timer() == 100.0 + KEEPALIVE_INTERVAL
    assert a.handle_timer(100.0 + KEEPALIVE_INTERVAL - 0.001) == []
    assert a.data_to_send() == b""
    assert a.handle_timer(100.0 + KEEPALIVE_INTERVAL) == []
    keepalive = a.data_to_send()
    assert keepalive == encode_message(KeepAlive())
    assert b.receive_data(keepalive, 100.0 + KEEPALIVE_INTERVAL) == [MessageReceived(KeepAlive())]
    # Any frame sent restarts the silence.
    a.send(Request(1), 120.0)
    assert a.next_timer() == 120.0 + KEEPALIVE_INTERVAL
    assert a.handle_timer(120.0 + KEEPALIVE_INTERVAL - 0.001) == []
    assert a.data_to_send() == encode_message(Request(1))


def test_idle_timeout_closes_with_goodbye() -> None:
    a, b = opened()
    now = 0.0
    sent = b""
    events: list[Event] = []
    while a.state is not State.CLOSED:
        deadline = a.next_timer()
        assert deadline is not None
        now = deadline
        events += a.handle_timer(now)
        sent += a.data_to_send()  # the keepalives go out, but nothing comes back
    assert now == IDLE_TIMEOUT
    closed = closed_event(events)
    assert closed.error is None
    assert closed.goodbye is None
    keepalives = int(IDLE_TIMEOUT // KEEPALIVE_INTERVAL) - 1  # at 15 and 30; at 45 the idle check wins
    assert sent == encode_message(KeepAlive()) * keepalives + encode_message(Goodbye(GoodbyeReason.TIMEOUT))
    closed_b = closed_event(b.receive_data(sent, now))
    assert closed_b.goodbye is GoodbyeReason.TIMEOUT


def test_keepalives_keep_a_quiet_connection_open() -> None:
    a, b = opened()
    now = 0.0
    while now < 10 * IDLE_TIMEOUT:
        deadlines = [t for t in (a.next_timer(), b.next_timer()) if t is not None]
        now = min(deadlines)
        for src, dst in ((a, b), (b, a)):
            assert src.handle_timer(now) == []
            assert all(e == MessageReceived(KeepAlive()) for e in deliver(src, dst, now))
    assert a.state is b.state is State.OPEN


def test_acceptor_that_has_not_answered_sends_no_keepalive() -> None:
    a, b = Connection(now=0.0), Connection(now=0.0)
    a.send_handshake(HS_A, 0.0)
    deliver(a, b, 0.0)
    assert b.next_timer() == IDLE_TIMEOUT
    closed = closed_event(b.handle_timer(IDLE_TIMEOUT))
    assert closed.error is None
    assert b.data_to_send() == b""  # no handshake went out, so no goodbye either


@pytest.mark.parametrize("initiator", [True, False], ids=["initiator", "acceptor"])
def test_handshake_timeout(initiator: bool) -> None:
    connection = Connection(now=5.0)
    if initiator:
        connection.send_handshake(HS_A, 5.0)
        connection.data_to_send()
    assert connection.next_timer() == 5.0 + HANDSHAKE_TIMEOUT
    # Part of a handshake does not extend the deadline.
    assert connection.receive_data(encode_handshake(HS_B)[:20], 14.0) == []
    assert connection.handle_timer(5.0 + HANDSHAKE_TIMEOUT - 0.001) == []
    closed = closed_event(connection.handle_timer(5.0 + HANDSHAKE_TIMEOUT))
    assert closed.error is not None
    assert closed.error.code is ErrorCode.TIMEOUT
    assert connection.state is State.CLOSED
    assert connection.data_to_send() == b""


def test_no_handshake_timeout_once_open() -> None:
    a, b = opened()
    assert a.handle_timer(HANDSHAKE_TIMEOUT + 1) == []
    assert b.handle_timer(HANDSHAKE_TIMEOUT + 1) == []
    assert a.state is b.state is State.OPEN


# -- counters ------------------------------------------------------------------------------------------------------


def test_byte_and_payload_counters() -> None:
    a, b = opened()
    assert a.bytes_sent == b.bytes_received == HANDSHAKE_LENGTH
    assert b.bytes_sent == a.bytes_received == HANDSHAKE_LENGTH
    wire = HANDSHAKE_LENGTH
    pieces = [Piece(i, PieceFlags.NONE, SIGNATURE, bytes(100 + i)) for i in range(3)]
    sent: list[Message] = [Have(1, PieceFlags.NONE), *pieces, Request(7)]
    for message in sent:
        a.send(message, 1.0)
        wire += len(encode_message(message))
    data = a.data_to_send()
    assert len(data) + HANDSHAKE_LENGTH == wire == a.bytes_sent
    b.receive_data(data[:50], 1.0)
    b.receive_data(data[50:], 1.0)
    assert b.bytes_received == wire
    payload = sum(len(p.data) for p in pieces)
    assert a.payload_sent == b.payload_received == payload
    assert a.payload_received == b.payload_sent == 0
    a.close(GoodbyeReason.SHUTDOWN, 2.0)
    assert a.bytes_sent == wire + len(encode_message(Goodbye(GoodbyeReason.SHUTDOWN)))


def test_buffered_bytes_counts_what_is_queued_until_taken() -> None:
    from swarmcast.wire.codec import encode_message as _encode
    from swarmcast.wire.messages import Have as _Have
    from swarmcast.wire.messages import PieceFlags as _PieceFlags

    connection = Connection(now=0.0)
    connection.send_handshake(Handshake(b"c" * 20, b"p" * 20, 7000), 0.0)
    assert connection.buffered_bytes == 48
    connection.send(_Have(5, _PieceFlags.NONE), 0.0)
    assert connection.buffered_bytes == 48 + len(_encode(_Have(5, _PieceFlags.NONE)))
    data = connection.data_to_send()
    assert len(data) == 48 + 14 and connection.buffered_bytes == 0
