"""A tiny run of the HLS ingest offload benchmark (bench/hls_offload.py): the figures are there and add up.

Needs nginx and libnginx-mod-rtmp (bench/setup.sh); skipped without them, except under CI=true.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench.hls_origin import nginx_available

from bench import hls_offload


def _require_nginx() -> None:
    problem = nginx_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI=true: the benchmark must run)")
        pytest.skip(problem)


async def test_offload_run_reports_peer_and_origin_bytes(tmp_path: Path) -> None:
    _require_nginx()
    result = await hls_offload.one_run(2, 5.0, 30, tmp_path)
    assert result["mode"] == "public" and result["engines"] == 2
    assert result["played_bytes"] > 0 and result["from_peers"] > 0
    share = result["origin_share"]
    assert share is not None and 0.0 <= share <= 1.0
    assert set(result["origin_requests_by_client"]) <= {"127.0.0.1", "127.0.0.10", "127.0.0.11"}
