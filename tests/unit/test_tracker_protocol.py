"""Tracker protocols (HTTP, UDP), the internal tracker's core and the announce schedule: no sockets, no sleeps."""

from __future__ import annotations

import contextlib
import random
import re
import struct
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmcast.bencoding import decode as bdecode
from swarmcast.bencoding import encode as bencode
from swarmcast.discovery.announcer import TrackerSchedule
from swarmcast.discovery.tracker_protocol import (
    MAX_HTTP_RESPONSE_BYTES,
    MAX_PEERS,
    UDP_PROTOCOL_ID,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    TrackerError,
    TransactionIdMismatchError,
    UdpAction,
    build_announce_url,
    encode_udp_announce_request,
    encode_udp_connect_request,
    parse_announce_response,
    parse_udp_announce_response,
    parse_udp_connect_response,
)
from swarmcast.discovery.tracker_server import NOT_AUTHORIZED, InternalTracker, parse_raw_query

# Every byte value, including "&", "=", "%", "+", "/" and NUL, so no encoding shortcut survives.
NASTY_HASH = bytes(range(0, 256, 13))[:20].ljust(20, b"&")
HASH_A = b"\x00&=%+/ \xff\x80?#" + b"A" * 9
HASH_B = b"B" * 20


def request(
    *, info_hash: bytes = HASH_A, peer_id: bytes = b"-SC0001-000000000001", port: int = 6881,
    event: AnnounceEvent = AnnounceEvent.STARTED, left: int = 100, numwant: int = 50,
) -> AnnounceRequest:
    return AnnounceRequest(info_hash, peer_id, port, 1, 2, left, event, numwant)


def peer_id(n: int) -> bytes:
    return b"-SC0001-%012d" % n


# --------------------------------------------------------------------------------------------------------------------
# HTTP: URL


@pytest.mark.parametrize("info_hash", [NASTY_HASH, HASH_A, bytes(20), b"\xff" * 20])
def test_announce_url_round_trips_binary_info_hash(info_hash: bytes) -> None:
    url = build_announce_url("http://tracker.example:6969/announce", request(info_hash=info_hash))
    parts = urlsplit(url)
    assert parts.path == "/announce"
    params = parse_raw_query(parts.query)
    assert params["info_hash"] == info_hash
    assert params["peer_id"] == b"-SC0001-000000000001"
    assert params["port"] == b"6881"
    assert params["uploaded"] == b"1"
    assert params["downloaded"] == b"2"
    assert params["left"] == b"100"
    assert params["event"] == b"started"
    assert params["compact"] == b"1"
    # Only unreserved characters and escapes: nothing a client or proxy might reinterpret.
    assert set(parts.query) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%&=")


def test_announce_url_keeps_existing_query_and_omits_event_none() -> None:
    url = build_announce_url("https://t.example/a/announce?passkey=s3cr3t&x=1",
                             request(event=AnnounceEvent.NONE))
    assert url.startswith("https://t.example/a/announce?passkey=s3cr3t&x=1&info_hash=")
    params = parse_raw_query(urlsplit(url).query)
    assert params["passkey"] == b"s3cr3t"
    assert "event" not in params


def test_announce_url_event_names_and_non_compact() -> None:
    for event, name in [(AnnounceEvent.STOPPED, b"stopped"), (AnnounceEvent.COMPLETED, b"completed")]:
        params = parse_raw_query(urlsplit(build_announce_url("http://t/announce", request(event=event))).query)
        assert params["event"] == name
    params = parse_raw_query(urlsplit(build_announce_url("http://t/announce", request(), compact=False)).query)
    assert params["compact"] == b"0"


def test_announce_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="udp://t:1"):
        build_announce_url("udp://t:1", request())


def test_announce_request_validates_our_own_values() -> None:
    with pytest.raises(ValueError, match="info_hash"):
        request(info_hash=b"short")
    with pytest.raises(ValueError, match="peer_id"):
        AnnounceRequest(HASH_A, b"x", 1, 0, 0, 0, AnnounceEvent.NONE)
    with pytest.raises(ValueError, match="port"):
        request(port=0)
    with pytest.raises(ValueError, match="left"):
        request(left=-1)


