"""Which segments of a live HLS media playlist to fetch next, sans-IO: media sequence tracking.

How this works. Each time the playlist is read, ``SequenceTracker.update`` is given the parsed ``MediaPlaylist``
and answers with the segments to fetch (each once, in order) and whether a discontinuity comes first.

- The first playlist (and the first after a reset) is joined at the live end: its newest segment only.
- A good playlist: its segments past the newest one taken are new. When the playlist moved past us (segments we
  never saw are gone: we fell behind, or the origin skipped) the oldest we can still get is taken with a
  discontinuity, at most ``MAX_CATCH_UP`` of them (a playlist that jumps by a million is not a million fetches).
- A bad playlist: its ``#EXT-X-MEDIA-SEQUENCE`` went backwards, or segments we already took vanished from its end
  (the newest sequence is below ours, or it is empty without ``#EXT-X-ENDLIST``), or it did not parse (the reader
  calls ``bad``). Nothing is fetched from it. After ``max_bad`` consecutive bad ones the stream is reset: the
  tracker forgets where it was and joins the current playlist at its live end, with a discontinuity. This is Ace
  Stream's ``--hls-bad-manifest-max-errors``; the reader waits ``--hls-bad-manifest-retry-interval`` between them.
- ``force_monotonic`` (``--hls-force-monotonic-sequence 1``): a playlist whose media sequence went backwards is an
  origin that restarted: it is followed at once as a new run (not counted as bad), and our sequence numbers (what
  the signer writes into its segment index, docs/protocol.md) keep rising across it: ours = the origin's +
  ``offset``, the offset chosen at each restart so that the first segment of the new run follows our last one.
  Without it our sequence is the origin's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmcast.ingest.hls_parse import MediaPlaylist, Segment

MAX_CATCH_UP = 3  # segments taken at most from one playlist read (the newest ones)


@dataclass(frozen=True)
class Wanted:
    segment: Segment
    sequence: int  # our sequence number for it (the origin's, or monotonic across restarts)
    discontinuity: bool


@dataclass(frozen=True)
class Update:
    wanted: tuple[Wanted, ...] = ()
    bad: str | None = None  # why this playlist was bad (nothing fetched from it)
    reset: bool = False  # max_bad consecutive bad playlists: the stream started again at the live end
    restarted: bool = False  # force_monotonic: the origin's sequence restarted, followed as a new run


@dataclass
class SequenceTracker:
    max_bad: int = 5
    force_monotonic: bool = False
    last: int | None = None  # the origin's sequence of the newest segment taken; None = join at the live end
    media_sequence: int = 0  # of the last good playlist
    offset: int = 0
    our_last: int | None = None
    bad_count: int = 0  # consecutive bad playlists
    resets: int = 0
    restarts: int = 0
    bad_total: int = 0
    _pending_discontinuity: bool = field(default=True)

    def __post_init__(self) -> None:
        if self.max_bad < 1:
            raise ValueError("max_bad must be at least 1")

    def bad(self, reason: str, playlist: MediaPlaylist | None = None) -> Update:
        """A bad playlist (``reason``); with ``playlist`` the stream may be reset onto it."""
        self.bad_count += 1
        self.bad_total += 1
        if self.bad_count < self.max_bad:
            return Update(bad=reason)
        self.bad_count = 0
        self.resets += 1
        self.last = None
        self._pending_discontinuity = True
        if playlist is None:
            return Update(bad=reason, reset=True)
        return Update(self._join(playlist), bad=reason, reset=True)

    def update(self, playlist: MediaPlaylist) -> Update:
        if self.last is None:
            wanted = self._join(playlist)
            if wanted:
                self.bad_count = 0
            return Update(wanted)
        newest = playlist.last_sequence
        backwards = playlist.media_sequence < self.media_sequence
        if backwards and self.force_monotonic:
            self.restarts += 1
            self.bad_count = 0
            self.last = None
            self._pending_discontinuity = True
            return Update(self._join(playlist), restarted=True)
        if backwards:
            return self.bad(f"#EXT-X-MEDIA-SEQUENCE went backwards ({self.media_sequence} -> "
                            f"{playlist.media_sequence})", playlist)  # fmt: skip
        if newest is None and not playlist.ended:
            return self.bad("the playlist lost all its segments", playlist)
        if newest is not None and newest < self.last:
            return self.bad(f"segments vanished (newest {newest}, we had {self.last})", playlist)
        self.bad_count = 0
        self.media_sequence = playlist.media_sequence
        fresh = [s for s in playlist.segments if s.sequence > self.last]
        if fresh and fresh[0].sequence > self.last + 1:
            self._pending_discontinuity = True  # segments went by that we never got
        if len(fresh) > MAX_CATCH_UP:
            fresh = fresh[-MAX_CATCH_UP:]
            self._pending_discontinuity = True
        return Update(self._take(fresh))

    def _join(self, playlist: MediaPlaylist) -> tuple[Wanted, ...]:
        self.media_sequence = playlist.media_sequence
        if not playlist.segments:
            return ()
        newest = playlist.segments[-1]
        if self.force_monotonic and self.our_last is not None:
            self.offset = self.our_last + 1 - newest.sequence  # the new run follows our last segment
        self._pending_discontinuity = True
        return self._take([newest])

    def _take(self, segments: list[Segment]) -> tuple[Wanted, ...]:
        out = []
        for segment in segments:
            discontinuity = self._pending_discontinuity or segment.discontinuity
            self._pending_discontinuity = False
            sequence = segment.sequence + self.offset
            out.append(Wanted(segment, sequence, discontinuity))
            self.last = segment.sequence
            self.our_last = sequence
        return tuple(out)
