"""``node source --standby-for``: flags checked at the edge, one-line errors naming the flag, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmcast.cli import main


def _args(tmp: Path, *extra: str) -> list[str]:
    return ["node", "source", "--source", "http://127.0.0.1:1/x", "--title", "T", "--name", "t",
            "--metadata-dir", str(tmp), "--publish-dir", str(tmp), *extra]  # fmt: skip


@pytest.mark.parametrize("value", ["localhost:7764", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999"])
def test_standby_for_needs_an_ip_and_a_port(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, "--standby-for", value))
    assert exit_info.value.code == 2
    assert "--standby-for" in capsys.readouterr().err


def test_takeover_delay_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(_args(tmp_path, "--standby-for", "127.0.0.1:7764", "--standby-takeover-after", "0"))
    assert exit_info.value.code == 2
    assert "--standby-takeover-after" in capsys.readouterr().err


def test_a_standby_without_the_broadcast_key_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_args(tmp_path, "--standby-for", "127.0.0.1:7764")) == 2
    err = capsys.readouterr().err
    assert "--standby-for" in err and "t.sauth" in err
    assert not (tmp_path / "t.sauth").exists(), "a standby must never make up a key of its own"
