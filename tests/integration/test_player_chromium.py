"""The engine's player page (``/player``, hls.js) in Debian's headless Chromium, on a real chain.

testsrc -> source node -> engine; Chromium (``/usr/bin/chromium`` driven through ``/usr/bin/chromedriver`` by
Selenium: no browser download) opens ``/player?url=...``. The page records hls.js's errors and recoveries in
``window.swarmcastPlayer``; the test asserts the video's currentTime advances for 10 s with no hls.js error, and
that after a short break (the source node killed and started again) the video plays on. hls.js's own stall
reports (``bufferStalledError`` and its nudges, non-fatal: the playhead waited for data, which a shared, loaded
machine causes now and then) are not counted as errors; anything else, fatal or not, is.
CI installs chromium and chromium-driver from Debian (.ci/run); without them the test is skipped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.chain import engine, signal_source, source_node
from tests.procs import free_port

CHROMIUM = "/usr/bin/chromium"
STALLS = {"bufferStalledError", "bufferNudgeOnStall", "bufferSeekOverHole"}
CHROMEDRIVER = "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402

STATE = """const s = window.swarmcastPlayer, v = document.getElementById("video");
return s ? {time: v.currentTime, paused: v.paused, ready: v.readyState, latency: s.latency, errors: s.errors,
            recoveries: s.recoveries, fatal: s.fatal, status: document.getElementById("status").textContent} : null;"""


@contextlib.contextmanager
def chromium(tmp: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                     "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp / 'chromium-profile'}"):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


def state(driver: Any) -> dict[str, Any]:
    result: dict[str, Any] | None = driver.execute_script(STATE)
    assert result is not None, "the player page did not set window.swarmcastPlayer"
    return result


def wait_playing(driver: Any, timeout: float) -> dict[str, Any]:
    """The page's state once the video has played a little, or AssertionError with the state after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        now = state(driver)
        if now["time"] > 0.5 and not now["paused"]:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"the video did not start playing within {timeout:.0f} s: {now}")
        time.sleep(0.5)


def advances_for(driver: Any, seconds: int) -> list[float]:
    """currentTime once a second for ``seconds`` s; asserts every sample is later than the one before."""
    times = [state(driver)["time"]]
    for _ in range(seconds):
        time.sleep(1.0)
        times.append(state(driver)["time"])
        assert times[-1] > times[-2], f"currentTime stopped advancing: {times}"
    return times


def test_player_page_plays_live_in_chromium_and_recovers_from_a_break(tmp_path: Path) -> None:
    port = free_port()
    with (signal_source(tmp_path) as signal_url, engine(tmp_path) as api,
          source_node(tmp_path, signal_url, port=port) as source, chromium(tmp_path) as driver):  # fmt: skip
        page = f"{api}/player?{urlencode({'url': source.transport_url})}"
        driver.get(page)
        wait_playing(driver, 40)
        times = advances_for(driver, 10)
        now = state(driver)
        assert [e for e in now["errors"] if e["details"] not in STALLS] == [], now["errors"]
        assert "delay behind live" in now["status"] and now["latency"] is not None, now
        print(f"currentTime over 10 s: {[round(t, 2) for t in times]}; latency {now['latency']:.2f} s")
        # A short break: the source node dies and comes back on the same port a few seconds later.
        source.process.kill()
        time.sleep(3.0)
        with source_node(tmp_path, signal_url, port=port, log_name="source2.log"):
            before = state(driver)["time"]
            deadline = time.monotonic() + 60
            while state(driver)["time"] < before + 5.0:
                assert time.monotonic() < deadline, f"no playback after the break: {state(driver)}"
                time.sleep(0.5)
            advances_for(driver, 5)
            after = state(driver)
            assert after["fatal"] == after["recoveries"], after  # every fatal error was recovered from
            print(f"after the break: errors {[e['details'] for e in after['errors']]}, "
                  f"recoveries {after['recoveries']}, latency {after['latency']}")
