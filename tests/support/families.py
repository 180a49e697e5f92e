"""The metric families the exporter exposes, as sample names (counters end in `_total`), taken
from the metric table (exporter/metrics.py)."""

from __future__ import annotations

from exporter.metrics import HTTP_SERVER, JOB_METRICS_VERSIONS, METRICS

ALL_FAMILIES = frozenset(sample for family in METRICS for sample in family.samples)

# Per-class execution metrics: only from Sidekiq 7+ (6.4 keeps none, so the exporter has none).
JOB_CLASS_FAMILIES = frozenset(
    sample
    for family in METRICS
    if family.sidekiq == JOB_METRICS_VERSIONS
    for sample in family.samples
)

# Per sidekiq-cron job: only where sidekiq-cron runs.
CRON_JOB_FAMILIES = frozenset(
    sample for family in METRICS if "cron_job" in family.labels for sample in family.samples
)

# The HTTP server's own counters: one set for the process, not per target.
HTTP_SERVER_FAMILIES = frozenset(sample for family in HTTP_SERVER for sample in family.samples)
