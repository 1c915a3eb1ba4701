"""Ace Stream's traffic filter (``--ip-filter-config FILE``): which addresses may connect, and how many at once.

The file is JSON::

    {
      "groups": {"office": {"addresses": ["10.0.0.0/8", "2001:db8::/32"], "countries": ["UA"]}},
      "whitelist": {"addresses": ["192.0.2.7"], "countries": ["PL"], "groups": ["office"]},
      "blacklist": {"addresses": ["203.0.113.0/24"], "countries": ["XX"], "groups": []},
      "limit_groups": {"office": "30%"}
    }

Every key is optional. ``addresses`` are IP addresses or CIDR subnets of any prefix length, IPv4 or IPv6 (host bits
are masked: ``10.1.2.3/8`` is ``10.0.0.0/8``); ``countries`` are ISO 3166 two-letter codes, resolved with the
MaxMind DB given by ``--geoip-db``; a list's ``groups`` adds the named groups' addresses and countries to it.

How an address is judged (first rule that applies):

1. in a blacklisted subnet: refused ("blacklist");
2. in a whitelisted subnet: allowed;
3. in a blacklisted country: refused ("blacklist country");
4. the whitelist is not empty and the address's country is not in it: refused ("not whitelisted");
5. allowed.

So addresses are more specific than countries (whitelist a country, blacklist a subnet inside it; or blacklist a
country, whitelist one host in it), and a whitelist, once given, admits nothing else.

``limit_groups`` caps the connections the addresses of a group may hold at once, as a share of the node's
``--max-connections``: ``"30%"`` (or the number 30) of 1000 is 300. The node counts them (node/access.py).

Parsing is strict: an unknown key, a value of the wrong type, an address that is not one, a group that does not
exist, a share outside 0..100 %, or countries without a database raise FilterError naming the key and the value.
Sans-IO apart from ``load_filter`` and ``open_geoip``, which read the files.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swarmcast.files import UnreadableFileError, read_regular_file

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A country lookup: an address's ISO code (upper case), None when the database does not know it.
CountryLookup = Callable[[IPAddress], str | None]

MAX_FILTER_BYTES = 4 * 1024 * 1024  # a filter file larger than this is refused (it is a list typed by hand)
MAX_ENTRIES = 100_000  # addresses and countries in the whole file
_TOP_KEYS = ("groups", "whitelist", "blacklist", "limit_groups")
_LIST_KEYS = ("addresses", "countries", "groups")
_GROUP_KEYS = ("addresses", "countries")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_SHARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%?\s*")


class FilterError(ValueError):
    """The filter file (or its database) is unusable; the message names the key and the value."""


def parse_ip(text: str) -> IPAddress:
    """An address as a socket reports it, IPv4-mapped IPv6 (a dual-stack socket's view of IPv4) as IPv4."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AddressSet:
    """Subnets and countries: a group, or what a whitelist or blacklist names.

    Membership costs one set lookup per distinct prefix length (at most 33 for IPv4, 129 for IPv6), not one test
    per subnet: the filter runs on every accepted connection, before any rate limit, so a list of 100 000 subnets
    must not make each accept slow."""

    networks: tuple[IPNetwork, ...] = ()
    countries: frozenset[str] = frozenset()
    _index: dict[tuple[int, int], frozenset[int]] = field(default_factory=dict, init=False, repr=False,
                                                          compare=False)  # fmt: skip

    def __post_init__(self) -> None:
        index: dict[tuple[int, int], set[int]] = {}
        for net in self.networks:
            index.setdefault((net.version, net.prefixlen), set()).add(int(net.network_address))
        self._index.update({key: frozenset(values) for key, values in index.items()})

    def __bool__(self) -> bool:
        return bool(self.networks or self.countries)

    def has_address(self, ip: IPAddress) -> bool:
        value, bits = int(ip), ip.max_prefixlen
        for (version, prefix), starts in self._index.items():
            if version == ip.version and (value >> (bits - prefix) << (bits - prefix)) in starts:
                return True
        return False

    def has_country(self, country: str | None) -> bool:
        return country is not None and country in self.countries

    def matches(self, ip: IPAddress, country: str | None) -> bool:
        return self.has_address(ip) or self.has_country(country)

    def union(self, other: AddressSet) -> AddressSet:
        return AddressSet(self.networks + other.networks, self.countries | other.countries)


@dataclass(frozen=True)
class IpFilter:
    groups: Mapping[str, AddressSet] = field(default_factory=dict)
    whitelist: AddressSet = AddressSet()
    blacklist: AddressSet = AddressSet()
    limits: Mapping[str, float] = field(default_factory=dict)  # group -> share of max connections, 0..1

    @property
    def uses_countries(self) -> bool:
        sets = [self.whitelist, self.blacklist, *(self.groups[name] for name in self.limits)]
        return any(s.countries for s in sets)

    def refusal(self, ip: IPAddress, country: str | None) -> str | None:
        """Why ``ip`` (in ``country``) may not connect, or None when it may (the rules in the module docstring)."""
        if self.blacklist.has_address(ip):
            return "blacklist"
        if self.whitelist.has_address(ip):
            return None
        if self.blacklist.has_country(country):
            return "blacklist country"
        if self.whitelist and not self.whitelist.has_country(country):
            return "not whitelisted"
        return None

    def limited_groups(self, ip: IPAddress, country: str | None) -> tuple[str, ...]:
        """The groups with a connection limit that ``ip`` belongs to."""
        return tuple(name for name in self.limits if self.groups[name].matches(ip, country))


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FilterError(f"{key}: {json.dumps(value)[:80]} is not a list of strings")
    return value


def _object(value: object, key: str, allowed: tuple[str, ...] | None) -> dict[str, object]:
    if not isinstance(value, dict):
        raise FilterError(f"{key}: {json.dumps(value)[:80]} is not an object")
    if allowed is not None:
        for name in value:
            if name not in allowed:
                raise FilterError(f"{key}.{name}: unknown key (expected {', '.join(allowed)})")
    return value


def _networks(value: object, key: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for text in _strings(value, key):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise FilterError(f"{key}: {text!r} is not an IP address or CIDR subnet") from None
    return tuple(out)


def _countries(value: object, key: str) -> frozenset[str]:
    out: set[str] = set()
    for text in _strings(value, key):
        if not _COUNTRY.fullmatch(text.strip()):
            raise FilterError(f"{key}: {text!r} is not a two-letter country code")
        out.add(text.strip().upper())
    return frozenset(out)


def _share(value: object, key: str) -> float:
    match = _SHARE.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, bool) or not (isinstance(value, int | float) or match):
        raise FilterError(f"{key}: {json.dumps(value)[:80]} is not a share like \"30%\"")
    percent = float(match.group(1)) if match else float(value)  # type: ignore[arg-type]
    if not 0 <= percent <= 100:
        raise FilterError(f"{key}: {json.dumps(value)} is not in 0..100 %")
    return percent / 100


def parse_filter(data: object) -> IpFilter:
    """The filter a decoded JSON document describes; FilterError naming the first bad key and value."""
    top = _object(data, "ip filter", _TOP_KEYS)
    groups: dict[str, AddressSet] = {}
    entries = 0
    for name, spec in _object(top.get("groups", {}), "groups", None).items():
        body = _object(spec, f"groups.{name}", _GROUP_KEYS)
        group = AddressSet(
            _networks(body.get("addresses", []), f"groups.{name}.addresses"),
            _countries(body.get("countries", []), f"groups.{name}.countries"),
        )
        entries += len(group.networks) + len(group.countries)
        groups[name] = group
    lists: dict[str, AddressSet] = {}
    for list_key in ("whitelist", "blacklist"):
        body = _object(top.get(list_key, {}), list_key, _LIST_KEYS)
        members = AddressSet(
            _networks(body.get("addresses", []), f"{list_key}.addresses"),
            _countries(body.get("countries", []), f"{list_key}.countries"),
        )
        entries += len(members.networks) + len(members.countries)
        for name in _strings(body.get("groups", []), f"{list_key}.groups"):
            if name not in groups:
                raise FilterError(f"{list_key}.groups: {name!r} is not a group defined under \"groups\"")
            members = members.union(groups[name])
        lists[list_key] = members
    limits: dict[str, float] = {}
    for name, share in _object(top.get("limit_groups", {}), "limit_groups", None).items():
        if name not in groups:
            raise FilterError(f"limit_groups.{name}: {name!r} is not a group defined under \"groups\"")
        limits[name] = _share(share, f"limit_groups.{name}")
    if entries > MAX_ENTRIES:
        raise FilterError(f"ip filter: {entries} addresses and countries, more than {MAX_ENTRIES}")
    return IpFilter(groups, lists["whitelist"], lists["blacklist"], limits)


def _country_keys(ip_filter: IpFilter) -> str:
    keys = [key for key, members in (("whitelist", ip_filter.whitelist), ("blacklist", ip_filter.blacklist))
            if members.countries]  # fmt: skip
    keys += [f"groups.{name}" for name in ip_filter.limits if ip_filter.groups[name].countries]
    return ", ".join(f"{key}.countries" for key in keys)


def load_filter(path: Path, *, have_geoip: bool) -> IpFilter:
    """Read and parse ``path``; FilterError (naming the file, key and value) when it is unusable."""
    try:
        # Re-read on SIGHUP inside the event loop: a FIFO or device here must be an error, not a hang.
        raw = read_regular_file(path, MAX_FILTER_BYTES)
    except UnreadableFileError as error:
        raise FilterError(f"{path}: cannot read it: {error}") from None
    if len(raw) > MAX_FILTER_BYTES:
        raise FilterError(f"{path}: larger than {MAX_FILTER_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise FilterError(f"{path}: not JSON: {error}") from None
    try:
        ip_filter = parse_filter(data)
    except FilterError as error:
        raise FilterError(f"{path}: {error}") from None
    if ip_filter.uses_countries and not have_geoip:
        raise FilterError(f"{path}: {_country_keys(ip_filter)} names countries, and there is no --geoip-db to "
                          "resolve them")  # fmt: skip
    return ip_filter


def open_geoip(path: Path) -> CountryLookup:
    """A lookup over the MaxMind DB at ``path`` (GeoIP2/GeoLite2 Country or City layout: ``country.iso_code``,
    else ``registered_country.iso_code``). The file is read into memory once; FilterError when it is unusable."""
    import maxminddb  # noqa: PLC0415 - only nodes with a database need the library loaded

    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_MEMORY)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as error:
        raise FilterError(f"--geoip-db {path}: not a usable MaxMind DB: {error}") from None

    def country(ip: IPAddress) -> str | None:
        try:
            record = reader.get(ip)
        except (ValueError, maxminddb.InvalidDatabaseError):  # an IPv6 address in an IPv4-only database
            return None
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            entry = record.get(key)
            code = entry.get("iso_code") if isinstance(entry, dict) else None
            if isinstance(code, str):
                return code.upper()
        return None

    return country
