"""HLS ingest from a real origin (nginx-rtmp's HLS, fed by testsrc over RTMP), played by engines through
/ace/getstream and decoded with PyAV: ``node source --source URL.m3u8``, the HLS support node of a public ("hybrid")
broadcast with engines falling back to the origin, and a private one whose engines never contact the origin.

Engines bind their own loopback addresses (127.0.0.2, 127.0.0.3), the support node 127.0.0.1: the origin's access
log then tells who asked it for what. Needs nginx and libnginx-mod-rtmp (bench/setup.sh): skipped without them
except under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.hls_origin import HlsOrigin, hls_origin, nginx_available

from swarmcast.media.ts import TS_PACKET_SIZE
from tests.integration.chain import decode_video, read_stream, source_node, support_node, wait_until
from tests.procs import free_port, swarmcast_process

HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def _need_nginx() -> None:
    problem = nginx_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI=true: the HLS origin must run)")
        pytest.skip(problem)


@contextlib.contextmanager
def engine_at(tmp: Path, ip: str, name: str) -> Iterator[str]:
    """An engine whose P2P port and origin requests use ``ip``; its API on 127.0.0.1."""
    http_port, p2p_port = free_port(), free_port(ip)
    args = ["engine", "--http-port", str(http_port), "--port", str(p2p_port), "--bind", ip,
            "--pid-file-dir", str(tmp), "--startup-timeout", "30", "--allow-local-transport-files"]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / f"{name}.log", wait_port=(HOST, http_port)):
        yield f"http://{HOST}:{http_port}"


def create_transport(tmp: Path, origin: HlsOrigin, support_port: int, *extra: str) -> tuple[Path, Path]:
    """The files, with the support node's own tracker in them: engines given the public file find it there."""
    public, private = tmp / "x.acelive", tmp / "y.acelive"
    subprocess.run([sys.executable, "-m", "swarmcast.cli", "hls", "create-transport", "--url", origin.playlist_url,
                    "--title", "HLS test", "--name", "hls", "--output-public", str(public), "--output-private",
                    str(private), "--bitrate", "75000", "--tracker", f"http://{HOST}:{support_port}/announce",
                    *extra], check=True, capture_output=True)  # fmt: skip
    return public, private


def hls_support(tmp: Path, private: Path, public: Path, port: int,
                *extra: str) -> contextlib.AbstractContextManager[int]:  # fmt: skip
    return support_node(tmp, str(private), "--public-transport-file", str(public), "--state-dir", str(tmp / "state"),
                        "--hls-broadcast-last-source-piece", "--hls-bad-manifest-max-errors", "5",
                        "--hls-bad-manifest-retry-interval", "2", *extra, port=port)  # fmt: skip


