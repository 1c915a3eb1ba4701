"""``swarmcast ctl`` without a network: its tables print hostile text as text, what ``start`` sends for each kind
of argument, the --url check."""

from __future__ import annotations

import argparse
import base64
import io
import urllib.parse
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from swarmcast.commands.ctl import Client, CtlError, _limits, _start_query, target_url
from swarmcast.commands.ctl_tables import show

HOSTILE = "[link=http://evil.example]click[/link] [bold red]x\x1b[2J\x07"


def printed(command: str, result: object) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        show(command, result)
    return out.getvalue()


def test_tables_print_titles_and_errors_as_the_characters_they_are() -> None:
    broadcast = {"infohash": "ab" * 20, "title": HOSTILE, "state": "playing", "players": 1, "sessions": 0,
                 "peers_by_role": {"source": 1, "support": 0, "viewer": 2}, "download_speed": 125000}  # fmt: skip
    text = printed("sessions", {"broadcasts": [broadcast], "sessions": [], "streams": 1, "settings": {}})
    assert "[link=http://evil.e" in text and "\x1b" not in text and "\x07" not in text
    assert "125.0 kB/s" in text and "1/0/2" in text
    monitor = {"type": HOSTILE, "port": 1, "source_status": {"last_error": HOSTILE}, "connected_peers": [],
               "source_url": HOSTILE}  # fmt: skip
    text = printed("monitor", monitor)
    assert text.count("[bold red]x") >= 2 and "\x1b" not in text


def test_start_sends_each_kind_of_argument_as_the_api_takes_it(tmp_path: Path) -> None:
    assert _start_query("AB" * 20) == {"content_id": "ab" * 20}
    assert _start_query("magnet:?xt=urn:btih:" + "ab" * 20) == {"magnet": "magnet:?xt=urn:btih:" + "ab" * 20}
    assert _start_query("http://h:1/t.acelive") == {"url": "http://h:1/t.acelive"}
    transport = tmp_path / "t.acelive"
    transport.write_bytes(b"d4:name1:xe")
    encoded = _start_query(str(transport))["data"]
    assert base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) == b"d4:name1:xe"
    with pytest.raises(CtlError, match="not a content id"):
        _start_query(str(tmp_path / "missing"))


@pytest.mark.parametrize("url", ["ftp://h:1", "http://", "http://h:99999", "http://h:1/app", "http://h:1/?x=1", "h:1"])
def test_url_must_be_a_base_url(url: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        target_url(url)


def test_url_keeps_host_and_port() -> None:
    assert target_url("http://127.0.0.1:8621/") == "http://127.0.0.1:8621"
    assert target_url("https://[::1]:6878") == "https://[::1]:6878"


class _NotJson:
    """What urlopen returns for a page that is not JSON (an HTML error page, a proxy's answer)."""

    def __enter__(self) -> _NotJson:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, limit: int) -> bytes:
        return b"<html>not json</html>"


@pytest.mark.parametrize("token", ["SECRET-t0ken", "a/b c?d"])
def test_errors_never_show_the_access_token(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _NotJson())
    client = Client("http://127.0.0.1:9", token, 1.0)
    quoted = urllib.parse.quote(token, safe="")
    for call in (lambda: client.request(client.app("monitor")),
                 lambda: _limits(client, False, argparse.Namespace(upload_slots=None, upload_limit=None,
                                                                   max_peers=None)),
                 lambda: _limits(client, False, argparse.Namespace(upload_slots=3, upload_limit=None,
                                                                   max_peers=None))):  # fmt: skip
        with pytest.raises(CtlError) as error:
            call()
        message = str(error.value)
        assert token not in message and quoted not in message, message
        assert "/app/***/" in message and "not JSON" in message, message
