"""The fleet's engine command lines are streaming-utils' (tests/streaming_utils.py holds its lines word for word).

HLS lines are checked here, and parsed by our own acestreamengine command line; no HLS node runs in the fleet's
integration tests (tests/integration/test_hls_ingest.py runs those nodes from streaming-utils' words).
"""

from __future__ import annotations

from pathlib import Path

from swarmcast.fleet.commandline import (
    MAX_CACHE_SIZE,
    MIN_CACHE_SIZE,
    cache_size,
    comparable,
    source_specs,
    support_specs,
)
from swarmcast.fleet.config import check_sources, check_supports
from tests.streaming_utils import CACHE_SIZE, source_line, support_line
from tests.unit.test_fleet_config import SOURCE_EXAMPLE, SUPPORT_EXAMPLE, app_config

GIB = 1024**3
TINY = 1  # bytes of RAM: the cache size clamps to its minimum, streaming-utils' CACHE_SIZE in tests/streaming_utils


def test_cache_size_is_streaming_utils_formula() -> None:
    assert cache_size(100, 0.6, 32 * GIB) == int(32 * GIB * 0.6 / 100) - 50 * 1024 * 1024
    assert cache_size(1, 0.8, 32 * GIB) == MAX_CACHE_SIZE
    assert cache_size(200, 0.6, 8 * GIB) == MIN_CACHE_SIZE
    assert CACHE_SIZE == MIN_CACHE_SIZE


def test_ts_source_line_is_streaming_utils(tmp_path: Path) -> None:
    app = app_config(tmp_path, provider_key="pk1", node_access_token="tok1")
    entry = {**SOURCE_EXAMPLE[0], "type": "ts", "url": "http://10.0.0.1/ch.ts", "quality": "SD",
             "categories": ["sport", "music"], "private_node": 1, "extended_logging": 0}  # fmt: skip
    entries, _ = check_sources([entry], app)
    [spec] = source_specs(app, entries, memory=TINY)
    d = app.dirs
    expected = source_line(
        log=str(d["log"] / "source_node_8640.log"), port=8640, source="http://10.0.0.1/ch.ts", bitrate=400000,
        name="brodilo", title="Brodilo Channel", public=str(d["public"]), metadata=str(d["metadata"]),
        cache=str(d["cache"] / "source_node_8640_cache"), state=str(d["state"] / "source_node_8640_state"),
        pid=str(d["pid"]), trackers=app.trackers, categories=["sport", "music"], provider_key="pk1", sid="brodilo",
        token="tok1", upload_to=["127.0.0.1:8641"], private_node=1,
    )  # fmt: skip
    assert spec.argv == (app.engine_path["stable"], *expected)
    assert spec.log_path == d["log"] / "source_node_8640.log"


def test_debug_source_line_and_engine_versions(tmp_path: Path) -> None:
    app = app_config(tmp_path)
    entry = {**SOURCE_EXAMPLE[0], "type": "ts", "url": "http://10.0.0.1/ch.ts", "engine_version": "beta",
             "quality": "SD"}
    entries, _ = check_sources([entry], app)
    [spec] = source_specs(app, entries, memory=TINY)
    d = app.dirs
    expected = source_line(
        log=str(d["log"] / "source_node_8640.log"), port=8640, source="http://10.0.0.1/ch.ts", bitrate=400000,
        name="brodilo", title="Brodilo Channel", public=str(d["public"]), metadata=str(d["metadata"]),
        cache=str(d["cache"] / "source_node_8640_cache"), state=str(d["state"] / "source_node_8640_state"),
        pid=str(d["pid"]), trackers=app.trackers, categories=["entertaining"], upload_to=["127.0.0.1:8641"],
        debug=True,
    )  # fmt: skip
    # streaming-utils' source debug list is the support node's without its last three switches.
    expected = expected[: -3] if expected[-3:] == ["--debug-rerequester-dht", "--debug-dht", "--debug-magnet"] \
        else expected  # fmt: skip
    assert spec.argv == (app.engine_path["beta"], *expected)


