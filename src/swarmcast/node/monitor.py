"""What a node shows on /app/monitor and changes on /app/update (the HTTP side is http/node_api.py).

How this works: each node role builds one ``NodeState`` (its kind, swarm, host and settings), and the web interface
reads it. ``monitor_figures`` turns it into the monitor's JSON object: flat, with the field names and shapes the Ace
Stream engine's monitor has and acestream/streaming-utils reads (``type``, ``source_url``, ``download_from`` as a
list of ``[ip, port]``), plus what an operator needs beyond them. ``Monitor`` keeps the figures for
``--stats-report-interval`` seconds and serves the same object until then (a monitoring system polling every
second costs one computation per interval); an update refreshes them at once so the new values show.
``apply_update`` runs the registered ``update_hooks`` first (other parts' settings, e.g. the access policy's
upload_to and filter reload; a ValueError there refuses the whole update), then changes the swarm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from swarmcast import __version__
from swarmcast.discovery.metatracker import MetatrackerStatus
from swarmcast.ingest.status import InputStatus
from swarmcast.node.access import AccessControl, AccessPolicy
from swarmcast.node.admission import Admission
from swarmcast.node.config import NodeCommon
from swarmcast.node.ipfilter import FilterError
from swarmcast.swarm.core import Swarm
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.swarm.settings import UNCHANGED

KINDS = ("source", "support", "startup")


class HostView(Protocol):
    """What the monitor reads of the node's port (node/host.py's PeerHost)."""

    port: int
    admission: Admission
    access: AccessPolicy
    refusals_total: dict[str, int]


@dataclass(frozen=True)
class UpdateRequest:
    """The parsed parameters of one /app/update; None = not given. An empty address list clears the setting."""

    max_peers: int | None = None
    max_upload_slots: int | None = None
    upload_limit: int | None = None  # bytes/s; 0 = no limit
    download_from: tuple[Address, ...] | None = None
    upload_to: tuple[Address, ...] | None = None
    reload_filter: bool = False


UpdateHook = Callable[[UpdateRequest], None]


@dataclass
class NodeState:
    """One node as the web interface sees it. ``download_from``/``upload_to`` are the operator's current lists."""

    kind: str  # source | support | startup
    swarm: Swarm
    host: HostView
    common: NodeCommon
    started_at: float  # monotonic
    source_url: str | None = None
    input_status: InputStatus | None = None
    hls_manifest_url: str | None = None  # an HLS source's manifest (none yet)
    download_from: tuple[Address, ...] = ()
    upload_to: tuple[Address, ...] = ()
    # The node's metatracker clients (discovery/metatracker.py), once they exist; none: an empty list.
    metatrackers: Callable[[], list[MetatrackerStatus]] | None = None
    # Called with every valid update before the swarm changes; raise ValueError (naming the parameter) to refuse it.
    update_hooks: list[UpdateHook] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"node kind {self.kind!r} is not one of {', '.join(KINDS)}")


def _addresses(addresses: tuple[Address, ...] | list[Address]) -> list[list[object]]:
    return [[ip, port] for ip, port in addresses]


def _peer(session: PeerSession, now: float) -> dict[str, object]:
    return {
        "address": [session.address[0], session.address[1]],
        "direction": "out" if session.outbound else "in",
        "downloaded": session.down.total,  # bytes of piece data from it
        "uploaded": session.up.total,  # bytes of piece data to it
        "download_speed": round(session.down.rate(now)),
        "upload_speed": round(session.up.rate(now)),
        "choked": session.am_choking,  # we do not upload to it
        "choking_us": session.peer_choking,
        "interested": session.peer_interested,
        "source": session.is_source,
        "support_node": session.is_seeder and not session.is_source,  # holds a support credential
        "connected_for": round(now - session.connected_at, 1),
    }


def current_settings(state: NodeState) -> dict[str, object]:
    """The settings /app/update changes, as it answers them."""
    config = state.swarm.config
    return {
        "max_peers": config.max_peers,
        "max_upload_slots": config.upload_slots,
        "upload_limit": config.upload_limit // 1000,  # KB/s, as --upload-limit and /app/update take it; 0 = none
        "download_from": _addresses(state.download_from),
        "upload_to": _addresses(state.upload_to),
    }


