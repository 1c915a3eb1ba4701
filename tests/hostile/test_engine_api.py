"""Hostile local clients of the engine's playback API, against real engine processes on loopback.

A test signal and a source node serve the whole module; each test starts its own engine, attacks its HTTP API
as a local client (or a web page in a browser) could, and checks that honest players are unaffected and that
every answer is a clear 4xx/503, never a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from swarmcast.http.cors import GENERIC_ERROR
from swarmcast.http.engine_api import KEEPALIVE_TIMEOUT, LISTEN_BACKLOG, MAX_HTTP_CONNECTIONS
from swarmcast.node.engine_limits import MAX_LOOKUPS, MAX_SESSIONS, MAX_STREAMS_PER_CLIENT
from swarmcast.wire.messages import MAX_METADATA_SIZE
from tests.integration.chain import (
    HOST,
    Source,
    decode_video,
    engine,
    match_pieces,
    read_stream,
    signal_source,
    source_node,
    source_pieces,
)
from tests.procs import free_port


@dataclass
class Chain:
    source: Source
    tmp: Path

    @property
    def transport_url(self) -> str:
        return quote(self.source.transport_url, safe="")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("engine-api")
    with signal_source(tmp) as signal_url, source_node(tmp, signal_url) as source:
        yield Chain(source, tmp)


async def get(http: aiohttp.ClientSession, url: str, method: str = "GET") -> tuple[int, Any, Any]:
    """Status, JSON body (None if not JSON) and headers."""
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=60)) as response:
        text = await response.text()
        try:
            body = await response.json(content_type=None) if text else None
        except ValueError:
            body = None
        return response.status, body, response.headers


async def poll(predicate: Any, timeout: float, what: str) -> None:
    """Wait (bounded) until the async ``predicate()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


async def engine_broadcasts(http: aiohttp.ClientSession, api: str) -> list[dict[str, Any]]:
    _, body, _ = await get(http, f"{api}/app/stat")
    result: list[dict[str, Any]] = body["result"]
    return result


