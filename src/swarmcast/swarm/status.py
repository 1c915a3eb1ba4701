"""A swarm's counters as one dictionary, for status pages (/app/stat, the engine's status) and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from swarmcast.swarm.core import Swarm


def snapshot(swarm: Swarm, now: float) -> dict[str, object]:
    """Counters (bytes; rates in bytes/s)."""
    stats = swarm.stats
    return {
        "content_id": swarm.content_id.hex(),
        "peers": len(swarm.sessions),
        "downloaded": stats.downloaded,
        "downloaded_from_source": stats.downloaded_from_source,
        "downloaded_from_seeders": stats.downloaded_from_seeders,
        "downloaded_from_origin": stats.downloaded_from_origin,  # HLS fallback (node/hls_fallback.py)
        "origin_segments": stats.origin_segments,
        "origin_fetched": stats.origin_fetched,
        "origin_rejected": stats.origin_rejected,
        "uploaded": stats.uploaded,
        "bytes_sent": stats.bytes_sent,
        "payload_sent": stats.payload_sent,
        "speed_down": round(stats.down.rate(now)),
        "speed_up": round(stats.up.rate(now)),
        "banned": stats.banned,
        "dropped_useless": stats.dropped_useless,
        "handed_off": swarm.rotation.handed_off,
        "withheld_requests": swarm.picker.withheld,
        # A support node's late HAVEs (fanout.py): sent, and not needed because the viewer had the piece by then.
        "late_announcements": swarm.fanout.deferred_announced,
        "late_announcements_spared": swarm.fanout.spared_announcements,
        "rejected_duplicate": swarm.uploader.rejected_duplicate,
        "rejected_queue_full": swarm.uploader.rejected_queue_full,
        "bad_pieces": stats.bad_pieces,
        "skipped_pieces": stats.skipped_pieces,
        "cache_bytes": swarm.store.size_bytes,
        "cache_pieces": len(swarm.store),
        "newest_piece": swarm.store.newest,
        # Peers holding a verified support credential (docs/protocol.md §19), as ip:listen_port.
        "support_nodes": sorted(
            f"{s.address[0]}:{s.address[1]}" for s in swarm.sessions.values() if s.is_seeder and not s.is_source
        ),
    }
