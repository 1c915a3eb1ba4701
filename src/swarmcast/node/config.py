"""Typed configuration of the node roles, built once from the command line and validated there."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from swarmcast.node.admission import AdmissionConfig
from swarmcast.swarm.peer import Address

DEFAULT_LIVE_CACHE_SIZE = 209_715_200


@dataclass(frozen=True)
class CacheConfig:
    cache_type: str = "memory"  # memory | disk
    max_bytes: int = DEFAULT_LIVE_CACHE_SIZE
    directory: Path | None = None  # for disk caches


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
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


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
    # --support-node IP[:PORT]: peers the source grants a support credential (port 0 = any listen port).
    support_nodes: tuple[Address, ...] = ()
    credential_lifetime: float = 600.0  # seconds the credentials the source issues are valid (refreshed at half)
    standby: StandbyConfig | None = None  # run as the hot standby of another source node


@dataclass(frozen=True)
class StandbyConfig:
    primary: Address  # the primary source node's IP:PORT (its peer and HTTP port)
    takeover_after: float = 2.0  # seconds the primary must be gone before the standby signs


@dataclass(frozen=True)
class SupportConfig:
    common: NodeCommon
    url: str  # transport file: a path or an http(s) URL
    download_from: tuple[Address, ...] = ()
