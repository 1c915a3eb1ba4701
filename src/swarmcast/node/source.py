"""The source node: ingest a live MPEG-TS stream, cut and sign it into pieces, seed the swarm.

Start-up order: load or create the key, connect to the source, settle the descriptor (from the flags; a bitrate
of 0 is measured over the first 2 s of input, or taken from the saved metadata so the content id does not drift),
publish the transport file, then listen and announce while pieces flow.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.credential import CredentialIssuer
from swarmcast.discovery.announcer import Announcer
from swarmcast.discovery.metatracker import MetatrackerClient
from swarmcast.discovery.metatracker_protocol import MetatrackerAnswer, canonical_node_address
from swarmcast.discovery.tracker_server import InternalTracker
from swarmcast.files import write_file_atomically
from swarmcast.http.node_api import node_api_routes
from swarmcast.ingest.select import read_source
from swarmcast.ingest.status import InputStatus
from swarmcast.media.ts import TsPacketizer
from swarmcast.node.access import AccessControl
from swarmcast.node.config import SourceConfig
from swarmcast.node.credentials import credential_routes
from swarmcast.node.host import PeerHost
from swarmcast.node.lifecycle import pid_file, run_until_stopped_or_done, signal_handler
from swarmcast.node.metadata import BroadcastMetadata
from swarmcast.node.monitor import NodeState, access_update_hook
from swarmcast.node.shared import (
    new_peer_id,
    node_host_and_swarm,
    status_routes,
    tracker_routes,
    transport_file_routes,
)
from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.cutter import CutPiece, PieceCutter, choose_piece_size
from swarmcast.swarm.store import StoredPiece
from swarmcast.transport import Descriptor, public_key_bytes, sign_piece
from swarmcast.wire.messages import HandshakeFlags

log = logging.getLogger("swarmcast.source")

BITRATE_DETECT_SECONDS = 2.0
# The first half second is skipped when measuring: servers often send a burst (a GOP cache) on connect.
BITRATE_DETECT_SKIP = 0.5


async def detect_bitrate(chunks: AsyncIterator[bytes], buffered: list[bytes]) -> int:
    """Bytes/s over at most BITRATE_DETECT_SECONDS of input; every chunk read is kept in ``buffered``."""
    started: float | None = None
    counted = 0
    async for chunk in chunks:
        now = time.monotonic()
        buffered.append(chunk)
        if started is None:
            started = now
            continue
        if now - started >= BITRATE_DETECT_SKIP:
            counted += len(chunk)
        if now - started >= BITRATE_DETECT_SECONDS:
            break
    if started is None:
        raise RuntimeError("source ended before its bitrate could be measured")
    elapsed = max(time.monotonic() - started - BITRATE_DETECT_SKIP, 0.1)
    return max(int(counted / elapsed), 1)


def publish_transport_file(config: SourceConfig, metadata: BroadcastMetadata, descriptor: Descriptor) -> Path:
    """Keep the descriptor with the metadata and write ``<publish-dir>/<name>.acelive`` (atomically)."""
    metadata.save_descriptor(descriptor)
    config.publish_dir.mkdir(parents=True, exist_ok=True)
    path = config.publish_dir / f"{config.name}.acelive"
    write_file_atomically(path, descriptor.encode())
    return path


def _add_trackers(announcer: Announcer, url: str, answer: MetatrackerAnswer) -> None:
    new = [t for t in answer.trackers if t not in announcer.trackers]
    if not new:
        return
    try:
        announcer.add_trackers(new)
    except ValueError as error:  # the announcer's cap: those before it were added
        log.info("metatracker %s: not every tracker added: %s", url, error)
    log.info("metatracker %s added tracker(s) %s", url, ", ".join(new))


class SourceNode:
    kind = "source"  # the monitor's "type"

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.metadata = BroadcastMetadata(config.metadata_dir, config.name)
        self.peer_id = new_peer_id()
        self.descriptor: Descriptor | None = None
        self.swarm: Swarm | None = None
        self.host: PeerHost | None = None
        self.access: AccessControl | None = None  # the operator controls /app/update reaches (node/access.py)
        self._cutter: PieceCutter | None = None
        self._next_index = 0
        self._key: Ed25519PrivateKey | None = None
        self.started_at = time.monotonic()
        # The input as the ingest loop last saw it (connected, failed attempts, last error): for /app/monitor.
        self.input_status = InputStatus(config.source_url)
        self.node_state: NodeState | None = None

    def _descriptor_for(self, bitrate: int) -> Descriptor:
        config = self.config
        return Descriptor(
            name=config.name,
            title=config.title,
            piece_size=config.piece_size or choose_piece_size(bitrate),
            bitrate=bitrate,
            public_key=public_key_bytes(self.metadata.key()),
            quality=config.quality,
            categories=config.categories,
            trackers=config.common.trackers,
            provider_key=config.provider_key,
            # Canonical (``[::0001]`` is ``::1``) and without repeats: the transport file must decode as written.
            startup_nodes=tuple(dict.fromkeys(canonical_node_address(a) for a in config.startup_nodes)),
            metatrackers=tuple(dict.fromkeys(config.metatrackers)),
        )

    async def _settle_descriptor(self, chunks: AsyncIterator[bytes], buffered: list[bytes]) -> Descriptor:
        bitrate = self.config.bitrate
        if bitrate == 0:
            saved = self.metadata.saved_descriptor()
            if saved is not None and saved == self._descriptor_for(saved.bitrate):
                log.info("using the bitrate kept with the metadata: %d bytes/s", saved.bitrate)
                return saved
            started = time.monotonic()
            bitrate = await detect_bitrate(chunks, buffered)
            log.info("detected bitrate %d bytes/s in %.1f s", bitrate, time.monotonic() - started)
        return self._descriptor_for(bitrate)

    def _open_input(self, on_reconnect: Callable[[], None]) -> AsyncIterator[bytes]:
        # A non-TS or unreachable input yields nothing: with --bitrate the transport file is published and the
        # node listens (its monitor shows the input's state) while no piece is made; with bitrate detection the
        # node waits for 2 s of real TS before it has a descriptor to publish. An HLS URL is read as HLS.
        config = self.config
        return read_source(
            config.source_url, reconnect_interval=config.source_reconnect_interval,
            read_timeout=config.source_read_timeout, on_reconnect=on_reconnect, status=self.input_status,
            hls=config.hls,
        )  # fmt: skip

    async def _pump(self, chunks: AsyncIterator[bytes], buffered: list[bytes], cutter: PieceCutter) -> None:
        """Input to signed pieces until the input ends (it does not: the readers retry for ever)."""
        packetizer = TsPacketizer()
        for chunk in buffered:
            for cut in cutter.feed(packetizer.feed(chunk), time.monotonic()):
                self._emit(cut)
        buffered.clear()
        async for chunk in chunks:
            for cut in cutter.feed(packetizer.feed(chunk), time.monotonic()):
                self._emit(cut)

    def _publish(self, descriptor: Descriptor) -> Path:
        return publish_transport_file(self.config, self.metadata, descriptor)

    def _emit(self, cut: CutPiece) -> None:
        assert self.swarm is not None
        assert self.descriptor is not None
        index = self._next_index
        self.metadata.note_index(index)
        assert self._key is not None
        signature = sign_piece(self._key, self.descriptor.content_id, index, cut.flags, cut.data)
        self._next_index += 1
        self.swarm.add_local_piece(StoredPiece(index, cut.flags, signature, cut.data), time.monotonic())

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config

        def on_reconnect() -> None:
            if self._cutter is not None:
                self._cutter.mark_discontinuity(resync=True, now=time.monotonic())

        chunks = self._open_input(on_reconnect)
        if config.permanent:
            log.info("--permanent: the source keeps running through any input outage (it always does)")
        buffered: list[bytes] = []
        stop_task = asyncio.create_task(stop.wait())
        settle_task = asyncio.create_task(self._settle_descriptor(chunks, buffered))
        try:
            await asyncio.wait({stop_task, settle_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                settle_task.cancel()
                await asyncio.gather(settle_task, return_exceptions=True)
                return
            descriptor = self.descriptor = settle_task.result()
        finally:
            stop_task.cancel()
        # The key exists once the descriptor does (with --bitrate at once; with detection once real TS came): a
        # source pointed at a wrong URL and stopped leaves neither a key nor a transport file behind.
        self._key = self.metadata.key()
        content_id = descriptor.content_id
        path = self._publish(descriptor)
        log.info("broadcast %r content id %s, transport file %s", config.title, descriptor.infohash, path)
        self._next_index = self.metadata.first_index()
        log.info("piece numbering continues at %d", self._next_index)

        app = web.Application()
        transport_file_routes(app, descriptor.encode(), config.common.service_access_token)
        if not config.skip_internal_tracker:
            tracker_routes(app, InternalTracker(), config.common.service_access_token)
        host, swarm = node_host_and_swarm(
            config.common, role=Role.SOURCE, flags=HandshakeFlags.SOURCE, peer_id=self.peer_id, app=app,
            descriptor=descriptor, trusted=[ip for ip, _ in config.support_nodes],
        )  # fmt: skip
        self.host, self.swarm = host, swarm
        host.add_swarm(swarm)
        # -- credentials: support status is granted by us, never claimed (swarm/authority.py) ----------------
        issuer = CredentialIssuer(self._key, content_id, support_nodes=config.support_nodes,
                                  lifetime=config.credential_lifetime)  # fmt: skip
        swarm.authority.issuer = issuer
        credential_routes(app, issuer, config.common.service_access_token)
        # --upload-to: the only peers served, and support nodes (a credential) like --support-node ones.
        access = self.access = AccessControl(host, swarm, config.common.access, issuer=issuer)
        if config.support_nodes:
            log.info("support nodes: %s", ", ".join(f"{ip}:{port or '*'}" for ip, port in config.support_nodes))
        # -- end of credentials ---------------------------------------------------------------------------------
        status_routes(app, swarm, config.common.service_access_token)
        self.node_state = NodeState(self.kind, swarm, host, config.common, self.started_at,
                                    source_url=config.source_url, input_status=self.input_status,
                                    upload_to=config.common.access.upload_to)  # fmt: skip
        node_api_routes(app, self.node_state, config.common.service_access_token)
        self.node_state.update_hooks.append(access_update_hook(access))
        cutter = self._cutter = PieceCutter(piece_size=descriptor.piece_size)

        def flush_on_tick(now: float) -> None:
            for cut in cutter.poll(now):
                self._emit(cut)

        host.tick_hooks.append(flush_on_tick)
        await host.start()
        trackers = list(config.common.trackers)
        if config.common.access.private and trackers:
            # A private source hands data to its --upload-to nodes only: announcing would only invite refusals.
            log.info("private node: not announcing to %d trackers", len(trackers))
            trackers = []
        announcer = Announcer(
            trackers,
            info_hash=content_id,
            peer_id=self.peer_id,
            port=host.port,
            stats=lambda: (swarm.stats.uploaded, 0, 0),
            on_peers=lambda peers: None,  # the source only seeds; peers come to it
            local_address=host.local_address,
        )
        announcer.start()
        # The metatrackers' trackers are announced to as they come (their start nodes are for viewers).
        metatrackers = MetatrackerClient(descriptor.metatrackers, info_hash=content_id,
                                         on_answer=lambda url, answer: _add_trackers(announcer, url, answer))
        metatrackers.start()
        self.node_state.metatrackers = metatrackers.status
        log.info("source node listening on %s:%d", config.common.bind, host.port)

        with pid_file(config.common.pid_file_dir, host.port), signal_handler(signal.SIGHUP, access.on_hangup):
            try:
                await run_until_stopped_or_done(self._pump(chunks, buffered, cutter), stop, name="source-pump")
            finally:
                log.info("source node stopping")
                await chunks.aclose()  # type: ignore[attr-defined]
                await metatrackers.close()
                await announcer.close()
                await host.close()
                swarm.store.close()

