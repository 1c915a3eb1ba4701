"""Telling MPEG-TS from what operators give by mistake (issue 8: an HTML page or an m3u8 playlist as --source)."""

from __future__ import annotations

import aiohttp
import pytest

from swarmcast.ingest.http_ts import describe_error
from swarmcast.ingest.sniff import SNIFF_BYTES, SYNC_PACKETS, sniff
from swarmcast.media.ts import TS_PACKET_SIZE


def ts_packets(count: int) -> bytes:
    return b"".join(bytes([0x47, 0x01, 0x00, 0x10 | (i % 16)]) + b"\xff" * 184 for i in range(count))


PLAYLIST = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n"
PAGE = b"<!DOCTYPE html>\n<html><head><title>Stream</title></head><body>player here</body></html>\n"


def test_ts_is_recognised_at_offset_zero() -> None:
    verdict = sniff(ts_packets(SYNC_PACKETS), "video/mp2t")
    assert verdict.is_ts is True and verdict.offset == 0


def test_ts_is_recognised_after_leading_garbage() -> None:
    # A server that starts mid-packet (or sends a few stray bytes) is still TS.
    verdict = sniff(b"\x00" * 100 + ts_packets(SYNC_PACKETS), None)
    assert verdict.is_ts is True and verdict.offset == 100


def test_ts_with_a_wrong_content_type_is_still_ts() -> None:
    # The bytes decide; many servers label TS application/octet-stream or even text/html.
    assert sniff(ts_packets(SYNC_PACKETS), "text/html").is_ts is True


def test_a_partial_ts_start_waits_for_more() -> None:
    assert sniff(ts_packets(3), None).is_ts is None


def test_hls_playlist_is_named_and_points_to_hls_input() -> None:
    verdict = sniff(PLAYLIST, "application/vnd.apple.mpegurl")
    assert verdict.is_ts is False
    assert "looks like an HLS playlist" in verdict.reason
    assert "--create-hls-transport" in verdict.reason


def test_hls_playlist_is_recognised_from_its_bytes_alone() -> None:
    assert "HLS playlist" in sniff(PLAYLIST, None).reason
    assert "HLS playlist" in sniff(b"\xef\xbb\xbf#extm3u\n", "text/plain").reason  # BOM, lower case


def test_hls_by_content_type_when_the_bytes_say_nothing() -> None:
    verdict = sniff(b"x" * SNIFF_BYTES, "application/x-mpegURL; charset=utf-8")
    assert verdict.is_ts is False and "HLS playlist" in verdict.reason


def test_html_page_is_named() -> None:
    verdict = sniff(PAGE, "text/html; charset=utf-8")
    assert verdict.is_ts is False and "HTML page" in verdict.reason
    assert "HTML page" in sniff(b"  <html>", None).reason


def test_short_input_that_ended_is_not_ts() -> None:
    verdict = sniff(b"hello", "text/plain", ended=True)
    assert verdict.is_ts is False and "ended after 5 bytes" in verdict.reason
    assert sniff(b"", None, ended=True).reason == "the input ended before sending any byte"


def test_binary_noise_is_refused_once_enough_bytes_came() -> None:
    noise = bytes(range(256)) * (SNIFF_BYTES // 256 + 1)
    assert sniff(noise[: SNIFF_BYTES - 1], None).is_ts is None
    verdict = sniff(noise, "application/octet-stream")
    assert verdict.is_ts is False
    assert "no 0x47 sync bytes at 188-byte spacing" in verdict.reason


def test_a_few_stray_sync_bytes_do_not_make_ts() -> None:
    data = bytearray(b"\x00" * SNIFF_BYTES)
    for k in range(SYNC_PACKETS - 1):  # one short of the run needed
        data[k * TS_PACKET_SIZE] = 0x47
    assert sniff(bytes(data), None).is_ts is False


def test_reason_is_one_line_without_the_input_bytes() -> None:
    verdict = sniff(b"<html>" + b"secret\n" * 100, None)
    assert "\n" not in verdict.reason and "secret" not in verdict.reason


class _Key:
    host, port, ssl = "127.0.0.1", 9, None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            aiohttp.ClientConnectorError(_Key(), ConnectionRefusedError(111, "Connection refused")),  # type: ignore[arg-type]
            "connection refused by 127.0.0.1:9",
        ),
        (
            aiohttp.ClientConnectorDNSError(_Key(), OSError(-2, "Name or service not known")),  # type: ignore[arg-type]
            "cannot resolve host '127.0.0.1' (DNS: Name or service not known)",
        ),
        (aiohttp.SocketTimeoutError(), "no data for 7 s (--source-read-timeout)"),
        (aiohttp.ConnectionTimeoutError(), "connect timeout"),
        (aiohttp.ServerDisconnectedError(), "the server closed the connection"),
    ],
)
def test_errors_are_described_in_operator_terms(error: BaseException, expected: str) -> None:
    assert expected in describe_error(error, 7.0)
