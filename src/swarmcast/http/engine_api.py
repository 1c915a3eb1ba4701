"""The engine's playback API, shaped like the Ace Stream engine's so existing players and scripts work.

- ``GET /ace/getstream?id=|content_id=|infohash=|url=|magnet=|data=`` plays MPEG-TS; ``format=json`` answers the
  playback/stat/command URLs instead. Any number of players per broadcast; no ``pid`` needed. Every parameter Ace
  Stream documents is accepted and its value checked (swarmcast.http.engine_params); unknown ones are ignored.
- ``GET /ace/manifest.m3u8`` the same parameters: a live HLS playlist of ~1 s segments cut from the verified pieces
  (http/hls_out.py), its segments at ``/ace/hls/<infohash>/<seq>.ts``; ``GET /player?...`` a page playing it with
  hls.js (http/player.py; scripts at ``/static/``).
- ``GET /ace/r/<infohash>/<session>`` the playback URL of a JSON session.
- ``GET /ace/stat/<infohash>/<session>`` status; ``GET /ace/cmd/<infohash>/<session>?method=stop``.
- ``GET /webui/api/service?method=get_version``.

Every client is untrusted (a web page can make a browser send any of these to localhost). What a client sends is
checked here before it reaches the engine: a bad value is a 400 naming it, a limit reached (swarmcast.node.
engine_limits) a 503 with Retry-After, an unknown path a 404, all in the API's JSON error shape; nothing a client
sends produces a 500 (a middleware turns an unexpected exception into a logged, traceback-free JSON 500, and a
test sends every parameter path malformed). HEAD answers the headers of GET without joining or streaming.
A broadcast that produces nothing within ``startup_timeout`` gets a clear error instead of a hanging request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import HttpVersion10, web
from aiohttp.http_exceptions import HttpProcessingError

from swarmcast import VERSION_CODE, __version__
from swarmcast.http.channel_out import channel_master, join_hints, resolve
from swarmcast.http.cors import allow_cross_origin_playback, error_text
from swarmcast.http.ctl_api import add_ctl_routes
from swarmcast.http.engine_params import ID_KEYS, PlaybackRequest, content_id, magnet, parse_playback, transport_data
from swarmcast.http.hls_out import (
    PLAYLIST_HEADERS,
    SEGMENT_PATH,
    HlsNotReadyError,
    HlsOutputs,
    HlsStartError,
    playlist_response,
    segment_response,
)
from swarmcast.http.livepos import livepos, piece_seconds
from swarmcast.http.player import add_static_routes, player_handler
from swarmcast.media.hls_playlist import PLAYLIST_CONTENT_TYPE
from swarmcast.metrics.http import engine_metrics_routes
from swarmcast.node.engine import Engine, EngineBroadcast, PlaybackSession
from swarmcast.node.engine_limits import RETRY_AFTER_SECONDS, EngineBusyError
from swarmcast.node.joiner import JoinError
from swarmcast.registry.bootstrap import directory_of, is_registry_name, join_content_id, join_hint, named_master
from swarmcast.registry.bootstrap import lookup as registry_lookup

log = logging.getLogger("swarmcast.engine")

ENGINE_KEY: web.AppKey[Engine] = web.AppKey("engine", Engine)
HLS_KEY: web.AppKey[HlsOutputs] = web.AppKey("hls", HlsOutputs)

MAX_REQUEST_LINE = 8190  # bytes of the request line (aiohttp's own 400 beyond), also of each header
KEEPALIVE_TIMEOUT = 15.0  # an idle connection (also one that sends nothing, or half a request) is closed after this
MAX_HTTP_CONNECTIONS = 256  # open API connections; past it a new one is closed at once (within one accept burst)
LISTEN_BACKLOG = 100
# Ace Stream's id of the user session a playback belongs to (an integer; -1 when there is none, as here: swarmcast
# has no user accounts).
CLIENT_SESSION_ID = -1
TS_HEADERS = {"Content-Type": "video/mp2t", "Cache-Control": "no-cache"}


def _error(message: str, status: int = 400, headers: Mapping[str, str] | None = None) -> web.Response:
    if status == 503:
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_SECONDS)}
    return web.json_response({"response": None, "error": message}, status=status, headers=headers)


def _names(engine: Engine) -> Callable[[str], bool] | None:
    """With a registry or bootstrap file, ``id=`` may be a registry name (registry/bootstrap.py)."""
    return is_registry_name if directory_of(engine) is not None else None


async def _broadcast_for(engine: Engine, asked: PlaybackRequest) -> EngineBroadcast:
    if asked.selector in ID_KEYS:
        # A rendition (or channel) id the engine read in a channel file joins with what the file said of it.
        named = is_registry_name(asked.value)
        known = None if named else join_hints(engine, content_id(asked.value))
        if known is None:
            # A registry name, or a content id the bootstrap file or the registry knows (registry/bootstrap.py);
            # a content id's join is not held up by a slow registry (join_content_id), a name needs its answer.
            if not named:
                joined = await join_content_id(engine, content_id(asked.value))
                return joined if joined is not None else await engine.join(content_id(asked.value))
            hint = await registry_lookup(engine, asked.value)
            if hint is not None:
                return await join_hint(engine, hint)
            return await engine.join(content_id(asked.value))
        transport = known
    elif asked.selector == "magnet":
        cid, trackers = magnet(asked.value)
        return await engine.join(cid, trackers=trackers)
    elif asked.selector == "data":
        descriptor = transport_data(asked.value)
        return await engine.join(descriptor.content_id, descriptor=descriptor)
    else:  # url=: a transport file, or a channel file (its first rendition plays)
        transport = (await resolve(engine, asked.value, engine.local_files)).transport
    return await engine.join(
        transport.descriptor.content_id,
        descriptor=transport.descriptor,
        trackers=transport.trackers,
        node=transport.node,
    )


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
        asked = parse_playback(request.query, _names(engine))
        if request.method == "HEAD":
            return web.Response(content_type="application/json") if asked.as_json else web.Response(headers=TS_HEADERS)
        if asked.as_json:
            broadcast = await _broadcast_for(engine, asked)
            session = engine.new_session(broadcast)
        else:
            # The stream slot first: a request we would refuse must not start a lookup.
            with engine.streams.slot(_client(request)):
                broadcast = await _broadcast_for(engine, asked)
                return await _play(request, engine, broadcast, None)
    except JoinError as error:
        return _error(str(error))
    except EngineBusyError as error:
        return _error(str(error), 503)
    response = {
        **_urls(request, session),
        "infohash": broadcast.infohash,
        "playback_session_id": session.session_id,
        "is_live": 1,
        "is_encrypted": 0,  # Ace Stream's 0/1: swarmcast broadcasts are signed, never encrypted
        "client_session_id": CLIENT_SESSION_ID,
    }
    return web.json_response({"response": response, "error": None})


async def manifest(request: web.Request) -> web.Response:
    """``/ace/manifest.m3u8``: the broadcast's live HLS playlist (http/hls_out.py), the parameters those of
    getstream, checked alike; ``format=json`` answers the session's URLs with the playlist as ``playback_url``."""
    engine = request.app[ENGINE_KEY]
    try:
        asked = parse_playback(request.query, _names(engine))
        if request.method == "HEAD":
            if asked.as_json:
                return web.Response(content_type="application/json")
            return web.Response(content_type=PLAYLIST_CONTENT_TYPE, headers=PLAYLIST_HEADERS)
        outputs = request.app[HLS_KEY]
        running = None if asked.as_json else outputs.running(asked.selector, asked.value)
        if running is not None:  # a player reloading the playlist: no lookup
            return await playlist_response(outputs, running, startup_timeout=engine.config.startup_timeout)
        named = asked.selector in ID_KEYS and is_registry_name(asked.value)  # asked of the registry
        if named:
            master = None if asked.as_json else await named_master(engine, asked.value)
        else:
            master = await channel_master(engine, asked)  # a channel: the master playlist of its renditions
        if master is not None:
            return master
        broadcast = await _broadcast_for(engine, asked)
        if not asked.as_json:
            outputs.remember(asked.selector, asked.value, broadcast.infohash)
            return await playlist_response(outputs, broadcast, startup_timeout=engine.config.startup_timeout)
        session = engine.new_session(broadcast)
    except JoinError as error:  # cross-origin, never the detail of a URL the page chose (http/cors.py)
        return _error(error_text(request, str(error)))
    except EngineBusyError as error:
        return _error(error_text(request, str(error)), 503)
    except HlsStartError as error:
        return _error(error_text(request, str(error)), 504)
    except HlsNotReadyError as error:
        return _error(error_text(request, str(error)), 503)
    query = urllib.parse.urlencode([(k, v) for k, v in request.query.items() if k != "format"])
    response = {
        **_urls(request, session),
        "playback_url": f"{request.scheme}://{request.host}/ace/manifest.m3u8?{query}",
        "infohash": broadcast.infohash,
        "playback_session_id": session.session_id,
        "is_live": 1,
        "is_encrypted": 0,
        "client_session_id": CLIENT_SESSION_ID,
    }
    return web.json_response({"response": response, "error": None})


