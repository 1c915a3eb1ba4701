"""MPEG-TS packet utilities: framing, random-access points, and our in-band wall-clock packets.

How this works. An MPEG-TS stream is a run of 188-byte packets, each starting with the sync byte 0x47 and
naming a 13-bit PID (ISO/IEC 13818-1 §2.4.3). To start a viewer at a point where it can decode at once we need
three things from the stream: the PAT (PID 0) that names the PMT's PID, the PMT that names the video PID, and a
video packet that starts a PES packet (payload_unit_start_indicator) with the adaptation field's
random_access_indicator set — FFmpeg's mpegts muxer sets that flag on the first packet of every keyframe.
Only sections that fit in one packet are parsed (true of every single-program stream FFmpeg writes); anything
longer, malformed or failing its CRC is treated as a plain packet, never as an error, because these bytes
come from the network.

Clock packets are our own addition: a packet on ``CLOCK_PID`` (not listed in the PMT, so players ignore it)
whose payload is ``b"SWCLK1"`` and the wall-clock time in microseconds at which the following keyframe was
produced. Anyone downstream can compare it with their own clock to measure end-to-end delay.

Everything here is pure: bytes in, values out, no I/O and no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

TS_PACKET_SIZE: Final = 188
SYNC_BYTE: Final = 0x47
PAT_PID: Final = 0x0000
SDT_PID: Final = 0x0011
NULL_PID: Final = 0x1FFF
CLOCK_PID: Final = 0x1FF0
CLOCK_MAGIC: Final = b"SWCLK1"

# Stream types (ISO/IEC 13818-1 Table 2-34, plus H.222 amendments) whose PID we treat as "the video".
VIDEO_STREAM_TYPES: Final = frozenset({0x01, 0x02, 0x1B, 0x24})

_TABLE_ID_PAT: Final = 0x00
_TABLE_ID_PMT: Final = 0x02
_CLOCK_STRUCT: Final = struct.Struct(">Q")
_U64_MAX: Final = (1 << 64) - 1


def _make_crc32_table() -> tuple[int, ...]:
    # MPEG-2 CRC-32: polynomial 0x04C11DB7, MSB first, no reflection, no final xor (13818-1 Annex A).
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC32_TABLE: Final = _make_crc32_table()


def crc32_mpeg2(data: bytes | memoryview) -> int:
    """CRC of a PSI section; over a whole section including its CRC field the result is 0."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC32_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


