"""A swarm's settings, role and counters (the node builds the config from its flags, the simulator from its own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from swarmcast.swarm.peer import Address
from swarmcast.swarm.rates import RateMeter
from swarmcast.swarm.rotation import RotationConfig


class Role(Enum):
    SOURCE = "source"
    SUPPORT = "support"
    ENGINE = "engine"


@dataclass(frozen=True)
class SwarmConfig:
    role: Role
    max_peers: int = 60
    target_peers: int = 12
    upload_slots: int = 8
    optimistic_slots: int | None = None  # of upload_slots, served on trial; None = a quarter (at least 1)
    newcomer_slots: int | None = None  # extra slots for peers that have just joined; None = a quarter (at least 1)
    upload_limit: int = 0  # bytes/s given to peers; 0 = no limit
    seeder_grace: float = 0.3
    # A support node announces a fresh piece at once to this many viewers (for its own share of the stream) and to
    # the others ``announce_delay`` s later if they still lack it (fanout.py); announce_delay 0 = all at once.
    front_peers: int = 2
    announce_delay: float = 0.5
    # A viewer whose request another viewer REJECTed (over its upload limit) asks that viewer again only after this
    # long; meanwhile a fresh piece held by viewers (busy ones included) is asked of the broadcaster's nodes only
    # once ``viewer_patience`` s have passed since its first announcement (picker.py); 0 = no patience.
    reject_backoff: float = 0.3
    viewer_patience: float = 0.4
    max_requests_per_peer: int = 16
    request_timeout: float = 2.0
    urgent_after: float = 0.75  # a piece a reader waits for is asked of another holder after this long
    lookahead_pieces: int = 96
    skip_after: float = 2.5
    max_lag_pieces: int = 50  # a reader this far behind the newest piece known jumps to live (10 s of 0.2 s pieces)
    rechoke_interval: float = 5.0
    optimistic_interval: float = 10.0
    pex_interval: float = 20.0
    send_buffer_limit: int = 4 * 1024 * 1024  # bytes queued for one peer (ours and the transport's) before REJECT
    transfer_rate: float = 100.0  # REQUEST/CANCEL/REJECT/PIECE a peer may send per second (budget.py)
    max_serving: int = 32  # pieces queued for one peer and not yet out of our buffers before REJECT
    stall_timeout: float = 10.0
    useless_timeout: float = 60.0  # no piece either way this long, while holding a slot: dropped (0 = never)
    max_candidates: int = 500
    dial_backoff_max: float = 8.0  # for pinned candidates; others back off to dialer.PEX_BACKOFF_MAX
    download_from: frozenset[Address] | None = None
    upload_to: frozenset[str] | None = None  # --upload-to IPs: the only peers we upload to (None: everyone)
    rotation: RotationConfig | None = None  # a start node: hands off started peers for newcomers (rotation.py)


@dataclass
class SwarmStats:
    downloaded: int = 0
    downloaded_from_source: int = 0
    downloaded_from_seeders: int = 0  # support nodes (and the source): the broadcaster's own upload
    uploaded: int = 0
    uploaded_to_seeders: int = 0  # of uploaded, to support nodes (the rest went to viewers): for /metrics by role
    pieces_received: int = 0  # verified pieces from peers
    pieces_sent: int = 0  # pieces queued for peers (forwarded)
    bytes_sent: int = 0
    payload_sent: int = 0
    banned: int = 0
    dropped_useless: int = 0
    bad_pieces: int = 0
    skipped_pieces: int = 0
    rejected_over_limit: int = 0
    # An HLS broadcast's origin fallback (node/hls_fallback.py): verified bytes stored from the origin, segments
    # fetched, segments that failed their signed index (rejected, never shared), fetches that failed.
    downloaded_from_origin: int = 0
    origin_fetched: int = 0  # body bytes received from the origin (rejected and already-held pieces included)
    origin_segments: int = 0
    origin_rejected: int = 0
    origin_failed: int = 0
    down: RateMeter = field(default_factory=RateMeter)
    up: RateMeter = field(default_factory=RateMeter)
