"""The hot standby of a source node: ``swarmcast node source --standby-for IP:PORT ...``.

How this works. The standby has the broadcast's key (the primary's .sauth, copied into its --metadata-dir) and
reads the same input. It takes the descriptor from the primary's transport file (so the content id is the
primary's, whatever bitrate either would measure) and checks that its key is the one the descriptor names. Then it
is a support node with the SEEDER flag: the primary is a pinned peer, the broadcast's trackers are announced to,
and its pieces are downloaded, verified and served like any support node's; engines and support nodes find it by
the trackers, by PEX from the primary (a source names its support nodes to everyone) or by being told
(``--download-from``). Meanwhile the input is cut into pieces that are thrown away: the cutter stays in step with
the stream (tables, next keyframe), so a takeover costs no start-up.

``swarmcast.swarm.standby.StandbyMonitor`` decides, on every tick, from what the swarm sees of the primary. On
TAKEOVER the swarm becomes a source (``Swarm.set_role``: it stops downloading), the cutter drops input until the
next keyframe and signing starts at the primary's newest index + 1 (the first piece DISCONTINUITY +
RANDOM_ACCESS), reserving numbers in our own .restart as a source does. On YIELD (the primary is back and ahead of
us) the swarm follows again and cut pieces are thrown away again.

After a takeover, the operator restarts the old primary with ``--standby-for`` the acting node: it follows, and
the acting node, seeing it at its own ``--standby-for`` address but not ahead, stays the source.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.credential import CredentialIssuer, CredentialRole
from swarmcast.discovery.tracker_server import InternalTracker
from swarmcast.http.node_api import node_api_routes
from swarmcast.ingest.select import read_source
from swarmcast.ingest.status import InputStatus
from swarmcast.media.ts import TsPacketizer
from swarmcast.node.access import AccessControl
from swarmcast.node.config import SourceConfig, StandbyConfig
from swarmcast.node.credentials import credential_routes
from swarmcast.node.joiner import JoinError, Membership, load_transport
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
from swarmcast.node.source import publish_transport_file
from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.cutter import CutPiece, PieceCutter
from swarmcast.swarm.standby import StandbyMonitor, StandbyState, Takeover, Yield
from swarmcast.swarm.store import StoredPiece
from swarmcast.transport import Descriptor, public_key_bytes, sign_piece
from swarmcast.wire.messages import HandshakeFlags

log = logging.getLogger("swarmcast.standby")

DESCRIPTOR_RETRY = 1.0  # seconds between attempts to fetch the primary's transport file at start


class StandbyError(ValueError):
    """The standby cannot serve this broadcast as configured (wrong key, no key); the message says why."""


class StandbyNode:
    def __init__(self, config: SourceConfig) -> None:
        assert config.standby is not None
        self.config = config
        self.standby: StandbyConfig = config.standby
        self.metadata = BroadcastMetadata(config.metadata_dir, config.name)
        self.peer_id = new_peer_id()
        self.descriptor: Descriptor | None = None
        self.swarm: Swarm | None = None
        self.monitor: StandbyMonitor | None = None
        self._key: Ed25519PrivateKey | None = None
        self._cutter: PieceCutter | None = None
        self._next_index = 0
        self.signed = 0
        self.access: AccessControl | None = None  # the operator controls /app/update reaches (node/access.py)
        self.first_signed: int | None = None  # the first index of the latest takeover
        self.started_at = time.monotonic()
        self.input_status: InputStatus | None = None
        self.node_state: NodeState | None = None

    # -- start ------------------------------------------------------------------------------------------
    def _transport_url(self) -> str:
        host, port = self.standby.primary
        token = self.config.common.service_access_token
        path = f"/app/{token}/get_transport_file" if token is not None else "/app/get_transport_file"
        return f"http://{host}:{port}{path}"

    async def _descriptor(self, stop: asyncio.Event) -> Descriptor | None:
        """The primary's descriptor; our saved copy if the primary cannot be reached (it may be the one that died)."""
        url = self._transport_url()
        saved = self.metadata.saved_descriptor()
        while not stop.is_set():
            try:
                return (await load_transport(url)).descriptor
            except JoinError as error:
                if saved is not None:
                    log.warning("primary unreachable (%s); using the descriptor kept in %s", error,
                                self.metadata.descriptor_path)  # fmt: skip
                    return saved
                log.warning("waiting for the primary's transport file: %s", error)
            try:
                async with asyncio.timeout(DESCRIPTOR_RETRY):
                    await stop.wait()
            except TimeoutError:
                pass
        return None

    def _check_key(self, descriptor: Descriptor) -> None:
        assert self._key is not None
        if descriptor.public_key != public_key_bytes(self._key):
            raise StandbyError(
                f"--standby-for {self.standby.primary[0]}:{self.standby.primary[1]}: the primary's broadcast key is "
                f"not the one in {self.metadata.key_path} (copy the primary's .sauth there)"
            )

    # -- signing ----------------------------------------------------------------------------------------
    def _on_cut(self, cut: CutPiece) -> None:
        monitor, swarm, descriptor = self.monitor, self.swarm, self.descriptor
        if monitor is None or swarm is None or descriptor is None or monitor.state is not StandbyState.ACTIVE:
            return  # following: the primary signs; our cut only keeps the cutter in step
        assert self._key is not None
        index = self._next_index
        self.metadata.note_index(index)
        signature = sign_piece(self._key, descriptor.content_id, index, cut.flags, cut.data)
        self._next_index += 1
        self.signed += 1
        swarm.add_local_piece(StoredPiece(index, cut.flags, signature, cut.data), time.monotonic())

    def _watch(self, now: float) -> None:
        swarm, monitor, cutter = self.swarm, self.monitor, self._cutter
        assert swarm is not None
        assert monitor is not None
        assert cutter is not None
        # The primary is whoever speaks our protocol at the configured address, whatever its flags: after a
        # takeover the old primary is restarted as the standby of the acting one, and each must see the other.
        primary = next((s for s in swarm.sessions.values() if s.address == self.standby.primary), None)
        action = monitor.observe(
            now,
            primary_connected=primary is not None,
            primary_newest=primary.newest_have if primary is not None else None,
            own_newest=swarm.store.newest,
        )
        if monitor.state is StandbyState.FOLLOWING and swarm.store.newest is not None:
            # Keep our .restart ahead of the primary's numbering (written once per reserved block), so a standby
            # restarted while the primary is down continues above what viewers hold, not from 0.
            self.metadata.note_index(swarm.store.newest)
        if isinstance(action, Takeover):
            self._next_index = action.index if action.index is not None else self.metadata.first_index()
            self.metadata.note_index(self._next_index)
            self.first_signed = self._next_index
            swarm.set_role(Role.SOURCE, now)
            cutter.mark_discontinuity(resync=True, now=now)
            log.warning("primary %s:%d gone for %.1f s: taking over, signing from piece %d",
                        *self.standby.primary, monitor.takeover_after, self._next_index)  # fmt: skip
        elif isinstance(action, Yield):
            swarm.set_role(Role.SUPPORT, now)
            log.warning("primary %s:%d is back and ahead (piece %d, ours %s): following it again",
                        *self.standby.primary, action.primary_newest, swarm.store.newest)  # fmt: skip

    def _status_routes(self, app: web.Application) -> None:
        token = self.config.common.service_access_token

        async def status(request: web.Request) -> web.Response:
            if token is not None and request.match_info.get("token") != token:
                return web.json_response({"result": None, "error": "invalid access token"}, status=403)
            monitor = self.monitor
            result = {
                "state": monitor.state.value if monitor is not None else "starting",
                "primary": f"{self.standby.primary[0]}:{self.standby.primary[1]}",
                "takeovers": monitor.takeovers if monitor is not None else 0,
                "yields": monitor.yields if monitor is not None else 0,
                "first_signed": self.first_signed,
                "next_index": self._next_index,
                "signed": self.signed,
            }
            return web.json_response({"result": result, "error": None})

        app.router.add_get("/app/{token}/standby" if token is not None else "/app/standby", status)

    # -- run --------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        self._key = self.metadata.key()
        descriptor = await self._descriptor(stop)
        if descriptor is None:
            return
        self._check_key(descriptor)
        self.descriptor = descriptor
        content_id = descriptor.content_id
        path = publish_transport_file(config, self.metadata, descriptor)
        log.info("standby for %s:%d, broadcast %r content id %s, transport file %s",
                 *self.standby.primary, descriptor.title, descriptor.infohash, path)  # fmt: skip

        app = web.Application()
        transport_file_routes(app, descriptor.encode(), config.common.service_access_token)
        if not config.skip_internal_tracker:
            tracker_routes(app, InternalTracker(), config.common.service_access_token)
        self._status_routes(app)
        # SEEDER, not SOURCE, for the whole run: while following we are a support node; after a takeover peers
        # already connected keep their view of us, and a primary that comes back must send us its HAVEs (a
        # source sends none to a source), or we could never see that it is ahead and yield.
        host, swarm = node_host_and_swarm(
            config.common, role=Role.SUPPORT, flags=HandshakeFlags.SEEDER, peer_id=self.peer_id, app=app,
            descriptor=descriptor, trusted=[self.standby.primary[0], *(ip for ip, _ in config.support_nodes)],
        )  # fmt: skip
        self.swarm = swarm
        status_routes(app, swarm, config.common.service_access_token)
        # A source node to the monitor (it ingests and, after a takeover, signs); it downloads from the primary.
        self.input_status = InputStatus(config.source_url)
        self.node_state = NodeState("source", swarm, host, config.common, self.started_at,
                                    source_url=config.source_url, input_status=self.input_status,
                                    download_from=(self.standby.primary,), upload_to=config.common.access.upload_to)
        node_api_routes(app, self.node_state, config.common.service_access_token)
        # It holds the broadcast key, so it vouches for itself: a support credential for the address each peer sees
        # it at (never a source one, see Authority.own_role), and the same grants and token endpoint as the primary,
        # so support nodes keep their status through a takeover.
        issuer = CredentialIssuer(self._key, content_id, support_nodes=config.support_nodes,
                                  lifetime=config.credential_lifetime)  # fmt: skip
        swarm.authority.issuer = issuer
        swarm.authority.own_role = CredentialRole.SUPPORT
        credential_routes(app, issuer, config.common.service_access_token)
        access = self.access = AccessControl(host, swarm, config.common.access, issuer=issuer)
        self.node_state.update_hooks.append(access_update_hook(access))
        swarm.add_candidates([self.standby.primary], pinned=True)
        self.monitor = StandbyMonitor(takeover_after=self.standby.takeover_after, now=time.monotonic())
        cutter = self._cutter = PieceCutter(piece_size=descriptor.piece_size)
        packetizer = TsPacketizer()

        def on_tick(now: float) -> None:
            self._watch(now)
            for cut in cutter.poll(now):
                self._on_cut(cut)

        def on_reconnect() -> None:
            cutter.mark_discontinuity(resync=True, now=time.monotonic())

        host.tick_hooks.append(on_tick)
        await host.start()
        membership = Membership(host, swarm, descriptor.trackers + config.common.trackers)
        self.node_state.metatrackers = membership.metatracker_status
        membership.start()
        log.info("standby node listening on %s:%d", config.common.bind, host.port)
        chunks = read_source(  # TS or HLS, as the primary's (ingest/hls.py)
            config.source_url, reconnect_interval=config.source_reconnect_interval,
            read_timeout=config.source_read_timeout, on_reconnect=on_reconnect, status=self.input_status,
            hls=config.hls,
        )

        async def pump() -> None:
            async for chunk in chunks:
                for cut in cutter.feed(packetizer.feed(chunk), time.monotonic()):
                    self._on_cut(cut)

        with pid_file(config.common.pid_file_dir, host.port), signal_handler(signal.SIGHUP, access.on_hangup):
            try:
                await run_until_stopped_or_done(pump(), stop, name="standby-pump")
            finally:
                log.info("standby node stopping")
                await chunks.aclose()  # type: ignore[attr-defined]
                await membership.close()
                await host.close()
