"""Fuzz targets: every parser that sees network or file input, with valid seeds and the errors it may raise.

How this works. A :class:`Target` is a function that takes arbitrary bytes and runs one parser on them, plus
the exception types that parser is allowed to raise (its own error: the caller catches exactly that) and a
few valid encodings to mutate. Anything else escaping ``run`` is a crash. Targets also check a property where
one is cheap and sharp (a decoded bencode value re-encodes to the same bytes; a content id is 20 bytes; the
internal tracker always answers valid bencoding), raising :class:`PropertyFailedError`, which is a crash too.

:func:`mutate` makes inputs the way a hostile peer would: bit flips, byte inserts and deletes, truncation,
huge length fields, deep nesting, splices of two inputs, repeated chunks. The same targets and mutator serve
the hypothesis tests (tests/unit/test_fuzz.py, a few hundred examples each) and long runs
(``python bench/fuzz.py --target NAME --inputs N``, docs/fuzzing.md).
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast import bencoding
from swarmcast.channel import Channel, ChannelError, Rendition
from swarmcast.credential import CredentialError, CredentialRole, CredentialVerifier, make_credential
from swarmcast.discovery import tracker_protocol
from swarmcast.discovery.metatracker_protocol import (
    MAX_ANSWER_STARTUP_NODES,
    MAX_ANSWER_TRACKERS,
    MAX_INTERVAL,
    MIN_INTERVAL,
    MetatrackerError,
    parse_answer,
)
from swarmcast.discovery.metatracker_server import ConfigError, parse_config, parse_infohash
from swarmcast.discovery.tracker_protocol import (
    AnnounceEvent,
    AnnounceRequest,
    TrackerError,
    build_announce_url,
    parse_announce_response,
    parse_udp_announce_response,
    parse_udp_connect_response,
)
from swarmcast.discovery.tracker_server import InternalTracker, parse_raw_query
from swarmcast.ingest.hls_parse import MediaPlaylist, PlaylistError, choose_variant, parse_playlist
from swarmcast.ingest.hls_tracker import SequenceTracker
from swarmcast.media import ts
from swarmcast.node.joiner import JoinError, parse_content_id, parse_magnet
from swarmcast.segment_index import IndexEntry, SegmentIndex, SegmentIndexError
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire import codec
from swarmcast.wire.errors import ProtocolError
from swarmcast.wire.messages import (
    MAX_METADATA_SIZE,
    Cancel,
    Choke,
    CredentialKind,
    CredentialMessage,
    Goodbye,
    GoodbyeReason,
    Handshake,
    HandshakeFlags,
    Have,
    Interested,
    KeepAlive,
    Message,
    Metadata,
    MetadataRequest,
    NotInterested,
    Pex,
    Piece,
    PieceFlags,
    Reject,
    Request,
    Unchoke,
    Window,
)

#: Largest input the mutator makes (bigger inputs only cost time: every parser checks sizes first).
MAX_INPUT = 70_000


class PropertyFailedError(AssertionError):
    """A parser returned, but what it returned is wrong."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]


# -- seeds ---------------------------------------------------------------------------------------------------

_DESCRIPTOR = Descriptor(
    name="news", title="Evening news", piece_size=65536, bitrate=250_000, public_key=bytes(range(32)),
    categories=("informational", "sport"), trackers=("http://127.0.0.1:6878/announce", "udp://127.0.0.2:80"),
    provider_key="provider",
)  # fmt: skip
_CONTENT_ID = _DESCRIPTOR.content_id
_DESCRIPTOR_WITH_DISCOVERY = Descriptor(**{
    **_DESCRIPTOR.__dict__, "startup_nodes": (("127.0.0.2", 8621), ("::1", 7764)),
    "metatrackers": ("http://127.0.0.1:8000/mt", "https://meta.example/q?k=1"),
})  # fmt: skip
# A fixed key so that seeds (and so runs with a given --seed) are reproducible.
_CREDENTIAL_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
_CREDENTIAL_VERIFIER = CredentialVerifier(_CREDENTIAL_KEY.public_key().public_bytes_raw(), _CONTENT_ID)


def _credential(role: CredentialRole, ip: str, port: int) -> bytes:
    return make_credential(_CREDENTIAL_KEY, role=role, content_id=_CONTENT_ID, ip=ip, port=port, expires=2_000_000_000)
