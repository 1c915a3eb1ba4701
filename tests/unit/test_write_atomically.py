"""files.write_file_atomically: whole or nothing, its own mode, never through a planted file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarmcast.files import write_file_atomically
from swarmcast.hls_transport import write_file


def test_a_secret_goes_to_a_fresh_0600_file_not_through_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"untouched")
    # The old code wrote to the predictable "<name>.tmp": a symlink planted there was followed.
    (tmp_path / "key.private.tmp").symlink_to(target)
    write_file(tmp_path / "key.private", b"SECRET", secret=True)
    assert target.read_bytes() == b"untouched"
    assert (tmp_path / "key.private").read_bytes() == b"SECRET"
    assert (tmp_path / "key.private").stat().st_mode & 0o777 == 0o600


def test_the_mode_is_the_one_asked_for_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_file_atomically(tmp_path / "public", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "public").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_file_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
