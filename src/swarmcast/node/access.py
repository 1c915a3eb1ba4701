"""Who may connect to a node at all: private nodes (``--private-node``) and the traffic filter (``--ip-filter-config``).

How this works. ``AccessPolicy`` is a sans-IO decision by remote IP only (the port is ignored, IPv4-mapped IPv6 is
IPv4), consulted by the demux the moment a connection is accepted, before any byte is read, for the peer protocol
and the web interface alike (node/demux.py), and by the host before it dials anyone (node/host.py):

- a *private* node admits only its operator's addresses: ``--download-from``, ``--upload-to``,
  ``--monitor-node-ip`` (and, on a source, ``--support-node``); everyone else is refused ("private node");
- the *operator's addresses* are never filtered: the filter is for the public, not for the node's own upstream;
- everyone else is judged by the filter (node/ipfilter.py) and, for addresses in a group of ``limit_groups``, by
  how many connections that group holds now: ``hold``/``release`` count them per admission key (inbound only).

Refusals are counted per reason in ``rejected`` (for the monitor). ``set_peers`` and ``set_filter`` change the
rules on the fly and return the keys of live connections the new rules refuse: the owner closes those (a node that
is told "no longer upload to X" or "blacklist Y" means now, not after a restart), and everything still allowed stays
connected. Group counts are recomputed for the connections that stay; a group over its new cap is not trimmed, it
only takes no newcomer until it is under the cap again.

``AccessControl`` is the node's side: the policy plus what else follows from the same operator controls (the
swarm's upload targets, the source's support credentials, the support node's upstream), and the entry points for
``/app/update`` and SIGHUP.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swarmcast.node.config import AccessConfig
from swarmcast.node.ipfilter import CountryLookup, FilterError, IPAddress, IpFilter, load_filter, open_geoip, parse_ip

if TYPE_CHECKING:
    from swarmcast.credential import CredentialIssuer
    from swarmcast.node.host import PeerHost
    from swarmcast.swarm.core import Swarm
    from swarmcast.swarm.peer import Address

log = logging.getLogger("swarmcast.access")

PRIVATE = "private node"
UNKNOWN_ADDRESS = "unknown address"


@dataclass(frozen=True)
class AccessVerdict:
    admitted: bool
    reason: str = ""  # why not (a key of AccessPolicy.rejected)
    groups: tuple[str, ...] = ()  # the limited groups the address counts towards


_OPEN = AccessVerdict(True)


def _ips(texts: Iterable[str]) -> frozenset[IPAddress]:
    out: set[IPAddress] = set()
    for text in texts:
        try:
            out.add(parse_ip(text))
        except ValueError:
            log.warning("access: %r is not an IP address; ignored", text)
    return frozenset(out)


def resolve_hosts(hosts: Iterable[str]) -> list[str]:
    """IP literals as they are, host names resolved (once, at start or on update: the lists filter by IP)."""
    out: list[str] = []
    for host in hosts:
        try:
            out.append(str(parse_ip(host)))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as error:
            log.warning("access: cannot resolve %s (%s); it is not admitted", host, error)
            continue
        out.extend(str(info[4][0]) for info in infos)
    return out


class AccessPolicy:
    """The decision of the module docstring; ``now``-free (nothing here expires)."""

    def __init__(
        self, *, private: bool = False, trusted: Iterable[str] = (), download_from: Iterable[str] = (),
        upload_to: Iterable[str] = (), ip_filter: IpFilter | None = None, countries: CountryLookup | None = None,
        max_connections: int = 1000,
    ) -> None:  # fmt: skip
        self.private = private
        self._trusted = _ips(trusted)  # --monitor-node-ip, --support-node: fixed for the node's life
        self._download_from = _ips(download_from)
        self._upload_to = _ips(upload_to)
        self._operator = self._trusted | self._download_from | self._upload_to
        self.ip_filter = ip_filter
        self._countries = countries
        self.max_connections = max_connections
        self.rejected: dict[str, int] = {}  # reason -> refused connections, since start
        self._live: dict[int, tuple[IPAddress | None, bool]] = {}  # admission key -> (address, inbound)
        self._held: dict[int, tuple[str, ...]] = {}  # key -> limited groups it counts towards
        self._group_counts: dict[str, int] = {}

    # -- decisions -----------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self.private and self.ip_filter is None

    def allowed(self, ip: str) -> AccessVerdict:
        """May ``ip`` connect (ignoring how full its groups are)? Pure: counts nothing."""
        if self.is_open:
            return _OPEN
        try:
            address = parse_ip(ip)
        except ValueError:
            return AccessVerdict(False, UNKNOWN_ADDRESS)
        return self._judge(address)

    def _judge(self, address: IPAddress) -> AccessVerdict:
        if address in self._operator:
            return _OPEN
        if self.private:
            return AccessVerdict(False, PRIVATE)
        ip_filter = self.ip_filter
        if ip_filter is None:
            return _OPEN
        country = self._countries(address) if self._countries is not None else None
        reason = ip_filter.refusal(address, country)
        if reason is not None:
            return AccessVerdict(False, reason)
        return AccessVerdict(True, groups=ip_filter.limited_groups(address, country))

    def group_cap(self, group: str) -> int:
        assert self.ip_filter is not None
        return math.floor(self.ip_filter.limits[group] * self.max_connections)

    def admit(self, ip: str) -> AccessVerdict:
        """An inbound connection from ``ip`` at accept: ``allowed`` plus the group caps; refusals are counted."""
        verdict = self.allowed(ip)
        if verdict.admitted:
            for group in verdict.groups:
                if self._group_counts.get(group, 0) >= self.group_cap(group):
                    verdict = AccessVerdict(False, f"limit_groups {group}")
                    break
        if not verdict.admitted:
            self.rejected[verdict.reason] = self.rejected.get(verdict.reason, 0) + 1
        return verdict

    def may_dial(self, ip: str) -> bool:
        """Whether to open a connection to ``ip``: a private node talks to its operator's addresses only, and no
        node dials an address its filter refuses (group caps are for inbound connections)."""
        return self.allowed(ip).admitted

    # -- the connections it let in -------------------------------------------------------------------------------

    def hold(self, key: int, ip: str, groups: tuple[str, ...] = (), *, inbound: bool = True) -> None:
        """Connection ``key`` (from ``admit``'s verdict, or a dialled one) is live; release it when it closes."""
        try:
            address: IPAddress | None = parse_ip(ip)
        except ValueError:
            address = None
        self._live[key] = (address, inbound)
        if inbound and groups:
            self._held[key] = groups
            for group in groups:
                self._group_counts[group] = self._group_counts.get(group, 0) + 1

    def release(self, key: int) -> None:
        """Connection ``key`` is gone (idempotent)."""
        self._live.pop(key, None)
        for group in self._held.pop(key, ()):
            left = self._group_counts.get(group, 0) - 1
            if left > 0:
                self._group_counts[group] = left
            else:
                self._group_counts.pop(group, None)

    def group_counts(self) -> dict[str, int]:
        return dict(self._group_counts)

    # -- changes on the fly --------------------------------------------------------------------------------------

    def set_peers(
        self, *, download_from: Iterable[str] | None = None, upload_to: Iterable[str] | None = None
    ) -> list[int]:
        """New ``--download-from`` / ``--upload-to`` IPs (None: unchanged); the live keys now refused."""
        if download_from is not None:
            self._download_from = _ips(download_from)
        if upload_to is not None:
            self._upload_to = _ips(upload_to)
        self._operator = self._trusted | self._download_from | self._upload_to
        return self._recheck()

    def set_filter(self, ip_filter: IpFilter | None, countries: CountryLookup | None) -> list[int]:
        """A re-read filter (and database); the live keys it refuses."""
        self.ip_filter, self._countries = ip_filter, countries
        return self._recheck()

    def _recheck(self) -> list[int]:
        refused: list[int] = []
        self._held.clear()
        self._group_counts.clear()
        for key, (address, inbound) in list(self._live.items()):
            verdict = _OPEN if self.is_open else (
                self._judge(address) if address is not None else AccessVerdict(False, UNKNOWN_ADDRESS)
            )  # fmt: skip
            if not verdict.admitted:
                refused.append(key)
                self._live.pop(key)
                continue
            if inbound and verdict.groups:
                self._held[key] = verdict.groups
                for group in verdict.groups:
                    self._group_counts[group] = self._group_counts.get(group, 0) + 1
        return refused

    @property
    def upload_to(self) -> frozenset[IPAddress]:
        return self._upload_to

    @property
    def download_from(self) -> frozenset[IPAddress]:
        return self._download_from


# -- the node's side ---------------------------------------------------------------------------------------------


def load_access_filter(access: AccessConfig) -> tuple[IpFilter | None, CountryLookup | None]:
    """The filter and country database the flags name (None, None without ``--ip-filter-config``). Raises
    FilterError with one line naming the file, the key and the value; the node refuses to start on it."""
    countries = open_geoip(access.geoip_db) if access.geoip_db is not None else None
    if access.ip_filter_config is None:
        return None, countries
    return load_filter(access.ip_filter_config, have_geoip=countries is not None), countries


def build_policy(
    access: AccessConfig, *, max_connections: int, download_from: Iterable[str] = (), trusted: Iterable[str] = ()
) -> AccessPolicy:
    """The policy of a node's flags; ``trusted`` adds role-specific operator addresses (a source's support nodes)."""
    ip_filter, countries = load_access_filter(access)
    return AccessPolicy(
        private=access.private,
        trusted=[*access.monitor_ips, *trusted],
        download_from=resolve_hosts(download_from),
        upload_to=[ip for ip, _port in access.upload_to],
        ip_filter=ip_filter,
        countries=countries,
        max_connections=max_connections,
    )


class AccessControl:
    """The operator controls of one node over its access policy: what ``/app/update`` and SIGHUP call.

    ``set_peers`` and ``reload_filter`` are the two entry points (docs/operators.md); ``status`` is for the monitor.
    """

    def __init__(
        self, host: PeerHost, swarm: Swarm, config: AccessConfig, *, issuer: CredentialIssuer | None = None,
    ) -> None:  # fmt: skip
        self.host = host
        self.swarm = swarm
        self.config = config
        self.issuer = issuer
        self.policy = host.access
        # The source's own --support-node list: --upload-to adds to it, never removes from it.
        self._support_base = set(issuer.support_nodes) if issuer is not None else set()
        self._upload_to: tuple[Address, ...] = tuple(config.upload_to)
        self._download_from: tuple[Address, ...] = tuple(sorted(swarm.config.download_from or ()))
        self._apply_upload_to()

    @property
    def upload_to(self) -> tuple[Address, ...]:
        return self._upload_to

    @property
    def download_from(self) -> tuple[Address, ...]:
        return self._download_from

    def set_peers(
        self, *, download_from: Sequence[Address] | None = None, upload_to: Sequence[Address] | None = None
    ) -> None:
        """Replace the node's ``--download-from`` and/or ``--upload-to`` lists (None: leave that one as it is).

        Takes effect at once: the swarm uploads only to the new ``upload_to`` IPs (an empty list: to everyone), a
        source grants support credentials to them, a support node dials the new ``download_from`` (pinned) and
        downloads only from them, and a private node closes live connections no longer allowed.
        """
        now = time.monotonic()
        if upload_to is not None:
            self._upload_to = tuple(upload_to)
            self._apply_upload_to()
        if download_from is not None:
            self._download_from = tuple(download_from)
            self._apply_download_from(now)
        refused = self.policy.set_peers(
            download_from=resolve_hosts(h for h, _ in self._download_from) if download_from is not None else None,
            upload_to=[ip for ip, _ in self._upload_to] if upload_to is not None else None,
        )
        self.host.close_refused(refused, "no longer allowed")
        log.info("access: upload to %s; download from %s", _names(self._upload_to) or "everyone",
                 _names(self._download_from) or "anyone")  # fmt: skip

    def reload_filter(self) -> None:
        """Re-read ``--ip-filter-config`` (and ``--geoip-db``). On a bad file the old filter stays and FilterError
        (naming file, key and value) is raised; otherwise live connections the new filter refuses are closed."""
        ip_filter, countries = load_access_filter(self.config)
        refused = self.policy.set_filter(ip_filter, countries)
        self.host.close_refused(refused, "refused by the reloaded ip filter")
        log.info("access: ip filter %s reloaded; %d connections it refuses closed",
                 self.config.ip_filter_config, len(refused))  # fmt: skip

    def on_hangup(self) -> None:
        """SIGHUP: reload the filter; a bad file is logged and the old filter kept."""
        try:
            self.reload_filter()
        except FilterError as error:
            log.error("ip filter not reloaded, the previous one stays: %s", error)

    def status(self) -> dict[str, object]:
        """For /app/monitor: the rules in force and what they refused."""
        policy = self.policy
        return {
            "private": policy.private,
            "upload_to": [list(a) for a in self._upload_to],
            "ip_filter_config": str(self.config.ip_filter_config) if self.config.ip_filter_config else None,
            "rejected_connections": dict(policy.rejected),
            "limit_groups": {
                name: {"connections": policy.group_counts().get(name, 0), "cap": policy.group_cap(name)}
                for name in (policy.ip_filter.limits if policy.ip_filter is not None else {})
            },
        }

    # -- what follows from the lists -----------------------------------------------------------------------------

    def _apply_upload_to(self) -> None:
        ips = [ip for ip, _ in self._upload_to]
        self.swarm.set_upload_to(ips or None, time.monotonic())
        if self.issuer is not None:
            # The source's --upload-to nodes are its support nodes: they get a support credential (any listen
            # port from that IP, as the list filters by IP). One removed keeps the credential it holds until it
            # expires (--credential-lifetime), but is no longer served, and a private source closes it.
            self.issuer.support_nodes = self._support_base | {(_normal(ip), 0) for ip in ips}

    def _apply_download_from(self, now: float) -> None:
        swarm = self.swarm
        new = frozenset(self._download_from) or None
        if new is None:
            for candidate in swarm.dialer.candidates.values():
                candidate.pinned = False  # the old upstream: now a candidate like any other
        # The dialer's list and pins, and each session's interest, follow (swarm/settings.py).
        swarm.reconfigure(now, download_from=new)
        self.host.dial_now(swarm)


def _normal(ip: str) -> str:
    return str(parse_ip(ip))


def _names(addresses: Iterable[Address]) -> str:
    return ", ".join(f"{h}:{p}" for h, p in addresses)


__all__ = ["AccessControl", "AccessPolicy", "AccessVerdict", "FilterError", "build_policy"]