# --------------------------------------------------------------------------------------------------------------------
# HTTP: responses


def test_parse_compact_response() -> None:
    body = bencode({
        b"interval": 1800, b"complete": 3, b"incomplete": 4,
        b"peers": bytes([127, 0, 0, 1, 0x1A, 0xE1, 10, 1, 2, 3, 0, 80]),
    })
    assert parse_announce_response(body) == AnnounceResponse(
        interval=1800, peers=(("127.0.0.1", 6881), ("10.1.2.3", 80)), complete=3, incomplete=4,
    )


def test_parse_response_with_peers6_and_without_counts() -> None:
    v6 = bytes(15) + b"\x01" + b"\x00\x50"  # ::1 port 80
    body = bencode({b"interval": 60, b"peers": b"", b"peers6": v6})
    assert parse_announce_response(body) == AnnounceResponse(60, (("::1", 80),), None, None)


def test_parse_non_compact_response() -> None:
    body = bencode({b"interval": 10, b"peers": [
        {b"ip": b"192.0.2.7", b"port": 51413, b"peer id": b"x" * 20},
        {b"ip": b"2001:db8::1", b"port": 1},
        {b"ip": b"tracker-chosen.example", b"port": 2},  # DNS names are skipped, never resolved
    ]})
    assert parse_announce_response(body).peers == (("192.0.2.7", 51413), ("2001:db8::1", 1))


def test_parse_drops_port_zero_and_duplicates() -> None:
    peer = bytes([1, 2, 3, 4, 0, 7])
    body = bencode({b"interval": 10, b"peers": peer + peer + bytes([1, 2, 3, 5, 0, 0])})
    assert parse_announce_response(body).peers == (("1.2.3.4", 7),)


def test_parse_failure_reason() -> None:
    with pytest.raises(TrackerError, match=r"^Requested download is not authorized"):
        parse_announce_response(bencode({b"failure reason": NOT_AUTHORIZED.encode()}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid bencode"),
        (b"<html>oops</html>", "not valid bencode"),
        (b"d8:intervali1ee trailing", "not valid bencode"),
        (bencode([1, 2]), "not a bencoded dictionary"),
        (bencode({b"peers": b""}), "interval"),
        (bencode({b"interval": -1}), "interval"),
        (bencode({b"interval": b"10"}), "interval"),
        (bencode({b"interval": 10, b"peers": b"12345"}), "multiple of 6"),
        (bencode({b"interval": 10, b"peers": 5}), "neither"),
        (bencode({b"interval": 10, b"peers": [b"x"]}), "not a dictionary"),
        (bencode({b"interval": 10, b"peers": [{b"ip": b"1.2.3.4"}]}), "port"),
        (bencode({b"interval": 10, b"peers": [{b"ip": b"1.2.3.4", b"port": 70000}]}), "out of range"),
        (bencode({b"interval": 10, b"peers6": b"1"}), "multiple of 18"),
        (bencode({b"interval": 10, b"complete": -3}), "complete"),
        (b"d8:intervali1e5:peers" + b"%d:" % (MAX_HTTP_RESPONSE_BYTES) + bytes(MAX_HTTP_RESPONSE_BYTES) + b"e",
         "exceeds"),
    ],
)
def test_parse_malformed(body: bytes, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_announce_response(body)


def test_parse_caps_peer_count() -> None:
    many = b"".join(struct.pack(">4sH", i.to_bytes(4, "big"), 1) for i in range(1, MAX_PEERS + 500))
    assert len(parse_announce_response(bencode({b"interval": 1, b"peers": many})).peers) == MAX_PEERS


@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes_only_raises_tracker_error(body: bytes) -> None:
    with contextlib.suppress(TrackerError):
        parse_announce_response(body)


_bencodable = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(
        st.sampled_from([b"interval", b"peers", b"peers6", b"complete", b"incomplete", b"failure reason", b"ip",
                         b"port", b"x"]),
        children, max_size=6,
    ),
    max_leaves=20,
)


