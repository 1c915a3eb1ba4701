"""Ace Stream players' requests against a real engine (issue 8 item 8).

A player sends ``pid``, ``sid``, ``use_stop_notifications``, ``preferred_audio_language``, ``transcode_*`` and the
rest along with the content; the engine plays it all the same, any number of players sharing a ``pid``, answers
``format=json`` with Ace Stream's ``is_encrypted`` and ``client_session_id``, and ``stat_url``'s ``livepos`` holds
the live window and the player's place in Unix seconds.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from tests.integration.chain import decode_video, engine, read_stream, signal_source, source_node

COMPAT = {
    "pid": "3f1b9c2e-player",
    "sid": "17",
    "use_stop_notifications": "1",
    "preferred_audio_language": "eng",
    "transcode_audio": "0",
    "transcode_mp3": "0",
    "transcode_ac3": "0",
    "hlc": "1",
    "file_indexes": "0",
    "_idx": "0",
    "_": "1733050000000",  # a cache buster nobody documents: ignored
}


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
        return response.status, await response.json(content_type=None)


async def test_ace_stream_player_parameters_play_and_livepos(tmp_path: Path) -> None:
    with signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url) as source, engine(tmp_path) as api:
        query = urlencode({"url": source.transport_url, **COMPAT})
        async with aiohttp.ClientSession() as http:
            status, body = await get_json(http, f"{api}/ace/getstream?{query}&format=json")
            assert status == 200, body
            response = body["response"]
            assert response["is_encrypted"] == 0 and response["client_session_id"] == -1
            assert response["is_live"] == 1
            assert {"playback_url", "stat_url", "command_url", "infohash", "playback_session_id"} <= set(response)
            # Two players with the same pid play side by side (Ace Stream would stop the first).
            direct = f"{api}/ace/getstream?{query}"
            first, second = await asyncio.gather(read_stream(response["playback_url"], 4.0), read_stream(direct, 4.0))
            assert len(decode_video(first)) >= 25 and len(decode_video(second)) >= 25
            # The stat while a player reads: livepos in Unix seconds around now, the player inside the window.
            player = asyncio.create_task(read_stream(response["playback_url"], 6.0))
            try:
                await asyncio.sleep(3.0)
                status, body = await get_json(http, response["stat_url"])
            finally:
                await player
            assert status == 200, body
            live = body["response"]["livepos"]
            for key in ("first_ts", "last_ts", "live_first", "live_last", "pos", "buffer_pieces", "is_live"):
                assert isinstance(live[key], int), (key, live)
            assert live["is_live"] == 1
            assert abs(live["last_ts"] - time.time()) < 30
            assert live["first_ts"] <= live["pos"] <= live["last_ts"], live
            assert live["live_first"] == live["first_ts"] and live["live_last"] == live["last_ts"]
            assert live["buffer_pieces"] >= 0
            assert live["first_piece"] <= live["pos_piece"] <= live["last_piece"] + 1, live
            # The transport file itself as data= (base64) names the same broadcast.
            data = base64.b64encode(next(source.publish_dir.glob("*.acelive")).read_bytes()).decode()
            status, body = await get_json(http, f"{api}/ace/getstream?data={quote(data, safe='')}&format=json")
            assert status == 200, body
            assert body["response"]["infohash"] == response["infohash"]
