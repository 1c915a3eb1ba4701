"""The registry's pages in Debian's headless Chromium, on a real registry with real streams (issue 11, item 5).

testsrc -> source node -> engine, and ``swarmcast registry``; the test registers the source node, the engine and
the broadcast over the registry's JSON API (real HTTP writes; the transport file is the source node's own) and
relays heartbeats with the processes' real figures (their CPU and memory from /proc, traffic and players from
the source's /app/monitor and the engine's /app/stat) once a second, as the nodes' ``--registry`` client does.
A second stream is registered with a ``<script>`` title: it must show as text. Then Chromium

- opens the stream list: both streams are listed, the title as text, the viewer count refreshes;
- opens the watch page with ``?engine=`` the engine's address: the page finds the engine and plays through it
  (video currentTime advances), and shows the engine's reason when it cannot (a stream whose only node is gone);
- opens the dashboard: the viewers chart's data grows between two reads (every chart has data), and a node's
  page draws its CPU and memory.

The driver setup is the engine player test's (tests/integration/test_player_chromium.py); skipped without
chromium and chromium-driver.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from swarmcast.http.cors import GENERIC_ERROR
from swarmcast.transport import Descriptor
from tests.broadcasting import broadcaster, publisher, wait_playlist
from tests.integration.chain import HOST, signal_source, source_node
from tests.integration.test_player_chromium import STALLS, advances_for, chromium, state, wait_playing
from tests.procs import SwarmcastProcess, free_port, swarmcast_process

TOKEN = "regweb-test-token"  # the test registry's write token
EVIL = '<script>document.title="owned"</script><img src=x onerror="document.title=1">'
BEATS_AT_MOST = 300  # heartbeats the relay sends in all (bounded traffic loop)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def engine(tmp: Path) -> Iterator[tuple[SwarmcastProcess, str]]:
    """chain.engine's engine, with its process (the relay reads its figures)."""
    http_port = free_port()
    args = ["engine", "--http-port", str(http_port), "--port", str(free_port()), "--bind", HOST,
            "--pid-file-dir", str(tmp), "--startup-timeout", "20"]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "engine.log", wait_port=(HOST, http_port)) as process:
        yield process, f"http://{HOST}:{http_port}"


@contextlib.contextmanager
def registry(tmp: Path) -> Iterator[tuple[SwarmcastProcess, str]]:
    port = free_port()
    args = ["registry", "--bind", HOST, "--port", str(port), "--state-dir", str(tmp / "registry"), "--token", TOKEN,
            "--heartbeat-timeout", "60"]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "registry.log", wait_port=(HOST, port)) as process:
        yield process, f"http://{HOST}:{port}"


def call(method: str, url: str, body: object = None) -> Any:
    """One JSON request with the write token; the answer's JSON (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {url}: {error.code} {error.read()[:500]!r}") from None
    return json.loads(text) if text else None


def fetch(url: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read(), dict(response.headers)


class ProcessFigures:
    """A process's CPU (% of a core since the last call) and RSS, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last: tuple[float, float] | None = None

    def read(self) -> dict[str, float]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
        rss = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE_SIZE
        now = time.monotonic()
        percent = 0.0 if self.last is None else 100 * (cpu - self.last[1]) / max(1e-3, now - self.last[0])
        self.last = (now, cpu)
        return {"cpu_percent": round(percent, 2), "rss_bytes": rss}


