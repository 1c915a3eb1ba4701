"""The support node: an always-on peer that follows the broadcast, keeps its live window and uploads.

Its status with the source and with engines comes from a credential the source issues (swarm/authority.py): fetched
with the service access token when ``--url`` carries one (node/credentials.py), or granted on the peer protocol when
the source's operator listed this node's address with ``--support-node``. Without either it is served as a viewer.
A start node (node/startup.py) is a support node with a rotation policy.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web

from swarmcast.discovery.tracker_server import InternalTracker
from swarmcast.http.node_api import node_api_routes
from swarmcast.node.access import AccessControl
from swarmcast.node.config import SupportConfig
from swarmcast.node.credentials import CredentialFetcher, credential_url
from swarmcast.node.joiner import Membership, load_transport
from swarmcast.node.lifecycle import pid_file, signal_handler
from swarmcast.node.monitor import NodeState, access_update_hook
from swarmcast.node.shared import (
    new_peer_id,
    node_host_and_swarm,
    status_routes,
    tracker_routes,
    transport_file_routes,
)
from swarmcast.swarm.core import Role
from swarmcast.swarm.rotation import RotationConfig
from swarmcast.wire.messages import HandshakeFlags

log = logging.getLogger("swarmcast.support")


class SupportNode:
    """A support node; with ``rotation``, a start node (node/startup.py)."""

    kind = "support"  # the monitor's "type"

    def __init__(self, config: SupportConfig, *, rotation: RotationConfig | None = None) -> None:
        self.config = config
        self.rotation = rotation
        self.peer_id = new_peer_id()
        self.started_at = time.monotonic()
        self.node_state: NodeState | None = None
        self.access: AccessControl | None = None  # the operator controls /app/update reaches (node/access.py)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the broadcast until ``stop``."""
        config, kind = self.config, self.kind
        transport = await load_transport(config.url)
        descriptor = transport.descriptor
        log.info("%s node for %r, content id %s", kind, descriptor.title, descriptor.infohash)
        app = web.Application()
        transport_file_routes(app, descriptor.encode(), config.common.service_access_token)
        # Engines that fetch the transport file here also announce here, so they find each other.
        tracker_routes(app, InternalTracker(), config.common.service_access_token)
        download_from = frozenset(config.download_from) if config.download_from else None
        host, swarm = node_host_and_swarm(
            config.common, role=Role.SUPPORT, flags=HandshakeFlags.SEEDER, peer_id=self.peer_id, app=app,
            descriptor=descriptor, download_from=download_from, rotation=self.rotation,
            # Without --download-from, the node its transport file came from is its upstream: a private node admits it.
            trusted=[transport.node[0]] if transport.node is not None and download_from is None else [],
        )  # fmt: skip
        status_routes(app, swarm, config.common.service_access_token)
        self.node_state = NodeState(kind, swarm, host, config.common, self.started_at,
                                    download_from=config.download_from, upload_to=config.common.access.upload_to)
        node_api_routes(app, self.node_state, config.common.service_access_token)
        access = self.access = AccessControl(host, swarm, config.common.access)
        self.node_state.update_hooks.append(access_update_hook(access))
        pinned = list(config.download_from)
        if transport.node is not None and download_from is None:
            pinned.append(transport.node)
        swarm.add_candidates(pinned, pinned=True)
        await host.start()
        # Before dialling anyone, so the first peers already get our credential with the handshake.
        fetcher: CredentialFetcher | None = None
        url = credential_url(config.url, host.port)
        if url is not None:
            fetcher = CredentialFetcher(url, swarm)
            fetcher.start(await fetcher.fetch_once())
        trackers = descriptor.trackers + transport.trackers + config.common.trackers
        if config.common.access.private and trackers:
            # Only its operator's addresses may connect: peers a tracker names would be refused both ways.
            log.info("private node: not announcing to %d trackers", len(set(trackers)))
            trackers = ()
        membership = Membership(host, swarm, trackers)
        self.node_state.metatrackers = membership.metatracker_status
        membership.start()
        log.info("%s node listening on %s:%d", kind, config.common.bind, host.port)
        with pid_file(config.common.pid_file_dir, host.port), signal_handler(signal.SIGHUP, access.on_hangup):
            try:
                await stop.wait()
            finally:
                log.info("%s node stopping", kind)
                if fetcher is not None:
                    await fetcher.close()
                await membership.close()
                await host.close()
