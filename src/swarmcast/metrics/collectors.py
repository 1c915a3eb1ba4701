"""The collectors behind /metrics: each reads a node's (or the engine's) stats objects at scrape time.

Every family is built afresh at each scrape from what the objects hold then: a counter is a running total the node
keeps anyway (``SwarmStats``, the uploader's REJECT counts, the host's refusals, the source's input status), a gauge
is the current state (peers, slots, cache). Families that take ``content_id`` get one sample per broadcast; the
engine holds many broadcasts, a node one. A broadcast the engine has left is no longer exported (its series end).

Peer roles (``peer_role``): ``source`` (the broadcast's source), ``support`` (a peer holding a verified support
credential: support and start nodes), ``viewer`` (everyone else), and ``origin`` for bytes an HLS broadcast's
engine fetched from the HTTP origin instead of a peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swarmcast.metrics.histogram import Histogram

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from swarmcast.node.engine import Engine
    from swarmcast.node.monitor import NodeState
    from swarmcast.swarm.core import Swarm
    from swarmcast.swarm.peer import PeerSession

PEER_ROLES = ("source", "support", "viewer")
REJECT_REASONS = ("upload_limit", "duplicate", "queue_full")


def peer_role(session: PeerSession) -> str:
    if session.is_source:
        return "source"
    return "support" if session.is_seeder else "viewer"


@dataclass(frozen=True)
class _Spec:
    name: str  # without _total for counters (the library adds it)
    kind: str  # counter | gauge
    help: str
    labels: tuple[str, ...] = ()


class Families:
    """Metric families by name, filled sample by sample, emitted in the order they were first declared."""

    def __init__(self) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        self._counter, self._gauge = CounterMetricFamily, GaugeMetricFamily
        self._families: dict[str, Metric] = {}

    def declare(self, spec: _Spec) -> Metric:
        family = self._families.get(spec.name)
        if family is None:
            make = self._counter if spec.kind == "counter" else self._gauge
            family = self._families[spec.name] = make(spec.name, spec.help, labels=spec.labels)
        return family

    def add(self, spec: _Spec, labels: Iterable[str], value: float) -> None:
        self.declare(spec).add_metric(list(labels), value)  # type: ignore[attr-defined]

    def histogram(self, name: str, help_text: str, per_label: Iterable[tuple[tuple[str, ...], Histogram]],
                  labels: tuple[str, ...]) -> None:  # fmt: skip
        from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415

        family = HistogramMetricFamily(name, help_text, labels=labels)
        for values, histogram in per_label:
            family.add_metric(list(values), histogram.cumulative(), histogram.sum)
        self._families[name] = family

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


C, G = "counter", "gauge"
CID = ("content_id",)
RECEIVED = _Spec("swarmcast_received_bytes", C, "Verified piece data received, by who sent it", (*CID, "peer_role"))
SENT = _Spec("swarmcast_sent_bytes", C, "Piece data sent to peers, by the peer's role", (*CID, "peer_role"))
WIRE_SENT = _Spec("swarmcast_wire_sent_bytes", C, "Every byte written to peer connections (messages included)", CID)
PIECES_RECEIVED = _Spec("swarmcast_pieces_received", C, "Verified pieces received from peers", CID)
PIECES_FORWARDED = _Spec("swarmcast_pieces_forwarded", C, "Pieces sent to peers", CID)
PIECES_REJECTED = _Spec("swarmcast_pieces_rejected", C, "Piece requests answered with REJECT, by reason",
                        (*CID, "reason"))  # fmt: skip
PIECES_SKIPPED = _Spec("swarmcast_pieces_skipped", C, "Pieces readers skipped because they did not come in time", CID)
BAD_SIGNATURES = _Spec("swarmcast_bad_signatures", C, "Pieces whose signature failed (the sender is banned)", CID)
BANS = _Spec("swarmcast_peer_bans", C, "Peers banned for a protocol violation", CID)
DROPPED_USELESS = _Spec("swarmcast_useless_peers_dropped", C, "Peers dropped for exchanging nothing", CID)
ORIGIN_SEGMENTS = _Spec("swarmcast_origin_segments", C, "HLS segments fetched from the origin (fallback)", CID)
ORIGIN_REJECTED = _Spec("swarmcast_origin_rejected_segments", C, "Origin segments failing the signed index", CID)
PEERS = _Spec("swarmcast_connected_peers", G, "Peers connected now, by role", (*CID, "peer_role"))
MAX_PEERS = _Spec("swarmcast_max_peers", G, "The peer cap (--max-peers)", CID)
SLOTS = _Spec("swarmcast_upload_slots", G, "Upload slots configured (--upload-slots)", CID)
SLOTS_USED = _Spec("swarmcast_upload_slots_used", G, "Upload slots in use (peers unchoked)", CID)
UPLOAD_LIMIT = _Spec("swarmcast_upload_limit_bytes_per_second", G, "Upload limit; 0 = none", CID)
CACHE = _Spec("swarmcast_cache_bytes", G, "Bytes in the live cache", CID)
CACHE_MAX = _Spec("swarmcast_cache_max_bytes", G, "The live cache's hard cap", CID)
CACHE_PIECES = _Spec("swarmcast_cache_pieces", G, "Pieces in the live cache", CID)
NEWEST = _Spec("swarmcast_newest_piece", G, "Number of the newest piece held (the live edge)", CID)
BITRATE = _Spec("swarmcast_bitrate_bytes_per_second", G, "The broadcast's bitrate from its transport file", CID)
REFUSED = _Spec("swarmcast_rejected_connections", C, "Connections refused at accept, by reason", ("reason",))
INPUT_CONNECTED = _Spec("swarmcast_source_input_connected", G, "1 while the source's input delivers MPEG-TS", CID)
RECONNECTS = _Spec("swarmcast_source_reconnects", C, "Times the source's input came back after being lost", CID)
INPUT_BYTES = _Spec("swarmcast_source_input_bytes", C, "MPEG-TS bytes read from the source's input", CID)
INPUT_ATTEMPTS = _Spec("swarmcast_source_input_failed_attempts", G, "Failed attempts in the input's outage now", CID)
# The engine's players.
BROADCASTS = _Spec("swarmcast_broadcasts", G, "Broadcasts the engine holds, by state", ("state",))
SESSIONS = _Spec("swarmcast_player_sessions", G, "Playback sessions (format=json) of the broadcast", CID)
PLAYERS = _Spec("swarmcast_players", G, "Players reading the broadcast now", CID)
STREAMS = _Spec("swarmcast_player_streams", G, "Players reading MPEG-TS from the engine now")
DELIVERED = _Spec("swarmcast_delivered_bytes", C, "Bytes handed to players", CID)


def swarm_samples(families: Families, swarm: Swarm) -> None:
    """The families every swarm has (node or engine), for one broadcast."""
    cid = swarm.content_id.hex()
    stats = swarm.stats
    from_support = stats.downloaded_from_seeders - stats.downloaded_from_source
    received = {"source": stats.downloaded_from_source, "support": from_support,
                "viewer": stats.downloaded - stats.downloaded_from_seeders, "origin": stats.downloaded_from_origin}
    for role, value in received.items():
        families.add(RECEIVED, (cid, role), value)
    families.add(SENT, (cid, "support"), stats.uploaded_to_seeders)
    families.add(SENT, (cid, "viewer"), stats.uploaded - stats.uploaded_to_seeders)
    families.add(WIRE_SENT, (cid,), stats.bytes_sent)
    families.add(PIECES_RECEIVED, (cid,), stats.pieces_received)
    families.add(PIECES_FORWARDED, (cid,), stats.pieces_sent)
    uploader = swarm.uploader
    rejected = {"upload_limit": uploader.rejected_over_limit, "duplicate": uploader.rejected_duplicate,
                "queue_full": uploader.rejected_queue_full}  # fmt: skip
    for reason in REJECT_REASONS:
        families.add(PIECES_REJECTED, (cid, reason), rejected[reason])
    families.add(PIECES_SKIPPED, (cid,), stats.skipped_pieces)
    families.add(BAD_SIGNATURES, (cid,), stats.bad_pieces)
    families.add(BANS, (cid,), stats.banned)
    families.add(DROPPED_USELESS, (cid,), stats.dropped_useless)
    families.add(ORIGIN_SEGMENTS, (cid,), stats.origin_segments)
    families.add(ORIGIN_REJECTED, (cid,), stats.origin_rejected)
    peers = dict.fromkeys(PEER_ROLES, 0)
    for session in swarm.sessions.values():
        peers[peer_role(session)] += 1
    for role, count in peers.items():
        families.add(PEERS, (cid, role), count)
    config = swarm.config
    families.add(MAX_PEERS, (cid,), config.max_peers)
    families.add(SLOTS, (cid,), config.upload_slots)
    families.add(SLOTS_USED, (cid,), swarm.choker.in_use())
    families.add(UPLOAD_LIMIT, (cid,), config.upload_limit)
    store = swarm.store
    families.add(CACHE, (cid,), store.size_bytes)
    families.add(CACHE_MAX, (cid,), store.max_bytes)
    families.add(CACHE_PIECES, (cid,), len(store))
    families.declare(NEWEST)
    if store.newest is not None:
        families.add(NEWEST, (cid,), store.newest)
    families.declare(BITRATE)
    if swarm.descriptor is not None:
        families.add(BITRATE, (cid,), swarm.descriptor.bitrate)


class NodeCollector:
    """A source, support or start node (its ``NodeState``, node/monitor.py)."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        families = Families()
        swarm_samples(families, state.swarm)
        cid = state.swarm.content_id.hex()
        refusals = dict(state.host.refusals_total)
        for reason, count in state.host.access.rejected.items():
            refusals[reason] = refusals.get(reason, 0) + count
        families.declare(REFUSED)
        for reason, count in sorted(refusals.items()):
            families.add(REFUSED, (reason,), count)
        status = state.input_status
        if status is not None:  # a source's input, or an HLS support node's origin
            families.add(INPUT_CONNECTED, (cid,), 1 if status.connected else 0)
            families.add(RECONNECTS, (cid,), status.reconnects)
            families.add(INPUT_BYTES, (cid,), status.bytes_received)
            families.add(INPUT_ATTEMPTS, (cid,), status.attempts)
        yield from families