def monitor_figures(state: NodeState, now: float, wall: float, *, list_peers: bool) -> dict[str, object]:
    """The /app/monitor object at monotonic ``now`` and Unix time ``wall`` (bytes, bytes/s, seconds)."""
    swarm, store, stats = state.swarm, state.swarm.store, state.swarm.stats
    sessions = list(swarm.sessions.values())
    # Refused by admission budgets (node/admission.py) and by the access policy (private node, ip filter).
    refusals = dict(state.host.refusals_total)
    for reason, count in state.host.access.rejected.items():
        refusals[reason] = refusals.get(reason, 0) + count
    refusals = dict(sorted(refusals.items()))
    figures: dict[str, object] = {
        "version": __version__,
        "type": state.kind,
        "infohash": swarm.content_id.hex(),
        "port": state.host.port,
        "max_connections": state.host.admission.config.max_connections,
        **current_settings(state),
        "download_speed": round(stats.down.rate(now)),
        "upload_speed": round(stats.up.rate(now)),
        "connected_peers_count": len(sessions),
        "connected_peers": [_peer(s, now) for s in sessions] if list_peers else [],
        "upload_slots": swarm.choker.in_use(),
        "hls_manifest_url": state.hls_manifest_url,
        "bitrate": swarm.descriptor.bitrate if swarm.descriptor is not None else None,
        "last_piece": store.newest,
        "downloaded": stats.downloaded,
        "uploaded": stats.uploaded,
        "cache_type": state.common.cache.cache_type,
        "cache_bytes": store.size_bytes,
        "cache_max_bytes": store.max_bytes,
        "cache_pieces": len(store),
        "uptime": round(now - state.started_at),
        # Connected peers holding a verified support credential (docs/protocol.md), as [ip, listen port].
        "metatrackers": [
            {"url": m.url, "answers": m.answers, "consecutive_failures": m.consecutive_failures,
             "last_error": m.last_error}
            for m in (state.metatrackers() if state.metatrackers is not None else [])
        ],
        "support_nodes": sorted([s.address[0], s.address[1]] for s in sessions if s.is_seeder and not s.is_source),
        "rejected_connections": refusals,
        "rejected_connections_total": sum(refusals.values()),
        "stats_report_interval": state.common.monitor.stats_report_interval,
        "updated_at": round(wall, 3),
    }
    # streaming-utils tells a TS source from an HLS one by which key is present: only a source has source_url.
    if state.kind == "source":
        figures["source_url"] = state.source_url
        figures["source_status"] = state.input_status.as_json() if state.input_status is not None else None
    elif state.input_status is not None:
        # The HLS support node (node/hls_signer.py): a support node to streaming-utils, and the origin it reads.
        figures["hls_status"] = state.input_status.as_json()
    return figures


class Monitor:
    """The figures, recomputed at most every ``stats_report_interval`` seconds."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self._figures: dict[str, object] | None = None
        self._at = 0.0

    def figures(self, now: float, wall: float) -> dict[str, object]:
        config = self.state.common.monitor
        if self._figures is None or now - self._at >= config.stats_report_interval:
            self._figures = monitor_figures(self.state, now, wall, list_peers=config.stats_report_peers)
            self._at = now
        return self._figures

    def refresh(self) -> None:
        """Recompute on the next request (the settings just changed)."""
        self._figures = None


def access_update_hook(access: AccessControl) -> UpdateHook:
    """/app/update's ``download_from``, ``upload_to`` and ``reload_filter`` applied to the node's access policy
    (node/access.py: the private allowlist, the swarm's upload targets, a source's support credentials). The filter
    is re-read first: a bad file refuses the whole update (400) and the old filter stays."""

    def hook(request: UpdateRequest) -> None:
        if request.reload_filter:
            try:
                access.reload_filter()
            except FilterError as error:
                raise ValueError(f"reload_filter: {error}") from None
        if request.download_from is not None or request.upload_to is not None:
            access.set_peers(download_from=request.download_from, upload_to=request.upload_to)

    return hook


def apply_update(state: NodeState, request: UpdateRequest, now: float) -> dict[str, object]:
    """Run the hooks, then change the swarm; returns the new settings. A hook's ValueError refuses the update."""
    for hook in list(state.update_hooks):
        hook(request)
    download_from = request.download_from
    state.swarm.reconfigure(
        now,
        max_peers=request.max_peers,
        upload_slots=request.max_upload_slots,
        upload_limit=request.upload_limit,
        download_from=UNCHANGED if download_from is None else (frozenset(download_from) or None),
    )
    if download_from is not None:
        state.download_from = download_from
    if request.upload_to is not None:
        state.upload_to = request.upload_to
    return current_settings(state)