class TsPacketizer:
    """Cuts an arbitrarily chunked byte stream into whole 188-byte packets.

    While in sync, a packet is accepted when its first byte is 0x47 and so is the first byte of the next packet,
    if that has arrived yet (waiting for it would add a chunk's delay to every live packet). When that fails we
    look for a position where 0x47 also appears 188 and 376 bytes further on, so that a stray 0x47 inside a
    payload does not fool us, and drop the bytes before it (counted in ``dropped_bytes``). The buffer never holds
    more than what is needed to confirm one candidate position plus the last chunk fed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._synced = True
        self.dropped_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buffer
        buf += data
        packets: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= TS_PACKET_SIZE:
            nxt = pos + TS_PACKET_SIZE
            # Where the next packet's first byte is already here it must be a sync byte too; otherwise this
            # "packet" is a truncated one glued to the next, and emitting it would also lose the next.
            if self._synced and buf[pos] == SYNC_BYTE and (nxt >= end or buf[nxt] == SYNC_BYTE):
                packets.append(bytes(buf[pos : pos + TS_PACKET_SIZE]))
                pos += TS_PACKET_SIZE
                continue
            self._synced = False
            candidate = self._find_sync(buf, pos, end)
            if candidate is None:
                # No 0x47 that could start a packet, not even an unconfirmed one near the end.
                self.dropped_bytes += end - pos
                pos = end
                break
            self.dropped_bytes += candidate - pos
            pos = candidate
            if candidate + 2 * TS_PACKET_SIZE >= end:
                break  # a plausible start, but not enough data yet to confirm it
            self._synced = True
        del buf[:pos]
        return packets

    @staticmethod
    def _find_sync(buf: bytearray, start: int, end: int) -> int | None:
        """First position from ``start`` that is confirmed (or, near the end, not yet refuted) as a packet start."""
        pos = buf.find(SYNC_BYTE, start)
        while pos != -1:
            ok = True
            for step in (TS_PACKET_SIZE, 2 * TS_PACKET_SIZE):
                ahead = pos + step
                if ahead >= end:
                    break  # cannot refute yet: wait for more data
                if buf[ahead] != SYNC_BYTE:
                    ok = False
                    break
            if ok:
                return pos
            pos = buf.find(SYNC_BYTE, pos + 1)
        return None


@dataclass(frozen=True, slots=True)
class _Header:
    pid: int
    pusi: bool
    random_access: bool
    payload_start: int  # offset of the payload in the packet; == TS_PACKET_SIZE when there is none


def _parse_header(packet: bytes) -> _Header | None:
    if len(packet) != TS_PACKET_SIZE or packet[0] != SYNC_BYTE:
        return None
    pid = ((packet[1] & 0x1F) << 8) | packet[2]
    pusi = bool(packet[1] & 0x40)
    adaptation_control = (packet[3] >> 4) & 0x3
    if adaptation_control == 0:
        return None  # reserved value (13818-1 Table 2-5)
    random_access = False
    payload_start = 4
    if adaptation_control & 0x2:
        af_length = packet[4]
        payload_start = 5 + af_length
        if payload_start > TS_PACKET_SIZE:
            return None
        if af_length > 0:
            random_access = bool(packet[5] & 0x40)
    if not adaptation_control & 0x1:
        payload_start = TS_PACKET_SIZE
    return _Header(pid, pusi, random_access, payload_start)


PTS_WRAP: Final = 1 << 33  # PTS/DTS are 33-bit counters of a 90 kHz clock (13818-1 §2.4.3.7)


def pes_pts(packet: bytes) -> int | None:
    """The PTS of the PES packet that starts in this TS packet, or None (no PES start here, no PTS, malformed)."""
    header = _parse_header(packet)
    if header is None or not header.pusi:
        return None
    pes = packet[header.payload_start :]
    # packet_start_code_prefix, stream_id, PES_packet_length, two flag bytes, PES_header_data_length, PTS.
    if len(pes) < 14 or pes[0:3] != b"\x00\x00\x01" or not pes[7] & 0x80:
        return None
    b = pes[9:14]
    if not (b[0] & 1 and b[2] & 1 and b[4] & 1):
        return None  # the marker bits are missing: not a PTS
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def keyframe_pts(data: bytes) -> list[int]:
    """PTS of every video keyframe start in a TS byte stream that carries its own PAT/PMT (an HLS segment)."""
    packetizer, analyzer = TsPacketizer(), TsAnalyzer()
    found: list[int] = []
    for packet in packetizer.feed(data):
        if analyzer.feed_packet(packet).is_video_keyframe_start:
            pts = pes_pts(packet)
            if pts is not None:
                found.append(pts)
    return found


def make_clock_packet(wall_time_us: int, continuity_counter: int) -> bytes:
    """One TS packet on CLOCK_PID carrying ``wall_time_us`` (u64 big-endian) after the magic."""
    if not 0 <= wall_time_us <= _U64_MAX:
        raise ValueError(f"wall_time_us out of range: {wall_time_us}")
    header = bytes(
        (
            SYNC_BYTE,
            0x40 | (CLOCK_PID >> 8),  # payload_unit_start_indicator: a reader can find the magic at offset 4
            CLOCK_PID & 0xFF,
            0x10 | (continuity_counter & 0x0F),  # payload only, not scrambled
        )
    )
    payload = CLOCK_MAGIC + _CLOCK_STRUCT.pack(wall_time_us)
    return header + payload + b"\xff" * (TS_PACKET_SIZE - len(header) - len(payload))


def parse_clock_packet(packet: bytes) -> int | None:
    """The wall-clock time in µs carried by a clock packet, or None if ``packet`` is not a valid one."""
    header = _parse_header(packet)
    if header is None or header.pid != CLOCK_PID or not header.pusi:
        return None
    start = header.payload_start
    end = start + len(CLOCK_MAGIC) + _CLOCK_STRUCT.size
    if end > TS_PACKET_SIZE or packet[start : start + len(CLOCK_MAGIC)] != CLOCK_MAGIC:
        return None
    value: int = _CLOCK_STRUCT.unpack_from(packet, start + len(CLOCK_MAGIC))[0]
    return value


def _psi_section(packet: bytes, header: _Header, table_id: int) -> memoryview | None:
    """The section body (after the 8-byte long-form header, before the CRC), if whole and valid in this packet."""
    if not header.pusi or header.payload_start >= TS_PACKET_SIZE:
        return None
    start = header.payload_start + 1 + packet[header.payload_start]  # skip pointer_field
    if start + 3 > TS_PACKET_SIZE or packet[start] != table_id:
        return None
    section_length = ((packet[start + 1] & 0x0F) << 8) | packet[start + 2]
    end = start + 3 + section_length
    # 5 bytes of long-form header after section_length and 4 of CRC at least.
    if section_length < 9 or end > TS_PACKET_SIZE:
        return None
    view = memoryview(packet)
    if crc32_mpeg2(view[start:end]) != 0:
        return None
    if not packet[start + 5] & 0x01:
        return None  # current_next_indicator == 0: a table announced for later, not in force yet
    return view[start + 8 : end - 4]


def _parse_pat(body: memoryview) -> int | None:
    """PID of the first program's PMT (program_number 0 is the network PID, skipped)."""
    for pos in range(0, len(body) - 3, 4):
        program_number = (body[pos] << 8) | body[pos + 1]
        if program_number != 0:
            return ((body[pos + 2] & 0x1F) << 8) | body[pos + 3]
    return None


