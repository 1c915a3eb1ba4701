"""HLS input without sockets: the playlist parser (bounded, fuzzed), the media-sequence tracker, the segment index,
the HLS transport keys and private file, and the engine's fallback policy."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmcast.hls_transport import PrivateHlsFile, create_hls_transport, is_private_hls_file
from swarmcast.ingest.hls_parse import (
    MAX_PLAYLIST_LINES,
    MAX_SEGMENTS,
    MasterPlaylist,
    MediaPlaylist,
    PlaylistError,
    choose_variant,
    parse_playlist,
)
from swarmcast.ingest.hls_tracker import MAX_CATCH_UP, SequenceTracker
from swarmcast.ingest.sniff import sniff
from swarmcast.node.hls_fallback import FallbackPolicy, segment_url
from swarmcast.node.hls_signer import relative_uri
from swarmcast.segment_index import (
    IndexEntry,
    SegmentIndex,
    SegmentIndexError,
    check_parts,
    check_segment,
    part_span,
    split_segment,
)
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import PieceFlags

URL = "http://origin.example/hls/live.m3u8"


def media(first: int, count: int, *, ended: bool = False, target: int = 2, stem: str = "live") -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for seq in range(first, first + count):
        lines += ["#EXTINF:2.000,", f"{stem}-{seq}.ts"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def playlist(first: int, count: int, **kwargs: object) -> MediaPlaylist:
    parsed = parse_playlist(media(first, count, **kwargs), URL)  # type: ignore[arg-type]
    assert isinstance(parsed, MediaPlaylist)
    return parsed


# -- parser --------------------------------------------------------------------------------------------------


def test_media_playlist_segments_are_resolved_and_numbered() -> None:
    parsed = playlist(41, 3)
    assert parsed.media_sequence == 41 and parsed.target_duration == 2
    assert [s.sequence for s in parsed.segments] == [41, 42, 43]
    assert parsed.segments[0].url == "http://origin.example/hls/live-41.ts"
    assert not parsed.ended and playlist(1, 1, ended=True).ended


def test_master_playlist_picks_highest_bandwidth_or_named_variant() -> None:
    text = ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow/index.m3u8\n"
            '#EXT-X-STREAM-INF:BANDWIDTH=2500000,NAME="hd"\nhigh/index.m3u8\n'
            "#EXT-X-STREAM-INF:BANDWIDTH=1200000\nmid.m3u8\n")  # fmt: skip
    parsed = parse_playlist(text, URL)
    assert isinstance(parsed, MasterPlaylist)
    assert choose_variant(parsed).url == "http://origin.example/hls/high/index.m3u8"
    assert choose_variant(parsed, "mid").url == "http://origin.example/hls/mid.m3u8"
    with pytest.raises(PlaylistError, match="no variant 'nope'"):
        choose_variant(parsed, "nope")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<html>", "no #EXTM3U"),
        ("#EXTM3U\nseg.ts\n", "without #EXTINF"),
        ("#EXTM3U\n#EXTINF:nan,\nseg.ts\n", "out of range"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-1\n#EXTINF:2,\nseg.ts\n", "out of range"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:99999999999999999999\n#EXTINF:2,\na.ts\n", "out of range"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:" + "9" * 100 + "\n", "not a number"),
        ("#EXTM3U\n#EXTINF:2,\nfile:///etc/passwd\n", "not http"),
        ("#EXTM3U\n#EXTINF:2,\n" + "a" * 5000 + ".ts\n", "URI of 5003"),
        ("#EXTM3U\n#EXTINF:99999,\nseg.ts\n", "duration"),
        ("#EXTM3U\n" + "#EXT-X-FOO\n" * (MAX_PLAYLIST_LINES + 1), "lines"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "#EXTINF:2,\ns.ts\n" * (MAX_SEGMENTS + 1), "segments"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", "without variants"),
        ("#EXTM3U\n#EXTINF:2,\na.ts\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2,\nb.ts\n", "after a segment"),  # fuzz find
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-MEDIA-SEQUENCE:9\n", "twice"),
    ],
    ids=lambda value: value[:30] if isinstance(value, str) else None,
)
def test_hostile_playlists_are_refused_with_a_reason(text: str, error: str) -> None:
    with pytest.raises(PlaylistError, match=error):
        parse_playlist(text, URL)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_parser_fails_only_with_its_own_error(text: str) -> None:
    for candidate in (text, "#EXTM3U\n" + text):
        with contextlib.suppress(PlaylistError):
            parse_playlist(candidate, URL)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["#EXTINF:2,", "#EXTINF:x,", "#EXT-X-MEDIA-SEQUENCE:5", "#EXT-X-DISCONTINUITY",
                                 "#EXT-X-ENDLIST", "a.ts", "http://h/b.ts", "#EXT-X-STREAM-INF:BANDWIDTH=9",
                                 "#EXT-X-TARGETDURATION:2", "", "v.m3u8"]), max_size=60))  # fmt: skip
def test_parser_on_tag_soup(lines: list[str]) -> None:
    with contextlib.suppress(PlaylistError):
        parse_playlist("#EXTM3U\n" + "\n".join(lines), URL)


def test_sniff_routes_playlists_to_hls() -> None:
    assert sniff(media(0, 2).encode(), None).hls
    assert sniff(b"...", "application/vnd.apple.mpegurl", ended=True).hls
    assert not sniff(b"<html>", "text/html").hls


# -- tracker -------------------------------------------------------------------------------------------------


def sequences(update: object) -> list[tuple[int, bool]]:
    return [(w.sequence, w.discontinuity) for w in update.wanted]  # type: ignore[attr-defined]


def test_tracker_joins_at_live_end_then_takes_each_new_segment_once_in_order() -> None:
    tracker = SequenceTracker()
    assert sequences(tracker.update(playlist(10, 3))) == [(12, True)]
    assert sequences(tracker.update(playlist(10, 3))) == []  # unchanged playlist
    assert sequences(tracker.update(playlist(11, 4))) == [(13, False), (14, False)]


def test_tracker_marks_a_gap_and_bounds_catch_up() -> None:
    tracker = SequenceTracker()
    tracker.update(playlist(0, 1))
    assert sequences(tracker.update(playlist(5, 2))) == [(5, True), (6, False)]  # 1..4 went by unseen
    got = sequences(tracker.update(playlist(7, 100)))
    assert len(got) == MAX_CATCH_UP and got[0] == (104, True) and got[-1][0] == 106


def test_backwards_media_sequence_is_bad_and_resets_after_max_errors() -> None:
    tracker = SequenceTracker(max_bad=3)
    tracker.update(playlist(100, 3))
    for _ in range(2):
        update = tracker.update(playlist(5, 3))
        assert update.bad and "backwards" in update.bad and not update.wanted and not update.reset
    update = tracker.update(playlist(5, 3))
    assert update.reset and sequences(update) == [(7, True)]  # the live end of the new playlist
    assert sequences(tracker.update(playlist(6, 3))) == [(8, False)]
    assert tracker.resets == 1


def test_a_good_playlist_clears_the_bad_count() -> None:
    tracker = SequenceTracker(max_bad=2)
    tracker.update(playlist(100, 3))
    assert tracker.update(playlist(5, 3)).bad
    assert sequences(tracker.update(playlist(101, 3))) == [(103, False)]
    assert not tracker.update(playlist(5, 3)).reset  # one bad again, not two in a row


def test_vanished_segments_are_bad() -> None:
    tracker = SequenceTracker(max_bad=5)
    tracker.update(playlist(100, 3))  # took 102
    assert "vanished" in (tracker.update(playlist(100, 2)).bad or "")
    assert "lost all" in (tracker.update(parse_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:2\n" +
                                                        "#EXT-X-MEDIA-SEQUENCE:100\n", URL)).bad or "")  # type: ignore[arg-type]


def test_force_monotonic_follows_an_origin_restart_at_once_and_keeps_numbers_rising() -> None:
    tracker = SequenceTracker(max_bad=5, force_monotonic=True)
    assert sequences(tracker.update(playlist(100, 3))) == [(102, True)]
    update = tracker.update(playlist(0, 2))  # the origin restarted
    assert update.restarted and not update.bad and sequences(update) == [(103, True)]
    assert sequences(tracker.update(playlist(0, 3))) == [(104, False)]
    assert tracker.bad_total == 0


def test_without_force_monotonic_our_sequence_is_the_origins() -> None:
    tracker = SequenceTracker(max_bad=1)
    tracker.update(playlist(100, 3))
    update = tracker.update(playlist(0, 2))
    assert update.reset and sequences(update) == [(1, True)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 6)), min_size=1, max_size=40), st.booleans())
def test_tracker_never_fetches_a_segment_twice_within_a_run_and_monotonic_means_rising(
    reads: list[tuple[int, int]], monotonic: bool
) -> None:
    tracker = SequenceTracker(max_bad=3, force_monotonic=monotonic)
    taken: list[int] = []
    for first, count in reads:
        update = tracker.update(playlist(first, count))
        if update.reset or update.restarted:
            taken = []
        for wanted in update.wanted:
            assert wanted.segment.sequence not in taken
            taken.append(wanted.segment.sequence)
        ours = [w.sequence for w in update.wanted]
        assert ours == sorted(ours)
    if monotonic and tracker.our_last is not None:
        assert tracker.our_last >= 0


# -- segment index -------------------------------------------------------------------------------------------


def make_index(data: bytes, piece_size: int) -> SegmentIndex:
    parts = split_segment(data, piece_size)
    entries = tuple(IndexEntry(PieceFlags.RANDOM_ACCESS if i == 0 else PieceFlags.NONE, len(p),
                               hashlib.sha256(p).digest(), bytes([i]) * 64) for i, p in enumerate(parts))  # fmt: skip
    return SegmentIndex("live-7.ts", 7, 2000, entries)


def test_segment_index_round_trips_and_checks_a_segment() -> None:
    data = bytes(range(256)) * 100
    index = make_index(data, 188 * 40)
    assert SegmentIndex.decode(index.encode()) == index
    parts = check_segment(index, data)
    assert parts is not None and b"".join(parts) == data and len(parts) == len(index.entries)
    tampered = bytearray(data)
    tampered[5000] ^= 1
    assert check_segment(index, bytes(tampered)) is None
    assert check_segment(index, data + b"x") is None and check_segment(index, data[:-1]) is None


def test_a_byte_range_of_the_missing_pieces_is_checked_alone() -> None:
    data = bytes(range(256)) * 100  # 25600 bytes as pieces of 7520: 7520, 7520, 7520, 3040
    index = make_index(data, 188 * 40)
    assert part_span(index, 1, 3) == (7520, 22560)
    parts = check_parts(index, 1, 3, data[7520:22560])
    assert parts == [data[7520:15040], data[15040:22560]]
    assert check_parts(index, 1, 3, data[7520:22561]) is None  # one byte too many
    assert check_parts(index, 1, 3, data[7521:22561]) is None  # shifted
    assert check_parts(index, 3, 2, b"") is None and check_parts(index, 0, 5, data) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_segment_index_decoder_fails_only_with_its_own_error(data: bytes) -> None:
    for candidate in (data, b"SCSI\x01" + data):
        with contextlib.suppress(SegmentIndexError):
            SegmentIndex.decode(candidate)


def test_relative_uri() -> None:
    assert relative_uri(URL, "http://origin.example/hls/live-3.ts") == "live-3.ts"
    assert relative_uri(URL, "http://cdn.example/x/live-3.ts") == "http://cdn.example/x/live-3.ts"


# -- transport keys and the private file ---------------------------------------------------------------------


def test_hls_keys_are_optional_and_hashed() -> None:
    base = Descriptor(name="n", title="T", piece_size=18800, bitrate=1, public_key=b"k" * 32)
    hls = Descriptor(name="n", title="T", piece_size=18800, bitrate=1, public_key=b"k" * 32, hls_manifest=URL,
                     hls_base_url="http://cdn.example/hls/")  # fmt: skip
    assert b"hls_" not in base.encode()  # absent: existing content ids unchanged
    assert Descriptor.decode(hls.encode()) == hls and hls.content_id != base.content_id
    bad = hls.encode().replace(b"http://origin", b"file:///origin")
    with pytest.raises(TransportError, match="hls_manifest"):
        Descriptor.decode(bad.replace(b"35:file", b"36:file"))


def test_private_file_round_trip_and_key_check() -> None:
    template = Descriptor(name="n", title="T", piece_size=18800, bitrate=1, public_key=b"\0" * 32)
    descriptor, private = create_hls_transport(template, URL)
    data = private.encode()
    assert is_private_hls_file(data) and not is_private_hls_file(descriptor.encode())
    assert PrivateHlsFile.decode(data).descriptor == descriptor
    _, other = create_hls_transport(template, URL)
    forged = PrivateHlsFile(private.transport, URL, other.private_key).encode()
    with pytest.raises(TransportError, match="does not match"):
        PrivateHlsFile.decode(forged)


# -- fallback policy ------------------------------------------------------------------------------------------


def test_fallback_waits_for_peers_then_fetches_what_a_player_still_needs() -> None:
    policy = FallbackPolicy(fetch_after=1.0)
    index = make_index(b"x" * 1000, 400)  # 3 data pieces: 11, 12, 13
    policy.note_index(10, index, now=100.0)
    assert policy.due(100.5, set(), [10]) == []  # peers still have time
    assert policy.due(101.0, set(), [10]) == [10]
    assert policy.due(101.0, {11, 12, 13}, [10]) == []  # peers delivered
    assert policy.due(101.0, set(), [14]) == []  # the player is past it
    assert policy.due(101.0, set(), []) == []  # nobody plays
    policy.tried.add(10)
    assert policy.due(102.0, set(), [10]) == []  # tried once: never again
    hidden = SegmentIndex("", 1, 2000, index.entries)
    policy.note_index(20, hidden, now=100.0)
    assert policy.due(105.0, set(), [20]) == []  # --hide-hls-segments: nothing to fetch


# -- command lines --------------------------------------------------------------------------------------------


def test_streaming_utils_hls_support_line_parses_as_a_support_node(tmp_path: Path) -> None:
    from swarmcast.cli import build_parser
    from swarmcast.commands.acestream import translate

    line = ["--url", "Y.acelive", "--public-transport-file", "X.acelive", "--stream-support-node",
            "--hide-hls-segments", "--hls-broadcast-last-source-piece", "--hls-bad-manifest-max-errors", "5",
            "--hls-bad-manifest-retry-interval", "2", "--hls-force-monotonic-sequence", "1",
            "--port", "8621"]  # fmt: skip
    words = translate(line)
    assert words[:2] == ["node", "support"]
    args = build_parser().parse_args(words)
    assert args.hide_hls_segments and args.hls_broadcast_last_source_piece
    assert args.hls_bad_manifest_max_errors == 5 and args.hls_bad_manifest_retry_interval == 2.0
    assert args.hls_force_monotonic_sequence is True and args.public_transport_file == Path("X.acelive")


def test_create_hls_transport_writes_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from swarmcast.commands.acestream import main

    public, private = tmp_path / "x.acelive", tmp_path / "y.acelive"
    code = main(["--create-hls-transport", "--url", URL, "--title", "T", "--output-public", str(public),
                 "--output-private", str(private), "--hide-hls-manifest", "--base-url", "http://cdn.example/hls/",
                 "--provider-key", "pk", "--sid", "s1", "--tracker", "udp://t.example:6969",
                 "--category", "sport"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    descriptor = Descriptor.decode(public.read_bytes())
    # --hide-hls-manifest: neither the manifest nor the segments' base URL names the origin in the public file.
    assert descriptor.hls_manifest == "" and descriptor.hls_base_url == ""
    assert b"cdn.example" not in public.read_bytes()
    assert descriptor.provider_key == "pk" and descriptor.categories == ("sport",)
    secret = PrivateHlsFile.decode(private.read_bytes())
    assert secret.hls_manifest == URL and secret.descriptor == descriptor
    assert private.stat().st_mode & 0o077 == 0
    assert descriptor.infohash in capsys.readouterr().out


def test_create_hls_transport_refuses_a_bad_url(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from swarmcast.commands.acestream import main

    try:
        code = main(["--create-hls-transport", "--url", "file:///x.m3u8", "--title", "T", "--output-public",
                     str(tmp_path / "x.acelive")])  # fmt: skip
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and "--url" in err and err.count("\n") == 1


def test_fallback_fetches_only_from_the_origin_the_transport_file_names() -> None:
    assert segment_url(URL, "live-3.ts") == "http://origin.example/hls/live-3.ts"
    assert segment_url(URL, "/other/live-3.ts") == "http://origin.example/other/live-3.ts"
    for uri in ("http://192.168.1.1/admin", "//evil.example/x.ts", "https://origin.example/hls/x.ts",
                "http://origin.example:8080/hls/x.ts", "file:///etc/passwd"):
        assert segment_url(URL, uri) is None, uri


# -- the signer's pieces --------------------------------------------------------------------------------------


class _Swarm:
    def __init__(self) -> None:
        self.pieces: list[object] = []

    def add_local_piece(self, piece: object, now: float) -> None:
        self.pieces.append(piece)


@pytest.mark.parametrize("hide", [False, True])
def test_signer_emits_a_signed_index_then_the_segment_cut_at_piece_size(tmp_path: Path, hide: bool) -> None:
    from swarmcast.ingest.hls import FetchedSegment, HlsSettings
    from swarmcast.node.config import NodeCommon, SourceConfig
    from swarmcast.node.hls_signer import HlsSignerNode
    from swarmcast.transport import PieceVerifier

    template = Descriptor(name="n", title="T", piece_size=188 * 10, bitrate=1, public_key=b"\0" * 32,
                          hls_manifest=URL)  # fmt: skip
    descriptor, private = create_hls_transport(template, URL)
    config = SourceConfig(common=NodeCommon(port=0), source_url=URL, name="n", title="T", bitrate=1,
                          metadata_dir=tmp_path, publish_dir=tmp_path)  # fmt: skip
    node = HlsSignerNode(config, private, hls=HlsSettings(), hide_segments=hide)
    swarm = _Swarm()
    node.swarm, node._key, node.descriptor, node._next_index = swarm, private.key(), descriptor, 40  # type: ignore[assignment]
    data = bytes(range(188)) * 25  # 4700 bytes: pieces of 1880, 1880, 940
    node.emit_segment(FetchedSegment(data, "http://origin.example/hls/live-9.ts", 9, 1.0, True))
    pieces = swarm.pieces
    assert [p.index for p in pieces] == [40, 41, 42, 43]  # type: ignore[attr-defined]
    verifier = PieceVerifier(descriptor.public_key, descriptor.content_id)
    assert all(verifier.verify(p.index, p.flags, p.data, p.signature) for p in pieces)  # type: ignore[attr-defined]
    index = SegmentIndex.decode(pieces[0].data)  # type: ignore[attr-defined]
    assert pieces[0].flags == PieceFlags.METADATA  # type: ignore[attr-defined]
    assert index.uri == ("" if hide else "live-9.ts") and index.sequence == 9 and index.duration_ms == 1000
    assert [e.length for e in index.entries] == [1880, 1880, 940]
    assert pieces[1].flags == PieceFlags.RANDOM_ACCESS | PieceFlags.DISCONTINUITY  # type: ignore[attr-defined]
    assert [e.signature for e in index.entries] == [p.signature for p in pieces[1:]]  # type: ignore[attr-defined]
    assert check_segment(index, data) is not None and node._next_index == 44
    assert (tmp_path / "n.sauth").exists()  # the private file's key became the .sauth
