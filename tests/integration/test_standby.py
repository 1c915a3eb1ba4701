"""Hot standby with real processes: testsrc -> primary + standby -> support -> engine -> player, kill -9 of the
primary while the player reads. The standby takes over signing with the same content id, numbering continues
after the primary's last piece, the first piece it signs is DISCONTINUITY + RANDOM_ACCESS, and the player keeps
its connection and decodes video from the standby's pieces. The support node was given only the primary's
transport file: it found the standby by PEX from the primary."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import aiohttp

from swarmcast.wire.messages import PieceFlags
from tests.integration.chain import (
    HOST,
    decode_video,
    engine,
    match_pieces,
    node_pieces,
    signal_source,
    source_args,
    source_node,
    support_node,
)
from tests.integration.timed_player import TimedStream, read_timed, wait_for
from tests.procs import free_port, swarmcast_process


async def _standby_status(port: int) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{HOST}:{port}/app/standby") as response:
        result: dict[str, object] = (await response.json())["result"]
        return result


async def test_standby_takes_over_when_the_primary_is_killed(tmp_path: Path) -> None:
    stream = TimedStream()
    with signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url) as primary:
        descriptor = primary.descriptor()
        (tmp_path / "standby-meta").mkdir()
        shutil.copy(primary.metadata_dir / "test.sauth", tmp_path / "standby-meta" / "test.sauth")
        standby_port = free_port()
        args = source_args(tmp_path, signal_url, standby_port, "--standby-for", f"{HOST}:{primary.port}",
                           "--standby-takeover-after", "1", "--metadata-dir", str(tmp_path / "standby-meta"),
                           "--publish-dir", str(tmp_path / "standby-publish"))  # fmt: skip
        with (
            swarmcast_process(args, stderr_path=tmp_path / "standby.log", wait_port=(HOST, standby_port)),
            support_node(tmp_path, primary.transport_url) as support_port,
            engine(tmp_path) as api,
        ):
            # Same descriptor, so the same content id, whatever bitrate the standby would have measured.
            published = (tmp_path / "standby-publish" / "test.acelive").read_bytes()
            assert published == descriptor.encode()
            assert (await _standby_status(standby_port))["state"] == "following"
            # The standby reads the input too, and its monitor says so (the ingest loop keeps its InputStatus).
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    async with session.get(f"http://{HOST}:{standby_port}/app/monitor") as response:
                        source_status = (await response.json())["source_status"]
                    if source_status["connected"]:
                        break
                    await asyncio.sleep(0.2)
            assert source_status["connected"] and source_status["bytes_received"] > 0, source_status
            url = f"{api}/ace/getstream?url=http://{HOST}:{support_port}/app/get_transport_file"
            player = asyncio.create_task(read_timed(url, 16.0, stream))
            await wait_for(lambda: len(stream.chunks) > 20, 20.0, "the player's first pieces")
            await asyncio.sleep(3.0)
            before_kill = await node_pieces(support_port, descriptor.content_id)
            primary.process.signal(signal.SIGKILL)
            primary.process.kill()
            await player
            status = await _standby_status(standby_port)
            standby_pieces = await node_pieces(standby_port, descriptor.content_id)
            relayed = await node_pieces(support_port, descriptor.content_id)
    assert stream.error is None, f"the player lost its stream: {stream.error}"
    assert status["state"] == "active"
    assert status["takeovers"] == 1
    first_signed = status["first_signed"]
    assert isinstance(first_signed, int)
    assert first_signed > max(before_kill), "the standby continues after the primary's pieces"
    assert first_signed - 1 in relayed | standby_pieces, "numbering continues without a hole"
    assert standby_pieces[first_signed].flags == PieceFlags.DISCONTINUITY | PieceFlags.RANDOM_ACCESS
    # The support node relays the standby's pieces (same signatures: same key, same content id).
    assert relayed[first_signed].signature == standby_pieces[first_signed].signature
    used = match_pieces(stream.data, relayed | standby_pieces, allow_jumps=True)
    assert any(i < first_signed for i in used) and any(i >= first_signed for i in used)
    taken_over = b"".join(standby_pieces[i].data for i in used if i >= first_signed and i in standby_pieces)
    assert len(decode_video(taken_over)) >= 50, "video decodes from the standby's pieces"


def _standby_args(tmp: Path, signal_url: str, port: int, primary_port: int) -> list[str]:
    return source_args(tmp, signal_url, port, "--standby-for", f"{HOST}:{primary_port}",
                       "--standby-takeover-after", "1", "--metadata-dir", str(tmp / "standby-meta"),
                       "--publish-dir", str(tmp / "standby-publish"))  # fmt: skip


async def _wait_for_state(port: int, state: str, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status = await _standby_status(port)
        if status["state"] == state or time.monotonic() >= deadline:
            assert status["state"] == state, f"the standby did not become {state}: {status}"
            return status
        await asyncio.sleep(0.2)


async def test_standby_yields_to_a_restarted_primary_that_signs_ahead(tmp_path: Path) -> None:
    port = free_port()
    with signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url, port=port) as primary:
        (tmp_path / "standby-meta").mkdir()
        shutil.copy(primary.metadata_dir / "test.sauth", tmp_path / "standby-meta" / "test.sauth")
        standby_port = free_port()
        args = _standby_args(tmp_path, signal_url, standby_port, port)
        with swarmcast_process(args, stderr_path=tmp_path / "standby.log", wait_port=(HOST, standby_port)):
            await asyncio.sleep(2.0)
            # While following, the standby's own .restart already reserves numbers past the primary's.
            following = await _standby_status(standby_port)
            assert following["state"] == "following"
            assert int((tmp_path / "standby-meta" / "test.restart").read_text()) > 0
            primary.process.signal(signal.SIGKILL)
            primary.process.kill()
            active = await _wait_for_state(standby_port, "active")
            assert active["takeovers"] == 1
            # The primary restarts from its .restart reservation, ahead of what the standby signs.
            with source_node(tmp_path, signal_url, port=port, log_name="primary2.log"):
                following = await _wait_for_state(standby_port, "following")
                assert following["yields"] == 1
                signed_until = following["next_index"]
                await asyncio.sleep(1.0)
                assert (await _standby_status(standby_port))["next_index"] == signed_until, "it stopped signing"


async def test_standby_with_another_key_refuses_to_serve(tmp_path: Path) -> None:
    from swarmcast.transport import load_or_create_key

    # The primary needs no input to publish its transport file when the bitrate is given.
    with source_node(tmp_path, f"http://{HOST}:1/none.ts", "--bitrate", "150000") as primary:
        (tmp_path / "standby-meta").mkdir()
        load_or_create_key(tmp_path / "standby-meta" / "test.sauth")
        args = _standby_args(tmp_path, f"http://{HOST}:1/none.ts", free_port(), primary.port)
        with swarmcast_process(args, stderr_path=tmp_path / "standby.log") as standby:
            code = standby.popen.wait(30)
        assert code == 2
        assert "broadcast key" in standby.stderr_tail()


async def test_roles_swap_when_the_old_primary_returns_as_standby_of_the_acting_one(tmp_path: Path) -> None:
    port = free_port()
    standby_port = free_port()
    with signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url, port=port) as primary:
        (tmp_path / "standby-meta").mkdir()
        shutil.copy(primary.metadata_dir / "test.sauth", tmp_path / "standby-meta" / "test.sauth")
        args = _standby_args(tmp_path, signal_url, standby_port, port)
        acting = swarmcast_process(args, stderr_path=tmp_path / "standby.log", wait_port=(HOST, standby_port))
        with acting as acting_process:
            await asyncio.sleep(2.0)
            primary.process.signal(signal.SIGKILL)
            primary.process.kill()
            await _wait_for_state(standby_port, "active")
            # The old primary comes back as the standby of the acting node, with its own metadata.
            back = source_args(tmp_path, signal_url, port, "--standby-for", f"{HOST}:{standby_port}",
                               "--standby-takeover-after", "1")  # fmt: skip
            with swarmcast_process(back, stderr_path=tmp_path / "back.log", wait_port=(HOST, port)):
                await _wait_for_state(port, "following")
                await asyncio.sleep(3.0)
                assert (await _standby_status(port))["signed"] == 0, "it never signs beside the acting node"
                still = await _standby_status(standby_port)
                assert still["state"] == "active"
                assert still["yields"] == 0
                # And it is a standby like any other: the acting node dies, it takes over.
                acting_process.signal(signal.SIGKILL)
                acting_process.kill()
                took_over = await _wait_for_state(port, "active")
                assert isinstance(took_over["first_signed"], int)
                assert isinstance(still["next_index"], int)
                assert took_over["first_signed"] >= still["next_index"], "numbering goes on, never back"
