"""The ip filter file (node/ipfilter.py): parsing, the rules, countries through a test MaxMind DB, bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from swarmcast.node.access import AccessPolicy
from swarmcast.node.ipfilter import FilterError, IpFilter, load_filter, open_geoip, parse_filter, parse_ip
from tests.mmdb import write_country_db


def refusal(ip_filter: IpFilter, ip: str, country: str | None = None) -> str | None:
    return ip_filter.refusal(parse_ip(ip), country)


def test_blacklist_subnets_v4_and_v6() -> None:
    f = parse_filter({"blacklist": {"addresses": ["203.0.113.0/24", "198.51.100.7", "2001:db8::/32"]}})
    assert refusal(f, "203.0.113.99") == "blacklist"
    assert refusal(f, "198.51.100.7") == "blacklist"
    assert refusal(f, "198.51.100.8") is None
    assert refusal(f, "2001:db8:1::5") == "blacklist"
    assert refusal(f, "2001:db9::1") is None
    assert refusal(f, "::ffff:203.0.113.5") == "blacklist"  # a dual-stack socket's view of an IPv4 peer


def test_any_prefix_length_and_host_bits_masked() -> None:
    f = parse_filter({"blacklist": {"addresses": ["10.1.2.3/9", "fe80::1/10", "192.0.2.128/25"]}})
    assert refusal(f, "10.127.0.1") == "blacklist"
    assert refusal(f, "10.128.0.1") is None
    assert refusal(f, "192.0.2.200") == "blacklist"
    assert refusal(f, "192.0.2.100") is None
    assert refusal(f, "febf::1") == "blacklist"


def test_whitelist_admits_nothing_else() -> None:
    f = parse_filter({"whitelist": {"addresses": ["127.0.0.0/30"]}})
    assert refusal(f, "127.0.0.2") is None
    assert refusal(f, "127.0.0.5") == "not whitelisted"
    assert refusal(f, "::1") == "not whitelisted"


def test_groups_feed_the_lists_and_addresses_beat_countries() -> None:
    f = parse_filter({
        "groups": {"ua": {"countries": ["ua"]}, "bad": {"addresses": ["10.0.0.0/8"]}},
        "whitelist": {"groups": ["ua"], "addresses": ["192.0.2.1"]},
        "blacklist": {"groups": ["bad"], "countries": ["RU"]},
    })
    assert refusal(f, "1.1.1.1", "UA") is None  # whitelisted country (codes are case-insensitive)
    assert refusal(f, "10.0.0.1", "UA") == "blacklist"  # a blacklisted subnet inside a whitelisted country
    assert refusal(f, "192.0.2.1", "RU") is None  # a whitelisted host inside a blacklisted country
    assert refusal(f, "1.1.1.1", "RU") == "blacklist country"
    assert refusal(f, "1.1.1.1", "PL") == "not whitelisted"
    assert refusal(f, "1.1.1.1", None) == "not whitelisted"  # a whitelist of countries admits no unknown address


def test_limit_groups_shares() -> None:
    f = parse_filter({"groups": {"a": {"addresses": ["10.0.0.0/8"]}, "b": {"addresses": ["10.1.0.0/16"]}},
                      "limit_groups": {"a": "30%", "b": 5}})  # fmt: skip
    assert f.limits == {"a": 0.3, "b": 0.05}
    assert f.limited_groups(parse_ip("10.1.2.3"), None) == ("a", "b")
    assert f.limited_groups(parse_ip("10.2.2.3"), None) == ("a",)
    assert f.limited_groups(parse_ip("11.0.0.1"), None) == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"blacklist": {"addresses": ["10.0.0.300"]}}, "blacklist.addresses: '10.0.0.300' is not an IP address"),
        ({"blacklist": {"addresses": "10.0.0.1"}}, 'blacklist.addresses: "10.0.0.1" is not a list of strings'),
        ({"whitelist": {"countries": ["Ukraine"]}}, "whitelist.countries: 'Ukraine' is not a two-letter country"),
        ({"whitelist": {"groups": ["nope"]}}, "whitelist.groups: 'nope' is not a group"),
        ({"limit_groups": {"nope": "10%"}}, "limit_groups.nope: 'nope' is not a group"),
        ({"groups": {"g": {}}, "limit_groups": {"g": "130%"}}, 'limit_groups.g: "130%" is not in 0..100 %'),
        ({"groups": {"g": {}}, "limit_groups": {"g": "many"}}, 'limit_groups.g: "many" is not a share'),
        ({"groups": {"g": {"hosts": []}}}, "groups.g.hosts: unknown key"),
        ({"whitelits": {}}, "ip filter.whitelits: unknown key"),
        ([], "ip filter: [] is not an object"),
    ],
)
def test_bad_documents_name_the_key_and_value(document: object, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filter(document)
    assert message in str(raised.value)


def test_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "filter.json"
    with pytest.raises(FilterError, match="cannot read it"):
        load_filter(path, have_geoip=False)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # re-read on SIGHUP in the event loop: opening it must not wait for a writer
    with pytest.raises(FilterError, match="not a regular file"):
        load_filter(fifo, have_geoip=False)
    path.write_text("{not json")
    with pytest.raises(FilterError, match="not JSON"):
        load_filter(path, have_geoip=False)
    path.write_text(json.dumps({"blacklist": {"addresses": ["x"]}}))
    with pytest.raises(FilterError, match=r"filter\.json: blacklist\.addresses: 'x'"):
        load_filter(path, have_geoip=False)
    # Countries without a database are refused at start, naming the key.
    path.write_text(json.dumps({"whitelist": {"countries": ["UA"]}}))
    with pytest.raises(FilterError, match=r"whitelist\.countries names countries, and there is no --geoip-db"):
        load_filter(path, have_geoip=False)
    assert load_filter(path, have_geoip=True).whitelist.countries == {"UA"}
    bad_db = tmp_path / "bad.mmdb"
    bad_db.write_bytes(b"not a database")
    with pytest.raises(FilterError, match=r"--geoip-db .*bad\.mmdb: not a usable MaxMind DB"):
        open_geoip(bad_db)


def test_countries_through_a_test_database(tmp_path: Path) -> None:
    db = write_country_db(tmp_path / "countries.mmdb", {
        "127.0.0.0/24": "PL", "127.0.0.2/32": "UA", "2001:db8::/32": "FR",
    })  # fmt: skip
    lookup = open_geoip(db)
    assert lookup(parse_ip("127.0.0.2")) == "UA"
    assert lookup(parse_ip("127.0.0.9")) == "PL"
    assert lookup(parse_ip("2001:db8::1")) == "FR"
    assert lookup(parse_ip("192.0.2.1")) is None
    ip_filter = parse_filter({"whitelist": {"countries": ["PL", "FR"]}, "blacklist": {"addresses": ["127.0.0.9"]}})
    policy = AccessPolicy(ip_filter=ip_filter, countries=lookup)
    assert policy.admit("127.0.0.5").admitted  # PL
    assert policy.admit("::ffff:127.0.0.6").admitted  # PL, seen through a dual-stack socket
    assert policy.admit("2001:db8::7").admitted  # FR over IPv6
    assert policy.admit("127.0.0.2").reason == "not whitelisted"  # UA
    assert policy.admit("192.0.2.1").reason == "not whitelisted"  # not in the database
    assert policy.admit("127.0.0.9").reason == "blacklist"
    assert policy.rejected == {"not whitelisted": 2, "blacklist": 1}


def test_prefix_lengths_from_0_to_full() -> None:
    f = parse_filter({"blacklist": {"addresses": ["0.0.0.0/0", "::/0"]}, "whitelist": {"addresses": [
        "198.51.100.7/32", "2001:db8::1/128", "10.0.0.0/31"]}})  # fmt: skip
    assert refusal(f, "1.2.3.4") == "blacklist"
    assert refusal(f, "2001:db8::2") == "blacklist"
    f = parse_filter({"whitelist": {"addresses": ["198.51.100.7/32", "2001:db8::1/128", "10.0.0.0/31"]}})
    assert [refusal(f, ip) for ip in ("198.51.100.7", "2001:db8::1", "10.0.0.1", "10.0.0.2")] == [
        None, None, None, "not whitelisted"]  # fmt: skip
    big = parse_filter({"blacklist": {"addresses": [f"11.{i // 256}.{i % 256}.0/24" for i in range(50_000)]}})
    assert refusal(big, "11.100.7.9") == "blacklist" and refusal(big, "12.0.0.1") is None
