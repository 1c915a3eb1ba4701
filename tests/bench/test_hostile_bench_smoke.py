"""A tiny run of bench/hostile.py: one cheap attack, short phases; the report has its fields and the player played."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="the benchmark caps its nodes with prlimit")
def test_hostile_bench_smoke(tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "bench" / "hostile.py"), "--attack", "have-overflow", "--duration", "3",
            "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=150, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "hostile.json").read_text())
    assert {"command", "code", "duration", "bitrate", "results"} <= report.keys()
    (result,) = report["results"]
    assert result["attack"] == "have-overflow" and result["victim"] == "support"
    assert result["error"] is None, result["error"]
    assert list(result["phases"]) == ["before", "during", "after"]
    for phase in result["phases"].values():
        player = phase["player"]
        assert {"bytes", "throughput_Bps", "x_bitrate", "stalls", "longest_gap_s", "reconnects"} <= player.keys()
        assert {"newcomer_peer", "http"} <= phase["probe"].keys()
        for role in ("source", "support", "engine"):
            node = phase["nodes"][role]
            assert {"alive_at_end", "rss_max_mb", "cpu_pct", "fds_max", "attacker_conns_max"} <= node.keys()
    before = result["phases"]["before"]
    assert before["player"]["bytes"] > 0, "the honest player got nothing before the attack"
    assert before["nodes"]["support"]["alive_at_end"] and before["nodes"]["support"]["rss_max_mb"] > 0
    assert before["probe"]["newcomer_peer"] == "accepted"
    assert result["phases"]["during"]["counters"]["have_frames_sent"] == 2
    # Every process was stopped, whatever the attack did to it.
    assert set(result["stop"]) == {"testsrc", "source", "support", "engine"}
    markdown = (tmp_path / "hostile.md").read_text()
    assert "| have-overflow | support | before |" in markdown