@given(_bencodable)
def test_parse_arbitrary_structure_only_raises_tracker_error(value: Any) -> None:
    try:
        result = parse_announce_response(bencode(value))
    except TrackerError:
        return
    assert all(0 < port < 65536 for _, port in result.peers)


# --------------------------------------------------------------------------------------------------------------------
# UDP (BEP 15)


def test_udp_connect_round_trip() -> None:
    packet = encode_udp_connect_request(0xDEADBEEF)
    assert packet == struct.pack(">QII", UDP_PROTOCOL_ID, 0, 0xDEADBEEF)
    assert len(packet) == 16
    answer = struct.pack(">IIQ", UdpAction.CONNECT, 0xDEADBEEF, 0x0123456789ABCDEF)
    assert parse_udp_connect_response(answer, 0xDEADBEEF) == 0x0123456789ABCDEF


def test_udp_connect_bad_transaction_id_and_length() -> None:
    answer = struct.pack(">IIQ", UdpAction.CONNECT, 1, 7)
    with pytest.raises(TransactionIdMismatchError):
        parse_udp_connect_response(answer, 2)
    with pytest.raises(TrackerError, match="shorter"):
        parse_udp_connect_response(answer[:12], 1)
    with pytest.raises(TrackerError, match="too short"):
        parse_udp_connect_response(answer[:5], 1)
    with pytest.raises(TrackerError, match="expected 0"):
        parse_udp_connect_response(struct.pack(">IIQ", UdpAction.ANNOUNCE, 1, 7), 1)


def test_udp_error_action() -> None:
    with pytest.raises(TrackerError, match=r"^no such torrent$"):
        parse_udp_announce_response(struct.pack(">II", UdpAction.ERROR, 9) + b"no such torrent", 9)
    # An error for someone else's transaction is not ours to act on.
    with pytest.raises(TransactionIdMismatchError):
        parse_udp_connect_response(struct.pack(">II", UdpAction.ERROR, 8) + b"x", 9)


def test_udp_announce_request_layout() -> None:
    req = request(info_hash=NASTY_HASH, event=AnnounceEvent.STOPPED, numwant=33, port=51413)
    packet = encode_udp_announce_request(0xAABBCCDDEEFF0011, 77, req, key=5)
    assert len(packet) == 98
    (cid, action, tid, info_hash, pid, downloaded, left, uploaded, event, ip, key, numwant, port) = struct.unpack(
        ">QII20s20sQQQIIIiH", packet)
    assert (cid, action, tid) == (0xAABBCCDDEEFF0011, UdpAction.ANNOUNCE, 77)
    assert (info_hash, pid) == (NASTY_HASH, req.peer_id)
    assert (downloaded, left, uploaded) == (2, 100, 1)
    assert (event, ip, key, numwant, port) == (3, 0, 5, 33, 51413)


def test_udp_announce_response_round_trip() -> None:
    body = struct.pack(">IIIII", UdpAction.ANNOUNCE, 5, 1800, 7, 2) + bytes([127, 0, 0, 2, 0x1A, 0xE1])
    assert parse_udp_announce_response(body, 5) == AnnounceResponse(1800, (("127.0.0.2", 6881),), 2, 7)
    with pytest.raises(TransactionIdMismatchError):
        parse_udp_announce_response(body, 6)
    with pytest.raises(TrackerError, match="multiple of 6"):
        parse_udp_announce_response(body + b"\x00", 5)
    with pytest.raises(TrackerError, match="shorter"):
        parse_udp_announce_response(body[:19], 5)


def test_udp_header_only_announce_is_a_refusal() -> None:
    # What opentracker sends over UDP for an info_hash outside its whitelist.
    with pytest.raises(TrackerError, match="refused"):
        parse_udp_announce_response(struct.pack(">II", UdpAction.ANNOUNCE, 5), 5)


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**32 - 1))
def test_udp_parsers_only_raise_tracker_error(data: bytes, tid: int) -> None:
    for parse in (parse_udp_connect_response, parse_udp_announce_response):
        with contextlib.suppress(TrackerError):
            parse(data, tid)


