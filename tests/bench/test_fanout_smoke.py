"""Smoke test of the fan-out benchmark: a real server process serves two pulling peers for two seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    # The server runs in a spawned process that imports this module by name: put bench/ on the path.
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fanout = _load("fanout")


def test_fanout_two_peers() -> None:
    result = fanout.run(2, 2.0, pieces=16, warmup=0.3)
    assert result["upload_bytes_per_s"] > 0
    assert all(b > 0 for b in result["per_peer_mbytes"])
    assert 0.0 <= result["fairness_jain"] <= 1.0
    assert 0.0 < result["server_cpu"] <= 1.5
