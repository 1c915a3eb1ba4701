"""The registry client's sans-IO parts: the heartbeat schedule, answer and flag parsing, the bootstrap file."""

from __future__ import annotations

import asyncio
import base64
import json
import types
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import MultiDict

from swarmcast.cli import build_parser, split_debug_switches
from swarmcast.commands import acestream
from swarmcast.commands.p2p_options import p2p_config_from_args
from swarmcast.commands.registry_flags import endpoint_from_args
from swarmcast.http.engine_params import parse_playback
from swarmcast.node.joiner import JoinError
from swarmcast.registry.bootstrap import (
    MAX_PEERS,
    BootstrapError,
    StreamDirectory,
    is_registry_name,
    load_bootstrap,
    parse_peer,
)
from swarmcast.registry.client import (
    BACKOFF_MAX,
    MAX_HEARTBEAT_INTERVAL,
    MIN_HEARTBEAT_INTERVAL,
    REFUSED_BACKOFF,
    STREAM_RETRY,
    Action,
    HeartbeatSchedule,
    NodeReport,
    Outcome,
    RegistryEndpoint,
    StreamPosts,
    StreamReport,
    check_registry_url,
    endpoint_from,
    parse_registration,
)
from swarmcast.registry.http_client import RegistryError, decode_json
from swarmcast.registry.reports import ProcessFigures, registry_name, rss_bytes
from swarmcast.transport import Descriptor, public_key_bytes


def descriptor(title: str = "News") -> Descriptor:
    key = public_key_bytes(Ed25519PrivateKey.generate())
    return Descriptor(name="news", title=title, piece_size=64 * 188, bitrate=250_000, public_key=key)


def action_of(schedule: HeartbeatSchedule) -> Action:
    return schedule.action  # a call: mypy would narrow the property across the schedule's changes


def test_schedule_registers_then_heartbeats_at_the_registrys_interval() -> None:
    schedule = HeartbeatSchedule()
    assert action_of(schedule) is Action.REGISTER
    assert schedule.next_at == 0.0
    schedule.registered("n1", 5.0, now=100.0)
    assert action_of(schedule) is Action.HEARTBEAT
    assert schedule.next_at == 105.0
    schedule.outcome(Outcome.OK, now=105.0)
    assert schedule.next_at == 110.0


def test_schedule_clamps_the_interval_a_registry_asks_for() -> None:
    schedule = HeartbeatSchedule()
    schedule.registered("n1", 0.0001, now=0.0)
    assert schedule.interval == MIN_HEARTBEAT_INTERVAL  # a registry cannot make every node hammer it
    schedule.registered("n1", 1e12, now=0.0)
    assert schedule.interval == MAX_HEARTBEAT_INTERVAL  # nor silence them into being swept


def test_schedule_backs_off_exponentially_to_a_bound_and_recovers() -> None:
    schedule = HeartbeatSchedule()
    waits = []
    now = 0.0
    for _ in range(10):
        schedule.outcome(Outcome.FAILED, now)
        waits.append(schedule.next_at - now)
        now = schedule.next_at
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == BACKOFF_MAX
    assert schedule.down_since == 0.0
    schedule.registered("n1", 5.0, now)
    assert schedule.failures == 0
    assert schedule.down_since is None


def test_schedule_registers_again_at_once_on_404_and_keeps_its_id_on_failure() -> None:
    schedule = HeartbeatSchedule()
    schedule.registered("n1", 5.0, now=0.0)
    schedule.outcome(Outcome.FAILED, now=5.0)
    assert schedule.node_id == "n1"  # a registry that is down has not forgotten us
    assert action_of(schedule) is Action.HEARTBEAT
    schedule.outcome(Outcome.UNKNOWN, now=6.0)
    assert action_of(schedule) is Action.REGISTER
    assert schedule.next_at == 6.0
    schedule.outcome(Outcome.REFUSED, now=6.0)
    assert schedule.next_at == 6.0 + REFUSED_BACKOFF


@pytest.mark.parametrize(
    "answer",
    [None, [], "x", {"node_id": ""}, {"node_id": 5}, {"node_id": "a/b"}, {"node_id": ".."}, {"node_id": "x" * 65},
     {"node_id": "bad\nline"}],
)  # fmt: skip
def test_registration_answers_that_are_not_the_contract_are_refused(answer: object) -> None:
    with pytest.raises(RegistryError):
        parse_registration(answer)


