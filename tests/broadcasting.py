"""Helpers for tests of ``swarmcast broadcaster``: start it and its publishers, read its HLS, speak raw RTMP."""

from __future__ import annotations

import contextlib
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
from bitstring import BitStream
from pyrtmp.amf.serializers import AMF0Serializer

from swarmcast.broadcaster.rtmp_chunks import HANDSHAKE_SIZE, MessageType, RtmpMessage, encode_message
from tests.procs import LOOPBACK, SwarmcastProcess, free_port, swarmcast_process

# Small and slow: these tests share two cores with four other helpers' tests.
TESTSRC_ARGS = ("--size", "160x96", "--fps", "15", "--bitrate", "300k")


@contextlib.contextmanager
def broadcaster(tmp_path: Path, *extra: str, name: str = "broadcaster") -> Iterator[tuple[SwarmcastProcess, int, str]]:
    """A running broadcaster: (process, RTMP port, HTTP base URL)."""
    rtmp_port, http_port = free_port(), free_port()
    args = ("broadcaster", "--rtmp-addr", f"{LOOPBACK}:{rtmp_port}", "--http-addr", f"{LOOPBACK}:{http_port}",
            *extra)  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp_path / f"{name}.stderr", wait_port=(LOOPBACK, http_port),
                           start_timeout=60) as proc:  # fmt: skip
        proc.wait_for_port(LOOPBACK, rtmp_port, timeout=30)
        yield proc, rtmp_port, f"http://{LOOPBACK}:{http_port}"


@contextlib.contextmanager
def publisher(tmp_path: Path, url: str, name: str = "testsrc") -> Iterator[SwarmcastProcess]:
    with swarmcast_process(("testsrc", "--rtmp", url, *TESTSRC_ARGS), stderr_path=tmp_path / f"{name}.stderr") as p:
        yield p


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def media_sequence(playlist: str) -> int:
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"no media sequence in:\n{playlist}")


def segment_uris(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


def wait_playlist(url: str, *, segments: int = 1, timeout: float = 60.0, process: SwarmcastProcess | None = None,
                  containing: str | None = None) -> str:  # fmt: skip
    """The playlist at ``url`` once it lists at least ``segments`` segments (and ``containing``)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise AssertionError(f"{process.describe()} exited; stderr:\n{process.stderr_tail()}")
        status, _, body = get(url)
        last = f"{status} {body[:2000]!r}"
        if status == 200:
            text = body.decode()
            if len(segment_uris(text)) >= segments and (containing is None or containing in text):
                return text
        time.sleep(0.3)
    detail = f"; broadcaster stderr:\n{process.stderr_tail()}" if process is not None else ""
    raise AssertionError(f"{url}: no playlist with {segments} segments within {timeout} s (last: {last}){detail}")


def decode_segment(data: bytes) -> tuple[int, int, int, float | None]:
    """(video frames decoded, width, height, frame rate) of one TS segment."""
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate) if stream.average_rate else None
        return frames, stream.codec_context.width, stream.codec_context.height, rate


def keyframe_pts(data: bytes) -> list[int]:
    """The PTS of every video keyframe of one TS segment."""
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        return [p.pts for p in container.demux(video=0) if p.is_keyframe and p.pts is not None]


def wait_log(process: SwarmcastProcess, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tail = process.stderr_path.read_text(errors="replace")
        if text in tail:
            return next(line for line in tail.splitlines() if text in line)
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged within {timeout} s; stderr:\n{process.stderr_tail()}")


# -- a raw RTMP client, for the attacks --------------------------------------------------------------------------


def amf0(*values: Any) -> bytes:
    data = BitStream()
    for value in values:
        AMF0Serializer.create_object(data, value)
    return bytes(data.bytes)


def command(*values: Any, stream: int = 0) -> bytes:
    return encode_message(RtmpMessage(MessageType.COMMAND_AMF0, stream, 0, amf0(*values), 3), 128)


def rtmp_connect(port: int, *, app: str = "live", timeout: float = 10.0) -> socket.socket:
    """A TCP connection that has done the handshake and sent connect + createStream."""
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.sendall(b"\x03" + bytes(HANDSHAKE_SIZE))
    received = b""
    while len(received) < 1 + 2 * HANDSHAKE_SIZE:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed during the handshake")
        received += chunk
    sock.sendall(received[1 : 1 + HANDSHAKE_SIZE])  # C2 echoes S1
    sock.sendall(command("connect", 1, {"app": app, "tcUrl": f"rtmp://127.0.0.1:{port}/{app}"}))
    sock.sendall(command("createStream", 2, None))
    return sock


def publish(sock: socket.socket, name: str) -> None:
    sock.sendall(command("publish", 3, None, name, "live", stream=1))


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes ``sock`` within ``timeout`` s (whatever it sends first is read and dropped)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def send_quietly(sock: socket.socket, chunks: Sequence[bytes]) -> None:
    with contextlib.suppress(OSError):
        for chunk in chunks:
            sock.sendall(chunk)
