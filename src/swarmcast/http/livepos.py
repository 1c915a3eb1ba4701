"""The ``livepos`` of ``stat_url``, as Ace Stream names it, sans-IO (wall-clock ``now`` passed in).

Ace Stream's players draw a live seek bar from it: the window a player can play in and where it plays, in Unix
seconds. Our pieces carry no timestamp, so a piece's time is reckoned from the live edge back: the newest piece is
``now``, and each piece before it is one piece's duration older, where a piece's duration is the average size of
the pieces held divided by the broadcast's bitrate (bytes/s). Close enough for a seek bar and for "how far behind
live am I" (``last_ts - pos``); not a media clock.

- ``first_ts`` / ``live_first`` / ``first``: the oldest piece held (the start of the window a player can play).
- ``last_ts`` / ``live_last`` / ``last``: the newest piece held (the live edge).
- ``pos``: the piece the furthest player reads next (None until a player has started).
- ``buffer_pieces``: pieces held from ``pos`` on (what the player can read before it waits); 0 without a player.
- ``is_live``: 1.
- Ours, beyond Ace Stream: ``first_piece``, ``last_piece``, ``pos_piece``, the same places as piece numbers.
"""

from __future__ import annotations

from collections.abc import Iterable


def piece_seconds(held_bytes: int, held_pieces: int, bitrate: int) -> float:
    """The average duration of a piece held, in seconds (0 when nothing is held or the bitrate is unknown)."""
    if held_pieces <= 0 or bitrate <= 0:
        return 0.0
    return held_bytes / held_pieces / bitrate


def livepos(
    *,
    now: float,
    oldest: int | None,
    newest: int | None,
    position: int | None,
    held: Iterable[int],
    seconds_per_piece: float,
) -> dict[str, int | None]:
    """Ace Stream's livepos for a window ``oldest..newest`` and a player reading ``position`` next."""

    def at(index: int | None) -> int | None:
        if index is None or newest is None:
            return None
        return int(now - max(newest - index, 0) * seconds_per_piece)

    first, last, pos = at(oldest), at(newest), at(position)
    buffered = 0 if position is None else sum(1 for index in held if index >= position)
    return {
        "is_live": 1,
        "first_ts": first,
        "last_ts": last,
        "live_first": first,
        "live_last": last,
        "first": first,
        "last": last,
        "pos": pos,
        "buffer_pieces": buffered,
        "first_piece": oldest,
        "last_piece": newest,
        "pos_piece": position,
    }