@pytest.mark.parametrize("interval", [None, "5", True, float("nan"), float("inf"), [1]])
def test_a_bad_interval_falls_back_to_the_default(interval: object) -> None:
    assert parse_registration({"node_id": "n", "heartbeat_interval": interval}) == ("n", 5.0)


def test_garbage_and_deep_json_are_registry_errors() -> None:
    with pytest.raises(RegistryError):
        decode_json(b"\xff{")
    with pytest.raises(RegistryError):
        decode_json(b"[" * 100_000)
    assert decode_json(b"") is None


@pytest.mark.parametrize("url", ["ftp://x", "http://", "registry:8620", "http://h:99999", "http://h/?a=1", "x" * 2000])
def test_bad_registry_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        check_registry_url(url)


def test_registry_url_and_token() -> None:
    assert check_registry_url("http://127.0.0.1:8620/") == "http://127.0.0.1:8620"
    endpoint = endpoint_from("http://r", None, environ={"SWARMCAST_REGISTRY_NODE_TOKEN": "s3cret"})
    assert endpoint is not None
    assert endpoint.token == "s3cret"
    assert "s3cret" not in repr(endpoint)  # never in logs or tracebacks
    assert endpoint_from("http://r", "flag", environ={"SWARMCAST_REGISTRY_NODE_TOKEN": "env"}) == RegistryEndpoint(
        "http://r", "flag"
    )
    assert endpoint_from(None, "t") is None
    assert endpoint.api("nodes", "a/b c") == "http://r/api/nodes/a%2Fb%20c"


def test_node_report_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        NodeReport(role="viewer", address=None, http=None, version="1")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("News HD", "news-hd"), ("test", "test"), ("..x..", "x"), ("Ünïcode!", "n-code"), ("!!!", "broadcast"),
     ("a" * 100, "a" * 64)],
)  # fmt: skip
def test_registry_name_from_a_file_name(name: str, expected: str) -> None:
    assert registry_name(name) == expected


def test_process_figures() -> None:
    ticks = iter([0.0, 1.0])
    figures = ProcessFigures(clock=lambda: next(ticks)).sample()
    assert isinstance(figures["cpu_percent"], float)
    assert 0.0 <= figures["cpu_percent"] <= 1000.0
    assert rss_bytes() > 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8621", ("127.0.0.1", 8621)), ("[::1]:7", ("::1", 7)), ("node.example:80", ("node.example", 80))],
)
def test_peers(text: str, expected: tuple[str, int]) -> None:
    assert parse_peer(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "1.2.3.4:0", "h:65536", "::1:80", "[zz]:1", "h/x:1", ":80", 5, None,
                                  "h:+1", "h:١٢"])  # fmt: skip
def test_bad_peers(text: object) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_peer(text)


def test_names_and_content_ids() -> None:
    assert is_registry_name("news-hd")
    assert not is_registry_name("a" * 40)  # hex: a content id
    assert not is_registry_name("News")  # upper case is no registry name
    assert not is_registry_name("x" * 65)
    # Review finding 14: the engine's names are the registry's: no leading dot (id=.foo would be asked of the
    # registry, which never takes such a name: always a 404).
    assert not is_registry_name(".foo") and is_registry_name("foo.bar") and is_registry_name("_x")
    from swarmcast.registry import names, validate

    assert names.NAME_PATTERN.pattern == validate._STREAM_NAME.pattern
    for text in (".foo", "a" * 40, "A" * 40, "a" * 39, "ab" * 20 + "0"):
        assert names.is_content_id(text) == validate.is_content_id(text), text
    from swarmcast.registry import client, queries

    assert client.ROLES == queries.ROLES  # two copies (the engine never imports queries' SQLAlchemy): kept one


def test_parse_playback_takes_names_only_when_the_engine_can_resolve_them() -> None:
    with pytest.raises(JoinError, match="40 hex"):
        parse_playback(MultiDict({"id": "news-hd"}))
    asked = parse_playback(MultiDict({"id": "news-hd"}), is_registry_name)
    assert (asked.selector, asked.value) == ("id", "news-hd")
    with pytest.raises(JoinError):
        parse_playback(MultiDict({"id": "Not A Name"}), is_registry_name)


def write_bootstrap(tmp_path: Path, streams: object) -> Path:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps({"streams": streams}))
    return path


