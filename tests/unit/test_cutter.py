"""Cutting a real test-signal stream into pieces."""

from __future__ import annotations

from swarmcast.media.testsignal import TestSignalConfig, generate_test_signal
from swarmcast.media.ts import TS_PACKET_SIZE, TsAnalyzer, TsPacketizer, latest_clock_us
from swarmcast.swarm.cutter import PieceCutter, choose_piece_size
from swarmcast.wire.messages import PieceFlags


def _signal(seconds: float) -> bytes:
    config = TestSignalConfig(bitrate=500_000, width=160, height=96, fps=10)
    return b"".join(generate_test_signal(config, realtime=False, duration=seconds))


def test_pieces_start_at_keyframes_with_tables_and_clock() -> None:
    data = _signal(3.2)
    cutter = PieceCutter(piece_size=188 * 40, flush_interval=10.0)
    packets = TsPacketizer().feed(data)
    pieces = []
    for i in range(0, len(packets), 50):
        pieces.extend(cutter.feed(packets[i : i + 50], now=i * 0.0002))
    pieces.extend(cutter.poll(now=100.0))
    random_access = [p for p in pieces if p.flags & PieceFlags.RANDOM_ACCESS]
    assert len(random_access) >= 3  # a keyframe a second
    assert pieces[0].flags & PieceFlags.DISCONTINUITY
    assert all(len(p.data) % TS_PACKET_SIZE == 0 and len(p.data) <= 188 * 40 for p in pieces)
    # Nothing lost, nothing made up: all input packets, in order (plus repeated tables at keyframes).
    total = sum(len(p.data) for p in pieces)
    assert len(data) - 188 * 16 <= total <= len(data) + 2 * 188 * len(random_access)
    stream = b"".join(p.data for p in pieces)
    assert data[: 188 * 10] in stream
    assert data[-188 * 10 :] in stream
    for piece in random_access:
        analyzer = TsAnalyzer()
        infos = [analyzer.feed_packet(piece.data[o : o + 188]) for o in range(0, len(piece.data), 188)]
        first_key = next(i for i, info in enumerate(infos) if info.is_video_keyframe_start)
        assert any(info.is_pat for info in infos[:first_key]), "PAT must come before the keyframe"
        assert any(info.is_pmt for info in infos[:first_key]), "PMT must come before the keyframe"
        assert latest_clock_us(piece.data) is not None, "the wall-clock stamp travels with its keyframe"


def test_flush_interval_bounds_piece_age() -> None:
    packets = TsPacketizer().feed(_signal(1.0))
    cutter = PieceCutter(piece_size=188 * 2000, flush_interval=0.1)
    out = cutter.feed(packets[:5], now=0.0)
    assert out == []
    assert len(cutter.poll(now=0.2)) == 1


def test_piece_size_choice() -> None:
    assert choose_piece_size(250_000) % 188 == 0
    assert 188 * 64 <= choose_piece_size(1) <= choose_piece_size(10**9) <= 188 * 2048


def test_resync_after_reconnect_starts_at_a_keyframe_with_tables_and_clock() -> None:
    packets = TsPacketizer().feed(_signal(3.2))
    cutter = PieceCutter(piece_size=188 * 40, flush_interval=10.0)
    cutter.feed(packets[:200], now=0.0)
    cutter.poll(now=100.0)
    # The input came back in the middle of a GOP: nothing before the next keyframe may come out.
    cutter.mark_discontinuity(resync=True, now=100.0)
    pieces = cutter.feed(packets[200:], now=100.1) + cutter.poll(now=200.0)
    assert cutter.dropped_packets > 0
    first = pieces[0]
    assert first.flags == PieceFlags.DISCONTINUITY | PieceFlags.RANDOM_ACCESS
    assert not any(p.flags & PieceFlags.DISCONTINUITY for p in pieces[1:])
    analyzer = TsAnalyzer()
    infos = [analyzer.feed_packet(first.data[o : o + 188]) for o in range(0, len(first.data), 188)]
    first_key = next(i for i, info in enumerate(infos) if info.is_video_keyframe_start)
    assert any(info.is_pat for info in infos[:first_key]) and any(info.is_pmt for info in infos[:first_key])
    assert latest_clock_us(first.data) is not None


def test_resync_gives_up_after_its_limit_on_input_without_keyframes() -> None:
    packets = TsPacketizer().feed(_signal(1.0))
    analyzer = TsAnalyzer()
    no_keyframes = [p for p in packets if not analyzer.feed_packet(p).is_video_keyframe_start]
    cutter = PieceCutter(piece_size=188 * 40, flush_interval=0.1)
    cutter.mark_discontinuity(resync=True, now=0.0)
    assert cutter.feed(no_keyframes[:100], now=1.0) == []
    pieces = cutter.feed(no_keyframes[100:200], now=10.0) + cutter.poll(now=20.0)
    assert pieces and pieces[0].flags & PieceFlags.DISCONTINUITY