async def hls_segment(request: web.Request) -> web.Response:
    return segment_response(request.app[HLS_KEY], request.match_info["infohash"], request.match_info["seq"])


def _player_manifest(request: web.Request) -> str:
    """``/player?id=...``: the page plays ``/ace/manifest.m3u8`` with the same parameters (checked first: a bad
    one is the same 400 as getstream's)."""
    try:
        parse_playback(request.query, _names(request.app[ENGINE_KEY]))
    except JoinError as error:
        # The reason becomes the JSON error (json_errors); aiohttp refuses a reason with a line break in it.
        raise web.HTTPBadRequest(reason=" ".join(str(error).split())[:300]) from None
    return "/ace/manifest.m3u8?" + urllib.parse.urlencode([(k, v) for k, v in request.query.items() if k != "format"])


async def playback(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    session = _lookup(request)
    if session is None:
        return _error("unknown playback session", 404)
    if request.method == "HEAD":
        return web.Response(headers=TS_HEADERS)
    try:
        with engine.streams.slot(_client(request)):
            session.players += 1
            try:
                return await _play(request, engine, session.broadcast, session)
            finally:
                session.players -= 1
                session.last_used = time.monotonic()
    except EngineBusyError as error:
        return _error(str(error), 503)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def _play(request: web.Request, engine: Engine, broadcast: EngineBroadcast,
                session: PlaybackSession | None) -> web.StreamResponse:  # fmt: skip
    pieces = broadcast.pieces(lambda: session is not None and session.stopped)
    try:  # the generator holds a cursor and counts as a player: closed however we leave, cancellation included
        try:
            async with asyncio.timeout(engine.config.startup_timeout):
                first = await anext(pieces)
        except (TimeoutError, StopAsyncIteration):
            return _error(f"broadcast {broadcast.infohash} did not start within "
                          f"{engine.config.startup_timeout:.0f} s: {broadcast.startup_problem()}", 504)  # fmt: skip
        response = web.StreamResponse(headers=TS_HEADERS)
        try:
            await response.prepare(request)
            async with asyncio.timeout(engine.config.player_write_timeout):
                await response.write(first)
            async for data in pieces:
                # A player that stops reading is dropped after the timeout; the swarm never waits for it.
                async with asyncio.timeout(engine.config.player_write_timeout):
                    await response.write(data)
        except (ConnectionError, TimeoutError) as error:
            log.info("player of %s went away: %s", broadcast.infohash, type(error).__name__)
        return response
    finally:
        await pieces.aclose()


def _lookup(request: web.Request) -> PlaybackSession | None:
    session = request.app[ENGINE_KEY].sessions.get(request.match_info["session"], time.monotonic())
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
    bitrate = swarm.descriptor.bitrate if swarm.descriptor is not None else 0
    live = livepos(
        now=time.time(),
        oldest=store.oldest,
        newest=store.newest,
        position=max((c.position for c in swarm.cursors if c.position is not None), default=None),
        held=store.indices(),
        seconds_per_piece=piece_seconds(store.size_bytes, len(store), bitrate),
    )
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
        "livepos": live,
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
        return _error(f"unknown method {method!r:.60}; supported: stop")
    request.app[ENGINE_KEY].sessions.remove(session.session_id)
    return web.json_response({"response": "ok", "error": None})


async def service(request: web.Request) -> web.Response:
    method = request.query.get("method")
    if method == "get_version":
        version = {"version": __version__, "code": VERSION_CODE, "platform": "linux"}
        return web.json_response({"result": version, "error": None})
    return web.json_response({"result": None, "error": f"unknown method {method!r:.60}"}, status=400)


async def engine_stat(request: web.Request) -> web.Response:
    """Every joined broadcast's swarm counters (for monitoring and benchmarks)."""
    engine = request.app[ENGINE_KEY]
    now = time.monotonic()
    result = [
        {**b.swarm.stats_snapshot(now), "players": b.players, "delivered": b.delivered, "state": b.state.value}
        for b in engine.broadcasts.values()
    ]
    return web.json_response({"result": result, "error": None})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host_name(header: str) -> str:
    """The host of a Host header, without the port and brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _ip_or_localhost(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True  # RFC 6761: always loopback, never from DNS
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors in the API's JSON shape; an unexpected exception is logged and answered without a traceback."""
    if request.version < HttpVersion10:
        return _error("HTTP/0.9 is not supported", 505)
    host = _host_name(request.headers.get("Host", ""))
    allowed = request.app[ENGINE_KEY].config.http_allowed_hosts
    if host and "*" not in allowed and host not in allowed and not _ip_or_localhost(host):
        # DNS rebinding: a web page whose name now resolves to 127.0.0.1 could read our answers as its own.
        return _error(f"Host {host[:100]!r} is not allowed: the engine answers requests for IP addresses and "
                      "localhost, and names given with --http-allowed-host", 421)  # fmt: skip
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = {404: "no such path", 405: f"method {request.method} not allowed"}.get(error.status, error.reason)
        allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return _error(message, error.status, allow)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path[:200])
        return _error("internal error (logged by the engine)", 500)


