"""The node web interface's logic without sockets: the monitor's figures, /update parsing and applying, the
access rule and the token check."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from swarmcast.http.node_api import (
    MAX_UPDATE_ADDRESSES,
    UpdateError,
    cross_site,
    parse_update,
    token_middleware,
)
from swarmcast.ingest.status import InputStatus
from swarmcast.node.access import AccessPolicy
from swarmcast.node.admission import Admission, AdmissionConfig
from swarmcast.node.config import AccessConfig, MonitorConfig, NodeCommon
from swarmcast.node.monitor import Monitor, NodeState, UpdateRequest, apply_update, monitor_figures
from swarmcast.node.webaccess import WebAccess
from swarmcast.swarm.core import Role
from tests.unit.memswarm import Broadcast, MemoryNetwork


@dataclass
class FakeHost:
    port: int = 7764
    admission: Admission = field(default_factory=lambda: Admission(AdmissionConfig(max_connections=321)))
    refusals_total: dict[str, int] = field(default_factory=dict)
    access: AccessPolicy = field(default_factory=AccessPolicy)


def source_state(list_peers: bool = True) -> tuple[Broadcast, MemoryNetwork, NodeState]:
    bc, net = Broadcast(), MemoryNetwork()
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, bc.source, 8621, 7764)
    for i in range(3):
        bc.emit(net.now, random_access=i == 0)
        net.advance(0.5, [bc.source, support])
    for _ in range(4):
        net.advance(0.5, [bc.source, support])
    common = NodeCommon(port=7764, monitor=MonitorConfig(stats_report_interval=4.0, stats_report_peers=list_peers))
    status = InputStatus("http://127.0.0.1:9/stream.ts", connected=True)
    host = FakeHost(refusals_total={"web interface from a remote address": 2})
    state = NodeState("source", bc.source, host, common, started_at=-30.0, source_url=status.url, input_status=status)
    return bc, net, state


def test_figures_of_a_source_with_a_support_node() -> None:
    bc, net, state = source_state()
    figures = monitor_figures(state, net.now, 1_700_000_000.0, list_peers=True)
    assert figures["type"] == "source"
    assert figures["infohash"] == bc.content_id.hex()
    assert figures["max_connections"] == 321
    assert figures["max_peers"] == 60
    assert figures["max_upload_slots"] == 8
    assert figures["connected_peers_count"] == 1
    assert figures["support_nodes"] == [["127.0.0.1", 8621]]
    assert figures["last_piece"] == 2
    assert figures["bitrate"] == 250_000
    assert figures["uptime"] == round(net.now + 30)
    assert figures["source_url"] == "http://127.0.0.1:9/stream.ts"
    assert figures["source_status"] == state.input_status.as_json()  # type: ignore[union-attr]
    assert figures["rejected_connections"] == {"web interface from a remote address": 2}
    assert figures["rejected_connections_total"] == 2
    assert figures["cache_bytes"] == 3000
    assert figures["download_from"] == []
    assert figures["hls_manifest_url"] is None
    peers = figures["connected_peers"]
    assert isinstance(peers, list)
    (peer,) = peers
    assert peer["address"] == ["127.0.0.1", 8621]
    assert peer["direction"] == "in"
    assert peer["support_node"] is True
    assert peer["uploaded"] == 3000, "the source sent the support node three 1000-byte pieces"
    assert figures["uploaded"] == 3000
    assert figures["upload_slots"] == 1


def test_peers_are_listed_only_with_stats_report_peers_and_only_a_source_has_source_url() -> None:
    _, net, state = source_state(list_peers=False)
    assert monitor_figures(state, net.now, 0.0, list_peers=False)["connected_peers"] == []
    support_state = replace(state, kind="support", source_url=None, input_status=None,
                            download_from=(("127.0.0.1", 7764),))  # fmt: skip
    figures = monitor_figures(support_state, net.now, 0.0, list_peers=False)
    assert "source_url" not in figures
    assert "source_status" not in figures
    assert figures["download_from"] == [["127.0.0.1", 7764]]
    with pytest.raises(ValueError, match="kind"):
        replace(state, kind="engine")


def test_figures_are_kept_for_the_report_interval_and_refreshed_after_an_update() -> None:
    _, net, state = source_state()
    monitor = Monitor(state)
    first = monitor.figures(net.now, 0.0)
    assert monitor.figures(net.now + 3.9, 0.0) is first
    assert monitor.figures(net.now + 4.0, 0.0) is not first
    again = monitor.figures(net.now + 4.0, 0.0)
    apply_update(state, UpdateRequest(max_peers=9), net.now + 4.0)
    monitor.refresh()
    assert again["max_peers"] == 60
    assert monitor.figures(net.now + 4.0, 0.0)["max_peers"] == 9


def test_update_changes_the_swarm_and_the_lists_and_hooks_can_refuse() -> None:
    _, net, state = source_state()
    seen: list[UpdateRequest] = []
    state.update_hooks.append(seen.append)
    answer = apply_update(state, UpdateRequest(max_peers=5, max_upload_slots=2, upload_limit=64_000,
                                               upload_to=(("10.0.0.1", 0),), download_from=(("10.0.0.2", 7000),)),
                          net.now)  # fmt: skip
    assert answer == {"max_peers": 5, "max_upload_slots": 2, "upload_limit": 64, "download_from": [["10.0.0.2", 7000]],
                      "upload_to": [["10.0.0.1", 0]]}  # fmt: skip
    assert state.swarm.config.max_peers == 5
    assert state.swarm.config.upload_slots == 2
    assert state.swarm.config.upload_limit == 64_000
    assert state.swarm.config.download_from == frozenset({("10.0.0.2", 7000)})
    assert len(seen) == 1
    # An empty list clears the restriction.
    apply_update(state, UpdateRequest(download_from=()), net.now)
    assert state.swarm.config.download_from is None
    assert state.download_from == ()

    def refuse(request: UpdateRequest) -> None:
        if request.reload_filter:
            raise ValueError("reload_filter: the filter file has a bad key")

    state.update_hooks.append(refuse)
    with pytest.raises(ValueError, match="reload_filter"):
        apply_update(state, UpdateRequest(max_peers=50, reload_filter=True), net.now)
    assert state.swarm.config.max_peers == 5, "a refused update changed the swarm"


def test_parse_update() -> None:
    assert parse_update([]) == UpdateRequest()
    parsed = parse_update([("max_peers", "10"), ("max_upload_slots", "0"), ("download_from", "1.2.3.4:80,[::1]:81"),
                           ("download_from", "5.6.7.8:82"), ("upload_to", "1.2.3.4:0"), ("reload_filter", "1"),
                           ("upload_limit", "250")])  # fmt: skip
    assert parsed == UpdateRequest(max_peers=10, max_upload_slots=0, upload_limit=250_000,
                                   download_from=(("1.2.3.4", 80), ("::1", 81), ("5.6.7.8", 82)),
                                   upload_to=(("1.2.3.4", 0),), reload_filter=True)  # fmt: skip
    assert parse_update([("download_from", "")]).download_from == ()
    assert parse_update([("upload_to", "1.2.3.4:5,1.2.3.4:5")]).upload_to == (("1.2.3.4", 5),)


@pytest.mark.parametrize(("query", "parameter"), [
    ([("max_peers", "abc")], "max_peers"),
    ([("max_peers", "0")], "max_peers"),
    ([("max_peers", "-3")], "max_peers"),
    ([("max_peers", "9" * 40)], "max_peers"),
    ([("max_peers", "²")], "max_peers"),
    ([("max_peers", "1"), ("max_peers", "2")], "max_peers"),
    ([("max_upload_slots", "10001")], "max_upload_slots"),
    ([("max_upload_slots", " 3")], "max_upload_slots"),
    ([("upload_limit", "-1")], "upload_limit"),
    ([("upload_limit", "10000001")], "upload_limit"),
    ([("download_from", "host.example:80")], "download_from"),
    ([("download_from", "1.2.3.4")], "download_from"),
    ([("download_from", "1.2.3.4:0")], "download_from"),
    ([("download_from", "1.2.3.4:70000")], "download_from"),
    ([("download_from", ",".join(f"10.0.0.{i}:1" for i in range(MAX_UPDATE_ADDRESSES + 1)))], "download_from"),
    ([("upload_to", "1.2.3.4:x")], "upload_to"),
    ([("reload_filter", "2")], "reload_filter"),
    ([("max_peers", "5"), ("maxpeers", "5")], "maxpeers"),
])  # fmt: skip
def test_a_bad_update_names_its_parameter(query: list[tuple[str, str]], parameter: str) -> None:
    with pytest.raises(UpdateError) as caught:
        parse_update(query)
    assert caught.value.parameter == parameter
    assert str(caught.value).startswith(f"{parameter}: ")


def test_web_access_is_the_local_machine_and_monitor_ips_unless_remote_access() -> None:
    rule = WebAccess(AccessConfig(monitor_ips=("10.1.2.3", "2001:db8::1")))
    assert rule.allows("127.0.0.1")
    assert rule.allows("::1")
    assert rule.allows("::ffff:127.0.0.1")  # a dual-stack socket's view of 127.0.0.1
    assert rule.allows("10.1.2.3")
    assert rule.allows("::ffff:10.1.2.3")
    assert rule.allows("2001:db8::1")
    assert not rule.allows("127.0.0.2"), "other loopback addresses are other hosts"
    assert not rule.allows("127.0.0.2", "127.0.0.1"), "from another loopback address to ours: another host"
    assert rule.allows("127.0.0.2", "127.0.0.2"), "from the address it arrived at: only this machine sends from it"
    assert rule.allows("::ffff:192.0.2.7", "192.0.2.7")
    assert not rule.allows("", "")
    assert not rule.allows("192.0.2.1")
    assert not rule.allows("")
    assert not rule.allows("garbage")
    everyone = WebAccess(AccessConfig(remote_access=True))
    assert everyone.allows("192.0.2.1")
    assert everyone.allows("127.0.0.2")


async def test_every_app_path_needs_the_token() -> None:
    middleware = token_middleware("tok")

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def status(path: str) -> int:
        response = await middleware(make_mocked_request("GET", path), handler)
        return response.status

    assert await status("/app/tok/monitor") == 200
    assert await status("/app/tok/anything?x=1") == 200
    assert await status("/app/monitor") == 403
    assert await status("/app/tok2/monitor") == 403
    assert await status("/app/to/monitor") == 403
    assert await status("/app/%74ok/monitor") == 403, "the token is compared on the raw path"
    assert await status("/app") == 403
    assert await status("/announce") == 200, "paths outside /app are not the web interface's"


def test_another_sites_page_may_not_change_settings() -> None:
    def request(headers: dict[str, str]) -> web.Request:
        return make_mocked_request("GET", "/app/update?max_upload_slots=0", headers=headers)

    assert not cross_site(request({}))  # curl, requests, streaming-utils
    assert not cross_site(request({"Sec-Fetch-Site": "none"}))  # typed into the address bar
    assert not cross_site(request({"Sec-Fetch-Site": "same-origin"}))
    assert cross_site(request({"Sec-Fetch-Site": "cross-site"}))
    assert cross_site(request({"Sec-Fetch-Site": "same-site"}))


class RecordingAccess:
    """Stands in for node/access.py's AccessControl: records what /app/update asked of it."""

    def __init__(self, filter_error: str | None = None) -> None:
        self.filter_error = filter_error
        self.calls: list[object] = []

    def reload_filter(self) -> None:
        from swarmcast.node.ipfilter import FilterError

        self.calls.append("reload")
        if self.filter_error is not None:
            raise FilterError(self.filter_error)

    def set_peers(self, *, download_from: object = None, upload_to: object = None) -> None:
        self.calls.append((download_from, upload_to))


