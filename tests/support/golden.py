"""A fixed store (and fixed HTTP server counts) rendered to `/metrics` bytes, to compare with
the files under `tests/golden/`.

The store holds four targets: `main` (every family, a histogram, queues with and without an
SLA, sidekiq-cron jobs of both generations, label values that need escaping, a job class and
a process beyond the limits), `legacy` (a Sidekiq 6.4 without execution metrics, cron not
read), `old` (a snapshot past the staleness deadline: self-metrics only) and `new` (before its
first poll). Everything is fixed, the clock
included, so the bytes only change when the exposition does. Regenerate with
`.venv/bin/python -m tests.support.generated` when a change is intended.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.collector import HttpCollector, SidekiqCollector
from exporter.model import (
    HISTOGRAM_BUCKETS,
    CronJobSample,
    CronJobSchedule,
    JobClassTotals,
    ProcessSample,
    QueueSample,
    QueueSla,
    RunningJob,
    Sample,
    ScheduledSetSample,
    Snapshot,
)
from exporter.store import Store, TargetStatus
from exporter.web.server import HttpCounters

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z: Redis TIME of the fresh snapshots
INTERVAL = 10.0
# Accept headers of the two formats /metrics serves (prometheus_client's `choose_encoder`).
TEXT_ACCEPT = ""
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"

# Label values a scraper must see escaped: quote, backslash, newline, and non-ASCII text.
ODD_QUEUE = 'odd "queue" \\ with\nnewline'
ODD_CLASS = "Ünïcode::Job\\Namespaced"
EXPORTS = "exports_within_1_hour"  # a queue only a process serves


@dataclass(frozen=True)
class GoldenSettings:
    poll_interval: float = INTERVAL
    collect_processes: bool = True


@dataclass(frozen=True)
class GoldenClock:
    now: float = NOW + 2  # the render happens 2 s after the fresh polls finished

    def time(self) -> float:
        return self.now


def _histogram(counts: dict[int, int]) -> tuple[int, ...]:
    return tuple(counts.get(index, 0) for index in range(HISTOGRAM_BUCKETS))


def _process(identity: str, tag: str, version: str, **fields: object) -> ProcessSample:
    values: dict[str, object] = {
        "hostname": identity.split(":")[0],
        "concurrency": 10,
        "busy": 2,
        "heartbeat_timestamp": NOW - 3.5,
        "start_timestamp": NOW - 86_400.25,
        "quiet": False,
        "rss_bytes": 256 * 1024 * 1024,
        "redis_rtt_seconds": 0.000312,
        "queue_capacity": {"default": 10, "within_5_seconds": 10},
    }
    values.update(fields)
    return ProcessSample(identity=identity, tag=tag, version=version, **values)  # type: ignore[arg-type]


# sidekiq-cron jobs of `main`, with the next tick derive would have computed for each.
CRON_JOBS = (
    # 1.x (no namespace), on time: fired this minute, next at the next minute.
    (CronJobSample("", "every_minute", True, "* * * * *", NOW - 20), NOW + 40),
    # 2.x: an hourly job that fired at 22:00 and missed 23:00, an hour ago.
    (CronJobSample("default", "hourly_report", True, "0 * * * *", NOW - 7_200 + 3), NOW - 3_600),
    # Disabled: no next tick, no overdue time.
    (CronJobSample("default", "nightly_cleanup", False, "30 3 * * *", NOW - 86_400), None),
    # Enabled and never enqueued: expected at the first tick after the exporter saw it.
    (CronJobSample("billing", "monthly_invoices", True, "@monthly", None), NOW + 31 * 86_400),
    # A line the exporter cannot evaluate (fugit's natural language): no schedule series.
    (CronJobSample("billing", 'odd "job" \\ name', True, "every day at noon", NOW - 43_200), None),
)


def _main_snapshot() -> Snapshot:
    sample = Sample(
        redis_time=NOW,
        processed=123_456_789,
        failed=4_321,
        scheduled=ScheduledSetSample(size=12, overdue=3, oldest_score=NOW - 7.25),
        retry=ScheduledSetSample(size=5, overdue=0, oldest_score=NOW + 30),
        dead_size=2,
        queues=(
            QueueSample("default", 40, NOW - 1.5, False),
            QueueSample("within_5_seconds", 3, NOW - 9.75, False),  # in breach
            QueueSample("billing_within_5_minutes", 0, None, True),  # empty and paused
            QueueSample("reports", 7, NOW - 600, False),  # SLA from the config file
            QueueSample(ODD_QUEUE, 1, NOW + 4, False),  # a skewed clock: latency 0
            # Served, never pushed to: the reader adds it, empty; its SLA comes from its name.
            QueueSample(EXPORTS, 0, None, False),
        ),
        processes=(
            _process("web-1:101:aaaaaaaaaaaa", "app", "8.1.7"),
            _process(
                "slow-1:202:bbbbbbbbbbbb",
                "exports",
                "",
                concurrency=2,
                busy=1,
                quiet=True,
                queue_capacity={EXPORTS: 2},
            ),
            # Beyond --collect.processes.max: in the totals and the capacity of "default",
            # without per-process series.
            _process(
                "capped-1:303:cccccccccccc",
                "app",
                "8.1.7",
                concurrency=4,
                busy=0,
                queue_capacity={"default": 4},
            ),
        ),
        running_jobs=(
            RunningJob("web-1:101:aaaaaaaaaaaa", "default", "HardJob", NOW - 30),
            RunningJob("web-1:101:aaaaaaaaaaaa", "default", "HardJob", NOW - 4),
            RunningJob("web-1:101:aaaaaaaaaaaa", "within_5_seconds", ODD_CLASS, NOW - 1),
            RunningJob("slow-1:202:bbbbbbbbbbbb", EXPORTS, "CsvExportJob", NOW - 1800),
            # Beyond the job-class limit: busy in its queue, no series by class.
            RunningJob("web-1:101:aaaaaaaaaaaa", "default", "DroppedJob", NOW - 2),
        ),
        metrics_minutes=(),
        round_trips=2,
        commands=58,
        cron_jobs=tuple(job for job, _ in CRON_JOBS),
        leader="web-1:101:aaaaaaaaaaaa",
    )
    return Snapshot(
        target="main",
        sample=sample,
        job_classes={
            "HardJob": JobClassTotals(120, 8, 45_678, _histogram({0: 50, 3: 40, 9: 20, 25: 2})),
            # Saturated buckets: +Inf takes the successes, above the sum of the buckets.
            ODD_CLASS: JobClassTotals(70_000, 0, 700_000, _histogram({1: 65_535})),
            "CsvExportJob": JobClassTotals(),  # seen, nothing counted since the baseline
            # A flush between the two round trips: the histogram is ahead of the counts, and
            # +Inf takes the sum of the buckets.
            "RacedJob": JobClassTotals(3, 1, 90, _histogram({2: 4})),
        },
        job_metrics_supported=True,
        queue_slas={
            "default": QueueSla(None, "", "none"),
            "within_5_seconds": QueueSla(5.0, "", "name"),
            "billing_within_5_minutes": QueueSla(300.0, "billing", "name"),
            "reports": QueueSla(7200.0, "analytics", "config"),
            ODD_QUEUE: QueueSla(None, "odd", "none"),
            EXPORTS: QueueSla(3600.0, "exports", "name"),
        },
        sla_breach_seconds={
            "within_5_seconds": 4.75,
            "billing_within_5_minutes": 0.0,
            "reports": 0.0,
            EXPORTS: 0.0,
        },
        running_jobs=tuple(j for j in sample.running_jobs if j.job_class != "DroppedJob"),
        skipped={"class_limit": 1, "unparseable_cron": 1, "process_limit": 1},
        cron_jobs=tuple(CronJobSchedule(job, tick) for job, tick in CRON_JOBS),
        processes=sample.processes[:2],
    )


def _legacy_snapshot() -> Snapshot:
    """A Sidekiq 6.4: no execution metrics, so no per-class job families."""
    sample = Sample(
        redis_time=NOW - 0.5,
        processed=10,
        failed=0,
        scheduled=ScheduledSetSample(size=0, overdue=0, oldest_score=None),
        retry=ScheduledSetSample(size=0, overdue=0, oldest_score=None),
        dead_size=0,
        queues=(QueueSample("default", 0, None, False),),
        processes=(
            _process(
                "old-box:1:cccccccccccc", "", "", concurrency=5, queue_capacity={"default": 5}
            ),
        ),
        running_jobs=(),
        metrics_minutes=(),
        round_trips=2,
        commands=9,
    )
    slas = {"default": QueueSla(None, "", "none")}
    return Snapshot("legacy", sample, {}, False, slas, {}, (), processes=sample.processes)


def golden_store() -> Store:
    """The four targets' statuses, published into a store."""
    store = Store(["main", "legacy", "old", "new"])
    fresh = {
        "snapshot_completed_at": NOW,
        "last_success_timestamp": NOW,
        "last_round_trips": 2,
        "up": True,
    }
    store.publish(
        replace(
            TargetStatus.initial("main"),
            snapshot=_main_snapshot(),
            polls_success=360,
            polls_error=2,
            last_poll_duration_seconds=0.004821,
            skipped_totals={
                "invalid_job": 3,
                "class_limit": 360,
                "unparseable_cron": 360,
                "process_limit": 20,
                "label_too_long": 2,  # a 2 KiB queue name, left out on two polls
            },
            **fresh,  # type: ignore[arg-type]
        )
    )
    store.publish(
        replace(
            TargetStatus.initial("legacy"),
            snapshot=_legacy_snapshot(),
            polls_success=7,
            last_poll_duration_seconds=0.0011,
            **fresh,  # type: ignore[arg-type]
        )
    )
    # Its last good poll is older than 3 intervals and the latest one failed: stale, down.
    store.publish(
        replace(
            TargetStatus.initial("old"),
            snapshot=replace(_legacy_snapshot(), target="old"),
            snapshot_completed_at=NOW - 300,
            polls_success=1,
            polls_error=29,
            last_poll_duration_seconds=8.0,
            last_success_timestamp=NOW - 300,
            last_round_trips=2,
            up=False,
        )
    )
    return store


