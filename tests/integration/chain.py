"""Starting the broadcast chain as real processes on loopback, and checking what players receive."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import av

from swarmcast.credential import CredentialRole, make_credential
from swarmcast.transport import Descriptor, load_or_create_key
from swarmcast.wire.messages import CredentialKind, CredentialMessage, HandshakeFlags, Piece, PieceFlags
from tests.peerclient import TestPeer
from tests.procs import SwarmcastProcess, free_port, swarmcast_process

HOST = "127.0.0.1"


@dataclass
class Source:
    process: SwarmcastProcess
    port: int
    metadata_dir: Path
    publish_dir: Path

    @property
    def transport_url(self) -> str:
        return f"http://{HOST}:{self.port}/app/get_transport_file?format=raw"

    def descriptor(self) -> Descriptor:
        return Descriptor.decode(next(self.publish_dir.glob("*.acelive")).read_bytes())

    def support_credential(self, ip: str = HOST, port: int = 0, lifetime: float = 600.0) -> bytes:
        """A support credential signed with the broadcast's key (.sauth): what the broadcaster can give anyone."""
        key = load_or_create_key(next(self.metadata_dir.glob("*.sauth")))
        return make_credential(key, role=CredentialRole.SUPPORT, content_id=self.descriptor().content_id, ip=ip,
                               port=port, expires=int(time.time() + lifetime))  # fmt: skip


@contextlib.contextmanager
def signal_source(tmp: Path, bitrate: str = "1M") -> Iterator[str]:
    port = free_port()
    args = ["testsrc", "--port", str(port), "--bitrate", bitrate, "--size", "320x180", "--fps", "25"]
    with swarmcast_process(args, stderr_path=tmp / "testsrc.log", wait_port=(HOST, port)):
        yield f"http://{HOST}:{port}/stream.ts"


def source_args(tmp: Path, source_url: str, port: int, *extra: str) -> list[str]:
    return [
        "node", "source", "--bind", HOST, "--port", str(port), "--source", source_url, "--title", "Test channel",
        "--name", "test", "--publish-dir", str(tmp / "publish"), "--metadata-dir", str(tmp / "meta"),
        "--pid-file-dir", str(tmp), "--source-reconnect-interval", "0.5", *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def source_node(tmp: Path, source_url: str, *extra: str, port: int | None = None,
                log_name: str = "source.log") -> Iterator[Source]:  # fmt: skip
    port = port or free_port()
    args = source_args(tmp, source_url, port, *extra)
    with swarmcast_process(args, stderr_path=tmp / log_name, wait_port=(HOST, port)) as process:
        yield Source(process, port, tmp / "meta", tmp / "publish")


@contextlib.contextmanager
def support_node(tmp: Path, url: str, *extra: str, name: str = "support", port: int | None = None) -> Iterator[int]:
    """A support node; give ``port`` when the source must know it in advance (``--support-node HOST:PORT``)."""
    port = port or free_port()
    args = ["node", "support", "--bind", HOST, "--port", str(port), "--url", url, "--pid-file-dir", str(tmp), *extra]
    with swarmcast_process(args, stderr_path=tmp / f"{name}.log", wait_port=(HOST, port)):
        yield port


@contextlib.contextmanager
def engine(tmp: Path, *extra: str, name: str = "engine", p2p_port: int | None = None) -> Iterator[str]:
    http_port, p2p_port = free_port(), p2p_port or free_port()
    args = ["engine", "--http-port", str(http_port), "--port", str(p2p_port), "--bind", HOST,
            "--pid-file-dir", str(tmp), "--startup-timeout", "20", *extra]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / f"{name}.log", wait_port=(HOST, http_port)):
        yield f"http://{HOST}:{http_port}"


async def read_stream(url: str, seconds: float, *, max_bytes: int = 64 * 1024 * 1024) -> bytes:
    """Read a live HTTP stream for ``seconds`` (bounded in time and size); raises on an HTTP error."""
    data = bytearray()
    timeout = aiohttp.ClientTimeout(total=seconds + 60, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status != 200:
            raise AssertionError(f"{url} answered {response.status}: {await response.text()}")
        deadline: float | None = None
        async for chunk in response.content.iter_chunked(64 * 1024):
            if deadline is None:
                deadline = time.monotonic() + seconds  # the clock starts with the first byte
            data += chunk
            if time.monotonic() >= deadline or len(data) >= max_bytes:
                break
    return bytes(data)


def decode_video(data: bytes) -> list[av.VideoFrame]:
    container = av.open(io.BytesIO(data), format="mpegts", mode="r")
    try:
        frames: list[av.VideoFrame] = []
        for packet in container.demux(video=0):
            try:
                frames.extend(f for f in packet.decode() if isinstance(f, av.VideoFrame))
            except av.error.InvalidDataError:
                continue
        return frames
    finally:
        container.close()


async def source_pieces(source: Source, *, timeout: float = 20.0) -> dict[int, Piece]:
    """Every piece in the source's window, fetched over the real protocol."""
    # As a support node, with a credential: a source with support nodes serves only them.
    credential = source.support_credential()
    return await node_pieces(source.port, source.descriptor().content_id, timeout=timeout, credential=credential)


async def node_pieces(
    port: int, content_id: bytes, *, timeout: float = 20.0, credential: bytes | None = None
) -> dict[int, Piece]:
    """Every piece in a node's window, fetched over the real protocol."""
    peer = await TestPeer.connect(HOST, port, content_id, flags=HandshakeFlags.SEEDER)
    if credential is not None:
        peer.send(CredentialMessage(CredentialKind.PRESENT, credential))
    try:
        window = await peer.window()
        assert window is not None, "node sent no WINDOW"
        indices = [window.first + i for i, bit in enumerate(window.have) if bit]
        return await peer.fetch_pieces(indices, timeout)
    finally:
        peer.close()


def match_pieces(stream: bytes, pieces: dict[int, Piece], *, allow_jumps: bool = False) -> list[int]:
    """The run of consecutive pieces ``stream`` is made of (the last may be cut short); fails if it is not.

    With ``allow_jumps`` the run may skip ahead, but only to a random-access piece (what a player does when
    pieces are lost, e.g. across a source restart).
    """
    starts = [i for i, p in sorted(pieces.items()) if stream.startswith(p.data)]
    assert starts, "the stream does not begin with any piece the source produced"
    index = starts[0]
    offset = 0
    used: list[int] = []
    while offset < len(stream):
        piece = pieces.get(index)
        if piece is None and allow_jumps:
            later = [i for i in sorted(pieces) if i > index and pieces[i].flags & PieceFlags.RANDOM_ACCESS
                     and stream.startswith(pieces[i].data[: len(stream) - offset], offset)]  # fmt: skip
            if later:
                index = later[0]
                piece = pieces[index]
        assert piece is not None, f"stream continues past the known pieces at index {index}, offset {offset}"
        chunk = stream[offset : offset + len(piece.data)]
        assert piece.data.startswith(chunk), f"stream differs from piece {index} at offset {offset}"
        used.append(index)
        offset += len(chunk)
        index += 1
    return used


async def exchange(local_ip: str, port: int, request: bytes) -> bytes:
    """Everything a server on ``HOST:port`` sends back to the raw ``request`` sent from ``local_ip``, up to its close
    (b"" when it closes without a word); 10 s at most."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local_ip, 0))
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            async with asyncio.timeout(10):
                while chunk := await reader.read(65536):
                    data += chunk
        return data
    finally:
        writer.close()


async def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("condition not met in time")
