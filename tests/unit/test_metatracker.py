"""Metatracker: start-node addresses, the answer parser, the schedule, the transport file's new keys, the dialer's
preference for start nodes, and the server's config file. No sockets, no sleeps."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import cast

import pytest

from swarmcast import bencoding
from swarmcast.discovery.metatracker_protocol import (
    DEFAULT_INTERVAL,
    MAX_ANSWER_BYTES,
    MAX_ANSWER_STARTUP_NODES,
    MAX_ANSWER_TRACKERS,
    MAX_BACKOFF,
    MAX_INTERVAL,
    MIN_INTERVAL,
    MetatrackerAnswer,
    MetatrackerError,
    MetatrackerSchedule,
    canonical_node_address,
    check_metatracker_url,
    encode_answer,
    format_node_address,
    parse_answer,
    parse_node_address,
    query_url,
)
from swarmcast.discovery.metatracker_server import ConfigError, ConfigFile, parse_config, parse_infohash
from swarmcast.node.host import PeerHost
from swarmcast.node.joiner import Membership
from swarmcast.node.metadata import BroadcastMetadata
from swarmcast.swarm.config import SwarmConfig
from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.dialer import PREFERRED_EXTRA_PEERS, Dialer
from swarmcast.swarm.store import PieceStore
from swarmcast.transport import MAX_METATRACKERS, MAX_STARTUP_NODES, Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE
from tests.unit.memswarm import Broadcast

INFOHASH = "ab" * 20

# -- addresses and URLs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:8621", ("127.0.0.1", 8621)),
    ("10.1.2.3:1", ("10.1.2.3", 1)),
    ("[::1]:65535", ("::1", 65535)),
    ("[2001:db8::1]:7764", ("2001:db8::1", 7764)),
])  # fmt: skip
def test_start_node_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_node_address(text) == address
    assert format_node_address(address) == text


def test_canonical_start_node_addresses() -> None:
    assert canonical_node_address(("::0001", 80)) == ("::1", 80)
    assert canonical_node_address(("2001:DB8::1", 80)) == ("2001:db8::1", 80)
    with pytest.raises(ValueError, match="port 0"):
        canonical_node_address(("127.0.0.1", 0))


@pytest.mark.parametrize("text", [
    "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999999", "host.example:80",
    "::1:80", "[127.0.0.1]:80", "[::1]80", "127.0.0.1:+80", "127.0.0.1: 80", "127.0.0.1:٨٠", "1" * 100 + ":80",
    "127.0.0.1:80:80", "[::1]:", "[]:80",
])  # fmt: skip
def test_bad_start_node_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="start node"):
        parse_node_address(text)


@pytest.mark.parametrize("url", [
    "ftp://m.example/", "http://", "http:///path", "http://m.example:0/", "http://m.example:70000/",
    "http://m.example/ x", "http://m.example/\x00", "http://m.example/#frag", "http://m.example/" + "a" * 600,
    "http://m.éxample/", "http://[::1/",
])  # fmt: skip
def test_bad_metatracker_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="metatracker URL"):
        check_metatracker_url(url)


def test_query_url_adds_the_infohash() -> None:
    info_hash = bytes.fromhex(INFOHASH)
    assert query_url("http://m.example/", info_hash) == f"http://m.example/?infohash={INFOHASH}"
    assert query_url("http://m.example/mt?key=1", info_hash) == f"http://m.example/mt?key=1&infohash={INFOHASH}"
    with pytest.raises(ValueError, match="20 bytes"):
        query_url("http://m.example/", b"short")


# -- answers --------------------------------------------------------------------------------------------------------


def answer(value: object) -> MetatrackerAnswer:
    return parse_answer(json.dumps(value).encode())


def test_a_good_answer() -> None:
    got = answer({"trackers": ["http://t.example/announce", "udp://t.example:6969"],
                  "startup_nodes": ["127.0.0.2:8621", "[::1]:9"], "interval": 60})  # fmt: skip
    assert got == MetatrackerAnswer(("http://t.example/announce", "udp://t.example:6969"),
                                    (("127.0.0.2", 8621), ("::1", 9)), 60.0, 0)  # fmt: skip
    assert parse_answer(encode_answer(got)) == got


def test_missing_keys_are_empty_and_the_interval_defaults() -> None:
    assert answer({}) == MetatrackerAnswer((), (), DEFAULT_INTERVAL, 0)


def test_bad_entries_are_skipped_one_by_one() -> None:
    got = answer({"trackers": ["ftp://x/", 5, "http://good.example/a", None, "http://good.example/a"],
                  "startup_nodes": ["a.example:80", "127.0.0.1:0", "127.0.0.3:7000", ["x"]]})  # fmt: skip
    assert got.trackers == ("http://good.example/a",)
    assert got.startup_nodes == (("127.0.0.3", 7000),)
    assert got.skipped == 6  # a repeated entry is not an error


def test_lists_are_capped() -> None:
    got = answer({"trackers": [f"http://t{i}.example/a" for i in range(100)],
                  "startup_nodes": [f"127.0.0.{i}:80" for i in range(1, 200)]})  # fmt: skip
    assert len(got.trackers) == MAX_ANSWER_TRACKERS
    assert len(got.startup_nodes) == MAX_ANSWER_STARTUP_NODES
    assert got.skipped == 100 - MAX_ANSWER_TRACKERS + 199 - MAX_ANSWER_STARTUP_NODES


@pytest.mark.parametrize(("raw", "interval"), [
    (b'{"interval": 1}', MIN_INTERVAL), (b'{"interval": -5}', MIN_INTERVAL), (b'{"interval": 0.001}', MIN_INTERVAL),
    (b'{"interval": 1e999}', MAX_INTERVAL), (b'{"interval": 10e6}', MAX_INTERVAL),
    (b'{"interval": 1' + b"0" * 400 + b"}", MAX_INTERVAL), (b'{"interval": 120}', 120.0),
])  # fmt: skip
def test_the_interval_is_clamped(raw: bytes, interval: float) -> None:
    assert parse_answer(raw).interval == interval


@pytest.mark.parametrize("raw", [
    b"", b"[]", b'"x"', b"null", b"{", b"\xff\xfe", b'{"trackers": "http://t/a"}', b'{"startup_nodes": {}}',
    b'{"interval": "60"}', b'{"interval": true}', b'{"interval": NaN}', b'{"interval": Infinity}',
    b"[" * 50_000 + b"]" * 50_000, b'{"a": "' + b"x" * MAX_ANSWER_BYTES + b'"}',
])  # fmt: skip
def test_unusable_answers_are_our_error(raw: bytes) -> None:
    with pytest.raises(MetatrackerError):
        parse_answer(raw)


def test_schedule_backs_off_with_a_cap_and_follows_the_interval() -> None:
    schedule = MetatrackerSchedule(rng=random.Random(1))
    assert schedule.delay(0.0) == 0  # at join
    waits = [schedule.on_failure(0.0) for _ in range(12)]
    assert waits[0] < waits[1] < waits[2] < waits[3]
    assert max(waits) <= MAX_BACKOFF * 1.1
    assert schedule.on_success(100.0, 1.0) == MIN_INTERVAL
    assert schedule.failures == 0
    assert schedule.on_success(100.0, 10**9) == MAX_INTERVAL
    assert schedule.delay(100.0) == MAX_INTERVAL


# -- the transport file's keys --------------------------------------------------------------------------------------

BASE = Descriptor(name="n", title="t", piece_size=188 * 10, bitrate=1000, public_key=bytes(range(32)),
                  trackers=("http://t.example/announce",))  # fmt: skip
WITH = Descriptor(**{**BASE.__dict__, "startup_nodes": (("127.0.0.2", 8621), ("::1", 9)),
                     "metatrackers": ("http://m.example/mt",)})  # fmt: skip


def fields(descriptor: Descriptor) -> dict[bytes, object]:
    value = bencoding.decode(descriptor.encode(), max_size=MAX_METADATA_SIZE)
    assert isinstance(value, dict)
    return value


def test_start_nodes_and_metatrackers_round_trip_and_are_hashed() -> None:
    assert fields(WITH)[b"startup_nodes"] == [b"127.0.0.2:8621", b"[::1]:9"]
    assert fields(WITH)[b"metatrackers"] == [b"http://m.example/mt"]
    assert Descriptor.decode(WITH.encode()) == WITH
    assert WITH.content_id != BASE.content_id  # authenticated by the content id, like the trackers


def test_a_broadcast_without_them_keeps_its_content_id() -> None:
    assert b"startup_nodes" not in fields(BASE) and b"metatrackers" not in fields(BASE)
    old_format = {k: v for k, v in fields(WITH).items() if k not in (b"startup_nodes", b"metatrackers")}
    assert bencoding.encode(old_format) == BASE.encode()


def test_saved_descriptor_keeps_them(tmp_path: Path) -> None:
    metadata = BroadcastMetadata(tmp_path, "n")
    metadata.save_descriptor(WITH)
    saved = metadata.saved_descriptor()
    assert saved == WITH and saved is not None and saved.content_id == WITH.content_id


def with_field(key: bytes, value: object) -> bytes:
    return bencoding.encode({**fields(BASE), key: value})


@pytest.mark.parametrize(("key", "value", "message"), [
    (b"startup_nodes", [], "empty list"),
    (b"startup_nodes", [b"127.0.0.1:80"] * 2, "twice"),
    (b"startup_nodes", [f"127.0.0.{i}:80".encode() for i in range(1, MAX_STARTUP_NODES + 2)], "more than"),
    (b"startup_nodes", [b"a.example:80"], "not a host name"),
    (b"startup_nodes", [b"127.0.0.1:0"], "port 0"),
    (b"startup_nodes", [b"[::0001]:80"], "canonical"),
    (b"startup_nodes", b"127.0.0.1:80", "list of strings"),
    (b"startup_nodes", [b"\xff:80"], "UTF-8"),
    (b"metatrackers", [], "empty list"),
    (b"metatrackers", [b"ftp://m.example/"], "scheme"),
    (b"metatrackers", [b"http://m.example/"] * 2, "twice"),
    (b"metatrackers", [f"http://m{i}.example/".encode() for i in range(MAX_METATRACKERS + 1)], "more than"),
    (b"metatrackers", [5], "list of strings"),
])  # fmt: skip
def test_bad_keys_are_refused(key: bytes, value: object, message: str) -> None:
    with pytest.raises(TransportError, match=message):
        Descriptor.decode(with_field(key, value))


# -- the dialer: start nodes first while starting, last once started -----------------------------------------------

START = [("127.0.0.50", 8621), ("127.0.0.51", 8621)]
OTHERS = [("127.0.0.60", 7000), ("127.0.0.61", 7000), ("127.0.0.62", 7000)]


def test_an_engine_that_has_not_started_dials_start_nodes_first() -> None:
    viewer = Broadcast().make_swarm(Role.ENGINE, target_peers=2)
    viewer.add_candidates(OTHERS)
    viewer.add_startup_nodes(START, 0.0)
    # Both start nodes, although ordinary candidates were known first and the room is two.
    assert sorted(viewer.addresses_to_dial(0.0, set())) == START


def test_start_nodes_may_go_beyond_the_target_while_starting() -> None:
    viewer = Broadcast().make_swarm(Role.ENGINE, target_peers=0)
    viewer.add_startup_nodes([*START, ("127.0.0.52", 8621)], 0.0)
    assert len(viewer.addresses_to_dial(0.0, set())) == PREFERRED_EXTRA_PEERS


def test_once_playing_start_nodes_come_last() -> None:
    viewer = Broadcast().make_swarm(Role.ENGINE, target_peers=3)
    viewer.add_candidates(OTHERS)
    viewer.add_startup_nodes(START, 0.0)
    viewer.open_cursor().started = True  # a player has had a piece
    assert sorted(viewer.addresses_to_dial(0.0, set())) == OTHERS
    # With nobody else left to dial, a start node is better than nothing.
    lonely = Broadcast().make_swarm(Role.ENGINE, target_peers=3)
    lonely.add_startup_nodes(START, 0.0)
    lonely.open_cursor().started = True
    assert sorted(lonely.addresses_to_dial(0.0, set())) == START


def test_a_support_node_never_counts_as_starting() -> None:
    support = Broadcast().make_swarm(Role.SUPPORT, target_peers=2)
    support.add_candidates(OTHERS[:2])
    support.add_startup_nodes(START, 0.0)
    assert sorted(support.addresses_to_dial(0.0, set())) == OTHERS[:2]


def test_a_start_node_that_fails_backs_off_like_any_candidate() -> None:
    dialer = Dialer(SwarmConfig(role=Role.ENGINE), random.Random(0))
    dialer.add(START[:1], now=0.0, startup=True)
    assert dialer.to_dial(0.0, room=1, connected=set(), connecting=set(), starting=True) == START[:1]
    dialer.failed(START[0], 0.0)
    assert dialer.to_dial(0.5, room=1, connected=set(), connecting=set(), starting=True) == []


# -- the server's config file --------------------------------------------------------------------------------------

OTHER = "cd" * 20
CONFIG = {
    "default": {"trackers": ["http://t.example/announce"], "startup_nodes": ["127.0.0.2:8621"], "interval": 60},
    INFOHASH.upper(): {"startup_nodes": ["127.0.0.3:8621"]},
    OTHER: {"trackers": [], "interval": 30},
}


def served(config: dict[str, object], infohash: str) -> MetatrackerAnswer:
    return parse_answer(parse_config(json.dumps(config).encode()).answer_for(infohash))


def test_per_infohash_entries_take_each_key_they_have_and_the_rest_from_default() -> None:
    assert served(CONFIG, INFOHASH) == MetatrackerAnswer(("http://t.example/announce",), (("127.0.0.3", 8621),), 60)
    assert served(CONFIG, OTHER) == MetatrackerAnswer((), (("127.0.0.2", 8621),), 30)
    assert served(CONFIG, "ef" * 20) == MetatrackerAnswer(("http://t.example/announce",), (("127.0.0.2", 8621),), 60)
    assert served({}, INFOHASH) == MetatrackerAnswer((), (), DEFAULT_INTERVAL)


@pytest.mark.parametrize(("config", "message"), [
    (b"[1]", "not an object"),
    (b"{", "not JSON"),
    (b"\xff", "not UTF-8"),
    (b'{"default": {}, "default": {}}', "'default' appears twice"),
    (b'{"nothex": {}}', "'nothex' is neither 'default' nor a 40-hex infohash"),
    (f'{{"{INFOHASH}": {{}}, "{INFOHASH.upper()}": {{}}}}'.encode(), "twice"),
    (b'{"default": []}', "'default' = [] is not an object"),
    (b'{"default": {"tracker": []}}', "default.'tracker' is not known"),
    (b'{"default": {"trackers": "http://t/a"}}', "'default.trackers' = 'http://t/a' is not a list"),
    (b'{"default": {"trackers": ["ftp://t/a"]}}', "'default.trackers[0]' = 'ftp://t/a'"),
    (b'{"default": {"trackers": [1]}}', "'default.trackers[0]' = 1 is not a string"),
    (b'{"default": {"startup_nodes": ["x.example:80"]}}', "'default.startup_nodes[0]' = 'x.example:80'"),
    (b'{"default": {"startup_nodes": ["127.0.0.1:1", "127.0.0.1:1"]}}', "listed twice"),
    (b'{"default": {"interval": 1}}', "'default.interval' = 1 is not a number of seconds"),
    (b'{"default": {"interval": "60"}}', "'default.interval' = '60'"),
    (json.dumps({"default": {"trackers": [f"http://t{i}/a" for i in range(50)]}}).encode(), "more than"),
])  # fmt: skip
def test_bad_config_names_the_key_and_value(config: bytes, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_config_file_is_re_read_on_change_and_a_bad_change_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "mt.json"
    path.write_text(json.dumps({"default": {"startup_nodes": ["127.0.0.2:1"]}}))
    watched = ConfigFile(path)
    assert not watched.poll()
    path.write_text(json.dumps({"default": {"startup_nodes": ["127.0.0.3:1"]}}))
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse-grained file systems
    assert watched.poll()
    assert parse_answer(watched.config.answer_for(INFOHASH)).startup_nodes == (("127.0.0.3", 1),)
    path.write_text('{"default": {"interval": 0}}')
    os.utime(path, ns=(2, 2))
    assert not watched.poll()
    assert watched.last_error is not None and "default.interval" in watched.last_error
    assert parse_answer(watched.config.answer_for(INFOHASH)).startup_nodes == (("127.0.0.3", 1),)
    path.unlink()
    assert not watched.poll()  # a vanished file keeps the config in effect too
    assert parse_answer(watched.config.answer_for(INFOHASH)).startup_nodes == (("127.0.0.3", 1),)


def test_a_bad_config_at_start_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ConfigFile(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not a regular file"):
        ConfigFile(tmp_path)


@pytest.mark.parametrize(("query", "result"), [
    (f"infohash={INFOHASH}", INFOHASH), (f"infohash={INFOHASH.upper()}&x=1", INFOHASH),
    ("", None), ("infohash=", None), ("infohash=zz", None), (f"infohash={INFOHASH}&infohash={INFOHASH}", None),
    (f"infohash={INFOHASH}0", None), ("x=" + "a" * 2000, None),
])  # fmt: skip
def test_query_infohash(query: str, result: str | None) -> None:
    if result is None:
        with pytest.raises(ValueError, match=r"infohash|query"):
            parse_infohash(query)
    else:
        assert parse_infohash(query) == result


# -- Membership: what an answer or a late descriptor changes ---------------------------------------------------------


class FakeHost:
    """What Membership uses of a PeerHost, without sockets."""

    def __init__(self) -> None:
        self.port = 8621
        self.bind = "127.0.0.1"
        self.local_address = ("127.0.0.1", 0)  # where its announces leave from
        self.peer_id = b"-SC0100-" + bytes(12)
        self.dials = 0

    def add_swarm(self, swarm: object) -> None:
        pass

    def remove_swarm(self, swarm: object) -> None:
        pass

    def dial_now(self, swarm: object) -> None:
        self.dials += 1


async def test_a_swarm_joined_by_content_id_takes_start_nodes_and_metatrackers_from_the_descriptor() -> None:
    descriptor = Descriptor(**{**BASE.__dict__, "trackers": (), "startup_nodes": (("127.0.0.2", 8621),),
                               "metatrackers": ("http://127.0.0.1:9/mt",)})  # fmt: skip
    swarm = Swarm(content_id=descriptor.content_id, peer_id=bytes(20), config=SwarmConfig(role=Role.ENGINE),
                  store=PieceStore(max_bytes=1_000_000, window_pieces=100), descriptor=None, now=0.0)  # fmt: skip
    host = FakeHost()
    membership = Membership(cast(PeerHost, host), swarm, ())
    membership.start()
    try:
        assert membership.metatrackers is None and not swarm.dialer.candidates
        swarm._set_descriptor(descriptor)  # as when METADATA from a peer checked out
        assert swarm.dialer.candidates[("127.0.0.2", 8621)].startup
        assert membership.metatrackers is not None and membership.metatrackers.urls == descriptor.metatrackers
        # An answer: a new tracker joins the running announcer; our own address is not taken as a start node.
        membership._on_metatracker_answer("http://127.0.0.1:9/mt", MetatrackerAnswer(
            trackers=("http://127.0.0.1:9/announce",), startup_nodes=(("127.0.0.1", 8621), ("127.0.0.3", 7000))))
        assert membership.announcer.trackers == ("http://127.0.0.1:9/announce",)
        assert ("127.0.0.1", 8621) not in swarm.dialer.candidates
        assert swarm.dialer.candidates[("127.0.0.3", 7000)].startup
        assert list(membership.startup_nodes) == [("127.0.0.2", 8621), ("127.0.0.3", 7000)]
    finally:
        await membership.close()


def test_more_start_nodes_than_the_transport_file_holds_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from swarmcast.cli import main

    nodes = [arg for i in range(1, MAX_STARTUP_NODES + 2) for arg in ("--startup-node", f"127.0.0.{i}:80")]
    code = main(["node", "source", "--source", "http://127.0.0.1:1/", "--title", "t",
                 "--publish-dir", str(tmp_path / "pub"), *nodes])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"swarmcast node source: error: --startup-node given {MAX_STARTUP_NODES + 1} times: the transport file "
        f"holds at most {MAX_STARTUP_NODES}"]  # fmt: skip
    assert not (tmp_path / "pub").exists()
