"""Real node and engine processes with ``--registry`` against a small registry (tests/fake_registry.py): they
register, post the stream, heartbeat with figures and deregister on SIGTERM; an engine plays by registry name."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.fake_registry import FakeRegistry, threaded
from tests.integration.chain import HOST, decode_video, engine, read_stream, signal_source, source_node
from tests.procs import free_port, swarmcast_process

# The test signal's rate, given: the source listens at once instead of measuring its input first.
BITRATE = ("--bitrate", "125000")


async def until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_nodes_and_engine_register_and_engine_plays_by_name(tmp_path: Path) -> None:
    with threaded(FakeRegistry()) as registry:
        flags = ("--registry", registry.url, "--registry-token", registry.token)
        support_port = free_port()
        env = {**os.environ, "SWARMCAST_REGISTRY_NODE_TOKEN": registry.token}  # the token by environment, too
        with (
            signal_source(tmp_path) as signal_url,
            source_node(tmp_path, signal_url, *BITRATE, *flags, "--registry-name", "news-hd") as source,
            swarmcast_process(["node", "support", "--bind", HOST, "--port", str(support_port), "--url",
                               source.transport_url, "--pid-file-dir", str(tmp_path), "--registry", registry.url],
                              env=env, stderr_path=tmp_path / "support.log",
                              wait_port=(HOST, support_port)) as support,  # fmt: skip
            engine(tmp_path, "--registry", registry.url, "--registry-token", registry.token) as api,
        ):
            content_id = source.descriptor().infohash
            await until(lambda: len(registry.live()) == 3 and content_id in registry.streams)
            by_role = {str(n["role"]): n for n in registry.live()}
            assert by_role["source"]["address"] == f"{HOST}:{source.port}"
            assert by_role["support"]["address"] == f"{HOST}:{support_port}"
            assert by_role["support"]["content_ids"] == [content_id]
            assert registry.streams[content_id]["name"] == "news-hd"
            assert registry.streams[content_id]["title"] == "Test channel"
            # Played by its registry name alone: transport file and peers from the registry.
            stream = await read_stream(f"{api}/ace/getstream?id=news-hd", 5.0)
            assert len(decode_video(stream)) >= 50
            engine_node = by_role["engine"]
            await until(lambda: content_id in engine_node["content_ids"])  # type: ignore[operator]
            figures = engine_node["figures"]
            assert isinstance(figures, dict)
            assert {"cpu_percent", "rss_bytes", "upload_bps", "download_bps", "viewers"} <= set(figures)
            per = figures["streams"][content_id]
            assert per["startup_s"] is not None
            assert per["download_bps"] > 0
            source_figures = by_role["source"]["figures"]
            assert isinstance(source_figures, dict)
            assert source_figures["upload_bps"] > 0
            assert source_figures["rss_bytes"] > 1_000_000
            # SIGTERM: deregistered at once (state "left"), not after the heartbeat timeout.
            support.stop()
            assert by_role["support"]["state"] == "left"
            # An unknown name is a clear 400, not a lookup that hangs.
            async with aiohttp.ClientSession() as session, session.get(f"{api}/ace/getstream?id=nobody") as got:
                assert got.status == 400
                assert "no stream named 'nobody'" in (await got.json())["error"]


async def test_engine_plays_by_name_from_a_bootstrap_file(tmp_path: Path) -> None:
    with signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url, *BITRATE) as source:
        bootstrap = tmp_path / "streams.json"
        acelive = next(source.publish_dir.glob("*.acelive"))
        bootstrap.write_text(json.dumps({"streams": [
            {"name": "news", "transport_file": str(acelive), "peers": [f"{HOST}:{source.port}"]},
        ]}))  # fmt: skip
        with engine(tmp_path, "--bootstrap", str(bootstrap)) as api:
            stream = await read_stream(f"{api}/ace/getstream?id=news", 4.0)
            assert len(decode_video(stream)) >= 40
            # The content id works too, with no tracker: the file gave the descriptor and the peer.
            stream = await read_stream(f"{api}/ace/getstream?id={source.descriptor().infohash}", 2.0)
            assert len(stream) > 0
            # And the HLS output by name.
            timeout = aiohttp.ClientTimeout(total=60)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{api}/ace/manifest.m3u8?id=news") as got,
            ):
                assert got.status == 200, await got.text()
                assert (await got.text()).startswith("#EXTM3U")


def test_a_bad_bootstrap_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bootstrap = tmp_path / "streams.json"
    bootstrap.write_text(json.dumps({"streams": [{"name": "news", "transport": "!!"}]}))
    done = subprocess.run(
        [sys.executable, "-m", "swarmcast.cli", "engine", "--http-port", str(free_port()), "--port",
         str(free_port()), "--bind", HOST, "--pid-file-dir", str(tmp_path), "--bootstrap", str(bootstrap)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    expected = f"swarmcast engine: error: argument --bootstrap: {bootstrap}: streams[0].transport is not base64"
    assert lines[-1] == expected


async def test_broadcaster_and_its_rendition_nodes_register(tmp_path: Path) -> None:
    rtmp, http = free_port(), free_port()
    with threaded(FakeRegistry()) as registry:
        args = ["broadcaster", "--rtmp-addr", f"{HOST}:{rtmp}", "--http-addr", f"{HOST}:{http}",
                "--segment-duration", "1", "--p2p", "--p2p-port-base", str(free_port()), "--p2p-max-nodes", "2",
                "--publish-dir", str(tmp_path / "publish"), "--metadata-dir", str(tmp_path / "meta"),
                "--registry", registry.url, "--registry-token", registry.token]  # fmt: skip
        publish = ["testsrc", "--rtmp", f"rtmp://{HOST}:{rtmp}/hello_world", "--size", "320x180", "--fps", "15",
                   "--bitrate", "400k"]  # fmt: skip
        with (
            swarmcast_process(args, stderr_path=tmp_path / "broadcaster.log", wait_port=(HOST, http)),
            swarmcast_process(publish, stderr_path=tmp_path / "testsrc.log"),
            engine(tmp_path, "--registry", registry.url) as api,
        ):
            await until(lambda: {"hello_world-source", "hello_world"} <= {s["name"] for s in registry.streams.values()},
                        90)  # fmt: skip
            by_name = {s["name"]: s for s in registry.streams.values()}
            content_id = by_name["hello_world-source"]["content_id"]
            # The channel: a stream of its own, its renditions listed.
            renditions = by_name["hello_world"]["renditions"]
            assert isinstance(renditions, list)
            (rendition,) = renditions
            assert rendition["name"] == "source"
            assert rendition["content_id"] == content_id
            assert rendition["hls"] == f"http://{HOST}:{http}/stream/hello_world/source.m3u8"
            await until(lambda: any(content_id in n["content_ids"] for n in registry.live("broadcaster")))  # type: ignore[operator]
            (node,) = registry.live("broadcaster")
            assert node["address"] is None
            assert node["http"] == f"http://{HOST}:{http}"
            (source,) = registry.live("source")
            assert source["content_ids"] == [content_id]
            assert "test-token" not in (tmp_path / "meta" / "hello_world" / "source" / "node.log").read_text()
            played = await read_stream(f"{api}/ace/getstream?id=hello_world-source", 3.0)
            assert len(decode_video(played)) >= 15
            played = await read_stream(f"{api}/ace/getstream?id=hello_world", 2.0)  # the channel: its first rendition
            assert len(played) > 0
            timeout = aiohttp.ClientTimeout(total=60)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{api}/ace/manifest.m3u8?id=hello_world") as got,
            ):
                master = await got.text()
                assert got.status == 200, master
                assert "#EXT-X-STREAM-INF" in master
