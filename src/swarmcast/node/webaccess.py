"""Who may use a node's web interface (/app/...): the local machine and --monitor-node-ip, or anyone with
--service-remote-access. Decided by IP when a connection's first bytes show it is HTTP (node/demux.py); a refused
connection is closed without an answer. The peer protocol on the same port is not concerned, nor is the node's
internal tracker (``/announce``, ``/app/TOKEN/announce``): it is for the viewers' engines, wherever they are, as
trackers are (a token still guards the token one). A connection let in for the tracker may not go on to another
path: each request's path is checked again (http/node_api.py's ``web_access_middleware``).

"Local" is exactly 127.0.0.1 and ::1 (and 127.0.0.1 as an IPv4-mapped IPv6 address on a dual-stack socket), not
all of 127.0.0.0/8: other loopback addresses are how this machine's other hosts (containers, test peers) appear,
and a node bound to all addresses treats them as remote, as the Ace Stream engine does. A connection that comes
from the very address it arrived at is local too: only this machine can send from one of its own addresses (a node
bound to 127.0.0.2, asked from 127.0.0.2; a server asking itself on its public address).
"""

from __future__ import annotations

import ipaddress

from swarmcast.node.config import AccessConfig

LOCAL_ADDRESSES = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})


def _normal(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class WebAccess:
    """``allows(ip)``: whether a connection from ``ip`` may use the web interface."""

    def __init__(self, access: AccessConfig) -> None:
        self.remote_access = access.remote_access
        monitors = (_normal(ip) for ip in access.monitor_ips)
        self.allowed = LOCAL_ADDRESSES | {a for a in monitors if a is not None}

    @classmethod
    def local_only(cls) -> WebAccess:
        """This machine only: what the rule is without --monitor-node-ip and --service-remote-access."""
        return cls(AccessConfig())

    def allows(self, ip: str, local_ip: str = "") -> bool:
        """``ip``: the client's address; ``local_ip``: the address of ours it connected to."""
        if self.remote_access:
            return True
        address = _normal(ip)
        if address is None:
            return False
        return address in self.allowed or address == _normal(local_ip)


def is_tracker_path(target: str) -> bool:
    """``target`` (a request target, query included) is the internal tracker: ``/announce`` or ``/app/X/announce``."""
    path = target.split("?", 1)[0]
    if path == "/announce":
        return True
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == "" and parts[1] == "app" and parts[2] != "" and parts[3] == "announce"
