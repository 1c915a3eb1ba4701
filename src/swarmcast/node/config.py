"""Typed configuration of the node roles, built once from the command line and validated there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from swarmcast.ingest.hls import HlsSettings
from swarmcast.node.admission import AdmissionConfig
from swarmcast.swarm.peer import Address
from swarmcast.swarm.rotation import RotationConfig

DEFAULT_LIVE_CACHE_SIZE = 209_715_200


@dataclass(frozen=True)
class CacheConfig:
    cache_type: str = "memory"  # memory | disk
    max_bytes: int = DEFAULT_LIVE_CACHE_SIZE
    directory: Path | None = None  # for disk caches


@dataclass(frozen=True)
class AccessConfig:
    """Who may connect to a node at all (peer protocol and web interface), decided at accept by IP only."""

    remote_access: bool = False  # --service-remote-access: without it only loopback may use the web interface
    monitor_ips: tuple[str, ...] = ()  # --monitor-node-ip: may use the web interface (and reach a private node)
    private: bool = False  # --private-node 1: only download_from, upload_to and monitor_ips may connect
    upload_to: tuple[Address, ...] = ()  # --upload-to IP:PORT: the only peers a node uploads to (port ignored)
    ip_filter_config: Path | None = None  # --ip-filter-config: Ace Stream's JSON filter (groups, lists, limits)
    geoip_db: Path | None = None  # --geoip-db: MaxMind DB for the filter's countries
    one_connection_per_ip: bool = False  # --close-connections-from-same-peer 1


@dataclass(frozen=True)
class MonitorConfig:
    """The node web interface's /app/monitor figures."""

    stats_report_interval: float = 4.0  # seconds between refreshes of the figures
    stats_report_peers: bool = False  # list connected_peers (else the list is empty, as Ace Stream)


@dataclass(frozen=True)
class NodeCommon:
    port: int
    bind: str = "0.0.0.0"
    trackers: tuple[str, ...] = ()
    cache: CacheConfig = field(default_factory=CacheConfig)
    pid_file_dir: Path = Path("/tmp")
    service_access_token: str | None = None
    upload_slots: int = 8
    upload_limit: int = 0  # bytes/s; 0 = no limit
    max_peers: int = 60
    optimistic_slots: int | None = None  # --core-sandbox-max-peers; None = a quarter of upload_slots (at least 1)
    newcomer_slots: int | None = None  # --core-max-fast-peers; None = a quarter of upload_slots (at least 1)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


@dataclass(frozen=True)
class SourceConfig:
    common: NodeCommon
    source_url: str
    name: str
    title: str
    bitrate: int  # bytes/s; 0 = detect
    quality: str = "SD"
    categories: tuple[str, ...] = ()
    skip_internal_tracker: bool = False
    publish_dir: Path = Path()
    metadata_dir: Path = Path()
    provider_key: str = ""
    source_reconnect_interval: float = 1.0
    source_read_timeout: float = 10.0  # --source-read-timeout: no byte for this long = input lost, reconnect
    # --permanent: never exit because the input is gone. Our source always behaves so (it retries its input for
    # ever, whatever the failure); the flag is kept for Ace Stream command lines and shown in the log.
    permanent: bool = False
    # --support-node IP[:PORT]: peers the source grants a support credential (port 0 = any listen port).
    support_nodes: tuple[Address, ...] = ()
    credential_lifetime: float = 600.0  # seconds the credentials the source issues are valid (refreshed at half)
    standby: StandbyConfig | None = None  # run as the hot standby of another source node
    startup_nodes: tuple[Address, ...] = ()  # --startup-node: written into the transport file
    metatrackers: tuple[str, ...] = ()  # --metatracker URL: written into the transport file
    piece_size: int = 0  # --piecesize: bytes, whole TS packets; 0 = chosen from the bitrate
    sid: str = ""  # --sid: the provider's stream id (Ace Stream); kept and logged, no transport-file key for it yet
    hls: HlsSettings | None = None  # an HLS --source: bad-manifest and sequence settings (ingest/hls.py)


@dataclass(frozen=True)
class StandbyConfig:
    primary: Address  # the primary source node's IP:PORT (its peer and HTTP port)
    takeover_after: float = 2.0  # seconds the primary must be gone before the standby signs


@dataclass(frozen=True)
class SupportConfig:
    common: NodeCommon
    url: str  # transport file: a path or an http(s) URL
    download_from: tuple[Address, ...] = ()


@dataclass(frozen=True)
class StartupConfig:
    """A start node: a support node's settings and when it hands a peer off for a newcomer (swarm/rotation.py)."""

    support: SupportConfig
    rotation: RotationConfig = field(default_factory=RotationConfig)
