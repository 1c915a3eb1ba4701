"""A scripted peer for tests: speaks the real protocol over a real TCP connection, honestly or not."""

from __future__ import annotations

import asyncio
import os
import time

from swarmcast.wire.codec import encode_message
from swarmcast.wire.connection import Connection, ConnectionClosed, Event, HandshakeReceived, MessageReceived
from swarmcast.wire.messages import Handshake, HandshakeFlags, Message, Piece, Request, Window


class TestPeer:
    __test__ = False  # not a pytest class

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.connection = Connection(now=time.monotonic())
        self.remote: Handshake | None = None
        self.messages: list[Message] = []
        self.closed: ConnectionClosed | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, content_id: bytes, *, listen_port: int = 0,
        flags: HandshakeFlags = HandshakeFlags.NONE, rcvbuf: int | None = None, local_host: str | None = None,
    ) -> TestPeer:  # fmt: skip
        if rcvbuf is None:
            local_addr = (local_host, 0) if local_host is not None else None
            reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
        else:
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        peer = cls(reader, writer)
        peer.connection.send_handshake(Handshake(content_id, os.urandom(20), listen_port, flags), time.monotonic())
        peer.flush()
        return peer

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.writer.write(data)

    def send(self, message: Message) -> None:
        self.connection.send(message, time.monotonic())
        self.flush()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_events(self, timeout: float) -> list[Event]:
        """Events from whatever arrives within ``timeout``; [] on timeout. Sets ``closed`` at EOF."""
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(256 * 1024)
        except TimeoutError:
            return []
        if not data:
            self.closed = self.closed or ConnectionClosed("eof")
            return [self.closed]
        events = self.connection.receive_data(data, time.monotonic())
        for event in events:
            if isinstance(event, HandshakeReceived):
                self.remote = event.handshake
            elif isinstance(event, MessageReceived):
                self.messages.append(event.message)
            elif isinstance(event, ConnectionClosed):
                self.closed = event
        return events

    async def wait_for(self, kind: type, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.closed is None:
            for message in self.messages:
                if isinstance(message, kind):
                    self.messages.remove(message)
                    return message
            await self.read_events(min(0.5, max(deadline - time.monotonic(), 0.01)))
        return None

    async def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            try:
                await self.read_events(min(0.5, max(deadline - time.monotonic(), 0.01)))
            except ConnectionResetError:
                self.closed = ConnectionClosed("reset")
        return self.closed is not None

    async def fetch_pieces(self, indices: list[int], timeout: float, *, outstanding: int = 16) -> dict[int, Piece]:
        """Request pieces (once unchoked) and collect them, as an honest peer does: at most ``outstanding`` requests
        at a time (nodes REJECT beyond their per-peer cap), and a rejected piece asked again a few times."""
        from swarmcast.wire.messages import Interested, Reject, Unchoke

        self.send(Interested())
        got: dict[int, Piece] = {}
        todo = list(indices)
        asked: set[int] = set()
        retries: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        unchoked = False
        while time.monotonic() < deadline and len(got) < len(indices) and self.closed is None:
            if not unchoked and any(isinstance(m, Unchoke) for m in self.messages):
                unchoked = True
            while unchoked and todo and len(asked) < outstanding:
                index = todo.pop(0)
                asked.add(index)
                self.send(Request(index))
            for message in list(self.messages):
                if isinstance(message, Piece):
                    got[message.index] = message
                    asked.discard(message.index)
                    self.messages.remove(message)
                elif isinstance(message, Reject) and message.index in asked:
                    asked.discard(message.index)
                    self.messages.remove(message)
                    retries[message.index] = retries.get(message.index, 0) + 1
                    if retries[message.index] <= 5:
                        todo.append(message.index)
            if not todo and not asked:
                break
            await self.read_events(0.2)
        return got

    async def window(self, timeout: float = 5.0) -> Window | None:
        message = await self.wait_for(Window, timeout)
        return message if isinstance(message, Window) else None

    def close(self) -> None:
        self.writer.close()


def frame(type_byte: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(4, "big") + bytes([type_byte]) + payload


__all__ = ["TestPeer", "encode_message", "frame"]