# --------------------------------------------------------------------------------------------------------------------
# Internal tracker core


def announce_params(req: AnnounceRequest, **extra: str) -> dict[str, bytes]:
    params = parse_raw_query(urlsplit(build_announce_url("http://t/announce", req)).query)
    params.update({k: v.encode() for k, v in extra.items()})
    return params


def decode(body: bytes) -> dict[bytes, Any]:
    value = bdecode(body, max_size=MAX_HTTP_RESPONSE_BYTES)
    assert isinstance(value, dict)
    return value


def test_two_peers_see_each_other_through_the_internal_tracker() -> None:
    tracker = InternalTracker(interval=60)
    first = parse_announce_response(tracker.handle_announce(announce_params(request(port=1000)), "127.0.0.2", 0.0))
    assert first.peers == ()  # never the requester itself
    assert (first.complete, first.incomplete, first.interval) == (0, 1, 60)
    second = tracker.handle_announce(announce_params(request(peer_id=peer_id(2), port=2000, left=0)), "127.0.0.3", 1.0)
    assert parse_announce_response(second) == AnnounceResponse(60, (("127.0.0.2", 1000),), 1, 1)
    again = tracker.handle_announce(announce_params(request(event=AnnounceEvent.NONE, port=1000)), "127.0.0.2", 2.0)
    assert parse_announce_response(again).peers == (("127.0.0.3", 2000),)


def test_binary_hash_survives_query_parsing() -> None:
    tracker = InternalTracker()
    tracker.handle_announce(announce_params(request(info_hash=NASTY_HASH)), "127.0.0.2", 0.0)
    assert tracker.peers(NASTY_HASH) == [("127.0.0.2", 6881)]


def test_stopped_removes_the_peer() -> None:
    tracker = InternalTracker()
    tracker.handle_announce(announce_params(request(port=1000)), "127.0.0.2", 0.0)
    tracker.handle_announce(announce_params(request(peer_id=peer_id(2), port=2000)), "127.0.0.3", 0.0)
    body = tracker.handle_announce(announce_params(request(port=1000, event=AnnounceEvent.STOPPED)), "127.0.0.2", 1.0)
    assert parse_announce_response(body).peers == ()
    assert tracker.peers(HASH_A) == [("127.0.0.3", 2000)]


def test_peers_are_identified_by_address_not_peer_id() -> None:
    tracker = InternalTracker()
    tracker.handle_announce(announce_params(request(port=1000)), "127.0.0.2", 0.0)
    # Same peer_id from another host cannot unregister the first one.
    tracker.handle_announce(announce_params(request(port=1000, event=AnnounceEvent.STOPPED)), "127.0.0.9", 0.0)
    assert tracker.peers(HASH_A) == [("127.0.0.2", 1000)]


def test_peers_expire_after_two_intervals() -> None:
    tracker = InternalTracker(interval=100)
    tracker.handle_announce(announce_params(request(port=1000)), "127.0.0.2", 0.0)
    tracker.handle_announce(announce_params(request(peer_id=peer_id(2), port=2000)), "127.0.0.3", 150.0)
    body = tracker.handle_announce(announce_params(request(peer_id=peer_id(3), port=3000)), "127.0.0.4", 199.0)
    assert len(parse_announce_response(body).peers) == 2
    body = tracker.handle_announce(announce_params(request(peer_id=peer_id(3), port=3000)), "127.0.0.4", 201.0)
    assert parse_announce_response(body).peers == (("127.0.0.3", 2000),)
    tracker.expire(1000.0)
    assert tracker.swarm_count == 0


def test_reannounce_refreshes_expiry() -> None:
    tracker = InternalTracker(interval=100)
    tracker.handle_announce(announce_params(request(port=1000)), "127.0.0.2", 0.0)
    tracker.handle_announce(announce_params(request(port=1000, event=AnnounceEvent.NONE)), "127.0.0.2", 150.0)
    tracker.expire(300.0)
    assert tracker.peers(HASH_A) == [("127.0.0.2", 1000)]


