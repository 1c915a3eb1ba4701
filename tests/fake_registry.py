"""A small registry implementing just the CONTRACT shapes the registry client uses (docs/registry.md), in-process.

For the client's tests before (and beside) the real ``swarmcast registry``: nodes register, heartbeat, deregister
and are marked gone after ``timeout`` s without a heartbeat; sources post streams; engines read streams, their
transport files and peers. ``misbehave`` turns a route hostile (huge body, garbage, hang, 500) for the hostile tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.procs import LOOPBACK, free_port


@dataclass
class FakeRegistry:
    token: str = "test-token"
    heartbeat_interval: float = 1.0
    timeout: float = 4.0
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)
    streams: dict[str, dict[str, object]] = field(default_factory=dict)
    heartbeats: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # None | "huge" | "garbage" | "hang" | "500" | "lying-length" (every route) | "refuse-figures" (heartbeats)
    misbehave: str | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def sweep(self) -> None:
        now = time.time()
        for node in self.nodes.values():
            if node["state"] == "live" and now - float(node["last_seen"]) > self.timeout:  # type: ignore[arg-type]
                node["state"] = "gone"

    def live(self, role: str | None = None) -> list[dict[str, object]]:
        self.sweep()
        return [n for n in self.nodes.values() if n["state"] == "live" and (role is None or n["role"] == role)]

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode())

    def _find_stream(self, key: str) -> dict[str, object] | None:
        if key in self.streams:
            return self.streams[key]
        return next((s for s in self.streams.values() if s["name"] == key), None)

    @web.middleware
    async def _hostile(self, request: web.Request, handler: object) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        mode = self.misbehave
        if mode == "refuse-figures":
            return await handler(request)  # type: ignore[operator, no-any-return]
        if mode == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                for _ in range(4096):  # 256 MiB if anybody read it all
                    await response.write(b"[" * 65536)
            return response
        if mode == "lying-length":
            return web.Response(body=b"{" * 300_000, headers={"Content-Type": "application/json"})
        if mode == "garbage":
            return web.Response(status=201, body=b"\x00\xffnot json{{{", content_type="application/json")
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        return await handler(request)  # type: ignore[operator, no-any-return]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._hostile], client_max_size=1 << 20)
        app.router.add_post("/api/nodes", self.register)
        app.router.add_get("/api/nodes", self.list_nodes)
        app.router.add_post("/api/nodes/{node_id}/heartbeat", self.heartbeat)
        app.router.add_delete("/api/nodes/{node_id}", self.deregister)
        app.router.add_post("/api/streams", self.post_stream)
        app.router.add_get("/api/streams/{key}", self.get_stream)
        app.router.add_get("/api/streams/{key}/transport", self.get_transport)
        app.router.add_get("/api/streams/{key}/peers", self.get_peers)
        return app

    async def register(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "a write needs the token"}, status=401)
        body = await request.json()
        node_id = str(uuid.uuid4())
        self.nodes[node_id] = {**body, "node_id": node_id, "state": "live", "last_seen": time.time(), "figures": {}}
        return web.json_response({"node_id": node_id, "heartbeat_interval": self.heartbeat_interval,
                                  "timeout": self.timeout}, status=201)  # fmt: skip

    async def list_nodes(self, request: web.Request) -> web.Response:
        del request
        self.sweep()
        return web.json_response({"nodes": list(self.nodes.values())})

    async def heartbeat(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "a write needs the token"}, status=401)
        node = self.nodes.get(request.match_info["node_id"])
        if node is None:
            return web.json_response({"error": "unknown node"}, status=404)
        body = await request.json()
        if self.misbehave == "refuse-figures" and body["figures"]:
            return web.json_response({"error": "figures.delay_s: not a number in 0..1e+15"}, status=400)
        node.update(state="live", last_seen=time.time(), figures=body["figures"], content_ids=body["content_ids"])
        self.heartbeats.append((request.match_info["node_id"], body))
        return web.json_response({})

    async def deregister(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "a write needs the token"}, status=401)
        node = self.nodes.get(request.match_info["node_id"])
        if node is None:
            return web.json_response({"error": "unknown node"}, status=404)
        node["state"] = "left"
        return web.Response(status=204)

    async def post_stream(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "a write needs the token"}, status=401)
        body = await request.json()
        if body["node_id"] not in self.nodes:
            return web.json_response({"error": "unknown node"}, status=404)
        other = self._find_stream(body["name"])
        if other is not None and other["content_id"] != body["content_id"]:
            return web.json_response({"error": "name taken"}, status=409)
        self.streams[body["content_id"]] = body
        return web.json_response({}, status=201)

    def _peers(self, content_id: str) -> list[dict[str, object]]:
        return [{"role": n["role"], "address": n["address"]} for n in self.live()
                if n["role"] in ("source", "support", "start") and n["address"]
                and content_id in n.get("content_ids", [])]  # type: ignore[operator]  # fmt: skip

    async def get_stream(self, request: web.Request) -> web.Response:
        stream = self._find_stream(request.match_info["key"])
        if stream is None:
            return web.json_response({"error": "unknown stream"}, status=404)
        summary = {k: v for k, v in stream.items() if k not in ("transport", "node_id")}
        return web.json_response({**summary, "live": True, "nodes": self._peers(str(stream["content_id"]))})

    async def get_transport(self, request: web.Request) -> web.Response:
        stream = self._find_stream(request.match_info["key"])
        if stream is None:
            return web.json_response({"error": "unknown stream"}, status=404)
        return web.Response(body=base64.b64decode(str(stream["transport"])), content_type="application/octet-stream")

    async def get_peers(self, request: web.Request) -> web.Response:
        stream = self._find_stream(request.match_info["key"])
        if stream is None:
            return web.json_response({"error": "unknown stream"}, status=404)
        return web.json_response({"peers": self._peers(str(stream["content_id"]))})


@contextlib.asynccontextmanager
async def running(registry: FakeRegistry, port: int | None = None) -> AsyncIterator[FakeRegistry]:
    """Serve ``registry`` on loopback for the block (on ``port``, or a free one)."""
    registry.port = port or registry.port or free_port()
    runner = web.AppRunner(registry.app(), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, registry.port, reuse_address=True)
    await site.start()
    try:
        yield registry
    finally:
        await runner.cleanup()


class ThreadedRegistry:
    """``registry`` served from its own thread and loop, so a test that blocks (waiting for a process's port)
    does not hold up the nodes' requests; :meth:`stop` stops it early (as a registry process that is stopped)."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with running(self.registry):
            self._started.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake registry did not start")

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()


@contextlib.contextmanager
def threaded(registry: FakeRegistry) -> Iterator[FakeRegistry]:
    """Serve ``registry`` from a thread for the block (see ThreadedRegistry)."""
    server = ThreadedRegistry(registry)
    server.start()
    try:
        yield registry
    finally:
        server.stop()
