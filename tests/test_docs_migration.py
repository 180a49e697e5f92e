"""docs/migration.md: the mapping covers every metric of the Ruby exporter and names only ours."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.families import ALL_FAMILIES

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
