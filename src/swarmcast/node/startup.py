"""The start node: a support node whose slots are kept for newcomers, so that a new viewer starts at once.

It follows the broadcast as a support node does (it is node/support.py's ``SupportNode``: same transport file,
same credential, same web interface) with two differences, both in the swarm's config:

- rotation (swarm/rotation.py): when a new connection finds it full, it hands off a peer it has already served
  ``--startup-handoff-bytes`` (or that has been connected ``--startup-handoff-after`` seconds) and that plays on
  without it, instead of refusing the newcomer; its upload slots go to peers still starting first;
- it dials only the source (or --download-from): its places are for the viewers that find it (trackers, the
  transport file's ``startup_nodes``, a metatracker), not for peers it would pick itself.

The operator lists its address with the source's ``--support-node`` (or starts it with a token ``--url``) so that
it holds a support credential like any of the broadcaster's nodes, and with ``--startup-node`` so that engines dial
it first while they have not started.
"""

from __future__ import annotations

from swarmcast.node.config import StartupConfig
from swarmcast.node.support import SupportNode


class StartupNode(SupportNode):
    kind = "startup"  # the monitor's "type", as Ace Stream names a start node

    def __init__(self, config: StartupConfig) -> None:
        super().__init__(config.support, rotation=config.rotation)
