"""A tiny run of the nginx RTMP->HLS baseline (bench/baseline_nginx.py): the figures are there and sane, not fast.

Needs nginx and libnginx-mod-rtmp (bench/setup.sh). Without them the test is skipped, except under CI=true, where
a missing nginx is a broken setup and fails.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import pytest

from bench import baseline_nginx, common


def _require_nginx() -> None:
    try:
        baseline_nginx.require_nginx()
    except baseline_nginx.NginxMissingError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{error} (CI=true: the baseline must run)")
        pytest.skip(str(error))


def _positive_below(value: object, limit: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0 < value < limit


@pytest.mark.timeout(90)
async def test_baseline_smoke(tmp_path: Path) -> None:
    _require_nginx()
    procs = common.Processes(tmp_path)
    try:
        port = common.free_port()
        testsrc = procs.spawn("testsrc", "testsrc", port, "testsrc", "--port", str(port), "--bitrate", "500k",
                              "--size", "320x180", "--fps", "15")  # fmt: skip
        await asyncio.to_thread(procs.wait_ports, [testsrc], 30)
        # wait_for: if the run hangs, its task is cancelled and its finally stops nginx and the publisher.
        result = await asyncio.wait_for(
            baseline_nginx.run_hls_baseline(f"http://{common.HOST}:{port}/stream.ts", players=2, duration=8.0, ramp=1.0,
                                            workdir=tmp_path),
            timeout=70,
        )  # fmt: skip
    finally:
        procs.stop_all()

    assert result["errors"] == []
    assert result["players"] == 2
    assert result["players_with_video"] == 2
    for key in ("startup_s", "delay_s", "playout_delay_s"):
        for stat in ("p50", "p95", "max"):
            assert _positive_below(result[key][stat], 30), (key, stat, result[key])
    assert result["mapped_keyframes"] > 0
    assert result["pts_mapping"]["max_residual_ms"] <= baseline_nginx.PTS_TOLERANCE_MS
    assert result["publisher_keyframes_stamped"] > 0
    for key in ("continuity_abs", "continuity_rel"):
        assert 0 <= result[key] <= 1, (key, result[key])
    assert result["origin_egress_bytes"] > 0
    assert result["player_received_bytes"] > 0
    assert result["stream_bytes"] > 0
    assert result["origin_upload_ratio"] > 0
    assert result["nginx_cpu_seconds"] is not None and result["nginx_peak_rss"] > 0
    assert result["publisher_cpu_seconds"] is not None and result["publisher_peak_rss"] > 0
    for player in result["per_player"]:
        assert player["error"] is None, player
        assert player["segments"] > 0 and player["mapped_keyframes"] > 0
    # Every process it started is gone (nginx and the publisher are stopped by run_hls_baseline itself).
    assert all(child.process.poll() is not None for child in procs.children)
    assert not (tmp_path / "nginx-baseline" / "nginx.pid").exists()


def test_cli_names_setup_script_when_nginx_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(baseline_nginx, "find_nginx", lambda: None)
    code = baseline_nginx.main(["--players", "1", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "bench/setup.sh" in capsys.readouterr().err
