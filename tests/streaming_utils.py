"""The command lines acestream/streaming-utils (src/start_streamers.py, src/start_support_nodes.py, commit 54a17d6)
starts the Ace Stream engine with, word for word, so tests can run them against ``acestreamengine``."""

from __future__ import annotations

from collections.abc import Sequence

# start_streamers.py COMMON_ARGS (TS source)
SOURCE_COMMON_ARGS = [
    "--stream-source-node",
    "--monitor-node-ip", "127.0.0.1",
    "--skip-internal-tracker",
    "--source-reconnect-interval", "20",
    "--close-connections-from-same-peer", "1",
    "--max-peers", "10",
    "--stats-report-interval", "4",
    "--stats-report-peers",
    "--service-remote-access",
    "--permanent",
    "--live-cache-type", "memory",
    "--log-backup-count", "1",
]  # fmt: skip

# start_support_nodes.py COMMON_ARGS
SUPPORT_COMMON_ARGS = [
    "--stream-support-node",
    "--close-connections-from-same-peer", "1",
    "--max-peers", "10",
    "--core-sandbox-max-peers", "1",
    "--core-max-fast-peers", "1",
    "--stats-report-interval", "4",
    "--stats-report-peers",
    "--service-remote-access",
    "--live-cache-type", "memory",
    "--log-backup-count", "1",
]  # fmt: skip

# start_support_nodes.py COMMON_DEBUG_ARGS (start_streamers.py has the same without the last three)
DEBUG_ARGS = [
    "--log-debug", "1",
    "--log-modules", "root:D",
    "--log-max-size", "100000000",
    "--debug-multicast-pex",
    "--debug-encoder",
    "--debug-encoder-connection",
    "--debug-download-live",
    "--debug-connecter",
    "--debug-connecter-connection",
    "--debug-downloader",
    "--debug-single-download",
    "--debug-picker-client",
    "--debug-client-transporter",
    "--debug-memory-usage",
    "--debug-pieces",
    "--debug-storage",
    "--debug-rerequester",
    "--debug-rerequester-dht",
    "--debug-dht",
    "--debug-magnet",
]  # fmt: skip

CACHE_SIZE = 50 * 1024 * 1024  # MIN_CACHE_SIZE of both scripts

def source_line(*, log: str, port: int, source: str, bitrate: int, name: str, title: str, public: str, metadata: str,
                cache: str, state: str, pid: str, trackers: Sequence[str], categories: Sequence[str],
                provider_key: str = "", sid: str = "", token: str = "", upload_to: Sequence[str] = (),
                private_node: int | None = None, debug: bool = False) -> list[str]:  # fmt: skip
    """start_streamers.py start_single_stream, type 'ts' (without the engine path and nohup)."""
    args = [
        "--log-file", log, "--port", str(port), "--source", source, "--bitrate", str(bitrate), "--name", name,
        "--title", title, "--quality", "SD", "--publish-dir", public, "--metadata-dir", metadata,
        "--cache-dir", cache, "--state-dir", state, "--pid-file-dir", pid, "--live-mem-cache-size", str(CACHE_SIZE),
    ]  # fmt: skip
    if provider_key:
        args += ["--provider-key", provider_key]
    if provider_key and sid:
        args += ["--sid", sid]
    for tracker in trackers:
        args += ["--tracker", tracker]
    for category in categories:
        args += ["--category", category]
    args += SOURCE_COMMON_ARGS
    if token:
        args += ["--service-access-token", token]
    for address in upload_to:
        args += ["--upload-to", address]
    if debug:
        args += DEBUG_ARGS
    if private_node is not None:
        args += ["--private-node", str(private_node)]
    return args


def support_line(*, log: str, port: int, download_from: str, cache: str, state: str, pid: str, token: str = "",
                 debug: bool = False) -> list[str]:  # fmt: skip
    """start_support_nodes.py start_single_stream."""
    if token:
        url = f"http://{download_from}/app/{token}/get_transport_file?format=raw"
    else:
        url = f"http://{download_from}/app/get_transport_file?format=raw"
    args = [
        "--log-file", log, "--port", str(port), "--url", url, "--download-from", download_from,
        "--cache-dir", cache, "--state-dir", state, "--pid-file-dir", pid, "--live-mem-cache-size", str(CACHE_SIZE),
    ]  # fmt: skip
    if token:
        args += ["--service-access-token", token]
    args += SUPPORT_COMMON_ARGS
    if debug:
        args += DEBUG_ARGS
    return args
