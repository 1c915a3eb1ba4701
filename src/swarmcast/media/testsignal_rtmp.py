"""The live test signal pushed over RTMP (``swarmcast testsrc --rtmp URL``), as the videoDAC recipe's
``ffmpeg -re -f lavfi -i testsrc ... -f lavfi -i sine ... -f flv rtmp://...`` does, with PyAV.

How this works. The same pictures and tone as testsignal.py (colour bars, a moving box, a frame counter, 440 Hz)
are encoded with libx264 and AAC and muxed by FFmpeg's FLV muxer straight into its RTMP client
(``av.open(url, "w", format="flv")``), in real time. When the server goes away (a write fails, or the
connection cannot be made) the push starts again after a pause that grows to ``MAX_RETRY_DELAY``, with
timestamps from zero, as ffmpeg run again would: the broadcaster's reconnect grace is what this exercises.

FFmpeg's network calls can block for a while and PyAV may hold the GIL in some of them, so this runs in a
thread of its own and nothing else of the process depends on it being quick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Final

import av
import numpy as np

from swarmcast.media.testsignal import AUDIO_BITRATE, SAMPLE_RATE, TONE_HZ, TestSignalConfig, _Picture

log = logging.getLogger("swarmcast.testsrc")

MIN_RETRY_DELAY: Final = 0.5
MAX_RETRY_DELAY: Final = 5.0
_AUDIO_FRAME: Final = 1024


def _push_once(config: TestSignalConfig, url: str, stop: threading.Event, on_connected: Callable[[], None]) -> None:
    """Push until ``stop`` or an error (raised); ``on_connected`` runs once the first frame is sent."""
    container = av.open(url, mode="w", format="flv")
    try:
        rate = str(config.video_bitrate)
        video = container.add_stream("libx264", rate=config.fps, options={
            "preset": "ultrafast", "tune": "zerolatency", "g": str(config.fps), "keyint_min": str(config.fps),
            "sc_threshold": "0", "maxrate": rate, "bufsize": rate})  # fmt: skip
        video.width, video.height, video.pix_fmt = config.width, config.height, "yuv420p"
        video.bit_rate = config.video_bitrate
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "stereo"
        audio.bit_rate = AUDIO_BITRATE
        picture = _Picture(config.width, config.height, config.fps)
        video_tb, audio_tb = Fraction(1, config.fps), Fraction(1, SAMPLE_RATE)
        step = 2 * np.pi * TONE_HZ / SAMPLE_RATE
        samples = 0
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            delay = start + n / config.fps - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            frame = av.VideoFrame.from_ndarray(picture.draw(n), format="yuv420p")
            frame.pts, frame.time_base = n, video_tb
            for packet in video.encode(frame):
                container.mux(packet)
            while samples < (n + 1) * SAMPLE_RATE // config.fps:
                t = np.arange(samples, samples + _AUDIO_FRAME, dtype=np.float64) * step
                tone = (0.25 * np.sin(t)).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(np.stack((tone, tone)), format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = SAMPLE_RATE, samples, audio_tb
                samples += _AUDIO_FRAME
                for packet in audio.encode(aframe):
                    container.mux(packet)
            if n == 0:
                on_connected()
            n += 1
    finally:
        try:
            container.close()
        except Exception as error:  # the server is gone: the trailer cannot be sent, nothing to do about it
            log.debug("closing the RTMP push: %s", error)


def push_test_signal_rtmp(config: TestSignalConfig, url: str, stop: threading.Event) -> None:
    """Push the test signal to ``url`` until ``stop`` is set, starting again whenever the push fails."""
    delay = MIN_RETRY_DELAY
    while not stop.is_set():
        connected = False

        def on_connected() -> None:
            nonlocal connected
            connected = True
            log.info("testsrc publishing %s (%dx%d @ %d fps, %d bit/s)", url, config.width, config.height,
                     config.fps, config.bitrate)  # fmt: skip

        try:
            _push_once(config, url, stop, on_connected)
        except Exception as error:  # av.FFmpegError and OSError alike: the server refused or went away
            if connected:
                delay = MIN_RETRY_DELAY
            log.warning("testsrc: RTMP push to %s failed: %s; again in %g s", url, error, delay)
            if stop.wait(delay):
                return
            delay = min(MAX_RETRY_DELAY, delay * 2)