class EngineCollector:
    """The viewer engine: every broadcast it holds, its players, sessions and histograms."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        families = Families()
        broadcasts = list(engine.broadcasts.values())
        sessions: dict[str, int] = {}
        for session in engine.sessions.values():
            key = session.broadcast.infohash
            sessions[key] = sessions.get(key, 0) + 1
        states = {"lookup": 0, "starting": 0, "playing": 0}
        for broadcast in broadcasts:
            swarm_samples(families, broadcast.swarm)
            states[broadcast.state.value] += 1
        for broadcast in broadcasts:
            cid = broadcast.infohash
            families.add(SESSIONS, (cid,), sessions.get(cid, 0))
            families.add(PLAYERS, (cid,), broadcast.players)
            families.add(DELIVERED, (cid,), broadcast.delivered)
        for state, count in states.items():
            families.add(BROADCASTS, (state,), count)
        families.add(STREAMS, (), engine.streams.total)
        refusals = engine.host.refusals_total
        families.declare(REFUSED)
        for reason, count in sorted(refusals.items()):
            families.add(REFUSED, (reason,), count)
        families.histogram("swarmcast_startup_seconds", "Seconds from a player's arrival to its first byte",
                           [((b.infohash,), b.startup_seconds) for b in broadcasts], CID)  # fmt: skip
        families.histogram("swarmcast_delay_seconds", "Seconds a played keyframe was behind the source's clock",
                           [((b.infohash,), b.delay_seconds) for b in broadcasts], CID)  # fmt: skip
        yield from families
