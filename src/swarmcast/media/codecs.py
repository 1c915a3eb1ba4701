"""Which codecs the pipeline takes from a publisher, and their RFC 6381 names for HLS ``CODECS``.

We remux into MPEG-TS segments and transcode with libx264, so video must be H.264 and audio AAC or MP3 (or none).
FLV can also carry Sorenson H.263 (``flv1``), VP6, Screen Video, Speex, Nellymoser, PCM and ADPCM; each of those is
refused with a line that tells the operator what to publish instead.

``avc1.PPCCLL`` is profile_idc, the constraint flags and level_idc as hex, read from the SPS (RFC 6381 §3.3); FLV
and MP4 carry them in the avcC record's bytes 1..3 (ISO/IEC 14496-15 §5.3.3.1), Annex B streams in the SPS right
after its NAL header. AAC is ``mp4a.40.<audio object type>`` from the AudioSpecificConfig; MP3 is ``mp4a.40.34``
(as Apple's HLS authoring spec writes it).
"""

from __future__ import annotations

from typing import Any, Final

VIDEO_CODECS: Final = frozenset({"h264"})
AUDIO_CODECS: Final = frozenset({"aac", "mp3", "mp3float"})
TS_OVERHEAD: Final = 1.08  # TS and PES headers on top of the elementary streams, for a BANDWIDTH estimate
_DEFAULT_AVC: Final = "avc1.64001f"  # High 3.1: what to say when the stream carries no SPS we can read
_FRIENDLY: Final = {
    "flv": "flv1 (Sorenson H.263)",  # FFmpeg's decoder name for FLV's codec id 2
    "vp6f": "VP6 (vp6f)",
    "vp6a": "VP6 with alpha (vp6a)",
    "vp6": "VP6",
    "flashsv": "Screen Video (flashsv)",
    "flashsv2": "Screen Video 2 (flashsv2)",
    "hevc": "H.265/HEVC",
    "av1": "AV1",
    "vp9": "VP9",
}


def _name(stream: Any) -> str:
    return str(stream.codec_context.name)


def unsupported_codec_problem(video: Any, audio: Any) -> str | None:
    """Why a publisher's streams cannot be segmented (None when they can), in the operator's terms."""
    if video is None:
        return "the stream has no video: publish H.264 video (with AAC audio)"
    vname = _name(video)
    if vname not in VIDEO_CODECS:
        return f"video codec {_FRIENDLY.get(vname, vname)} is not supported: publish H.264"
    if audio is not None:
        aname = _name(audio)
        if aname not in AUDIO_CODECS:
            return f"audio codec {aname} is not supported: publish AAC (or MP3) audio"
    return None


def avc_codec_string(extradata: bytes | None) -> str:
    """``avc1.PPCCLL`` from an avcC record or Annex B SPS; a High 3.1 default when neither is readable."""
    if not extradata:
        return _DEFAULT_AVC
    if extradata[0] == 1 and len(extradata) >= 4:  # avcC: configurationVersion 1, then profile, compat, level
        return f"avc1.{extradata[1]:02x}{extradata[2]:02x}{extradata[3]:02x}"
    sps = find_annexb_sps(extradata)
    return f"avc1.{sps[0]:02x}{sps[1]:02x}{sps[2]:02x}" if sps is not None else _DEFAULT_AVC


def find_annexb_sps(data: bytes) -> bytes | None:
    """The three bytes after the header of the first SPS NAL unit (type 7) in an Annex B byte stream."""
    start = 0
    while True:
        pos = data.find(b"\x00\x00\x01", start)
        if pos < 0 or pos + 6 > len(data):
            return None
        if data[pos + 3] & 0x1F == 7:
            return data[pos + 4 : pos + 7]
        start = pos + 3


def audio_codec_string(audio: Any) -> str | None:
    name = _name(audio)
    if name in ("mp3", "mp3float"):
        return "mp4a.40.34"
    if name != "aac":
        return None
    extradata: bytes | None = audio.codec_context.extradata
    object_type = extradata[0] >> 3 if extradata else 2
    if object_type == 31 and extradata is not None and len(extradata) >= 2:  # escape: 32 + the next 6 bits
        object_type = 32 + (((extradata[0] & 0x07) << 3) | (extradata[1] >> 5))
    return f"mp4a.40.{object_type or 2}"
