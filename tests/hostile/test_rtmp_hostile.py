"""Attacks on the broadcaster's RTMP port, while a real publisher streams: each attacker gets a log line and its
connection closed, and the real stream goes on."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from swarmcast.broadcaster.rtmp_chunks import MessageType, RtmpMessage, encode_message
from tests.broadcasting import (
    broadcaster,
    closed_within,
    publish,
    publisher,
    rtmp_connect,
    segment_uris,
    send_quietly,
    wait_log,
    wait_playlist,
)
from tests.procs import LOOPBACK

LIMITS = ("--publish-timeout", "2", "--stall-timeout", "2", "--max-rtmp-connections", "6",
          "--max-rtmp-message", "100000", "--segment-duration", "1", "--reconnect-grace", "2")  # fmt: skip


def newest(url: str) -> int:
    return int(segment_uris(wait_playlist(url))[-1].split("/")[1][:-3])


def test_rtmp_attacks_are_closed_and_the_real_stream_goes_on(tmp_path: Path) -> None:
    with broadcaster(tmp_path, *LIMITS) as (proc, port, base), \
            publisher(tmp_path, f"rtmp://127.0.0.1:{port}/live/good"):  # fmt: skip
        url = f"{base}/stream/good/source.m3u8"
        wait_playlist(url, segments=2, process=proc)
        before = newest(url)

        # Garbage: an HTTP request on the RTMP port.
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed_within(sock, 5)
        wait_log(proc, "not an RTMP handshake: first byte 0x47")

        # Slow loris: the handshake a byte at a time, never finished.
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            sock.sendall(b"\x03")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 10 and not closed:
                send_quietly(sock, [b"\x00"])
                sock.settimeout(0.5)
                try:
                    closed = sock.recv(65536) == b""
                except TimeoutError:
                    pass
                except OSError:
                    closed = True
            assert closed, "a trickled handshake kept its connection for 10 s"
        wait_log(proc, "no RTMP handshake within 2 s")

        # An oversize message: a 200,000-byte video frame against a 100,000-byte limit.
        sock = rtmp_connect(port)
        with sock:
            header = bytes([6]) + bytes(3) + (200_000).to_bytes(3, "big") + bytes([9]) + (1).to_bytes(4, "little")
            send_quietly(sock, [header + bytes(128)])
            assert closed_within(sock, 5)
        wait_log(proc, "more than the limit of 100000")

        # A huge AMF0 command (a connect object of 90,000 bytes, under the message limit): refused before it is
        # decoded, where decoding it would hold the event loop.
        sock = rtmp_connect(port)
        with sock:
            big = encode_message(RtmpMessage(MessageType.COMMAND_AMF0, 0, 0, b"\x02\x00\x07connect" + bytes(90_000), 3),
                                 128)  # fmt: skip
            send_quietly(sock, [big])
            assert closed_within(sock, 5)
        wait_log(proc, "command or data message of 90010 bytes")

        # A publisher that publishes and then sends nothing.
        sock = rtmp_connect(port)
        with sock:
            publish(sock, "stalled")
            assert closed_within(sock, 10)
        wait_log(proc, "stalled publisher: no media within 2 s")

        # A push of a codec that cannot go into MPEG-TS (Sorenson H.263, FLV's codec 2).
        sock = rtmp_connect(port)
        with sock:
            publish(sock, "sorenson")
            frames = [encode_message(RtmpMessage(MessageType.VIDEO, 1, n * 40, b"\x22" + bytes(range(200)) * 5, 6),
                                     128) for n in range(100)]  # fmt: skip
            for frame in frames:
                send_quietly(sock, [frame])
                time.sleep(0.02)
            assert closed_within(sock, 15)
        wait_log(proc, "stream 'sorenson' closed")

        # Connections beyond --max-rtmp-connections (6, the publisher is one) are closed at once.
        idle = [socket.create_connection((LOOPBACK, port), timeout=10) for _ in range(5)]
        try:
            time.sleep(0.3)
            with socket.create_connection((LOOPBACK, port), timeout=10) as extra:
                assert closed_within(extra, 3)
            wait_log(proc, "--max-rtmp-connections")
            for sock in idle:  # and the idle ones end at the publish timeout
                assert closed_within(sock, 10)
        finally:
            for sock in idle:
                sock.close()

        # Through all of it the real stream kept going.
        deadline = time.monotonic() + 30
        while newest(url) <= before + 2:
            assert time.monotonic() < deadline, f"the real stream stalled; stderr:\n{proc.stderr_tail()}"
            time.sleep(0.5)
        assert "Traceback" not in proc.stderr_path.read_text()
