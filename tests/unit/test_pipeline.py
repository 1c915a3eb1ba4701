"""The media pipeline: FLV in, MPEG-TS per rendition out, in-process (threads, no sockets)."""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import pytest

from swarmcast.broadcaster.pipeline import MediaPipeline, RenditionInfo
from swarmcast.broadcaster.profiles import LIVEPEER_PROFILES, Profile
from swarmcast.media.ts import TsAnalyzer, TsPacketizer
from tests.flvgen import make_flv

BIG_QUEUE = 1 << 30  # for tests that want every frame: no drop however fast the bytes come


@dataclass
class Outputs:
    ts: dict[str, bytearray] = field(default_factory=dict)
    infos: list[list[RenditionInfo]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)

    def on_ts(self, name: str, data: bytes) -> None:
        self.threads.add(threading.get_ident())
        self.order.append("ts")
        self.ts.setdefault(name, bytearray()).extend(data)

    def on_info(self, infos: list[RenditionInfo]) -> None:
        self.threads.add(threading.get_ident())
        self.order.append("info")
        self.infos.append(infos)

    def on_error(self, message: str) -> None:
        self.threads.add(threading.get_ident())
        self.order.append("error")
        self.errors.append(message)


async def run_pipeline(flv: bytes, profiles: list[Profile] | None = None, *, chunk: int = 4096,
                       **kwargs: int) -> Outputs:  # fmt: skip
    out = Outputs()
    pipeline = MediaPipeline("test", profiles or [], on_ts=out.on_ts, on_info=out.on_info, on_error=out.on_error,
                             **kwargs)  # fmt: skip
    for i in range(0, len(flv), chunk):
        pipeline.feed(flv[i : i + chunk])
        await asyncio.sleep(0)
    pipeline.close()
    await pipeline.wait_closed()
    assert out.threads <= {threading.get_ident()}  # every callback on the loop thread
    return out


@dataclass
class Track:
    width: int
    height: int
    pts: list[int]  # 90 kHz, presentation order
    keyframes: list[int]
    codecs: list[str]

    @property
    def fps(self) -> float:
        return (len(self.pts) - 1) * 90_000 / (self.pts[-1] - self.pts[0])


def read_ts(data: bytes | bytearray) -> Track:
    """What ffprobe would say: size, frame PTS and keyframe PTS of the video, the codecs."""
    container: Any = av.open(io.BytesIO(bytes(data)), format="mpegts")
    video = container.streams.video[0]
    codecs = [s.codec_context.name for s in container.streams]
    pts, keys = [], []
    for packet in container.demux(video):
        if packet.pts is None:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    width, height = video.codec_context.width, video.codec_context.height
    container.close()
    return Track(width, height, sorted(pts), keys, codecs)


def flv_video(flv: bytes) -> tuple[list[int], list[int], Fraction]:
    container: Any = av.open(io.BytesIO(flv), format="flv")
    video = container.streams.video[0]
    pts, keys = [], []
    for packet in container.demux(video):
        if packet.pts is None:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    tb = video.time_base
    container.close()
    return pts, keys, tb


def to_90k(values: list[int], tb: Fraction) -> list[int]:
    return [int(v * tb * 90_000) for v in values]


async def test_source_rendition_is_a_remux_with_tables_before_every_keyframe() -> None:
    flv = make_flv(3.0, bframes=2)
    out = await run_pipeline(flv)
    assert out.errors == []
    assert out.order[0] == "info"  # the renditions are known before their first bytes
    (info,) = out.infos[0]
    assert (info.name, info.width, info.height) == ("source", 640, 360)
    assert info.codecs.startswith("avc1.") and info.codecs.endswith(",mp4a.40.2")
    assert info.frame_rate == 30
    assert info.bandwidth > 0
    source = bytes(out.ts["source"])
    assert len(source) % 188 == 0
    track = read_ts(source)
    pts, keys, tb = flv_video(flv)
    assert track.codecs == ["h264", "aac"]
    assert track.pts == sorted(to_90k(pts, tb))  # every frame, none re-timed
    assert track.keyframes == to_90k(keys, tb)
    # FFmpeg writes PAT then PMT right before each keyframe and flags it random-access: a cut there is decodable.
    analyzer = TsAnalyzer()
    history: list[tuple[bool, bool]] = []
    starts = 0
    for packet in TsPacketizer().feed(source):
        info_ = analyzer.feed_packet(packet)
        if info_.is_video_keyframe_start:
            starts += 1
            assert history[-2:] == [(True, False), (False, True)]
        history.append((info_.is_pat, info_.is_pmt))
    assert starts == len(keys) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"video": "flv"}, "video codec flv1 (Sorenson H.263) is not supported: publish H.264"),
    ({"audio": "nellymoser"}, "audio codec nellymoser is not supported: publish AAC (or MP3) audio"),
    ({"video": None}, "the stream has no video: publish H.264 video"),
])  # fmt: skip
async def test_unsupported_codecs_are_refused_in_words(kwargs: dict[str, str | None], message: str) -> None:
    out = await run_pipeline(make_flv(1.0, **kwargs))  # type: ignore[arg-type]
    assert len(out.errors) == 1
    assert message in out.errors[0]
    assert out.ts == {}
    assert out.infos == []


