"""The Ace Stream command line: translation onto ``swarmcast node``, every streaming-utils option, errors, help."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from swarmcast import __version__
from swarmcast.cli import Parser, build_parser, find_subparser, main, split_debug_switches
from swarmcast.commands import acestream
from swarmcast.commands.options import common_from_args, log_config_from_args
from swarmcast.commands.preflight import UsageError, check_directory, check_log_file
from swarmcast.logsetup import LogConfig, configure_logging, parse_log_modules
from swarmcast.node.lifecycle import pid_file, pid_file_name
from swarmcast.swarm.choking import Choker
from swarmcast.swarm.config import Role, SwarmConfig
from swarmcast.swarm.peer import PeerSession
from swarmcast.transport import CATEGORIES
from tests.streaming_utils import CACHE_SIZE, DEBUG_ARGS, source_line, support_line


def parse(words: list[str]) -> argparse.Namespace:
    parser = acestream.engine_parser("acestreamengine")
    rest, switches = split_debug_switches(acestream.translate(words, parser), set())
    args = parser.parse_args(rest)
    args.debug_switches = tuple(switches)
    return args


def streaming_source(**extra: object) -> list[str]:
    base: dict[str, object] = {
        "log": "/tmp/l.log", "port": 7764, "source": "http://10.0.0.1/stream", "bitrate": 250000, "name": "uid",
        "title": "My TV", "public": "/srv/public", "metadata": "/srv/meta", "cache": "/srv/cache",
        "state": "/srv/state", "pid": "/srv/pid", "trackers": ["udp://t.example:6969/announce"],
        "categories": ["sport", "kids"],
    }  # fmt: skip
    base.update(extra)
    return source_line(**base)  # type: ignore[arg-type]


# -- translation -----------------------------------------------------------------------------------------------


def test_mode_flags_pick_the_role_wherever_they_stand() -> None:
    assert acestream.translate(["--port", "1", "--stream-source-node", "--title", "x"]) == [
        "node", "source", "--port", "1", "--title", "x"]  # fmt: skip
    assert acestream.translate(["--stream-support-node"])[:2] == ["node", "support"]
    assert acestream.translate(["--client-console", "--http-port", "1"]) == ["engine", "--http-port", "1"]


def test_startup_mode_translates_once_the_subparser_exists() -> None:
    parser = build_parser()
    if find_subparser(parser, ("node", "startup")) is None:
        with pytest.raises(acestream.TranslationError, match="--stream-startup-node"):
            acestream.translate(["--stream-startup-node"], parser)
        # Add what the start-node part adds: the translation needs nothing else.
        node = find_subparser(parser, ("node",))
        assert node is not None
        roles = next(a for a in node._actions if isinstance(a, argparse._SubParsersAction))
        roles.add_parser("startup")
    assert acestream.translate(["--stream-startup-node", "--port", "9"], parser) == ["node", "startup", "--port", "9"]


@pytest.mark.parametrize(("words", "message"), [
    ([], "give a mode"), (["--port", "1"], "give a mode"),
    (["--stream-source-node", "--stream-support-node"], "one mode at a time"),
])  # fmt: skip
def test_translation_errors(words: list[str], message: str) -> None:
    with pytest.raises(acestream.TranslationError, match=message):
        acestream.translate(words)


def test_version_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert acestream.main(["--version"]) == 0
    assert capsys.readouterr().out == f"version: {__version__} revision: {acestream.REVISION}\n"


def test_no_mode_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/acestreamengine"])
    assert acestream.main(["--port", "8621"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("acestreamengine: error: give a mode")


# -- every option of streaming-utils' command lines --------------------------------------------------------------


def test_streaming_utils_source_line_parses_into_the_config() -> None:
    args = parse(streaming_source(provider_key="K", sid="S", token="TOK", upload_to=["10.0.0.2:8621"],
                                  private_node=1, debug=True))  # fmt: skip
    common = common_from_args(args)
    assert args.func.__name__ == "run_source"
    assert (args.source, args.bitrate, args.name, args.title, args.quality) == (
        "http://10.0.0.1/stream", 250000, "uid", "My TV", "SD")  # fmt: skip
    assert args.publish_dir == Path("/srv/public") and args.metadata_dir == Path("/srv/meta")
    assert (args.provider_key, args.sid, args.category) == ("K", "S", ["sport", "kids"])
    assert args.skip_internal_tracker and args.source_reconnect_interval == 20
    assert common.cache.max_bytes == CACHE_SIZE and common.cache.cache_type == "memory"
    assert common.cache.directory == Path("/srv/cache") and common.pid_file_dir == Path("/srv/pid")
    assert common.port == 7764 and common.max_peers == 10 and common.trackers == ("udp://t.example:6969/announce",)
    assert common.service_access_token == "TOK"
    assert common.access.monitor_ips == ("127.0.0.1",) and common.access.remote_access
    assert common.access.one_connection_per_ip and common.access.private
    assert common.access.upload_to == (("10.0.0.2", 8621),)
    assert common.monitor.stats_report_interval == 4 and common.monitor.stats_report_peers
    log = log_config_from_args(args)
    assert log.log_file == Path("/tmp/l.log") and log.backup_count == 1 and log.max_bytes == 100_000_000
    assert log.verbose and log.modules == (("root", logging.DEBUG),)
    assert len(args.debug_switches) == sum(w.startswith("--debug-") for w in DEBUG_ARGS)


def test_streaming_utils_support_line_parses_into_the_config() -> None:
    args = parse(support_line(log="/tmp/s.log", port=8622, download_from="10.0.0.1:7764", cache="/c", state="/s",
                              pid="/p", token="TOK"))  # fmt: skip
    common = common_from_args(args)
    assert args.func.__name__ == "run_support"
    assert args.url == "http://10.0.0.1:7764/app/TOK/get_transport_file?format=raw"
    assert args.download_from == [("10.0.0.1", 7764)]
    assert common.optimistic_slots == 1 and common.newcomer_slots == 1 and common.max_peers == 10
    assert common.cache.max_bytes == CACHE_SIZE and args.state_dir == Path("/s")
    assert not log_config_from_args(args).verbose


def test_live_mem_cache_size_is_the_cache_cap_and_host_is_the_bind_address() -> None:
    args = parse(["--stream-support-node", "--url", "u", "--live-mem-cache-size", "1234", "--host", "10.1.1.1"])
    common = common_from_args(args)
    assert common.cache.max_bytes == 1234 and common.bind == "10.1.1.1"


def test_piecesize_is_rounded_to_whole_packets_and_bounded() -> None:
    args = parse(["--stream-source-node", "--source", "s", "--title", "t", "--piecesize", "65536"])
    assert args.piecesize == 65536 - 65536 % 188 and args.piecesize % 188 == 0
    assert parse(["--stream-source-node", "--source", "s", "--title", "t", "--piecesize", "0"]).piecesize == 0
    with pytest.raises(SystemExit):
        parse(["--stream-source-node", "--source", "s", "--title", "t", "--piecesize", "100"])


def test_piecesize_goes_into_the_descriptor(tmp_path: Path) -> None:
    from swarmcast.commands.options import piece_size
    from swarmcast.node.config import NodeCommon, SourceConfig
    from swarmcast.node.source import SourceNode

    config = SourceConfig(common=NodeCommon(port=0), source_url="s", name="n", title="t", bitrate=250_000,
                          metadata_dir=tmp_path, piece_size=piece_size("65536"))  # fmt: skip
    assert SourceNode(config)._descriptor_for(250_000).piece_size == 65536 - 65536 % 188
    default = SourceNode(SourceConfig(common=NodeCommon(port=0), source_url="s", name="n", title="t",
                                      bitrate=250_000, metadata_dir=tmp_path))  # fmt: skip
    assert default._descriptor_for(250_000).piece_size != 65536 - 65536 % 188


# -- errors ----------------------------------------------------------------------------------------------------


def run_main(words: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(words)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


UNKNOWN = ["--stream-source", "--bind-all", "--live-buffer", "--hls-no-such-option"]


@pytest.mark.parametrize("option", UNKNOWN)
def test_unknown_option_is_named_with_required_ones_missing(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["node", "source", option, "3"], capsys)
    assert code == 2 and err.count("\n") == 1 and option in err and "unrecognized" in err


def test_abbreviations_are_not_taken(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse would take --live-cache for --live-cache-size/--live-cache-type: an unknown Ace Stream option must
    # never pass for a prefix of ours.
    code, err = run_main(["node", "support", "--url", "u", "--live-cache", "5"], capsys)
    assert code == 2 and "--live-cache" in err


def test_every_parser_is_the_one_line_parser() -> None:
    parser = build_parser()
    for path in (("node", "source"), ("node", "support"), ("engine",), ("testsrc",), ("demo",)):
        sub = find_subparser(parser, path)
        assert isinstance(sub, Parser) and not sub.allow_abbrev, path


def test_debug_switches_with_and_without_values() -> None:
    rest, on = split_debug_switches(["--port", "1", "--debug-pieces", "--debug-dht", "0", "--debug-storage=1",
                                     "--debug-x=0", "--debug-y", "1", "--title", "t"], set())  # fmt: skip
    assert rest == ["--port", "1", "--title", "t"]
    assert on == ["--debug-pieces", "--debug-storage", "--debug-y"]
    # ours stay ours, and after "--" nothing is a switch
    assert split_debug_switches(["--debug-ours", "--", "--debug-z"], {"--debug-ours"}) == (
        ["--debug-ours", "--", "--debug-z"], [])  # fmt: skip


def test_debug_switch_on_a_command_without_debug_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["testsrc", "--debug-pieces"], capsys)
    assert code == 2 and "--debug-pieces" in err


@pytest.mark.parametrize(("text", "expected"), [
    ("root:D", (("root", logging.DEBUG),)),
    ("root:I,swarmcast.swarm:D", (("root", logging.INFO), ("swarmcast.swarm", logging.DEBUG))),
    ("aiohttp:warning a.b:E", (("aiohttp", logging.WARNING), ("a.b", logging.ERROR))),
])  # fmt: skip
def test_log_modules(text: str, expected: tuple[tuple[str, int], ...]) -> None:
    assert parse_log_modules(text) == expected


@pytest.mark.parametrize("text", ["", "root", "root:", ":D", "root:X", "root:D,,x"])
def test_bad_log_modules_name_the_entry(text: str) -> None:
    with pytest.raises(ValueError, match=r"NAME:LEVEL|names no module"):
        parse_log_modules(text)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("swarmcast.test").setLevel(logging.NOTSET)


@pytest.mark.usefixtures("restore_logging")
def test_log_file_rotates_and_keeps_backup_count(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    configure_logging(LogConfig(log_file=path, max_bytes=2000, backup_count=1,
                                modules=(("swarmcast.test", logging.DEBUG),)))  # fmt: skip
    logger = logging.getLogger("swarmcast.test")
    for i in range(200):
        logger.debug("line %d %s", i, "x" * 40)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["node.log", "node.log.1"]
    assert path.stat().st_size <= 2000 and "line 199" in path.read_text()


@pytest.mark.usefixtures("restore_logging")
def test_log_modules_override_the_base_level(tmp_path: Path) -> None:
    configure_logging(LogConfig(log_file=tmp_path / "l", verbose=False, modules=(("swarmcast.test", logging.DEBUG),)))
    assert logging.getLogger("swarmcast.test").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("swarmcast.other").isEnabledFor(logging.DEBUG)


def test_directory_checks(tmp_path: Path) -> None:
    check_directory("--cache-dir", tmp_path / "new" / "deeper")  # creatable: fine, and not created
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"--cache-dir.*not a directory"):
        check_directory("--cache-dir", tmp_path / "file" / "x")
    with pytest.raises(UsageError, match=r"--state-dir.*is not a directory"):
        check_directory("--state-dir", tmp_path / "file")
    with pytest.raises(UsageError, match=r"--log-file.*is a directory"):
        check_log_file("--log-file", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probes left nothing


# -- pid file ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("program", "name"), [("/usr/bin/acestreamengine", "acestreamengine-7764.pid"),
                                               ("start-engine", "acestreamengine-7764.pid"),
                                               ("/usr/bin/swarmcast", "acestream-7764.pid"),
                                               ("-m", "acestream-7764.pid")])  # fmt: skip
def test_pid_file_name_follows_the_program(program: str, name: str) -> None:
    assert pid_file_name(7764, Path(program).name) == name


def test_pid_file_lives_as_long_as_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/opt/acestream/acestreamengine", "--stream-source-node"])
    with pid_file(tmp_path, 7764) as path:
        assert [p.name for p in tmp_path.iterdir()] == ["acestreamengine-7764.pid"]
        assert path.read_text().strip().isdigit()
    assert list(tmp_path.iterdir()) == []


# -- --core-sandbox-max-peers / --core-max-fast-peers in the choker ---------------------------------------------


@dataclass
class FakeSession:
    key: int
    connected_at: float
    am_choking: bool = True
    peer_interested: bool = True
    is_seeder: bool = False
    unchoked_at: float = 0.0
    remote_ip: str = "127.0.0.1"  # the --upload-to filter of the choker reads it


def choker(slots: int, *, optimistic: int | None = None, newcomer: int | None = None,
           n: int = 12) -> tuple[Choker, dict[int, FakeSession]]:  # fmt: skip
    sessions = {i: FakeSession(i, connected_at=-100.0) for i in range(n)}
    config = SwarmConfig(role=Role.SUPPORT, upload_slots=slots, optimistic_slots=optimistic, newcomer_slots=newcomer)
    c = Choker(config, cast(dict[int, PeerSession], sessions), score=lambda s, now: (False, float(s.key)),
               send=lambda s, m, now: None, rng=random.Random(1), now=0.0)  # fmt: skip
    return c, sessions


@pytest.mark.parametrize(("optimistic", "expected"), [(None, 2), (1, 1), (3, 3), (0, 0)])
def test_sandbox_peers_set_the_optimistic_share(optimistic: int | None, expected: int) -> None:
    c, sessions = choker(8, optimistic=optimistic)
    c.rechoke(100.0)
    unchoked = {k for k, s in sessions.items() if not s.am_choking}
    best = set(range(11, 11 - (8 - expected), -1))  # the best scorers keep their slots; the rest are on trial
    assert len(unchoked) == 8 and best <= unchoked
    assert len(c._optimistic) == expected


@pytest.mark.parametrize(("newcomer", "extra"), [(None, 2), (1, 1), (0, 0)])
def test_fast_peers_set_the_newcomer_slots(newcomer: int | None, extra: int) -> None:
    c, sessions = choker(8, newcomer=newcomer, n=8)
    c.after_change(0.0)
    assert sum(not s.am_choking for s in sessions.values()) == 8
    for key in range(100, 104):  # four peers that have just joined, slots full
        sessions[key] = FakeSession(key, connected_at=50.0)
        c.unchoke_if_free(cast(PeerSession, sessions[key]), 51.0)
    assert sum(not sessions[k].am_choking for k in range(100, 104)) == extra


# -- help --------------------------------------------------------------------------------------------------------


def options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield " ".join(path), action


def test_every_option_says_its_meaning_and_default() -> None:
    missing = [f"{path} {action.option_strings[0]}" for path, action in options(build_parser())
               if not action.help or not any(w in action.help for w in ("default", "required", "ignored"))]
    assert missing == []


def test_category_help_lists_the_values_and_says_it_repeats() -> None:
    source = find_subparser(build_parser(), ("node", "source"))
    assert source is not None
    text = source.format_help()
    category = next(a for a in source._actions if "--category" in a.option_strings)
    assert category.help is not None and "repeatable" in category.help
    assert all(c in category.help for c in CATEGORIES), text


def test_bitrate_help_says_its_unit_in_both_commands() -> None:
    parser = build_parser()
    helps = {path: a.help or "" for path, a in options(parser) if "--bitrate" in a.option_strings}
    assert "BYTES per second" in helps["node source"] and "bits/s" in helps["node source"]
    assert "BITS per second" in helps["testsrc"] and "bytes/s" in helps["testsrc"]


@pytest.mark.usefixtures("restore_logging")
def test_lib_path_is_ignored_with_a_log_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from swarmcast.commands.options import start_logging

    args = parse(["--lib-path", "/usr/share/acestream", "--stream-support-node", "--url", "u",
                  "--log-file", str(tmp_path / "n.log"), "--debug-pieces"])  # fmt: skip
    start_logging(args)
    text = (tmp_path / "n.log").read_text()
    assert "ignoring --lib-path /usr/share/acestream" in text and "debug logging on for --debug-pieces" in text
    assert acestream.main(["--lib-path", "/opt/acestream", "--version"]) == 0
    assert capsys.readouterr().out.startswith("version: ")
