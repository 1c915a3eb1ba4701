"""POST /app/settings reads its whole body even when it arrives in pieces (http/ctl_api.py), without a socket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from unittest import mock

from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request

from swarmcast.http.ctl_api import MAX_SETTINGS_BODY, add_ctl_routes


@dataclass(frozen=True)
class _Config:
    upload_slots: int = 4
    upload_limit: int = 0
    max_peers: int = 50


class _Engine:
    def __init__(self) -> None:
        self.config = _Config()
        self.broadcasts: dict[bytes, object] = {}


def _post_settings(engine: Any) -> Any:
    app = web.Application()
    add_ctl_routes(app, engine)
    for route in app.router.routes():
        if route.method == "POST" and route.resource is not None and route.resource.canonical == "/app/settings":
            return route.handler
    raise AssertionError("no POST /app/settings")


async def _answer_in_pieces(pieces: list[bytes], length: int | None) -> tuple[int, Any]:
    """The handler's answer to a body fed ``pieces`` one at a time, each after the handler has read what came."""
    engine = _Engine()
    handler = _post_settings(engine)
    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: {
        "sockname": ("127.0.0.1", 6878), "peername": ("127.0.0.1", 40000)}.get(key, default)  # fmt: skip
    headers = {"Content-Type": "application/json", "Host": "127.0.0.1:6878"}
    if length is not None:
        headers["Content-Length"] = str(length)
    request = make_mocked_request("POST", "/app/settings", headers=headers, payload=payload, transport=transport)
    answer = asyncio.ensure_future(handler(request))
    for piece in pieces:
        for _ in range(5):  # let the handler read what has arrived (and wait for more)
            await asyncio.sleep(0)
        payload.feed_data(piece)
    payload.feed_eof()
    response = await answer
    return response.status, json.loads(response.body)


async def test_a_body_sent_in_two_chunks_is_read_whole() -> None:
    """Review finding 13: content.read(n) returns what has arrived; the handler reads to the end."""
    body = json.dumps({"upload_slots": 7, "max_peers": 20}).encode()
    status, answer = await _answer_in_pieces([body[:9], body[9:]], len(body))
    assert status == 200, answer
    assert answer["response"]["upload_slots"] == 7 and answer["response"]["max_peers"] == 20


async def test_a_body_over_the_bound_is_413_even_without_a_content_length() -> None:
    piece = b" " * (MAX_SETTINGS_BODY // 2 + 1)
    status, answer = await _answer_in_pieces([b"{", piece, piece, b"}"], None)
    assert status == 413, answer