def _parse_pmt(body: memoryview) -> int | None:
    """PID of the first video elementary stream listed."""
    if len(body) < 4:
        return None
    program_info_length = ((body[2] & 0x0F) << 8) | body[3]
    pos = 4 + program_info_length
    while pos + 5 <= len(body):
        stream_type = body[pos]
        pid = ((body[pos + 1] & 0x1F) << 8) | body[pos + 2]
        es_info_length = ((body[pos + 3] & 0x0F) << 8) | body[pos + 4]
        if stream_type in VIDEO_STREAM_TYPES:
            return pid
        pos += 5 + es_info_length
    return None


@dataclass(frozen=True, slots=True)
class PacketInfo:
    pid: int
    is_pat: bool
    is_pmt: bool
    is_video_keyframe_start: bool
    clock_us: int | None


class TsAnalyzer:
    """Follows PAT → PMT → video PID across a stream of packets and spots keyframe starts and clock packets.

    ``latest_pat`` / ``latest_pmt`` are the last whole, valid PAT / PMT packets seen, ready to be put in front
    of a random-access point.
    """

    def __init__(self) -> None:
        self.pmt_pid: int | None = None
        self.video_pid: int | None = None
        self.latest_pat: bytes | None = None
        self.latest_pmt: bytes | None = None

    def feed_packet(self, packet: bytes) -> PacketInfo:
        header = _parse_header(packet)
        if header is None:
            pid = ((packet[1] & 0x1F) << 8) | packet[2] if len(packet) >= 3 else NULL_PID
            return PacketInfo(pid, False, False, False, None)
        pid = header.pid
        is_pat = pid == PAT_PID
        is_pmt = self.pmt_pid is not None and pid == self.pmt_pid
        keyframe = False
        clock: int | None = None
        if is_pat:
            self._on_pat(packet, header)
        elif is_pmt:
            self._on_pmt(packet, header)
        elif pid == self.video_pid:
            keyframe = header.pusi and header.random_access and header.payload_start < TS_PACKET_SIZE
        elif pid == CLOCK_PID:
            clock = parse_clock_packet(packet)
        return PacketInfo(pid, is_pat, is_pmt, keyframe, clock)

    def _on_pat(self, packet: bytes, header: _Header) -> None:
        body = _psi_section(packet, header, _TABLE_ID_PAT)
        if body is None:
            return
        pmt_pid = _parse_pat(body)
        if pmt_pid is None:
            return
        self.latest_pat = packet
        if pmt_pid != self.pmt_pid:
            # A new programme map: whatever we knew about the video PID belonged to the old one.
            self.pmt_pid = pmt_pid
            self.video_pid = None
            self.latest_pmt = None

    def _on_pmt(self, packet: bytes, header: _Header) -> None:
        body = _psi_section(packet, header, _TABLE_ID_PMT)
        if body is None:
            return
        self.latest_pmt = packet
        self.video_pid = _parse_pmt(body)


