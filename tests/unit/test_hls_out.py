"""The engine's HLS outputs (http/hls_out.py) over a stand-in broadcast: no sockets, no swarm.

The stand-in hands out what the test puts in its queue as ``EngineBroadcast.pieces`` would (verified piece data in
order, ``on_discontinuity`` before a piece that does not continue the one before), so the output's own rules are
what is tested: one output per broadcast, the window and its 404s, discontinuities, timestamp jumps, the limits,
the idle stop, the startup errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import pytest
from aiohttp import web

from swarmcast.http.hls_out import (
    HlsNotReadyError,
    HlsOutput,
    HlsOutputs,
    HlsSettings,
    HlsStartError,
    master_response,
    playlist_response,
    rendition_uri,
    segment_response,
)
from swarmcast.media.hls_playlist import Variant
from swarmcast.media.testsignal import TestSignalConfig, generate_test_signal
from swarmcast.node.engine import EngineBroadcast
from swarmcast.node.engine_limits import EngineBusyError

SIGNAL = TestSignalConfig(bitrate=300_000, width=160, height=96, fps=25)  # a keyframe every second
SKIP = b"skip"


@functools.cache
def signal(seconds: float) -> bytes:
    return b"".join(generate_test_signal(SIGNAL, realtime=False, duration=seconds))


class StandIn:
    """What HlsOutput uses of an EngineBroadcast."""

    def __init__(self, infohash: str) -> None:
        self.infohash = infohash
        self.closed = asyncio.Event()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.readers = 0

    def startup_problem(self) -> str:
        return "no peers found"

    async def pieces(self, stopped: Callable[[], bool],
                     on_discontinuity: Callable[[], None] | None = None) -> AsyncGenerator[bytes, None]:  # fmt: skip
        self.readers += 1
        try:
            while not stopped() and not self.closed.is_set():
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(self.queue.get(), 0.02)
                    if data == SKIP:
                        assert on_discontinuity is not None
                        on_discontinuity()
                        continue
                    yield data
        finally:
            self.readers -= 1

    def feed(self, data: bytes, chunk: int = 188 * 50) -> None:
        for offset in range(0, len(data), chunk):
            self.queue.put_nowait(data[offset : offset + chunk])

    def as_broadcast(self) -> EngineBroadcast:
        return cast(EngineBroadcast, self)


def body(response: web.Response) -> str:
    assert isinstance(response.body, bytes)
    return response.body.decode()


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110  # the predicates are the outputs' own state: polled
            await asyncio.sleep(0.01)


async def test_every_player_is_served_from_one_output_and_its_window() -> None:
    outputs = HlsOutputs(HlsSettings(window_segments=3))
    broadcast = StandIn("ab" * 20)
    try:
        broadcast.feed(signal(6.0))
        first = await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        output = outputs.get(broadcast.infohash)
        assert output is not None
        await until(lambda: output.segments >= 5)
        answers = [body(await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5))
                   for _ in range(4)]  # fmt: skip
        assert broadcast.readers == 1 and len(outputs) == 1  # one reader for every player
        assert len(set(answers)) == 1
        playlist = answers[0]
        assert "#EXT-X-TARGETDURATION:1\n" in playlist and "#EXT-X-MEDIA-SEQUENCE:2\n" in playlist
        uris = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert uris == [f"hls/{broadcast.infohash}/{seq}.ts" for seq in (2, 3, 4)]
        assert first.content_type == "application/vnd.apple.mpegurl"
        segment = segment_response(outputs, broadcast.infohash, "4")
        assert isinstance(segment.body, bytes) and segment.body[0] == 0x47 and segment.content_type == "video/mp2t"
        for seq in ("1", "5", "00000000000001", "x", "-1"):  # left the window, not cut yet, malformed
            with pytest.raises(web.HTTPNotFound):
                segment_response(outputs, broadcast.infohash, seq)
        with pytest.raises(web.HTTPNotFound):
            segment_response(outputs, "cd" * 20, "4")  # no such output
    finally:
        await outputs.close()
    assert broadcast.readers == 0


async def test_a_skipped_run_of_pieces_is_a_discontinuity() -> None:
    """A skip (or a piece flagged DISCONTINUITY: the same call) closes the open segment and flags the next."""
    outputs = HlsOutputs()
    broadcast = StandIn("ab" * 20)
    try:
        data = signal(6.0)
        broadcast.feed(data[: len(data) // 2])
        broadcast.queue.put_nowait(SKIP)
        broadcast.feed(signal(4.0))  # what follows a skip starts with a random-access piece
        await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        output = outputs.get(broadcast.infohash)
        assert output is not None
        await until(lambda: "#EXT-X-DISCONTINUITY\n" in output.playlist() and output.segments >= 5)
    finally:
        await outputs.close()


async def test_outputs_are_bounded_and_none_is_evicted() -> None:
    outputs = HlsOutputs(HlsSettings(max_outputs=2, first_segment_wait=0.05))
    broadcasts = [StandIn(f"{i:02x}" * 20) for i in range(3)]
    try:
        for b in broadcasts[:2]:
            with pytest.raises(HlsNotReadyError):  # nothing came yet: players are told to retry (503)
                await playlist_response(outputs, b.as_broadcast(), startup_timeout=30)
        with pytest.raises(EngineBusyError, match="2 broadcasts"):
            await playlist_response(outputs, broadcasts[2].as_broadcast(), startup_timeout=30)
        assert len(outputs) == 2 and [b.readers for b in broadcasts] == [1, 1, 0]
    finally:
        await outputs.close()


async def test_an_output_nobody_asks_for_stops() -> None:
    outputs = HlsOutputs(HlsSettings(idle_seconds=0.2))
    broadcast = StandIn("ab" * 20)
    broadcast.feed(signal(3.0))
    try:
        await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        output = outputs.get(broadcast.infohash)
        assert isinstance(output, HlsOutput)
        await until(lambda: output.finished)
        assert outputs.get(broadcast.infohash) is None and broadcast.readers == 0
        assert output.window.ended and "#EXT-X-ENDLIST" in output.playlist()
        assert outputs.running("url", "http://x/") is None
    finally:
        await outputs.close()


async def test_a_broadcast_that_does_not_start_is_a_startup_error_and_frees_its_slot() -> None:
    outputs = HlsOutputs(HlsSettings(max_outputs=1))
    broadcast = StandIn("ab" * 20)
    try:
        with pytest.raises(HlsStartError, match="did not start within 0 s: no peers found"):
            await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=0.1)
        assert len(outputs) == 0
    finally:
        await outputs.close()


async def test_a_reload_finds_the_running_output_without_a_lookup() -> None:
    outputs = HlsOutputs()
    broadcast = StandIn("ab" * 20)
    broadcast.feed(signal(3.0))
    try:
        outputs.remember("url", "http://node/transport", broadcast.infohash)
        assert outputs.running("url", "http://node/transport") is None  # remembered, but no output runs yet
        await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        assert outputs.running("url", "http://node/transport") is outputs.get(broadcast.infohash)
        broadcast.closed.set()  # the engine left the broadcast: the next request looks it up again
        assert outputs.running("url", "http://node/transport") is None
    finally:
        await outputs.close()


def test_a_channel_master_playlist_lists_each_rendition_playlist() -> None:
    variants = [Variant(rendition_uri("ab" * 20), 1_200_000, (640, 360), "avc1.64001e,mp4a.40.2", 25.0, "source"),
                Variant(rendition_uri("cd" * 20), 400_000, (256, 144), None, None, "P144p30fps16x9")]  # fmt: skip
    response = master_response(variants)
    assert response.content_type == "application/vnd.apple.mpegurl"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    lines = body(response).splitlines()
    assert f"manifest.m3u8?infohash={'ab' * 20}" in lines and f"manifest.m3u8?infohash={'cd' * 20}" in lines


async def test_an_unflagged_timestamp_jump_does_not_stretch_the_playlist() -> None:
    """The input restarted under a source that did not say so: PTS start again. Without the guard the segment
    before the jump would last ~95 000 s (PTS wrap arithmetic) and the target duration with it."""
    outputs = HlsOutputs()
    broadcast = StandIn("ab" * 20)
    broadcast.feed(signal(3.0))
    broadcast.feed(signal(4.0))  # the same signal again: PTS back to the start, no discontinuity announced
    try:
        await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        output = outputs.get(broadcast.infohash)
        assert output is not None
        await until(lambda: output.segments >= 5)
        playlist = output.playlist()
        assert "#EXT-X-TARGETDURATION:1\n" in playlist, playlist
        assert "#EXT-X-DISCONTINUITY\n" in playlist, playlist
        assert all(float(line[8:].rstrip(",")) <= 1.5 for line in playlist.splitlines() if line.startswith("#EXTINF:"))
    finally:
        await outputs.close()


async def test_an_output_started_again_carries_on_the_media_sequence() -> None:
    outputs = HlsOutputs(HlsSettings(idle_seconds=0.2))
    broadcast = StandIn("cd" * 20)
    broadcast.feed(signal(3.0))
    try:
        await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        first = outputs.get(broadcast.infohash)
        assert isinstance(first, HlsOutput)
        await until(lambda: first.finished)
        stopped_at = first.window.next_sequence
        assert stopped_at > 0
        broadcast.feed(signal(3.0))
        await playlist_response(outputs, broadcast.as_broadcast(), startup_timeout=5)
        second = outputs.get(broadcast.infohash)
        assert isinstance(second, HlsOutput) and second is not first
        text = second.playlist()
        assert f"#EXT-X-MEDIA-SEQUENCE:{stopped_at}\n" in text
        assert "#EXT-X-DISCONTINUITY\n" in text
    finally:
        await outputs.close()
