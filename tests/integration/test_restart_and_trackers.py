"""Source restarts (kill -9) and discovery by content id through a real opentracker."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from tests.conftest import OpenTrackerFactory
from tests.integration.chain import (
    HOST,
    decode_video,
    engine,
    match_pieces,
    node_pieces,
    read_stream,
    signal_source,
    source_node,
    source_pieces,
    support_node,
    wait_until,
)
from tests.procs import free_port


async def test_kill_9_and_restart_keeps_id_numbering_and_player(tmp_path: Path) -> None:
    port = free_port()
    with signal_source(tmp_path) as signal_url, engine(tmp_path) as api:
        with source_node(tmp_path, signal_url, port=port) as source:
            descriptor = source.descriptor()
            with support_node(tmp_path, source.transport_url) as support_port:
                url = f"{api}/ace/getstream?url=http://{HOST}:{support_port}/app/get_transport_file"
                player = asyncio.create_task(read_stream(url, 16.0))
                await asyncio.sleep(4.0)
                # The engine may take a piece straight from the source (it learns of it by PEX) that the support
                # node had not got when the source died: the source's own window, just before, has it.
                before_kill = await source_pieces(source)
                source.process.signal(signal.SIGKILL)
                source.process.kill()
                killed_window = await node_pieces(support_port, descriptor.content_id)
                await asyncio.sleep(1.0)
                with source_node(tmp_path, signal_url, port=port, log_name="source2.log") as restarted:
                    assert restarted.descriptor() == descriptor
                    stream = await player
                    after = await source_pieces(restarted)
                    relayed = await node_pieces(support_port, descriptor.content_id)
        assert min(after) > max(killed_window), "piece numbers must continue after the restart"
        # The support node's window slides on while the player reads, so the pieces the player began with are
        # in the windows taken at the kill, not necessarily in the one taken at the end.
        used = match_pieces(stream, before_kill | killed_window | relayed | after, allow_jumps=True)
        # The player rode through: video from before the kill, then from the restarted source.
        assert any(i < min(after) for i in used)
        assert any(i >= min(after) for i in used)
        rest = b"".join(after[i].data for i in used if i in after)
        assert len(decode_video(rest)) >= 25
        assert len(decode_video(stream)) >= 150


async def test_join_by_content_id_through_opentracker(
    tmp_path: Path, opentracker_factory: OpenTrackerFactory
) -> None:
    tracker = opentracker_factory([])
    with signal_source(tmp_path) as signal_url:
        # First start fixes the key and the descriptor (and so the content id) in the metadata directory.
        with source_node(tmp_path, signal_url, "--tracker", tracker.http_url, "--bitrate", "150000") as source:
            content_id = source.descriptor().content_id
        tracker.allow([content_id])
        with (
            source_node(tmp_path, signal_url, "--tracker", tracker.http_url, "--bitrate", "150000") as source,
            engine(tmp_path, "--tracker", tracker.udp_url) as api,
        ):
            assert source.descriptor().content_id == content_id
            stream = await read_stream(f"{api}/ace/getstream?id={content_id.hex()}", 5.0)
            assert len(decode_video(stream)) >= 80
            match_pieces(stream, await source_pieces(source))
            magnet = f"magnet:?xt=urn:btih:{content_id.hex()}&tr={tracker.http_url}"
            async with aiohttp.ClientSession() as session:
                params = {"magnet": magnet, "format": "json"}
                async with session.get(f"{api}/ace/getstream", params=params) as response:
                    assert (await response.json())["response"]["infohash"] == content_id.hex()


async def test_sigterm_says_goodbye_and_removes_pid_file(tmp_path: Path) -> None:
    from swarmcast.wire.messages import GoodbyeReason
    from tests.peerclient import TestPeer

    with signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url) as source:
        pid_file = tmp_path / f"acestream-{source.port}.pid"
        # The node binds its port, then writes the file: on a loaded machine the test can see the port first.
        await wait_until(pid_file.exists, 5.0)
        assert pid_file.read_text().strip() == str(source.process.pid)
        peer = await TestPeer.connect(HOST, source.port, source.descriptor().content_id)
        assert await peer.window() is not None
        source.process.signal(signal.SIGTERM)
        assert await peer.wait_closed(10.0)
        assert peer.closed is not None
        assert peer.closed.goodbye is GoodbyeReason.SHUTDOWN
        peer.close()
        assert source.process.popen.wait(10) == 0
        assert not pid_file.exists()
        log_line = (tmp_path / "source.log").read_text().splitlines()[0]
        date, thread, module, message = log_line.split("|", 3)
        assert len(date) == len("2026-11-20 11:03:08,162")
        assert thread == "MainThread"
        assert module.startswith("swarmcast")
        assert message


async def test_bad_flags_name_the_flag_and_value(tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "swarmcast.cli", *args], capture_output=True, timeout=30,
                              check=False, text=True)  # fmt: skip
        assert done.returncode == 2
        return done.stderr

    base = ["node", "source", "--source", "http://127.0.0.1:1/x", "--title", "t"]
    error = run(*base, "--category", "cooking")
    assert "--category" in error
    assert "'cooking'" in error
    assert "sport" in error  # the allowed list is shown
    assert "--live-cache-size" in run(*base, "--live-cache-size", "-5")
    assert "--bitrate" in run(*base, "--bitrate", "fast")
    assert "--download-from" in run("node", "support", "--url", "x", "--download-from", "nowhere")
    assert "--tracker" in run("engine", "--tracker", "ftp://x")