_UDP_TID = 0x12345678


def _bencode_seeds() -> tuple[bytes, ...]:
    return (
        _DESCRIPTOR.encode(),
        bencoding.encode({b"interval": 120, b"complete": 1, b"incomplete": 2, b"peers": bytes(range(12))}),
        bencoding.encode({b"interval": 60, b"peers": [{b"ip": b"10.0.0.1", b"port": 7000, b"peer id": b"x" * 20}],
                          b"peers6": bytes(18)}),
        bencoding.encode({b"failure reason": b"Requested download is not authorized"}),
        bencoding.encode([0, -1, 2**63, b"", [[]], {}]),
        b"d7:bitratei5e10:categoriesl5:sporte12:content_type10:video/mp2t4:name4:news-10:",
        b"d-9:i",
        b"d-14:faoe",
    )


def _frame_seeds() -> tuple[bytes, ...]:
    messages: list[Message] = [
        KeepAlive(), Choke(), Unchoke(), Interested(), NotInterested(), MetadataRequest(),
        Window(100, (True, False, True), (True, False, False)), Have(2**40, PieceFlags.RANDOM_ACCESS),
        Request(7), Cancel(7), Reject(8), Piece(9, PieceFlags.DISCONTINUITY, bytes(64), b"\x47" * 40),
        Pex((("10.0.0.1", 7000), ("2001:db8::1", 7001))), Goodbye(GoodbyeReason.BANNED),
        Metadata(_DESCRIPTOR.encode()),
        CredentialMessage(CredentialKind.PRESENT, _credential(CredentialRole.SOURCE, "127.0.0.1", 0)),
        CredentialMessage(CredentialKind.GRANT, _credential(CredentialRole.SUPPORT, "2001:db8::2", 8621)),
    ]  # fmt: skip
    frames = [codec.encode_message(m) for m in messages]
    return (*frames, b"".join(frames), b"".join(frames[:6]))


def _handshake_seeds() -> tuple[bytes, ...]:
    return tuple(
        codec.encode_handshake(Handshake(_CONTENT_ID, b"p" * 20, port, flags))
        for port, flags in ((7000, HandshakeFlags.NONE), (0, HandshakeFlags.SOURCE | HandshakeFlags.SEEDER))
    )


def _udp_seeds() -> tuple[bytes, ...]:
    connect = struct.pack(">IIQ", 0, _UDP_TID, 0x0123456789ABCDEF)
    announce = struct.pack(">IIIII", 1, _UDP_TID, 1800, 3, 4) + bytes((127, 0, 0, 1, 0x1B, 0x58)) * 3
    error = struct.pack(">II", 3, _UDP_TID) + b"info_hash not allowed"
    return connect, announce, struct.pack(">II", 1, _UDP_TID), error


def _query_seeds() -> tuple[bytes, ...]:
    request = AnnounceRequest(_CONTENT_ID, b"-SC0001-abcdefghijkl", 7000, 10, 20, 0, AnnounceEvent.STARTED)
    url = build_announce_url("http://127.0.0.1:6878/announce?token=x", request)
    query = url.partition("?")[2].encode()
    return query, query.replace(b"compact=1", b"compact=0"), query + b"&event=stopped", b"info_hash=&port=0"


def _magnet_seeds() -> tuple[bytes, ...]:
    hex_id = _CONTENT_ID.hex().encode()
    return (
        b"magnet:?xt=urn:btih:" + hex_id + b"&tr=http%3A%2F%2F127.0.0.1%3A6878%2Fannounce&dn=news",
        b"magnet:?xt=urn:btih:CIQ5DPVGCEQAVRZUTEUQGNAXUYKTQXQA&tr=udp://t:80",
        b"//%5B",
        b"//[",
        b"magnet:?xt=urn:btih:" + b"00000000 " * 4 + b"0000",
        hex_id,
        b"CIQ5DPVGCEQAVRZUTEUQGNAXUYKTQXQA",
    )


def _ts_packet(pid: int, payload: bytes, *, pusi: bool = False, random_access: bool = False, cc: int = 0) -> bytes:
    header = bytes((0x47, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF))
    if random_access:
        stuffing = 188 - 4 - 2 - len(payload)
        return header + bytes((0x30 | cc, 1 + stuffing, 0x40)) + b"\xff" * stuffing + payload
    return header + bytes((0x10 | cc,)) + payload + b"\xff" * (184 - len(payload))


