"""http/cors.py: the engine's playback paths are readable cross-origin (the registry's watch page), nothing else.
(Against the real engine: tests/integration/test_registry_chromium.py.)"""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from swarmcast.http.cors import allow_cross_origin_playback


async def headers_for(path: str, status: int = 200) -> web.StreamResponse:
    app = web.Application()
    allow_cross_origin_playback(app)
    app.freeze()
    request = make_mocked_request("GET", path, headers={"Origin": "http://registry.example"}, app=app)
    response = web.json_response({"error": "x"}, status=status)
    await app.on_response_prepare.send(request, response)
    return response


async def test_playback_paths_carry_the_header_errors_included() -> None:
    for path in ("/webui/api/service?method=get_version", "/ace/manifest.m3u8?id=x", "/ace/hls/ab/7.ts"):
        for status in (200, 400, 404, 503):
            response = await headers_for(path, status)
            assert response.headers.getall("Access-Control-Allow-Origin") == ["*"], (path, status)
            assert "Access-Control-Allow-Credentials" not in response.headers


async def test_other_paths_do_not() -> None:
    for path in ("/ace/stat/a/b", "/ace/cmd/a/b?method=stop", "/app/stat", "/ace/getstream?id=x", "/ace/r/a/b",
                 "/player?id=x", "/webui/api/service/x"):  # fmt: skip
        assert "Access-Control-Allow-Origin" not in (await headers_for(path)).headers, path
