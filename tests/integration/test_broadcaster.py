"""``swarmcast broadcaster`` with real publishers (``swarmcast testsrc --rtmp``) and real HLS readers, on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import pytest

from tests.broadcasting import (
    broadcaster,
    decode_segment,
    get,
    keyframe_pts,
    media_sequence,
    publisher,
    segment_uris,
    wait_log,
    wait_playlist,
)
from tests.procs import swarmcast_process


def test_videodac_recipe_live_playlist_advances_and_segments_decode(tmp_path: Path) -> None:
    """The recipe: publish to rtmp://HOST/hello_world, curl the P144p30fps16x9 playlist; 1 s segments."""
    with broadcaster(tmp_path, "--transcoding-options", "P144p30fps16x9", "--segment-duration", "1",
                     "--current-manifest") as (proc, rtmp, base), \
            publisher(tmp_path, f"rtmp://127.0.0.1:{rtmp}/hello_world"):  # fmt: skip
        url = f"{base}/stream/hello_world/P144p30fps16x9.m3u8"
        first = wait_playlist(url, segments=2, process=proc)
        status, headers, _ = get(url)
        assert status == 200
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Cache-Control"] == "max-age=1"
        deadline = time.monotonic() + 60
        later = first
        while segment_uris(later)[-1] == segment_uris(first)[-1] and time.monotonic() < deadline:
            time.sleep(0.5)
            later = wait_playlist(url, process=proc)
        assert int(segment_uris(later)[-1].split("/")[1][:-3]) > int(segment_uris(first)[-1].split("/")[1][:-3])
        assert media_sequence(later) >= media_sequence(first)
        assert "#EXT-X-TARGETDURATION:1" in later
        # A segment of each rendition decodes at its size; the profile's segment has its keyframes at the PTS of
        # a source segment's (cut alike: players switch renditions at any segment boundary).
        keyframes: dict[str, list[list[int]]] = {}
        for rendition, size in (("P144p30fps16x9", (256, 144)), ("source", (160, 96))):
            uris = segment_uris(wait_playlist(f"{base}/stream/hello_world/{rendition}.m3u8", process=proc))
            keyframes[rendition] = []
            for uri in uris[-3:-1] if rendition != "source" else uris:
                status, headers, data = get(f"{base}/stream/hello_world/{uri}")
                if status == 404:
                    continue  # left the window meanwhile
                assert status == 200 and headers["Content-Type"] == "video/mp2t"
                frames, width, height, _ = decode_segment(data)
                assert frames > 0 and (width, height) == size
                keyframes[rendition].append(keyframe_pts(data))
        assert keyframes["P144p30fps16x9"] and all(k in keyframes["source"] for k in keyframes["P144p30fps16x9"]), \
            keyframes
        status, _, master = get(f"{base}/stream/hello_world.m3u8")
        text = master.decode()
        assert status == 200 and "hello_world/source.m3u8" in text and "hello_world/P144p30fps16x9.m3u8" in text
        assert "RESOLUTION=256x144" in text and 'CODECS="avc1.' in text and "BANDWIDTH=" in text
        assert get(f"{base}/stream/current.m3u8")[2] == master
        assert get(f"{base}/stream/nosuch.m3u8")[0] == 404
        status, headers, page = get(f"{base}/stream/hello_world/player")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'data-manifest="/stream/hello_world.m3u8"' in page
        assert get(f"{base}/static/hls.min.js")[0] == 200
        assert get(f"{base}/stream/nosuch/player")[0] == 404
        assert get(f"{base}/stream/hello_world/P144p30fps16x9/999999.ts")[0] == 404
        # The continuous TS of a rendition starts on a segment: decodable from its first byte.
        with av.open(f"{base}/stream/hello_world/source.ts", mode="r", format="mpegts", timeout=10) as live:
            frames = 0
            for _ in live.decode(video=0):
                frames += 1
                if frames >= 10:
                    break
        assert frames == 10