def test_access_hook_passes_lists_and_reload_and_a_bad_filter_refuses_the_update() -> None:
    from typing import cast

    from swarmcast.node.access import AccessControl
    from swarmcast.node.monitor import UpdateRequest, access_update_hook

    access = RecordingAccess()
    hook = access_update_hook(cast(AccessControl, access))
    hook(UpdateRequest(max_peers=5))
    assert access.calls == []  # nothing of the access policy's asked: nothing done
    hook(UpdateRequest(upload_to=(("127.0.0.2", 0),), reload_filter=True))
    assert access.calls == ["reload", (None, (("127.0.0.2", 0),))]
    bad = RecordingAccess(filter_error="blacklist.addresses: '10.0.0.300' is not an IP address")
    with pytest.raises(ValueError, match=r"^reload_filter: blacklist.addresses"):
        access_update_hook(cast(AccessControl, bad))(UpdateRequest(download_from=(), reload_filter=True))
    assert bad.calls == ["reload"]  # the lists were left alone


def test_tracker_paths_are_told_from_the_web_interface() -> None:
    from swarmcast.node.webaccess import is_tracker_path

    assert is_tracker_path("/announce?info_hash=x")
    assert is_tracker_path("/app/TOKEN/announce?x=1")
    assert not is_tracker_path("/app/announce")  # a web-interface path, not the token tracker
    assert not is_tracker_path("/app/TOKEN/monitor")
    assert not is_tracker_path("/app//announce")
    assert not is_tracker_path("/app/a/b/announce")
    assert not is_tracker_path("/announce/../app/monitor")


def test_monitor_shows_each_metatracker_and_an_empty_list_without() -> None:
    from swarmcast.discovery.metatracker import MetatrackerStatus

    _bc, net, state = source_state()
    assert monitor_figures(state, net.now, 0.0, list_peers=False)["metatrackers"] == []
    state.metatrackers = lambda: [MetatrackerStatus("http://127.0.0.1:9/mt", 2, 1, "no answer within 10 s")]
    assert monitor_figures(state, net.now, 0.0, list_peers=False)["metatrackers"] == [
        {"url": "http://127.0.0.1:9/mt", "answers": 2, "consecutive_failures": 1, "last_error": "no answer within 10 s"}
    ]
