"""The bounded byte queue behind the test signal's subscribers and the broadcaster's continuous .ts readers."""

from __future__ import annotations

from swarmcast.bytequeue import BoundedByteQueue


class Joined(BoundedByteQueue):
    JOIN_CHUNKS = True


async def test_chunks_come_out_in_order_then_none_after_end() -> None:
    queue = BoundedByteQueue(100)
    queue.push(b"ab")
    queue.push(b"cd")
    assert queue.queued_bytes == 4
    assert await queue.get() == b"ab"
    assert await queue.get() == b"cd"
    queue.end()
    assert await queue.get() is None


async def test_joined_queue_hands_out_everything_at_once() -> None:
    queue = Joined(100)
    queue.push(b"ab")
    queue.push(b"cd")
    assert await queue.get() == b"abcd"
    assert queue.queued_bytes == 0


async def test_a_reader_past_the_cap_is_dropped_once_and_gets_nothing_more() -> None:
    drops: list[int] = []
    queue = BoundedByteQueue(5, on_drop=lambda: drops.append(1))
    queue.push(b"abc")
    queue.push(b"def")
    assert queue.dropped and queue.closed and drops == [1]
    queue.push(b"g")
    assert drops == [1]
    assert await queue.get() is None