class HeartbeatRelay:
    """Heartbeats for the registered nodes, once a second, with their figures now (``figures()`` per node)."""

    def __init__(self, api: str, beats: dict[str, Callable[[], dict[str, Any]]]) -> None:
        self.api, self.beats = api, beats
        self.sent = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="heartbeats", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set() and self.sent < BEATS_AT_MOST:
            for node_id, figures in self.beats.items():
                try:
                    call("POST", f"{self.api}/api/nodes/{node_id}/heartbeat", figures())
                except (AssertionError, OSError, ValueError) as error:
                    self.errors.append(str(error)[:300])
                self.sent += 1
            self.stop.wait(1.0)

    def __enter__(self) -> HeartbeatRelay:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def source_beat(source_http: str, cid: str, process: ProcessFigures) -> dict[str, Any]:
    monitor = json.loads(fetch(f"{source_http}/app/monitor")[0])
    upload, download = monitor.get("upload_speed", 0) * 8, monitor.get("download_speed", 0) * 8
    peers = monitor.get("connected_peers_count", 0)
    stream = {"upload_bps": upload, "download_bps": download, "peers": peers}
    figures = {**process.read(), **stream, "streams": {cid: stream}}
    return {"content_ids": [cid], "figures": figures}


def engine_beat(api: str, process: ProcessFigures) -> dict[str, Any]:
    broadcasts = json.loads(fetch(f"{api}/app/stat")[0])["result"]
    streams = {
        b["content_id"]: {"viewers": b["players"], "upload_bps": b["speed_up"] * 8,
                          "download_bps": b["speed_down"] * 8, "peers": b["peers"]}
        for b in broadcasts
    }  # fmt: skip
    figures = {**process.read(), "upload_bps": sum(s["upload_bps"] for s in streams.values()),
               "download_bps": sum(s["download_bps"] for s in streams.values()), "streams": streams}  # fmt: skip
    return {"content_ids": list(streams), "figures": figures}


LIST_STATE = """const s = window.swarmcastList; if (!s) return null;
return {updates: s.updates, error: s.error, rows: [...document.querySelectorAll("#streams tbody tr")].map(
  (r) => ({cid: r.dataset.contentId, title: r.querySelector(".title").textContent,
           viewers: r.querySelector(".viewers").textContent, live: r.querySelector(".live").textContent})),
  scripts: [...document.querySelectorAll("script")].map((s) => s.getAttribute("src")), title: document.title};"""
WATCH_STATE = "return window.swarmcastWatch || null;"
CHART_STATE = """const s = window.swarmcastDashboard; if (!s) return null;
return {updates: s.updates, error: s.error, points: s.points,
        viewers: s.plots.viewers ? s.plots.viewers.data[1] : null};"""


