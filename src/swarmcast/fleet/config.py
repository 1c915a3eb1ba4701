"""streaming-utils' config files, read unchanged and checked once: the app config and the stream lists.

Every problem is one line naming its place in the file, e.g. ``source_node[3].port: 'abc' is not a port``;
``check_*`` raise ConfigError with all of them (the first few), and nothing is started or stopped on a bad config.
Unknown keys in the app config are errors (a typo there changes every node); unknown keys in a stream entry are
warnings (a controller may send fields of its own), listed in ``warnings``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarmcast.files import UnreadableFileError, read_regular_file
from swarmcast.fleet import jsonc

ENGINE_VERSIONS = ("stable", "beta", "alpha")
DIR_NAMES = ("public", "private", "metadata", "log", "cache", "pid", "state")
# common.py ALLOWED_CATEGORIES of streaming-utils (the same list the node's --category takes)
CATEGORIES = (
    "informational", "entertaining", "educational", "movies", "documentaries", "sport", "fashion", "music",
    "regional", "ethnic", "religion", "teleshop", "erotic_18_plus", "other_18_plus", "cyber_games", "amateur",
    "webcam", "kids", "series", "promotion",
)  # fmt: skip
STREAM_UID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # a file name: <uid>.sauth, <uid>.acelive
MAX_ENTRIES = 10_000
MAX_ERRORS_SHOWN = 20
APP_KEYS = {"engine_path", "root", "controller", "dirs", "trackers", "provider_key", "node_access_token", "bind"}
CONTROLLER_KEYS = ("source_node", "support_node", "monitor", "metadata_receiver")
SOURCE_KEYS = {
    "stream_uid", "port", "title", "url", "bitrate", "categories", "quality", "type", "upload_to",
    "force_monotonic_sequence", "extended_logging", "engine_version", "private_node", "metadata",
}  # fmt: skip
SUPPORT_KEYS = {"port", "source_ip", "source_port", "extended_logging", "engine_version", "private_node"}


class ConfigError(ValueError):
    """A config that must not be acted on; ``str()`` is every problem, one per line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_ERRORS_SHOWN]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n... and {more} more" if more else ""))


@dataclass(frozen=True)
class Controller:
    source_node: str | None
    support_node: str | None
    monitor: str | None
    metadata_receiver: str | None


@dataclass(frozen=True)
class AppConfig:
    path: Path
    engine_path: Mapping[str, str]  # version -> executable ($VARS expanded, relative to root)
    root: Path
    controller: Controller
    dirs: Mapping[str, Path]
    trackers: tuple[str, ...]
    provider_key: str | None
    node_access_token: str | None
    bind: str | None  # swarmcast's addition: this server's node address (default: every address, as Ace Stream)

    def dir(self, name: str) -> Path:
        return self.dirs[name]

    def local_path(self, location: str) -> Path:
        path = Path(location)
        return path if path.is_absolute() else self.root / path

    @property
    def node_host(self) -> str:
        """Where this server's nodes answer their web interface."""
        return self.bind if self.bind and self.bind not in ("0.0.0.0", "::") else "127.0.0.1"


@dataclass(frozen=True)
class Metadata:
    last_seq: int
    private_key: str