@dataclass
class Player:
    """An honest player reading a stream in the background (bounded in bytes)."""

    url: str
    data: bytearray = field(default_factory=bytearray)
    status: int | None = None

    async def run(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(self.url) as response:
            self.status = response.status
            async for chunk in response.content.iter_chunked(64 * 1024):
                self.data += chunk
                if len(self.data) >= max_bytes:
                    return


@contextlib.asynccontextmanager
async def playing(url: str) -> AsyncIterator[tuple[Player, asyncio.Task[None]]]:
    player = Player(url)
    task = asyncio.create_task(player.run())
    try:
        yield player, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def keeps_playing(player: Player, task: asyncio.Task[None], more: int = 200_000) -> None:
    before = len(player.data)

    async def grew() -> bool:
        if task.done():
            raise AssertionError(f"the honest player's stream ended: {task.exception() or 'closed by the engine'}")
        return len(player.data) >= before + more

    await poll(grew, 30, "the honest player receives more data")


def engine_log_clean(tmp: Path, name: str) -> None:
    text = (tmp / f"{name}.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "Error handling request" not in text, text[-3000:]


async def test_json_session_flood_is_refused_and_never_ends_a_playing_stream(chain: Chain, tmp_path: Path) -> None:
    with engine(tmp_path) as api:
        async with aiohttp.ClientSession() as http:
            status, body, _ = await get(http, f"{api}/ace/getstream?url={chain.transport_url}&format=json")
            assert status == 200, body
            info = body["response"]
            async with playing(info["playback_url"]) as (player, task):
                await keeps_playing(player, task, 1)
                # The attack: 260 sessions for the broadcast the honest player reads.
                content_id = info["infohash"]
                answers = []
                for _ in range(26):
                    batch = [get(http, f"{api}/ace/getstream?id={content_id}&format=json") for _ in range(10)]
                    answers += await asyncio.gather(*batch)
                # The honest player still gets the stream, and its session is still there.
                await keeps_playing(player, task)
                status, body, _ = await get(http, info["stat_url"])
                assert status == 200, body
                assert body["response"]["status"] == "dl"
                # The newcomers beyond the limit were refused, with the limit named.
                accepted = [b for s, b, _ in answers if s == 200]
                refused = [(b, h) for s, b, h in answers if s == 503]
                assert len(accepted) == MAX_SESSIONS - 1, [s for s, _, _ in answers]
                assert len(refused) == 260 - len(accepted)
                for refusal, headers in refused:
                    assert refusal["response"] is None
                    assert f"{MAX_SESSIONS} playback sessions" in refusal["error"]
                    assert headers["Retry-After"].isdigit()
                # Room comes back when a session is stopped.
                status, _, _ = await get(http, accepted[0]["response"]["command_url"] + "?method=stop")
                assert status == 200
                status, body, _ = await get(http, f"{api}/ace/getstream?id={content_id}&format=json")
                assert status == 200, body
                await keeps_playing(player, task)
            stream = bytes(player.data)
        assert len(decode_video(stream)) >= 60
        match_pieces(stream, await source_pieces(chain.source))
    engine_log_clean(tmp_path, "engine")


async def test_streams_per_client_are_capped_without_hurting_other_clients(chain: Chain, tmp_path: Path) -> None:
    with engine(tmp_path) as api:
        url = f"{api}/ace/getstream?url={chain.transport_url}"
        async with playing(url) as (player, task):
            await keeps_playing(player, task, 1)
            # Another local address opens the per-client limit of streams and one more.
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)
            async with aiohttp.ClientSession(connector=connector) as greedy:
                responses = []
                try:
                    for _ in range(MAX_STREAMS_PER_CLIENT):
                        response = await greedy.get(url, timeout=aiohttp.ClientTimeout(total=60))
                        responses.append(response)
                        assert response.status == 200
                    async with greedy.get(url, timeout=aiohttp.ClientTimeout(total=60)) as one_more:
                        assert one_more.status == 503, "the engine served one stream more than the per-client limit"
                        assert "per-client" in (await one_more.json())["error"]
                        assert "Retry-After" in one_more.headers
                    await keeps_playing(player, task)
                finally:
                    for response in responses:
                        response.close()
            # Their streams ended: the address may play again.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as again:
                await poll(lambda: _plays(again, url), 20, "127.0.0.2 may play again")
            await keeps_playing(player, task)
    engine_log_clean(tmp_path, "engine")


async def test_idle_connection_flood_is_capped_and_timed_out(chain: Chain, tmp_path: Path) -> None:
    with engine(tmp_path) as api:
        port = int(api.rsplit(":", 1)[1])
        async with playing(f"{api}/ace/getstream?url={chain.transport_url}") as (player, task):
            await keeps_playing(player, task, 1)
            # The attack: more silent connections than the cap, from another local address.
            flood = MAX_HTTP_CONNECTIONS + LISTEN_BACKLOG + 50
            idle = [await asyncio.open_connection(HOST, port, local_addr=("127.0.0.3", 0)) for _ in range(flood)]
            try:

                async def closed_by_engine(reader: asyncio.StreamReader, wait: float) -> bool:
                    try:
                        return await asyncio.wait_for(reader.read(1), wait) == b""
                    except TimeoutError:
                        return False
                    except ConnectionError:
                        return True

                # Past the cap a connection is closed at once; the honest player's stream goes on.
                at_once = await asyncio.gather(*(closed_by_engine(r, 5.0) for r, _ in idle))
                # (The cap holds to within one accept burst: asyncio accepts up to the backlog before counting.)
                assert sum(at_once) >= flood - MAX_HTTP_CONNECTIONS - LISTEN_BACKLOG, sum(at_once)
                assert not all(at_once)
                await keeps_playing(player, task)
                # The accepted ones send nothing either: they are closed after the keep-alive timeout.
                later = await asyncio.gather(*(closed_by_engine(r, KEEPALIVE_TIMEOUT + 20) for r, _ in idle))
                assert all(later)
            finally:
                for _, writer in idle:
                    writer.close()
            async with aiohttp.ClientSession() as http:
                status, _, _ = await get(http, f"{api}/webui/api/service?method=get_version")
                assert status == 200
            await keeps_playing(player, task)
    assert "connections open (the limit)" in (tmp_path / "engine.log").read_text()
    engine_log_clean(tmp_path, "engine")


async def _plays(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
        return response.status == 200


async def test_unknown_content_ids_hold_no_broadcast_slot(chain: Chain, tmp_path: Path) -> None:
    dead_tracker = f"http://{HOST}:{free_port()}/announce"
    with engine(tmp_path, "--tracker", dead_tracker) as api:
        async with aiohttp.ClientSession() as http:
            # The attack: 16 players (MAX_BROADCASTS) ask for content ids nobody has, and wait.
            attacks = [asyncio.create_task(get(http, f"{api}/ace/getstream?id={os.urandom(20).hex()}"))
                       for _ in range(16)]  # fmt: skip

            async def settled() -> bool:
                return sum(t.done() for t in attacks) + len(await engine_broadcasts(http, api)) >= len(attacks)

            try:
                await poll(settled, 20, "every attack request reached the engine")
                # An honest player joins a new broadcast meanwhile.
                stream = await read_stream(f"{api}/ace/getstream?url={chain.transport_url}", 4.0)
                assert len(decode_video(stream)) >= 40
                refused = [t.result() for t in attacks if t.done()]
                assert len(refused) == len(attacks) - MAX_LOOKUPS
                for status, body, headers in refused:
                    assert status == 503, body
                    assert f"looking up {MAX_LOOKUPS} unknown content ids" in body["error"]
                    assert "Retry-After" in headers
            finally:
                for attack in attacks:
                    attack.cancel()
                await asyncio.gather(*attacks, return_exceptions=True)

            # Their clients gave up: the lookups are left at once, long before the startup timeout (20 s).
            async def no_lookups() -> bool:
                return all(b["state"] == "playing" for b in await engine_broadcasts(http, api))

            await poll(no_lookups, 8, "the engine leaves lookups nobody waits for")
            status, body, _ = await get(http, f"{api}/ace/getstream?id={os.urandom(20).hex()}&format=json")
            assert status == 200, body  # a lookup slot is free again
    engine_log_clean(tmp_path, "engine")


LOCAL_PATHS = ["/etc/passwd", "/nonexistent/secret.acelive", "file:///etc/hostname", "relative.acelive",
               "/dev/zero"]  # fmt: skip


async def test_url_reads_no_local_file_by_default(chain: Chain, tmp_path: Path) -> None:
    with engine(tmp_path) as api:
        async with aiohttp.ClientSession() as http:
            messages = set()
            for path in LOCAL_PATHS:
                status, body, _ = await get(http, f"{api}/ace/getstream?url={quote(path, safe='')}")
                assert status == 400, body
                messages.add(body["error"])
            # One message for all: it does not tell which files exist.
            assert len(messages) == 1, messages
            assert "http:// or https://" in messages.pop()
            status, _, _ = await get(http, f"{api}/webui/api/service?method=get_version")
            assert status == 200
    engine_log_clean(tmp_path, "engine")


async def test_local_transport_files_only_as_the_operator_allows(chain: Chain, tmp_path: Path) -> None:
    publish = chain.source.publish_dir
    (tmp_path / "big.acelive").write_bytes(b"d" * (MAX_METADATA_SIZE * 4))
    os.mkfifo(tmp_path / "fifo.acelive")
    with engine(tmp_path, "--transport-files-dir", str(publish), name="dir-engine") as api:
        async with aiohttp.ClientSession() as http:
            # A name inside the directory is read (the file names no tracker here, so the session only proves that).
            name = next(publish.glob("*.acelive")).name
            status, body, _ = await get(http, f"{api}/ace/getstream?url={quote(name)}&format=json")
            assert status == 200, body
            assert body["response"]["infohash"] == chain.source.descriptor().infohash
            for path in ["../meta/test.sauth", str(chain.tmp / "meta" / "test.sauth"), "/dev/zero",
                         str(tmp_path / "big.acelive")]:  # fmt: skip
                status, body, _ = await get(http, f"{api}/ace/getstream?url={quote(path, safe='')}")
                assert status == 400, body
                assert "names no file under the transport files directory" in body["error"]
    with engine(tmp_path, "--allow-local-transport-files", name="local-engine") as api:
        async with aiohttp.ClientSession() as http:
            cases = [
                ("/dev/zero", "not a regular file"),
                (str(tmp_path / "fifo.acelive"), "not a regular file"),
                (str(tmp_path / "big.acelive"), f"more than {MAX_METADATA_SIZE} bytes"),
            ]
            for path, message in cases:
                status, body, _ = await get(http, f"{api}/ace/getstream?url={quote(path, safe='')}")
                assert status == 400, body
                assert message in body["error"]
            status, _, _ = await get(http, f"{api}/webui/api/service?method=get_version")
            assert status == 200  # the loop was never blocked
    engine_log_clean(tmp_path, "dir-engine")
    engine_log_clean(tmp_path, "local-engine")


@contextlib.asynccontextmanager
async def hostile_web_server() -> AsyncIterator[str]:
    """What a hostile transport-file URL can answer: redirect loops, endless bodies, lies, odd redirects."""

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/loop?n={int(request.query.get('n', '0')) + 1}")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):  # 64 MB at most
                await response.write(b"l" * 65536)
        return response

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"d" * (MAX_METADATA_SIZE + 1))

    async def to_file(request: web.Request) -> web.Response:
        raise web.HTTPFound("file:///etc/passwd")

    async def to_bad(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://["})

    app = web.Application()
    for path, handler in [("/loop", loop), ("/endless", endless), ("/huge", huge), ("/to-file", to_file),
                          ("/to-bad", to_bad)]:  # fmt: skip
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()


ID = "ab" * 20


async def test_malformed_requests_are_4xx_never_500(tmp_path: Path) -> None:
    dead_tracker = f"http://{HOST}:{free_port()}/announce"
    magnet = f"magnet:?xt=urn:btih:{ID}"
    with engine(tmp_path, "--tracker", dead_tracker) as api:
        async with hostile_web_server() as evil, aiohttp.ClientSession() as http:
            cases: list[tuple[str, str, int]] = [
                ("GET", "/ace/getstream?url=http://%5B", 400),
                ("GET", "/ace/getstream?url=http://%5B::1", 400),
                ("GET", "/ace/getstream?url=http://host:99999/x", 400),
                ("GET", "/ace/getstream?url=javascript:alert(1)", 400),
                ("GET", "/ace/getstream?url=" + "a" * 3000, 400),
                ("GET", "/ace/getstream?url=%00", 400),
                ("GET", "/ace/getstream?magnet=//%5B", 400),
                ("GET", "/ace/getstream?magnet=" + quote(magnet + "&tr=http://%5B", safe=""), 400),
                ("GET", "/ace/getstream?magnet=" + quote(magnet + "&tr=udp://nohost", safe=""), 400),
                ("GET", "/ace/getstream?magnet=" + quote(magnet + "&tr=gopher://x/", safe=""), 400),
                ("GET", "/ace/getstream?magnet=" + quote(magnet + "&tr=http://h:99999/a", safe=""), 400),
                ("GET", "/ace/getstream?magnet=" + quote(magnet + "&tr=udp://h:0", safe=""), 400),
                ("GET", "/ace/getstream?magnet=" + quote(magnet + "&tr=http://t/a" * 9, safe=""), 400),
                ("GET", "/ace/getstream?magnet=magnet:?xt=urn:btih:%ff", 400),
                ("GET", "/ace/getstream?id=%ff%fe", 400),
                ("GET", "/ace/getstream?id=" + "z" * 40, 400),
                ("GET", "/ace/getstream?id=" + "!" * 32, 400),
                ("GET", "/ace/getstream?content_id=" + "a" * 5000, 400),
                ("GET", "/ace/getstream?" + "&".join(f"k{i}=v" for i in range(40)), 400),
                ("GET", "/ace/getstream", 400),
                ("GET", "/ace/getstream?format=json", 400),
                # Ace Stream's own parameters with bad values: each a 400 naming it (issue 8).
                ("GET", f"/ace/getstream?id={ID}&pid=a%20b", 400),
                ("GET", f"/ace/getstream?id={ID}&sid=" + "s" * 200, 400),
                ("GET", f"/ace/getstream?id={ID}&use_stop_notifications=2", 400),
                ("GET", f"/ace/getstream?id={ID}&transcode_audio=%ff", 400),
                ("GET", f"/ace/getstream?id={ID}&preferred_audio_language=%00%00", 400),
                ("GET", f"/ace/getstream?id={ID}&file_indexes=1", 400),
                ("GET", f"/ace/getstream?id={ID}&_idx=99999999", 400),
                ("GET", f"/ace/getstream?id={ID}&format=m3u8", 400),
                ("GET", f"/ace/getstream?id={ID}&zone_id=1e9", 400),
                ("GET", "/ace/getstream?data=%ff%fe", 400),
                ("GET", "/ace/getstream?data=" + "QUFB" * 500, 400),
                ("GET", "/ace/getstream?direct_url=http://cdn.example/a.mp4", 400),
                ("GET", f"/ace/manifest.m3u8?id={ID}&transcode_ac3=x", 400),
                ("GET", "/ace/manifest.m3u8", 400),
                ("GET", "/ace/manifest.m3u8?id=" + "z" * 40, 400),
                ("GET", f"/ace/manifest.m3u8?id={ID}&format=m3u8", 400),
                # HLS segments of an output that does not run, or malformed: 404, never a 500.
                ("GET", f"/ace/hls/{ID}/0.ts", 404),
                ("GET", f"/ace/hls/{ID}/99999999999999999999.ts", 404),
                ("GET", f"/ace/hls/{ID}/-1.ts", 404),
                ("GET", "/ace/hls/..%2f..%2fetc/0.ts", 404),
                ("GET", f"/ace/hls/{ID.upper()}/0.ts", 404),
                ("GET", "/player", 400),
                ("GET", f"/player?id={ID}&transcode_ac3=x", 400),
                ("GET", "/player?id=%0a%0d%00", 400),
                ("GET", "/player?magnet=magnet:?xt=urn:btih:%0a", 400),
                ("GET", "/static/..%2fengine_api.py", 404),
                ("GET", "/static/nosuch.js", 404),
                ("GET", f"/ace/getstream?url={quote(evil)}/loop", 400),
                ("GET", f"/ace/getstream?url={quote(evil)}/endless", 400),
                ("GET", f"/ace/getstream?url={quote(evil)}/huge", 400),
                ("GET", f"/ace/getstream?url={quote(evil)}/to-file", 400),
                ("GET", f"/ace/getstream?url={quote(evil)}/to-bad", 400),
                ("GET", f"/ace/getstream?url={quote(evil)}/missing", 400),
                ("GET", f"/ace/r/{ID}/nosuchsession", 404),
                ("GET", f"/ace/stat/{ID}/nosuchsession", 404),
                ("GET", f"/ace/cmd/{ID}/nosuchsession?method=stop", 404),
                ("GET", "/webui/api/service?method=%ff", 400),
                ("GET", "/no/such/path", 404),
                ("GET", "/ace/getstream/../../etc/passwd", 404),
                ("POST", "/ace/getstream?id=" + ID, 405),
                ("DELETE", "/app/stat", 405),
            ]
            for method, path, expected in cases:
                status, body, _ = await get(http, api + path, method)
                assert status == expected, (method, path, status, body)
                assert isinstance(body, dict), (path, body)
                assert body.get("error"), (path, body)
            # Nothing above joined anything.
            assert await engine_broadcasts(http, api) == []
            # HEAD answers GET's headers without joining or streaming.
            status, _, headers = await get(http, f"{api}/ace/getstream?id={ID}", "HEAD")
            assert (status, headers["Content-Type"]) == (200, "video/mp2t")
            status, _, _ = await get(http, f"{api}/ace/getstream?id=nothex", "HEAD")
            assert status == 400
            status, _, headers = await get(http, f"{api}/ace/manifest.m3u8?id={ID}", "HEAD")
            assert (status, headers["Content-Type"]) == (200, "application/vnd.apple.mpegurl")
            status, _, _ = await get(http, f"{api}/ace/manifest.m3u8?id=nothex", "HEAD")
            assert status == 400
            assert await engine_broadcasts(http, api) == []
            # A request line past the server's bound is refused by the HTTP layer.
            status, _, _ = await get(http, f"{api}/ace/getstream?id=" + "a" * 9000)
            assert status in (400, 414)
            # A session's command with a bad method, then the real one.
            status, body, _ = await get(http, f"{api}/ace/getstream?id={ID}&format=json")
            assert status == 200, body
            command_url = body["response"]["command_url"]
            status, body, _ = await get(http, command_url + "?method=%ff")
            assert status == 400, body
            status, body, _ = await get(http, command_url + "?method=stop")
            assert (status, body) == (200, {"response": "ok", "error": None})
            # DNS rebinding: a page whose name resolves to us may not read our answers; IPs and localhost may.
            version = f"{api}/webui/api/service?method=get_version"
            for host, expected in [("evil.example", 421), ("evil.example:6878", 421), ("localhost:6878", 200),
                                   ("[::1]:6878", 200), ("127.0.0.1", 200)]:  # fmt: skip
                async with http.get(version, headers={"Host": host}) as response:
                    assert response.status == expected, host
                    assert (await response.json())["error" if expected != 200 else "result"]
            # HTTP/0.9 is not answered as if it were HTTP.
            port = int(api.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET /webui/api/service?method=get_version\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(200), 30)
            writer.close()
            assert b" 200 " not in answer.split(b"\r\n")[0], answer
            status, _, _ = await get(http, f"{api}/webui/api/service?method=get_version")
            assert status == 200
    engine_log_clean(tmp_path, "engine")


@contextlib.asynccontextmanager
async def lan_services() -> AsyncIterator[str]:
    """An open port a page might probe through the engine: ``/json`` a JSON service, anything else a 404."""

    async def json_service(request: web.Request) -> web.Response:
        return web.json_response({"service": "router admin"})

    app = web.Application()
    app.router.add_get("/json", json_service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()


async def test_a_web_page_cannot_scan_ports_through_the_playlist(tmp_path: Path) -> None:
    """Review finding 2: /ace/manifest.m3u8?url=... answers a cross-origin page one text whether the URL's port is
    closed, answers 404 or is a JSON service; the engine's own clients (no Origin) keep the detail."""
    closed = f"http://{HOST}:{free_port()}/x"
    with engine(tmp_path) as api:
        async with lan_services() as lan, aiohttp.ClientSession() as http:
            targets = (closed, f"{lan}/missing", f"{lan}/json")
            seen, detailed = set(), set()
            for target in targets:
                url = f"{api}/ace/manifest.m3u8?url={quote(target, safe='')}"
                async with http.get(url, headers={"Origin": "http://evil.example"}) as response:
                    body = await response.json(content_type=None)
                    seen.add((response.status, body["error"]))
                    # Readable (the watch page shows it), but says nothing of the target.
                    assert response.headers.get("Access-Control-Allow-Origin") == "*"
                _, body, headers = await get(http, url)
                assert "Access-Control-Allow-Origin" not in headers, target
                detailed.add(body["error"])
            assert seen == {(400, GENERIC_ERROR)}, seen
            assert len(detailed) == 3, detailed  # the engine's own clients still learn why
            # By id, the engine fetched nothing a page chose: the detail stays readable.
            async with http.get(f"{api}/ace/manifest.m3u8?id=" + "zz", headers={"Origin": "http://e.example"}) as r:
                body = await r.json(content_type=None)
                assert r.status == 400 and body["error"] != GENERIC_ERROR, body
                assert r.headers.get("Access-Control-Allow-Origin") == "*"
    engine_log_clean(tmp_path, "engine")
