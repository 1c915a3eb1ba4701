"""``--upload-to``: the only peers a node uploads to, by IP (the port is ignored, as Ace Stream does), sans-IO.

The choker (choking.py) asks ``allows`` before it unchokes anyone, so a peer outside the list stays choked and
every REQUEST it sends gets a REJECT (upload.py serves choked peers nothing). None (the default) is everyone. The
list may change while the node runs (``Swarm.set_upload_to``, from /app/update): peers no longer on it are choked
at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from swarmcast.credential import normalise_ip


class UploadTargets:
    def __init__(self, ips: Iterable[str] | None = None) -> None:
        self.ips: frozenset[str] | None = None
        self.set(ips)

    def set(self, ips: Iterable[str] | None) -> None:
        if ips is None:
            self.ips = None
            return
        normalised: set[str] = set()
        for ip in ips:
            try:
                normalised.add(normalise_ip(ip))
            except ValueError:
                continue  # not an IP: names nobody (the command line and /app/update take IP literals only)
        self.ips = frozenset(normalised)

    def allows(self, ip: str) -> bool:
        if self.ips is None:
            return True
        try:
            return normalise_ip(ip) in self.ips
        except ValueError:
            return False
