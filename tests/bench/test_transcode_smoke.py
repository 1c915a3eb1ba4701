"""A tiny run of bench/transcode.py: the table is there and the figures are sane, not fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import transcode


def test_transcode_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert transcode.main(["--seconds", "1", "--size", "320x180", "--profiles", "P144p30fps16x9,P240p25fps16x9",
                           "--json", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "| P144p30fps16x9 |" in text and "| full ladder (2) |" in text
    rows = {row["case"]: row for row in json.loads(out.read_text())["rows"]}
    for name in ("P144p30fps16x9", "P240p25fps16x9"):
        assert rows[name]["cpu_per_media_s"] > 0
        assert rows[name]["bits_per_s"][name] > 0
        assert rows[name]["renditions_per_core"] >= 1
