"""docs/migration.md: the mapping covers every metric of the Ruby exporter and names only ours."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.config import DEFAULT_EXPORTER_JOB
from tests.support.families import ALL_FAMILIES
from tests.support.prometheus import PROMETHEUS, PrometheusServer

DOC = Path(__file__).resolve().parents[1] / "docs" / "migration.md"

# Every metric of Strech/sidekiq-prometheus-exporter 0.4.0: its templates standard.erb,
# cron.erb and scheduler.erb (lib/sidekiq/prometheus/exporter/templates/).
THEIRS = frozenset(
    {
        "sidekiq_processed_jobs_total",
        "sidekiq_failed_jobs_total",
        "sidekiq_workers",
        "sidekiq_processes",
        "sidekiq_host_processes",
        "sidekiq_host_processes_memory_usage_bytes",
        "sidekiq_busy_workers",
        "sidekiq_enqueued_jobs",
        "sidekiq_scheduled_jobs",
        "sidekiq_retry_jobs",
        "sidekiq_dead_jobs",
        "sidekiq_queue_latency_seconds",
        "sidekiq_queue_enqueued_jobs",
        "sidekiq_queue_max_processing_time_seconds",
        "sidekiq_queue_workers",
        "sidekiq_queue_processes",
        "sidekiq_queue_busy_workers",
        "sidekiq_leader_lifetime_seconds",
        "sidekiq_job_processed",
        "sidekiq_job_failed",
        "sidekiq_job_execution_time_seconds",
        "sidekiq_cron_jobs",
        "sidekiq_scheduler_jobs",
        "sidekiq_scheduler_enabled_jobs",
        "sidekiq_scheduler_time_since_last_run_minutes",
    }
)
NAME = re.compile(r"sidekiq_[a-z_]+")


def _mapping_rows() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Metric mapping", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no mapping table"
    return rows


def test_every_metric_of_theirs_is_mapped_once() -> None:
    mapped = [name for row in _mapping_rows() for name in NAME.findall(row[0])]
    assert sorted(mapped) == sorted(THEIRS)


def test_the_mapping_names_only_metrics_we_export() -> None:
    for theirs, _labels, ours, _notes in _mapping_rows():
        names = NAME.findall(ours)
        if not names:
            assert ours.strip() == "none", theirs
        for name in names:
            assert name in ALL_FAMILIES, f"{theirs}: {name} is not exported"


def test_same_named_metrics_keep_their_names() -> None:
    # Where theirs and ours share a name, the table says so in the `ours` column.
    for theirs, _labels, ours, _notes in _mapping_rows():
        (their_name, *_) = NAME.findall(theirs)
        if their_name in ALL_FAMILIES:
            assert NAME.findall(ours) == [their_name], theirs


# --- the relabel rule that keeps their `name` label, on a real Prometheus ---------------------

GOLDEN_METRICS = Path(__file__).resolve().parent / "golden" / "metrics.txt"


def _relabel_rules() -> list[dict[str, Any]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Keeping the `name` label while you migrate", 1)[1].split("\n## ")[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    (job,) = yaml.safe_load(block)["scrape_configs"]
    rules: list[dict[str, Any]] = job["metric_relabel_configs"]
    return rules


def _families_renamed_in_the_mapping() -> set[str]:
    return {
        NAME.findall(ours)[0]
        for _theirs, labels, ours, _notes in _mapping_rows()
        if "`name` → `queue`" in labels
    }


@contextlib.contextmanager
def _serving(body: bytes) -> Iterator[str]:
    """`body` as a text-format /metrics on a loopback port, until the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.integration
@pytest.mark.parametrize("major", sorted(PROMETHEUS))
def test_the_relabel_rule_adds_name_to_exactly_their_per_queue_series(major: str) -> None:
    renamed = _families_renamed_in_the_mapping()
    assert len(renamed) == 6
    golden = GOLDEN_METRICS.read_bytes()
    with (
        _serving(golden) as address,
        PrometheusServer(
            PROMETHEUS[major], scrape=address, metric_relabel_configs=_relabel_rules()
        ) as prometheus,
    ):
        deadline = time.monotonic() + 30
        while not prometheus.query(f'up{{job="{DEFAULT_EXPORTER_JOB}"}} == 1'):
            assert time.monotonic() < deadline, prometheus.log_tail()
            time.sleep(0.2)
        with_name = prometheus.query('{__name__=~"sidekiq_.+", name!=""}')
    assert {s["metric"]["__name__"] for s in with_name} == renamed
    assert all(s["metric"]["name"] == s["metric"]["queue"] for s in with_name)
    # Every series of those families got it: as many as the exporter wrote.
    written = [
        line
        for line in golden.decode().splitlines()
        if line.split("{", 1)[0] in renamed and 'queue="' in line
    ]
    assert len(with_name) == len(written) > 0
