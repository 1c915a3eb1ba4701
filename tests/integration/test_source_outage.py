"""The source's input goes away and comes back (issue 7: testsrc off for 15 s made the doubling backoff reconnect
16 s after the input returned, and the player stalled 31 s).

The input is stopped for 8 s and restarted on the same port while a player reads through an engine. The player
keeps its HTTP connection, the numbering continues without a hole, the first piece cut from the returned input is
DISCONTINUITY + RANDOM_ACCESS, and the player decodes video again. Which of the restarted input's keyframes
reached the player first is read from the test signal's own clock stamps: with a fixed reconnect interval it is
one of the first (the old backoff was then waiting 6 s or more before its next attempt).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from swarmcast.wire.messages import PieceFlags
from tests.integration.chain import HOST, decode_video, engine, match_pieces, source_node, source_pieces
from tests.integration.timed_player import TimedStream, read_timed, run_testsrc, wait_for
from tests.procs import free_port

OUTAGE = 8.0
INTERVAL = 0.5  # the chain helper's --source-reconnect-interval
AFTER = 6.0  # seconds the player goes on reading after the input is back
# The restarted input's keyframes are one a second; the player must get one of its first few (the source retries
# every INTERVAL, and one GOP is waited for at most). Counted in the signal's own clock, not the test's.
MAX_KEYFRAMES_MISSED = 3


async def test_player_rides_through_an_input_outage(tmp_path: Path) -> None:
    signal_port = free_port()
    signal_url = f"http://{HOST}:{signal_port}/stream.ts"
    stream = TimedStream()
    with (
        run_testsrc(tmp_path, signal_port) as testsrc,
        source_node(tmp_path, signal_url) as source,
        engine(tmp_path) as api,
    ):
        # The player reads until told to stop (cancelled), AFTER seconds after the input came back.
        player = asyncio.create_task(read_timed(f"{api}/ace/getstream?url={source.transport_url}", 120.0, stream))
        await wait_for(lambda: len(stream.chunks) > 20, 20.0, "the player's first pieces")
        await asyncio.sleep(3.0)
        testsrc.signal(signal.SIGKILL)
        testsrc.kill()
        stopped_at = time.time()
        await asyncio.sleep(OUTAGE)
        with run_testsrc(tmp_path, signal_port, log_name="testsrc2.log"):
            back_at = time.time()
            await asyncio.sleep(AFTER)
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
            pieces = await source_pieces(source)
    assert stream.error is None, f"the player lost its stream: {stream.error}"
    discontinuities = [i for i, p in sorted(pieces.items()) if p.flags & PieceFlags.DISCONTINUITY and i > min(pieces)]
    assert len(discontinuities) == 1, f"one reconnect expected, DISCONTINUITY at {discontinuities}"
    first_after = discontinuities[0]
    assert first_after - 1 in pieces, "numbering continues across the outage without a hole"
    assert pieces[first_after].flags == PieceFlags.DISCONTINUITY | PieceFlags.RANDOM_ACCESS
    # The player got it all in order, across the outage, with no skip.
    used = match_pieces(stream.data, pieces)
    assert first_after in used
    after = b"".join(pieces[i].data for i in used if i >= first_after)
    # 6 s at 25 fps are 150 frames; the old backoff's next attempt came 6 s or more after the input was back.
    assert len(decode_video(after)) >= 50, "video decodes again after the input came back"
    stamps_after = [stamp for stamp, arrived in stream.stamps() if arrived > stopped_at and stamp > stopped_at]
    assert stamps_after, "no keyframe of the restarted input reached the player"
    assert stamps_after[0] - back_at < MAX_KEYFRAMES_MISSED, (
        f"the first keyframe after the outage was drawn {stamps_after[0] - back_at:.1f} s after the input was back"
    )
