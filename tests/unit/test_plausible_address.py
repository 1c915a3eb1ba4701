"""``plausible_address``'s own dotted-quad check decides as ``ipaddress`` does (swarm/dialer.py)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from swarmcast.swarm.dialer import plausible_address


def _by_ipaddress(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or ip.is_reserved)


_octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["", "01", "00", "1a", "٣", "-1", " 1", "0x1"]))


@given(st.lists(_octet, min_size=3, max_size=5).map(".".join))
def test_dotted_quads_decided_as_ipaddress_decides(host: str) -> None:
    assert plausible_address((host, 7764)) is _by_ipaddress(host)


def test_the_edges() -> None:
    for host, expected in [("0.0.0.0", False), ("0.0.0.1", True), ("223.255.255.255", True), ("224.0.0.1", False),
                           ("240.0.0.1", False), ("255.255.255.255", False), ("10.0.0.1", True), ("2001:db8::1", True),
                           ("ff02::1", False), ("1.2.3", False), ("01.2.3.4", False)]:  # fmt: skip
        assert plausible_address((host, 1)) is expected, host
