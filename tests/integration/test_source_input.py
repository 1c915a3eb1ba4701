"""A source given the wrong kind of input, or none (issue 8, "what a new user hit").

The source's input URL is served by a small aiohttp server in the test, whose answer the test switches: an HTML
page, an HLS playlist, nothing (a port nobody listens on), MPEG-TS (the bytes of a real testsrc, passed through), or
MPEG-TS that stops flowing. The source must name what it got in its log from the first attempt, publish no piece
while the input is not TS, keep retrying at --source-reconnect-interval, and start publishing once TS comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from swarmcast.ingest.http_ts import read_ts_source
from swarmcast.ingest.status import InputStatus
from tests.integration.chain import HOST, signal_source, source_args, source_node, wait_until
from tests.procs import free_port, swarmcast_process
from tests.unit.test_sniff import ts_packets

PAGE = "<!DOCTYPE html>\n<html><head><title>Live</title></head><body><video src='/live.m3u8'></video></body></html>\n"
PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n"
STALL_AFTER = 256 * 1024  # bytes of TS the "stall" mode sends before it goes silent


class InputServer:
    """The source's input: answers per ``mode`` and counts the source's attempts."""

    def __init__(self, upstream: str | None = None) -> None:
        self.mode = "html"
        self.upstream = upstream
        self.requests = 0
        self.release = asyncio.Event()  # ends stalled answers at teardown
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "html":
            return web.Response(text=PAGE, content_type="text/html")
        if self.mode == "missing":
            return web.Response(status=404, text="no such stream")
        if self.mode == "m3u8":
            return web.Response(text=PLAYLIST, content_type="application/vnd.apple.mpegurl")
        if self.mode == "packets":  # a short run of synthetic TS packets, then the end of the stream
            return web.Response(body=ts_packets(200), content_type="video/mp2t")
        assert self.upstream is not None
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        await response.prepare(request)
        sent = 0
        timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.upstream) as upstream:
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                await response.write(chunk)
                sent += len(chunk)
                if self.mode == "stall" and sent >= STALL_AFTER:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.release.wait(), 60.0)
                    break
        return response


@contextlib.asynccontextmanager
async def input_server(upstream: str | None = None) -> AsyncIterator[InputServer]:
    server = InputServer(upstream)
    app = web.Application()
    app.router.add_get("/live", server.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    server.url = f"http://{HOST}:{port}/live"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


def log_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


async def wait_for_log(path: Path, text: str, timeout: float = 20.0) -> None:
    try:
        await wait_until(lambda: text in log_text(path), timeout)
    except TimeoutError:
        tail = log_text(path)[-3000:]
        raise AssertionError(f"{text!r} not in the source's log within {timeout} s:\n{tail}") from None


async def newest_piece(port: int) -> int | None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"http://{HOST}:{port}/app/stat") as r:
        result = (await r.json())["result"]
    value = result["newest_piece"]
    assert value is None or isinstance(value, int)
    return value


async def wait_async(predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[misc]
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("condition not met in time")


async def test_hls_playlist_input_is_read_as_hls_and_missing_segments_publish_nothing(tmp_path: Path) -> None:
    # A URL that answers with a playlist is switched to the HLS reader (issue 9; it used to be refused as not-TS).
    # Its segments do not exist here: the node says so, keeps polling, and no piece is published.
    log = tmp_path / "source.log"
    with signal_source(tmp_path) as upstream:
        async with input_server(upstream) as server:
            server.mode = "m3u8"
            with source_node(tmp_path, server.url, "--bitrate", "125000") as source:
                await wait_for_log(log, "the input answers with an HLS playlist: reading it as HLS")
                await wait_for_log(log, "HLS segment")
                attempts = server.requests
                await wait_until(lambda: server.requests >= attempts + 2, 10.0)  # the playlist is polled on
                assert await newest_piece(source.port) is None, "a piece was published from missing segments"
                assert "Traceback" not in log_text(log)


async def _has_piece(port: int) -> bool:
    return await newest_piece(port) is not None


async def test_html_page_input_with_bitrate_detection_leaves_nothing_until_ts_comes(tmp_path: Path) -> None:
    # Without --bitrate the descriptor is measured from the input: an HTML page measures nothing, so no transport
    # file and no key are written, and the node does not listen, until 2 s of real TS came.
    log = tmp_path / "source.log"
    port = free_port()
    with signal_source(tmp_path) as upstream:
        async with input_server(upstream) as server:
            args = source_args(tmp_path, server.url, port)
            with swarmcast_process(args, stderr_path=log) as process:
                await wait_for_log(log, "input is not MPEG-TS: looks like an HTML page")
                attempts = server.requests
                await wait_until(lambda: server.requests >= attempts + 3, 10.0)
                assert list(tmp_path.glob("publish/*.acelive")) == [], "a transport file was published"
                assert list(tmp_path.glob("meta/*.sauth")) == [], "a key was written"
                assert process.popen.poll() is None, "the source gave up on its input"
                server.mode = "ts"
                # In a thread: the input server runs on this event loop (wait_for_port sleeps).
                await asyncio.to_thread(process.wait_for_port, HOST, port, 30.0)
                assert list(tmp_path.glob("publish/*.acelive")), "no transport file once TS came"
                await wait_async(lambda: _has_piece(port), 20.0)


async def test_unreachable_input_is_logged_from_the_first_attempt(tmp_path: Path) -> None:
    log = tmp_path / "source.log"
    dead = free_port()  # nothing listens there
    with source_node(tmp_path, f"http://{HOST}:{dead}/stream.ts", "--bitrate", "125000") as source:
        await wait_for_log(log, f"source input failed: connection refused by {HOST}:{dead}", timeout=10.0)
        assert "retrying every 0.5 s" in log_text(log)
        assert await newest_piece(source.port) is None
        assert source.process.popen.poll() is None


async def test_unknown_host_is_logged_as_dns_failure(tmp_path: Path) -> None:
    log = tmp_path / "source.log"
    with source_node(tmp_path, "http://no-such-input.invalid/stream.ts", "--bitrate", "125000"):
        await wait_for_log(log, "source input failed: cannot resolve host 'no-such-input.invalid'", timeout=20.0)


async def test_http_error_status_is_logged(tmp_path: Path) -> None:
    log = tmp_path / "source.log"
    async with input_server() as server:
        with source_node(tmp_path, server.url.replace("/live", "/missing"), "--bitrate", "125000"):
            await wait_for_log(log, "source input failed: HTTP 404 Not Found", timeout=10.0)


async def test_read_timeout_reconnects_a_stalled_input(tmp_path: Path) -> None:
    log = tmp_path / "source.log"
    with signal_source(tmp_path) as upstream:
        async with input_server(upstream) as server:
            server.mode = "stall"
            with source_node(tmp_path, server.url, "--bitrate", "125000", "--source-read-timeout", "1") as source:
                await wait_for_log(log, "no data for 1 s (--source-read-timeout): input lost")
                await wait_until(lambda: server.requests >= 2, 10.0)  # it reconnected
                assert await newest_piece(source.port) is not None  # the TS before the stall was published


async def test_input_status_follows_the_ingest_loop(caplog: pytest.LogCaptureFixture) -> None:
    # In-process: read_ts_source against the test server, watching the InputStatus the monitor shows.
    caplog.set_level(logging.INFO, "swarmcast.ingest")
    async with input_server() as server:
        status = InputStatus(server.url)
        chunks = read_ts_source(server.url, reconnect_interval=0.2, read_timeout=2.0, status=status)
        reader = asyncio.create_task(_drain(chunks))
        try:
            await wait_until(lambda: status.attempts >= 3, 10.0)
            assert not status.connected and status.bytes_received == 0
            assert status.last_error is not None and "looks like an HTML page" in status.last_error
            assert status.last_error_at is not None and abs(status.last_error_at - time.time()) < 60
            # A new kind of failure is logged at once (not at the next 30 s summary); a repeated one is not.
            assert sum("looks like an HTML page" in r.getMessage() for r in caplog.records) == 1
            server.mode = "missing"
            await wait_until(lambda: any("HTTP 404" in r.getMessage() for r in caplog.records), 5.0)
            assert "still down after" in next(r.getMessage() for r in caplog.records if "HTTP 404" in r.getMessage())
            server.mode = "packets"  # each answer is 200 packets, then the stream ends: connect, end, reconnect
            await wait_until(lambda: status.reconnects >= 2, 10.0)
            assert status.bytes_received >= 3 * 200 * 188
            assert status.last_error is not None and status.last_error.startswith("the input ended after 37600 bytes")
            assert status.attempts <= 1  # reset by each connection
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await chunks.aclose()  # type: ignore[attr-defined]
    json = status.as_json()
    assert set(json) == {"url", "connected", "reconnects", "attempts", "last_error", "last_error_at", "bytes_received"}


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    async for _ in chunks:
        pass
