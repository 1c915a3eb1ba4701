"""The live test signal: an endless H.264 + AAC MPEG-TS made in-process with PyAV, and an HTTP server for it.

How this works. ``generate_test_signal`` draws each picture with numpy (colour bars, a box moving across, a binary
frame counter, and low-level noise that changes every frame so the encoder really spends the bitrate), encodes
it with libx264 (ultrafast, zerolatency: no lookahead, no B-frames, so a frame leaves the encoder as soon as it
goes in) and AAC, and muxes both with FFmpeg's mpegts muxer into a memory sink that is emptied after every frame.
``flush_packets`` makes the muxer hand over each packet at once, ``max_delay=0`` stops it holding PCR/DTS
headroom and ``pes_payload_size=0`` stops it gathering several audio frames into one PES packet, so bytes for a
frame come out within the time it takes to encode it. Right before the first TS packet of each keyframe we
insert a clock packet (see ``swarmcast.media.ts``) with the wall-clock time at which that frame was drawn.

``TestSignalBroadcaster`` runs the generator in a thread (encoding is CPU-bound and PyAV releases the GIL while
FFmpeg works), hands each chunk to the event loop, keeps the current GOP so a newcomer starts on a keyframe, and
fans the stream out to any number of subscribers, each with its own bounded queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any, Final, Self

import av
import numpy as np
import numpy.typing as npt
from aiohttp import web
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.video.stream import VideoStream

from swarmcast.bytequeue import BoundedByteQueue
from swarmcast.media.ts import GopCache, TsAnalyzer, TsPacketizer, make_clock_packet
from swarmcast.media.tsmux import MemorySink
from swarmcast.media.units import MAX_FPS, MIN_BITRATE

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 48_000
AUDIO_BITRATE: Final = 96_000
TONE_HZ: Final = 440.0
DEFAULT_MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024

# What the TS layer costs on top of the elementary streams, so that the *total* output lands near the requested
# bitrate: 4 header bytes in every 188, a PES header and on average half a packet of stuffing per video frame,
# each ~250-byte AAC frame spread over two packets, and the PAT/PMT/SDT/clock repeats. Measured over 40 s at
# 0.5, 2 and 8 Mbit/s: the long-run total is within 1% of the target, each second within about 10%.
_TS_PAYLOAD_SHARE: Final = 184 / 188
_AUDIO_TS_FACTOR: Final = 1.48
_TABLES_BPS: Final = 12_000
_PES_OVERHEAD_BITS: Final = 112 * 8

# 75% colour bars (white, yellow, cyan, green, magenta, red, blue) in BT.601 limited-range Y'CbCr.
_BARS_YUV: Final = (
    (180, 128, 128),
    (168, 44, 136),
    (145, 147, 44),
    (133, 63, 52),
    (63, 193, 204),
    (51, 109, 212),
    (28, 212, 120),
)
_NOISE_FRAMES: Final = 7  # a small bank: consecutive frames differ, which is all the encoder can exploit
_NOISE_LEVEL: Final = 12
_COUNTER_BITS: Final = 16


@dataclass(frozen=True, slots=True)
class TestSignalConfig:
    """What to generate. ``bitrate`` is the target for the whole transport stream, in bits/s."""

    __test__ = False  # not a pytest test class despite the name

    bitrate: int = 2_000_000
    width: int = 640
    height: int = 360
    fps: int = 30

    def __post_init__(self) -> None:
        if self.bitrate < MIN_BITRATE:
            raise ValueError(f"bitrate {self.bitrate} below the minimum of {MIN_BITRATE} bits/s")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError(f"size {self.width}x{self.height}: width and height must be even and at least 32")
        if not 1 <= self.fps <= MAX_FPS:
            raise ValueError(f"fps {self.fps} not in 1..{MAX_FPS}")

    @property
    def video_bitrate(self) -> int:
        """The libx264 target that makes the whole TS come out near ``bitrate``."""
        rest = self.bitrate - AUDIO_BITRATE * _AUDIO_TS_FACTOR - _TABLES_BPS - _PES_OVERHEAD_BITS * self.fps
        return max(int(rest * _TS_PAYLOAD_SHARE), self.bitrate // 4)


class _Picture:
    """Draws the frames straight into a yuv420p buffer, avoiding an RGB→YUV conversion per frame."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.width, self.height, self.fps = width, height, fps
        rng = np.random.default_rng(1)
        luma = np.empty((height, width), np.uint8)
        cb = np.empty((height // 2, width // 2), np.uint8)
        cr = np.empty((height // 2, width // 2), np.uint8)
        bars_end = height * 2 // 3
        for i, (y, u, v) in enumerate(_BARS_YUV):
            x0, x1 = width * i // len(_BARS_YUV), width * (i + 1) // len(_BARS_YUV)
            luma[:bars_end, x0:x1] = y
            cb[: bars_end // 2, x0 // 2 : x1 // 2] = u
            cr[: bars_end // 2, x0 // 2 : x1 // 2] = v
        # Lower third: a grey ramp, neutral chroma.
        luma[bars_end:, :] = np.linspace(16, 200, width, dtype=np.uint8)[np.newaxis, :]
        cb[bars_end // 2 :, :] = 128
        cr[bars_end // 2 :, :] = 128
        # The noise is added on top of luma, so keep the sum within 8 bits.
        self._luma = np.minimum(luma, 255 - _NOISE_LEVEL).astype(np.uint8)
        self._chroma = np.concatenate((cb.reshape(-1), cr.reshape(-1)))
        self._noise = rng.integers(0, _NOISE_LEVEL + 1, (_NOISE_FRAMES, height, width), dtype=np.uint8)
        self._buffer = np.empty(width * height * 3 // 2, np.uint8)
        self._box = max(8, (min(width, height) // 6) & ~1)
        self._cell = max(2, width // (_COUNTER_BITS * 2))

    def draw(self, n: int) -> npt.NDArray[np.uint8]:
        """Frame ``n`` as the (height*3/2, width) array that ``VideoFrame.from_ndarray(format="yuv420p")`` takes."""
        w, h = self.width, self.height
        luma = self._buffer[: w * h].reshape(h, w)
        np.add(self._luma, self._noise[n % _NOISE_FRAMES], out=luma)
        self._buffer[w * h :] = self._chroma
        # The box bounces across the middle, one full sweep every two seconds.
        span = w - self._box
        phase = (n % (2 * self.fps)) / self.fps  # 0..2
        x = int(span * (phase if phase <= 1 else 2 - phase)) & ~1
        y = (h // 3 - self._box // 2) & ~1
        luma[y : y + self._box, x : x + self._box] = 235
        # A binary frame counter along the bottom, to spot dropped or repeated frames by eye.
        cell = self._cell
        for bit in range(_COUNTER_BITS):
            x0 = bit * cell * 2
            luma[h - 2 * cell : h - cell, x0 : x0 + cell] = 235 if (n >> bit) & 1 else 16
        return self._buffer.reshape(h * 3 // 2, w)


def _open_muxer(config: TestSignalConfig, sink: MemorySink) -> tuple[OutputContainer, VideoStream, AudioStream]:
    container = av.open(
        sink,
        mode="w",
        format="mpegts",
        container_options={
            "flush_packets": "1",
            "max_delay": "0",
            "pes_payload_size": "0",
            # FFmpeg repeats PAT/PMT right before every keyframe anyway; these periods cover players that join
            # at an arbitrary byte without our GOP cache.
            "pat_period": "0.5",
            "sdt_period": "1",
        },
    )
    bitrate = config.video_bitrate
    video = container.add_stream(
        "libx264",
        rate=config.fps,
        options={
            "preset": "ultrafast",
            "tune": "zerolatency",
            # A keyframe exactly every second: fixed GOP, no scene-cut keyframes.
            "g": str(config.fps),
            "keyint_min": str(config.fps),
            "sc_threshold": "0",
            # A one-second VBV with maxrate == bitrate keeps every second close to the target, which is what a
            # swarm sees as its load.
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
        },
    )
    video.width = config.width
    video.height = config.height
    video.pix_fmt = "yuv420p"
    video.bit_rate = bitrate
    audio = container.add_stream("aac", rate=SAMPLE_RATE)
    audio.layout = "stereo"
    audio.bit_rate = AUDIO_BITRATE
    return container, video, audio


def generate_test_signal(
    config: TestSignalConfig,
    *,
    realtime: bool = True,
    duration: float | None = None,
    stop: threading.Event | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> Iterator[bytes]:
    """Yield the test signal as chunks of whole TS packets, one chunk per video frame.

    With ``realtime`` frame n is drawn at start + n/fps (by the monotonic clock); when behind, frames are made
    back to back until caught up. Without it frames are made as fast as the CPU allows (for tests). ``duration``
    (seconds of media) ends the stream, flushing the encoders; otherwise it runs until ``stop`` is set or the
    generator is closed.
    """
    if stop is None:
        stop = threading.Event()
    sink = MemorySink()
    container, video, audio = _open_muxer(config, sink)
    picture = _Picture(config.width, config.height, config.fps)
    packetizer = TsPacketizer()
    analyzer = TsAnalyzer()
    clock_cc = 0
    drawn_at_us: dict[int, int] = {}  # video pts -> wall-clock µs when drawn, until its packet leaves the encoder
    keyframe_times: collections.deque[int] = collections.deque()  # muxed keyframes awaiting their clock packet
    audio_samples = 0
    audio_frame_size = 1024
    # Audio runs this far ahead of the video so that FFmpeg's interleaver, which holds a video packet until an
    # audio packet at least as late is queued, never waits for the AAC encoder's priming delay.
    audio_lead = 3 * audio_frame_size
    total_frames = None if duration is None else max(1, round(duration * config.fps))
    video_tb = Fraction(1, config.fps)
    audio_tb = Fraction(1, SAMPLE_RATE)
    tone_step = 2 * math.pi * TONE_HZ / SAMPLE_RATE

    def mux(packets: Sequence[Packet[Any]]) -> None:
        for packet in packets:
            if packet.is_keyframe and packet.stream is video and packet.pts is not None:
                keyframe_times.append(drawn_at_us.get(packet.pts, int(wall_clock() * 1e6)))
            if packet.stream is video and packet.pts is not None:
                drawn_at_us.pop(packet.pts, None)
            container.mux(packet)

    def encode_audio_until(sample: int) -> None:
        nonlocal audio_samples
        while audio_samples < sample:
            t = np.arange(audio_samples, audio_samples + audio_frame_size, dtype=np.float64) * tone_step
            tone = (0.25 * np.sin(t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack((tone, tone)), format="fltp", layout="stereo")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = audio_samples
            frame.time_base = audio_tb
            audio_samples += audio_frame_size
            mux(audio.encode(frame))

    def drain() -> bytes:
        nonlocal clock_cc
        out: list[bytes] = []
        for packet in packetizer.feed(sink.take()):
            if analyzer.feed_packet(packet).is_video_keyframe_start:
                stamp = keyframe_times.popleft() if keyframe_times else int(wall_clock() * 1e6)
                out.append(make_clock_packet(stamp, clock_cc))
                clock_cc = (clock_cc + 1) & 0x0F
            out.append(packet)
        return b"".join(out)

    try:
        start = time.monotonic()
        n = 0
        while not stop.is_set() and (total_frames is None or n < total_frames):
            if realtime:
                delay = start + n / config.fps - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            drawn_at_us[n] = int(wall_clock() * 1e6)
            frame = av.VideoFrame.from_ndarray(picture.draw(n), format="yuv420p")
            frame.pts = n
            frame.time_base = video_tb
            mux(video.encode(frame))
            encode_audio_until((n + 1) * SAMPLE_RATE // config.fps + audio_lead)
            n += 1
            chunk = drain()
            if chunk:
                yield chunk
        if total_frames is not None and n >= total_frames:
            mux(video.encode(None))
            mux(audio.encode(None))
            container.close()
            chunk = drain()
            if chunk:
                yield chunk
    finally:
        container.close()  # idempotent in PyAV; releases the encoders when the consumer stops early


class Subscription(BoundedByteQueue):
    """One consumer's view of the broadcast: a byte queue that the broadcaster fills and may cut off."""

    JOIN_CHUNKS = True  # a consumer gets everything queued at once: one write per wake-up

    def __init__(self, broadcaster: TestSignalBroadcaster, max_bytes: int, on_drop: Callable[[], None] | None) -> None:
        super().__init__(max_bytes, on_drop=self._dropped)
        self._broadcaster = broadcaster
        self._consumer_on_drop = on_drop

    def _dropped(self) -> None:
        self._broadcaster._unsubscribe(self)
        if self._consumer_on_drop is not None:
            self._consumer_on_drop()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (data := await self.get()) is not None:
            yield data

    def close(self) -> None:
        self._broadcaster._unsubscribe(self)
        self.end()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class TestSignalBroadcaster:
    """Runs the test signal in a thread and fans it out to subscribers, each starting on a keyframe.

    A subscriber's first bytes are PAT + PMT + everything since the latest keyframe; then it gets the live
    stream. One that falls more than ``max_queue_bytes`` behind is dropped, so a slow reader never holds up the
    others or grows memory without bound. Call ``start`` from the event loop's thread.
    """

    __test__ = False

    def __init__(self, config: TestSignalConfig, *, max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES) -> None:
        self.config = config
        self._max_queue_bytes = max_queue_bytes
        self._gop = GopCache()
        self._live: set[Subscription] = set()
        self._waiting: set[Subscription] = set()  # joined before any keyframe: start them at the next one
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[None] | None = None
        self.bytes_out = 0

    @property
    def max_queue_bytes(self) -> int:
        return self._max_queue_bytes

    @property
    def subscriber_count(self) -> int:
        return len(self._live) + len(self._waiting)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("TestSignalBroadcaster already started")
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="testsignal", daemon=True)
        self._thread.start()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        error: BaseException | None = None
        try:
            for chunk in generate_test_signal(self.config, stop=self._stop):
                loop.call_soon_threadsafe(self._on_chunk, chunk)
        except RuntimeError as exc:
            if loop.is_closed():
                return  # the loop went away under us; nobody is left to tell
            error = exc
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(self._on_finished, error)

    def _on_chunk(self, chunk: bytes) -> None:
        self.bytes_out += len(chunk)
        gop_started = self._gop.feed(chunk)
        for sub in tuple(self._live):
            sub.push(chunk)
        if gop_started and self._waiting:
            snapshot = self._gop.snapshot()
            if snapshot is not None:
                for sub in self._waiting:
                    self._live.add(sub)
                    sub.push(snapshot)
                self._waiting.clear()

    def _on_finished(self, error: BaseException | None) -> None:
        if error is not None:
            logger.error("test signal generator failed", exc_info=error)
        self._end_all()
        if self._done is not None and not self._done.done():
            if error is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(error)

    def _end_all(self) -> None:
        for sub in (*self._live, *self._waiting):
            sub.end()
        self._live.clear()
        self._waiting.clear()

    def subscribe(self, on_drop: Callable[[], None] | None = None) -> Subscription:
        """A new subscription, primed with the current GOP. ``on_drop`` runs if it is cut off for lagging."""
        sub = Subscription(self, self._max_queue_bytes, on_drop)
        if self._done is not None and self._done.done():
            sub.end()
            return sub
        snapshot = self._gop.snapshot()
        if snapshot is None:
            self._waiting.add(sub)
        else:
            self._live.add(sub)
            sub.push(snapshot)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._live.discard(sub)
        self._waiting.discard(sub)

    async def wait(self) -> None:
        """Until the generator thread ends: never, unless it fails (raises its error) or ``close`` is called."""
        if self._done is None:
            raise RuntimeError("TestSignalBroadcaster not started")
        await asyncio.shield(self._done)

    async def close(self) -> None:
        """Stop the generator thread, wait for it, and end every subscription."""
        self._stop.set()
        if self._done is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._done)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._end_all()


BROADCASTER_KEY: Final = web.AppKey("broadcaster", TestSignalBroadcaster)

_HELP = """swarmcast test signal

GET /stream.ts   live H.264 + AAC MPEG-TS ({width}x{height} @ {fps} fps, {bitrate} bit/s), starting on a keyframe
                 A clock packet on PID 0x1FF0 ("SWCLK1" + u64 µs wall-clock time) precedes every keyframe.
"""


async def _handle_help(request: web.Request) -> web.Response:
    config = request.app[BROADCASTER_KEY].config
    text = _HELP.format(width=config.width, height=config.height, fps=config.fps, bitrate=config.bitrate)
    return web.Response(text=text)


async def _handle_stream(request: web.Request) -> web.StreamResponse:
    broadcaster = request.app[BROADCASTER_KEY]
    response = web.StreamResponse(headers={"Content-Type": "video/mp2t", "Cache-Control": "no-cache, no-store"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method == "HEAD":
        return response

    def abort() -> None:
        # A reader that stopped reading leaves our write() waiting for buffer space forever; closing the
        # transport wakes it with a connection error.
        if request.transport is not None:
            request.transport.abort()

    peer = request.remote
    with broadcaster.subscribe(on_drop=abort) as sub:
        logger.info("stream client %s connected (%d clients)", peer, broadcaster.subscriber_count)
        try:
            async for data in sub:
                await response.write(data)
        except ConnectionError:
            pass
    if sub.dropped:
        logger.warning("stream client %s dropped: more than %d bytes behind", peer, broadcaster.max_queue_bytes)
    logger.info("stream client %s disconnected (%d clients)", peer, broadcaster.subscriber_count)
    return response


def make_app(broadcaster: TestSignalBroadcaster) -> web.Application:
    app = web.Application()
    app[BROADCASTER_KEY] = broadcaster
    app.router.add_get("/", _handle_help)
    app.router.add_get("/stream.ts", _handle_stream)
    return app


async def serve_testsrc(
    host: str,
    port: int,
    bitrate: int,
    size: tuple[int, int],
    fps: int,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the test signal on http://host:port/stream.ts until cancelled (or the generator fails)."""
    config = TestSignalConfig(bitrate=bitrate, width=size[0], height=size[1], fps=fps)
    broadcaster = TestSignalBroadcaster(config)
    runner = web.AppRunner(make_app(broadcaster), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        broadcaster.start()
        if ready is not None:
            ready()
        await broadcaster.wait()
    finally:
        # Subscribers first: their handlers end, so the runner's shutdown need not wait for them.
        await broadcaster.close()
        await runner.cleanup()


__all__ = [
    "AUDIO_BITRATE",
    "BROADCASTER_KEY",
    "SAMPLE_RATE",
    "Subscription",
    "TestSignalBroadcaster",
    "TestSignalConfig",
    "generate_test_signal",
    "make_app",
    "serve_testsrc",
]
