"""The registry's HTML pages (registry/pages.py) and the watch page's choices (registry/watch.py), without a server.

Titles, names, addresses and figures come from nodes: a `<script>` in any of them must reach the page as text.
"""

from __future__ import annotations

import re

import pytest

from swarmcast.registry import pages
from swarmcast.registry.watch import (
    DEFAULT_ENGINE,
    EngineAddressError,
    engine_origin,
    engine_query,
    hls_origin,
    no_play_reason,
    origin_of,
)
from swarmcast.registry.web import csp
from swarmcast.transport import Descriptor

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CID = "ab" * 20


def stream(**extra: object) -> dict[str, object]:
    return {"content_id": CID, "name": "news", "title": EVIL, "categories": [EVIL, "tv"], "quality": EVIL,
            "bitrate": 2_000_000, "renditions": None, "live": True, "viewers": 3,
            "nodes": {"source": 1, "support": 2, "start": 0, "engine": 3}, **extra}  # fmt: skip


def node(role: str = "support", **extra: object) -> dict[str, object]:
    return {"node_id": "n-" + role, "role": role, "name": EVIL, "address": EVIL, "http": "http://127.0.0.1:9000",
            "capacity_bps": 10_000_000, "version": EVIL, "state": "live", "last_seen": 0.0, "content_ids": [CID],
            "figures": {"peers": 4, "upload_bps": 2_000_000, EVIL: EVIL, "streams": {CID: {"viewers": 2}}},
            **extra}  # fmt: skip


def assert_escaped(text: str) -> None:
    assert "<script>alert" not in text and "<img" not in text, text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    # No inline script anywhere: every <script> names its src (the pages' CSP allows 'self' only).
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", text)), re.findall(r"<script[^>]*>", text)


WATCH = {"engine": DEFAULT_ENGINE, "query": {"id": CID}, "hls": None, "reason": EVIL, "content_id": CID}


def test_every_page_escapes_what_nodes_sent() -> None:
    assert_escaped(pages.stream_list([stream()], refresh=5))
    assert_escaped(pages.stream_page(stream(), [node(), node("source")], WATCH, refresh=5))
    assert_escaped(pages.watch_page(stream(), WATCH))
    assert_escaped(pages.node_page(node(), [stream()], refresh=5))
    assert_escaped(pages.dashboard_page([stream()], stream(), refresh=5, seconds=900))
    assert_escaped(pages.error_page(404, EVIL))


def test_the_list_shows_each_stream_with_viewers_bitrate_and_links() -> None:
    text = pages.stream_list([stream(), stream(content_id="cd" * 20, name="sport", title="Sport", live=False)],
                             refresh=2)  # fmt: skip
    assert text.count("<tr data-content-id=") == 2
    assert '<td class="viewers">3</td>' in text and "2.0 Mbit/s" in text
    assert 'href="/watch/sport"' in text and 'href="/streams/news"' in text and "off air" in text
    assert 'data-refresh="2"' in text
    assert "no streams are registered" in pages.stream_list([], refresh=5)


def test_node_figures_are_bounded_and_nested_ones_flattened() -> None:
    figures = {f"f{i}": i for i in range(500)}
    text = pages.node_page(node(figures=figures), [], refresh=5)
    assert "f63" in text and "f64<" not in text
    nested = pages.node_page(node(), [], refresh=5)
    assert f"streams · {CID} · viewers" in nested and "2.0 Mbit/s" in nested


@pytest.mark.parametrize("text", ["http://127.0.0.1:6878", "http://127.0.0.5:9/", "http://localhost:1", "http://[::1]:6878"])
def test_engine_address_is_a_loopback_origin(text: str) -> None:
    assert engine_origin(text) == text.rstrip("/")


@pytest.mark.parametrize("text", ["https://127.0.0.1:6878", "http://10.0.0.1:6878", "http://evil.example:6878",
                                  "http://127.0.0.1", "http://127.0.0.1:6878/x", "http://u@127.0.0.1:1",
                                  "javascript:alert(1)", "http://127.0.0.1:99999", "http://127.0.0.1:1?q"])
def test_engine_address_other_than_a_loopback_origin_is_refused(text: str) -> None:
    with pytest.raises(EngineAddressError, match=r"^engine: "):
        engine_origin(text)


def test_default_engine() -> None:
    assert engine_origin(None) == engine_origin("") == "http://127.0.0.1:6878"


