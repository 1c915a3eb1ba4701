"""The engine's playback API, shaped like the Ace Stream engine's so existing players and scripts work.

- ``GET /ace/getstream?id=|content_id=|infohash=|url=|magnet=`` plays MPEG-TS; ``format=json`` answers the
  playback/stat/command URLs instead. Any number of players per broadcast; no ``pid`` needed.
- ``GET /ace/r/<infohash>/<session>`` the playback URL of a JSON session.
- ``GET /ace/stat/<infohash>/<session>`` status; ``GET /ace/cmd/<infohash>/<session>?method=stop``.
- ``GET /webui/api/service?method=get_version``.

A broadcast that produces nothing within ``startup_timeout`` gets a clear error instead of a hanging request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from swarmcast import VERSION_CODE, __version__
from swarmcast.node.engine import Engine, EngineBroadcast, PlaybackSession
from swarmcast.node.joiner import JoinError, load_transport, parse_content_id, parse_magnet

log = logging.getLogger("swarmcast.engine")

ENGINE_KEY: web.AppKey[Engine] = web.AppKey("engine", Engine)


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"response": None, "error": message}, status=status)


async def _broadcast_for(engine: Engine, query: Any) -> EngineBroadcast:
    for key in ("id", "content_id", "infohash"):
        if key in query:
            return await engine.join(parse_content_id(query[key]))
    if "magnet" in query:
        content_id, trackers = parse_magnet(query["magnet"])
        return await engine.join(content_id, trackers=trackers)
    if "url" in query:
        transport = await load_transport(query["url"])
        return await engine.join(
            transport.descriptor.content_id,
            descriptor=transport.descriptor,
            trackers=transport.trackers,
            node=transport.node,
        )
    raise JoinError("give one of id, content_id, infohash, url or magnet")


def _urls(request: web.Request, session: PlaybackSession) -> dict[str, str]:
    base = f"{request.scheme}://{request.host}"
    ih, sid = session.broadcast.infohash, session.session_id
    return {
        "playback_url": f"{base}/ace/r/{ih}/{sid}",
        "stat_url": f"{base}/ace/stat/{ih}/{sid}",
        "command_url": f"{base}/ace/cmd/{ih}/{sid}",
    }


async def getstream(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    try:
        broadcast = await _broadcast_for(engine, request.query)
    except JoinError as error:
        return _error(str(error))
    session = engine.new_session(broadcast)
    if request.query.get("format") == "json":
        response = {
            **_urls(request, session),
            "infohash": broadcast.infohash,
            "playback_session_id": session.session_id,
            "is_live": 1,
            "is_encrypted": 0,
        }
        return web.json_response({"response": response, "error": None})
    return await _play(request, engine, session)


async def playback(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    session = engine.sessions.get(request.match_info["session"])
    if session is None or session.broadcast.infohash != request.match_info["infohash"]:
        return _error("unknown playback session", 404)
    return await _play(request, engine, session)


async def _play(request: web.Request, engine: Engine, session: PlaybackSession) -> web.StreamResponse:
    broadcast = session.broadcast
    pieces = broadcast.pieces(session.stopped)
    try:
        async with asyncio.timeout(engine.config.startup_timeout):
            first = await anext(pieces)
    except (TimeoutError, StopAsyncIteration):
        await pieces.aclose()
        reason = "no peers found" if broadcast.swarm.peer_count == 0 else "no data from peers"
        if broadcast.swarm.descriptor is None:
            reason = "could not get the broadcast's descriptor from any peer"
        return _error(f"broadcast {broadcast.infohash} did not start within "
                      f"{engine.config.startup_timeout:.0f} s: {reason}", 504)  # fmt: skip
    response = web.StreamResponse(headers={"Content-Type": "video/mp2t", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        async with asyncio.timeout(engine.config.player_write_timeout):
            await response.write(first)
        async for data in pieces:
            # A player that stops reading is dropped after the timeout; the swarm never waits for it.
            async with asyncio.timeout(engine.config.player_write_timeout):
                await response.write(data)
    except (ConnectionError, TimeoutError) as error:
        log.info("player of %s went away: %s", broadcast.infohash, type(error).__name__)
    finally:
        await pieces.aclose()
    return response


def _lookup(request: web.Request) -> PlaybackSession | None:
    session = request.app[ENGINE_KEY].sessions.get(request.match_info["session"])
    if session is None or session.broadcast.infohash != request.match_info["infohash"]:
        return None
    return session


async def stat(request: web.Request) -> web.Response:
    session = _lookup(request)
    if session is None:
        return _error("unknown playback session", 404)
    broadcast = session.broadcast
    swarm = broadcast.swarm
    now = time.monotonic()
    broadcast.last_active = now  # someone watching the status keeps the broadcast joined
    store = swarm.store
    response = {
        "status": "dl" if broadcast.delivered > 0 else "prebuf",
        "peers": swarm.peer_count,
        "speed_down": int(swarm.stats.down.rate(now) / 1024),
        "speed_up": int(swarm.stats.up.rate(now) / 1024),
        "downloaded": swarm.stats.downloaded,
        "uploaded": swarm.stats.uploaded,
        "total_progress": 0,
        "is_live": 1,
        "playback_session_id": session.session_id,
        "livepos": {
            "first": store.oldest,
            "last": store.newest,
            "pos": max((c.position for c in swarm.cursors if c.position is not None), default=None),
            "buffer_pieces": len(store),
        },
        "players": broadcast.players,
        "source_delay": round(broadcast.source_clock.delay, 3) if broadcast.source_clock else None,
        "skipped_pieces": swarm.stats.skipped_pieces,
    }
    return web.json_response({"response": response, "error": None})


async def command(request: web.Request) -> web.Response:
    session = _lookup(request)
    if session is None:
        return _error("unknown playback session", 404)
    method = request.query.get("method")
    if method != "stop":
        return _error(f"unknown method {method!r}; supported: stop")
    session.stopped.set()
    request.app[ENGINE_KEY].sessions.pop(session.session_id, None)
    return web.json_response({"response": "ok", "error": None})


async def service(request: web.Request) -> web.Response:
    method = request.query.get("method")
    if method == "get_version":
        version = {"version": __version__, "code": VERSION_CODE, "platform": "linux"}
        return web.json_response({"result": version, "error": None})
    return web.json_response({"result": None, "error": f"unknown method {method!r}"}, status=400)


async def engine_stat(request: web.Request) -> web.Response:
    """Every joined broadcast's swarm counters (for monitoring and benchmarks)."""
    engine = request.app[ENGINE_KEY]
    now = time.monotonic()
    result = [
        {**b.swarm.stats_snapshot(now), "players": b.players, "delivered": b.delivered}
        for b in engine.broadcasts.values()
    ]
    return web.json_response({"result": result, "error": None})


def make_app(engine: Engine) -> web.Application:
    app = web.Application()
    app[ENGINE_KEY] = engine
    app.router.add_get("/ace/getstream", getstream)
    app.router.add_get("/ace/r/{infohash}/{session}", playback)
    app.router.add_get("/ace/stat/{infohash}/{session}", stat)
    app.router.add_get("/ace/cmd/{infohash}/{session}", command)
    app.router.add_get("/webui/api/service", service)
    app.router.add_get("/app/stat", engine_stat)
    return app
