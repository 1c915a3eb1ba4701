"""The admission ledger without sockets: budgets per address and in total, eviction, deadlines."""

from __future__ import annotations

import pytest

from swarmcast.node.admission import Admission, AdmissionConfig, Stage, address_group

CID = b"c" * 20


def test_ipv6_addresses_group_by_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_group("2001:db8:1:2::1") == address_group("2001:db8:1:2:ffff::9")
    assert address_group("2001:db8:1:2::1") != address_group("2001:db8:1:3::1")
    assert address_group("::ffff:10.0.0.1") == "10.0.0.1"


def test_rate_per_address_refuses_a_burst_and_refills_with_time() -> None:
    admission = Admission(AdmissionConfig(connection_rate_per_ip=2, connection_burst_per_ip=3, max_pending_per_ip=100))
    keys = [admission.accept("10.0.0.1", 0.0)[0] for _ in range(5)]
    assert [k is not None for k in keys] == [True, True, True, False, False]
    assert admission.accept("10.0.0.2", 0.0)[0] is not None  # another address has its own bucket
    assert admission.accept("10.0.0.1", 0.5)[0] is not None  # 0.5 s at 2/s: one more token


def test_pending_per_address_is_capped_and_freed_on_release() -> None:
    admission = Admission(AdmissionConfig(max_pending_per_ip=2))
    a, _ = admission.accept("10.0.0.1", 0.0)
    b, _ = admission.accept("10.0.0.1", 0.0)
    c, verdict = admission.accept("10.0.0.1", 0.0)
    assert a is not None and b is not None
    assert c is None and not verdict.admitted and verdict.reason == "pending connections per address"
    admission.release(a)
    assert admission.accept("10.0.0.1", 0.0)[0] is not None


def test_full_pending_budget_evicts_the_oldest_unfinished_connection() -> None:
    admission = Admission(AdmissionConfig(max_pending=3))
    keys = [admission.accept(f"10.0.0.{i}", float(i))[0] for i in range(3)]
    newcomer, verdict = admission.accept("10.0.1.1", 5.0)
    assert newcomer is not None
    assert keys[0] is not None
    assert verdict.evict == (keys[0],)
    assert admission.stage(keys[0]) is None
    assert admission.count(Stage.UNDECIDED) == 3


def test_peers_per_address_limit_per_swarm() -> None:
    admission = Admission(AdmissionConfig(max_peers_per_ip=2))
    verdicts = []
    for _ in range(3):
        key, _ = admission.accept("10.0.0.1", 0.0)
        assert key is not None
        assert admission.to_peer(key, 0.0).admitted
        verdicts.append(admission.attach(key, CID, 0.0).admitted)
    assert verdicts == [True, True, False]
    assert admission.peers_of(CID, "10.0.0.1") == 2
    assert not admission.may_dial(CID, "10.0.0.1")
    assert admission.may_dial(b"d" * 20, "10.0.0.1")  # another broadcast of the same engine


def test_peer_connections_per_address_count_every_swarm() -> None:
    admission = Admission(AdmissionConfig(max_connections_per_ip=2))
    results = []
    for _ in range(3):
        key, _ = admission.accept("10.0.0.1", 0.0)
        assert key is not None
        results.append(admission.to_peer(key, 0.0).admitted)
    assert results == [True, True, False]


def test_full_peer_budget_evicts_a_dawdling_handshake_never_an_established_peer() -> None:
    admission = Admission(AdmissionConfig(max_connections=2))
    established, _ = admission.accept("10.0.0.1", 0.0)
    dawdler, _ = admission.accept("10.0.0.2", 1.0)
    assert established is not None and dawdler is not None
    admission.to_peer(established, 0.0)
    admission.attach(established, CID, 0.0)
    admission.to_peer(dawdler, 1.0)
    honest, _ = admission.accept("10.0.0.3", 2.0)
    assert honest is not None
    verdict = admission.to_peer(honest, 2.0)
    assert verdict.admitted and verdict.evict == (dawdler,)
    admission.attach(honest, CID, 2.0)
    late, _ = admission.accept("10.0.0.4", 3.0)
    assert late is not None
    assert not admission.to_peer(late, 3.0).admitted  # only established peers left: refuse, evict nobody


def test_http_budget_is_separate_from_peers_and_evicts_slow_headers() -> None:
    admission = Admission(AdmissionConfig(max_http_connections=2, max_connections=2))
    for i in range(2):  # peers fill their budget
        key, _ = admission.accept(f"10.0.0.{i}", 0.0)
        assert key is not None
        admission.to_peer(key, 0.0)
        admission.attach(key, CID, 0.0)
    slow = []
    for i in range(2):
        key, _ = admission.accept(f"10.0.1.{i}", float(i))
        assert key is not None
        assert admission.to_http(key, float(i)).admitted
        slow.append(key)
    honest, _ = admission.accept("10.0.2.1", 5.0)
    assert honest is not None
    verdict = admission.to_http(honest, 5.0)
    assert verdict.admitted and verdict.evict == (slow[0],)