def engine_stat(api: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{api}/app/stat", timeout=5) as response:
        result = json.loads(response.read())["result"]
    assert isinstance(result, list) and result, result
    entry = result[0]
    assert isinstance(entry, dict)
    return entry


def assert_plays(data: bytes, frames: int = 25) -> None:
    assert len(data) > 50_000, len(data)
    whole = len(data) - len(data) % TS_PACKET_SIZE  # the reader stops anywhere in a chunk
    assert all(data[i] == 0x47 for i in range(0, whole, TS_PACKET_SIZE)), (
        "the stream is not whole TS packets (a METADATA piece reached the player?)")
    assert len(decode_video(data)) >= frames


async def play(api: str, transport: str, seconds: float) -> bytes:
    return await read_stream(f"{api}/ace/getstream?url={transport}", seconds)


async def test_source_node_reads_an_m3u8_and_engines_play_it(tmp_path: Path) -> None:
    with (
        hls_origin(tmp_path) as origin,
        source_node(tmp_path, origin.playlist_url, "--bitrate", "75000") as source,
        engine_at(tmp_path, HOST, "engine") as api,
    ):
        data = await play(api, source.transport_url, 5)
    assert_plays(data)
    assert "HLS input connected" in (tmp_path / "source.log").read_text()


async def test_public_hybrid_broadcast_plays_and_a_slow_swarm_falls_back_to_the_origin(tmp_path: Path) -> None:
    with hls_origin(tmp_path) as origin:
        port = free_port()
        public, private = create_transport(tmp_path, origin, port)
        # 30 KB/s of upload for a 75 KB/s stream: the swarm cannot deliver in time, the engine asks the origin.
        with (
            hls_support(tmp_path, private, public, port, "--upload-limit", "30"),
            engine_at(tmp_path, "127.0.0.2", "engine") as api,
        ):
            data = await play(api, str(public), 6)
            stat = engine_stat(api)
            monitor = json.loads(await asyncio.to_thread(_get, f"http://{HOST}:{port}/app/monitor"))
        clients = origin.requests_by_client()
    assert_plays(data)
    # The signer shows as a support node (no source_url: streaming-utils' TS-source marker) with the origin's state.
    assert monitor["type"] == "support" and "source_url" not in monitor, monitor
    assert monitor["hls_status"]["connected"] and monitor["hls_status"]["url"] == origin.playlist_url, monitor
    assert isinstance(stat["downloaded_from_origin"], int) and stat["downloaded_from_origin"] > 0, stat
    assert stat["origin_rejected"] == 0, stat
    assert clients["127.0.0.2"] > 0, clients  # the engine's segment requests
    assert "HLS origin" in (tmp_path / "engine.log").read_text()


async def test_private_broadcast_engines_never_contact_the_origin(tmp_path: Path) -> None:
    with hls_origin(tmp_path) as origin:
        port = free_port()
        public, private = create_transport(tmp_path, origin, port, "--hide-hls-manifest")
        assert origin.playlist_url.encode() not in public.read_bytes()
        with (
            hls_support(tmp_path, private, public, port, "--hide-hls-segments"),
            engine_at(tmp_path, "127.0.0.2", "engine2") as api2,
            engine_at(tmp_path, "127.0.0.3", "engine3") as api3,
        ):
            first, second = await asyncio.gather(play(api2, str(public), 6), play(api3, str(public), 6))
        clients = origin.requests_by_client()
    assert_plays(first)
    assert_plays(second)
    assert set(clients) == {HOST}, clients  # the support node only; nothing from 127.0.0.2 or 127.0.0.3
    (tmp_path / "origin-clients.json").write_text(json.dumps(clients))


@pytest.mark.skipif(importlib.util.find_spec("swarmcast.commands.broadcaster") is None,
                    reason="swarmcast broadcaster (issue 9 part A) not in this tree")  # fmt: skip
async def test_hybrid_broadcast_from_swarmcast_broadcaster_master_playlist(tmp_path: Path) -> None:
    """Our own origin: testsrc --rtmp -> swarmcast broadcaster; the support node follows its master playlist."""
    rtmp_port, http_port, port = free_port(), free_port(), free_port()
    broadcaster = ["broadcaster", "--rtmp-addr", f"{HOST}:{rtmp_port}", "--http-addr", f"{HOST}:{http_port}",
                   "--segment-duration", "1"]  # fmt: skip
    publisher = ["testsrc", "--rtmp", f"rtmp://{HOST}:{rtmp_port}/hello_world", "--bitrate", "600k",
                 "--size", "320x180", "--fps", "25"]  # fmt: skip
    master = f"http://{HOST}:{http_port}/stream/hello_world.m3u8"
    with (
        swarmcast_process(broadcaster, stderr_path=tmp_path / "broadcaster.log", wait_port=(HOST, http_port)),
        swarmcast_process(publisher, stderr_path=tmp_path / "publisher.log"),
    ):
        await wait_until(lambda: b"#EXTINF" in _get(master.replace(".m3u8", "/source.m3u8")), 30.0)
        origin = HlsOrigin(master, tmp_path / "no-log", tmp_path)
        public, private = create_transport(tmp_path, origin, port)
        with (
            hls_support(tmp_path, private, public, port, "--upload-limit", "30"),
            engine_at(tmp_path, "127.0.0.2", "engine") as api,
        ):
            data = await play(api, str(public), 6)
            stat = engine_stat(api)
    assert_plays(data)
    assert stat["origin_rejected"] == 0, stat
    assert "master playlist: variant 'source'" in (tmp_path / "support.log").read_text()


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return b""


async def test_private_hls_broadcast_plays_through_ace_manifest(tmp_path: Path) -> None:
    """/ace/manifest.m3u8 (part D) on an HLS broadcast: the engine's own segments, cut from the verified pieces
    (segment indexes left out), decoded by FFmpeg's HLS demuxer; the origin still sees only the support node."""
    from tests.integration.test_hls_out import decode_hls

    with hls_origin(tmp_path) as origin:
        port = free_port()
        public, private = create_transport(tmp_path, origin, port, "--hide-hls-manifest")
        with (
            hls_support(tmp_path, private, public, port, "--hide-hls-segments"),
            engine_at(tmp_path, "127.0.0.2", "engine") as api,
        ):
            url = f"{api}/ace/manifest.m3u8?url={public}"
            frames, first, last = await asyncio.to_thread(decode_hls, url, 4.0)
        clients = origin.requests_by_client()
    assert last - first >= 4.0 and frames >= 4 * 25 * 0.8, (frames, first, last)
    assert set(clients) == {HOST}, clients