def _psi(table_id: int, body: bytes) -> bytes:
    section = bytes((table_id,)) + struct.pack(">H", 0xB000 | (len(body) + 9)) + b"\x00\x01\xc1\x00\x00" + body
    return b"\x00" + section + struct.pack(">I", ts.crc32_mpeg2(section))


def _ts_seeds() -> tuple[bytes, ...]:
    pat = _ts_packet(0, _psi(0x00, b"\x00\x01\xf0\x00"), pusi=True)  # program 1 -> PMT on PID 0x1000
    pmt = _ts_packet(0x1000, _psi(0x02, b"\xe1\x00\xf0\x00" + b"\x1b\xe1\x00\xf0\x00"), pusi=True)  # H.264 on 0x100
    clock = ts.make_clock_packet(1_700_000_000_000_000, 3)
    key = _ts_packet(0x100, b"\x00\x00\x01\xe0\x00\x00\x80\x80\x05", pusi=True, random_access=True)
    video = _ts_packet(0x100, b"\x00\x00\x00\x01\x41" + b"\x9a" * 20, cc=1)
    gop = pat + pmt + clock + key + video + video
    return gop, b"\x00\x47" * 50 + gop, gop[:300] + gop
    # (packetizer resync, analyzer with a mangled first packet)


# -- targets -------------------------------------------------------------------------------------------------


def _run_bencode(data: bytes) -> object:
    value = bencoding.decode(data, max_size=MAX_INPUT)
    if bencoding.encode(value) != data:
        raise PropertyFailedError("a canonical decode did not re-encode to the same bytes")
    return value


def _run_bencode_lenient(data: bytes) -> object:
    value = bencoding.decode(data, max_size=MAX_INPUT, sorted_keys=False)
    try:
        strict = bencoding.decode(data, max_size=MAX_INPUT)
    except bencoding.BencodeError:
        return value  # keys out of order somewhere: only the strict decoder refuses that
    if strict != value:
        raise PropertyFailedError("strict and lenient decoders disagree")
    return value


def _run_transport(data: bytes) -> object:
    descriptor = Descriptor.decode(data)
    if descriptor.encode() != data:
        raise PropertyFailedError("an accepted transport file does not re-encode to its own bytes")
    return descriptor


_CHANNEL = Channel(name="news", title="Evening news", renditions=(
    Rendition(name="source", bandwidth=2_000_000, transport=_DESCRIPTOR.encode(), width=1280, height=720,
              codecs="avc1.64001f,mp4a.40.2", frame_rate=29.97, url="http://127.0.0.1:7800/app/get_transport_file"),
    Rendition(name="P144p30fps16x9", bandwidth=400_000, transport=_DESCRIPTOR_WITH_DISCOVERY.encode()),
))  # fmt: skip


def _run_channel(data: bytes) -> object:
    channel = Channel.decode(data)
    if channel.encode() != data:
        raise PropertyFailedError("an accepted channel file does not re-encode to its own bytes")
    if any(len(r.content_id) != 20 for r in channel.renditions):
        raise PropertyFailedError("a rendition's content id is not 20 bytes")
    return channel


def _run_frames(data: bytes) -> object:
    # Feed in pieces cut where the data says, so frames split across reads are covered too.
    decoder = codec.FrameDecoder()
    cut = (data[0] * 7) % (len(data) + 1) if data else 0
    messages = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    for message in messages:
        codec.encode_message(message)  # whatever we accepted we can also send
    return messages


def _credential_seeds() -> tuple[bytes, ...]:
    return (_credential(CredentialRole.SOURCE, "127.0.0.1", 0), _credential(CredentialRole.SUPPORT, "::1", 8621))


def _run_credential(data: bytes) -> object:
    # Parse and check the signature; whatever passes must name a holder we could compare with a peer's address.
    credential = _CREDENTIAL_VERIFIER.verify(data, now=0.0, remote_ip=None, listen_port=None)
    if credential.content_id != _CONTENT_ID:
        raise PropertyFailedError("a credential for another broadcast passed")
    return credential


