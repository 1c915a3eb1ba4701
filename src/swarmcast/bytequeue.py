"""A bounded byte queue from one producer to one asyncio consumer, cut off when the consumer falls behind.

Live media cannot wait for a slow reader: the producer pushes and never blocks, and a reader more than
``max_bytes`` behind is ended (``dropped``) so that it holds neither memory nor the others. The test signal's
subscribers and the broadcaster's continuous ``.ts`` readers are both this.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable


class BoundedByteQueue:
    # True: ``get`` returns everything queued at once (fewer, larger writes); False: chunk by chunk, as pushed.
    JOIN_CHUNKS = False

    def __init__(self, max_bytes: int, on_drop: Callable[[], None] | None = None) -> None:
        self._max_bytes = max_bytes
        self._on_drop = on_drop
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self.closed = False
        self.dropped = False  # ended because it fell more than max_bytes behind

    @property
    def queued_bytes(self) -> int:
        return self._queued

    def push(self, data: bytes) -> None:
        if self.closed:
            return
        self._chunks.append(data)
        self._queued += len(data)
        self._wakeup.set()
        if self._queued > self._max_bytes:
            self.dropped = True
            self.end()
            if self._on_drop is not None:
                self._on_drop()

    def end(self) -> None:
        """No more bytes: what is queued is dropped and ``get`` answers None."""
        self.closed = True
        self._chunks.clear()
        self._queued = 0
        self._wakeup.set()

    async def get(self) -> bytes | None:
        """The next queued bytes (waiting for some), or None once ended."""
        while not self._chunks:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.JOIN_CHUNKS:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._queued = 0
            return data
        data = self._chunks.popleft()
        self._queued -= len(data)
        return data
