"""Our bencode decoder and encoder: BEP 3 values, canonical form, limits, and only BencodeError out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmcast.bencoding import MAX_DEPTH, MAX_INT_DIGITS, BencodeError, decode, encode

BIG = 1 << 20

values = st.recursive(
    st.integers(min_value=-(10**19), max_value=10**19) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=8), children, max_size=5),
    max_leaves=30,
)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i-42e", -42),
        (b"i18446744073709551615e", 2**64 - 1),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"le", []),
        (b"l4:spami42ee", [b"spam", 42]),
        (b"de", {}),
        (b"d3:bar4:spam3:fooi42ee", {b"bar": b"spam", b"foo": 42}),
        (b"d1:ad1:bl1:cleeee", {b"a": {b"b": [b"c", []]}}),
    ],
)
def test_decodes_bep3_examples(data: bytes, value: object) -> None:
    assert decode(data, max_size=BIG) == value
    assert encode(value) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"i", "without 'e'"),
        (b"i-0e", "bad integer"),
        (b"i03e", "bad integer"),
        (b"ie", "bad integer"),
        (b"i-e", "bad integer"),
        (b"i1.5e", "bad integer"),
        (b"i" + b"1" * (MAX_INT_DIGITS + 1) + b"e", "bad integer"),
        (b"i" + b"1" * (MAX_INT_DIGITS + 2) + b"e", "without 'e'"),
        (b"01:a", "bad byte-string length"),
        (b"5:abc", "runs past the end"),
        (b"99999999999:", "without ':'"),
        (b"l", "truncated"),
        (b"li1e", "truncated"),
        (b"d1:a", "truncated"),
        (b"d1:ae", "without a value"),
        (b"di1ei2ee", "not a byte string"),
        (b"d1:b0:1:a0:e", "out of canonical order"),
        (b"d1:a0:1:a0:e", "duplicate"),
        (b"e", "closes nothing"),
        (b"i1ei2e", "trailing"),
        (b"x", "unexpected byte"),
    ],
)
def test_refuses_malformed_and_non_canonical(data: bytes, reason: str) -> None:
    with pytest.raises(BencodeError, match=reason):
        decode(data, max_size=BIG)


def test_unsorted_keys_are_accepted_only_when_asked() -> None:
    assert decode(b"d1:b0:1:a0:e", max_size=BIG, sorted_keys=False) == {b"a": b"", b"b": b""}
    with pytest.raises(BencodeError, match="duplicate"):
        decode(b"d1:a0:1:b0:1:a0:e", max_size=BIG, sorted_keys=False)


def test_integer_digit_limit() -> None:
    assert decode(b"i" + b"9" * MAX_INT_DIGITS + b"e", max_size=BIG) == 10**MAX_INT_DIGITS - 1
    assert decode(b"i-" + b"9" * MAX_INT_DIGITS + b"e", max_size=BIG) == -(10**MAX_INT_DIGITS - 1)


def test_depth_limit() -> None:
    assert decode(b"l" * MAX_DEPTH + b"e" * MAX_DEPTH, max_size=BIG) is not None
    with pytest.raises(BencodeError, match="nesting deeper"):
        decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1), max_size=BIG)
    with pytest.raises(ValueError, match="nesting deeper"):
        encode(nested(MAX_DEPTH + 1))


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(BencodeError, match="exceeds 10"):
        decode(b"0:" + b"x" * 20, max_size=10)


def test_accepts_bytearray_and_memoryview_refuses_text() -> None:
    assert decode(bytearray(b"i7e"), max_size=BIG) == 7
    assert decode(memoryview(b"i7e"), max_size=BIG) == 7
    with pytest.raises(BencodeError):
        decode("i7e", max_size=BIG)  # type: ignore[arg-type]


def test_encoder_canonicalises_and_refuses_what_has_no_encoding() -> None:
    assert encode({"b": "é", b"a": (1, 2)}) == b"d1:ali1ei2ee1:b2:\xc3\xa9e"
    for bad in (True, 1.5, None, {1: b""}):
        with pytest.raises(TypeError):
            encode(bad)
    with pytest.raises(ValueError, match="same"):
        encode({"a": 1, b"a": 2})


@given(values)
def test_round_trip(value: object) -> None:
    data = encode(value)
    assert decode(data, max_size=BIG) == value
    assert encode(decode(data, max_size=BIG)) == data
