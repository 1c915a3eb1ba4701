"""The engine's admission rules (sessions, broadcast slots, lookups, streams) and the transport-file location
policy of ``url=``, without sockets: the rules take ``now``, local files are read from tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmcast.http.engine_api import _host_name, _ip_or_localhost
from swarmcast.node.engine_limits import (
    IDLE_SECONDS,
    LOOKUP_GRACE,
    MAX_BROADCASTS,
    MAX_LOOKUPS,
    BroadcastState,
    EngineBusyError,
    SessionTable,
    StreamCounter,
    check_join,
    should_leave,
)
from swarmcast.node.joiner import MAX_LOCATION_LENGTH, JoinError, LocalFiles, internal_tracker_url, load_transport
from swarmcast.transport import Descriptor
from swarmcast.wire.messages import MAX_METADATA_SIZE

DESCRIPTOR = Descriptor(name="n", title="t", piece_size=188 * 512, bitrate=1, public_key=bytes(32))


# -- sessions ---------------------------------------------------------------------------------------------------


def test_full_session_table_refuses_the_newcomer_and_keeps_every_session() -> None:
    table: SessionTable[str] = SessionTable(limit=3, idle_seconds=60.0)
    first = table.add("b", 0.0)
    first.players = 1  # an honest player reads it
    others = [table.add("b", 1.0), table.add("b", 2.0)]
    with pytest.raises(EngineBusyError, match="3 playback sessions"):
        table.add("b", 3.0)
    assert len(table) == 3
    assert not first.stopped
    assert not any(s.stopped for s in others)
    assert table.get(first.session_id, 3.0) is first


def test_unused_sessions_expire_but_a_playing_one_never_does() -> None:
    table: SessionTable[str] = SessionTable(limit=2, idle_seconds=60.0)
    playing = table.add("b", 0.0)
    playing.players = 1
    abandoned = table.add("b", 0.0)
    assert table.expire(59.0) == []
    # A newcomer at the limit makes room from expired sessions only.
    newcomer = table.add("b", 61.0)
    assert abandoned.stopped
    assert table.get(abandoned.session_id, 61.0) is None
    assert not playing.stopped
    assert table.get(playing.session_id, 1000.0) is playing
    # The player is gone: the session now expires after the idle time like any other.
    playing.players = 0
    playing.last_used = 1000.0
    assert set(table.expire(1061.0)) == {playing, newcomer}


def test_polling_a_session_keeps_it() -> None:
    table: SessionTable[str] = SessionTable(limit=4, idle_seconds=60.0)
    session = table.add("b", 0.0)
    for now in range(50, 500, 50):
        assert table.get(session.session_id, float(now)) is session
        assert table.expire(float(now)) == []


def test_removing_a_broadcast_stops_its_sessions() -> None:
    table: SessionTable[str] = SessionTable()
    a, b = table.add("a", 0.0), table.add("b", 0.0)
    table.remove_broadcast("a")
    assert a.stopped and not b.stopped
    assert table.count("a") == 0 and table.count("b") == 1


# -- broadcast slots and lookups --------------------------------------------------------------------------------


def test_lookups_have_their_own_small_limit() -> None:
    check_join(BroadcastState.LOOKUP, lookups=MAX_LOOKUPS - 1, broadcasts=0)
    with pytest.raises(EngineBusyError, match=f"looking up {MAX_LOOKUPS}"):
        check_join(BroadcastState.LOOKUP, lookups=MAX_LOOKUPS, broadcasts=0)
    # Lookups do not take the broadcast slots: a broadcast with a descriptor still joins.
    check_join(BroadcastState.STARTING, lookups=MAX_LOOKUPS, broadcasts=MAX_BROADCASTS - 1)
    with pytest.raises(EngineBusyError, match=f"{MAX_BROADCASTS} broadcasts"):
        check_join(BroadcastState.STARTING, lookups=0, broadcasts=MAX_BROADCASTS)


def leave(state: BroadcastState, *, players: int = 0, sessions: int = 0, joined: float = 0.0,
          last_active: float = 0.0, now: float) -> bool:  # fmt: skip
    return should_leave(state, players=players, sessions=sessions, joined=joined, last_active=last_active,
                        now=now, startup_timeout=30.0)  # fmt: skip


@pytest.mark.parametrize("state", [BroadcastState.LOOKUP, BroadcastState.STARTING])
def test_a_broadcast_that_never_played_is_left_once_nobody_waits(state: BroadcastState) -> None:
    assert not leave(state, players=1, now=29.0)
    assert not leave(state, now=LOOKUP_GRACE)  # the request that joined it is about to wait
    assert leave(state, now=LOOKUP_GRACE + 0.1)
    # A player waiting for it keeps it, but never past the startup timeout.
    assert leave(state, players=3, last_active=30.0, now=30.1)


def test_a_lookup_is_left_at_the_startup_timeout_even_with_a_json_session() -> None:
    assert not leave(BroadcastState.LOOKUP, sessions=1, now=29.0)
    assert leave(BroadcastState.LOOKUP, sessions=1, now=30.1)


def test_a_known_broadcast_waits_for_its_player_as_long_as_its_json_session_lives() -> None:
    # The demo's flow: a JSON session, the URL printed, a person opens a player a minute later.
    assert not leave(BroadcastState.STARTING, sessions=1, now=300.0)
    assert leave(BroadcastState.STARTING, sessions=0, last_active=300.0, now=300.0 + LOOKUP_GRACE + 0.1)


def test_a_playing_broadcast_is_left_only_when_idle() -> None:
    assert not leave(BroadcastState.PLAYING, players=1, now=10_000.0)
    assert not leave(BroadcastState.PLAYING, last_active=100.0, now=100.0 + IDLE_SECONDS)
    assert leave(BroadcastState.PLAYING, last_active=100.0, now=100.1 + IDLE_SECONDS)


# -- streams ----------------------------------------------------------------------------------------------------


def test_stream_caps_total_and_per_client() -> None:
    streams = StreamCounter(limit=3, per_client=2)
    with streams.slot("a"), streams.slot("a"):
        with pytest.raises(EngineBusyError, match="per-client"), streams.slot("a"):
            pass
        with streams.slot("b"), pytest.raises(EngineBusyError, match="3 streams"), streams.slot("c"):
            pass
        assert streams.total == 2
    assert streams.total == 0
    with streams.slot("a"), streams.slot("a"):
        pass


# -- url= locations ---------------------------------------------------------------------------------------------

NO_LOCAL = LocalFiles()


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://[", "bad transport file URL"),
        ("http://host:99999/x", "Port out of range"),
        ("http:///x", "has no host"),
        ("ftp://host/x", "scheme must be http or https"),
        ("gopher:x", "scheme must be http or https"),
        ("http://h/" + "a" * MAX_LOCATION_LENGTH, "more than"),
    ],
)
async def test_bad_urls_are_join_errors(location: str, message: str) -> None:
    with pytest.raises(JoinError, match=message):
        await load_transport(location, NO_LOCAL)


async def test_local_paths_refused_alike_whether_they_exist_or_not(tmp_path: Path) -> None:
    real = tmp_path / "real.acelive"
    real.write_bytes(DESCRIPTOR.encode())
    messages = set()
    for location in (str(real), str(tmp_path / "missing"), f"file://{real}", "/dev/zero", "relative/name"):
        with pytest.raises(JoinError) as info:
            await load_transport(location, NO_LOCAL)
        messages.add(str(info.value))
    assert len(messages) == 1, messages
    assert "--allow-local-transport-files" in messages.pop()


async def test_transport_files_dir_reads_inside_only(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "ch.acelive").write_bytes(DESCRIPTOR.encode())
    (tmp_path / "secret").write_bytes(DESCRIPTOR.encode())
    (root / "link").symlink_to(tmp_path / "secret")
    (root / "big").write_bytes(b"x" * (MAX_METADATA_SIZE + 1))
    os.mkfifo(root / "fifo")
    policy = LocalFiles(directory=root)
    for name in ("ch.acelive", str(root / "ch.acelive"), f"file://{root}/ch.acelive"):
        assert (await load_transport(name, policy)).descriptor == DESCRIPTOR
    for name in ("../secret", str(tmp_path / "secret"), "link", "/dev/zero", "/etc/passwd"):
        with pytest.raises(JoinError, match="names no file under"):
            await load_transport(name, policy)
    with pytest.raises(JoinError, match="not a regular file"):
        await load_transport("fifo", policy)  # and does not wait for a writer
    with pytest.raises(JoinError, match=f"more than {MAX_METADATA_SIZE} bytes"):
        await load_transport("big", policy)


async def test_allowed_local_files_are_regular_and_capped(tmp_path: Path) -> None:
    allow = LocalFiles(allow_any=True)
    (tmp_path / "ch.acelive").write_bytes(DESCRIPTOR.encode())
    assert (await load_transport(str(tmp_path / "ch.acelive"), allow)).descriptor == DESCRIPTOR
    for device in ("/dev/zero", "/dev/urandom", str(tmp_path)):
        with pytest.raises(JoinError, match="not a regular file"):
            await load_transport(device, allow)
    with pytest.raises(JoinError, match="No such file"):
        await load_transport(str(tmp_path / "missing"), allow)


# -- the API's Host guard (DNS rebinding) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("127.0.0.1:6878", True),
        ("127.0.0.1", True),
        ("[::1]:6878", True),
        ("LOCALHOST:6878", True),
        ("player.localhost", True),
        ("192.168.1.5:6878", True),
        ("evil.example:6878", False),
        ("evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
    ],
)
def test_host_header_guard(header: str, allowed: bool) -> None:
    assert _ip_or_localhost(_host_name(header)) is allowed


@pytest.mark.parametrize(
    ("location", "tracker"),
    [
        ("http://10.0.0.1:7764/app/get_transport_file?format=raw", "http://10.0.0.1:7764/announce"),
        ("http://10.0.0.1:7764/app/s3cret/get_transport_file", "http://10.0.0.1:7764/app/s3cret/announce"),
        ("https://node.example:443/channels/news.acelive", "https://node.example:443/announce"),
    ],
)
def test_the_internal_tracker_of_a_transport_url_sits_under_its_token(location: str, tracker: str) -> None:
    assert internal_tracker_url(location) == tracker