async def test_mp3_audio_is_remuxed() -> None:
    out = await run_pipeline(make_flv(1.5, audio="libmp3lame"))
    assert out.errors == []
    assert out.infos[0][0].codecs.endswith(",mp4a.40.34")
    assert read_ts(out.ts["source"]).codecs == ["h264", "mp3float"]  # FFmpeg's MP3 decoder


async def test_garbage_is_an_error_not_a_crash() -> None:
    out = await run_pipeline(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
    assert len(out.errors) == 1
    assert "not a readable FLV stream" in out.errors[0]
    assert out.ts == {}


async def test_closed_before_any_byte_says_nothing() -> None:
    out = await run_pipeline(b"")
    assert (out.errors, out.ts, out.infos) == ([], {}, [])


async def test_queue_overflow_stops_with_one_error_and_never_blocks() -> None:
    flv = make_flv(2.0)
    out = Outputs()
    pipeline = MediaPipeline("test", [], on_ts=out.on_ts, on_info=out.on_info, on_error=out.on_error,
                             max_queue_bytes=10_000)  # fmt: skip
    for i in range(0, len(flv), 4096):  # no await: the worker cannot drain a byte, the loop goes on
        pipeline.feed(flv[i : i + 4096])
    await asyncio.sleep(0)
    pipeline.close()
    await pipeline.wait_closed()
    assert len(out.errors) == 1
    assert "more than 10000 bytes behind" in out.errors[0]
    assert "ts" not in out.order[out.order.index("error") :]  # nothing after the error


async def test_abort_ends_the_threads_at_once() -> None:
    out = Outputs()
    pipeline = MediaPipeline("test", [LIVEPEER_PROFILES["P144p30fps16x9"]], on_ts=out.on_ts, on_info=out.on_info,
                             on_error=out.on_error)  # fmt: skip
    pipeline.feed(make_flv(1.0)[:50_000])
    pipeline.abort()
    await asyncio.wait_for(pipeline.wait_closed(), 30)
    assert out.errors == []


async def test_ladder_sizes_rates_and_keyframes_match_the_source() -> None:
    # Irregular keyframes (every 40 frames at 30 fps) and B-frames in the source: the renditions follow them.
    flv = make_flv(4.0, keyint=40, bframes=2)
    profiles = [LIVEPEER_PROFILES["P144p30fps16x9"], LIVEPEER_PROFILES["P240p25fps16x9"],
                Profile("half", 320, 180, 200_000, 15)]  # fmt: skip
    out = await run_pipeline(flv, profiles, rendition_queue_bytes=BIG_QUEUE)
    assert out.errors == []
    infos = {i.name: i for i in out.infos[0]}
    assert list(infos) == ["source", "P144p30fps16x9", "P240p25fps16x9", "half"]
    assert infos["P144p30fps16x9"].codecs == "avc1.64001e,mp4a.40.2"
    assert infos["P240p25fps16x9"].frame_rate == 25
    assert infos["P240p25fps16x9"].bandwidth > 600_000
    source = read_ts(out.ts["source"])
    _, keys, tb = flv_video(flv)
    assert source.keyframes == to_90k(keys, tb) and len(keys) == 3
    for profile in profiles:
        track = read_ts(out.ts[profile.name])
        assert (track.width, track.height) == (profile.width, profile.height), profile.name
        assert track.fps == pytest.approx(profile.fps, abs=1.0), profile.name
        assert track.keyframes == source.keyframes, profile.name
        assert track.codecs == ["h264", "aac"]
        assert track.pts[0] == source.pts[0]


async def test_a_rendition_that_cannot_keep_up_drops_frames_but_keeps_keyframes() -> None:
    flv = make_flv(3.0)
    # A bound smaller than one picture (640x360: 345,600 bytes): every frame that finds the encoder busy is
    # dropped, keyframes never.
    out = await run_pipeline(flv, [LIVEPEER_PROFILES["P240p30fps16x9"]], chunk=1 << 20,
                             rendition_queue_bytes=100_000)  # fmt: skip
    assert out.errors == []
    source = read_ts(out.ts["source"])
    track = read_ts(out.ts["P240p30fps16x9"])
    assert len(source.pts) == 90  # the source rendition lost nothing
    assert track.keyframes == source.keyframes
    assert len(track.pts) <= len(source.pts)
