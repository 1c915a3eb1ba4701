"""End to end: testsrc -> source -> support -> engine -> players, all real processes on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.integration.chain import (
    decode_video,
    engine,
    match_pieces,
    read_stream,
    signal_source,
    source_node,
    source_pieces,
    support_node,
)
from tests.procs import free_port


async def test_chain_delivers_source_pieces_byte_identical(tmp_path: Path) -> None:
    support_port = free_port()
    with (
        signal_source(tmp_path) as signal_url,
        # The source grants the support node its status (a credential); the handshake flag alone gets nothing.
        source_node(tmp_path, signal_url, "--support-node", f"127.0.0.1:{support_port}") as source,
        support_node(tmp_path, source.transport_url, "--download-from", f"127.0.0.1:{source.port}",
                     port=support_port),
        engine(tmp_path) as api,
    ):
        url = f"{api}/ace/getstream?url=http://127.0.0.1:{support_port}/app/get_transport_file%3Fformat%3Draw"
        stream = await read_stream(url, 6.0)
        frames = decode_video(stream)
        assert len(frames) >= 5 * 20, f"only {len(frames)} frames decoded"
        assert frames[0].key_frame, "the stream must start at a random-access point"
        assert (frames[0].width, frames[0].height) == (320, 180)
        used = match_pieces(stream, await source_pieces(source))
        assert len(used) > 10
        async with aiohttp.ClientSession() as session:
            # The stream is live: read the receiver's counters before the sender's, so the sender's are not older.
            async with session.get(f"{api}/app/stat") as response:
                (viewer,) = (await response.json())["result"]
            async with session.get(f"http://127.0.0.1:{support_port}/app/stat") as response:
                support = (await response.json())["result"]
            async with session.get(f"http://127.0.0.1:{source.port}/app/stat") as response:
                seeded = (await response.json())["result"]
        # The viewer's only peers are the broadcaster's (it learns the source from the support node by PEX);
        # the support node, told --download-from the source, took everything from it.
        assert viewer["downloaded"] >= len(stream)
        assert viewer["downloaded_from_seeders"] == viewer["downloaded"]
        assert support["downloaded_from_source"] == support["downloaded"] > 0
        assert support["uploaded"] + viewer["downloaded_from_source"] >= viewer["downloaded"]
        assert seeded["uploaded"] >= support["downloaded"]
        assert f"127.0.0.1:{support_port}" in seeded["support_nodes"]
        assert 0 < seeded["payload_sent"] < seeded["bytes_sent"]


async def test_two_players_and_json_api(tmp_path: Path) -> None:
    with (
        signal_source(tmp_path) as signal_url,
        source_node(tmp_path, signal_url) as source,
        engine(tmp_path) as api,
    ):
        content_id = source.descriptor().infohash
        get = f"{api}/ace/getstream?url={source.transport_url.replace('?format=raw', '')}"
        async with aiohttp.ClientSession() as session, session.get(get + "&format=json") as response:
            body = await response.json()
        assert body["error"] is None
        info = body["response"]
        assert info["infohash"] == content_id
        assert info["is_live"] == 1
        first, second = await asyncio.gather(
            read_stream(info["playback_url"], 5.0), read_stream(f"{api}/ace/getstream?id={content_id}", 5.0)
        )
        pieces = await source_pieces(source)
        for stream in (first, second):
            assert len(decode_video(stream)) >= 80
            match_pieces(stream, pieces)
        async with aiohttp.ClientSession() as session:
            async with session.get(info["stat_url"]) as response:
                stat = (await response.json())["response"]
            assert stat["status"] == "dl"
            assert stat["peers"] >= 1
            assert stat["downloaded"] > 0
            async with session.get(info["command_url"] + "?method=stop") as response:
                assert (await response.json())["response"] == "ok"
            async with session.get(info["stat_url"]) as response:
                assert response.status == 404


async def test_unknown_broadcast_answers_an_error_in_bounded_time(tmp_path: Path) -> None:
    with engine(tmp_path, "--startup-timeout", "3") as api:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api}/ace/getstream?id={'ab' * 20}") as response:
                assert response.status == 400
                assert "tracker" in (await response.json())["error"]
            async with session.get(f"{api}/ace/getstream?id=nothex") as response:
                assert response.status == 400
            async with session.get(f"{api}/ace/getstream?url=http://127.0.0.1:1/x") as response:
                assert response.status == 400
            async with session.get(f"{api}/webui/api/service?method=get_version") as response:
                version = await response.json()
            assert version["error"] is None
            assert version["result"]["platform"] == "linux"
