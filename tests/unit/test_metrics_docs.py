"""docs/prometheus.yml and docs/grafana-dashboard.json: they parse, promtool accepts the scrape config and every
dashboard query (as recording rules), the queries use only metrics the nodes export, and docs/metrics.md lists
every one of them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarmcast.metrics import collectors

DOCS = Path(__file__).resolve().parents[2] / "docs"
PROMTOOL = shutil.which("promtool")
NAME = re.compile(r"\b((?:swarmcast|process)_[a-z0-9_]+)\b")
PROCESS = {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
           "process_start_time_seconds", "process_open_fds", "process_max_fds"}  # prometheus-client's ProcessCollector
HISTOGRAMS = ("swarmcast_startup_seconds", "swarmcast_delay_seconds")


def exported() -> set[str]:
    """Every sample name the node and engine collectors can export."""
    names = {"swarmcast_build_info"} | PROCESS
    for spec in vars(collectors).values():
        if isinstance(spec, collectors._Spec):
            names.add(spec.name + ("_total" if spec.kind == "counter" else ""))
    for histogram in HISTOGRAMS:
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    return names


def scrape_config() -> dict[str, Any]:
    config = yaml.safe_load((DOCS / "prometheus.yml").read_text())
    assert isinstance(config, dict)
    return config


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_scrape_config_has_a_job_per_kind_of_process() -> None:
    jobs = {job["job_name"]: job for job in scrape_config()["scrape_configs"]}
    assert set(jobs) == {"swarmcast-nodes", "swarmcast-engines", "swarmcast-registry"}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    # The nodes' token goes as a bearer token (/metrics takes it there), from a file, never in the URL.
    assert jobs["swarmcast-nodes"]["authorization"]["type"] == "Bearer"
    assert "credentials_file" in jobs["swarmcast-nodes"]["authorization"]
    roles = {group["labels"]["role"] for job in jobs.values() for group in job["static_configs"]}
    assert roles == {"source", "support", "startup", "engine", "registry"}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    # promtool checks that the token file exists: point the copy at one.
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    text = (DOCS / "prometheus.yml").read_text().replace("/etc/prometheus/swarmcast-node-token", str(token))
    (tmp_path / "prometheus.yml").write_text(text)
    done = subprocess.run([str(PROMTOOL), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_dashboard_queries_use_only_exported_metrics_and_known_jobs() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    queries = dashboard_queries()
    assert queries
    used = {name for query in queries for name in NAME.findall(query)}
    assert used - exported() == set(), "the dashboard asks for metrics nobody exports"
    assert {"swarmcast_sent_bytes_total", "swarmcast_startup_seconds_bucket", "swarmcast_delay_seconds_bucket",
            "swarmcast_players", "process_cpu_seconds_total"} <= used  # fmt: skip
    jobs = {job["job_name"] for job in scrape_config()["scrape_configs"]}
    for query in queries:
        for job in re.findall(r'job="([^"]+)"', query):
            assert job in jobs, query
    variable = dashboard["templating"]["list"][0]
    assert NAME.findall(variable["definition"])[0] in exported()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": query.replace("$content_id", ".*")}
        for i, query in enumerate(dashboard_queries())
    ]}]}  # fmt: skip
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_metrics_page_lists_every_metric() -> None:
    page = (DOCS / "metrics.md").read_text()
    missing = sorted(name for name in exported() - PROCESS
                     if not name.endswith(("_bucket", "_sum", "_count")) and f"`{name}" not in page)  # fmt: skip
    assert missing == []
    for histogram in HISTOGRAMS:
        assert f"`{histogram}" in page