def test_engine_query_points_at_a_live_nodes_transport_file_start_nodes_first() -> None:
    source = node("source", http="http://127.0.0.1:1")
    support = node("support", http="http://127.0.0.1:2/")
    start = node("start", http="http://127.0.0.1:3")
    gone = node("start", http="http://127.0.0.1:4", state="gone")
    assert engine_query(CID, [source, support, gone]) == {"url": "http://127.0.0.1:2/app/get_transport_file?format=raw"}
    assert engine_query(CID, [source, support, start])["url"].startswith("http://127.0.0.1:3/")
    assert engine_query(CID, [source])["url"].startswith("http://127.0.0.1:1/")
    # No live node with a web interface (or one that is not http): the content id, for an engine that can look it up.
    assert engine_query(CID, [gone, node(http="javascript:alert(1)"), node(http=None)]) == {"id": CID}


def descriptor(**extra: object) -> bytes:
    return Descriptor(name="n", title="t", piece_size=65536, bitrate=1000, public_key=b"k" * 32, **extra).encode()  # type: ignore[arg-type]


def test_hls_origin_from_a_rendition_else_the_transport_file() -> None:
    assert hls_origin([{"name": "720p"}, {"hls": "http://o/stream/a.m3u8"}], None) == "http://o/stream/a.m3u8"
    assert hls_origin([{"hls": "javascript:x"}, "junk"], None) is None
    assert hls_origin(None, descriptor(hls_manifest="http://origin/live.m3u8")) == "http://origin/live.m3u8"
    assert hls_origin(None, descriptor()) is None  # an MPEG-TS broadcast
    assert hls_origin(None, b"not a transport file") is None


def test_no_play_reason_says_why() -> None:
    assert "not live" in no_play_reason(DEFAULT_ENGINE, live=False)
    assert "no swarmcast engine answers at http://127.0.0.1:6878" in no_play_reason(DEFAULT_ENGINE, live=True)


CSP_INJECTION = "http://a.example; script-src * 'unsafe-inline'; connect-src *; media-src *; x/playlist.m3u8"


def watch_policy(renditions: object, transport: bytes | None = None) -> str:
    """The watch page's Content-Security-Policy as web.py builds it."""
    hls = hls_origin(renditions, transport)
    return csp((DEFAULT_ENGINE, origin_of(hls)) if hls else (DEFAULT_ENGINE,), media=True)


def test_a_rendition_url_cannot_add_directives_to_the_policy() -> None:
    """Review finding 6: a registered ``hls`` URL's host part is rebuilt from a checked host and port, never copied."""
    policy = watch_policy([{"name": "x", "hls": CSP_INJECTION}])
    assert "script-src *" not in policy and "'unsafe-inline';" not in policy.split("style-src", 1)[0], policy
    assert policy.count("'unsafe-inline'") == 1 and "style-src 'self' 'unsafe-inline';" in policy  # style-src's own
    assert policy.count("media-src") == 1 and "connect-src *" not in policy, policy
    assert policy == watch_policy(None)  # as if the stream had no HLS origin
    assert hls_origin([{"hls": CSP_INJECTION}], None) is None
    for bad in (CSP_INJECTION, "http://a.example:80;x/", "http://a b/", "http://a.example\t/", "http://a\u2028b/",
                "http://'self'/", "http://*/", "http://a.example:99999/", "http://user@a.example/", "http://1.2.3/"):
        assert hls_origin([{"hls": bad}], descriptor(hls_manifest=bad)) is None, bad
        try:
            origin = origin_of(bad)  # a bad host or port is refused; else the origin is rebuilt clean
        except ValueError:
            continue
        assert re.fullmatch(r"https?://[a-z0-9.-]+(:[0-9]+)?", origin), (bad, origin)
    # Honest origins still reach connect-src, rebuilt.
    assert origin_of("http://Origin.Example:8080/live/a.m3u8;v=1") == "http://origin.example:8080"
    assert origin_of("https://[::1]:9/x.m3u8") == "https://[::1]:9" and origin_of("http://10.0.0.1/a") == "http://10.0.0.1"
    assert "connect-src 'self' http://127.0.0.1:6878 http://o:81;" in watch_policy([{"hls": "http://o:81/s.m3u8"}])


def test_rendition_strings_must_be_printable() -> None:
    """POST /api/streams refuses a rendition string with a control character (it reaches pages and headers)."""
    from swarmcast.registry.validate import RequestError, _renditions

    assert _renditions([{"name": "720p", "hls": "http://o/a.m3u8"}]) is not None
    for bad in ("http://o/\r\nSet-Cookie: x", "a\x00b", "a\u2028b"):
        with pytest.raises(RequestError, match=r"renditions\[0\]"):
            _renditions([{"hls": bad}])
