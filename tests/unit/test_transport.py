"""The transport file: descriptor encoding, content id, decode errors, the key file and piece signatures."""

from __future__ import annotations

import hashlib
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from swarmcast import bencoding
from swarmcast.transport import (
    CATEGORIES,
    FORMAT_VERSION,
    QUALITIES,
    SIGNATURE_SCHEME,
    Descriptor,
    PieceVerifier,
    TransportError,
    load_or_create_key,
    public_key_bytes,
    sign_piece,
)
from swarmcast.wire.messages import MAX_METADATA_SIZE, MAX_PIECE_SIZE, PieceFlags

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = public_key_bytes(KEY)

GOOD = Descriptor(
    name="news",
    title="News 24",
    piece_size=188 * 512,
    bitrate=500_000,
    public_key=PUBLIC,
    quality="HD",
    categories=("informational", "regional"),
    trackers=("http://tracker.example:6969/announce", "udp://tracker.example:6969"),
    provider_key="provider",
)

text = st.text(max_size=40)
descriptors = st.builds(
    Descriptor,
    name=text,
    title=text,
    piece_size=st.integers(min_value=188, max_value=MAX_PIECE_SIZE),
    bitrate=st.integers(min_value=0, max_value=2**40),
    public_key=st.binary(min_size=32, max_size=32),
    quality=st.sampled_from(QUALITIES),
    categories=st.lists(st.sampled_from(CATEGORIES), max_size=4, unique=True).map(tuple),
    trackers=st.lists(text, max_size=4).map(tuple),
    provider_key=text,
    content_type=st.just("video/mp2t"),
)


def fields_of(descriptor: Descriptor) -> dict[bytes, object]:
    decoded = bencoding.decode(descriptor.encode(), max_size=MAX_METADATA_SIZE)
    assert isinstance(decoded, dict)
    return decoded


def encoded(fields: dict[bytes, object]) -> bytes:
    return bencoding.encode(fields)


def decode_error(data: bytes) -> str:
    with pytest.raises(TransportError) as info:
        Descriptor.decode(data)
    return str(info.value)


# -- encoding and content id ---------------------------------------------------------------------------------------


@given(descriptors)
def test_round_trip(descriptor: Descriptor) -> None:
    data = descriptor.encode()
    decoded = Descriptor.decode(data)
    assert decoded == descriptor
    assert decoded.encode() == data
    assert decoded.content_id == descriptor.content_id


@given(descriptors)
def test_content_id_is_sha1_of_the_file(descriptor: Descriptor) -> None:
    data = descriptor.encode()
    assert descriptor.content_id == hashlib.sha1(data).digest()
    assert descriptor.infohash == hashlib.sha1(data).hexdigest()
    assert len(descriptor.content_id) == 20


def test_encoding_is_canonical_bencoding() -> None:
    data = GOOD.encode()
    fields = fields_of(GOOD)
    assert list(fields) == sorted(fields)  # keys in sorted order, as BEP 3 requires
    assert encoded(fields) == data
    assert fields == {
        b"bitrate": 500_000,
        b"categories": [b"informational", b"regional"],
        b"content_type": b"video/mp2t",
        b"name": b"news",
        b"piece_size": 188 * 512,
        b"provider_key": b"provider",
        b"public_key": PUBLIC,
        b"quality": b"HD",
        b"signature": SIGNATURE_SCHEME.encode(),
        b"swarmcast": FORMAT_VERSION,
        b"title": b"News 24",
        b"trackers": [b"http://tracker.example:6969/announce", b"udp://tracker.example:6969"],
    }


def test_empty_provider_key_is_left_out() -> None:
    descriptor = Descriptor(name="n", title="t", piece_size=188, bitrate=1, public_key=PUBLIC)
    assert b"provider_key" not in fields_of(descriptor)
    assert Descriptor.decode(descriptor.encode()).provider_key == ""


def test_any_field_changes_the_content_id() -> None:
    variants = [
        Descriptor(**{**GOOD.__dict__, "title": "News 25"}),
        Descriptor(**{**GOOD.__dict__, "bitrate": 500_001}),
        Descriptor(**{**GOOD.__dict__, "trackers": ()}),
    ]
    assert len({GOOD.content_id, *(v.content_id for v in variants)}) == 4


