"""The fleet's config files: streaming-utils' own template and examples load; every mistake names its place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import swarmcast
from swarmcast.fleet import jsonc
from swarmcast.fleet.config import AppConfig, ConfigError, check_sources, check_supports, load_app_config
from swarmcast.fleet.controller import redact, with_get_metadata

# streaming-utils' config/config-template.json (commit 54a17d6), as it is: comments and a trailing comma.
TEMPLATE = """{
    "engine_path": {
        "stable": "/opt/acestream-stable/start-engine",
        "beta": "/opt/acestream-beta/start-engine",
        "alpha": "/opt/acestream-alpha/start-engine"
    }
    ,"root": "/opt/app"
    ,"controller": {
        "source_node": "http://example.com/source_node/get_config.php",
        "support_node": "http://example.com/support_node/get_config.php",
        "monitor": "http://example.com/monitor/data_receiver.php",
        "metadata_receiver": "http://example.com/source_node/post_data.php"
    }
    ,"dirs": {
        "public": "tmp/public",
        "private": "tmp/private",
        "metadata": "tmp/metadata",
        "log": "tmp/logs",
        "cache": "tmp/cache",
        "pid": "tmp/run",
        "state": "tmp/state"
    }
    ,"trackers": [
        // add at least one tracker
        "udp://tracker1.example.com:2710/announce",
        "udp://tracker2.example.com:2710/announce",
        // ...
    ]
    //,"provider_key": "<provider_key>"
    //,"node_access_token": "<access_token>"
}"""
SOURCE_EXAMPLE = [{
    "stream_uid": "brodilo", "port": 8640, "title": "Brodilo Channel",
    "url": "http://127.0.0.1/brodilo_hls/stream.m3u8", "bitrate": "400000", "categories": ["entertaining"],
    "quality": "HD", "type": "hls", "upload_to": ["127.0.0.1:8641"], "force_monotonic_sequence": 1,
    "extended_logging": 1, "engine_version": "stable",
}]  # fmt: skip
SUPPORT_EXAMPLE = [{"port": 8641, "source_ip": "127.0.0.1", "source_port": 8640, "extended_logging": 1,
                    "engine_version": "stable"}]  # fmt: skip


def write_app(tmp: Path, text: str) -> Path:
    path = tmp / "config" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def engine(tmp: Path) -> str:
    path = tmp / "bin" / "start-engine"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def app_config(tmp: Path, **changes: object) -> AppConfig:
    data = json.loads(jsonc.strip(TEMPLATE))
    data["engine_path"] = {"stable": engine(tmp), "beta": engine(tmp)}
    data["root"] = str(tmp)
    data.update(changes)
    return load_app_config(write_app(tmp, json.dumps(data)))


def test_the_template_loads_with_its_comments(tmp_path: Path) -> None:
    app = load_app_config(write_app(tmp_path, TEMPLATE))
    assert app.root == Path("/opt/app")
    assert app.trackers == ("udp://tracker1.example.com:2710/announce", "udp://tracker2.example.com:2710/announce")
    assert app.dir("pid") == Path("/opt/app/tmp/run")
    assert app.controller.source_node == "http://example.com/source_node/get_config.php"
    assert app.provider_key is None and app.node_access_token is None


def test_jsonc_keeps_slashes_and_commas_inside_strings() -> None:
    text = '{"a": "http://x//y", "b": "1,]", /* c */ "c": [1, 2,],}'
    assert jsonc.loads(text) == {"a": "http://x//y", "b": "1,]", "c": [1, 2]}
    with pytest.raises(jsonc.JsoncError, match="line 2"):
        jsonc.loads('{"a": 1,\n "b": }')


def test_env_vars_are_expanded_in_engine_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACE_HOME", "/opt/ace")
    text = TEMPLATE.replace("/opt/acestream-stable", "$ACE_HOME")
    assert load_app_config(write_app(tmp_path, text)).engine_path["stable"] == "/opt/ace/start-engine"


def test_examples_load(tmp_path: Path) -> None:
    app = app_config(tmp_path)
    sources, warnings = check_sources(SOURCE_EXAMPLE, app)
    assert warnings == []
    assert sources[0].bitrate == 400000 and sources[0].type == "hls" and sources[0].upload_to == ("127.0.0.1:8641",)
    supports, _ = check_supports(SUPPORT_EXAMPLE, app)
    assert supports[0].download_from == "127.0.0.1:8640"


@pytest.mark.parametrize(("change", "message"), [
    ({"port": "abc"}, "source_node[0].port: 'abc' is not a port"),
    ({"port": 70000}, "source_node[0].port: 70000 is not a port"),
    ({"bitrate": "fast"}, "source_node[0].bitrate: 'fast' is not a bitrate"),
    ({"type": "rtmp"}, "source_node[0].type: 'rtmp' is not ts or hls"),
    ({"categories": ["news"]}, "source_node[0].categories[0]: 'news' is not a category"),
    ({"quality": "4K"}, "source_node[0].quality: '4K' is not SD or HD"),
    ({"upload_to": ["host:1"]}, "source_node[0].upload_to[0]: 'host:1' is not IP:PORT"),
    ({"engine_version": "gamma"}, "source_node[0].engine_version: 'gamma' is not in engine_path"),
    ({"engine_version": "alpha"}, "source_node[0].engine_version: 'gamma'"),
    ({"stream_uid": "../etc"}, "source_node[0].stream_uid: '../etc' is not"),
    ({"extended_logging": 2}, "source_node[0].extended_logging: 2 is not 0 or 1"),
    ({"metadata": {"last_seq": "x", "private_key": "K"}}, "source_node[0].metadata.last_seq: 'x'"),
])  # fmt: skip
def test_bad_source_values_name_their_place(tmp_path: Path, change: dict[str, object], message: str) -> None:
    app = app_config(tmp_path)
    entry = {**SOURCE_EXAMPLE[0], **change}
    if change.get("engine_version") == "alpha":  # in the template, but its executable does not exist
        message = "source_node[0].engine_version: 'alpha' is not in engine_path"
    with pytest.raises(ConfigError) as error:
        check_sources([entry], app, "src.json")
    assert f"src.json: {message}" in str(error.value)


def test_a_missing_engine_is_an_error_before_anything_runs(tmp_path: Path) -> None:
    app = app_config(tmp_path, engine_path={"stable": str(tmp_path / "none" / "start-engine")})
    with pytest.raises(ConfigError, match=r"source_node\[0\].engine_version: 'stable': engine_path.stable .* is not "
                                          "an executable file"):  # fmt: skip
        check_sources(SOURCE_EXAMPLE, app)


def test_duplicates_and_missing_keys(tmp_path: Path) -> None:
    app = app_config(tmp_path)
    second = {**SOURCE_EXAMPLE[0], "stream_uid": "other"}
    del second["title"]
    with pytest.raises(ConfigError) as error:
        check_sources([SOURCE_EXAMPLE[0], second, {**SOURCE_EXAMPLE[0], "port": 8650}], app)
    text = str(error.value)
    assert "source_node[1].title: missing" in text
    assert "source_node[1].port: 8640 is also source_node[0]'s" in text
    assert "source_node[2].stream_uid: 'brodilo' is also source_node[0]'s" in text


def test_unknown_keys(tmp_path: Path) -> None:
    app = app_config(tmp_path)
    _, warnings = check_sources([{**SOURCE_EXAMPLE[0], "titel": "x"}], app, "src.json")
    assert warnings == ["src.json: source_node[0].titel: unknown key, ignored"]
    with pytest.raises(ConfigError, match=r"config.json: dirs.logs: unknown key"):
        app_config(tmp_path, dirs={"public": "p", "private": "p", "metadata": "m", "log": "l", "cache": "c",
                                   "pid": "r", "state": "s", "logs": "x"})  # fmt: skip


def test_bad_support_values(tmp_path: Path) -> None:
    app = app_config(tmp_path)
    with pytest.raises(ConfigError) as error:
        check_supports([{"port": 1, "source_ip": "example.com", "source_port": "x"}], app)
    assert "support_node[0].source_ip: 'example.com' is not an IP address" in str(error.value)
    assert "support_node[0].source_port: 'x' is not a port" in str(error.value)


def test_app_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 1 column"):
        load_app_config(write_app(tmp_path, "{"))
    with pytest.raises(ConfigError) as error:
        load_app_config(write_app(tmp_path, '{"root": "/x", "trackers": ["ftp://t"], "controller": {}}'))
    text = str(error.value)
    assert "engine_path: missing" in text and "dirs: missing" in text
    assert "trackers[0]: 'ftp://t' is not an http://, https:// or udp:// tracker URL" in text
    with pytest.raises(ConfigError, match="no such config file"):
        load_app_config(tmp_path / "nope.json")


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "config" / "config.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_app_config(fifo)


def test_a_bad_config_changes_nothing(tmp_path: Path) -> None:
    """The command: exit 2, every problem on stderr, and no directory made."""
    app = json.loads(jsonc.strip(TEMPLATE))
    app["root"] = str(tmp_path)
    app["engine_path"] = {"stable": engine(tmp_path)}
    app["controller"]["source_node"] = "src.json"
    (tmp_path / "src.json").write_text(json.dumps([{**SOURCE_EXAMPLE[0], "port": "abc"}]))
    config = write_app(tmp_path, json.dumps(app))
    env = {**os.environ, "PYTHONPATH": str(Path(swarmcast.__file__).parent.parent)}
    result = subprocess.run([sys.executable, "-m", "swarmcast", "fleet", "--config", str(config), "start-sources"],
                            capture_output=True, text=True, env=env, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "source_node[0].port: 'abc' is not a port" in result.stderr
    assert "nothing was started or stopped" in result.stderr
    assert not (tmp_path / "tmp").exists()


def test_controller_urls() -> None:
    assert with_get_metadata("http://c/get_config.php") == "http://c/get_config.php?get_metadata"
    assert with_get_metadata("http://c/s?token=t") == "http://c/s?token=t&get_metadata"
    assert redact("http://c/s?token=secret&x=1") == "http://c/s?token=***&x=1"
    assert redact("http://c/s") == "http://c/s"
