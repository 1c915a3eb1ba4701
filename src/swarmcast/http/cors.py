"""Cross-origin reads of the engine's playback paths, for web pages that play through the viewer's own engine.

The registry's watch page (registry/watch.py) is served by the registry, not the engine, and reads the engine's
version, HLS playlist and segments with ``fetch``/XHR: the browser lets it only when the answers carry
``Access-Control-Allow-Origin``. The HLS answers carried it already (hls_out.PLAYLIST_HEADERS); this adds the version
the page probes the engine with and the error answers (a 400 or 504 the page shows). These paths alone get ``*`` (no
credentials: the engine has no cookies or user sessions): what any page could already make the engine do (join a
broadcast, a GET with no preflight) it may now also read, a live stream that is public in the swarm anyway.
Everything else (``/ace/getstream``'s session URLs, ``/ace/stat``, ``/app/stat``) stays unreadable to other
origins, and the Host check against DNS rebinding (engine_api.json_errors) is unchanged.
"""

from __future__ import annotations

from aiohttp import web

CORS_PATHS = ("/webui/api/service", "/ace/manifest.m3u8")  # exact paths
CORS_PREFIXES = ("/ace/hls/",)  # and the playlist's segments
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    path = request.path
    if path in CORS_PATHS or path.startswith(CORS_PREFIXES):
        response.headers.update(CORS_HEADERS)


def allow_cross_origin_playback(app: web.Application) -> None:
    """Add the CORS headers to the playback paths' answers (errors included, so a page can tell why)."""
    app.on_response_prepare.append(_add_headers)