@dataclass(frozen=True)
class SourceEntry:
    stream_uid: str
    port: int
    title: str
    url: str
    bitrate: int
    categories: tuple[str, ...]
    quality: str
    type: str  # ts | hls
    upload_to: tuple[str, ...] | None
    force_monotonic_sequence: int | None
    extended_logging: int
    engine_version: str
    private_node: int | None
    metadata: Metadata | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SupportEntry:
    port: int
    source_ip: str
    source_port: int
    extended_logging: int
    engine_version: str
    private_node: int | None

    @property
    def download_from(self) -> str:
        host = f"[{self.source_ip}]" if ":" in self.source_ip else self.source_ip
        return f"{host}:{self.source_port}"


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def string(self, where: str, value: object, *, empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.bad(where, f"{value!r} is not a string")
            return None
        if not empty and not value.strip():
            self.bad(where, "is empty")
            return None
        if "\x00" in value or "\n" in value:
            self.bad(where, f"{value!r} holds a NUL or newline")
            return None
        return value

    def integer(self, where: str, value: object, what: str, low: int, high: int) -> int | None:
        """An int, or a string of digits (controllers send ``"bitrate": "400000"``)."""
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit() and len(value) < 20:
            number = int(value.strip())
        if number is None or not low <= number <= high:
            self.bad(where, f"{value!r} is not {what}")
            return None
        return number

    def port(self, where: str, value: object) -> int | None:
        return self.integer(where, value, "a port", 1, 65535)

    def flag(self, where: str, value: object) -> int | None:
        return self.integer(where, value, "0 or 1", 0, 1)

    def ip(self, where: str, value: object) -> str | None:
        text = self.string(where, value)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            self.bad(where, f"{text!r} is not an IP address")
            return None

    def address(self, where: str, value: object) -> str | None:
        text = self.string(where, value)
        if text is None:
            return None
        host, sep, port = text.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            ok = bool(sep) and port.isdigit() and 1 <= int(port) <= 65535
        except ValueError:
            ok = False
        if not ok:
            self.bad(where, f"{text!r} is not IP:PORT")
            return None
        return text

    def url(self, where: str, value: object) -> str | None:
        text = self.string(where, value)
        if text is not None and not text.startswith(("http://", "https://")):
            self.bad(where, f"{text!r} is not an http:// or https:// URL")
            return None
        return text

    def unknown(self, where: str, obj: Mapping[str, object], known: set[str], *, fatal: bool) -> None:
        for key in sorted(set(obj) - known):
            if fatal:
                self.bad(f"{where}{key}" if where else key, "unknown key")
            else:
                self.warnings.append(f"{where}{key}: unknown key, ignored")


def read_text(path: Path) -> str:
    """A config file, bounded (a FIFO or a huge file named by mistake must not hang or eat the run)."""
    try:
        data = read_regular_file(path, jsonc.MAX_CONFIG_BYTES)
    except UnreadableFileError as error:
        raise ConfigError([f"{path}: {error}"]) from None
    if len(data) > jsonc.MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {jsonc.MAX_CONFIG_BYTES} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 ({error.reason} at byte {error.start})"]) from None


def parse_text(text: str, origin: str) -> object:
    try:
        return jsonc.loads(text)
    except jsonc.JsoncError as error:
        raise ConfigError([f"{origin}: {error}"]) from None


def load_app_config(path: Path) -> AppConfig:
    if not path.exists():
        raise ConfigError([f"{path}: no such config file (--config)"])
    return check_app_config(parse_text(read_text(path), str(path)), path)


def check_app_config(data: object, path: Path) -> AppConfig:
    c = _Checker()
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the config is not a JSON object"])
    c.unknown("", data, APP_KEYS, fatal=True)
    root_text = c.string("root", data.get("root")) if "root" in data else None
    if "root" not in data:
        c.bad("root", "missing")
    root = Path(os.path.expandvars(root_text)) if root_text else Path(".")
    if not root.is_absolute():
        root = path.parent.parent / root  # streaming-utils: relative to the app dir (config/..)
    engines: dict[str, str] = {}
    raw_engines = data.get("engine_path")
    if not isinstance(raw_engines, dict) or not raw_engines:
        c.bad("engine_path", f"{raw_engines!r} is not an object of engine versions" if raw_engines is not None
              else "missing")  # fmt: skip
    else:
        for version, value in raw_engines.items():
            if version not in ENGINE_VERSIONS:
                c.bad(f"engine_path.{version}", f"unknown engine version (one of {', '.join(ENGINE_VERSIONS)})")
                continue
            text = c.string(f"engine_path.{version}", value)
            if text is not None:
                expanded = Path(os.path.expandvars(text))
                engines[version] = str(expanded if expanded.is_absolute() else root / expanded)
    controller = data.get("controller")
    endpoints: dict[str, str | None] = dict.fromkeys(CONTROLLER_KEYS)
    if not isinstance(controller, dict):
        c.bad("controller", "missing" if controller is None else f"{controller!r} is not an object")
    else:
        c.unknown("controller.", controller, set(CONTROLLER_KEYS), fatal=True)
        for key in CONTROLLER_KEYS:
            if key in controller:
                if key in ("monitor", "metadata_receiver"):
                    endpoints[key] = c.url(f"controller.{key}", controller[key])
                else:
                    endpoints[key] = c.string(f"controller.{key}", controller[key])
    dirs: dict[str, Path] = {}
    raw_dirs = data.get("dirs")
    if not isinstance(raw_dirs, dict):
        c.bad("dirs", "missing" if raw_dirs is None else f"{raw_dirs!r} is not an object")
    else:
        c.unknown("dirs.", raw_dirs, set(DIR_NAMES), fatal=True)
        for name in DIR_NAMES:
            if name not in raw_dirs:
                c.bad(f"dirs.{name}", "missing")
                continue
            text = c.string(f"dirs.{name}", raw_dirs[name])
            if text is not None:
                dirs[name] = Path(text) if Path(text).is_absolute() else root / text
    trackers: list[str] = []
    raw_trackers = data.get("trackers")
    if not isinstance(raw_trackers, list):
        c.bad("trackers", "missing" if raw_trackers is None else f"{raw_trackers!r} is not a list")
    else:
        for i, value in enumerate(raw_trackers):
            text = c.string(f"trackers[{i}]", value)
            if text is not None and not text.startswith(("http://", "https://", "udp://")):
                c.bad(f"trackers[{i}]", f"{text!r} is not an http://, https:// or udp:// tracker URL")
            elif text is not None:
                trackers.append(text)
    provider_key = c.string("provider_key", data["provider_key"]) if data.get("provider_key") else None
    token = c.string("node_access_token", data["node_access_token"]) if data.get("node_access_token") else None
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{1,256}", token):
        c.bad("node_access_token", "must be 1..256 URL-safe characters (it is a path segment: /app/TOKEN/...)")
    bind = c.ip("bind", data["bind"]) if data.get("bind") else None
    if c.problems:
        raise ConfigError([f"{path}: {p}" for p in c.problems])
    return AppConfig(path=path, engine_path=engines, root=root, controller=Controller(**endpoints), dirs=dirs,
                     trackers=tuple(trackers), provider_key=provider_key, node_access_token=token,
                     bind=bind)  # fmt: skip


def _entries(data: object, name: str, origin: str) -> list[object]:
    if not isinstance(data, list):
        raise ConfigError([f"{origin}: {name}: {type(data).__name__} is not a list of entries"])
    if len(data) > MAX_ENTRIES:
        raise ConfigError([f"{origin}: {name}: {len(data)} entries, more than {MAX_ENTRIES}"])
    return data


def _engine_version(c: _Checker, where: str, entry: Mapping[str, object], app: AppConfig) -> str:
    version = entry.get("engine_version", "stable")
    if version not in app.engine_path:
        c.bad(where, f"{version!r} is not in engine_path ({', '.join(app.engine_path) or 'empty'})")
        return "stable"
    engine = app.engine_path[str(version)]
    # Checked here, before anything is stopped: a missing engine must not take running nodes down with it.
    if not os.path.isfile(engine) or not os.access(engine, os.X_OK):
        unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", engine)
        why = f" (${unset[0]} is not set)" if unset else ""
        c.bad(where, f"{version!r}: engine_path.{version} {engine} is not an executable file{why}")
    return str(version)


def _duplicates(c: _Checker, name: str, values: Sequence[tuple[int, object]], what: str) -> None:
    seen: dict[object, int] = {}
    for i, value in values:
        if value in seen:
            c.bad(f"{name}[{i}].{what}", f"{value!r} is also {name}[{seen[value]}]'s")
        else:
            seen[value] = i


def check_sources(data: object, app: AppConfig, origin: str = "source_node") -> tuple[list[SourceEntry], list[str]]:
    """The source list (``[...]`` of entries); (entries, warnings)."""
    c = _Checker()
    entries: list[SourceEntry] = []
    for i, raw in enumerate(_entries(data, "source_node", origin)):
        w = f"source_node[{i}]"
        if not isinstance(raw, dict):
            c.bad(w, f"{raw!r} is not an object")
            continue
        before = len(c.problems)
        c.unknown(f"{w}.", raw, SOURCE_KEYS, fatal=False)
        for key in ("stream_uid", "port", "title", "url"):
            if key not in raw:
                c.bad(f"{w}.{key}", "missing")
        uid = c.string(f"{w}.stream_uid", raw.get("stream_uid", "x"))
        if uid is not None and not STREAM_UID.fullmatch(uid):
            c.bad(f"{w}.stream_uid", f"{uid!r} is not 1..64 latin letters, digits, '_', '-', '.'")
        port = c.port(f"{w}.port", raw.get("port", 1))
        title = c.string(f"{w}.title", raw.get("title", "x"))
        url = c.url(f"{w}.url", raw.get("url", "http://x"))
        kind = raw.get("type", "ts")
        if kind not in ("ts", "hls"):
            c.bad(f"{w}.type", f"{kind!r} is not ts or hls")
        bitrate: int | None = 0
        if kind == "ts" or "bitrate" in raw:
            if "bitrate" not in raw:
                c.bad(f"{w}.bitrate", "missing (bytes per second; a TS stream needs it)")
            else:
                bitrate = c.integer(f"{w}.bitrate", raw["bitrate"], "a bitrate in bytes/s (1..1e9)", 1, 10**9)
        categories: list[str] = []
        raw_categories = raw.get("categories", [])
        if not isinstance(raw_categories, list):
            c.bad(f"{w}.categories", f"{raw_categories!r} is not a list")
        else:
            for j, cat in enumerate(raw_categories):
                if cat not in CATEGORIES:
                    c.bad(f"{w}.categories[{j}]", f"{cat!r} is not a category ({', '.join(CATEGORIES)})")
                else:
                    categories.append(str(cat))
        quality = raw.get("quality", "SD")
        if quality not in ("SD", "HD"):
            c.bad(f"{w}.quality", f"{quality!r} is not SD or HD")
        upload_to: list[str] | None = None
        if "upload_to" in raw:
            raw_up = raw["upload_to"]
            if not isinstance(raw_up, list):
                c.bad(f"{w}.upload_to", f"{raw_up!r} is not a list of IP:PORT")
            else:
                upload_to = [a for j, v in enumerate(raw_up) if (a := c.address(f"{w}.upload_to[{j}]", v))]
        monotonic = c.flag(f"{w}.force_monotonic_sequence", raw["force_monotonic_sequence"]) \
            if "force_monotonic_sequence" in raw else None  # fmt: skip
        logging_flag = c.flag(f"{w}.extended_logging", raw.get("extended_logging", 0))
        private = c.flag(f"{w}.private_node", raw["private_node"]) if "private_node" in raw else None
        version = _engine_version(c, f"{w}.engine_version", raw, app)
        metadata = _metadata(c, f"{w}.metadata", raw["metadata"]) if raw.get("metadata") else None
        if len(c.problems) == before:
            assert uid is not None
            assert port is not None
            assert title is not None
            assert url is not None
            assert bitrate is not None
            assert logging_flag is not None
            entries.append(SourceEntry(
                stream_uid=uid, port=port, title=title, url=url, bitrate=bitrate, categories=tuple(categories),
                quality=str(quality), type=str(kind), upload_to=tuple(upload_to) if upload_to is not None else None,
                force_monotonic_sequence=monotonic, extended_logging=logging_flag, engine_version=version,
                private_node=private, metadata=metadata,
            ))  # fmt: skip
    indexed = list(enumerate(data if isinstance(data, list) else []))
    _duplicates(c, "source_node", [(i, r.get("port")) for i, r in indexed if isinstance(r, dict)], "port")
    _duplicates(c, "source_node", [(i, r.get("stream_uid")) for i, r in indexed if isinstance(r, dict)],
                "stream_uid")  # fmt: skip
    if c.problems:
        raise ConfigError([f"{origin}: {p}" for p in c.problems])
    return entries, [f"{origin}: {w}" for w in c.warnings]


def _metadata(c: _Checker, where: str, raw: object) -> Metadata | None:
    if not isinstance(raw, dict):
        c.bad(where, "is not an object with last_seq and private_key")
        return None
    seq = c.integer(f"{where}.last_seq", raw.get("last_seq"), "a piece number", 0, 2**62)
    key = raw.get("private_key")
    if not isinstance(key, str) or not key.strip():
        # The key is never echoed: the message names the place, not the value.
        c.bad(f"{where}.private_key", "missing or not a string")
        return None
    if seq is None:
        return None
    return Metadata(last_seq=seq, private_key=key)


def check_supports(data: object, app: AppConfig,
                   origin: str = "support_node") -> tuple[list[SupportEntry], list[str]]:  # fmt: skip
    c = _Checker()
    entries: list[SupportEntry] = []
    for i, raw in enumerate(_entries(data, "support_node", origin)):
        w = f"support_node[{i}]"
        if not isinstance(raw, dict):
            c.bad(w, f"{raw!r} is not an object")
            continue
        before = len(c.problems)
        c.unknown(f"{w}.", raw, SUPPORT_KEYS, fatal=False)
        for key in ("port", "source_ip", "source_port"):
            if key not in raw:
                c.bad(f"{w}.{key}", "missing")
        port = c.port(f"{w}.port", raw.get("port", 1))
        source_ip = c.ip(f"{w}.source_ip", raw.get("source_ip", "127.0.0.1"))
        source_port = c.port(f"{w}.source_port", raw.get("source_port", 1))
        logging_flag = c.flag(f"{w}.extended_logging", raw.get("extended_logging", 0))
        private = c.flag(f"{w}.private_node", raw["private_node"]) if "private_node" in raw else None
        version = _engine_version(c, f"{w}.engine_version", raw, app)
        if len(c.problems) == before:
            assert port is not None
            assert source_ip is not None
            assert source_port is not None
            assert logging_flag is not None
            entries.append(SupportEntry(port=port, source_ip=source_ip, source_port=source_port,
                                        extended_logging=logging_flag, engine_version=version,
                                        private_node=private))  # fmt: skip
    indexed = list(enumerate(data if isinstance(data, list) else []))
    _duplicates(c, "support_node", [(i, r.get("port")) for i, r in indexed if isinstance(r, dict)], "port")
    if c.problems:
        raise ConfigError([f"{origin}: {p}" for p in c.problems])
    return entries, [f"{origin}: {w}" for w in c.warnings]
