"""MPEG-TS framing, clock packets and random-access detection, checked against a real stream from the generator."""

from __future__ import annotations

import io
import random
import time

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmcast.media.testsignal import TestSignalConfig, generate_test_signal
from swarmcast.media.ts import (
    CLOCK_MAGIC,
    CLOCK_PID,
    SDT_PID,
    TS_PACKET_SIZE,
    GopCache,
    TsAnalyzer,
    TsPacketizer,
    crc32_mpeg2,
    find_random_access_offset,
    make_clock_packet,
    parse_clock_packet,
)
from swarmcast.media.units import parse_bitrate, parse_size

SIGNAL_SECONDS = 2
SIGNAL = TestSignalConfig(bitrate=1_000_000, width=320, height=180, fps=25)


def _packet(pid: int, cc: int, fill: int) -> bytes:
    """A payload-only packet whose payload holds no 0x47, so only real packet starts look like sync bytes."""
    assert fill != 0x47
    return bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | (cc & 0x0F))) + bytes([fill]) * (TS_PACKET_SIZE - 4)


def _packets(count: int) -> list[bytes]:
    return [_packet(0x100, i, i % 0x40) for i in range(count)]


def _split(data: bytes) -> list[bytes]:
    return [data[i : i + TS_PACKET_SIZE] for i in range(0, len(data), TS_PACKET_SIZE)]


@pytest.fixture(scope="module")
def signal_ts() -> bytes:
    """About two seconds of the real test signal, made without pacing."""
    data = b"".join(generate_test_signal(SIGNAL, realtime=False, duration=SIGNAL_SECONDS))
    assert len(data) % TS_PACKET_SIZE == 0
    return data


# --- TsPacketizer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 187, 188, 189, 1000, 100_000])
def test_packetizer_reassembles_any_chunking(chunk_size: int) -> None:
    packets = _packets(50)
    data = b"".join(packets)
    packetizer = TsPacketizer()
    out: list[bytes] = []
    for i in range(0, len(data), chunk_size):
        out += packetizer.feed(data[i : i + chunk_size])
    assert out == packets
    assert packetizer.dropped_bytes == 0
    assert packetizer.buffered_bytes == 0


def test_packetizer_random_chunking() -> None:
    rng = random.Random(7)
    packets = _packets(200)
    data = b"".join(packets)
    packetizer = TsPacketizer()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(0, 600)
        out += packetizer.feed(data[pos : pos + step])
        pos += step
    assert out == packets


def test_packetizer_skips_leading_garbage_with_stray_sync_bytes() -> None:
    packets = _packets(10)
    garbage = bytes([0x00, 0x47, 0x12, 0x47, 0x47]) * 20  # 100 bytes, none of its 0x47s repeats at +188
    packetizer = TsPacketizer()
    out = packetizer.feed(garbage + b"".join(packets))
    assert out == packets
    assert packetizer.dropped_bytes == len(garbage)


def test_packetizer_resyncs_after_a_truncated_packet() -> None:
    packets = _packets(8)
    damaged = b"".join(packets[:3]) + packets[3][:100] + b"".join(packets[4:])
    out = TsPacketizer().feed(damaged)
    # The truncated packet is lost, and only it: the lookahead refuses to glue it to the next one.
    assert out == packets[:3] + packets[4:]


def test_packetizer_resyncs_byte_by_byte() -> None:
    packets = _packets(8)
    damaged = b"".join(packets[:3]) + packets[3][:100] + b"".join(packets[4:])
    packetizer = TsPacketizer()
    out: list[bytes] = []
    for byte in damaged:
        out += packetizer.feed(bytes([byte]))
    assert out[:3] == packets[:3]
    assert out[-3:] == packets[-3:]  # back in sync well before the end
    assert all(len(p) == TS_PACKET_SIZE and p[0] == 0x47 for p in out)


def test_packetizer_buffer_stays_bounded_on_garbage() -> None:
    packetizer = TsPacketizer()
    rng = random.Random(3)
    for _ in range(200):
        packetizer.feed(rng.randbytes(4096))
        assert packetizer.buffered_bytes <= 4096 + 3 * TS_PACKET_SIZE


# --- clock packets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 1_700_000_000_123_456, (1 << 64) - 1])
def test_clock_packet_round_trip(value: int) -> None:
    packet = make_clock_packet(value, 5)
    assert len(packet) == TS_PACKET_SIZE
    assert packet[0] == 0x47
    assert ((packet[1] & 0x1F) << 8) | packet[2] == CLOCK_PID
    assert packet[1] & 0x40  # payload_unit_start_indicator
    assert packet[3] & 0x0F == 5
    assert packet[4:10] == CLOCK_MAGIC
    assert packet[4 + 14 :] == b"\xff" * (TS_PACKET_SIZE - 18)
    assert parse_clock_packet(packet) == value


def test_clock_packet_continuity_counter_wraps() -> None:
    assert make_clock_packet(1, 17)[3] & 0x0F == 1


