"""The engine command lines streaming-utils (start_streamers.py, start_support_nodes.py) builds, word for word.

The words, their order and the per-node paths are streaming-utils'; two things are ours: a config ``bind`` adds
``--host IP`` (Ace Stream's spelling of the listen address) at the end, and the engine path is the one its entry's
``engine_version`` names. ``--live-mem-cache-size`` follows streaming-utils' sizing (a share of the machine's RAM
divided by the number of streams): it changes whenever a stream is added or removed, so reconcile leaves it out
when it compares a running node's line with the config (``comparable``), and a node gets the new size at its next
start, instead of every node restarting when one stream is added.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from swarmcast.fleet.config import AppConfig, SourceEntry, SupportEntry

MIN_CACHE_SIZE = 50 * 1024 * 1024
MAX_CACHE_SIZE = 1024 * 1024 * 1024
RESERVE_PER_PROCESS_MEMORY = 50 * 1024 * 1024
SOURCE_MEMORY_SHARE = 0.6  # start_streamers.py USE_PERCENT_FROM_TOTAL_MEMORY
SUPPORT_MEMORY_SHARE = 0.8  # start_support_nodes.py
CACHE_FLAG = "--live-mem-cache-size"

SOURCE_COMMON_ARGS = (
    "--stream-source-node", "--monitor-node-ip", "127.0.0.1", "--skip-internal-tracker",
    "--source-reconnect-interval", "20", "--close-connections-from-same-peer", "1", "--max-peers", "10",
    "--stats-report-interval", "4", "--stats-report-peers", "--service-remote-access", "--permanent",
    "--live-cache-type", "memory", "--log-backup-count", "1",
)  # fmt: skip
HLS_COMMON_ARGS = (
    "--stream-support-node", "--monitor-node-ip", "127.0.0.1", "--hide-hls-segments",
    "--hls-broadcast-last-source-piece", "--hls-bad-manifest-max-errors", "5", "--hls-bad-manifest-retry-interval",
    "2", "--close-connections-from-same-peer", "1", "--max-peers", "10", "--stats-report-interval", "4",
    "--stats-report-peers", "--service-remote-access", "--live-cache-type", "memory", "--log-backup-count", "1",
)  # fmt: skip
SUPPORT_COMMON_ARGS = (
    "--stream-support-node", "--close-connections-from-same-peer", "1", "--max-peers", "10",
    "--core-sandbox-max-peers", "1", "--core-max-fast-peers", "1", "--stats-report-interval", "4",
    "--stats-report-peers", "--service-remote-access", "--live-cache-type", "memory", "--log-backup-count", "1",
)  # fmt: skip
SOURCE_DEBUG_ARGS = (
    "--log-debug", "1", "--log-modules", "root:D", "--log-max-size", "100000000", "--debug-multicast-pex",
    "--debug-encoder", "--debug-encoder-connection", "--debug-download-live", "--debug-connecter",
    "--debug-connecter-connection", "--debug-downloader", "--debug-single-download", "--debug-picker-client",
    "--debug-client-transporter", "--debug-memory-usage", "--debug-pieces", "--debug-storage", "--debug-rerequester",
)  # fmt: skip
SUPPORT_DEBUG_ARGS = (*SOURCE_DEBUG_ARGS, "--debug-rerequester-dht", "--debug-dht", "--debug-magnet")


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cache_size(streams: int, share: float, memory: int | None = None) -> int:
    """Bytes of live cache per node: ``share`` of RAM over ``streams``, minus a reserve, clamped to 50 MiB..1 GiB."""
    if streams <= 0:
        return MIN_CACHE_SIZE
    size = int((total_memory() if memory is None else memory) * share / streams) - RESERVE_PER_PROCESS_MEMORY
    return max(MIN_CACHE_SIZE, min(MAX_CACHE_SIZE, size))


@dataclass(frozen=True)
class NodeSpec:
    """One node the config asks for: what to run and where its files go."""

    kind: str  # source | support (an HLS stream's node is a support node, started by start-sources)
    port: int
    name: str  # the stream uid, or the support node's source address
    where: str  # its place in the config, e.g. source_node[3]
    argv: tuple[str, ...]
    log_path: Path
    engine_version: str
    # An HLS stream's transport files are made first (--create-hls-transport); None for TS and support nodes.
    prepare: tuple[str, ...] | None = None
    prepare_outputs: tuple[Path, ...] = ()
    source: SourceEntry | None = None

    @property
    def comparable(self) -> tuple[str, ...]:
        return comparable(self.argv)


def comparable(argv: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The line without the cache size's value (see the module's docstring)."""
    words = list(argv)
    for i, word in enumerate(words[:-1]):
        if word == CACHE_FLAG:
            words[i + 1] = "*"
    return tuple(words)


