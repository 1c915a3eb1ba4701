"""The engine's HLS output (``/ace/manifest.m3u8``) against a real chain: testsrc -> source node -> engine.

FFmpeg's HLS demuxer (through PyAV, as ffplay would read it) decodes the playlist live; several players polling at
once share one output (one reader of the swarm, the same playlist and the same segment bytes for all); segments
outside the window are 404s; ``format=json`` answers the playlist as ``playback_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import av
import pytest

from tests.integration.chain import HOST, engine, signal_source, source_node
from tests.procs import SwarmcastProcess, free_port, swarmcast_process

WINDOW = 6


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(engine API base URL, the manifest URL of the broadcast) for the tests of this module."""
    tmp = tmp_path_factory.mktemp("hls")
    with signal_source(tmp) as signal_url, source_node(tmp, signal_url) as source, engine(tmp) as api:
        yield api, f"{api}/ace/manifest.m3u8?{urlencode({'url': source.transport_url})}"


def segments_of(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


def media_sequence(playlist: str) -> int:
    return int(next(line for line in playlist.splitlines() if line.startswith("#EXT-X-MEDIA-SEQUENCE:")).split(":")[1])


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
        return response.status, await response.read(), dict(response.headers)


async def live_playlist(http: aiohttp.ClientSession, url: str, segments: int = 3) -> str:
    """The playlist once it lists ``segments`` segments (a cold start may first answer a 503: retried)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        status, body, _ = await fetch(http, url)
        if status == 200 and len(segments_of(body.decode())) >= segments:
            return body.decode()
        assert status in (200, 503), (status, body[:300])
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url} listed fewer than {segments} segments within 40 s")


def decode_hls(url: str, seconds: float) -> tuple[int, float, float]:
    """(video frames, first and last frame time) FFmpeg's HLS demuxer decodes from ``url`` in ``seconds`` of wall
    time (bounded: stops after 3x that)."""
    frames, first, last = 0, None, 0.0
    started = time.monotonic()
    with av.open(url, timeout=20) as container:
        for frame in container.decode(video=0):
            frames += 1
            first = frame.time if first is None else first
            last = frame.time
            if last - first >= seconds or time.monotonic() - started > 3 * seconds:
                break
    return frames, first or 0.0, last


async def test_ffmpeg_hls_demuxer_plays_the_manifest_live(chain: tuple[str, str]) -> None:
    _api, url = chain
    async with aiohttp.ClientSession() as http:
        playlist = await live_playlist(http, url)
    assert "#EXT-X-TARGETDURATION:1\n" in playlist  # testsrc: a keyframe a second, so 1 s segments
    assert len(segments_of(playlist)) <= WINDOW
    started = time.monotonic()
    frames, first, last = await asyncio.to_thread(decode_hls, url, 6.0)
    elapsed = time.monotonic() - started
    print(f"PyAV (FFmpeg's HLS demuxer) on {url}: {frames} video frames, media time {first:.2f}..{last:.2f} s, "
          f"in {elapsed:.1f} s of wall time")
    # 25 fps: six seconds of media decoded, and it came in live (a playlist read once would end after 6 segments).
    assert last - first >= 6.0, (frames, first, last)
    assert frames >= 6 * 25 * 0.9, frames
    assert elapsed >= 2.0, elapsed


async def test_many_players_share_one_output(chain: tuple[str, str]) -> None:
    api, url = chain
    async with aiohttp.ClientSession() as http:
        await live_playlist(http, url)
        players = 6
        bodies = await asyncio.gather(*(fetch(http, url) for _ in range(players)))
        assert all(status == 200 for status, _, _ in bodies)
        playlists = [body.decode() for _, body, _ in bodies]
        _, _, headers = bodies[0]
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert headers["Access-Control-Allow-Origin"] == "*"
        # Fetched at once: the same window for everybody (a segment cut in between shifts it by one at most).
        assert max(map(media_sequence, playlists)) - min(map(media_sequence, playlists)) <= 1
        common = set.intersection(*(set(segments_of(p)) for p in playlists))
        assert len(common) >= 3, playlists
        # One segment, two players: the same bytes; it begins with PAT (packet on PID 0).
        uri = sorted(common)[0]
        (s1, d1, h1), (s2, d2, _) = await asyncio.gather(fetch(http, urljoin(url, uri)), fetch(http, urljoin(url, uri)))
        assert s1 == s2 == 200 and d1 == d2 and len(d1) > 0 and len(d1) % 188 == 0
        assert h1["Content-Type"] == "video/mp2t"
        assert d1[0] == 0x47 and d1[1] & 0x1F == 0 and d1[2] == 0
        # Only one reader of the swarm for all of them: the engine counts one player for the broadcast.
        status, body, _ = await fetch(http, f"{api}/app/stat")
        broadcasts: list[dict[str, Any]] = json.loads(body)["result"]
        assert [b["players"] for b in broadcasts] == [1], broadcasts
        # The window moves on: an old segment leaves it and is a 404 (so is one not cut yet).
        newest = media_sequence(playlists[0]) + len(segments_of(playlists[0])) - 1
        infohash = broadcasts[0]["content_id"]
        assert uri == f"hls/{infohash}/{uri.split('/')[2]}"
        status, _, _ = await fetch(http, f"{api}/ace/hls/{infohash}/{newest + 1000}.ts")
        assert status == 404
        first = media_sequence(playlists[0])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body, _ = await fetch(http, url)
            if media_sequence(body.decode()) > first:
                break
            await asyncio.sleep(0.5)
        assert media_sequence(body.decode()) > first, "the media sequence did not advance"
        status, _, _ = await fetch(http, f"{api}/ace/hls/{infohash}/{first}.ts")
        assert status == 404


async def test_json_answers_the_playlist_as_playback_url(chain: tuple[str, str]) -> None:
    api, url = chain
    async with aiohttp.ClientSession() as http:
        status, body, _ = await fetch(http, url + "&format=json")
        assert status == 200, body
        response = json.loads(body)["response"]
        assert response["playback_url"].startswith(f"{api}/ace/manifest.m3u8?url=")
        assert "format" not in parse_qs(urlsplit(response["playback_url"]).query)  # the playlist, not JSON again
        assert {"stat_url", "command_url", "infohash", "playback_session_id"} <= set(response)
        playlist = await live_playlist(http, response["playback_url"])
        assert segments_of(playlist)
        status, body, _ = await fetch(http, response["stat_url"])
        assert status == 200 and json.loads(body)["response"]["is_live"] == 1



def start_testsrc(tmp: Path, port: int, log_name: str) -> contextlib.AbstractContextManager[SwarmcastProcess]:
    args = ["testsrc", "--port", str(port), "--bitrate", "1M", "--size", "320x180", "--fps", "25"]
    return swarmcast_process(args, stderr_path=tmp / log_name, wait_port=(HOST, port))


async def test_a_restarted_input_is_a_discontinuity_not_a_stretched_playlist(tmp_path: Path) -> None:
    """The source's input restarts (its timestamps start again): the source flags the first piece after it
    DISCONTINUITY and the playlist shows #EXT-X-DISCONTINUITY; the target duration stays 1 s."""
    port = free_port()
    signal_url = f"http://{HOST}:{port}/stream.ts"
    with start_testsrc(tmp_path, port, "testsrc.log") as testsrc, source_node(tmp_path, signal_url) as source, \
            engine(tmp_path) as api:  # fmt: skip
        url = f"{api}/ace/manifest.m3u8?{urlencode({'url': source.transport_url})}"
        async with aiohttp.ClientSession() as http:
            await live_playlist(http, url)
            testsrc.stop()
            with start_testsrc(tmp_path, port, "testsrc2.log"):  # within the source's reconnect interval
                deadline = time.monotonic() + 40
                playlist = ""
                while "#EXT-X-DISCONTINUITY\n" not in playlist:
                    assert time.monotonic() < deadline, f"no discontinuity after the input restarted:\n{playlist}"
                    await asyncio.sleep(0.5)
                    status, body, _ = await fetch(http, url)
                    playlist = body.decode() if status == 200 else ""
                assert "#EXT-X-TARGETDURATION:1\n" in playlist, playlist
