"""Issue 11's network end to end with the real ``swarmcast registry``: a source, two support nodes and three
engines with ``--registry`` show up on /api/nodes, /api/streams and the HTML pages; SIGKILL marks a support node
gone within the heartbeat timeout, SIGTERM removes it at once; the engines play by registry name alone; stopping
the registry does not interrupt the players."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.chain import HOST, decode_video, signal_source, source_node
from tests.integration.timed_player import TimedStream, read_timed
from tests.procs import SwarmcastProcess, free_port, swarmcast_process

# The test signal's rate, given: the source listens at once instead of measuring its input first.
BITRATE = ("--bitrate", "125000")

TOKEN = "e2e-registry-token"  # the admin token: nobody here is given it
NODE_TOKEN = "e2e-registry-node-token"  # what the nodes and engines register with
HEARTBEAT_TIMEOUT = 8.0  # --heartbeat-timeout of the registry under test (heartbeats every 5 s)
# Every process is on 127.0.0.1: a node takes 4 peers per address by default (a household NAT), fewer than the
# five peers each node has here.
PER_IP = ("--max-peers-per-ip", "16")


@contextlib.contextmanager
def registry_process(tmp: Path, port: int) -> Iterator[SwarmcastProcess]:
    args = ["registry", "--bind", HOST, "--port", str(port), "--state-dir", str(tmp / "registry"),
            "--token", TOKEN, "--node-token", NODE_TOKEN, "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "registry.log", wait_port=(HOST, port)) as process:
        yield process


@contextlib.contextmanager
def support(tmp: Path, url: str, name: str, registry: str) -> Iterator[tuple[SwarmcastProcess, int]]:
    """Started, not waited for (the test starts its processes together, then waits for their ports)."""
    port = free_port()
    env = {**os.environ, "SWARMCAST_REGISTRY_NODE_TOKEN": NODE_TOKEN}  # the token by environment: off the command line
    args = ["node", "support", "--bind", HOST, "--port", str(port), "--url", url, "--pid-file-dir", str(tmp),
            "--registry", registry, *PER_IP]  # fmt: skip
    with swarmcast_process(args, env=env, stderr_path=tmp / f"{name}.log") as process:
        yield process, port


@contextlib.contextmanager
def engine(tmp: Path, registry: str, name: str) -> Iterator[tuple[SwarmcastProcess, int]]:
    http_port = free_port()
    args = ["engine", "--http-port", str(http_port), "--port", str(free_port()), "--bind", HOST, "--pid-file-dir",
            str(tmp), "--startup-timeout", "20", "--registry", registry, "--registry-token", NODE_TOKEN,
            *PER_IP]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / f"{name}.log") as process:
        yield process, http_port


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as got:
        assert got.status == 200, f"{url}: {got.status} {await got.text()}"
        return await got.json()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as got:
        assert got.status == 200, f"{url}: {got.status}"
        return await got.text()


async def until(check: Any, timeout: float = 40.0) -> Any:
    """Poll the async ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"condition not met in {timeout} s (last: {last!r})")


