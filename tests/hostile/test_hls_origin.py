"""Hostile HLS origins: a source node reading an m3u8 that is huge, endless, loops backwards, or whose segments are
garbage or oversized keeps running, publishes nothing of it, says why, and resets after the bad-manifest limit;
and in a public ("hybrid") broadcast an engine that gets a tampered segment from the origin rejects it and stores
(so shares) nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from bench.hls_origin import hls_origin

from tests.integration.chain import HOST, source_node, wait_until
from tests.integration.test_hls_ingest import _need_nginx, create_transport, engine_at, engine_stat, hls_support, play
from tests.procs import free_port
from tests.unit.test_sniff import ts_packets

__all__ = ["_need_nginx"]  # the fixture skips without nginx; only the tampering test uses it


class HostileOrigin:
    def __init__(self) -> None:
        self.mode = "good"
        self.sequence = 0
        self.requests: dict[str, int] = {}
        self.release = asyncio.Event()

    def _playlist(self, first: int, count: int = 3) -> str:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for seq in range(first, first + count):
            lines += ["#EXTINF:1.0,", f"seg-{seq}.ts"]
        return "\n".join(lines) + "\n"

    async def playlist(self, request: web.Request) -> web.StreamResponse:
        self.requests["playlist"] = self.requests.get("playlist", 0) + 1
        if self.mode == "huge":
            return web.Response(text="#EXTM3U\n" + "#EXT-X-FOO:" + "x" * 100 + "\n" * 30_000)
        if self.mode == "infinite":
            response = web.StreamResponse()
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                await response.write(b"#EXTM3U\n")
                for _ in range(10_000):  # bounded: ~40 MB at most, the reader gives up after 1 MiB
                    await response.write(b"#EXTINF:1.0,\nseg-0.ts\n" * 200)
                    await asyncio.sleep(0)
            return response
        if self.mode == "restart":
            # An origin that restarted: 100, 101, ... then 0, 1, ... (nginx restarted without hls_continuous).
            self.sequence += 1
            first = 99 + self.sequence if self.sequence < 4 else self.sequence - 4
            return web.Response(text=self._playlist(first))
        if self.mode == "backwards":
            self.sequence += 1
            # 100, then 10 for ever: backwards, and again; after the limit the reader resets onto 10's live end.
            return web.Response(text=self._playlist(100 if self.sequence == 1 else 10))
        self.sequence += 1
        return web.Response(text=self._playlist(self.sequence))

    async def segment(self, request: web.Request) -> web.StreamResponse:
        self.requests["segment"] = self.requests.get("segment", 0) + 1
        if self.mode == "garbage":
            return web.Response(body=b"<html>not a segment</html>" * 100)
        if self.mode == "oversized":
            response = web.StreamResponse()
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                for _ in range(400):  # 400 x 64 KiB = 25 MiB, past the 16 MiB cap
                    await response.write(ts_packets(348))
            return response
        return web.Response(body=ts_packets(100), content_type="video/mp2t")


@contextlib.asynccontextmanager
async def hostile_origin() -> AsyncIterator[tuple[HostileOrigin, str]]:
    origin = HostileOrigin()
    app = web.Application()
    app.router.add_get("/live.m3u8", origin.playlist)
    app.router.add_get("/{name}.ts", origin.segment)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    try:
        yield origin, f"http://{HOST}:{port}/live.m3u8"
    finally:
        await runner.cleanup()


def newest_piece(port: int) -> object:
    with urllib.request.urlopen(f"http://{HOST}:{port}/app/stat", timeout=5) as response:
        return json.loads(response.read())["result"]["newest_piece"]


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("huge", "bad HLS manifest"),
        ("infinite", "playlist of more than"),
        ("backwards", "HLS stream reset after 2 bad manifests"),
        ("garbage", "HLS segment"),
        ("oversized", "segment of more than"),
        ("restart", "HLS origin restarted its media sequence"),
    ],
)
async def test_hostile_origin_is_survived_and_named(tmp_path: Path, mode: str, expected: str) -> None:
    log = tmp_path / "source.log"
    monotonic = ["--hls-force-monotonic-sequence", "1"] if mode == "restart" else []
    async with hostile_origin() as (origin, url):
        origin.mode = mode
        with source_node(tmp_path, url, "--bitrate", "75000", "--hls-bad-manifest-max-errors", "2",
                         "--hls-bad-manifest-retry-interval", "0.5", *monotonic) as source:  # fmt: skip
            await wait_until(lambda: expected in log_text(log), 25.0)
            if mode in ("huge", "infinite", "garbage", "oversized"):
                assert await asyncio.to_thread(newest_piece, source.port) is None, "a piece came of hostile input"
            assert source.process.popen.poll() is None, "the source node died"
    text = log_text(log)
    assert "Traceback" not in text, text[-3000:]
    if mode == "restart":
        assert "bad HLS manifest" not in text  # a restart followed at once, not counted as bad


@pytest.mark.usefixtures("_need_nginx")
async def test_tampered_origin_segment_is_rejected_and_not_shared(tmp_path: Path) -> None:
    """A proxy in front of nginx flips a byte in every segment it gives the engine (127.0.0.2); the support node
    (127.0.0.1) gets them intact. The engine must store nothing from the origin."""
    with hls_origin(tmp_path) as nginx:
        upstream_base = nginx.playlist_url.rsplit("/", 1)[0]
        tampered = 0

        async def proxy(request: web.Request) -> web.Response:
            nonlocal tampered
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                f"{upstream_base}/{request.match_info['name']}"
            ) as upstream:
                body = await upstream.read()
                if request.remote == "127.0.0.2" and request.match_info["name"].endswith(".ts") and body:
                    tampered += 1
                    body = body[: len(body) // 2] + bytes([body[len(body) // 2] ^ 0xFF]) + body[len(body) // 2 + 1 :]
                return web.Response(body=body, status=upstream.status,
                                    content_type=upstream.content_type)  # fmt: skip

        app = web.Application()
        app.router.add_get("/hls/{name}", proxy)
        runner = web.AppRunner(app)
        await runner.setup()
        proxy_port = free_port()
        await web.TCPSite(runner, HOST, proxy_port).start()
        try:
            port = free_port()
            origin = type(nginx)(f"http://{HOST}:{proxy_port}/hls/stream.m3u8", nginx.access_log, nginx.hls_dir)
            public, private = create_transport(tmp_path, origin, port)
            with (
                hls_support(tmp_path, private, public, port, "--upload-limit", "30"),
                engine_at(tmp_path, "127.0.0.2", "engine") as api,
            ):
                await play(api, str(public), 6)
                stat = engine_stat(api)
        finally:
            await runner.cleanup()
    assert tampered > 0, "the engine never asked the origin: the test did not test anything"
    assert isinstance(stat["origin_rejected"], int) and stat["origin_rejected"] > 0, stat
    assert stat["downloaded_from_origin"] == 0, stat  # nothing tampered was stored, so nothing was shared
    assert stat["bad_pieces"] == 0, stat
    assert "does not match its signed index" in log_text(tmp_path / "engine.log")
