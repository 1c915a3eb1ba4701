"""Magnet links and content ids from the engine API: a 20-byte id or JoinError, never anything else."""

from __future__ import annotations

import pytest

from swarmcast.node.joiner import MAX_MAGNET_CHARS, MAX_MAGNET_TRACKERS, JoinError, parse_content_id, parse_magnet

CONTENT_ID = bytes(range(20))
HEX = CONTENT_ID.hex()


def test_magnet_with_hex_and_base32_ids() -> None:
    assert parse_magnet(f"magnet:?xt=urn:btih:{HEX}&tr=http%3A%2F%2Ft%2Fannounce") == (CONTENT_ID, ("http://t/announce",))
    assert parse_magnet("magnet:?xt=urn:btih:AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT")[0] == CONTENT_ID
    assert parse_content_id(f"  {HEX.upper()} ") == CONTENT_ID


# Each was found by fuzzing (bench/fuzz.py --target magnet) and escaped as something else before.
@pytest.mark.parametrize(
    "text",
    [
        "//[",  # urlsplit raised ValueError("Invalid IPv6 URL"): the engine answered 500
        "magnet://[x?xt=urn:btih:" + HEX,
        "magnet:?" + "a=1&" * 100,  # more fields than we parse
        "magnet:?xt=urn:btih:" + HEX + "x" * MAX_MAGNET_CHARS,
    ],
)
def test_bad_magnets_are_join_errors(text: str) -> None:
    with pytest.raises(JoinError):
        parse_magnet(text)


@pytest.mark.parametrize(
    "text",
    [
        "00000000 " * 4 + "0000",  # bytes.fromhex skips spaces: this gave an 18-byte content id
        "A" * 29 + "===",  # b32decode takes padding: also 18 bytes
        "\u0660" * 40,  # Arabic-Indic digits are not hex digits
        "+0" * 20,
    ],
)
def test_content_ids_that_are_not_20_bytes_are_refused(text: str) -> None:
    with pytest.raises(JoinError):
        parse_content_id(text)
    with pytest.raises(JoinError):
        parse_magnet("magnet:?xt=urn:btih:" + text.replace(" ", "%20").replace("+", "%2B"))


def test_trackers_are_capped() -> None:
    magnet = f"magnet:?xt=urn:btih:{HEX}" + "".join(f"&tr=http://t{i}/announce" for i in range(40))
    assert len(parse_magnet(magnet)[1]) == MAX_MAGNET_TRACKERS