def test_whitelist_refuses_other_hashes_like_opentracker() -> None:
    tracker = InternalTracker(allowed_info_hashes={HASH_A})
    with pytest.raises(TrackerError, match=f"^{re.escape(NOT_AUTHORIZED)}$"):
        parse_announce_response(tracker.handle_announce(announce_params(request(info_hash=HASH_B)), "127.0.0.2", 0))
    parse_announce_response(tracker.handle_announce(announce_params(request()), "127.0.0.2", 0))
    assert tracker.swarm_count == 1


def test_swarm_cap() -> None:
    tracker = InternalTracker(max_swarms=2, interval=10)
    for n in range(2):
        parse_announce_response(tracker.handle_announce(announce_params(request(info_hash=bytes([n]) * 20)), "::1", 0))
    with pytest.raises(TrackerError, match="too many torrents"):
        parse_announce_response(tracker.handle_announce(announce_params(request(info_hash=HASH_B)), "::1", 0))
    # Once the old swarms expire there is room again.
    parse_announce_response(tracker.handle_announce(announce_params(request(info_hash=HASH_B)), "::1", 100))
    assert tracker.swarm_count == 1


def test_peer_cap_answers_but_does_not_store() -> None:
    tracker = InternalTracker(max_peers_per_swarm=3)
    for n in range(5):
        body = tracker.handle_announce(announce_params(request(peer_id=peer_id(n), port=1000 + n)), "10.0.0.1", 0)
        assert len(parse_announce_response(body).peers) == min(n, 3)
    assert tracker.peers(HASH_A) == [("10.0.0.1", 1000), ("10.0.0.1", 1001), ("10.0.0.1", 1002)]


def test_numwant_default_and_cap() -> None:
    tracker = InternalTracker(rng=random.Random(1))
    for n in range(300):
        tracker.handle_announce(announce_params(request(peer_id=peer_id(n), port=1000 + n)), "10.0.0.1", 0)
    me = announce_params(request(peer_id=peer_id(999), port=999))
    assert len(parse_announce_response(tracker.handle_announce(me, "10.0.0.2", 0)).peers) == 50
    me["numwant"] = b"100000"
    assert len(parse_announce_response(tracker.handle_announce(me, "10.0.0.2", 0)).peers) == 200
    me["numwant"] = b"3"
    assert len(parse_announce_response(tracker.handle_announce(me, "10.0.0.2", 0)).peers) == 3


def test_non_compact_form_and_ipv6() -> None:
    tracker = InternalTracker()
    tracker.handle_announce(announce_params(request(port=1000)), "2001:db8::5", 0)
    tracker.handle_announce(announce_params(request(peer_id=peer_id(2), port=2000)), "::ffff:192.0.2.1", 0)
    compact = tracker.handle_announce(announce_params(request(peer_id=peer_id(3), port=3000)), "192.0.2.9", 0)
    assert sorted(parse_announce_response(compact).peers) == [("192.0.2.1", 2000), ("2001:db8::5", 1000)]
    assert len(decode(compact)[b"peers6"]) == 18
    me = request(peer_id=peer_id(3), port=3000)
    listed = decode(tracker.handle_announce(announce_params(me, compact="0", no_peer_id="0"), "192.0.2.9", 0))
    assert sorted(listed[b"peers"], key=lambda p: p[b"port"]) == [
        {b"ip": b"2001:db8::5", b"port": 1000, b"peer id": request().peer_id},
        {b"ip": b"192.0.2.1", b"port": 2000, b"peer id": peer_id(2)},
    ]
    listed = decode(tracker.handle_announce(announce_params(me, compact="0", no_peer_id="1"), "192.0.2.9", 0))
    assert all(b"peer id" not in p for p in listed[b"peers"])
    assert sorted(parse_announce_response(bencode(listed)).peers) == [("192.0.2.1", 2000), ("2001:db8::5", 1000)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"info_hash": None}, "missing info_hash"),
        ({"info_hash": b"abc"}, "invalid info_hash"),
        ({"peer_id": None}, "missing peer_id"),
        ({"peer_id": b"x" * 21}, "invalid peer_id"),
        ({"port": None}, "missing port"),
        ({"port": b"0"}, "invalid port"),
        ({"port": b"65536"}, "invalid port"),
        ({"port": b"+80"}, "invalid port"),
        ({"left": b"-1"}, "invalid left"),
        ({"uploaded": b"1e3"}, "invalid uploaded"),
        ({"numwant": b"many"}, "invalid numwant"),
        ({"event": b"paused"}, "invalid event"),
    ],
)
def test_bad_parameters_are_named_in_the_failure(change: dict[str, bytes | None], message: str) -> None:
    params: dict[str, str | bytes] = dict(announce_params(request()))
    for key, value in change.items():
        if value is None:
            del params[key]
        else:
            params[key] = value
    with pytest.raises(TrackerError, match=message):
        parse_announce_response(InternalTracker().handle_announce(params, "127.0.0.2", 0))