async def test_bootstrap_file_by_name_and_content_id(tmp_path: Path) -> None:
    one, two = descriptor("one"), descriptor("two")
    (tmp_path / "two.acelive").write_bytes(two.encode())
    path = write_bootstrap(tmp_path, [
        {"name": "one", "content_id": one.infohash, "transport": base64.b64encode(one.encode()).decode(),
         "peers": ["127.0.0.1:8621", "[::1]:8622", "127.0.0.1:8621"]},
        {"transport_file": "two.acelive"},
    ])  # fmt: skip
    directory = StreamDirectory(None, load_bootstrap(path))
    hint = await directory.hint("one")
    assert hint is not None
    assert hint.descriptor == one
    assert hint.peers == (("127.0.0.1", 8621), ("::1", 8622))
    assert await directory.hint(one.infohash.upper()) == hint
    found = await directory.hint(two.infohash)
    assert found is not None
    assert found.descriptor == two
    assert await directory.hint("two") is None  # no name given
    assert directory.lookups == 0


@pytest.mark.parametrize(
    ("streams", "message"),
    [
        ("x", r"expected \{\"streams\""),
        ([5], r"streams\[0\] is not an object"),
        ([{"name": "n"}], "give one of transport"),
        ([{"name": "N!", "transport": ""}], r"streams\[0\].name"),
        ([{"transport": "!!"}], "not base64"),
        ([{"transport": base64.b64encode(b"garbage").decode()}], r"streams\[0\].transport"),
        ([{"transport_file": "missing.acelive"}], "missing.acelive"),
        ([{"transport": "", "extra": 1}], "unknown key"),
        ([{"transport": "", "content_id": "zz"}], "40 hex"),
        ([{"transport": "", "peers": ["nope"]}], r"streams\[0\].peers\[0\]"),
        ([{"transport": "", "peers": ["127.0.0.1:1"] * (MAX_PEERS + 1)}], "at most"),
    ],
)
def test_bootstrap_file_errors_name_the_entry(tmp_path: Path, streams: object, message: str) -> None:
    with pytest.raises(BootstrapError, match=message):
        load_bootstrap(write_bootstrap(tmp_path, streams))


def test_bootstrap_file_content_id_must_match_and_names_are_unique(tmp_path: Path) -> None:
    one, two = descriptor("one"), descriptor("two")
    encoded = base64.b64encode(one.encode()).decode()
    with pytest.raises(BootstrapError, match="content id is"):
        load_bootstrap(write_bootstrap(tmp_path, [{"content_id": two.infohash, "transport": encoded}]))
    with pytest.raises(BootstrapError, match="given twice"):
        load_bootstrap(write_bootstrap(tmp_path, [{"name": "a", "transport": encoded}] * 2))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(BootstrapError, match="not JSON"):
        load_bootstrap(tmp_path / "bad.json")
    with pytest.raises(BootstrapError, match="cannot read"):
        load_bootstrap(tmp_path)


@pytest.mark.parametrize(
    "words",
    [
        ["--stream-source-node", "--source", "http://10.0.0.1/s", "--title", "T", "--registry-name", "news"],
        ["--stream-support-node", "--url", "http://10.0.0.1:7764/app/get_transport_file"],
        ["--stream-startup-node", "--url", "http://10.0.0.1:7764/app/get_transport_file"],
        ["--client-console", "--bootstrap", "/srv/streams.json"],
    ],
)
def test_the_acestreamengine_command_line_takes_the_registry_flags(words: list[str]) -> None:
    parser = acestream.engine_parser("acestreamengine")
    rest, _ = split_debug_switches(acestream.translate([*words, "--registry", "http://reg:8620/",
                                                        "--registry-token", "T"], parser), set())  # fmt: skip
    args = parser.parse_args(rest)
    assert endpoint_from_args(args) == RegistryEndpoint("http://reg:8620", "T")


def test_broadcaster_takes_the_registry_flags_and_passes_them_to_its_rendition_nodes(tmp_path: Path) -> None:
    args = build_parser().parse_args(["broadcaster", "--p2p", "--publish-dir", str(tmp_path), "--registry",
                                      "http://reg:8620", "--registry-token", "s3cret"])  # fmt: skip
    config = p2p_config_from_args(args, "http://127.0.0.1:8935")
    assert config.extra_args == ("--registry", "http://reg:8620")
    assert "s3cret" not in " ".join(config.extra_args)  # the token goes by environment, not on a command line
    assert config.extra_env == (("SWARMCAST_REGISTRY_NODE_TOKEN", "s3cret"),)


