"""RTMP as a source (``node source --source rtmp://HOST[:PORT]/APP/NAME``): pulled with FFmpeg's RTMP client, remuxed
to MPEG-TS, with reconnects.

How this works. Each attempt runs in a thread of its own: PyAV opens the URL (FFmpeg's ``rtmp`` protocol plays
the stream; its FLV demuxer reads the tags), the codecs are checked (H.264 video, AAC or MP3 audio: the same rule
as the broadcaster's, swarmcast.media.codecs), and every packet is remuxed without re-encoding into one MPEG-TS
stream (swarmcast.media.tsmux) whose bytes hop to the event loop. The thread blocks when the consumer is
``MAX_BUFFERED_BYTES`` behind, which the RTMP server sees as TCP back-pressure; the loop never waits on the thread.
PyAV's ``timeout`` bounds the connect (``CONNECT_TIMEOUT``) and every read (``--source-read-timeout``), so a
stalled server or a stream name nobody publishes (nginx-rtmp keeps such a player waiting) ends the attempt.

``read_rtmp_source`` behaves as swarmcast.ingest.http_ts's ``read_ts_source``: the same fixed reconnect interval,
the same ``InputStatus`` for the monitor, ``on_reconnect`` for the cutter's discontinuity, failures logged once and
then summarised, and it never gives up. Each connection's TS starts with PAT/PMT and a keyframe (FFmpeg writes the
tables before each keyframe, and packets before the first keyframe are not sent), so the cutter sees a stream
that decodes from its first piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import av

from swarmcast.ingest.reconnect import ReconnectPolicy, note_connected, note_failed
from swarmcast.ingest.status import InputStatus
from swarmcast.media.codecs import unsupported_codec_problem
from swarmcast.media.tsmux import TsMuxer

log = logging.getLogger("swarmcast.ingest")

RTMP_SCHEMES: Final = ("rtmp", "rtmps")
CONNECT_TIMEOUT: Final = 5.0  # seconds for TCP + RTMP handshake + connect/play before the first packet
MAX_BUFFERED_BYTES: Final = 8 * 1024 * 1024  # TS made and not yet taken by the consumer; then the puller waits
MAX_REASON_CHARS: Final = 300
PROBE_SIZE: Final = 1024 * 1024
ANALYZE_DURATION_US: Final = 1_000_000  # as the broadcaster's pipeline: an RTMP server sends sequence headers first
JOIN_TIMEOUT: Final = 30.0  # bound on waiting for a puller thread at close (it checks the stop flag per packet)


def is_rtmp_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in RTMP_SCHEMES


def rtmp_url_problem(url: str) -> str | None:
    """Why ``url`` can never be pulled (None if it can be tried): checked once, at start."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError as error:
        return f"{url[:200]!r} is not a URL ({error})"
    if parts.scheme.lower() not in RTMP_SCHEMES or not parts.hostname:
        return f"{url[:200]!r} is not an rtmp:// URL"
    if len([part for part in parts.path.split("/") if part]) < 2:
        return f"{url[:200]!r} names no application and stream (rtmp://HOST[:PORT]/APP/NAME)"
    return None


class _Stop(Exception):  # noqa: N818 (a signal, not an error)
    pass


@dataclass
class _Event:
    kind: str  # "connected", "data", "end"
    data: bytes = b""
    reason: str = ""