def test_unusable_remote_address() -> None:
    with pytest.raises(TrackerError, match="address"):
        parse_announce_response(InternalTracker().handle_announce(announce_params(request()), "", 0))


def test_parse_raw_query_bounds_and_plus() -> None:
    assert parse_raw_query("a=%2B+b&a=second&=x&flag") == {"a": b"+ b", "": b"x", "flag": b""}
    with pytest.raises(ValueError, match="longer"):
        parse_raw_query("a=" + "x" * 5000)
    with pytest.raises(ValueError, match="parameters"):
        parse_raw_query("&".join(f"k{i}=1" for i in range(100)))


@given(st.dictionaries(st.sampled_from(["info_hash", "peer_id", "port", "left", "event", "numwant", "compact", "x"]),
                       st.binary(max_size=25)))
def test_internal_tracker_answers_any_params_with_bencode(params: dict[str, bytes]) -> None:
    body = InternalTracker().handle_announce(params, "127.0.0.2", 0)
    assert isinstance(decode(body), dict)


# --------------------------------------------------------------------------------------------------------------------
# Announce schedule


def schedule() -> TrackerSchedule:
    return TrackerSchedule(min_interval=15, max_interval=1800, max_backoff=300, rng=random.Random(0))


def test_schedule_clamps_tracker_interval() -> None:
    s = schedule()
    assert s.delay(0) == 0
    assert s.on_success(100, 1) == 15
    assert s.on_success(100, 99999) == 1800
    assert s.on_success(100, 600) == 600
    assert s.delay(100) == 600


def test_schedule_backs_off_exponentially_with_jitter_and_cap() -> None:
    s = schedule()
    waits = [s.on_failure(0) for _ in range(10)]
    for n, wait in enumerate(waits):
        base = min(15 * 2**n, 300)
        assert base * 0.9 <= wait <= base * 1.1
    s.on_success(0, 60)
    assert s.failures == 0
    assert 13.5 <= s.on_failure(0) <= 16.5


def test_schedule_trigger_is_rate_limited() -> None:
    s = schedule()
    s.on_trigger(0)  # never announced: nothing to pull forward (it is due already)
    s.on_success(100, 1800)
    s.on_trigger(105)
    assert s.next_at == 115  # not before min_interval after the last announce
    s.on_trigger(500)
    assert s.next_at == 115
    s.on_success(115, 1800)
    s.on_trigger(1000)
    assert s.next_at == 1000
    s.on_failure(1000)
    before = s.next_at
    s.on_trigger(1001)
    assert s.next_at == before  # a failing tracker keeps its backoff


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("udp://127.0.0.1:0", "port 0"),
        ("http://127.0.0.1:0/announce", "port 0"),
        ("udp://127.0.0.1:70000", "not 1..65535"),
        ("http://127.0.0.1:99999/announce", "not 1..65535"),
        ("udp://127.0.0.1", "no port"),
    ],
)
def test_tracker_urls_with_unusable_ports_are_refused(url: str, why: str) -> None:
    from swarmcast.discovery.tracker_client import check_tracker_url

    with pytest.raises(ValueError, match=why):
        check_tracker_url(url)
    assert check_tracker_url("udp://127.0.0.1:6969") == "udp"