def _run_handshake(data: bytes) -> object:
    handshake = codec.decode_handshake(data)
    if codec.encode_handshake(handshake) != data:
        raise PropertyFailedError("an accepted handshake does not re-encode to its own bytes")
    return handshake


def _run_tracker_http(data: bytes) -> object:
    response = parse_announce_response(data)
    if len(response.peers) > tracker_protocol.MAX_PEERS or not all(0 < p < 65536 for _, p in response.peers):
        raise PropertyFailedError(f"tracker answer gave {len(response.peers)} peers or a bad port")
    return response


def _run_tracker_udp(data: bytes) -> object:
    if data[:4] == b"\x00\x00\x00\x00":
        return parse_udp_connect_response(data, _UDP_TID)
    return parse_udp_announce_response(data, _UDP_TID)


class _TrackerServerTarget:
    """The internal tracker's request side: raw query string in, bencoded answer out, whatever the query."""

    def __init__(self) -> None:
        self.tracker = InternalTracker(max_swarms=50, max_peers_per_swarm=50, rng=random.Random(0))
        self.now = 0.0

    def __call__(self, data: bytes) -> object:
        try:
            params = parse_raw_query(data.decode("latin-1"))
        except ValueError:
            return None  # its own error (too long, too many parameters): answered with a failure reason
        self.now += 1.0
        body = self.tracker.handle_announce(params, "127.0.0.1", self.now)
        try:
            return bencoding.decode(body, max_size=tracker_protocol.MAX_HTTP_RESPONSE_BYTES)
        except bencoding.BencodeError as error:
            raise PropertyFailedError(f"the internal tracker answered invalid bencoding: {error}") from None


_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


def _run_magnet(data: bytes) -> object:
    text = data.decode("utf-8", "replace")
    if text.startswith("magnet:") or "//" in text:
        content_id, trackers = parse_magnet(text)
        if len(content_id) != 20 or not all(isinstance(t, str) for t in trackers):
            raise PropertyFailedError(f"magnet gave a {len(content_id)}-byte content id")
        return content_id, trackers
    content_id = parse_content_id(text)
    if len(content_id) != 20:
        raise PropertyFailedError(f"content id {text!r} gave {len(content_id)} bytes")
    if _HEX40.fullmatch(text.strip()) and content_id != bytes.fromhex(text.strip()):
        raise PropertyFailedError("hex content id decoded to other bytes")
    return content_id


def _run_ts(data: bytes) -> object:
    packetizer = ts.TsPacketizer()
    cut = (data[0] * 13) % (len(data) + 1) if data else 0
    packets = packetizer.feed(data[:cut]) + packetizer.feed(data[cut:])
    if any(len(p) != ts.TS_PACKET_SIZE or p[0] != ts.SYNC_BYTE for p in packets):
        raise PropertyFailedError("the packetizer returned something that is not a TS packet")
    whole = data[: len(data) - len(data) % ts.TS_PACKET_SIZE]
    offset = ts.find_random_access_offset(whole)
    if offset is not None and (offset % ts.TS_PACKET_SIZE or offset >= len(whole)):
        raise PropertyFailedError(f"random-access offset {offset} is not a packet start")
    ts.latest_clock_us(data)
    cache = ts.GopCache(max_bytes=4096)
    cache.feed(b"".join(packets))
    cache.snapshot()
    for packet in packets:
        ts.parse_clock_packet(packet)
    return offset


_METATRACKER_ANSWER_SEEDS = (
    b'{"trackers": ["http://127.0.0.1:6969/announce", "udp://127.0.0.2:80"], "startup_nodes": ["127.0.0.2:8621", '
    b'"[::1]:9"], "interval": 60}',
    b'{"trackers": [], "startup_nodes": [], "interval": 1e999}',
    b"{}",
)
_METATRACKER_CONFIG_SEEDS = (
    b'{"default": {"trackers": ["http://127.0.0.1:6969/announce"], "startup_nodes": ["127.0.0.2:8621"], '
    b'"interval": 60}, "' + b"ab" * 20 + b'": {"startup_nodes": ["[::1]:7764"], "interval": 30}}',
    b'{"' + b"CD" * 20 + b'": {"trackers": ["udp://127.0.0.1:80"]}}',
)


