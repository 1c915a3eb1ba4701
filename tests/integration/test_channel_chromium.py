"""A channel in the browser: ``swarmcast broadcaster --p2p`` (one-profile ladder, testsrc over RTMP) -> the engine's
``/player?url=<channel file>`` in Debian's headless Chromium. hls.js reads the engine's master playlist (both
renditions, through the swarm), plays live, and when told to switch rendition plays on at the other size.
Skipped without chromium and chromium-driver (.ci/run installs them)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from swarmcast.channel import Channel, ChannelError
from tests.integration.chain import engine
from tests.integration.test_broadcaster_p2p import HOST, SIZES, broadcaster, publisher

chromium_tests = pytest.importorskip("tests.integration.test_player_chromium")

LEVELS = "return window.swarmcastPlayer && window.swarmcastPlayer.hls ? window.swarmcastPlayer.hls.levels.map(" \
         "l => [l.width, l.height]) : null;"  # fmt: skip
SIZE = 'const v = document.getElementById("video"); return [v.videoWidth, v.videoHeight];'


def _wait_channel(url: str, timeout: float) -> Channel:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                channel = Channel.decode(response.read())
                if len(channel.renditions) == len(SIZES):
                    return channel
        except (OSError, ChannelError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no channel with every rendition at {url} within {timeout} s")


def _wait(driver: Any, script: str, predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"{what}: {value}; player {chromium_tests.state(driver)}"
        time.sleep(0.5)


@pytest.mark.timeout(175)
def test_channel_plays_in_chromium_and_switches_rendition(tmp_path: Path) -> None:
    with (broadcaster(tmp_path) as (_process, rtmp, http), publisher(tmp_path, rtmp, 1), engine(tmp_path) as api):
        channel_url = f"http://{HOST}:{http}/stream/hello_world.acechannel"
        _wait_channel(channel_url, 90)
        with chromium_tests.chromium(tmp_path) as driver:
            driver.get(f"{api}/player?{urlencode({'url': channel_url})}")
            levels = _wait(driver, LEVELS, lambda v: v, 40, "hls.js read no master playlist")
            assert sorted(map(tuple, levels)) == sorted(SIZES.values())
            chromium_tests.wait_playing(driver, 60)
            chromium_tests.advances_for(driver, 5)
            # Switch to each rendition in turn, as ABR does (nextLevel: at the next segment boundary, no buffer
            # flush; the renditions' keyframes are at equal timestamps): the picture takes its size, playback goes on.
            for index, (width, height) in enumerate(map(tuple, levels)):
                driver.execute_script(f"window.swarmcastPlayer.hls.nextLevel = {index};")
                _wait(driver, SIZE, lambda v, w=width, h=height: tuple(v) == (w, h), 40,
                      f"the video did not switch to {width}x{height}")  # fmt: skip
                chromium_tests.advances_for(driver, 3)
            now = chromium_tests.state(driver)
            assert [e for e in now["errors"] if e["details"] not in chromium_tests.STALLS] == [], now["errors"]
