"""Smoke test of bench/fuzz.py: a short run of every target is clean, and crashes and hangs are caught."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from tests.fuzz.targets import Target, all_targets

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fuzz", ROOT / "bench" / "fuzz.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fuzz = _load()


def test_all_targets_short_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "--target", "all", "--inputs", "300", "--seed", "5",
         "--crash-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == sorted(all_targets())
    for line in lines:
        assert "inputs       300  crashes 0  hangs 0" in line, line
    assert not list(tmp_path.iterdir())


def _picky(data: bytes) -> None:
    if data.startswith(b"d"):
        raise KeyError("a crash: not the target's own error")
    if b"e" in data:
        raise ValueError("the target's own error")


def _slow(data: bytes) -> None:
    if len(data) % 3 == 0:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass


def test_crashes_and_hangs_are_counted_and_saved(tmp_path: Path) -> None:
    seeds = (b"d1:ai1ee", b"li1ee")
    options = {"hang": 0.02, "abort": 5.0, "corpus_cap": 16, "crash_dir": tmp_path, "progress": 0.0}
    crashes = fuzz.fuzz(Target("picky", _picky, (ValueError,), seeds), 200, 1, **options)
    assert crashes.inputs == 200
    assert crashes.crashes > 0
    assert crashes.hangs == 0
    hangs = fuzz.fuzz(Target("slow", _slow, (), seeds), 30, 1, **options)
    assert hangs.hangs > 0
    assert hangs.crashes == 0
    assert hangs.max_cpu >= 0.05
    saved = {p.name.split("-")[1] for p in tmp_path.iterdir()}
    assert saved == {"crash", "hang"}


def test_exit_status_and_argument_errors() -> None:
    assert fuzz.main(["--target", "handshake", "--inputs", "50"]) == 0
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--target", "nope"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