def describe_av_error(error: BaseException, read_timeout: float) -> str:
    """One line for the operator from what FFmpeg's RTMP client raised."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens there?)"
    if isinstance(error, av.error.ExitError | av.error.TimeoutError | TimeoutError):
        return f"no data for {read_timeout:g} s (--source-read-timeout) or no answer: input lost"
    if isinstance(error, av.error.EOFError):
        return "the RTMP server ended the stream"
    if isinstance(error, av.error.FFmpegError) and error.strerror:
        return f"RTMP: {error.strerror}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Puller:
    """One connection attempt, in a thread: URL → PyAV demux → TS muxer → events on the loop's queue."""

    def __init__(self, url: str, read_timeout: float, loop: asyncio.AbstractEventLoop,
                 events: asyncio.Queue[_Event]) -> None:  # fmt: skip
        self.url = url
        self.read_timeout = read_timeout
        self._loop = loop
        self._events = events
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._buffered = 0
        self.thread = threading.Thread(target=self._run, name="rtmp-pull", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def consumed(self, size: int) -> None:
        """The loop took ``size`` bytes of our data."""
        with self._cond:
            self._buffered -= size
            self._cond.notify_all()

    def _post(self, event: _Event) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def _send(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            while self._buffered > MAX_BUFFERED_BYTES and not self._stop.is_set():
                self._cond.wait(1.0)
            if self._stop.is_set():
                raise _Stop
            self._buffered += len(data)
        self._post(_Event("data", data))

    def _run(self) -> None:
        reason = "the RTMP stream ended"
        try:
            self._pull()
        except _Stop:
            reason = "stopped"
        except _InputRefusedError as error:
            reason = str(error)
        except (av.error.FFmpegError, OSError) as error:
            reason = describe_av_error(error, self.read_timeout)
        except Exception as error:  # a bug: say so as this attempt's failure, the loop retries
            log.exception("RTMP pull of %s failed", self.url)
            reason = f"{type(error).__name__}: {error}"
        self._post(_Event("end", reason=reason[:MAX_REASON_CHARS]))

    def _pull(self) -> None:
        container: Any = av.open(
            self.url, mode="r", timeout=(CONNECT_TIMEOUT, self.read_timeout),
            options={"rtmp_live": "live", "probesize": str(PROBE_SIZE), "analyzeduration": str(ANALYZE_DURATION_US)},
        )  # fmt: skip
        try:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            problem = unsupported_codec_problem(video, audio)
            if problem is not None:
                raise _InputRefusedError(f"input is not usable: {problem}")
            assert video is not None
            muxer = TsMuxer()
            try:
                outputs = {video.index: muxer.add_copy(video)}
                if audio is not None:
                    outputs[audio.index] = muxer.add_copy(audio)
                started = False
                for packet in container.demux(*(s for s in (video, audio) if s is not None)):
                    if self._stop.is_set():
                        raise _Stop
                    if packet.dts is None or packet.size == 0:
                        continue
                    if not started:
                        # Start the TS on a keyframe: audio before it would be cut off by any player anyway.
                        if not (packet.stream is video and packet.is_keyframe):
                            continue
                        started = True
                        self._post(_Event("connected"))
                    muxer.mux(packet, outputs[packet.stream.index])
                    self._send(muxer.take())
                self._send(muxer.close())
            finally:
                muxer.close()
        finally:
            container.close()


class _InputRefusedError(Exception):
    """The RTMP stream plays but carries codecs we do not take."""


async def read_rtmp_source(
    url: str,
    *,
    reconnect_interval: float = 1.0,
    read_timeout: float = 10.0,
    on_reconnect: Callable[[], None] | None = None,
    status: InputStatus | None = None,
) -> AsyncIterator[bytes]:
    """MPEG-TS chunks of the RTMP stream at ``url``, reconnecting for ever (see the module's docstring)."""
    policy = ReconnectPolicy(reconnect_interval)
    status = status if status is not None else InputStatus(url)
    loop = asyncio.get_running_loop()
    ever_connected = False
    logged_kinds: set[str] = set()
    while True:
        events: asyncio.Queue[_Event] = asyncio.Queue()
        puller = _Puller(url, read_timeout, loop, events)
        puller.start()
        received = 0
        try:
            while (event := await events.get()).kind != "end":
                if event.kind == "connected":
                    note_connected(policy, status, logged_kinds, url=url, what="RTMP, remuxed to MPEG-TS",
                                   reconnected=ever_connected, on_reconnect=on_reconnect)  # fmt: skip
                    ever_connected = True
                    continue
                received += len(event.data)
                status.bytes_received += len(event.data)
                puller.consumed(len(event.data))
                yield event.data
            reason = event.reason if received == 0 else f"{event.reason} after {received} bytes"
        finally:
            puller.stop()
            if puller.thread.is_alive():
                # Blocked at most one read (read_timeout) or one connect: waited for off the loop.
                await asyncio.wait_for(loop.run_in_executor(None, puller.thread.join, JOIN_TIMEOUT), JOIN_TIMEOUT + 1)
        delay = note_failed(policy, status, logged_kinds, url=url, reason=reason)
        await asyncio.sleep(delay)
