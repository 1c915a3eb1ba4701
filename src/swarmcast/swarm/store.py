"""The live cache: verified pieces of one broadcast, in memory or on disk, under a hard byte cap.

The cap counts piece data and is never exceeded: adding a piece first evicts the oldest ones until it fits.
Pieces also leave when they fall out of the live window (``window_pieces`` behind the newest index), because
no player or peer will ask for them. The disk store keeps one file per piece in its own directory, which it
empties at start and at close, so a crashed node never leaves a growing cache behind.

A full disk or an exhausted open-file table never stops the node: a piece whose file cannot be written is kept in
memory instead (still counted against the same cap, so the cap holds), and a piece whose file cannot be read back
is dropped from the cache (peers get a REJECT, players skip as for any missing piece). Each is logged once per
store and counted in ``disk_errors``.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from swarmcast.wire.messages import PieceFlags

log = logging.getLogger("swarmcast.store")


@dataclass(frozen=True)
class StoredPiece:
    index: int
    flags: PieceFlags
    signature: bytes
    data: bytes


@dataclass(frozen=True)
class _Entry:
    flags: PieceFlags
    signature: bytes
    size: int


class PieceStore:
    """Pieces by index, oldest evicted first. ``directory`` None keeps the data in memory."""

    def __init__(self, *, max_bytes: int, window_pieces: int, directory: Path | None = None) -> None:
        if max_bytes <= 0 or window_pieces <= 0:
            raise ValueError("max_bytes and window_pieces must be positive")
        self.max_bytes = max_bytes
        self.window_pieces = window_pieces
        self._directory = directory
        self._entries: dict[int, _Entry] = {}
        # Indices in ascending order, and the random-access ones: kept sorted as pieces arrive (almost always at the
        # end), so the oldest piece and the start points are found without scanning the whole window per piece.
        self._order: list[int] = []
        self._random_access: list[int] = []
        self._memory: dict[int, bytes] = {}
        self._bytes = 0
        self._newest: int | None = None
        self.disk_errors = 0
        if directory is not None:
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def newest(self) -> int | None:
        return self._newest

    @property
    def oldest(self) -> int | None:
        return self._order[0] if self._order else None

    def __contains__(self, index: int) -> bool:
        return index in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def indices(self) -> list[int]:
        return list(self._order)

    def flags(self, index: int) -> PieceFlags | None:
        entry = self._entries.get(index)
        return entry.flags if entry else None

    def add(self, piece: StoredPiece) -> list[int]:
        """Store a piece; returns the indices evicted to make room (possibly the new one, if it is too old)."""
        if piece.index in self._entries:
            return []
        size = len(piece.data)
        if size > self.max_bytes:
            raise ValueError(f"piece of {size} bytes cannot fit a cache of {self.max_bytes}")
        if self._newest is None or piece.index > self._newest:
            self._newest = piece.index
        evicted = self._evict_outside_window()
        if piece.index <= self._newest - self.window_pieces:
            return [*evicted, piece.index]
        while self._bytes + size > self.max_bytes:
            oldest = self._order[0]
            self._remove(oldest)
            evicted.append(oldest)
        self._entries[piece.index] = _Entry(piece.flags, piece.signature, size)
        bisect.insort(self._order, piece.index)
        if piece.flags & PieceFlags.RANDOM_ACCESS:
            bisect.insort(self._random_access, piece.index)
        self._bytes += size
        if self._directory is None:
            self._memory[piece.index] = piece.data
        else:
            try:
                (self._directory / str(piece.index)).write_bytes(piece.data)
            except OSError as error:
                self._disk_error("write", piece.index, error)
                with contextlib.suppress(OSError):  # a partial file (ENOSPC) must not linger
                    (self._directory / str(piece.index)).unlink(missing_ok=True)
                self._memory[piece.index] = piece.data
        return evicted

    def get(self, index: int) -> StoredPiece | None:
        entry = self._entries.get(index)
        if entry is None:
            return None
        data = self._memory.get(index)
        if data is None:
            assert self._directory is not None
            try:
                data = (self._directory / str(index)).read_bytes()
            except OSError as error:
                self._disk_error("read", index, error)
                self._remove(index)
                return None
        return StoredPiece(index, entry.flags, entry.signature, data)

    def random_access_indices(self) -> list[int]:
        return list(self._random_access)

    def close(self) -> None:
        for index in list(self._entries):
            self._remove(index)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def _evict_outside_window(self) -> list[int]:
        assert self._newest is not None
        floor = self._newest - self.window_pieces
        stale = self._order[: bisect.bisect_right(self._order, floor)]
        for index in stale:
            self._remove(index)
        return stale

    def _remove(self, index: int) -> None:
        entry = self._entries.pop(index)
        del self._order[bisect.bisect_left(self._order, index)]
        if entry.flags & PieceFlags.RANDOM_ACCESS:
            del self._random_access[bisect.bisect_left(self._random_access, index)]
        self._bytes -= entry.size
        if self._memory.pop(index, None) is None and self._directory is not None:
            try:
                (self._directory / str(index)).unlink(missing_ok=True)
            except OSError as error:
                self._disk_error("remove", index, error)

    def _disk_error(self, what: str, index: int, error: OSError) -> None:
        if not self.disk_errors:
            log.error("disk cache: cannot %s piece %d (%s); such pieces stay in memory or are dropped, the byte "
                      "cap holds; logged once", what, index, error)  # fmt: skip
        self.disk_errors += 1
