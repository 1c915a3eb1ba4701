"""A long-lived MPEG-TS muxer writing into memory: packets in, TS bytes out as soon as FFmpeg writes them.

How this works. FFmpeg's mpegts muxer (through PyAV) writes into a sink object; ``take()`` empties it. With
``flush_packets`` the muxer's I/O buffer is flushed after every packet, ``max_delay=0`` stops it holding PCR/DTS
headroom (and adds no PTS offset: a packet's 90 kHz PTS is exactly its input PTS rescaled, the same in every
rendition muxed this way), and ``pes_payload_size=0`` gives every audio frame its own PES packet instead of
gathering several, so bytes of a frame come out when it is muxed. FFmpeg repeats PAT and PMT right before the
first packet of every video keyframe and sets ``random_access_indicator`` there (swarmcast.media.ts reads both),
so a segment cut at a keyframe starts decodable. H.264 in FLV/MP4 form (avcC) is turned into Annex B by the
muxer's automatic bitstream filter, and AAC without ADTS gets its ADTS headers from the muxer.

Not thread-safe: one muxer belongs to one thread.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import av
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream

TS_OPTIONS: Final = {
    "flush_packets": "1",
    "max_delay": "0",
    "pes_payload_size": "0",
    # Besides the PAT/PMT in front of each keyframe: for a reader joining at an arbitrary byte.
    "pat_period": "0.5",
    "sdt_period": "1",
}


class MemorySink:
    """The file object a PyAV muxer writes into; ``take()`` drains what it wrote."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class TsMuxer:
    """One continuous MPEG-TS stream. Add streams (copied from an input stream, or encoders), then mux packets."""

    def __init__(self) -> None:
        self._sink = MemorySink()
        self.container: OutputContainer = av.open(
            self._sink, mode="w", format="mpegts", container_options=dict(TS_OPTIONS)
        )
        self._closed = False

    def add_copy(self, template: Stream) -> Stream:
        """An output stream carrying ``template``'s packets unchanged (a remux)."""
        stream: Stream = self.container.add_stream_from_template(template)
        return stream

    def mux(self, packet: Packet[Any], stream: Stream) -> None:
        """Write ``packet`` (timestamps in its own ``time_base``) to ``stream`` of this muxer."""
        packet.stream = stream
        self.container.mux(packet)

    def take(self) -> bytes:
        """The TS bytes written since the last call (whole packets once the muxer has flushed)."""
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the muxer: the last bytes. Idempotent."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(av.FFmpegError):  # nothing muxed (no header written): nothing to flush
                self.container.close()
        return self._sink.take()


def copy_packet(packet: Packet[Any]) -> Packet[Any]:
    """A packet with ``packet``'s data and timestamps that a muxer may rescale without touching the original
    (one demuxed packet goes to several muxers: the source rendition's and every transcoded rendition's)."""
    copy = Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
    copy.is_keyframe = packet.is_keyframe
    if packet.duration is not None:
        copy.duration = packet.duration
    return copy
