"""The disk cache when the disk is full or the open-file table is exhausted: the node keeps going."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.wire.messages import PieceFlags


def piece(index: int, size: int = 100) -> StoredPiece:
    return StoredPiece(index, PieceFlags.NONE, b"s" * 64, bytes([index % 256]) * size)


def test_write_errors_keep_pieces_in_memory_under_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PieceStore(max_bytes=1000, window_pieces=1000, directory=tmp_path / "cache")
    store.add(piece(0))

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    for index in range(1, 30):
        store.add(piece(index))  # must not raise
        assert store.size_bytes <= 1000
    assert store.disk_errors == 29
    got = store.get(29)
    assert got is not None and got.data == piece(29).data
    monkeypatch.undo()
    store.add(piece(30))
    assert (tmp_path / "cache" / "30").exists()
    assert store.get(30) is not None
    store.close()


def test_read_errors_drop_the_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PieceStore(max_bytes=1000, window_pieces=1000, directory=tmp_path / "cache")
    store.add(piece(0))

    def no_descriptors(self: Path) -> bytes:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(Path, "read_bytes", no_descriptors)
    assert store.get(0) is None
    assert 0 not in store and store.size_bytes == 0
    store.close()
