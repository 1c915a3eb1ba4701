"""The support node: an always-on peer that follows the broadcast, keeps its live window and uploads.

Its status with the source and with engines comes from a credential the source issues (swarm/authority.py): fetched
with the service access token when ``--url`` carries one (node/credentials.py), or granted on the peer protocol when
the source's operator listed this node's address with ``--support-node``. Without either it is served as a viewer.
A start node (node/startup.py) is a support node with a rotation policy: both run ``follow_broadcast``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from swarmcast.discovery.tracker_server import InternalTracker
from swarmcast.node.config import SupportConfig
from swarmcast.node.credentials import CredentialFetcher, credential_url
from swarmcast.node.joiner import Membership, load_transport
from swarmcast.node.lifecycle import pid_file
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
    def __init__(self, config: SupportConfig) -> None:
        self.config = config
        self.peer_id = new_peer_id()

    async def run(self, stop: asyncio.Event) -> None:
        await follow_broadcast(self.config, self.peer_id, stop)


async def follow_broadcast(
    config: SupportConfig, peer_id: bytes, stop: asyncio.Event, *, kind: str = "support",
    rotation: RotationConfig | None = None,
) -> None:  # fmt: skip
    """Run a node that follows a broadcast until ``stop``: a support node, or (with ``rotation``) a start node."""
    transport = await load_transport(config.url)
    descriptor = transport.descriptor
    log.info("%s node for %r, content id %s", kind, descriptor.title, descriptor.infohash)
    app = web.Application()
    transport_file_routes(app, descriptor.encode(), config.common.service_access_token)
    # Engines that fetch the transport file here also announce here, so they find each other.
    tracker_routes(app, InternalTracker(), config.common.service_access_token)
    download_from = frozenset(config.download_from) if config.download_from else None
    host, swarm = node_host_and_swarm(
        config.common, role=Role.SUPPORT, flags=HandshakeFlags.SEEDER, peer_id=peer_id, app=app,
        descriptor=descriptor, download_from=download_from, rotation=rotation,
    )  # fmt: skip
    status_routes(app, swarm, config.common.service_access_token)
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
    membership = Membership(host, swarm, descriptor.trackers + transport.trackers + config.common.trackers)
    membership.start()
    log.info("%s node listening on %s:%d", kind, config.common.bind, host.port)
    with pid_file(config.common.pid_file_dir, host.port):
        try:
            await stop.wait()
        finally:
            log.info("%s node stopping", kind)
            if fetcher is not None:
                await fetcher.close()
            await membership.close()
            await host.close()
