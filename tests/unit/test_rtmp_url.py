"""``node source --source rtmp://...``: which reader takes a URL, and the URLs refused at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmcast.cli import main
from swarmcast.ingest.select import source_problem


@pytest.mark.parametrize("url", ["rtmp://127.0.0.1/live/stream", "rtmp://h:1935/app/name/key", "RTMP://h/app/x",
                                 "rtmps://h/live/x", "http://127.0.0.1:8000/stream.ts"])  # fmt: skip
def test_usable_sources(url: str) -> None:
    assert source_problem(url) is None


@pytest.mark.parametrize(("url", "message"), [
    ("rtmp://127.0.0.1", "names no application and stream"),
    ("rtmp://127.0.0.1/live", "names no application and stream"),
    ("rtmp://127.0.0.1:99999/live/x", "is not a URL"),
    ("rtmp:///live/x", "is not an rtmp:// URL"),
    ("udp://239.0.0.1:1234", "reads MPEG-TS or HLS over http:// or https://, or pulls rtmp://"),
    ("stream.ts", "is not an http:// or https:// URL"),
])  # fmt: skip
def test_unusable_sources(url: str, message: str) -> None:
    problem = source_problem(url)
    assert problem is not None and message in problem


def test_cli_refuses_an_rtmp_url_without_a_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["node", "source", "--source", "rtmp://127.0.0.1:1935", "--title", "T", "--name", "t",
                 "--metadata-dir", str(tmp_path), "--publish-dir", str(tmp_path)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "argument --source" in err and "names no application and stream" in err