def base_url(url: str) -> str:
    """The URL without query and fragment (streaming-utils' get_base_url)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def _common_tail(app: AppConfig, upload_to: tuple[str, ...] | None, debug: tuple[str, ...] | None,
                 private_node: int | None) -> list[str]:  # fmt: skip
    words: list[str] = []
    if app.node_access_token:
        words += ["--service-access-token", app.node_access_token]
    for address in upload_to or ():
        words += ["--upload-to", address]
    if debug:
        words += debug
    if private_node is not None:
        words += ["--private-node", str(private_node)]
    if app.bind:
        words += ["--host", app.bind]
    return words


def source_spec(app: AppConfig, entry: SourceEntry, where: str, cache: int) -> NodeSpec:
    port, name = entry.port, entry.stream_uid
    log_path = app.dir("log") / f"source_node_{port}.log"
    cache_path = app.dir("cache") / f"source_node_{port}_cache"
    state_path = app.dir("state") / f"source_node_{port}_state"
    engine = app.engine_path[entry.engine_version]
    debug = SOURCE_DEBUG_ARGS if entry.extended_logging == 1 else None
    prepare: tuple[str, ...] | None = None
    outputs: tuple[Path, ...] = ()
    if entry.type == "ts":
        argv = [
            engine, "--log-file", str(log_path), "--port", str(port), "--source", entry.url,
            "--bitrate", str(entry.bitrate), "--name", name, "--title", entry.title, "--quality", entry.quality,
            "--publish-dir", str(app.dir("public")), "--metadata-dir", str(app.dir("metadata")),
            "--cache-dir", str(cache_path), "--state-dir", str(state_path), "--pid-file-dir", str(app.dir("pid")),
            CACHE_FLAG, str(cache),
        ]  # fmt: skip
        if app.provider_key:
            argv += ["--provider-key", app.provider_key, "--sid", name]
        for tracker in app.trackers:
            argv += ["--tracker", tracker]
        for category in entry.categories:
            argv += ["--category", category]
        argv += SOURCE_COMMON_ARGS
    else:
        public_path = app.dir("public") / f"{name}.acelive"
        private_path = app.dir("private") / f"{name}_private.acelive"
        words = [
            engine, "--create-hls-transport", "--hide-hls-manifest", "--title", entry.title, "--url", entry.url,
            "--output-public", str(public_path), "--output-private", str(private_path), "--sid", name,
            "--log-debug", "1",
        ]  # fmt: skip
        if base_url(entry.url):
            words += ["--base-url", base_url(entry.url)]
        if app.provider_key:
            words += ["--provider-key", app.provider_key]
        for tracker in app.trackers:
            words += ["--tracker", tracker]
        for category in entry.categories:
            words += ["--category", category]
        prepare, outputs = tuple(words), (public_path, private_path)
        argv = [
            engine, "--log-file", str(log_path), "--port", str(port), "--url", str(private_path),
            "--public-transport-file", str(public_path), "--cache-dir", str(cache_path),
            "--state-dir", str(state_path), "--metadata-dir", str(app.dir("metadata")),
            "--pid-file-dir", str(app.dir("pid")), CACHE_FLAG, str(cache), *HLS_COMMON_ARGS,
        ]  # fmt: skip
        if entry.force_monotonic_sequence is not None:
            argv += ["--hls-force-monotonic-sequence", str(entry.force_monotonic_sequence)]
    argv += _common_tail(app, entry.upload_to, debug, entry.private_node)
    return NodeSpec(kind="source", port=port, name=name, where=where, argv=tuple(argv), log_path=log_path,
                    engine_version=entry.engine_version, prepare=prepare, prepare_outputs=outputs,
                    source=entry)  # fmt: skip


def support_spec(app: AppConfig, entry: SupportEntry, where: str, cache: int) -> NodeSpec:
    port = entry.port
    log_path = app.dir("log") / f"support_node_{port}.log"
    token = app.node_access_token
    app_path = f"/app/{token}" if token else "/app"
    argv = [
        app.engine_path[entry.engine_version], "--log-file", str(log_path), "--port", str(port),
        "--url", f"http://{entry.download_from}{app_path}/get_transport_file?format=raw",
        "--download-from", entry.download_from,
        "--cache-dir", str(app.dir("cache") / f"support_node_{port}_cache"),
        "--state-dir", str(app.dir("state") / f"support_node_{port}_state"),
        "--pid-file-dir", str(app.dir("pid")), CACHE_FLAG, str(cache),
    ]  # fmt: skip
    if token:
        argv += ["--service-access-token", token]
    argv += SUPPORT_COMMON_ARGS
    if entry.extended_logging == 1:
        argv += SUPPORT_DEBUG_ARGS
    if entry.private_node is not None:
        argv += ["--private-node", str(entry.private_node)]
    if app.bind:
        argv += ["--host", app.bind]
    return NodeSpec(kind="support", port=port, name=entry.download_from, where=where, argv=tuple(argv),
                    log_path=log_path, engine_version=entry.engine_version)  # fmt: skip


def source_specs(app: AppConfig, entries: list[SourceEntry], memory: int | None = None) -> list[NodeSpec]:
    cache = cache_size(len(entries), SOURCE_MEMORY_SHARE, memory)
    return [source_spec(app, e, f"source_node[{i}]", cache) for i, e in enumerate(entries)]


def support_specs(app: AppConfig, entries: list[SupportEntry], memory: int | None = None) -> list[NodeSpec]:
    cache = cache_size(len(entries), SUPPORT_MEMORY_SHARE, memory)
    return [support_spec(app, e, f"support_node[{i}]", cache) for i, e in enumerate(entries)]