def test_deadlines_per_stage() -> None:
    config = AdmissionConfig(first_bytes_timeout=3, handshake_timeout=4, http_header_timeout=10, http_max_lifetime=60)
    admission = Admission(config)
    silent, _ = admission.accept("10.0.0.1", 0.0)
    handshaking, _ = admission.accept("10.0.0.2", 0.0)
    headers, _ = admission.accept("10.0.0.3", 0.0)
    peer, _ = admission.accept("10.0.0.4", 0.0)
    assert silent and handshaking and headers and peer
    admission.to_peer(handshaking, 1.0)
    admission.to_http(headers, 1.0)
    admission.to_peer(peer, 1.0)
    admission.attach(peer, CID, 1.0)
    assert admission.expired(2.9) == []
    assert admission.expired(3.0) == [silent]
    assert admission.expired(5.0) == [handshaking]
    assert admission.expired(11.0) == [headers]
    assert admission.expired(1000.0) == []  # an established peer has no admission deadline
    assert admission.count(*Stage) == 1


def test_outbound_counts_in_totals_not_per_address() -> None:
    admission = Admission(AdmissionConfig(max_connections=2, max_connections_per_ip=1))
    out = admission.outbound("10.0.0.1", 0.0)
    assert out is not None
    inbound, _ = admission.accept("10.0.0.1", 0.0)
    assert inbound is not None
    assert admission.to_peer(inbound, 0.0).admitted  # our dial does not use the address's inbound allowance
    assert admission.outbound("10.0.0.9", 0.0) is None  # but the total is full


def test_tables_stay_bounded_under_many_addresses() -> None:
    admission = Admission()
    for i in range(20_000):
        key, _ = admission.accept(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
        if key is not None:
            admission.release(key)
    assert len(admission._groups) <= 4096 + 1


def test_budgets_fit_the_open_file_limit() -> None:
    config = AdmissionConfig(max_connections=1000, max_pending=250, max_http_connections=250)
    fitted = config.fitted(750)
    assert fitted.max_connections + fitted.max_pending + fitted.max_http_connections <= 750
    assert fitted.max_http_connections >= 100  # HTTP keeps its own share
    assert config.fitted(10_000) is config


def test_accept_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from swarmcast.node.lifecycle import AcceptErrorLog

    loop = asyncio.new_event_loop()
    try:
        handler = AcceptErrorLog(interval=3600)
        context: dict[str, object] = {"message": "socket.accept() out of system resource", "exception": OSError(24)}
        with caplog.at_level("ERROR"):
            for _ in range(100):
                handler(loop, context)
        assert len([r for r in caplog.records if "cannot accept" in r.getMessage()]) == 1
        assert handler.suppressed == 99
    finally:
        loop.close()


def test_non_positive_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_peers_per_ip"):
        AdmissionConfig(max_peers_per_ip=0)


def test_admission_flags_reach_the_node_config() -> None:
    from swarmcast.cli import build_parser
    from swarmcast.commands.options import common_from_args

    base = ["node", "source", "--source", "http://x/", "--title", "t"]
    args = build_parser().parse_args([*base, "--max-peers-per-ip", "2", "--max-connection-rate-per-ip", "0.5",
                                      "--http-header-timeout", "3"])  # fmt: skip
    admission = common_from_args(args).admission
    assert admission.max_peers_per_ip == 2
    assert admission.connection_rate_per_ip == 0.5
    assert admission.connection_burst_per_ip == 2  # 3 s' worth, at least one
    assert admission.http_header_timeout == 3.0
    assert common_from_args(build_parser().parse_args(base)).admission == AdmissionConfig()


@pytest.mark.parametrize("flag", ["--max-peers-per-ip", "--max-connections", "--handshake-timeout"])
def test_bad_admission_flag_exits_2_naming_the_value(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from swarmcast.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["node", "support", "--url", "x", flag, "0"])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_token_is_compared_on_the_raw_path() -> None:
    from aiohttp.test_utils import make_mocked_request

    from swarmcast.node.shared import token_matches

    assert token_matches(make_mocked_request("GET", "/app/token/stat"), "token")
    assert not token_matches(make_mocked_request("GET", "/app/%74oken/stat"), "token")
    assert not token_matches(make_mocked_request("GET", "/app/tokens/stat"), "token")
    assert not token_matches(make_mocked_request("GET", "/other/token/stat"), "token")
    assert token_matches(make_mocked_request("GET", "/app/stat"), None)
