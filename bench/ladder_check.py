"""What ffprobe would say of each rendition of a test stream: size and frame rate of one HLS segment, and the
keyframe PTS of every rendition (equal across renditions, so players can switch at any segment boundary).

    python bench/ladder_check.py [--seconds 8] [--profiles P144p30fps16x9,P240p25fps16x9,P360p30fps16x9,P720p30fps16x9]

A 1280x720 30 fps H.264 + AAC FLV (keyframe every 2 s) goes through MediaPipeline (what a publisher's stream goes
through in ``swarmcast broadcaster``); each rendition's TS is cut with TsSegmenter (2 s target) and one segment
of each is decoded with PyAV.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
from tests.flvgen import make_flv

from swarmcast.broadcaster.pipeline import MediaPipeline, RenditionInfo
from swarmcast.broadcaster.profiles import parse_transcoding_options
from swarmcast.media.ts_segmenter import TsSegmenter

DEFAULT_PROFILES = "P144p30fps16x9,P240p25fps16x9,P360p30fps16x9,P720p30fps16x9"


def probe(data: bytes) -> tuple[int, int, float, list[int]]:
    """Width, height, frame rate (frames over their PTS span) and keyframe PTS (90 kHz) of a TS's video."""
    container: Any = av.open(io.BytesIO(data), format="mpegts")
    video = container.streams.video[0]
    pts: list[int] = []
    keys: list[int] = []
    for packet in container.demux(video):
        if packet.pts is None:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    width, height = video.codec_context.width, video.codec_context.height
    pts.sort()
    fps = len(pts) * 90_000 / (pts[-1] - pts[0] + (pts[-1] - pts[-2]))
    container.close()
    return width, height, fps, keys


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--profiles", default=DEFAULT_PROFILES)
    args = parser.parse_args(argv)
    flv = make_flv(args.seconds, width=1280, height=720, fps=30, keyint=60)
    out: dict[str, bytearray] = {}
    infos: list[list[RenditionInfo]] = []
    errors: list[str] = []
    pipeline = MediaPipeline("check", parse_transcoding_options(args.profiles),
                             on_ts=lambda n, d: out.setdefault(n, bytearray()).extend(d), on_info=infos.append,
                             on_error=errors.append, rendition_queue_bytes=1 << 40)  # fmt: skip
    pipeline.feed(flv)
    pipeline.close()
    await pipeline.wait_closed()
    if errors:
        print(errors[0])
        return 1
    for info in infos[0]:
        print(f"master playlist: {info.name}: BANDWIDTH={info.bandwidth} RESOLUTION={info.width}x{info.height} "
              f"CODECS=\"{info.codecs}\" FRAME-RATE={info.frame_rate}")  # fmt: skip
    reference: list[int] | None = None
    for info in infos[0]:
        segmenter = TsSegmenter(2.0)
        segments = segmenter.feed(bytes(out[info.name])) + segmenter.flush()
        segment = segments[1]
        width, height, fps, _ = probe(segment.data)
        _, _, _, keys = probe(bytes(out[info.name]))
        starts = [s.start_pts for s in segments]
        print(f"{info.name:16} segment #1 ({segment.duration:.3f} s): {width}x{height} {fps:.2f} fps; "
              f"keyframe PTS {keys}; segment starts {starts}")  # fmt: skip
        reference = reference or keys
        if keys != reference:
            print(f"  KEYFRAMES DIFFER from source: {keys} != {reference}")
            return 1
    print("keyframe PTS equal across all renditions:", reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
