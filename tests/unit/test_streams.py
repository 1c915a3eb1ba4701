"""The stream registry (broadcaster/streams.py) with a stand-in pipeline: no sockets, no PyAV threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import pytest

from swarmcast.broadcaster.pipeline import RenditionInfo
from swarmcast.broadcaster.profiles import Profile
from swarmcast.broadcaster.rtmp_server import PublishRefusedError
from swarmcast.broadcaster.streams import RegistryConfig, StreamRegistry
from swarmcast.media.testsignal import TestSignalConfig, generate_test_signal

INFO = RenditionInfo("source", 64, 64, 300_000, "avc1.42c00a,mp4a.40.2", 10.0)


@cache
def ts_seconds(seconds: int) -> bytes:
    """The test signal as MPEG-TS, a keyframe every second, timestamps from zero."""
    config = TestSignalConfig(bitrate=300_000, width=64, height=64, fps=10)
    return b"".join(generate_test_signal(config, realtime=False, duration=seconds))


@dataclass
class FakePipeline:
    stream_id: str
    on_ts: Callable[[str, bytes], None]
    on_info: Callable[[list[RenditionInfo]], None]
    on_error: Callable[[str], None]
    fed: list[bytes] = field(default_factory=list)
    closed: bool = False
    aborted: bool = False

    def feed(self, flv: bytes) -> None:
        self.fed.append(flv)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    async def wait_closed(self) -> None:
        return None

    def play(self, data: bytes) -> None:
        """What the real pipeline does once it has demuxed a little: info first, then TS."""
        self.on_info([INFO])
        self.on_ts("source", data)


class Factory:
    def __init__(self) -> None:
        self.made: list[FakePipeline] = []

    def __call__(self, stream_id: str, profiles: list[Profile], *, on_ts: Callable[[str, bytes], None],
                 on_info: Callable[[list[RenditionInfo]], None],
                 on_error: Callable[[str], None]) -> FakePipeline:  # fmt: skip
        pipeline = FakePipeline(stream_id, on_ts, on_info, on_error)
        self.made.append(pipeline)
        return pipeline


def closer(log: list[str]) -> Callable[[str], None]:
    return log.append


async def test_reconnect_within_grace_continues_the_playlist_after_a_discontinuity() -> None:
    factory = Factory()
    registry = StreamRegistry(RegistryConfig(segment_duration=1.0, reconnect_grace=30.0), pipeline_factory=factory)
    started: list[tuple[str, list[RenditionInfo]]] = []
    registry.on_stream_started.append(lambda sid, infos: started.append((sid, infos)))
    first = registry.start_publish("cam", "127.0.0.1:1", closer([]))
    factory.made[0].play(ts_seconds(4))
    first.end()
    await asyncio.sleep(0)  # the drain task flushes the open segment
    window = registry.get("cam").renditions["source"].window  # type: ignore[union-attr]
    before = window.newest_sequence
    assert before is not None and before >= 2
    assert registry.get("cam").state == "grace"  # type: ignore[union-attr]
    second = registry.start_publish("cam", "127.0.0.1:2", closer([]))
    factory.made[1].play(ts_seconds(4))
    playlist = window.render(lambda seq: f"source/{seq}.ts")
    assert "#EXT-X-DISCONTINUITY\n" in playlist
    assert "#EXT-X-ENDLIST" not in playlist
    after = window.newest_sequence
    assert after is not None and after > before + 1
    sequences = [int(line.split("/")[1][:-3]) for line in playlist.splitlines() if line.startswith("source/")]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))  # no gap, rising
    assert [sid for sid, _ in started] == ["cam"]  # once per stream, not per publisher
    assert registry.get("cam").publishes == 2  # type: ignore[union-attr]
    second.end()
    await registry.close()
    assert window.ended


async def test_second_publisher_for_a_live_id_is_refused() -> None:
    registry = StreamRegistry(RegistryConfig(), pipeline_factory=Factory())
    registry.start_publish("cam", "127.0.0.1:1", closer([]))
    with pytest.raises(PublishRefusedError, match="already being published"):
        registry.start_publish("cam", "127.0.0.1:2", closer([]))
    registry.start_publish("other", "127.0.0.1:3", closer([]))  # another id is fine
    await registry.close()


async def test_after_the_grace_the_playlists_end_and_the_hook_runs() -> None:
    factory = Factory()
    registry = StreamRegistry(RegistryConfig(segment_duration=1.0, reconnect_grace=0.05), pipeline_factory=factory)
    ended: list[str] = []
    registry.on_stream_ended.append(ended.append)
    publish = registry.start_publish("cam", "127.0.0.1:1", closer([]))
    factory.made[0].play(ts_seconds(3))
    publish.end()
    await asyncio.sleep(0.2)
    stream = registry.get("cam")
    assert stream is not None and stream.state == "ended"
    assert stream.renditions["source"].window.render(str).rstrip().endswith("#EXT-X-ENDLIST")
    assert ended == ["cam"]
    # The id may be used again: a new stream, new playlists, numbered on from the old ones (a segment URL, cached
    # for a while, never names two different segments).
    ended_at = stream.renditions["source"].window.next_sequence
    assert ended_at > 0
    registry.start_publish("cam", "127.0.0.1:2", closer([]))
    again = registry.get("cam")
    assert again is not None and again is not stream
    factory.made[1].play(ts_seconds(3))
    assert again.renditions["source"].window.render(str).count(f"#EXT-X-MEDIA-SEQUENCE:{ended_at}\n") == 1
    await registry.close()


async def test_max_streams_refuses_and_ended_streams_make_room() -> None:
    factory = Factory()
    registry = StreamRegistry(RegistryConfig(max_streams=2, reconnect_grace=0.01), pipeline_factory=factory)
    a = registry.start_publish("a", "p", closer([]))
    registry.start_publish("b", "p", closer([]))
    with pytest.raises(PublishRefusedError, match="--max-streams"):
        registry.start_publish("c", "p", closer([]))
    a.end()
    await asyncio.sleep(0.1)
    assert registry.get("a").state == "ended"  # type: ignore[union-attr]
    registry.start_publish("c", "p", closer([]))  # "a" is forgotten early
    assert registry.get("a") is None
    await registry.close()


async def test_pipeline_error_closes_the_publisher_connection() -> None:
    factory = Factory()
    registry = StreamRegistry(RegistryConfig(), pipeline_factory=factory)
    closed: list[str] = []
    registry.start_publish("cam", "p", closer(closed))
    factory.made[0].on_error("stream cam: video codec vp6f cannot be segmented")
    assert closed == ["stream cam: video codec vp6f cannot be segmented"]
    await registry.close()


async def test_live_ts_client_starts_on_the_newest_segment_and_a_slow_one_is_dropped() -> None:
    factory = Factory()
    registry = StreamRegistry(RegistryConfig(segment_duration=1.0, live_queue_bytes=100_000),
                              pipeline_factory=factory)  # fmt: skip
    registry.start_publish("cam", "p", closer([]))
    pipeline = factory.made[0]
    pipeline.play(ts_seconds(3))
    rendition = registry.get("cam").renditions["source"]  # type: ignore[union-attr]
    drops: list[bool] = []
    client = rendition.subscribe(lambda: drops.append(True))
    first = await client.get()
    assert first is not None and first[:1] == b"\x47"  # a segment: TS packets, PAT first
    for _ in range(5):
        pipeline.on_ts("source", ts_seconds(3))  # nobody reads: the queue passes its bound
    assert drops == [True] and client.closed
    await registry.close()
