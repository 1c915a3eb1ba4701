"""The broadcaster's player page (``/stream/<id>/player``, hls.js) in Debian's headless Chromium, with a publisher
restarted within the reconnect grace: the video plays on without a reload (the playlist continues after an
``#EXT-X-DISCONTINUITY``). Skipped without chromium and chromium-driver, as the engine's player test."""

from __future__ import annotations

import time
from pathlib import Path

from tests.broadcasting import broadcaster, publisher, wait_log, wait_playlist
from tests.integration.test_player_chromium import STALLS, advances_for, chromium, state, wait_playing


def test_broadcaster_player_page_plays_through_a_publisher_restart(tmp_path: Path) -> None:
    with broadcaster(tmp_path, "--segment-duration", "1", "--reconnect-grace", "10") as (proc, rtmp, base), \
            chromium(tmp_path) as driver:  # fmt: skip
        rtmp_url = f"rtmp://127.0.0.1:{rtmp}/hello_world"
        with publisher(tmp_path, rtmp_url, "first") as first:
            wait_playlist(f"{base}/stream/hello_world/source.m3u8", segments=3, process=proc)
            driver.get(f"{base}/stream/hello_world/player")
            wait_playing(driver, 40)
            times = advances_for(driver, 10)
            now = state(driver)
            assert [e for e in now["errors"] if e["details"] not in STALLS] == [], now["errors"]
            print(f"currentTime over 10 s: {[round(t, 2) for t in times]}; latency {now['latency']}")
            first.kill()
        time.sleep(2.0)
        with publisher(tmp_path, rtmp_url, "second"):
            wait_log(proc, "within the 10 s grace")
            before = state(driver)["time"]
            deadline = time.monotonic() + 60
            while state(driver)["time"] < before + 5.0:
                assert time.monotonic() < deadline, f"no playback after the restart: {state(driver)}"
                time.sleep(0.5)
            advances_for(driver, 5)
            after = state(driver)
            assert after["fatal"] == after["recoveries"], after
            print(f"after the restart: errors {[e['details'] for e in after['errors']]}, "
                  f"recoveries {after['recoveries']}, latency {after['latency']}")