def test_a_bad_registry_url_is_argparses_one_line(capsys: pytest.CaptureFixture[str]) -> None:

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["engine", "--registry", "ftp://reg"])
    assert exited.value.code == 2
    assert "argument --registry: 'ftp://reg' is not an http:// or https:// URL" in capsys.readouterr().err


def test_a_refused_stream_is_posted_again_after_a_backoff() -> None:
    """Review finding 10: a 409 (the name held by another live stream) is retried, not given up until the node
    registers again; not at every heartbeat either."""
    posts = StreamPosts()
    news = StreamReport(content_id="ab" * 20, name="news", title="News", transport=b"t")
    assert posts.due(news, 0.0)
    posts.refused_at(news, 10.0)
    assert not posts.due(news, 10.0 + 5.0) and not posts.due(news, 10.0 + STREAM_RETRY - 0.1)
    assert posts.due(news, 10.0 + STREAM_RETRY)  # the other stream may have ended
    posts.refused_at(news, 10.0 + STREAM_RETRY)  # refused again: another backoff
    assert not posts.due(news, 10.0 + STREAM_RETRY + 1.0)
    renamed = StreamReport(content_id="ab" * 20, name="news-2", title="News", transport=b"t")
    assert posts.due(renamed, 10.0 + STREAM_RETRY + 1.0)  # a changed body is posted at once
    posts.accepted(renamed)
    assert not posts.due(renamed, 1e9) and posts.refused == {}
    posts.forget()  # registered again under a new node id
    assert posts.due(renamed, 0.0)


class _FakeSwarm:
    def __init__(self, cid: bytes) -> None:
        self.content_id, self.descriptor, self.candidates = cid, None, list[object]()

    def add_candidates(self, peers: object) -> None:
        self.candidates.append(peers)


class _FakeBroadcast:
    def __init__(self, cid: bytes) -> None:
        self.swarm = _FakeSwarm(cid)
        self.membership = self

    def add_startup_nodes(self, nodes: object) -> None:
        pass


class _FakeEngine:
    """What _broadcast_for and bootstrap.join_content_id use of an engine; records when the join started."""

    def __init__(self, lookup_done: asyncio.Event) -> None:
        self.config = types.SimpleNamespace(trackers=("http://127.0.0.1:1/announce",))
        self.broadcasts: dict[bytes, _FakeBroadcast] = {}
        self.host = types.SimpleNamespace(dial_now=lambda swarm: None)
        self.lookup_done = lookup_done
        self.joined_before_lookup_answered: bool | None = None

    async def join(self, cid: bytes, **_hints: object) -> _FakeBroadcast:
        if self.joined_before_lookup_answered is None:
            self.joined_before_lookup_answered = not self.lookup_done.is_set()
        return self.broadcasts.setdefault(cid, _FakeBroadcast(cid))


async def test_a_hung_registry_does_not_hold_a_content_id_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review finding 11: with ``id=<content id>`` the engine joins through its trackers without waiting for a
    registry that hangs, and takes the registry's peers when they come; a name still waits for the answer."""
    from swarmcast.http import engine_api
    from swarmcast.registry import bootstrap

    release, lookup_done = asyncio.Event(), asyncio.Event()
    one = descriptor("one")
    peer = ("127.0.0.1", 8621)

    async def hanging_registry(endpoint: object, key: str) -> bootstrap.StreamHint:
        try:
            await release.wait()
            return bootstrap.StreamHint(one, (peer,))
        finally:
            lookup_done.set()

    monkeypatch.setattr(bootstrap, "registry_hint", hanging_registry)
    monkeypatch.setattr(bootstrap, "CONTENT_ID_WAIT", 0.0, raising=False)  # no sleeping in a unit test
    engine: Any = _FakeEngine(lookup_done)
    directory = StreamDirectory(RegistryEndpoint("http://127.0.0.1:1"))
    bootstrap.attach(engine, directory)
    asked = parse_playback(MultiDict(id=one.infohash), is_registry_name)
    broadcast: Any = await engine_api._broadcast_for(engine, asked)
    assert engine.joined_before_lookup_answered is True  # the join did not wait for the registry
    assert not lookup_done.is_set() and broadcast.swarm.candidates == []
    release.set()  # the registry answers late: its peers join the swarm's candidates
    for _ in range(100):
        if broadcast.swarm.candidates:
            break
        await asyncio.sleep(0)
    assert broadcast.swarm.candidates == [(peer,)]
    await directory.close()