@pytest.mark.timeout(175)  # eight processes started together on a shared machine
async def test_network_registers_gone_left_play_by_name_and_registry_stop(tmp_path: Path) -> None:
    port = free_port()
    registry = f"http://{HOST}:{port}"
    flags = ("--registry", registry, "--registry-token", NODE_TOKEN)
    with (
        registry_process(tmp_path, port) as registry_proc,
        signal_source(tmp_path) as signal_url,
        source_node(tmp_path, signal_url, *BITRATE, *flags, *PER_IP, "--registry-name", "news") as source,
        support(tmp_path, source.transport_url, "support1", registry) as (support1, port1),
        support(tmp_path, source.transport_url, "support2", registry) as (support2, port2),
        engine(tmp_path, registry, "engine1") as (engine1, http1),
        engine(tmp_path, registry, "engine2") as (engine2, http2),
        engine(tmp_path, registry, "engine3") as (engine3, http3),
    ):
        for process, listen in ((support1, port1), (support2, port2), (engine1, http1), (engine2, http2),
                                (engine3, http3)):  # fmt: skip
            process.wait_for_port(HOST, listen, timeout=100)
        api1, api2, api3 = (f"http://{HOST}:{p}" for p in (http1, http2, http3))
        content_id = source.descriptor().infohash

        async def live_nodes() -> dict[str, list[dict[str, Any]]] | None:
            nodes = (await get_json(f"{registry}/api/nodes"))["nodes"]
            by_role: dict[str, list[dict[str, Any]]] = {}
            for node in nodes:
                if node["state"] == "live":
                    by_role.setdefault(node["role"], []).append(node)
            counts = {role: len(items) for role, items in by_role.items()}
            return by_role if counts == {"source": 1, "support": 2, "engine": 3} else None

        by_role = await until(live_nodes)
        print("live nodes:", {role: [n["address"] for n in items] for role, items in by_role.items()})
        assert {n["address"] for n in by_role["support"]} == {f"{HOST}:{port1}", f"{HOST}:{port2}"}
        assert by_role["source"][0]["address"] == f"{HOST}:{source.port}"

        # Each engine plays the stream by its registry name alone (transport file and peers from the registry).
        streams = [TimedStream() for _ in range(3)]
        players = [asyncio.create_task(read_timed(f"{api}/ace/getstream?id=news", 120.0, stream))
                   for api, stream in zip((api1, api2, api3), streams, strict=True)]  # fmt: skip
        try:
            async def on_stream() -> dict[str, Any] | None:
                listed = (await get_json(f"{registry}/api/streams"))["streams"]
                mine = [s for s in listed if s["content_id"] == content_id]
                ok = mine and mine[0]["nodes"].get("engine") == 3 and mine[0]["viewers"] >= 3
                return mine[0] if ok else None

            stream_entry = await until(on_stream)
            print("stream:", {k: stream_entry[k] for k in ("name", "title", "live", "viewers", "nodes")})
            assert stream_entry["name"] == "news"
            assert stream_entry["live"] is True
            assert stream_entry["nodes"]["source"] == 1
            assert stream_entry["nodes"]["support"] == 2
            detail = await get_json(f"{registry}/api/streams/news")
            assert detail["content_id"] == content_id
            peers = (await get_json(f"{registry}/api/streams/{content_id}/peers"))["peers"]
            assert {p["address"] for p in peers} >= {f"{HOST}:{port1}", f"{HOST}:{port2}"}
            # The same on the HTML pages: the stream list, the stream's page with its nodes, a node's page.
            assert "Test channel" in await get_text(f"{registry}/")
            page = await get_text(f"{registry}/streams/news")
            assert all(f"{HOST}:{p}" in page for p in (source.port, port1, port2))
            engine_id = by_role["engine"][0]["node_id"]
            assert by_role["engine"][0]["address"] in await get_text(f"{registry}/nodes/{engine_id}")

            # SIGKILL: no goodbye; the registry marks the node gone once it misses heartbeats for the timeout.
            id1 = next(n["node_id"] for n in by_role["support"] if n["address"] == f"{HOST}:{port1}")
            killed_at = time.monotonic()
            support1.kill()

            async def gone() -> bool:
                return bool((await get_json(f"{registry}/api/nodes/{id1}"))["state"] == "gone")

            await until(gone, timeout=HEARTBEAT_TIMEOUT + 20)
            print(f"SIGKILLed support node gone after {time.monotonic() - killed_at:.1f} s "
                  f"(heartbeat timeout {HEARTBEAT_TIMEOUT:g} s)")  # fmt: skip

            # SIGTERM: the node deregisters as it stops; "left" as soon as it has exited.
            id2 = next(n["node_id"] for n in by_role["support"] if n["address"] == f"{HOST}:{port2}")
            assert support2.stop() == 0
            state = (await get_json(f"{registry}/api/nodes/{id2}"))["state"]
            print("SIGTERMed support node state right after exit:", state)
            assert state == "left"

            # The registry stops while the players play: they read on.
            assert registry_proc.stop() == 0
            stopped_at = time.time()

            async def read_on() -> bool:
                return all(len(s.bytes_after(stopped_at + 1.0)) >= 400_000 or s.error for s in streams)

            await until(read_on)
            assert not any(player.done() for player in players), [s.error for s in streams]
        finally:
            for player in players:
                player.cancel()
            await asyncio.gather(*players, return_exceptions=True)
        for stream in streams:
            assert stream.error is None, stream.error
            after = decode_video(stream.bytes_after(stopped_at + 1.0))
            print(f"player: {len(decode_video(stream.data))} frames, {len(after)} after the registry stopped")
            assert len(after) >= 25, "a player stalled when the registry stopped"
