"""The HLS origin over HTTP, in Livepeer's layout (what the videoDAC recipe curls).

    /stream/<id>.m3u8                      master playlist: the source rendition and each profile
    /stream/<id>/<rendition>.m3u8          a rendition's live media playlist (6 segments)
    /stream/<id>/<rendition>/<seq>.ts      one segment, while it is in the window
    /stream/<id>/<rendition>.ts            the rendition as one continuous MPEG-TS (ffplay; part E's sources)
    /stream/current.m3u8                   with --current-manifest: the master playlist of the last stream to start
    /stream/<id>/player                    a player page (hls.js, http/player.py) on the master playlist

Every answer carries ``Access-Control-Allow-Origin: *`` (players on other origins: hls.js in a page). Playlists
are ``application/vnd.apple.mpegurl`` with ``Cache-Control: max-age=1`` (a live playlist changes every segment);
segments do not change once cut, so they may be cached longer. Unknown ids, renditions and segments out of the
window are 404, as is a stream whose first segment has not been cut yet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from swarmcast.broadcaster.streams import Rendition, Stream, StreamRegistry
from swarmcast.http.player import add_static_routes, player_handler
from swarmcast.media.hls_playlist import PLAYLIST_CONTENT_TYPE, SEGMENT_CONTENT_TYPE, Variant, master_playlist

log = logging.getLogger("swarmcast.broadcaster.http")

PLAYLIST_CACHE: Final = "max-age=1"
SEGMENT_CACHE: Final = "max-age=30"
MAX_LIVE_CLIENTS: Final = 64  # continuous .ts readers per rendition
MAX_SEQUENCE_DIGITS: Final = 18
REGISTRY_KEY: Final = web.AppKey("registry", StreamRegistry)
_NAME: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_SEQ: Final = re.compile(rf"[0-9]{{1,{MAX_SEQUENCE_DIGITS}}}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as error:
        error.headers["Access-Control-Allow-Origin"] = "*"
        raise
    if not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _stream(request: web.Request) -> Stream:
    stream = request.app[REGISTRY_KEY].get(request.match_info["id"])
    if stream is None:
        raise web.HTTPNotFound(text=f"no stream {request.match_info['id']!r}\n")
    return stream


def _rendition(request: web.Request) -> Rendition:
    stream = _stream(request)
    rendition = stream.renditions.get(request.match_info["rendition"])
    if rendition is None:
        raise web.HTTPNotFound(text=f"stream {stream.stream_id!r} has no rendition "
                                    f"{request.match_info['rendition']!r}\n")  # fmt: skip
    return rendition


def _playlist(text: str) -> web.Response:
    return web.Response(text=text, content_type=PLAYLIST_CONTENT_TYPE, headers={"Cache-Control": PLAYLIST_CACHE})


def _master(stream: Stream) -> web.Response:
    # Relative URIs: resolved against /stream/<id>.m3u8 and /stream/current.m3u8 alike (both are in /stream/).
    variants = [Variant(uri=f"{stream.stream_id}/{info.name}.m3u8", bandwidth=info.bandwidth,
                        resolution=(info.width, info.height) if info.width and info.height else None,
                        codecs=info.codecs or None, frame_rate=info.frame_rate, name=info.name)
                for info in stream.infos]  # fmt: skip
    if not variants:
        raise web.HTTPNotFound(text=f"stream {stream.stream_id!r} has not started yet\n")
    return _playlist(master_playlist(variants))


async def _handle_master(request: web.Request) -> web.StreamResponse:
    return _master(_stream(request))


async def _handle_current(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY_KEY]
    stream = registry.get(registry.current_stream) if registry.current_stream else None
    if stream is None:
        raise web.HTTPNotFound(text="no stream has started\n")
    return _master(stream)


async def _handle_media_playlist(request: web.Request) -> web.StreamResponse:
    rendition = _rendition(request)
    if not len(rendition.window) and not rendition.window.ended:
        raise web.HTTPNotFound(text="no segment yet\n")
    name = rendition.name
    return _playlist(rendition.window.render(lambda seq: f"{name}/{seq}.ts"))


async def _handle_segment(request: web.Request) -> web.StreamResponse:
    text = request.match_info["seq"]
    if not _SEQ.fullmatch(text):
        raise web.HTTPNotFound
    segment = _rendition(request).window.get(int(text))
    if segment is None:
        raise web.HTTPNotFound(text=f"segment {text} is not in the window\n")
    return web.Response(body=segment.data, content_type=SEGMENT_CONTENT_TYPE, headers={"Cache-Control": SEGMENT_CACHE})


async def _handle_live_ts(request: web.Request) -> web.StreamResponse:
    rendition = _rendition(request)
    if rendition.window.ended:
        raise web.HTTPNotFound(text="the stream has ended\n")
    if len(rendition.clients) >= MAX_LIVE_CLIENTS:
        raise web.HTTPServiceUnavailable(text=f"{MAX_LIVE_CLIENTS} readers of this rendition already\n")
    response = web.StreamResponse(headers={"Content-Type": SEGMENT_CONTENT_TYPE, "Cache-Control": "no-cache",
                                           "Access-Control-Allow-Origin": "*"})  # fmt: skip
    response.enable_chunked_encoding()
    await response.prepare(request)
    if request.method == "HEAD":
        return response

    def drop() -> None:
        # A reader that stopped reading leaves write() waiting forever; aborting the transport wakes it.
        if request.transport is not None:
            request.transport.abort()

    client = rendition.subscribe(drop)
    try:
        while (data := await client.get()) is not None:
            await response.write(data)
    except ConnectionError:
        pass
    finally:
        rendition.unsubscribe(client)
        client.end()
    if client.dropped:
        log.warning("%s: live TS reader %s dropped: more than %d bytes behind", request.path, request.remote,
                    request.app[REGISTRY_KEY].config.live_queue_bytes)
    return response


def _player_manifest(request: web.Request) -> str | None:
    stream_id = request.match_info["id"]
    return f"/stream/{stream_id}.m3u8" if request.app[REGISTRY_KEY].get(stream_id) is not None else None


def _player_title(request: web.Request) -> str:
    return f"{request.match_info['id']} (swarmcast broadcaster)"


def make_origin_app(registry: StreamRegistry, *, current_manifest: bool = False) -> web.Application:
    app = web.Application(middlewares=[_cors])
    app[REGISTRY_KEY] = registry
    if current_manifest:
        app.router.add_get("/stream/current.m3u8", _handle_current)
    app.router.add_get(f"/stream/{{id:{_NAME}}}.m3u8", _handle_master)
    app.router.add_get(f"/stream/{{id:{_NAME}}}/{{rendition:{_NAME}}}.m3u8", _handle_media_playlist)
    app.router.add_get(f"/stream/{{id:{_NAME}}}/{{rendition:{_NAME}}}.ts", _handle_live_ts)
    app.router.add_get(f"/stream/{{id:{_NAME}}}/{{rendition:{_NAME}}}/{{seq}}.ts", _handle_segment)
    # The hls.js player page (http/player.py) on the master playlist; its scripts under /static/.
    app.router.add_get(f"/stream/{{id:{_NAME}}}/player", player_handler(_player_manifest, title=_player_title))
    add_static_routes(app)
    return app
