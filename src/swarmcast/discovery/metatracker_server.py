"""``swarmcast metatracker``: answers ``GET /<any path>?infohash=<40 hex>`` from an operator's JSON config file.

How this works. The config (docs/operators.md, "Metatracker") is one JSON object: ``"default"`` and any number of
40-hex infohashes, each mapping to ``{"trackers": [...], "startup_nodes": ["IP:PORT", ...], "interval": N}`` (every
key optional). A broadcast's answer takes each key from its own entry when the entry has it, else from
``"default"``, else empty (interval: DEFAULT_INTERVAL). :func:`parse_config` checks the whole file once and
pre-encodes every answer, so a request is a dict lookup; a bad file is a :class:`ConfigError` whose message names
the key and the value. :class:`ConfigFile` re-reads the file when its modification time, size or inode change
(polled every ``poll_interval`` seconds, so an editor's atomic rename is seen too); a bad new version is logged and
the previous one keeps being served, so a typo never takes the broadcasts' discovery down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from aiohttp import web

from swarmcast.discovery.metatracker_protocol import (
    DEFAULT_INTERVAL,
    MAX_ANSWER_STARTUP_NODES,
    MAX_ANSWER_TRACKERS,
    MAX_INTERVAL,
    MIN_INTERVAL,
    MetatrackerAnswer,
    NodeAddress,
    check_announce_url,
    encode_answer,
    parse_node_address,
)
from swarmcast.files import UnreadableFileError, read_regular_file

__all__ = ["ConfigError", "ConfigFile", "MetatrackerConfig", "make_app", "parse_config", "parse_infohash"]

log = logging.getLogger("swarmcast.metatracker")

MAX_CONFIG_BYTES: Final = 8 * 1024 * 1024  # the config file; a bigger one is refused
MAX_CONFIG_ENTRIES: Final = 100_000  # infohash entries (plus "default")
MAX_QUERY_CHARS: Final = 1024  # a request's query string
DEFAULT_POLL_INTERVAL: Final = 2.0  # seconds between checks of the config file's modification time
ENTRY_KEYS: Final = frozenset({"trackers", "startup_nodes", "interval"})

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
T = TypeVar("T")


class ConfigError(ValueError):
    """A config file we cannot serve; the message names the key and the bad value."""


@dataclass(frozen=True)
class _Entry:
    trackers: tuple[str, ...] | None = None
    startup_nodes: tuple[NodeAddress, ...] | None = None
    interval: float | None = None


@dataclass(frozen=True)
class MetatrackerConfig:
    answers: dict[str, bytes]  # lowercase infohash -> encoded answer
    default: bytes  # the answer for any other infohash
    default_answer: MetatrackerAnswer

    def answer_for(self, infohash: str) -> bytes:
        return self.answers.get(infohash, self.default)


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_entry(name: str, value: object) -> _Entry:
    if not isinstance(value, dict):
        raise ConfigError(f"config key {name!r} = {_short(value)} is not an object")
    unknown = sorted(set(value) - ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"config key {name}.{unknown[0]!r} is not known (allowed: {', '.join(sorted(ENTRY_KEYS))})")
    trackers = nodes = None
    interval: float | None = None
    if "trackers" in value:
        trackers = tuple(_parse_list(f"{name}.trackers", value["trackers"], MAX_ANSWER_TRACKERS, check_announce_url))
    if "startup_nodes" in value:
        nodes = tuple(_parse_list(f"{name}.startup_nodes", value["startup_nodes"], MAX_ANSWER_STARTUP_NODES,
                                  parse_node_address))  # fmt: skip
    if "interval" in value:
        raw = value["interval"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not MIN_INTERVAL <= raw <= MAX_INTERVAL:
            raise ConfigError(f"config key '{name}.interval' = {_short(raw)} is not a number of seconds in "
                              f"{MIN_INTERVAL:g}..{MAX_INTERVAL:g}")  # fmt: skip
        interval = float(raw)
    return _Entry(trackers, nodes, interval)


def _parse_list(key: str, value: object, limit: int, check: Callable[[str], T]) -> list[T]:
    if not isinstance(value, list):
        raise ConfigError(f"config key {key!r} = {_short(value)} is not a list")
    if len(value) > limit:
        raise ConfigError(f"config key {key!r} has {len(value)} entries, more than {limit}")
    items: list[T] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"config key '{key}[{index}]' = {_short(item)} is not a string")
        try:
            parsed = check(item)
        except ValueError as error:
            raise ConfigError(f"config key '{key}[{index}]' = {_short(item)}: {error}") from None
        if parsed in items:
            raise ConfigError(f"config key '{key}[{index}]' = {_short(item)} is listed twice")
        items.append(parsed)
    return items


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError(f"config key {key[:80]!r} appears twice")
        result[key] = value
    return result


def _pick(own: T | None, fallback: T | None, empty: T) -> T:
    return own if own is not None else fallback if fallback is not None else empty


def _answer(entry: _Entry, default: _Entry) -> MetatrackerAnswer:
    return MetatrackerAnswer(
        trackers=_pick(entry.trackers, default.trackers, ()),
        startup_nodes=_pick(entry.startup_nodes, default.startup_nodes, ()),
        interval=_pick(entry.interval, default.interval, DEFAULT_INTERVAL),
    )


def parse_config(data: bytes) -> MetatrackerConfig:
    """The whole config file, checked; ConfigError naming the first bad key and value."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file is {len(data)} bytes, more than {MAX_CONFIG_BYTES}")
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8") from None
    except RecursionError:
        raise ConfigError("config file is nested too deeply") from None
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"config file is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"config file holds a JSON {type(value).__name__}, not an object")
    if len(value) > MAX_CONFIG_ENTRIES + 1:
        raise ConfigError(f"config file has {len(value)} entries, more than {MAX_CONFIG_ENTRIES}")
    default = _parse_entry("default", value["default"]) if "default" in value else _Entry()
    answers: dict[str, bytes] = {}
    for key, entry_value in value.items():
        if key == "default":
            continue
        if not _HEX40.fullmatch(key):
            raise ConfigError(f"config key {key[:80]!r} is neither 'default' nor a 40-hex infohash")
        infohash = key.lower()
        if infohash in answers:
            raise ConfigError(f"config key {key!r} names infohash {infohash} twice (in other letter case)")
        answers[infohash] = encode_answer(_answer(_parse_entry(key, entry_value), default))
    default_answer = _answer(_Entry(), default)
    return MetatrackerConfig(answers, encode_answer(default_answer), default_answer)


