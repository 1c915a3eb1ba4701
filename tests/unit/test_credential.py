"""Credentials (swarmcast/credential.py): what verifies, and every way one must not."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmcast.credential import (
    CLOCK_SKEW,
    MIN_CREDENTIAL_SIZE,
    CredentialError,
    CredentialFault,
    CredentialIssuer,
    CredentialRole,
    CredentialVerifier,
    decode_credential,
    make_credential,
)
from swarmcast.transport import public_key_bytes
from swarmcast.wire.messages import MAX_CREDENTIAL_SIZE

KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
CONTENT = bytes(range(1, 21))
VERIFIER = CredentialVerifier(public_key_bytes(KEY), CONTENT)


def support(ip: str = "192.0.2.7", port: int = 8621, expires: int = 1000, role: CredentialRole = CredentialRole.SUPPORT,
            key: Ed25519PrivateKey = KEY, content_id: bytes = CONTENT) -> bytes:  # fmt: skip
    return make_credential(key, role=role, content_id=content_id, ip=ip, port=port, expires=expires)


def fault(data: bytes, **kwargs: object) -> CredentialFault:
    args: dict[str, object] = {"now": 500.0, "remote_ip": "192.0.2.7", "listen_port": 8621, **kwargs}
    with pytest.raises(CredentialError) as info:
        VERIFIER.verify(data, **args)  # type: ignore[arg-type]
    return info.value.fault


def test_valid_credential_verifies() -> None:
    credential = VERIFIER.verify(support(), now=500.0, remote_ip="192.0.2.7", listen_port=8621)
    assert (credential.role, credential.ip, credential.port, credential.expires) == (
        CredentialRole.SUPPORT, "192.0.2.7", 8621, 1000,
    )  # fmt: skip
    assert len(support()) == MIN_CREDENTIAL_SIZE == 101
    assert len(support(ip="2001:db8::1")) == MAX_CREDENTIAL_SIZE == 113


def test_port_zero_means_any_listen_port_and_mapped_addresses_match() -> None:
    data = support(port=0)
    assert VERIFIER.verify(data, now=0, remote_ip="192.0.2.7", listen_port=1).port == 0
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
    assert VERIFIER.verify(data, now=0, remote_ip="::ffff:192.0.2.7", listen_port=9).ip == "192.0.2.7"


def test_wrong_key_is_a_bad_signature() -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    assert fault(support(key=other)) is CredentialFault.BAD_SIGNATURE


def test_any_changed_byte_breaks_the_signature() -> None:
    data = bytearray(support())
    data[25] ^= 1  # inside the expiry: a holder cannot extend its own credential
    assert fault(bytes(data)) is CredentialFault.BAD_SIGNATURE


def test_wrong_ip_is_refused() -> None:
    assert fault(support(), remote_ip="192.0.2.8") is CredentialFault.WRONG_ADDRESS
    assert fault(support(), remote_ip="not an ip") is CredentialFault.WRONG_ADDRESS


def test_wrong_listen_port_is_refused() -> None:
    assert fault(support(port=8621), listen_port=8622) is CredentialFault.WRONG_ADDRESS


def test_expired_is_refused_after_the_skew_allowance() -> None:
    assert VERIFIER.verify(support(expires=1000), now=1000 + CLOCK_SKEW - 1, remote_ip="192.0.2.7", listen_port=8621)
    assert fault(support(expires=1000), now=1000 + CLOCK_SKEW) is CredentialFault.EXPIRED


def test_wrong_content_id_is_refused() -> None:
    assert fault(support(content_id=b"\xee" * 20)) is CredentialFault.WRONG_CONTENT


def test_wrong_role_is_refused() -> None:
    data = support(role=CredentialRole.SOURCE)
    assert fault(data, roles=frozenset({CredentialRole.SUPPORT})) is CredentialFault.WRONG_ROLE
    assert VERIFIER.verify(data, now=0, remote_ip="192.0.2.7", listen_port=8621).role is CredentialRole.SOURCE


@pytest.mark.parametrize("cut", [0, 1, 30, 100])
def test_truncated_is_malformed(cut: int) -> None:
    assert fault(support()[:cut]) is CredentialFault.MALFORMED


def test_bad_fields_are_malformed() -> None:
    good = support()
    for offset, value in ((0, 2), (1, 0), (1, 3), (30, 5), (30, 6)):  # version, role, role, family, family
        data = bytearray(good)
        data[offset] = value
        assert fault(bytes(data)) is CredentialFault.MALFORMED
    assert fault(good + b"\x00") is CredentialFault.MALFORMED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_CREDENTIAL_SIZE + 8))
def test_any_bytes_give_only_our_error(data: bytes) -> None:
    try:
        decode_credential(data)
        VERIFIER.check_signature(data)
    except CredentialError:
        pass


def test_issuer_grants_only_listed_addresses_and_caches() -> None:
    issuer = CredentialIssuer(KEY, CONTENT, support_nodes=(("192.0.2.7", 8621), ("192.0.2.9", 0)), lifetime=100)
    assert issuer.grant_for("192.0.2.8", 8621, 0) is None
    assert issuer.grant_for("192.0.2.7", 8622, 0) is None
    grant = issuer.grant_for("192.0.2.7", 8621, 0)
    assert grant is not None
    assert decode_credential(grant).port == 8621
    any_port = issuer.grant_for("192.0.2.9", 4000, 0)
    assert any_port is not None and decode_credential(any_port).port == 0
    assert issuer.grant_for("192.0.2.7", 8621, 49) == grant  # more than half its life left: the same bytes
    refreshed = issuer.grant_for("192.0.2.7", 8621, 51)
    assert refreshed != grant and decode_credential(refreshed or b"").expires == 151


def test_issuer_source_credential_names_the_local_address() -> None:
    issuer = CredentialIssuer(KEY, CONTENT)
    data = issuer.own_credential("198.51.100.1", 0)
    assert data is not None
    assert VERIFIER.verify(data, now=0, remote_ip="198.51.100.1", listen_port=7764).role is CredentialRole.SOURCE
    assert issuer.own_credential("0.0.0.0", 0) is None
    assert issuer.own_credential("", 0) is None


def test_documented_example() -> None:
    """The example in docs/protocol.md §19, byte for byte."""
    from swarmcast.wire.codec import FrameDecoder, encode_message
    from swarmcast.wire.messages import CredentialKind, CredentialMessage

    data = support(ip="192.0.2.7", port=8621, expires=1767225600)
    frame = encode_message(CredentialMessage(CredentialKind.PRESENT, data))
    expected = bytes.fromhex(
        "00000067 0f 00 01 02 0102030405060708090a0b0c0d0e0f1011121314 000000006955b900 04c0000207 21ad"
        "159cb484bced4946bb464d8884fd22e97fe70a34cb1dd7bd6a413d7a6af8f544"
        "f9596e7e281c2cbe0a4bdd3dd2cede39000718fbafbf72c38688950c0f940b00"
    )
    assert frame == expected
    assert FrameDecoder().feed(frame) == [CredentialMessage(CredentialKind.PRESENT, data)]
    assert VERIFIER.verify(data, now=1767225600 - 1, remote_ip="192.0.2.7", listen_port=8621).port == 8621


def test_support_node_flag_and_credential_url() -> None:
    import argparse

    from swarmcast.commands.node import support_node
    from swarmcast.node.credentials import credential_url

    assert support_node("192.0.2.7") == ("192.0.2.7", 0)
    assert support_node("192.0.2.7:8621") == ("192.0.2.7", 8621)
    assert support_node("[2001:db8::1]:8621") == ("2001:db8::1", 8621)
    assert support_node("2001:db8::1") == ("2001:db8::1", 0)
    for bad in ("node.example:8621", "192.0.2.7:99999", "", "[::1]x"):
        with pytest.raises(argparse.ArgumentTypeError):
            support_node(bad)
    assert credential_url("http://192.0.2.1:7764/app/TOK/get_transport_file?format=raw", 8621) == (
        "http://192.0.2.1:7764/app/TOK/get_credential?port=8621"
    )
    assert credential_url("http://192.0.2.1:7764/app/get_transport_file?format=raw", 8621) is None
    assert credential_url("/tmp/x.acelive", 8621) is None