def golden_collector() -> SidekiqCollector:
    """The Sidekiq collector over the golden store, at the golden clock."""
    return SidekiqCollector(golden_store(), GoldenSettings(), GoldenClock())


def golden_http_counters() -> HttpCounters:
    """What the HTTP server counted: some of each family, a reason or limit left at 0."""
    counters = HttpCounters()
    counters.bad_requests.update(method=3, too_long=2, malformed=7)
    counters.limit_hits.update(max_connections=120, read_header_timeout=41)
    return counters


def golden_collectors() -> tuple[HttpCollector, SidekiqCollector]:
    """Every collector of the metric table's rows, in the order /metrics renders them (the
    HTTP server's counters with the other live collectors, before the Sidekiq families)."""
    return HttpCollector(golden_http_counters()), golden_collector()


def render(accept: str) -> bytes:
    """The collectors' exposition in the format /metrics answers `accept` with."""
    encoder, _ = choose_encoder(accept)
    registry = CollectorRegistry(auto_describe=False)
    for collector in golden_collectors():
        registry.register(collector)
    return encoder(registry)


def render_text() -> bytes:
    """The text format (0.0.4): what /metrics serves without an OpenMetrics Accept header."""
    return render(TEXT_ACCEPT)


def render_openmetrics() -> bytes:
    """OpenMetrics 1.0.0: what Prometheus asks for by default."""
    return render(OPENMETRICS_ACCEPT)