def test_clock_packet_rejects_out_of_range_time() -> None:
    with pytest.raises(ValueError, match="out of range"):
        make_clock_packet(-1, 0)


def test_parse_clock_packet_rejects_lookalikes() -> None:
    good = make_clock_packet(123, 0)
    wrong_pid = good[:1] + bytes([0x40 | 0x1F, 0xF1]) + good[3:]
    no_pusi = good[:1] + bytes([good[1] & ~0x40]) + good[2:]
    wrong_magic = good[:4] + b"SWCLK2" + good[10:]
    no_payload = good[:3] + bytes([0x20]) + bytes([183]) + good[5:]
    for packet in (wrong_pid, no_pusi, wrong_magic, no_payload, good[:-1], b"\x00" + good[1:]):
        assert parse_clock_packet(packet) is None


# --- TsAnalyzer on the real signal ------------------------------------------------------------------------------


def test_analyzer_follows_pat_pmt_to_the_h264_keyframes(signal_ts: bytes) -> None:
    analyzer = TsAnalyzer()
    infos = [analyzer.feed_packet(p) for p in _split(signal_ts)]
    assert analyzer.pmt_pid is not None
    assert analyzer.video_pid is not None
    assert analyzer.latest_pat is not None
    assert analyzer.latest_pat[0] == 0x47
    assert analyzer.latest_pmt is not None
    assert ((analyzer.latest_pmt[1] & 0x1F) << 8) | analyzer.latest_pmt[2] == analyzer.pmt_pid
    assert infos[0].pid == SDT_PID  # FFmpeg's mpegts muxer leads with SDT, PAT, PMT
    assert infos[1].is_pat
    assert infos[2].is_pmt
    keyframes = [i for i, info in enumerate(infos) if info.is_video_keyframe_start]
    assert len(keyframes) == SIGNAL_SECONDS  # one per second, exactly
    for index in keyframes:
        assert infos[index].pid == analyzer.video_pid
        # Our clock packet sits right before the keyframe, FFmpeg's PAT and PMT right before that.
        assert infos[index - 1].clock_us is not None
        assert infos[index - 2].is_pmt
        assert infos[index - 3].is_pat
    clocks = [info.clock_us for info in infos if info.clock_us is not None]
    assert len(clocks) == SIGNAL_SECONDS
    assert all(abs(c / 1e6 - time.time()) < 600 for c in clocks)
    assert clocks == sorted(clocks)


def test_find_random_access_offset(signal_ts: bytes) -> None:
    offset = find_random_access_offset(signal_ts)
    assert offset is not None
    assert offset % TS_PACKET_SIZE == 0
    assert parse_clock_packet(signal_ts[offset - TS_PACKET_SIZE : offset]) is not None
    # Without the PAT/PMT before it, the keyframe cannot be recognised.
    assert find_random_access_offset(signal_ts[offset : offset + 5 * TS_PACKET_SIZE]) is None
    assert find_random_access_offset(b"") is None


def _decode(data: bytes) -> tuple[list[av.VideoFrame], int]:
    video: list[av.VideoFrame] = []
    audio = 0
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                video.append(frame)
            else:
                audio += 1
    return video, audio


def test_generated_signal_decodes(signal_ts: bytes) -> None:
    video, audio = _decode(signal_ts)
    assert len(video) == SIGNAL_SECONDS * SIGNAL.fps
    assert (video[0].width, video[0].height) == (SIGNAL.width, SIGNAL.height)
    assert video[0].key_frame
    assert audio > 0


def test_gop_cache_snapshot_starts_decodable_at_latest_keyframe(signal_ts: bytes) -> None:
    cache = GopCache()
    assert cache.snapshot() is None
    started = 0
    for chunk_start in range(0, len(signal_ts), 50 * TS_PACKET_SIZE):
        started += cache.feed(signal_ts[chunk_start : chunk_start + 50 * TS_PACKET_SIZE])
    assert started == SIGNAL_SECONDS
    snapshot = cache.snapshot()
    assert snapshot is not None
    assert len(snapshot) < len(signal_ts) * 0.75
    analyzer = TsAnalyzer()
    infos = [info for info in map(analyzer.feed_packet, _split(snapshot)) if info.pid != SDT_PID]
    assert infos[0].is_pat
    assert infos[1].is_pmt
    assert infos[2].clock_us is not None
    assert infos[3].is_video_keyframe_start
    assert sum(info.is_video_keyframe_start for info in infos) == 1
    video, _ = _decode(snapshot)
    assert video
    assert video[0].key_frame