def read_config(path: Path) -> MetatrackerConfig:
    """Read and parse ``path`` (a regular file, at most MAX_CONFIG_BYTES); ConfigError naming the problem."""
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except UnreadableFileError as error:
        if error.not_regular:
            raise ConfigError(f"{path} is not a regular file") from None
        raise ConfigError(f"cannot read {path}: {error}") from None
    return parse_config(data)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


class ConfigFile:
    """The config in effect, re-read when the file changes (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = _signature(path)
        self.config = read_config(path)  # at start a bad file is fatal: ConfigError
        self.reloads = 0
        self.last_error: str | None = None

    def poll(self) -> bool:
        """Re-read the file if it changed since the last look; True when a new config is in effect."""
        signature = _signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            config = read_config(self.path)
        except ConfigError as error:
            self.last_error = str(error)
            log.error("%s: %s; still serving the previous config", self.path, error)
            return False
        self.config = config
        self.reloads += 1
        self.last_error = None
        log.info("%s re-read: %d broadcast entries", self.path, len(config.answers))
        return True

    async def watch(self, poll_interval: float) -> None:
        while True:
            await asyncio.sleep(poll_interval)
            # Reading is quick for the file sizes allowed, but a slow disk must not stall requests.
            await asyncio.to_thread(self.poll)


def parse_infohash(query_string: str) -> str:
    """The request's infohash, lowercase; ValueError naming what is wrong."""
    if len(query_string) > MAX_QUERY_CHARS:
        raise ValueError(f"query of {len(query_string)} characters, more than {MAX_QUERY_CHARS}")
    values = [v for k, _, v in (p.partition("=") for p in query_string.split("&")) if k == "infohash"]
    if not values:
        raise ValueError("missing infohash=<40 hex digits>")
    if len(values) > 1:
        raise ValueError("infohash given more than once")
    if not _HEX40.fullmatch(values[0]):
        raise ValueError(f"infohash {values[0][:60]!r} is not 40 hex digits")
    return values[0].lower()


CONFIG_KEY: Final = web.AppKey("metatracker config", ConfigFile)


async def _answer_request(request: web.Request) -> web.Response:
    try:
        infohash = parse_infohash(request.query_string)
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    body = request.app[CONFIG_KEY].config.answer_for(infohash)
    return web.Response(body=body, content_type="application/json")


def make_app(config: ConfigFile) -> web.Application:
    app = web.Application()
    app[CONFIG_KEY] = config
    # Any path: the operator puts whatever path they like in --metatracker URL.
    app.router.add_get("/{tail:.*}", _answer_request)
    return app