def find_random_access_offset(data: bytes) -> int | None:
    """Offset of the first keyframe-start packet in ``data`` (whole packets from offset 0), or None.

    A fresh analyzer is used, so the PAT and PMT must appear in ``data`` before that packet.
    """
    analyzer = TsAnalyzer()
    for offset in range(0, len(data) - TS_PACKET_SIZE + 1, TS_PACKET_SIZE):
        if analyzer.feed_packet(data[offset : offset + TS_PACKET_SIZE]).is_video_keyframe_start:
            return offset
    return None


# PIDs that may sit between the end of one GOP and the keyframe that starts the next (FFmpeg repeats SDT, PAT
# and PMT right before a keyframe; we put the clock packet there). They are kept with the GOP they announce.
PREAMBLE_PIDS: Final = frozenset({PAT_PID, SDT_PID, NULL_PID, CLOCK_PID})


class GopCache:
    """The bytes since the latest keyframe, so that a newcomer can start decoding at once.

    ``feed`` takes whole packets. The GOP starts at the run of PAT/PMT/SDT/clock packets that immediately
    precedes the keyframe, so the clock packet for that keyframe travels with it. ``snapshot`` returns PAT + PMT
    (unless the GOP already begins with both) + the GOP. A stream whose keyframes stop coming would grow the
    buffer without end, so past ``max_bytes`` the GOP is dropped until the next keyframe.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.analyzer = TsAnalyzer()
        self._max_bytes = max_bytes
        self._gop = bytearray()
        self._valid = False  # _gop starts at a keyframe (or its preamble)
        self._gop_has_headers = False
        self._run_start: int | None = None  # offset in _gop of the current run of preamble packets
        self._run_has_pat = False
        self._run_has_pmt = False

    def feed(self, data: bytes) -> bool:
        """Add whole packets; True when a new GOP started within them."""
        if len(data) % TS_PACKET_SIZE:
            raise ValueError(f"GopCache.feed needs whole packets, got {len(data)} bytes")
        started = False
        for offset in range(0, len(data), TS_PACKET_SIZE):
            packet = data[offset : offset + TS_PACKET_SIZE]
            info = self.analyzer.feed_packet(packet)
            if info.is_video_keyframe_start:
                cut = self._run_start if self._run_start is not None else len(self._gop)
                self._gop_has_headers = self._run_start is not None and self._run_has_pat and self._run_has_pmt
                del self._gop[:cut]
                self._valid = True
                started = True
                self._end_run()
            elif info.pid in PREAMBLE_PIDS or info.is_pmt:
                if self._run_start is None:
                    self._run_start = len(self._gop)
                self._run_has_pat |= info.is_pat
                self._run_has_pmt |= info.is_pmt
            else:
                self._end_run()
            self._gop += packet
        if len(self._gop) > self._max_bytes:
            self._gop.clear()
            self._valid = False
            self._end_run()
        return started

    def _end_run(self) -> None:
        self._run_start = None
        self._run_has_pat = False
        self._run_has_pmt = False

    def snapshot(self) -> bytes | None:
        """PAT + PMT + everything since the latest keyframe, or None before the first keyframe."""
        if not self._valid:
            return None
        if self._gop_has_headers:
            return bytes(self._gop)
        pat, pmt = self.analyzer.latest_pat, self.analyzer.latest_pmt
        if pat is None or pmt is None:
            return None
        return pat + pmt + bytes(self._gop)


def latest_clock_us(data: bytes) -> int | None:
    """The newest clock stamp among the whole TS packets in ``data`` (a piece), or None."""
    found: int | None = None
    pid_high, pid_low = CLOCK_PID >> 8, CLOCK_PID & 0xFF
    for offset in range(0, len(data) - TS_PACKET_SIZE + 1, TS_PACKET_SIZE):
        if data[offset + 1] & 0x1F == pid_high and data[offset + 2] == pid_low:
            stamp = parse_clock_packet(data[offset : offset + TS_PACKET_SIZE])
            if stamp is not None:
                found = stamp
    return found
