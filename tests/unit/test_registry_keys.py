"""The registry's key file and the sealing of broadcast keys (registry/keys.py): no sockets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from swarmcast.registry.keys import KeyBox, KeyFileError, SealError, load_or_create

SAUTH = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPjJ3G1n0Yv5example0key00\n-----END PRIVATE KEY-----\n"


def test_a_missing_key_file_is_created_0600_and_read_back_as_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "state" / "registry.key"
    first = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("swarmcast-registry-key-v1 ")
    again = load_or_create(path)
    assert again.key_id == first.key_id
    assert again.open("ch1", first.seal("ch1", SAUTH)) == SAUTH


def test_sealed_keys_hold_no_plaintext_and_open_only_for_their_stream_and_key(tmp_path: Path) -> None:
    box = load_or_create(tmp_path / "a.key")
    sealed = box.seal("ch1", SAUTH)
    assert SAUTH not in sealed and b"PRIVATE KEY" not in sealed
    assert box.seal("ch1", SAUTH) != sealed, "a fresh nonce each time"
    with pytest.raises(SealError, match="ch2: the stored key does not open"):
        box.open("ch2", sealed)  # another stream's row: the name is the associated data
    with pytest.raises(SealError):
        load_or_create(tmp_path / "b.key").open("ch1", sealed)
    damaged = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealError):
        box.open("ch1", damaged)
    with pytest.raises(SealError, match="not a sealed key"):
        box.open("ch1", b"\x02" + sealed[1:])


def test_the_key_never_shows_in_the_box_repr(tmp_path: Path) -> None:
    box = load_or_create(tmp_path / "r.key")
    line = (tmp_path / "r.key").read_text().split()[1]
    assert line not in repr(box) and box.key_id in repr(box)
    with pytest.raises(ValueError, match="32 bytes"):
        KeyBox(b"short")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"--key-file .*k.key: mode 0644 lets others read it \(chmod 600"):
        load_or_create(path)


@pytest.mark.parametrize("content", [b"", b"hello\n", b"swarmcast-registry-key-v1 c2hvcnQ=\n",
                                     b"swarmcast-registry-key-v1 !!!!\n", b"x" * 5000])
def test_a_file_that_is_not_a_key_file_is_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=r"^--key-file .*bad.key: ") as caught:
        load_or_create(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content, "never replaced"


def test_a_directory_or_a_dangling_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_or_create(tmp_path / "dir.key")
    (tmp_path / "link.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileError, match="a symlink to nothing"):
        load_or_create(tmp_path / "link.key")
    assert not (tmp_path / "elsewhere").exists()
