"""The engine's cost options: how much of each broadcast it keeps (--live-window-pieces) and its event loop."""

from __future__ import annotations

import argparse
import importlib.util

import pytest

from swarmcast import cli
from swarmcast.commands import engine as engine_command
from swarmcast.node.config import CacheConfig
from swarmcast.node.engine import ENGINE_WINDOW_PIECES, EngineConfig
from swarmcast.node.shared import make_store
from swarmcast.swarm.store import StoredPiece
from swarmcast.wire.messages import MAX_WINDOW_PIECES, PieceFlags


def parse(*words: str) -> argparse.Namespace:
    return cli.build_parser(commands=("engine",)).parse_args(["engine", *words])


def test_a_viewer_keeps_a_short_window_by_default() -> None:
    args = parse()
    assert args.live_window_pieces == ENGINE_WINDOW_PIECES == EngineConfig().window_pieces
    assert ENGINE_WINDOW_PIECES < MAX_WINDOW_PIECES
    assert parse("--live-window-pieces", "400").live_window_pieces == 400


@pytest.mark.parametrize("value", ["8", "0", str(MAX_WINDOW_PIECES + 1), "x"])
def test_bad_window_is_one_line_exit_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--live-window-pieces", value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--live-window-pieces" in err and value in err and len(err.strip().splitlines()) == 1


def test_the_store_drops_pieces_past_the_window() -> None:
    store = make_store(CacheConfig(), b"c" * 20, 0, 20)
    for index in range(50):
        store.add(StoredPiece(index, PieceFlags.NONE, b"s" * 64, b"d" * 188))
    assert store.oldest is not None and store.oldest >= 50 - 20
    assert 49 in store and 10 not in store


def test_event_loop_default_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse().event_loop == "asyncio"
    assert engine_command.loop_factory("asyncio") is None
    with pytest.raises(SystemExit) as exit_info:
        parse("--event-loop", "trio")
    assert exit_info.value.code == 2 and "--event-loop" in capsys.readouterr().err


def test_uvloop_missing_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        parse("--event-loop", "uvloop")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "uvloop is not installed" in err and "swarmcast[uvloop]" in err


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed (optional)")
def test_uvloop_loop_factory_makes_a_uvloop_loop() -> None:
    factory = engine_command.loop_factory(parse("--event-loop", "uvloop").event_loop)
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
