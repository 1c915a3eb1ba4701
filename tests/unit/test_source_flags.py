"""``node source --source-read-timeout`` and ``--permanent``: checked at the edge and threaded into SourceConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmcast.cli import main
from swarmcast.commands import node as node_command
from swarmcast.commands import options as options_command
from swarmcast.node.config import SourceConfig


def _args(tmp: Path, *extra: str) -> list[str]:
    return ["node", "source", "--source", "http://127.0.0.1:1/x", "--title", "T", "--name", "t",
            "--metadata-dir", str(tmp), "--publish-dir", str(tmp), *extra]  # fmt: skip


@pytest.mark.parametrize(("flag", "value"), [
    ("--source-reconnect-interval", "nan"), ("--source-reconnect-interval", "inf"), ("--handshake-timeout", "nan"),
    ("--stats-report-interval", "inf"), ("--standby-takeover-after", "nan"),
])  # fmt: skip
def test_seconds_must_be_finite(tmp_path: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # float() takes "nan" and "inf"; a nan interval compares false with everything and would never fire.
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, flag, value))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "not a finite number" in err


@pytest.mark.parametrize("value", ["0", "0.5", "-1", "3601", "nan", "inf", "ten"])
def test_read_timeout_is_bounded(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, "--source-read-timeout", value))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--source-read-timeout" in err and value in err
    assert "Traceback" not in err


def _config(tmp: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> SourceConfig:
    """The SourceConfig the command line builds (the node itself is not run)."""
    built: list[SourceConfig] = []

    class Recorder:
        def __init__(self, config: SourceConfig) -> None:
            built.append(config)

        async def run(self, stop: object) -> None:
            return None

    monkeypatch.setattr(node_command, "SourceNode", Recorder)
    monkeypatch.setattr(options_command, "start_logging", lambda args: None)
    assert main(_args(tmp, *extra)) == 0
    return built[0]


def test_flags_reach_the_source_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, monkeypatch, "--source-read-timeout", "2.5", "--permanent")
    assert config.source_read_timeout == 2.5 and config.permanent is True


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, monkeypatch)
    assert config.source_read_timeout == 10.0 and config.permanent is False


def test_help_names_unit_range_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["node", "source", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--source-read-timeout SECONDS seconds without a byte" in text and "(1..3600, default 10)" in text
    assert "--permanent keep the source running through any input outage" in text


@pytest.mark.parametrize("value", ["udp://239.0.0.1:1234", "/var/streams/live.ts", "http://", "http://h:99999/x",
                                   "rtmp://h/live"])  # fmt: skip
def test_source_must_be_an_http_url(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(tmp_path)
    args[args.index("--source") + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("swarmcast node source: error: argument --source:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [], "nothing is left behind"
