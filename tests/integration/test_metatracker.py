"""Metatracker and start nodes with real processes on loopback.

A support node stands in for a start node (it serves whoever connects, which is what an engine needs from one); the
engines read the transport file from disk, so the start node and the metatracker's tracker are their only ways in.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

from swarmcast.discovery.tracker_client import announce
from swarmcast.discovery.tracker_protocol import AnnounceEvent, AnnounceRequest
from tests.conftest import OpenTrackerFactory
from tests.integration.chain import HOST, decode_video, engine, read_stream, signal_source, source_node, support_node
from tests.procs import free_port, swarmcast_process


async def tracker_lists(tracker_url: str, content_id: bytes, port: int, timeout: float = 30.0) -> bool:
    """Whether the tracker lists HOST:port for the broadcast, asking until it does or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        request = AnnounceRequest(content_id, b"-TEST00-" + secrets.token_bytes(12), 1, 0, 0, 1,
                                  AnnounceEvent.NONE, 50)  # fmt: skip
        response = await announce(tracker_url, request, timeout=5.0)
        if (HOST, port) in response.peers:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as r:
        return r.status, await r.json(content_type=None)


async def node_uploaded(port: int) -> int:
    status, body = await get_json(f"http://{HOST}:{port}/app/stat")
    assert status == 200
    result = body["result"]
    assert isinstance(result, dict)
    return int(result["uploaded"])