def wait_for(driver: Any, script: str, ok: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        now = driver.execute_script(script)
        if now is not None and ok(now):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s: {now}")
        time.sleep(0.5)


def test_stream_list_watch_page_and_dashboard_in_chromium(tmp_path: Path) -> None:
    with (signal_source(tmp_path) as signal_url, source_node(tmp_path, signal_url) as source,
          engine(tmp_path) as (engine_process, api), registry(tmp_path) as (registry_process, site),
          chromium(tmp_path) as driver):  # fmt: skip
        source_http = f"http://{HOST}:{source.port}"
        transport, _ = fetch(source.transport_url)
        cid = Descriptor.decode(transport).infohash
        source_id = call("POST", f"{site}/api/nodes", {
            "role": "source", "address": f"{HOST}:{source.port}", "http": source_http, "capacity_bps": 50_000_000,
            "version": "test", "content_ids": [cid], "name": "studio"})["node_id"]  # fmt: skip
        call("POST", f"{site}/api/streams", {
            "content_id": cid, "name": "test-channel", "title": "Test channel", "categories": ["news"],
            "quality": "SD", "bitrate": 1_000_000, "renditions": None, "node_id": source_id,
            "transport": base64.b64encode(transport).decode()})  # fmt: skip
        engine_id = call("POST", f"{site}/api/nodes", {
            "role": "engine", "address": None, "http": api, "capacity_bps": None, "version": "test",
            "content_ids": [], "name": "viewer-1"})["node_id"]  # fmt: skip
        # The <script> stream: a real transport file of its own (a second broadcast), registered by the source.
        evil = Descriptor(name="evil", title=EVIL, piece_size=65536, bitrate=1000, public_key=b"k" * 32).encode()
        call("POST", f"{site}/api/streams", {
            "content_id": Descriptor.decode(evil).infohash, "name": "evil", "title": EVIL, "categories": ["news"],
            "quality": None, "bitrate": None, "renditions": None, "node_id": source_id,
            "transport": base64.b64encode(evil).decode()})  # fmt: skip
        # ... and carried by a support node whose web interface is gone: an engine cannot fetch its transport file.
        dead = free_port()
        call("POST", f"{site}/api/nodes", {
            "role": "support", "address": f"{HOST}:{dead}", "http": f"http://{HOST}:{dead}", "capacity_bps": None,
            "version": "test", "content_ids": [Descriptor.decode(evil).infohash], "name": "unreachable"})  # fmt: skip
        source_figures, engine_figures = ProcessFigures(source.process.pid), ProcessFigures(engine_process.pid)
        beats = {source_id: lambda: source_beat(source_http, cid, source_figures),
                 engine_id: lambda: engine_beat(api, engine_figures)}  # fmt: skip
        with HeartbeatRelay(site, beats) as relay:
            # 1. The stream list, refreshed from /api/streams.
            driver.get(f"{site}/?refresh=1")
            listed = wait_for(driver, LIST_STATE, lambda s: s["updates"] >= 2 and len(s["rows"]) == 2, 30, "the list")
            rows = {row["cid"]: row for row in listed["rows"]}
            assert rows[cid]["title"] == "Test channel" and rows[cid]["live"] == "live", listed
            assert rows[Descriptor.decode(evil).infohash]["title"] == EVIL, listed  # text, not markup
            assert listed["title"].startswith("streams") and listed["error"] is None, listed
            assert all(src and src.startswith("/static/") for src in listed["scripts"]), listed["scripts"]

            # 2. The watch page plays through the engine (the page's JS probes it, then plays its HLS).
            driver.get(f"{site}/watch/test-channel?engine={quote(api, safe='')}")
            watch = wait_for(driver, WATCH_STATE, lambda s: s["mode"] is not None, 20, "the engine probe")
            assert watch["mode"] == "engine", watch
            assert watch["manifest"].startswith(f"{api}/ace/manifest.m3u8?url="), watch
            wait_playing(driver, 60)
            times = advances_for(driver, 8)
            errors = [e for e in state(driver)["errors"] if e["details"] not in STALLS]
            assert errors == [], errors
            print(f"watch page through the engine: currentTime {[round(t, 2) for t in times]}")

            # The engine refuses a stream it cannot fetch: the page shows the engine's refusal, the generic one a
            # cross-origin url= request gets (the detail would let any page scan ports through it: http/cors.py).
            driver.get(f"{site}/watch/evil?engine={quote(api, safe='')}")
            refused = wait_for(driver, WATCH_STATE, lambda s: s["engineError"], 40, "the engine's reason")
            said = driver.execute_script('return document.getElementById("source").textContent;')
            assert refused["engineError"] == GENERIC_ERROR and GENERIC_ERROR in said, (refused, said)
            print(f"the engine's refusal, shown: {said[:160]}")

            # The list counts the engine's player as a viewer (its heartbeat says so), refreshed in place.
            driver.get(f"{site}/?refresh=1")
            def watched(s: Any) -> bool:
                return any(r["cid"] == cid and r["viewers"] != "0" for r in s["rows"])

            viewing = wait_for(driver, LIST_STATE, watched, 30, "a viewer in the list")
            print(f"list: {[(r['title'][:20], r['viewers'], r['live']) for r in viewing['rows']]}")

            # 3. The dashboard's charts update: the viewers chart has more points later.
            driver.get(f"{site}/dashboard?refresh=1&seconds=600")
            first = wait_for(driver, CHART_STATE, lambda s: s["points"].get("viewers", 0) >= 1, 30, "a chart")
            later = wait_for(driver, CHART_STATE, lambda s: s["points"]["viewers"] > first["points"]["viewers"],
                             40, "more points in the viewers chart")  # fmt: skip
            assert later["error"] is None and later["updates"] > first["updates"], later
            for name in ("upload", "delay", "startup", "stalls", "cpu", "memory"):
                assert later["points"].get(name, 0) >= 1, (name, later)
            print(f"dashboard points {first['points']} -> {later['points']}; viewers {later['viewers']}")
            # A node's page charts its own CPU and memory.
            driver.get(f"{site}/nodes/{engine_id}?refresh=1")
            node = wait_for(driver, CHART_STATE, lambda s: s["points"].get("cpu", 0) >= 1 and s["updates"] >= 2, 30,
                            "the node page's charts")  # fmt: skip
            assert node["error"] is None and node["points"].get("memory", 0) >= 1, node
            assert relay.errors == [], relay.errors[:3]
            _, headers = fetch(f"{api}/webui/api/service?method=get_version")
            assert headers.get("Access-Control-Allow-Origin") == "*", headers
            assert "Access-Control-Allow-Origin" not in fetch(f"{api}/app/stat")[1]
        assert registry_process.popen.poll() is None, registry_process.stderr_tail()



def test_watch_page_without_an_engine_plays_the_broadcasters_hls_or_says_why_not(tmp_path: Path) -> None:
    """No engine answers at ``?engine=`` (a closed port): a stream with an HLS origin (a real ``swarmcast
    broadcaster`` fed over RTMP) plays from it; an MPEG-TS-only stream shows why it cannot play."""
    nobody = f"http://{HOST}:{free_port()}"
    with (broadcaster(tmp_path, "--segment-duration", "1") as (proc, rtmp, base), registry(tmp_path) as (_, site),
          publisher(tmp_path, f"rtmp://{HOST}:{rtmp}/hello_world"), chromium(tmp_path) as driver):  # fmt: skip
        node_id = call("POST", f"{site}/api/nodes", {
            "role": "broadcaster", "address": None, "http": base, "capacity_bps": None, "version": "test",
            "content_ids": [], "name": "origin"})["node_id"]  # fmt: skip
        for name, renditions in (("hls-channel", [{"name": "source", "hls": f"{base}/stream/hello_world.m3u8"}]),
                                 ("ts-only", None)):  # fmt: skip
            data = Descriptor(name=name, title=name, piece_size=65536, bitrate=40_000, public_key=b"k" * 32).encode()
            call("POST", f"{site}/api/streams", {
                "content_id": Descriptor.decode(data).infohash, "name": name, "title": name, "categories": [],
                "quality": None, "bitrate": None, "renditions": renditions, "node_id": node_id,
                "transport": base64.b64encode(data).decode()})  # fmt: skip
        wait_playlist(f"{base}/stream/hello_world/source.m3u8", segments=3, process=proc)
        driver.get(f"{site}/watch/hls-channel?engine={quote(nobody, safe='')}")
        watch = wait_for(driver, WATCH_STATE, lambda s: s["mode"] is not None, 20, "the engine probe")
        assert watch["mode"] == "hls" and watch["manifest"] == f"{base}/stream/hello_world.m3u8", watch
        assert watch["probeError"], watch
        wait_playing(driver, 60)
        times = advances_for(driver, 5)
        assert [e for e in state(driver)["errors"] if e["details"] not in STALLS] == [], state(driver)["errors"]
        print(f"watch page from the broadcaster's HLS: currentTime {[round(t, 2) for t in times]}")
        driver.get(f"{site}/watch/ts-only?engine={quote(nobody, safe='')}")
        watch = wait_for(driver, WATCH_STATE, lambda s: s["mode"] is not None, 20, "the engine probe")
        said = driver.execute_script('return document.getElementById("source").textContent;')
        assert watch["mode"] == "none" and f"no swarmcast engine answers at {nobody}" in said, (watch, said)
        assert driver.execute_script('return document.getElementById("video");') is None
