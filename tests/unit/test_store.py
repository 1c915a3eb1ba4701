"""The live cache: a hard byte cap, the live window, memory and disk alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.wire.messages import PieceFlags


def piece(index: int, size: int, flags: PieceFlags = PieceFlags.NONE) -> StoredPiece:
    return StoredPiece(index, flags, b"s" * 64, bytes([index % 256]) * size)


@pytest.fixture(params=["memory", "disk"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., PieceStore]:
    def make(max_bytes: int, window: int = 1000) -> PieceStore:
        directory = tmp_path / "cache" if request.param == "disk" else None
        return PieceStore(max_bytes=max_bytes, window_pieces=window, directory=directory)

    return make


def test_hard_cap_evicts_oldest(make_store: Callable[..., PieceStore]) -> None:
    store = make_store(10_000)
    for i in range(30):
        store.add(piece(i, 1000))
        assert store.size_bytes <= 10_000
    assert store.indices() == list(range(20, 30))
    got = store.get(25)
    assert got is not None
    assert got.data == bytes([25]) * 1000


def test_window_drops_old_pieces(make_store: Callable[..., PieceStore]) -> None:
    store = make_store(10**9, window=5)
    for i in range(10):
        store.add(piece(i, 10, PieceFlags.RANDOM_ACCESS if i % 3 == 0 else PieceFlags.NONE))
    assert store.indices() == [5, 6, 7, 8, 9]
    assert store.random_access_indices() == [6, 9]
    assert store.add(piece(2, 10)) == [2]  # too old to keep
    assert 2 not in store


def test_disk_cache_files_follow_the_cap(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    store = PieceStore(max_bytes=5000, window_pieces=100, directory=directory)
    for i in range(20):
        store.add(piece(i, 1000))
        on_disk = sum(f.stat().st_size for f in directory.iterdir())
        assert on_disk <= 5000
    store.close()
    assert not directory.exists()


def test_oversized_piece_is_refused(make_store: Callable[..., PieceStore]) -> None:
    store = make_store(100)
    with pytest.raises(ValueError, match="cannot fit"):
        store.add(piece(0, 101))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 2000), st.booleans()), max_size=200),
    st.integers(2000, 20_000),
)
def test_cap_never_exceeded(adds: list[tuple[int, int, bool]], cap: int) -> None:
    store = PieceStore(max_bytes=cap, window_pieces=64)
    for index, size, random_access in adds:
        store.add(piece(index, size, PieceFlags.RANDOM_ACCESS if random_access else PieceFlags.NONE))
        assert store.size_bytes <= cap
        held = [i for i in range(301) if i in store]
        assert store.indices() == held
        assert store.oldest == (held[0] if held else None)
        flags = {i: store.flags(i) or PieceFlags.NONE for i in held}
        assert store.random_access_indices() == [i for i in held if flags[i] & PieceFlags.RANDOM_ACCESS]
        assert store.size_bytes == sum(len(p.data) for i in held if (p := store.get(i)))