def test_two_publishers_and_the_publish_key(tmp_path: Path) -> None:
    with broadcaster(tmp_path, "--publish-key", "s3cret") as (proc, rtmp, base), \
            publisher(tmp_path, f"rtmp://127.0.0.1:{rtmp}/live/cam1/s3cret", "cam1"), \
            publisher(tmp_path, f"rtmp://127.0.0.1:{rtmp}/live/cam2/s3cret", "cam2"), \
            publisher(tmp_path, f"rtmp://127.0.0.1:{rtmp}/live/nokey", "nokey"), \
            publisher(tmp_path, f"rtmp://127.0.0.1:{rtmp}/live/wrong/s3cre7", "wrong"):  # fmt: skip
        for cam in ("cam1", "cam2"):
            playlist = wait_playlist(f"{base}/stream/{cam}/source.m3u8", process=proc)
            assert decode_segment(get(f"{base}/stream/{cam}/{segment_uris(playlist)[-1]}")[2])[0] > 0
        assert "no publish key" in wait_log(proc, "'nokey'")
        assert "wrong publish key" in wait_log(proc, "wrong publish key")
        assert get(f"{base}/stream/nokey.m3u8")[0] == 404
        assert get(f"{base}/stream/wrong.m3u8")[0] == 404
        # A second publisher for a live id is refused; the first keeps it.
        with publisher(tmp_path, f"rtmp://127.0.0.1:{rtmp}/live/cam1/s3cret", "cam1-again"):
            wait_log(proc, "'cam1' is already being published")
        before = segment_uris(wait_playlist(f"{base}/stream/cam1/source.m3u8", process=proc))[-1]
        deadline = time.monotonic() + 30
        while segment_uris(get(f"{base}/stream/cam1/source.m3u8")[2].decode())[-1] == before:
            assert time.monotonic() < deadline, "cam1 stopped after the refused second publisher"
            time.sleep(0.5)


class _Reader(threading.Thread):
    """An HLS player stand-in: FFmpeg's HLS demuxer on the playlist URL, decoding video until it ends."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seconds = seconds
        self.decoded_at: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        try:
            with av.open(self.url, mode="r", timeout=10, options={"live_start_index": "-2"}) as container:
                for _ in container.decode(video=0):
                    self.decoded_at.append(time.monotonic())
                    if time.monotonic() > deadline:
                        break
        except BaseException as error:
            self.error = error


def test_publisher_restarted_within_the_grace_continues_the_playlist(tmp_path: Path) -> None:
    with broadcaster(tmp_path, "--segment-duration", "1", "--reconnect-grace", "8") as (proc, rtmp, base):
        url = f"{base}/stream/hello_world/source.m3u8"
        rtmp_url = f"rtmp://127.0.0.1:{rtmp}/hello_world"
        with publisher(tmp_path, rtmp_url, "first") as first:
            wait_playlist(url, segments=3, process=proc)
            reader = _Reader(url, seconds=60)
            reader.start()
            deadline = time.monotonic() + 30
            while not reader.decoded_at and time.monotonic() < deadline:
                time.sleep(0.2)
            assert reader.decoded_at, f"the HLS reader decoded nothing: {reader.error!r}"
            first.kill()
        before = wait_playlist(url, process=proc)
        last_before = int(segment_uris(before)[-1].split("/")[1][:-3])
        with publisher(tmp_path, rtmp_url, "second"):
            wait_log(proc, "within the 8 s grace")
            restarted = time.monotonic()
            after = wait_playlist(url, segments=3, process=proc, containing="#EXT-X-DISCONTINUITY")
            deadline = time.monotonic() + 40
            while int(segment_uris(after)[-1].split("/")[1][:-3]) < last_before + 3 and time.monotonic() < deadline:
                time.sleep(0.5)
                after = wait_playlist(url, process=proc)
            assert "#EXT-X-ENDLIST" not in after
            lines = after.splitlines()
            flagged = int(lines[lines.index("#EXT-X-DISCONTINUITY") + 2].split("/")[1][:-3])
            numbers = [int(uri.split("/")[1][:-3]) for uri in segment_uris(after)]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # the numbering goes on, no gap
            assert flagged > last_before and flagged in numbers[1:]
            deadline = time.monotonic() + 30
            while not any(t > restarted + 2 for t in reader.decoded_at) and time.monotonic() < deadline:
                assert reader.is_alive() or reader.error is None, f"reader stopped: {reader.error!r}"
                time.sleep(0.3)
            assert any(t > restarted + 2 for t in reader.decoded_at), (
                f"the reader decoded nothing after the restart (error {reader.error!r}, still running "
                f"{reader.is_alive()})")
        # No publisher: after the grace the playlist ends.
        ended = wait_playlist(url, process=proc, containing="#EXT-X-ENDLIST", timeout=30)
        assert ended.rstrip().endswith("#EXT-X-ENDLIST")
        reader.join(30)
        assert not reader.is_alive()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--transcoding-options", "P144p30fps16x9,P999p", "--transcoding-options"),
    ("--segment-duration", "0", "--segment-duration"),
    ("--rtmp-addr", "nowhere", "--rtmp-addr"),
])  # fmt: skip
def test_bad_flags_are_one_line_and_exit_2(tmp_path: Path, flag: str, value: str, message: str) -> None:
    with swarmcast_process(("broadcaster", flag, value), stderr_path=tmp_path / "bad.stderr") as proc:
        assert proc.popen.wait(30) == 2
        err = proc.stderr_tail().strip()
        assert len(err.splitlines()) == 1 and message in err, err