def test_documented_example() -> None:
    """The example transport file in docs/protocol.md §11."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    descriptor = Descriptor(
        name="news",
        title="News",
        piece_size=94000,
        bitrate=500_000,
        public_key=public_key_bytes(key),
        categories=("sport",),
        trackers=("udp://t.example:6969",),
    )
    data = descriptor.encode()
    assert len(data) == 244
    assert data.startswith(b"d7:bitratei500000e10:categoriesl5:sporte12:content_type10:video/mp2t4:name4:news")
    assert data.endswith(b"7:quality2:SD9:signature7:ed255199:swarmcasti1e5:title4:News8:trackersl20:udp://t.example:6969ee")
    assert descriptor.infohash == "57a11de417129760044f8c302c0dfab9c2dccb2e"


# -- decode errors -------------------------------------------------------------------------------------------------

REQUIRED = [
    "swarmcast",
    "signature",
    "name",
    "title",
    "piece_size",
    "bitrate",
    "public_key",
    "quality",
    "categories",
    "trackers",
    "content_type",
]


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_key_is_named(key: str) -> None:
    fields = fields_of(GOOD)
    del fields[key.encode()]
    message = decode_error(encoded(fields))
    assert repr(key) in message
    assert "lacks" in message


WRONG_TYPES: list[tuple[str, object]] = [
    ("swarmcast", b"1"),
    ("swarmcast", -1),
    ("signature", 1),
    ("name", 5),
    ("name", [b"x"]),
    ("title", {b"a": 1}),
    ("piece_size", b"94208"),
    ("piece_size", -188),
    ("bitrate", b"fast"),
    ("bitrate", -1),
    ("public_key", 7),
    ("quality", [b"HD"]),
    ("categories", b"sport"),
    ("categories", [1]),
    ("trackers", b"http://x/announce"),
    ("trackers", [[b"http://x/announce"]]),
    ("provider_key", 3),
    ("content_type", 0),
    ("name", b"\xff\xfe"),
    ("trackers", [b"\xff"]),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES, ids=[f"{k}={v!r}" for k, v in WRONG_TYPES])
def test_wrong_type_is_named(key: str, value: object) -> None:
    fields = fields_of(GOOD)
    fields[key.encode()] = value
    assert repr(key) in decode_error(encoded(fields))


@pytest.mark.parametrize(("key", "value"), [("swarmcast", 2), ("signature", b"rsa")])
def test_unsupported_version_or_scheme_is_named(key: str, value: object) -> None:
    fields = fields_of(GOOD)
    fields[key.encode()] = value
    assert repr(key) in decode_error(encoded(fields))


@pytest.mark.parametrize("size", [0, 187, MAX_PIECE_SIZE + 1, 2**40])
def test_bad_piece_size(size: int) -> None:
    fields = fields_of(GOOD)
    fields[b"piece_size"] = size
    assert "'piece_size'" in decode_error(encoded(fields))


@pytest.mark.parametrize("size", [188, MAX_PIECE_SIZE])
def test_piece_size_bounds_accepted(size: int) -> None:
    descriptor = Descriptor(**{**GOOD.__dict__, "piece_size": size})
    assert Descriptor.decode(descriptor.encode()).piece_size == size


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_bad_key_length(length: int) -> None:
    fields = fields_of(GOOD)
    fields[b"public_key"] = b"k" * length
    assert "'public_key'" in decode_error(encoded(fields))


def test_extra_key_is_refused() -> None:
    fields = fields_of(GOOD)
    fields[b"zzz_extra"] = b"surprise"
    assert "unknown key" in decode_error(encoded(fields))


def test_extra_key_is_named() -> None:
    fields = fields_of(GOOD)
    fields[b"zzz_extra"] = b"surprise"
    assert "zzz_extra" in decode_error(encoded(fields))


def test_unsorted_keys_are_not_canonical() -> None:
    data = GOOD.encode()
    fields = fields_of(GOOD)
    # Same dictionary, keys written in reverse order: bencoding accepts it, but it would hash to another id.
    body = b"".join(encoded({k: v})[1:-1] for k, v in reversed(list(fields.items())))
    unsorted = b"d" + body + b"e"
    assert unsorted != data
    assert bencoding.decode(unsorted, max_size=MAX_METADATA_SIZE, sorted_keys=False) == fields
    assert "canonical" in decode_error(unsorted)


@pytest.mark.parametrize(
    "data",
    [b"", b"not bencoding", b"d4:name", b"i1", b"d1:ai1ee trailing", b"l" * 2000, b"\x00" * 10],
    ids=["empty", "text", "truncated", "bad-int", "trailing", "deep", "zeros"],
)
def test_not_bencoding(data: bytes) -> None:
    assert decode_error(data)


@pytest.mark.parametrize("data", [b"i1e", b"4:spam", b"le"], ids=["int", "string", "list"])
def test_not_a_dictionary(data: bytes) -> None:
    assert "dictionary" in decode_error(data)


def test_too_large() -> None:
    fields = fields_of(GOOD)
    fields[b"title"] = b"t" * MAX_METADATA_SIZE
    data = encoded(fields)
    message = decode_error(data)
    assert str(len(data)) in message
    assert str(MAX_METADATA_SIZE) in message


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_transport_error(data: bytes) -> None:
    try:
        Descriptor.decode(data)
    except TransportError:
        return


# -- key file ------------------------------------------------------------------------------------------------------


def test_key_file_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "news.sauth"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    before = path.read_bytes()
    again = load_or_create_key(path)
    assert path.read_bytes() == before
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    assert again.private_bytes(*raw) == key.private_bytes(*raw)
    assert public_key_bytes(again) == public_key_bytes(key)
    assert len(public_key_bytes(key)) == 32


def test_key_file_with_another_key_type(tmp_path: Path) -> None:
    path = tmp_path / "wrong.sauth"
    other = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(TransportError, match="Ed25519"):
        load_or_create_key(path)


# -- piece signatures ----------------------------------------------------------------------------------------------

CID = GOOD.content_id
flag_values = st.integers(min_value=0, max_value=3).map(PieceFlags)


@given(index=st.integers(min_value=0, max_value=2**63 - 1), flags=flag_values, data=st.binary(min_size=1, max_size=512))
def test_signature_verifies_over_the_documented_bytes(index: int, flags: PieceFlags, data: bytes) -> None:
    signature = sign_piece(KEY, CID, index, flags, data)
    assert len(signature) == 64
    assert PieceVerifier(PUBLIC, CID).verify(index, flags, data, signature)
    # Exactly what docs/protocol.md says is signed.
    signed = b"swarmcast piece v1\x00" + CID + struct.pack(">QB", index, int(flags)) + data
    KEY.public_key().verify(signature, signed)


@given(
    index=st.integers(min_value=0, max_value=2**62),
    flags=flag_values,
    data=st.binary(min_size=1, max_size=256),
    position=st.integers(min_value=0),
    other_flags=flag_values,
    bit=st.integers(min_value=0, max_value=7),
)
def test_signature_fails_on_any_change(
    index: int, flags: PieceFlags, data: bytes, position: int, other_flags: PieceFlags, bit: int
) -> None:
    signature = sign_piece(KEY, CID, index, flags, data)
    verifier = PieceVerifier(PUBLIC, CID)
    assert not verifier.verify(index + 1, flags, data, signature)
    if other_flags != flags:
        assert not verifier.verify(index, other_flags, data, signature)
    flipped = bytearray(data)
    flipped[position % len(data)] ^= 1 << bit
    assert not verifier.verify(index, flags, bytes(flipped), signature)
    assert not verifier.verify(index, flags, data + b"\x00", signature)
    assert not verifier.verify(index, flags, data[:-1], signature)
    other_cid = bytes([CID[0] ^ 1]) + CID[1:]
    assert not PieceVerifier(PUBLIC, other_cid).verify(index, flags, data, signature)
    bad_signature = bytearray(signature)
    bad_signature[position % 64] ^= 1 << bit
    assert not verifier.verify(index, flags, data, bytes(bad_signature))


def test_signature_from_another_key_fails() -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    signature = sign_piece(other, CID, 5, PieceFlags.RANDOM_ACCESS, b"data")
    assert not PieceVerifier(PUBLIC, CID).verify(5, PieceFlags.RANDOM_ACCESS, b"data", signature)
    assert PieceVerifier(public_key_bytes(other), CID).verify(5, PieceFlags.RANDOM_ACCESS, b"data", signature)
