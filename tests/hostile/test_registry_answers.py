"""A hostile or broken registry (huge bodies, a lying Content-Length, garbage JSON, a hang, 500s, gone) costs a
node or an engine log lines and bounded waits, never its memory, its shutdown or its players."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from pathlib import Path

import aiohttp
import pytest

from swarmcast.registry.bootstrap import LOOKUP_TIMEOUT, StreamDirectory
from swarmcast.registry.client import DEREGISTER_TIMEOUT, NodeReport, RegistryClient, RegistryEndpoint
from tests.fake_registry import FakeRegistry, ThreadedRegistry, running, threaded
from tests.integration.chain import HOST, decode_video, engine, signal_source, source_node
from tests.integration.timed_player import TimedStream, read_timed
from tests.procs import free_port, swarmcast_process

# The test signal's rate, given: the source listens at once instead of measuring its input first.
BITRATE = ("--bitrate", "125000")

MODES = ["huge", "lying-length", "garbage", "hang", "500"]


def report() -> NodeReport:
    return NodeReport(role="support", address="127.0.0.1:8621", http=None, version="t", content_ids=("a" * 40,))


async def until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("mode", MODES)
async def test_client_survives_a_hostile_registry_and_closes_in_bounded_time(mode: str) -> None:
    registry = FakeRegistry(misbehave=mode)
    async with running(registry):
        client = RegistryClient(RegistryEndpoint(registry.url, registry.token), report, dict)
        tracemalloc.start()
        try:
            client.start()
            await until(lambda: client.schedule.failures >= 1)
            assert client.node_id is None
            assert client.last_error is not None
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            started = time.monotonic()
            await client.close()
        assert time.monotonic() - started <= DEREGISTER_TIMEOUT + 5.0  # the DELETE of a node never registered: none
        assert peak < 16 * 1024 * 1024, f"reading the registry's answer took {peak} bytes"
        # Backing off, not hammering: the second attempt waits at least a second after the first.
        assert len(registry.requests) <= 3


async def test_a_registry_that_hangs_on_delete_does_not_hold_up_the_stop() -> None:
    registry = FakeRegistry()
    async with running(registry):
        client = RegistryClient(RegistryEndpoint(registry.url, registry.token), report, dict)
        stop = asyncio.Event()
        client.start(stop)
        await until(lambda: client.heartbeats >= 1)
        registry.misbehave = "hang"
        started = time.monotonic()
        stop.set()
        await client.close()
        assert time.monotonic() - started <= DEREGISTER_TIMEOUT + 5.0


@pytest.mark.parametrize("mode", MODES)
async def test_lookups_against_a_hostile_registry_are_bounded(mode: str) -> None:
    registry = FakeRegistry(misbehave=mode)
    async with running(registry):
        directory = StreamDirectory(RegistryEndpoint(registry.url))
        started = time.monotonic()
        assert await directory.hint("news") is None
        assert time.monotonic() - started <= LOOKUP_TIMEOUT + 3.0
        assert directory.failures == 1
        assert await directory.hint("news") is None  # a miss is cached: not asked again at once
        assert directory.lookups == 1


async def test_engine_with_a_hanging_registry_answers_and_plays_by_url(tmp_path: Path) -> None:
    with (
        threaded(FakeRegistry(misbehave="hang")) as registry, signal_source(tmp_path) as signal_url,
        source_node(tmp_path, signal_url, *BITRATE) as source,
        engine(tmp_path, "--registry", registry.url, "--registry-token", registry.token) as api,
    ):
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            started = time.monotonic()
            async with session.get(f"{api}/ace/getstream?id=news") as got:
                assert got.status == 400
            assert time.monotonic() - started <= LOOKUP_TIMEOUT + 10.0
            async with session.get(f"{api}/webui/api/service?method=get_version") as got:
                assert got.status == 200
        stream = TimedStream()
        await read_timed(f"{api}/ace/getstream?url={source.transport_url.replace('?format=raw', '')}", 4.0,
                         stream)  # fmt: skip
        assert stream.error is None
        assert len(decode_video(stream.data)) >= 40


async def test_stopping_the_registry_does_not_interrupt_a_player(tmp_path: Path) -> None:
    """The engine plays by registry name, then the registry stops (the nodes' heartbeats fail): the player reads
    on, and a node still stops cleanly."""
    support_port = free_port()
    env = {**os.environ, "SWARMCAST_REGISTRY_NODE_TOKEN": "test-token"}
    server = ThreadedRegistry(registry := FakeRegistry())
    server.start()
    flags = ("--registry", registry.url)
    try:
        with (
            signal_source(tmp_path) as signal_url,
            source_node(tmp_path, signal_url, *BITRATE, *flags, "--registry-token", registry.token) as source,
            swarmcast_process(["node", "support", "--bind", HOST, "--port", str(support_port), "--url",
                               source.transport_url, "--pid-file-dir", str(tmp_path), *flags], env=env,
                              stderr_path=tmp_path / "support.log", wait_port=(HOST, support_port)) as support,
            engine(tmp_path, *flags, "--registry-token", registry.token) as api,
        ):  # fmt: skip
            content_id = source.descriptor().infohash
            await until(lambda: len(registry.live()) == 3 and content_id in registry.streams)
            stream = TimedStream()
            player = asyncio.create_task(read_timed(f"{api}/ace/getstream?id=test", 10.0, stream))
            await until(lambda: len(stream.data) > 100_000, timeout=30)
            await asyncio.to_thread(server.stop)
            stopped_at = time.time()
            await player
            assert stream.error is None, stream.error
            after = stream.bytes_after(stopped_at + 1.0)
            assert len(decode_video(after)) >= 50, "the player stalled when the registry went away"
            assert support.stop() == 0  # its DELETE fails fast: a clean exit all the same
            assert "retrying with backoff" in support.stderr_tail() or "deregister" in support.stderr_tail()
    finally:
        server.stop()
