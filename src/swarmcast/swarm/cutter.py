"""Cuts an MPEG-TS packet stream into pieces, sans-IO.

A piece is a run of whole 188-byte TS packets. A new piece starts at every video keyframe and is flagged
RANDOM_ACCESS: a player can start decoding there. The tables and clock stamp a muxer writes just before a keyframe
(SDT, PAT, PMT, our wall-clock packet) are held back and open the new piece; when the muxer did not repeat PAT and
PMT there, the latest ones are put in front, so every random-access piece is decodable on its own. Between keyframes
a piece is closed when it reaches ``piece_size`` or when its first packet is ``flush_interval`` old, so that the
delay a piece adds stays bounded whatever the bitrate (the source-to-player delay budget is about 2 s).

After the input reconnected (``mark_discontinuity(resync=True)``) the cutter drops packets until the next video
keyframe, so the first piece after an outage is DISCONTINUITY + RANDOM_ACCESS: a player that was waiting through
the outage resumes with a decodable picture instead of a second of grey. An input without keyframes (audio only)
is given up on after ``RESYNC_LIMIT`` seconds and cut as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmcast.media.ts import SDT_PID, TS_PACKET_SIZE, TsAnalyzer
from swarmcast.wire.messages import PieceFlags

# 5 pieces/s: the per-piece costs (HAVE, REQUEST, signature, system calls) are half those of 0.1 s, for +0.1 s delay.
DEFAULT_FLUSH_INTERVAL = 0.2
MAX_HELD_PACKETS = 16
RESYNC_LIMIT = 3.0  # seconds of input dropped at most while waiting for a keyframe after a reconnect


@dataclass(frozen=True)
class CutPiece:
    flags: PieceFlags
    data: bytes


def choose_piece_size(bitrate: int) -> int:
    """Largest piece for a bitrate (bytes/s): about half a second, as whole TS packets, within sane bounds."""
    packets = max(64, min(2048, bitrate // 2 // TS_PACKET_SIZE))
    return packets * TS_PACKET_SIZE


class PieceCutter:
    def __init__(self, *, piece_size: int, flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        if piece_size < TS_PACKET_SIZE or piece_size % TS_PACKET_SIZE:
            raise ValueError("piece_size must be a positive multiple of 188")
        self.piece_size = piece_size
        self.flush_interval = flush_interval
        self._analyzer = TsAnalyzer()
        self._packets: list[bytes] = []
        self._size = 0
        self._flags = PieceFlags.NONE
        self._opened_at = 0.0
        self._discontinuity = True  # the first piece after a (re)start
        self._held: list[bytes] = []  # tables/clock packets waiting to see whether a keyframe follows
        self._resync_since: float | None = None  # dropping input until a keyframe, since then
        self.dropped_packets = 0

    def mark_discontinuity(self, *, resync: bool = False, now: float = 0.0) -> None:
        """The input restarted (source reconnect) or a standby took over: the next piece carries DISCONTINUITY.

        With ``resync``, what is being cut is closed and input is dropped until the next keyframe (at most
        RESYNC_LIMIT seconds from ``now``), so the next piece is also RANDOM_ACCESS."""
        self._discontinuity = True
        if resync:
            self._packets = []
            self._size = 0
            self._held = []
            self._resync_since = now

    def feed(self, packets: list[bytes], now: float) -> list[CutPiece]:
        out: list[CutPiece] = []
        for packet in packets:
            info = self._analyzer.feed_packet(packet)
            is_preamble = info.is_pat or info.is_pmt or info.pid == SDT_PID or info.clock_us is not None
            if self._resync_since is not None and not (is_preamble and len(self._held) < MAX_HELD_PACKETS):
                if not info.is_video_keyframe_start and now - self._resync_since < RESYNC_LIMIT:
                    # Dropped (the analyzer has seen it, so PAT and PMT are still put in front of the keyframe);
                    # tables held so far belonged to this packet, not to a keyframe.
                    self.dropped_packets += 1 + len(self._held)
                    self._held = []
                    continue
                self._resync_since = None
            if is_preamble and len(self._held) < MAX_HELD_PACKETS:
                self._held.append(packet)
                continue
            if info.is_video_keyframe_start:
                self._close(out)
                self._open(now, PieceFlags.RANDOM_ACCESS)
                if not self._holds_tables():
                    for table in (self._analyzer.latest_pat, self._analyzer.latest_pmt):
                        if table is not None:
                            self._append(table)
                self._release_held()
            else:
                if not self._packets:
                    self._open(now, PieceFlags.NONE)
                self._release_held()
            self._append(packet)
            if self._size + TS_PACKET_SIZE > self.piece_size:
                self._close(out)
        out.extend(self.poll(now))
        return out

    def _holds_tables(self) -> bool:
        pat, pmt = self._analyzer.latest_pat, self._analyzer.latest_pmt
        return pat in self._held and pmt in self._held

    def _release_held(self) -> None:
        for packet in self._held:
            self._append(packet)
        self._held = []

    def poll(self, now: float) -> list[CutPiece]:
        out: list[CutPiece] = []
        if self._packets and now - self._opened_at >= self.flush_interval:
            self._release_held()
            self._close(out)
        return out

    def _open(self, now: float, flags: PieceFlags) -> None:
        self._opened_at = now
        self._flags = flags
        if self._discontinuity:
            self._flags |= PieceFlags.DISCONTINUITY
            self._discontinuity = False

    def _append(self, packet: bytes) -> None:
        self._packets.append(packet)
        self._size += len(packet)

    def _close(self, out: list[CutPiece]) -> None:
        if self._packets:
            out.append(CutPiece(self._flags, b"".join(self._packets)))
        self._packets = []
        self._size = 0
        self._flags = PieceFlags.NONE
