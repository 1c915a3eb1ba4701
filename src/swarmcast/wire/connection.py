"""The peer connection as a sans-IO state machine.

How this works: the owner feeds received bytes with ``receive_data(data, now)`` and gets events back; it queues
messages with ``send(message)`` and writes whatever ``data_to_send()`` returns. Timers are asked for with
``next_timer()`` and fired with ``handle_timer(now)``. Nothing here touches a socket or reads a clock, so two
connections can be wired together in memory and driven by a test or the simulator with a virtual clock.

Both sides send a 48-byte handshake first. The initiator sends it at once; the acceptor sends it after it has
seen the initiator's (``HandshakeReceived``) and decided it serves that content id. Then frames flow both ways.
A protocol violation by the peer ends the connection with ``ConnectionClosed(error=...)``: nothing in the
offending bytes, nor anything after them, is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import cast

from swarmcast.wire.codec import FrameDecoder, decode_handshake, encode_handshake, encode_message
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import (
    HANDSHAKE_LENGTH,
    PROTOCOL_MAGIC,
    Goodbye,
    GoodbyeReason,
    Handshake,
    KeepAlive,
    Message,
    Piece,
)

HANDSHAKE_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 15.0
IDLE_TIMEOUT = 45.0


class State(Enum):
    AWAIT_HANDSHAKE = auto()
    OPEN = auto()
    CLOSED = auto()


@dataclass(frozen=True)
class HandshakeReceived:
    handshake: Handshake


@dataclass(frozen=True)
class MessageReceived:
    message: Message


@dataclass(frozen=True)
class ConnectionClosed:
    """The connection is over. ``error`` is set when the peer broke the protocol (ban it)."""

    reason: str
    error: ProtocolError | None = None
    goodbye: GoodbyeReason | None = None


Event = HandshakeReceived | MessageReceived | ConnectionClosed


class Connection:
    def __init__(self, *, now: float) -> None:
        self.state = State.AWAIT_HANDSHAKE
        self.remote_handshake: Handshake | None = None
        self._handshake_sent = False
        self._inbound = bytearray()
        self._decoder = FrameDecoder()
        self._outbound: list[bytes] = []
        self._outbound_bytes = 0  # queued here, not yet taken by data_to_send: part of a peer's memory budget
        self._last_received = now
        self._last_sent = now
        self._opened_at = now
        # Byte counters, for speeds and for the control-overhead figure (payload = piece data only).
        self.bytes_sent = 0
        self.bytes_received = 0
        self.payload_sent = 0
        self.payload_received = 0

    # -- sending -----------------------------------------------------------------------------------------
    def send_handshake(self, handshake: Handshake, now: float) -> None:
        if self._handshake_sent:
            raise RuntimeError("handshake already sent")
        self._handshake_sent = True
        self._queue(encode_handshake(handshake), now)

    def send(self, message: Message, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if not self._handshake_sent:
            raise RuntimeError("send the handshake first")
        data = encode_message(message)
        if type(message) is Piece:
            self.payload_sent += len(message.data)
        # _queue, written out: one call less per message sent (the hot path).
        size = len(data)
        self._outbound.append(data)
        self._outbound_bytes += size
        self.bytes_sent += size
        self._last_sent = now

    def close(self, reason: GoodbyeReason, now: float) -> None:
        """Say goodbye (when the handshake went out) and stop; the owner flushes and closes the transport."""
        if self.state is State.CLOSED:
            return
        if self._handshake_sent:
            self._queue(encode_message(Goodbye(reason)), now)
        self.state = State.CLOSED

    def data_to_send(self) -> bytes:
        data = b"".join(self._outbound)
        self._outbound.clear()
        self._outbound_bytes = 0
        return data

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued by ``send`` and not yet taken by ``data_to_send``.

        The owner adds its transport's buffer to this to know, at the time of queueing, what a peer costs us:
        many requests arrive in one read, and the socket's buffer alone shows none of them until the flush."""
        return self._outbound_bytes

    def _queue(self, data: bytes, now: float) -> None:
        self._outbound.append(data)
        self._outbound_bytes += len(data)
        self.bytes_sent += len(data)
        self._last_sent = now

    # -- receiving ---------------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED or not data:
            return []
        self._last_received = now
        self.bytes_received += len(data)
        try:
            return self._receive(data)
        except ProtocolError as error:
            self.state = State.CLOSED
            return [ConnectionClosed(str(error), error=error)]

    def _receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.state is State.AWAIT_HANDSHAKE:
            self._inbound += data
            # Reject a wrong prefix as soon as it shows, rather than waiting for 48 bytes that may never come.
            prefix = bytes(self._inbound[: len(PROTOCOL_MAGIC)])
            if not PROTOCOL_MAGIC.startswith(prefix):
                raise ProtocolError(ErrorCode.BAD_HANDSHAKE, f"bad magic {prefix!r}")
            if len(self._inbound) < HANDSHAKE_LENGTH:
                return events
            self.remote_handshake = decode_handshake(bytes(self._inbound[:HANDSHAKE_LENGTH]))
            data = bytes(self._inbound[HANDSHAKE_LENGTH:])
            self._inbound.clear()
            self.state = State.OPEN
            events.append(HandshakeReceived(self.remote_handshake))
        append = events.append
        for message in self._decoder.feed(data):
            kind = type(message)
            if kind is Piece:
                self.payload_received += len(cast(Piece, message).data)
            elif kind is Goodbye:
                reason = cast(Goodbye, message).reason
                self.state = State.CLOSED
                append(ConnectionClosed(f"peer said goodbye ({reason.name})", goodbye=reason))
                return events
            append(MessageReceived(message))
        return events

    # -- timers ------------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        if self.state is State.AWAIT_HANDSHAKE:
            return self._opened_at + HANDSHAKE_TIMEOUT
        deadlines = [self._last_received + IDLE_TIMEOUT]
        if self._handshake_sent:
            deadlines.append(self._last_sent + KEEPALIVE_INTERVAL)
        return min(deadlines)

    def handle_timer(self, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        if self.state is State.AWAIT_HANDSHAKE and now >= self._opened_at + HANDSHAKE_TIMEOUT:
            self.state = State.CLOSED
            error = ProtocolError(ErrorCode.TIMEOUT, "no handshake")
            return [ConnectionClosed("handshake timeout", error=error)]
        if self.state is State.OPEN and now >= self._last_received + IDLE_TIMEOUT:
            self.close(GoodbyeReason.TIMEOUT, now)
            return [ConnectionClosed("idle timeout")]
        if self._handshake_sent and self.state is State.OPEN and now >= self._last_sent + KEEPALIVE_INTERVAL:
            self.send(KeepAlive(), now)
        return []