def test_gop_cache_prepends_headers_when_the_gop_lacks_them(signal_ts: bytes) -> None:
    offset = find_random_access_offset(signal_ts)
    assert offset is not None
    cache = GopCache()
    # Feed SDT, PAT and PMT, then an unrelated packet, then the keyframe with no preamble in front of it.
    headers = signal_ts[TS_PACKET_SIZE : 3 * TS_PACKET_SIZE]
    cache.feed(signal_ts[: 3 * TS_PACKET_SIZE])
    cache.feed(_packet(0x100, 0, 0))
    cache.feed(signal_ts[offset : offset + 5 * TS_PACKET_SIZE])
    snapshot = cache.snapshot()
    assert snapshot is not None
    assert snapshot[: 2 * TS_PACKET_SIZE] == headers
    assert snapshot[2 * TS_PACKET_SIZE :] == signal_ts[offset : offset + 5 * TS_PACKET_SIZE]


def test_gop_cache_gives_up_on_an_overlong_gop(signal_ts: bytes) -> None:
    cache = GopCache(max_bytes=10 * TS_PACKET_SIZE)
    cache.feed(signal_ts)
    assert cache.snapshot() is None


def test_gop_cache_refuses_partial_packets() -> None:
    with pytest.raises(ValueError, match="whole packets"):
        GopCache().feed(b"\x47" * 100)


# --- PSI details --------------------------------------------------------------------------------------------------


def test_crc32_mpeg2_known_value() -> None:
    # The check value of CRC-32/MPEG-2 over "123456789".
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


def test_corrupted_pat_is_ignored(signal_ts: bytes) -> None:
    pat = bytearray(signal_ts[TS_PACKET_SIZE : 2 * TS_PACKET_SIZE])
    pat[15] ^= 0xFF  # inside the program loop: the CRC no longer matches
    analyzer = TsAnalyzer()
    info = analyzer.feed_packet(bytes(pat))
    assert info.is_pat
    assert analyzer.pmt_pid is None
    assert analyzer.latest_pat is None


# --- hostile input ----------------------------------------------------------------------------------------------


def _trained_analyzer(signal_ts: bytes) -> TsAnalyzer:
    analyzer = TsAnalyzer()
    for packet in _split(signal_ts[: 4 * TS_PACKET_SIZE]):
        analyzer.feed_packet(packet)
    return analyzer


@given(st.binary(min_size=188, max_size=188))
def test_analyzer_never_raises_on_garbage(packet: bytes) -> None:
    TsAnalyzer().feed_packet(packet)
    parse_clock_packet(packet)


@given(
    payload=st.binary(min_size=185, max_size=185),
    pid=st.sampled_from([0x0000, 0x1000, 0x0100, 0x0101, CLOCK_PID, 0x1FFF]),
    flags=st.integers(min_value=0, max_value=0xFF),
)
def test_analyzer_never_raises_on_garbage_with_real_pids(payload: bytes, pid: int, flags: int) -> None:
    # Valid headers on the PIDs the analyzer cares about reach the PSI / adaptation-field parsers.
    packet = bytes((0x47, (flags & 0xE0) | (pid >> 8), pid & 0xFF)) + payload
    analyzer = TsAnalyzer()
    analyzer.pmt_pid, analyzer.video_pid = 0x1000, 0x0100
    analyzer.feed_packet(packet)
    cache = GopCache()
    cache.feed(packet)
    cache.snapshot()


@given(st.binary(max_size=2000))
def test_packetizer_output_is_always_whole_packets(data: bytes) -> None:
    for packet in TsPacketizer().feed(data):
        assert len(packet) == TS_PACKET_SIZE
        assert packet[0] == 0x47


def test_analyzer_with_known_pids_survives_random_packets(signal_ts: bytes) -> None:
    analyzer = _trained_analyzer(signal_ts)
    rng = random.Random(11)
    for _ in range(2000):
        packet = bytearray(rng.randbytes(TS_PACKET_SIZE))
        packet[0] = 0x47
        pid = rng.choice([0, analyzer.pmt_pid or 0, analyzer.video_pid or 0, CLOCK_PID])
        packet[1] = (packet[1] & 0xE0) | (pid >> 8)
        packet[2] = pid & 0xFF
        analyzer.feed_packet(bytes(packet))


def test_short_input_is_not_a_packet() -> None:
    info = TsAnalyzer().feed_packet(b"\x47\x00")
    assert not info.is_pat
    assert info.clock_us is None


# --- units --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits"),
    [("2M", 2_000_000), ("500k", 500_000), ("1500000", 1_500_000), ("1.5M", 1_500_000), ("1G", 10**9), ("64K", 64_000)],
)
def test_parse_bitrate(text: str, bits: int) -> None:
    assert parse_bitrate(text) == bits


@pytest.mark.parametrize("text", ["", "abc", "2X", "-1M", "0", "1.0000001k", "2 M M", "٢M"])
def test_parse_bitrate_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid bitrate"):
        parse_bitrate(text)


def test_parse_size() -> None:
    assert parse_size("640x360") == (640, 360)
    assert parse_size("1920X1080") == (1920, 1080)
    for bad in ("640", "640x", "x360", "0x360", "640x-1", "99999x10", "axb"):
        with pytest.raises(ValueError, match="invalid size"):
            parse_size(bad)