def _run_metatracker_answer(data: bytes) -> object:
    answer = parse_answer(data)
    if len(answer.trackers) > MAX_ANSWER_TRACKERS or len(answer.startup_nodes) > MAX_ANSWER_STARTUP_NODES:
        raise PropertyFailedError("a metatracker answer passed its caps")
    if not MIN_INTERVAL <= answer.interval <= MAX_INTERVAL or not all(0 < p < 65536 for _, p in answer.startup_nodes):
        raise PropertyFailedError(f"interval {answer.interval} or a start node's port out of range")
    return answer


def _run_metatracker_config(data: bytes) -> object:
    config = parse_config(data)
    # Whatever the server accepted, every client takes whole: nothing it serves is skipped as invalid.
    for body in (config.default, *list(config.answers.values())[:20]):
        if parse_answer(body).skipped:
            raise PropertyFailedError("the server serves entries its clients refuse")
    return config


def _run_metatracker_query(data: bytes) -> object:
    infohash = parse_infohash(data.decode("latin-1"))
    if not _HEX40.fullmatch(infohash) or infohash != infohash.lower():
        raise PropertyFailedError(f"query gave infohash {infohash!r}")
    return infohash


_HLS_URL = "http://origin.example/hls/live.m3u8"
_HLS_SEEDS = (
    b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2.000,\nlive-41.ts\n"
    b"#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nhttp://cdn.example/live-42.ts\n#EXT-X-ENDLIST\n",
    b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,NAME="lo"\nlo.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2500000\nhi.m3u8\n',
)


def _run_hls_playlist(data: bytes) -> object:
    parsed = parse_playlist(data.decode("utf-8", "replace"), _HLS_URL)
    if isinstance(parsed, MediaPlaylist):
        sequences = [s.sequence for s in parsed.segments]
        if sequences != list(range(parsed.media_sequence, parsed.media_sequence + len(sequences))):
            raise PropertyFailedError("segments are not numbered from the media sequence on")
        tracker = SequenceTracker(max_bad=2)
        for _ in range(3):  # the same playlist again and again: taken once
            taken = tracker.update(parsed).wanted
            if len(taken) > 1:
                raise PropertyFailedError("more than the live end taken from a first playlist")
        return parsed
    choose_variant(parsed)
    return parsed


def _segment_index_seeds() -> tuple[bytes, ...]:
    entry = IndexEntry(PieceFlags.RANDOM_ACCESS, 1880, b"\x11" * 32, b"\x22" * 64)
    return (SegmentIndex("live-9.ts", 9, 2000, (entry, entry)).encode(), SegmentIndex("", 0, 0, (entry,)).encode())


def _run_segment_index(data: bytes) -> object:
    index = SegmentIndex.decode(data)
    if index.encode() != data:
        raise PropertyFailedError("a decoded segment index does not re-encode to its bytes")
    return index


def all_targets() -> dict[str, Target]:
    """Fresh targets (the tracker-server one keeps state across inputs, like a real tracker)."""
    bencode_seeds = _bencode_seeds()
    targets = [
        Target("bencode", _run_bencode, (bencoding.BencodeError,), bencode_seeds),
        Target("bencode_lenient", _run_bencode_lenient, (bencoding.BencodeError,), bencode_seeds),
        Target("transport", _run_transport, (TransportError,),
               (_DESCRIPTOR.encode(), _DESCRIPTOR_WITH_DISCOVERY.encode(), *bencode_seeds[:2])),
        Target("channel", _run_channel, (ChannelError,), (_CHANNEL.encode(), *bencode_seeds[:2])),
        Target("frames", _run_frames, (ProtocolError,), _frame_seeds()),
        Target("handshake", _run_handshake, (ProtocolError,), _handshake_seeds()),
        Target("tracker_http", _run_tracker_http, (TrackerError,), bencode_seeds[1:4]),
        Target("tracker_udp", _run_tracker_udp, (TrackerError,), _udp_seeds()),
        Target("tracker_server", _TrackerServerTarget(), (), _query_seeds()),
        Target("magnet", _run_magnet, (JoinError,), _magnet_seeds()),
        Target("ts", _run_ts, (), _ts_seeds()),
        Target("credential", _run_credential, (CredentialError,), _credential_seeds()),
        Target("metatracker_answer", _run_metatracker_answer, (MetatrackerError,), _METATRACKER_ANSWER_SEEDS),
        Target("metatracker_config", _run_metatracker_config, (ConfigError,), _METATRACKER_CONFIG_SEEDS),
        Target("metatracker_query", _run_metatracker_query, (ValueError,),
               (b"infohash=" + b"ab" * 20, b"x=1&infohash=" + b"AB" * 20)),
        Target("hls_playlist", _run_hls_playlist, (PlaylistError,), _HLS_SEEDS),
        Target("segment_index", _run_segment_index, (SegmentIndexError,), _segment_index_seeds()),
    ]
    return {t.name: t for t in targets}