async def wait_for_log(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_a_metatracker_started_after_the_source_adds_a_tracker_and_a_start_node_an_engine_uses(
    tmp_path: Path, opentracker_factory: OpenTrackerFactory
) -> None:
    metatracker_port = free_port()
    metatracker_url = f"http://{HOST}:{metatracker_port}/mt"
    tracker = opentracker_factory([])
    with (
        signal_source(tmp_path) as signal_url,
        # Nothing answers at the metatracker's address yet: the source keeps asking, with backoff.
        source_node(tmp_path, signal_url, "--bitrate", "150000", "--skip-internal-tracker",
                    "--metatracker", metatracker_url) as source,  # fmt: skip
    ):
        descriptor = source.descriptor()
        assert descriptor.metatrackers == (metatracker_url,) and descriptor.trackers == ()
        content_id = descriptor.content_id
        tracker.allow([content_id])
        with support_node(tmp_path, source.transport_url, name="startnode") as start_port:
            config = tmp_path / "metatracker.json"
            config.write_text(json.dumps({"default": {"trackers": [tracker.http_url],
                                                      "startup_nodes": [f"{HOST}:{start_port}"], "interval": 5}}))
            with swarmcast_process(["metatracker", "--bind", HOST, "--port", str(metatracker_port), "--config",
                                    str(config)], stderr_path=tmp_path / "metatracker.log",
                                   wait_port=(HOST, metatracker_port)):  # fmt: skip
                engine_port = free_port()
                transport_file = next(source.publish_dir.glob("*.acelive"))
                with engine(tmp_path, "--allow-local-transport-files", p2p_port=engine_port) as api:
                    url = f"{api}/ace/getstream?url={quote(str(transport_file))}"
                    stream = await read_stream(url, 4.0)
                    assert len(decode_video(stream)) >= 50
                    # The engine dialled the start node the metatracker named, and the start node served it.
                    assert await wait_for_log(tmp_path / "engine.log", f"start nodes for {descriptor.infohash}: "
                                              f"{HOST}:{start_port}", 5.0)  # fmt: skip
                    assert await node_uploaded(start_port) > 0
                    # It announced to the tracker the metatracker named (none is in the transport file).
                    assert await tracker_lists(tracker.http_url, content_id, engine_port)
                    # And the source, running since before the metatracker existed, announces there too now.
                    assert await tracker_lists(tracker.http_url, content_id, source.port)
                    assert "added tracker(s)" in (tmp_path / "source.log").read_text()
                    # The running engine asks again every interval: an edit reaches it with no restart.
                    other_node = f"127.0.0.5:{free_port()}"
                    config.write_text(json.dumps({"default": {"trackers": [tracker.http_url, tracker.udp_url],
                                                              "startup_nodes": [other_node], "interval": 5}}))
                    log = tmp_path / "engine.log"
                    assert await wait_for_log(log, f"added tracker(s) {tracker.udp_url}", 20.0)
                    assert await wait_for_log(log, f"start nodes for {descriptor.infohash}: {other_node}", 5.0)


async def test_startup_node_flag_is_written_into_the_transport_file_and_used_by_an_engine(tmp_path: Path) -> None:
    start_port = free_port()
    with (
        signal_source(tmp_path) as signal_url,
        source_node(tmp_path, signal_url, "--bitrate", "150000", "--startup-node", f"{HOST}:{start_port}") as source,
    ):
        descriptor = source.descriptor()
        assert descriptor.startup_nodes == ((HOST, start_port),)
        transport_file = next(source.publish_dir.glob("*.acelive"))
        with (
            support_node(tmp_path, source.transport_url, name="startnode", port=start_port),
            engine(tmp_path, "--allow-local-transport-files") as api,
        ):
            stream = await read_stream(f"{api}/ace/getstream?url={quote(str(transport_file))}", 4.0)
            assert len(decode_video(stream)) >= 50
            assert await node_uploaded(start_port) > 0


async def test_metatracker_server_answers_reloads_and_refuses(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mt.json"
    infohash = "ab" * 20
    config.write_text(json.dumps({"default": {"startup_nodes": ["127.0.0.2:8621"], "interval": 60},
                                  infohash: {"trackers": ["udp://127.0.0.1:6969"]}}))  # fmt: skip
    args = ["metatracker", "--bind", HOST, "--port", str(port), "--config", str(config), "--poll-interval", "0.2"]
    with swarmcast_process(args, stderr_path=tmp_path / "mt.log", wait_port=(HOST, port)):
        base = f"http://{HOST}:{port}/any/path"
        assert await get_json(f"{base}?infohash={infohash.upper()}") == (200, {
            "trackers": ["udp://127.0.0.1:6969"], "startup_nodes": ["127.0.0.2:8621"], "interval": 60})  # fmt: skip
        assert await get_json(f"{base}?infohash={'cd' * 20}") == (200, {
            "trackers": [], "startup_nodes": ["127.0.0.2:8621"], "interval": 60})  # fmt: skip
        for query in ("", "?infohash=", "?infohash=xyz", f"?infohash={infohash}&infohash={infohash}"):
            status, body = await get_json(f"{base}{query}")
            assert status == 400 and "infohash" in str(body["error"])
        # Edited in place: the next answers follow the file, with no restart.
        config.write_text(json.dumps({"default": {"startup_nodes": ["127.0.0.3:7000"]}}))
        deadline = time.monotonic() + 10
        while (await get_json(f"{base}?infohash={infohash}"))[1]["startup_nodes"] != ["127.0.0.3:7000"]:
            assert time.monotonic() < deadline, "the changed config was not picked up"
            await asyncio.sleep(0.1)
        # A broken edit is logged and the last good config stays in effect.
        config.write_text('{"default": {"startup_nodes": ["nonsense"]}}')
        assert await wait_for_log(tmp_path / "mt.log", "'default.startup_nodes[0]' = 'nonsense'", 10.0)
        assert (await get_json(f"{base}?infohash={infohash}"))[1]["startup_nodes"] == ["127.0.0.3:7000"]

        # Refusals at start: one line naming the key and value, or the port, exit 2.
        config.write_text('{"default": {"interval": 0.5}}')
        bad = _run(["metatracker", "--port", str(free_port()), "--config", str(config)])
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines() == [
            f"swarmcast metatracker: error: --config {config}: config key 'default.interval' = 0.5 is not a number "
            "of seconds in 5..3600"]  # fmt: skip
        config.write_text("{}")
        busy = _run(["metatracker", "--bind", HOST, "--port", str(port), "--config", str(config)])
        assert busy.returncode == 2
        assert busy.stderr.strip().splitlines()[-1] == (
            f"swarmcast metatracker: error: --port {port}: cannot listen on {HOST}:{port}: already in use")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmcast.cli", *args], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
