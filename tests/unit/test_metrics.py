"""The /metrics collectors without sockets: bytes by peer role from real swarms in memory, the histogram, a
registry per node (two in one process never collide), the exposition formats, the bearer check, promtool."""

from __future__ import annotations

import shutil
import subprocess
from types import SimpleNamespace
from typing import cast

import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from swarmcast.http.ctl_api import parse_settings
from swarmcast.metrics import build_info_collector, exposition, new_registry
from swarmcast.metrics.collectors import NodeCollector
from swarmcast.metrics.histogram import STARTUP_BUCKETS, Histogram
from swarmcast.metrics.http import bearer_matches
from swarmcast.node.config import NodeCommon
from swarmcast.node.monitor import NodeState
from swarmcast.swarm.core import Role, Swarm
from tests.unit.memswarm import Broadcast, MemoryNetwork
from tests.unit.test_node_monitor import FakeHost

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(*states: NodeState) -> Samples:
    registry = new_registry([build_info_collector(states[0].kind), *(NodeCollector(s) for s in states)],
                            process=False)  # fmt: skip
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def state_of(kind: str, swarm: Swarm) -> NodeState:
    return NodeState(kind, swarm, FakeHost(), NodeCommon(port=7764), started_at=0.0)


def by_role(samples: Samples, name: str, content_id: str) -> dict[str, float]:
    return {dict(labels)["peer_role"]: v for (n, labels), v in samples.items()
            if n == name and dict(labels)["content_id"] == content_id}  # fmt: skip


def test_bytes_by_peer_role_source_support_viewer() -> None:
    bc, net = Broadcast(), MemoryNetwork()
    support = bc.make_swarm(Role.SUPPORT)
    viewer = bc.make_swarm(Role.ENGINE)
    net.connect(support, bc.source, 8621, 7764)
    net.connect(viewer, support, 9000, 8621, a_ip="127.0.0.5")  # the viewer has only the support node
    swarms = [bc.source, support, viewer]
    viewer.open_cursor()  # a player: an engine asks for pieces only when someone reads
    for i in range(6):
        bc.emit(net.now, random_access=i == 0)
        net.advance(0.5, swarms)
    for _ in range(6):
        net.advance(0.5, swarms)
    cid = bc.content_id.hex()
    source, middle, end = scrape(state_of("source", bc.source)), scrape(state_of("support", support)), scrape(
        state_of("support", viewer))  # fmt: skip
    assert by_role(source, "swarmcast_sent_bytes_total", cid) == {"support": 6000, "viewer": 0}
    assert by_role(middle, "swarmcast_received_bytes_total", cid) == {"source": 6000, "support": 0, "viewer": 0,
                                                                      "origin": 0}  # fmt: skip
    assert by_role(middle, "swarmcast_sent_bytes_total", cid) == {"support": 0, "viewer": 6000}
    assert by_role(end, "swarmcast_received_bytes_total", cid) == {"source": 0, "support": 6000, "viewer": 0,
                                                                   "origin": 0}  # fmt: skip
    assert middle["swarmcast_pieces_received_total", frozenset({("content_id", cid)})] == 6
    assert middle["swarmcast_pieces_forwarded_total", frozenset({("content_id", cid)})] == 6
    assert by_role(middle, "swarmcast_connected_peers", cid) == {"source": 1, "support": 0, "viewer": 1}
    assert end["swarmcast_newest_piece", frozenset({("content_id", cid)})] == 5


def test_two_nodes_in_one_process_each_have_their_own_registry() -> None:
    first, second = Broadcast(), Broadcast()
    a, b = scrape(state_of("source", first.source)), scrape(state_of("source", second.source))
    assert {dict(k[1]).get("content_id") for k in a} - {None} == {first.content_id.hex()}
    assert {dict(k[1]).get("content_id") for k in b} - {None} == {second.content_id.hex()}
    # And the library's global registry holds none of ours.
    from prometheus_client import REGISTRY, generate_latest

    assert b"swarmcast_" not in generate_latest(REGISTRY)


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram((1.0, 2.0, 5.0))
    for seconds in (0.2, 1.0, 1.5, 4.0, 60.0, float("nan")):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("1.0", 2), ("2.0", 3), ("5.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(66.7)
    with pytest.raises(ValueError, match="increasing"):
        Histogram((2.0, 1.0))
    assert len(Histogram(STARTUP_BUCKETS).cumulative()) == len(STARTUP_BUCKETS) + 1


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    registry = new_registry([build_info_collector("registry")], process=False)
    body, content_type = exposition(registry, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain") and b'role="registry"' in body


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret", True), ("bearer s3cret", True), ("Bearer s3cre", False), ("Bearer s3cret2", False),
    ("Basic s3cret", False), ("s3cret", False), ("", False),
    # Bytes that are not UTF-8 reach us as surrogates (aiohttp): a plain no, not a UnicodeEncodeError and a 500.
    ("Bearer \udcff\udcfe", False), ("Bearer s3cret\udcff", False), ("Bearer " + "s" * 5000, False),
])  # fmt: skip
def test_bearer_token(header: str, ok: bool) -> None:
    headers = {"Authorization": header} if header else {}
    # A request as the server makes it: make_mocked_request cannot carry the surrogates aiohttp's parser gives.
    request = cast(web.Request, SimpleNamespace(headers=CIMultiDictProxy(CIMultiDict(headers))))
    assert bearer_matches(request, "s3cret") is ok


def test_engine_settings_are_checked_key_by_key() -> None:
    assert parse_settings({"upload_slots": 0, "upload_limit": 250, "max_peers": 1}) == {
        "upload_slots": 0, "upload_limit": 250, "max_peers": 1}  # fmt: skip
    for body, starts in (({"upload_slots": -1}, "upload_slots"), ({"max_peers": 0}, "max_peers"),
                         ({"upload_limit": 10_000_001}, "upload_limit"), ({"max_peers": True}, "max_peers"),
                         ({"x": 1}, "x: unknown"), ([], "the body")):  # fmt: skip
        with pytest.raises(ValueError, match=f"^{starts}"):
            parse_settings(body)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_accepts_a_nodes_metrics() -> None:
    bc = Broadcast()
    for i in range(3):
        bc.emit(0.0, random_access=i == 0)
    registry = new_registry([build_info_collector("source"), NodeCollector(state_of("source", bc.source))])
    body, _ = exposition(registry)
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), done


def test_an_upload_limit_set_at_run_time_holds_back_the_next_requests() -> None:
    bc, net = Broadcast(), MemoryNetwork()
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, bc.source, 8621, 7764)
    swarms = [bc.source, support]
    bc.emit(net.now, random_access=True)
    for _ in range(4):
        net.advance(0.5, swarms)
    assert bc.source.stats.uploaded == 1000  # no limit: served
    bc.source.reconfigure(net.now, upload_limit=1000)  # 1000 bytes/s: a burst of one second's worth, then REJECTs
    assert bc.source.config.upload_limit == 1000
    for _ in range(4):
        bc.emit(net.now)
    for _ in range(3):
        net.advance(0.1, swarms)
    assert bc.source.uploader.rejected_over_limit > 0
    assert bc.source.stats.uploaded < 5000
    held_back = bc.source.uploader.rejected_over_limit
    bc.source.reconfigure(net.now, upload_limit=0)  # lifted: new pieces go out at once, nothing is held back
    before = bc.source.stats.uploaded
    for _ in range(3):
        bc.emit(net.now)
    for _ in range(4):
        net.advance(0.5, swarms)
    assert bc.source.stats.uploaded >= before + 3000
    assert bc.source.uploader.rejected_over_limit == held_back