# -- mutation ------------------------------------------------------------------------------------------------

_INTERESTING_NUMBERS = (b"0", b"-0", b"00", b"-1", b"4294967295", b"4294967296", b"18446744073709551616",
                        b"9" * 25, b"65536", b"70000", b"99999999999")  # fmt: skip
_INTERESTING_WORDS = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1)
_TOKENS = (b"l", b"d", b"e", b"i", b":", b"0:", b"le", b"de", b"%", b"%5B", b"&", b"=", b"\x47", b"\x00", b"\xff")
_DIGIT_RUN = re.compile(rb"[0-9]+")


def _huge_length(rng: random.Random, data: bytearray) -> None:
    """Overwrite a decimal number or a binary word with a boundary value (length fields, counts, indices)."""
    runs = list(_DIGIT_RUN.finditer(data)) if rng.random() < 0.5 else []
    if runs:
        run = rng.choice(runs)
        data[run.start() : run.end()] = rng.choice(_INTERESTING_NUMBERS)
        return
    width = rng.choice((1, 2, 4, 8))
    if len(data) < width:
        return
    pos = rng.randrange(len(data) - width + 1)
    value = rng.choice(_INTERESTING_WORDS) & ((1 << (8 * width)) - 1)
    data[pos : pos + width] = value.to_bytes(width, "big")


def _mutate_once(rng: random.Random, data: bytearray, other: bytes) -> None:
    choice = rng.randrange(10)
    size = len(data)
    if choice == 0 and size:  # bit flip
        pos = rng.randrange(size)
        data[pos] ^= 1 << rng.randrange(8)
    elif choice == 1 and size:  # random byte
        data[rng.randrange(size)] = rng.randrange(256)
    elif choice == 2:  # insert bytes or a token
        chunk = rng.choice(_TOKENS) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 8))
        pos = rng.randint(0, size)
        data[pos:pos] = chunk
    elif choice == 3 and size:  # delete a run
        pos = rng.randrange(size)
        del data[pos : pos + rng.randint(1, 16)]
    elif choice == 4 and size:  # truncate
        del data[rng.randrange(size) :]
    elif choice == 5:
        _huge_length(rng, data)
    elif choice == 6:  # deep nesting
        depth = rng.choice((2, 31, 32, 33, 100, 5000, 60000))
        opener = rng.choice((b"l", b"d", b"ld", b"l0:"))
        pos = rng.randint(0, size)
        data[pos:pos] = opener * (depth // len(opener)) + (b"e" * depth if rng.random() < 0.5 else b"")
    elif choice == 7 and other:  # splice with another input
        a, b = rng.randint(0, size), rng.randint(0, len(other))
        data[a:] = other[b:]
    elif choice == 8 and size:  # repeat a chunk
        pos = rng.randrange(size)
        repeated = bytes(data[pos : pos + rng.randint(1, 64)])
        data[pos:pos] = repeated * rng.randint(1, 200)
    elif size >= 2:  # swap two bytes
        i, j = rng.randrange(size), rng.randrange(size)
        data[i], data[j] = data[j], data[i]


def mutate(rng: random.Random, seed: bytes, other: bytes = b"") -> bytes:
    """One to five mutations of ``seed`` (``other`` is spliced in sometimes), capped at MAX_INPUT bytes."""
    data = bytearray(seed)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
        _mutate_once(rng, data, other)
    if rng.random() < 0.02:
        return rng.randbytes(rng.randint(0, 64))
    return bytes(data[:MAX_INPUT])


assert MAX_INPUT > MAX_METADATA_SIZE  # so the transport size check is reached
