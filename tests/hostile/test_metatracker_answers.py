"""Hostile metatrackers: an HTTP server on loopback (in this process) that answers what an attacker would.

The client must read at most MAX_ANSWER_BYTES, give up within its timeout, follow no redirect, and whatever the
server does, hand the owner only checked, capped lists; close() must end everything at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from swarmcast.discovery.metatracker import MetatrackerClient, fetch_answer
from swarmcast.discovery.metatracker_protocol import (
    MAX_ANSWER_BYTES,
    MAX_ANSWER_STARTUP_NODES,
    MAX_ANSWER_TRACKERS,
    MetatrackerAnswer,
    MetatrackerError,
)
from tests.procs import free_port

HOST = "127.0.0.1"
INFO_HASH = bytes(range(20))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.sent = 0  # body bytes the handlers wrote
        self.handler: Handler | None = None
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        assert self.handler is not None
        return await self.handler(request)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mt"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    app = web.Application()
    app.router.add_get("/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, state.port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


async def fetch(server: Server, timeout: float = 2.0) -> MetatrackerAnswer:
    async with aiohttp.ClientSession() as session:
        return await fetch_answer(session, server.url, INFO_HASH, timeout=timeout)


async def test_an_endless_answer_is_cut_at_the_cap(server: Server) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(1000):  # 64 MB if nobody stops reading
            await response.write(chunk)
            server.sent += len(chunk)
        return response

    server.handler = endless
    with pytest.raises(MetatrackerError, match="more than"):
        await fetch(server)
    assert server.sent < 100 * MAX_ANSWER_BYTES  # we stopped reading (what is sent is bounded by socket buffers)


async def test_a_declared_huge_answer_is_refused_unread(server: Server) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{" + b" " * (MAX_ANSWER_BYTES * 2) + b"}", content_type="application/json")

    server.handler = huge
    with pytest.raises(MetatrackerError, match="bytes, more than"):
        await fetch(server)


async def test_a_server_that_never_answers_costs_one_timeout(server: Server) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)  # far past the client's timeout (and short enough for the server to shut down)
        return web.Response(text="{}")

    server.handler = silent
    started = time.monotonic()
    with pytest.raises(MetatrackerError, match="no answer within"):
        await fetch(server, timeout=0.5)
    assert time.monotonic() - started < 30  # bounded (generously: shared machines)


async def test_redirects_are_not_followed(server: Server) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://127.0.0.1:1/elsewhere")

    server.handler = redirect
    with pytest.raises(MetatrackerError, match="HTTP 302"):
        await fetch(server)
    assert len(server.requests) == 1


async def test_the_request_names_the_infohash(server: Server) -> None:
    async def good(request: web.Request) -> web.StreamResponse:
        return web.json_response({"trackers": ["http://127.0.0.1:6969/announce"], "interval": 60})

    server.handler = good
    answer = await fetch(server)
    assert answer.trackers == ("http://127.0.0.1:6969/announce",)
    assert server.requests == [f"/mt?infohash={INFO_HASH.hex()}"]


async def test_the_owner_gets_only_checked_and_capped_lists(server: Server) -> None:
    async def flood(request: web.Request) -> web.StreamResponse:
        body = {"trackers": [f"http://t{i}.example/a" for i in range(500)] + ["file:///etc/passwd"],
                "startup_nodes": [f"10.0.{i // 250}.{i % 250 + 1}:80" for i in range(1000)] + ["evil.example:80"],
                "interval": 0}  # fmt: skip
        return web.Response(body=json.dumps(body, separators=(",", ":")).encode()[:MAX_ANSWER_BYTES],
                            content_type="application/json")  # fmt: skip

    server.handler = flood
    answers: list[MetatrackerAnswer] = []
    client = MetatrackerClient([server.url], info_hash=INFO_HASH, on_answer=lambda url, a: answers.append(a))
    client.start()
    try:
        for _ in range(600):  # up to 30 s: shared machines
            if answers:
                break
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    assert len(answers) == 1  # the clamped interval (5 s) keeps it from asking again meanwhile
    assert len(answers[0].trackers) == MAX_ANSWER_TRACKERS
    assert len(answers[0].startup_nodes) == MAX_ANSWER_STARTUP_NODES
    assert answers[0].interval == 5.0


async def test_a_failing_metatracker_is_asked_with_backoff_and_close_ends_it(server: Server) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="no")

    server.handler = broken
    client = MetatrackerClient([server.url], info_hash=INFO_HASH, on_answer=lambda url, a: None)
    client.start()
    try:
        await asyncio.sleep(2.5)
        # First try at once, then after ~1 s, then ~2 s later: never a tight loop.
        assert 1 <= len(server.requests) <= 4
        (status,) = client.status()
        assert status.consecutive_failures == len(server.requests) and status.last_error == "answered HTTP 500"
    finally:
        await asyncio.wait_for(client.close(), 5)
    asked = len(server.requests)
    await asyncio.sleep(1.5)
    assert len(server.requests) == asked