def make_app(engine: Engine) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[ENGINE_KEY] = engine
    app[HLS_KEY] = outputs = HlsOutputs()

    async def close_outputs(_app: web.Application) -> None:
        await outputs.close()

    app.on_shutdown.append(close_outputs)  # before the server waits for its handlers: the outputs' tasks end first
    allow_cross_origin_playback(app)  # the registry's watch page plays through this engine
    app.router.add_get("/ace/getstream", getstream)
    app.router.add_get("/ace/manifest.m3u8", manifest)
    app.router.add_get(SEGMENT_PATH, hls_segment)
    app.router.add_get("/player", player_handler(_player_manifest))
    add_static_routes(app)
    app.router.add_get("/ace/r/{infohash}/{session}", playback)
    app.router.add_get("/ace/stat/{infohash}/{session}", stat)
    app.router.add_get("/ace/cmd/{infohash}/{session}", command)
    app.router.add_get("/webui/api/service", service)
    app.router.add_get("/app/stat", engine_stat)
    add_ctl_routes(app, engine)  # /app/sessions, /app/settings (http/ctl_api.py)
    engine_metrics_routes(app, engine)  # /metrics (metrics/http.py)
    return app


class _BadRequestsWithoutTraceback(logging.Filter):
    """aiohttp logs a malformed request (a request line past the bound, a bad header) with a traceback at ERROR
    once a connection has served a request; any client could fill the log that way. One INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args, record.exc_info, record.exc_text = "bad HTTP request from %s: %s", (
                remote, str(error.message)[:120]), None, None  # fmt: skip
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_BAD_REQUESTS_FILTER = _BadRequestsWithoutTraceback()


def make_runner(engine: Engine) -> web.AppRunner:
    """The API's server: handlers are cancelled when their client goes (a lookup nobody waits for ends at once),
    idle keep-alive connections close, request lines and headers are bounded."""
    server_log = logging.getLogger("aiohttp.server")
    if _BAD_REQUESTS_FILTER not in server_log.filters:
        server_log.addFilter(_BAD_REQUESTS_FILTER)
    return web.AppRunner(
        make_app(engine), access_log=None, handler_cancellation=True, keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_REQUEST_LINE,
    )  # fmt: skip


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class CappedSite(web.BaseSite):
    """A TCP site with a cap on open connections, so that idle clients cannot take every file descriptor the P2P
    side and the disk cache need; past the cap a new connection is closed at once (logged once per minute)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 max_connections: int = MAX_HTTP_CONNECTIONS) -> None:  # fmt: skip
        super().__init__(runner)
        self._host, self._port, self._max = host, port, max_connections
        self._last_refusal_log = -60.0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.BaseProtocol:
            # The server's list lags: asyncio accepts a burst (up to the listen backlog, 100) of connections before
            # any reaches connection_made. So the cap holds to within one burst, which still bounds descriptors.
            if len(server.connections) < self._max:
                return server()
            if loop.time() - self._last_refusal_log >= 60.0:
                self._last_refusal_log = loop.time()
                log.warning("playback API: %d connections open (the limit); refusing new ones", self._max)
            return _Refused()

        self._server = await loop.create_server(
            factory, self._host, self._port, reuse_address=True, backlog=LISTEN_BACKLOG
        )
