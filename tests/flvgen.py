"""FLV test streams made with PyAV: what an RTMP publisher (OBS, ffmpeg) sends, as bytes, in memory."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import numpy as np

from swarmcast.media.testsignal import _Picture


def make_flv(
    seconds: float = 3.0,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    video: str | None = "libx264",
    audio: str | None = "aac",
    keyint: int | None = None,
    bframes: int = 0,
) -> bytes:
    """An FLV file of the test picture and a tone; ``keyint`` frames between keyframes (default: one second)."""
    buffer = io.BytesIO()
    container: Any = av.open(buffer, "w", format="flv")
    frames = round(seconds * fps)
    vstream: Any = None
    if video is not None:
        options: dict[str, str] = {}
        if video == "libx264":
            options = {"preset": "ultrafast", "g": str(keyint or fps), "keyint_min": str(keyint or fps),
                       "sc_threshold": "0", "bf": str(bframes), "x264-params": f"bframes={bframes}:scenecut=0"}
        vstream = container.add_stream(video, rate=fps, options=options)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.bit_rate = 800_000
        if video != "libx264":
            vstream.codec_context.gop_size = keyint or fps
    astream: Any = None
    if audio is not None:
        astream = container.add_stream(audio, rate=44_100 if audio != "aac" else 48_000)
        if audio == "aac":
            astream.layout = "stereo"
        else:
            astream.layout = "mono"
    picture = _Picture(width, height, fps)
    samples = 0
    for n in range(frames):
        if vstream is not None:
            frame = av.VideoFrame.from_ndarray(picture.draw(n), format="yuv420p")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            for packet in vstream.encode(frame):
                container.mux(packet)
        if astream is not None:
            size = astream.codec_context.frame_size or 1024
            while samples < (n + 1) * astream.rate // fps:
                channels = 2 if audio == "aac" else 1
                fmt = astream.codec_context.format.name
                tone = np.sin(np.arange(samples, samples + size) * 0.06)
                if fmt.startswith("flt"):
                    array = np.tile((0.2 * tone).astype(np.float32), (channels, 1))
                else:  # s16 or s32, planar or not: mono either way
                    dtype = np.int16 if fmt.startswith("s16") else np.int32
                    array = (0.2 * np.iinfo(dtype).max * tone).astype(dtype).reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(array, format=fmt, layout="stereo" if channels == 2 else "mono")
                aframe.sample_rate, aframe.pts, aframe.time_base = astream.rate, samples, Fraction(1, astream.rate)
                samples += size
                for packet in astream.encode(aframe):
                    container.mux(packet)
    for stream in (vstream, astream):
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    container.close()
    return buffer.getvalue()
