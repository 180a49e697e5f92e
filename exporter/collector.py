"""Turns the latest Snapshot of every target into Prometheus metric families.

A custom collector, as prometheus/client_python recommends for exporters: families are built
fresh from the store, so a deleted queue, a stopped process or an unused job class simply
disappears. Scrapes never talk to Redis. The output only changes when a poll publishes or a
target goes stale, which `pin()` names with a key so /metrics can reuse one render for every
scrape in between (exporter/render_cache.py). Example of what one target renders:

    # HELP sidekiq_queue_latency_seconds Age of the oldest job in the queue ... Sampled every 10s.
    # TYPE sidekiq_queue_latency_seconds gauge
    sidekiq_queue_latency_seconds{queue="default",target="main"} 0.42
    # HELP sidekiq_processed_jobs_total Jobs executed, failures included (stat:processed) ...
    # TYPE sidekiq_processed_jobs_total counter
    sidekiq_processed_jobs_total{target="main"} 1.234567e+06
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.clock import Clock
from exporter.model import HISTOGRAM_BUCKET_BOUNDS_MS, ScheduledSetSample, Snapshot, clamp_age
from exporter.store import Store, TargetStatus

# A snapshot older than this many poll intervals is stale: its Sidekiq families are dropped.
STALE_AFTER_INTERVALS = 3

# Upper bounds of Sidekiq's histogram buckets in seconds, as Prometheus `le` labels: Sidekiq's
# own bounds (0.02, 0.03, …, 335), not `bound − 1 ms`. Sidekiq files a job under the first
# bucket with `ms < bound`, where `ms` is the difference of two truncated millisecond clock
# readings (`clock_gettime(MONOTONIC, :millisecond)`, v7.3.10 metrics/tracking.rb:22-30), off
# from the real duration d by less than 1 ms either way. So `ms < 20` (`ms ≤ 19`) implies
# d < 20 ms: every observation at or below `le="0.02"` truly is ≤ 0.02 s, as `le` promises,
# while `le="0.019"` would be false for a 19.5 ms job counted as 19. (Jobs of 19-20 ms may land
# one bucket up: the clock's resolution.) The bounds also stay the numbers of Sidekiq's Web UI
# and the ones users write in queries (`le="0.5"`).
# Formatted as client_python formats `le` (`0.02`, `13.0`: Python's shortest float repr), the
# form Prometheus 3 normalises classic-histogram `le` labels to on ingestion.
HISTOGRAM_LE = tuple(repr(bound / 1000) for bound in HISTOGRAM_BUCKET_BOUNDS_MS)


class CollectorSettings(Protocol):
    """The settings the collector reads (a subset of `exporter.settings.Settings`)."""

    @property
    def poll_interval(self) -> float: ...

    @property
    def collect_processes(self) -> bool: ...


def _fmt_interval(seconds: float) -> str:
    return f"{seconds:g}s"


_F = TypeVar("_F", bound=Metric)


class _Families:
    """Builds metric families for all targets, creating each family on first use."""

    def __init__(self, sampled: str) -> None:
        self.sampled = sampled
        self.families: dict[str, Metric] = {}

    def _family(
        self, kind: Callable[..., _F], name: str, documentation: str, labels: Sequence[str]
    ) -> _F:
        family = self.families.get(name)
        if family is None:
            # Sidekiq data is a sample of the last poll; the exporter's own metrics are not.
            own = name == "sidekiq_up" or name.startswith("sidekiq_exporter_")
            help_text = documentation if own else f"{documentation} {self.sampled}"
            family = kind(name, help_text, labels=list(labels))
            self.families[name] = family
        return family  # type: ignore[return-value]  # the name always maps to one kind

    def gauge(
        self, name: str, doc: str, labels: Sequence[str], values: Sequence[str], value: float
    ) -> None:
        self._family(GaugeMetricFamily, name, doc, labels).add_metric(list(values), value)

    def counter(
        self, name: str, doc: str, labels: Sequence[str], values: Sequence[str], value: float
    ) -> None:
        self._family(CounterMetricFamily, name, doc, labels).add_metric(list(values), value)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        values: Sequence[str],
        buckets: Sequence[tuple[str, float]],
        sum_value: float,
    ) -> None:
        family = self._family(HistogramMetricFamily, name, doc, labels)
        family.add_metric(list(values), list(buckets), sum_value)


class _Pinned(Collector):
    """One pinned state of a `SidekiqCollector`: the statuses and freshness read by `pin`."""

    __slots__ = ("_collector", "_fresh", "_statuses")

    def __init__(
        self,
        collector: SidekiqCollector,
        statuses: tuple[TargetStatus, ...],
        fresh: tuple[bool, ...],
    ) -> None:
        self._collector = collector
        self._statuses = statuses
        self._fresh = fresh

    def collect(self) -> Iterator[Metric]:
        return self._collector._build(self._statuses, self._fresh)


class SidekiqCollector(Collector):
    """Renders the store: Sidekiq families from fresh snapshots, self-metrics always."""

    def __init__(self, store: Store, settings: CollectorSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        # Families depend on the data; describing none keeps registration cheap and lets the
        # registry skip its duplicate-name check for this collector.
        return []

    def collect(self) -> Iterator[Metric]:
        _, pinned = self.pin()
        yield from pinned.collect()

    def pin(self) -> tuple[Hashable, Collector]:
        """The current state's cache key, and a collector that renders exactly that state.

        What `collect` yields is a function of the store's statuses and, per target, of the
        freshness decision (which moves with the clock: a snapshot goes stale
        `STALE_AFTER_INTERVALS` intervals after its poll finished, with no publish). The key
        is the store version plus those decisions, so equal keys mean equal output; the
        returned collector renders the statuses and decisions read here, never newer ones, so
        its output always matches the key (exporter/render_cache.py caches by it).
        """
        state = self.store.state()
        now = self.clock.time()
        interval = self.settings.poll_interval
        fresh = tuple(self._fresh(status, now, interval) for status in state.statuses)
        return (state.version, fresh), _Pinned(self, state.statuses, fresh)

    def _build(self, statuses: Sequence[TargetStatus], fresh: Sequence[bool]) -> Iterator[Metric]:
        """The families for `statuses`, each target fresh or not as `fresh` says."""
        families = _Families(f"Sampled every {_fmt_interval(self.settings.poll_interval)}.")
        families.gauge(
            "sidekiq_exporter_build_info",
            "sidekiq-exporter build, value 1.",
            ["version"],
            [__version__],
            1,
        )
        for status, is_fresh in zip(statuses, fresh, strict=True):
            self._exporter_metrics(families, status, up=status.up and is_fresh)
            if is_fresh and status.snapshot is not None:
                self._sidekiq_metrics(families, status.snapshot)
        yield from families.families.values()

    @staticmethod
    def _fresh(status: TargetStatus, now: float, interval: float) -> bool:
        completed = status.snapshot_completed_at
        if status.snapshot is None or completed is None:
            return False
        return now - completed <= STALE_AFTER_INTERVALS * interval

    def _exporter_metrics(self, f: _Families, status: TargetStatus, *, up: bool) -> None:
        t = [status.target]
        f.gauge(
            "sidekiq_up",
            "1 if the last poll of this target's Redis succeeded and its data is fresh "
            f"(younger than {STALE_AFTER_INTERVALS} poll intervals), else 0.",
            ["target"],
            t,
            1 if up else 0,
        )
        if status.last_poll_duration_seconds is not None:
            f.gauge(
                "sidekiq_exporter_poll_duration_seconds",
                "Duration of the last poll of this target's Redis.",
                ["target"],
                t,
                status.last_poll_duration_seconds,
            )
        for result, count in (("success", status.polls_success), ("error", status.polls_error)):
            f.counter(
                "sidekiq_exporter_polls",
                "Polls of this target's Redis, by result.",
                ["target", "result"],
                [status.target, result],
                count,
            )
        if status.last_success_timestamp is not None:
            f.gauge(
                "sidekiq_exporter_last_poll_success_timestamp_seconds",
                "When the last successful poll of this target finished (exporter clock).",
                ["target"],
                t,
                status.last_success_timestamp,
            )
        if status.last_round_trips is not None:
            f.gauge(
                "sidekiq_exporter_redis_round_trips",
                "Redis round trips the last successful poll needed (constant per poll).",
                ["target"],
                t,
                status.last_round_trips,
            )
        for reason, count in sorted(status.skipped_totals.items()):
            f.counter(
                "sidekiq_exporter_skipped_items",
                "Items read from Redis but skipped: malformed, wrong Redis type, over a limit.",
                ["target", "reason"],
                [status.target, reason],
                count,
            )

    def _sidekiq_metrics(self, f: _Families, snapshot: Snapshot) -> None:
        sample, target = snapshot.sample, snapshot.target
        now = sample.redis_time
        t = [target]
        f.counter(
            "sidekiq_processed_jobs",
            "Jobs executed, failures included (Sidekiq stat:processed).",
            ["target"],
            t,
            sample.processed,
        )
        f.counter(
            "sidekiq_failed_jobs",
            "Job executions that raised (Sidekiq stat:failed).",
            ["target"],
            t,
            sample.failed,
        )
        f.gauge(
            "sidekiq_enqueued_jobs",
            "Jobs waiting in all queues (sum of the queue sizes, exported or not).",
            ["target"],
            t,
            sample.enqueued_total,
        )
        f.gauge(
            "sidekiq_scheduled_jobs",
            "Jobs in the schedule set.",
            ["target"],
            t,
            sample.scheduled.size,
        )
        f.gauge("sidekiq_retry_jobs", "Jobs in the retry set.", ["target"], t, sample.retry.size)
        f.gauge("sidekiq_dead_jobs", "Jobs in the dead set.", ["target"], t, sample.dead_size)
        sets: tuple[tuple[str, ScheduledSetSample], ...] = (
            ("schedule", sample.scheduled),
            ("retry", sample.retry),
        )
        for set_name, zset in sets:
            f.gauge(
                "sidekiq_scheduled_overdue_jobs",
                "Members of the schedule or retry set already due but not yet moved to a queue.",
                ["target", "set"],
                [target, set_name],
                zset.overdue,
            )
            lag = clamp_age(now, zset.oldest_score) if zset.oldest_score is not None else 0.0
            f.gauge(
                "sidekiq_scheduled_lag_seconds",
                "How long the oldest due member of the set has been waiting to be moved, 0 if "
                "none: a stuck scheduler shows here first.",
                ["target", "set"],
                [target, set_name],
                lag,
            )
        self._queue_metrics(f, snapshot)
        self._process_metrics(f, snapshot)
        self._running_metrics(f, snapshot)
        if snapshot.job_metrics_supported:
            self._job_class_metrics(f, snapshot)

    def _queue_metrics(self, f: _Families, snapshot: Snapshot) -> None:
        sample, target = snapshot.sample, snapshot.target
        now = sample.redis_time
        busy: dict[str, int] = defaultdict(int)
        oldest_run: dict[str, float] = {}
        for job in sample.running_jobs:
            busy[job.queue] += 1
            oldest_run[job.queue] = min(oldest_run.get(job.queue, job.run_at), job.run_at)
        workers: dict[str, int] = defaultdict(int)
        listeners: dict[str, int] = defaultdict(int)
        for process in sample.processes:
            for served, threads in process.queue_capacity.items():
                workers[served] += threads
                listeners[served] += 1
        names = [q.name for q in sample.queues]
        known = set(names)
        # Queues served (or running jobs) but never pushed to are real, empty queues.
        extra = sorted((set(workers) | set(busy)) - known)
        by_name = {q.name: q for q in sample.queues}
        for name in names + extra:
            labels = [target, name]
            queue = by_name.get(name)
            f.gauge(
                "sidekiq_queue_enqueued_jobs",
                "Jobs waiting in the queue (LLEN).",
                ["target", "queue"],
                labels,
                queue.size if queue else 0,
            )
            f.gauge(
                "sidekiq_queue_latency_seconds",
                "Age of the oldest job in the queue (enqueued_at, else created_at), 0 if empty.",
                ["target", "queue"],
                labels,
                queue.latency_at(now) if queue else 0.0,
            )
            f.gauge(
                "sidekiq_queue_paused",
                "1 if Sidekiq Pro has paused the queue.",
                ["target", "queue"],
                labels,
                1 if queue and queue.paused else 0,
            )
            f.gauge(
                "sidekiq_queue_busy_workers",
                "Jobs of this queue running now, counted from the processes' work hashes.",
                ["target", "queue"],
                labels,
                busy.get(name, 0),
            )
            f.gauge(
                "sidekiq_queue_workers",
                "Threads of live processes that serve this queue (capacity).",
                ["target", "queue"],
                labels,
                workers.get(name, 0),
            )
            f.gauge(
                "sidekiq_queue_processes",
                "Live processes that serve this queue.",
                ["target", "queue"],
                labels,
                listeners.get(name, 0),
            )
            f.gauge(
                "sidekiq_queue_max_processing_time_seconds",
                "Age of the oldest job of this queue running now, 0 if none.",
                ["target", "queue"],
                labels,
                clamp_age(now, oldest_run.get(name)),
            )
        for name in names:
            sla = snapshot.queue_slas.get(name)
            if sla is None:
                continue
            labels = [target, name]
            f.gauge(
                "sidekiq_queue_info",
                "Queue facts, value 1: component, and where its SLA comes from (name/config/none).",
                ["target", "queue", "component", "sla_source"],
                [target, name, sla.component, sla.source],
                1,
            )
            if sla.seconds is None:
                continue
            f.gauge(
                "sidekiq_queue_sla_seconds",
                "Latency the queue promises, from its name (within_5_seconds) or the config file.",
                ["target", "queue"],
                labels,
                sla.seconds,
            )
            f.counter(
                "sidekiq_queue_sla_breach_seconds",
                "Seconds this exporter observed the queue's latency above its SLA, measured on "
                "Redis TIME between polls; rate() is the fraction of time in breach.",
                ["target", "queue"],
                labels,
                snapshot.sla_breach_seconds.get(name, 0.0),
            )

    def _process_metrics(self, f: _Families, snapshot: Snapshot) -> None:
        sample, target = snapshot.sample, snapshot.target
        processes = sample.processes
        f.gauge(
            "sidekiq_processes",
            "Live Sidekiq processes (their heartbeat hash exists; stale set members ignored).",
            ["target"],
            [target],
            len(processes),
        )
        f.gauge(
            "sidekiq_workers",
            "Total concurrency (threads) of the live processes.",
            ["target"],
            [target],
            sum(p.concurrency for p in processes),
        )
        f.gauge(
            "sidekiq_busy_workers",
            "Jobs running now on the live processes (sum of their busy counts).",
            ["target"],
            [target],
            sum(p.busy for p in processes),
        )
        if not self.settings.collect_processes:
            return
        names = ["target", "identity", "hostname", "tag"]
        for p in processes:
            labels = [target, p.identity, p.hostname, p.tag]
            f.gauge(
                "sidekiq_process_busy_workers",
                "Jobs running on the process.",
                names,
                labels,
                p.busy,
            )
            f.gauge(
                "sidekiq_process_concurrency",
                "Threads of the process.",
                names,
                labels,
                p.concurrency,
            )
            f.gauge(
                "sidekiq_process_memory_rss_bytes",
                "Resident memory of the process as it reported it (0 where unknown).",
                names,
                labels,
                p.rss_bytes,
            )
            f.gauge(
                "sidekiq_process_redis_rtt_seconds",
                "Redis PING round trip the process measured at its last heartbeat.",
                names,
                labels,
                p.redis_rtt_seconds,
            )
            f.gauge(
                "sidekiq_process_heartbeat_timestamp_seconds",
                "When the process last beat (its own clock).",
                names,
                labels,
                p.heartbeat_timestamp,
            )
            f.gauge(
                "sidekiq_process_start_time_seconds",
                "When the process started (its own clock).",
                names,
                labels,
                p.start_timestamp,
            )
            f.gauge(
                "sidekiq_process_quiet",
                "1 if the process is quiet or stopping (it fetches no new jobs).",
                names,
                labels,
                1 if p.quiet else 0,
            )
            f.gauge(
                "sidekiq_process_info",
                "Process facts, value 1.",
                [*names, "version"],
                [*labels, p.version],
                1,
            )

    def _running_metrics(self, f: _Families, snapshot: Snapshot) -> None:
        # Only jobs whose class is within the job-class limits get a `class` label.
        sample, target = snapshot.sample, snapshot.target
        count: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[tuple[str, str], float] = {}
        for job in snapshot.running_jobs:
            key = (job.queue, job.job_class)
            count[key] += 1
            oldest[key] = min(oldest.get(key, job.run_at), job.run_at)
        for (queue, job_class), running in sorted(count.items()):
            labels = [target, queue, job_class]
            f.gauge(
                "sidekiq_running_jobs",
                "Jobs running now, by queue and class (wrapped class for ActiveJob).",
                ["target", "queue", "class"],
                labels,
                running,
            )
            f.gauge(
                "sidekiq_running_job_max_age_seconds",
                "Age of the oldest running job of this queue and class.",
                ["target", "queue", "class"],
                labels,
                clamp_age(sample.redis_time, oldest[(queue, job_class)]),
            )

    def _job_class_metrics(self, f: _Families, snapshot: Snapshot) -> None:
        names = ["target", "class"]
        for job_class, totals in sorted(snapshot.job_classes.items()):
            labels = [snapshot.target, job_class]
            f.counter(
                "sidekiq_job_executions",
                "Job executions by class, failures included, from Sidekiq's per-minute metrics.",
                names,
                labels,
                totals.executions,
            )
            f.counter(
                "sidekiq_job_failures",
                "Job executions that raised, by class, from Sidekiq's per-minute metrics.",
                names,
                labels,
                totals.failures,
            )
            cumulative, buckets = 0, []
            for le, count in zip(HISTOGRAM_LE, totals.histogram, strict=False):
                cumulative += count
                buckets.append((le, float(cumulative)))
            # `_count` (= the +Inf bucket) is the successful executions, `p − f`, so that
            # `_sum / _count` is Sidekiq's own mean. It differs from Σ buckets in two cases:
            # - saturation: a bucket stops at 65,535 per class and minute, and the executions
            #   beyond it show in +Inf only;
            # - a flush between our two round trips: Sidekiq writes the histogram before the
            #   `j|` counts, so the histogram can be one flush ahead. Then +Inf takes Σ buckets
            #   (never below a finite bucket); both sides only grow, so their max does too.
            everything = cumulative + sum(totals.histogram[len(HISTOGRAM_LE) :])
            buckets.append(("+Inf", float(max(totals.successes, everything))))
            f.histogram(
                "sidekiq_job_duration_seconds",
                "Duration of successful job executions only (failures are not timed), by "
                "class, built from Sidekiq's per-minute buckets; each bucket saturates at "
                "65,535 per class per minute (the excess shows in +Inf only).",
                names,
                labels,
                buckets,
                totals.milliseconds / 1000,
            )
