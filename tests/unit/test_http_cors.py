"""http/cors.py: the engine's playback paths are readable cross-origin (the registry's watch page), nothing else.
(Against the real engine: tests/integration/test_registry_chromium.py.)"""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from swarmcast.http.cors import GENERIC_ERROR, allow_cross_origin_playback, error_text

ORIGIN = {"Origin": "http://registry.example"}


async def headers_for(path: str, status: int = 200, detail: str = "x") -> web.StreamResponse:
    app = web.Application()
    allow_cross_origin_playback(app)
    app.freeze()
    request = make_mocked_request("GET", path, headers=ORIGIN, app=app)
    response = web.json_response({"error": error_text(request, detail) if status >= 400 else None}, status=status)
    await app.on_response_prepare.send(request, response)
    return response


async def test_playback_paths_carry_the_header_errors_included() -> None:
    for path in ("/webui/api/service?method=get_version", "/ace/manifest.m3u8?id=x", "/ace/hls/ab/7.ts",
                 "/ace/manifest.m3u8?url=http://127.0.0.1:1/x"):  # fmt: skip
        for status in (200, 400, 404, 503):
            response = await headers_for(path, status)
            assert response.headers.getall("Access-Control-Allow-Origin") == ["*"], (path, status)
            assert "Access-Control-Allow-Credentials" not in response.headers


async def test_other_paths_do_not() -> None:
    for path in ("/ace/stat/a/b", "/ace/cmd/a/b?method=stop", "/app/stat", "/ace/getstream?id=x", "/ace/r/a/b",
                 "/player?id=x", "/webui/api/service/x"):  # fmt: skip
        assert "Access-Control-Allow-Origin" not in (await headers_for(path)).headers, path


def test_cross_origin_errors_about_a_chosen_url_are_generic() -> None:
    """A page must not tell a closed port from an open one by the engine's error text (review finding 2)."""
    detail = "cannot fetch transport file http://192.168.1.1:22/: ClientConnectorError connect failed"
    for query in ("url=http://192.168.1.1:22/", "data=eHg", "magnet=magnet:?xt=urn:btih:" + "a" * 40, "id=a&url=b"):
        request = make_mocked_request("GET", f"/ace/manifest.m3u8?{query}", headers=ORIGIN)
        assert error_text(request, detail) == GENERIC_ERROR, query
    for query in ("id=" + "a" * 40, "content_id=x", "infohash=" + "b" * 40):  # the engine fetched nothing chosen
        request = make_mocked_request("GET", f"/ace/manifest.m3u8?{query}", headers=ORIGIN)
        assert error_text(request, detail) == detail, query
    # Not cross-origin (a player, the engine's own /player page): the detail stays.
    assert error_text(make_mocked_request("GET", "/ace/manifest.m3u8?url=http://x/"), detail) == detail


async def test_detailed_url_errors_carry_no_header() -> None:
    """Belt and braces: a detailed playlist error about a chosen URL is never readable cross-origin."""
    app = web.Application()
    allow_cross_origin_playback(app)
    app.freeze()
    request = make_mocked_request("GET", "/ace/manifest.m3u8?url=http://127.0.0.1:1/", headers=ORIGIN, app=app)
    response = web.json_response({"error": "answered HTTP 404"}, status=400)  # not passed through error_text
    await app.on_response_prepare.send(request, response)
    assert "Access-Control-Allow-Origin" not in response.headers
