"""The player page (http/player.py): what it embeds is escaped, its scripts are the shipped ones."""

from __future__ import annotations

from swarmcast.http.player import HLS_JS_VERSION, PAGE_CSP, STATIC_FILES, player_page, static_file


def test_the_manifest_url_and_title_cannot_break_out_of_the_page() -> None:
    page = player_page('/ace/manifest.m3u8?url="><script>alert(1)</script>', title="</title><script>x()</script>")
    assert "<script>alert" not in page and "<script>x()" not in page
    assert 'data-manifest="/ace/manifest.m3u8?url=&quot;&gt;&lt;script&gt;' in page
    # Only the two shipped scripts, by URL: no inline script for the CSP to allow.
    assert page.count("<script") == 2 and '<script src="/static/hls.min.js">' in page
    assert "script-src 'self'" in PAGE_CSP and "unsafe-inline" not in PAGE_CSP.split("script-src")[1].split(";")[0]


def test_the_pinned_hls_js_and_its_license_are_package_data() -> None:
    assert set(STATIC_FILES) == {"hls.min.js", "player.js", "hls.js-LICENSE"}
    assert len(static_file("hls.min.js")) > 100_000
    assert b"Apache License" in static_file("hls.js-LICENSE")
    assert HLS_JS_VERSION.encode() in static_file("hls.min.js")
    assert b"swarmcastPlayer" in static_file("player.js")