def test_support_line_is_streaming_utils(tmp_path: Path) -> None:
    app = app_config(tmp_path, node_access_token="tok1")
    entries, _ = check_supports(SUPPORT_EXAMPLE, app)
    [spec] = support_specs(app, entries, memory=TINY)
    d = app.dirs
    expected = support_line(log=str(d["log"] / "support_node_8641.log"), port=8641, download_from="127.0.0.1:8640",
                            cache=str(d["cache"] / "support_node_8641_cache"),
                            state=str(d["state"] / "support_node_8641_state"), pid=str(d["pid"]), token="tok1",
                            debug=True)  # fmt: skip
    assert spec.argv == (app.engine_path["stable"], *expected)
    no_token = app_config(tmp_path)
    [plain] = support_specs(no_token, check_supports(SUPPORT_EXAMPLE, no_token)[0], memory=TINY)
    assert "http://127.0.0.1:8640/app/get_transport_file?format=raw" in plain.argv


def test_hls_lines_are_streaming_utils(tmp_path: Path) -> None:
    """start_streamers.py: --create-hls-transport first, then a support node on the private transport file."""
    app = app_config(tmp_path, provider_key="pk1")
    entries, _ = check_sources([{**SOURCE_EXAMPLE[0], "url": "http://10.0.0.1/live/ch.m3u8?k=1"}], app)
    [spec] = source_specs(app, entries, memory=TINY)
    d = app.dirs
    public, private = d["public"] / "brodilo.acelive", d["private"] / "brodilo_private.acelive"
    engine = app.engine_path["stable"]
    assert spec.prepare == (
        engine, "--create-hls-transport", "--hide-hls-manifest", "--title", "Brodilo Channel",
        "--url", "http://10.0.0.1/live/ch.m3u8?k=1", "--output-public", str(public), "--output-private", str(private),
        "--sid", "brodilo", "--log-debug", "1", "--base-url", "http://10.0.0.1/live/ch.m3u8",
        "--provider-key", "pk1", *(w for t in app.trackers for w in ("--tracker", t)), "--category", "entertaining",
    )  # fmt: skip
    assert spec.argv[:20] == (
        engine, "--log-file", str(d["log"] / "source_node_8640.log"), "--port", "8640", "--url", str(private),
        "--public-transport-file", str(public), "--cache-dir", str(d["cache"] / "source_node_8640_cache"),
        "--state-dir", str(d["state"] / "source_node_8640_state"), "--metadata-dir", str(d["metadata"]),
        "--pid-file-dir", str(d["pid"]), "--live-mem-cache-size", str(MIN_CACHE_SIZE), "--stream-support-node",
    )  # fmt: skip
    rest = spec.argv[20:]
    assert rest[:26] == (
        "--monitor-node-ip", "127.0.0.1", "--hide-hls-segments", "--hls-broadcast-last-source-piece",
        "--hls-bad-manifest-max-errors", "5", "--hls-bad-manifest-retry-interval", "2",
        "--close-connections-from-same-peer", "1", "--max-peers", "10", "--stats-report-interval", "4",
        "--stats-report-peers", "--service-remote-access", "--live-cache-type", "memory", "--log-backup-count", "1",
        "--hls-force-monotonic-sequence", "1", "--upload-to", "127.0.0.1:8641", "--log-debug", "1",
    )  # fmt: skip
    assert spec.prepare_outputs == (public, private)
    # Both steps are accepted word for word by our acestreamengine (--log-debug on the create step and
    # --metadata-dir on the HLS support node were refused once).
    from swarmcast.cli import build_parser, known_options, split_debug_switches
    from swarmcast.commands.acestream import translate

    parser = build_parser()
    create = parser.parse_args(translate(list(spec.prepare[1:])))
    assert create.log_debug == 1 and create.output_private == private
    words, _ = split_debug_switches(translate(list(spec.argv[1:])), known_options(parser))
    node = parser.parse_args(words)
    assert node.metadata_dir == d["metadata"] and node.public_transport_file == public


def test_bind_adds_host_and_cache_size_is_not_a_change(tmp_path: Path) -> None:
    app = app_config(tmp_path, bind="127.0.0.3")
    entries, _ = check_supports(SUPPORT_EXAMPLE, app)
    [spec] = support_specs(app, entries, memory=TINY)
    assert spec.argv[-2:] == ("--host", "127.0.0.3")
    [bigger] = support_specs(app, entries, memory=64 * GIB)
    assert bigger.argv != spec.argv and comparable(bigger.argv) == spec.comparable
