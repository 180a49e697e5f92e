"""Turns the latest Snapshot of every target (and the HTTP server's counters) into metric
families, row by row of the metric table (exporter/metrics.py); names no family outside it and
never talks to Redis. What one target renders:

    # HELP sidekiq_queue_latency_seconds Age of the oldest job in the queue ... Sampled every 10s.
    # TYPE sidekiq_queue_latency_seconds gauge
    sidekiq_queue_latency_seconds{queue="default",target="main"} 0.42
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol, cast

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter import metrics as m
from exporter.clock import Clock
from exporter.exposition import Exposition, ExpositionWriter, Sink
from exporter.model import (
    HISTOGRAM_BUCKET_BOUNDS_MS,
    STALE_AFTER_INTERVALS,
    ScheduledSetSample,
    Snapshot,
    clamp_age,
)
from exporter.store import Store, TargetStatus

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


_KINDS: dict[m.Kind, Callable[..., Metric]] = {
    "gauge": GaugeMetricFamily,
    "info": GaugeMetricFamily,  # an info-style gauge: value 1, the facts in its labels
    "counter": CounterMetricFamily,
    "histogram": HistogramMetricFamily,
}


class _Series(Protocol):
    """What gauge, counter and info families have in common: one value per series."""

    def add_metric(self, labels: Sequence[str], value: float) -> None: ...


def help_text(row: m.Family, poll_interval: float) -> str:
    """The HELP text of `row`: Sidekiq data is a sample of the last poll, the exporter's own
    metrics are not."""
    return row.help if row.own else f"{row.help} Sampled every {poll_interval:g}s."


class _Families:
    """Builds prometheus_client's metric families for all targets (the reference `Sink`; the
    daemon's hot path writes the same calls as text: exporter/exposition.py): only rows of the
    metric table, each family created on first use (so a family without series is not
    exposed)."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.families: dict[str, Metric] = {}

    def family(self, row: m.Family) -> Metric:
        """The family of `row`, created the first time it is asked for; only table rows."""
        family = self.families.get(row.name)
        if family is None:
            if m.BY_NAME.get(row.name) is not row:
                raise ValueError(
                    f"{row.name} is not a row of the metric table (exporter/metrics.py)"
                )
            help_ = help_text(row, self.poll_interval)
            family = _KINDS[row.kind](row.name, help_, labels=list(row.labels))
            self.families[row.name] = family
        return family

    def add(self, row: m.Family, values: tuple[str, ...], value: float) -> None:
        """One series of a gauge, counter or info family; `values` in `row.labels` order."""
        # Once per series (~16,000 a render at the default limits): a lookup, then the call.
        family: _Series | None = self.families.get(row.name)  # type: ignore[assignment]
        if family is None:
            if row.kind == "histogram":
                raise ValueError(f"{row.name} is a histogram: its series go through histogram()")
            family = cast(_Series, self.family(row))
        family.add_metric(list(values), value)

    def histogram(
        self,
        row: m.Family,
        values: tuple[str, ...],
        buckets: Sequence[tuple[str, float]],
        sum_value: float,
    ) -> None:
        """One series of a histogram family: cumulative `buckets` (`le`, count), then `_sum`."""
        if row.kind != "histogram":
            raise ValueError(f"{row.name} is a {row.kind}, not a histogram")
        family = cast(HistogramMetricFamily, self.family(row))
        family.add_metric(list(values), list(buckets), sum_value)


class _Pinned(Collector):
    """One pinned state of a `SidekiqCollector`: the statuses and freshness read by `pin`.
    prometheus_client collects it (`collect`); the daemon writes it as text (`write`)."""

    __slots__ = ("_collector", "_fresh", "_statuses", "valid_for")

    def __init__(
        self,
        collector: SidekiqCollector,
        statuses: tuple[TargetStatus, ...],
        fresh: tuple[bool, ...],
        valid_for: float | None,
    ) -> None:
        self._collector = collector
        self._statuses = statuses
        self._fresh = fresh
        # Seconds from the pin until the first fresh target goes stale: the key changes then,
        # without a publish (None: no fresh target).
        self.valid_for = valid_for

    def collect(self) -> Iterator[Metric]:
        families = _Families(self._collector.settings.poll_interval)
        self._collector._build(families, self._statuses, self._fresh)
        return iter(families.families.values())

    def write(self, writer: ExpositionWriter) -> Exposition:
        interval = self._collector.settings.poll_interval
        return writer.render(
            lambda row: help_text(row, interval),
            lambda sink: self._collector._build(sink, self._statuses, self._fresh),
        )


class SidekiqCollector(Collector):
    """Renders the store: Sidekiq families from fresh snapshots, self-metrics always."""

    def __init__(self, store: Store, settings: CollectorSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """Every family the collector can emit, from the metric table, without series: the
        registry checks their names for duplicates and routes `name[]` scrapes here by them."""
        families = _Families(self.settings.poll_interval)
        return [families.family(row) for row in m.METRICS if row not in m.HTTP_SERVER]

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
        deadlines = [
            status.snapshot_completed_at + STALE_AFTER_INTERVALS * interval - now
            for status, is_fresh in zip(state.statuses, fresh, strict=True)
            if is_fresh and status.snapshot_completed_at is not None
        ]
        valid_for = min(deadlines, default=None)
        return (state.version, fresh), _Pinned(self, state.statuses, fresh, valid_for)

    def _build(self, f: Sink, statuses: Sequence[TargetStatus], fresh: Sequence[bool]) -> None:
        """The series of `statuses` into `f`, each target fresh or not as `fresh` says."""
        f.add(m.BUILD_INFO, (__version__,), 1)
        for status, is_fresh in zip(statuses, fresh, strict=True):
            self._exporter_metrics(f, status, up=status.up and is_fresh)
            if is_fresh and status.snapshot is not None:
                self._sidekiq_metrics(f, status.snapshot)

    @staticmethod
    def _fresh(status: TargetStatus, now: float, interval: float) -> bool:
        completed = status.snapshot_completed_at
        if status.snapshot is None or completed is None:
            return False
        return now - completed <= STALE_AFTER_INTERVALS * interval

    def _exporter_metrics(self, f: Sink, status: TargetStatus, *, up: bool) -> None:
        t = (status.target,)
        f.add(m.UP, t, 1 if up else 0)
        if status.last_poll_duration_seconds is not None:
            f.add(m.POLL_DURATION, t, status.last_poll_duration_seconds)
        for result, count in (("success", status.polls_success), ("error", status.polls_error)):
            f.add(m.POLLS, (status.target, result), count)
        if status.last_success_timestamp is not None:
            f.add(m.LAST_POLL_SUCCESS, t, status.last_success_timestamp)
        if status.last_round_trips is not None:
            f.add(m.ROUND_TRIPS, t, status.last_round_trips)
        for reason, count in sorted(status.skipped_totals.items()):
            f.add(m.SKIPPED_ITEMS, (status.target, reason), count)

    def _sidekiq_metrics(self, f: Sink, snapshot: Snapshot) -> None:
        sample, target = snapshot.sample, snapshot.target
        now = sample.redis_time
        t = (target,)
        if sample.processed is not None:
            f.add(m.PROCESSED_JOBS, t, sample.processed)
        if sample.failed is not None:
            f.add(m.FAILED_JOBS, t, sample.failed)
        f.add(m.ENQUEUED_JOBS, t, sample.enqueued_total)
        f.add(m.SCHEDULED_JOBS, t, sample.scheduled.size)
        f.add(m.RETRY_JOBS, t, sample.retry.size)
        f.add(m.DEAD_JOBS, t, sample.dead_size)
        sets: tuple[tuple[str, ScheduledSetSample], ...] = (
            ("schedule", sample.scheduled),
            ("retry", sample.retry),
        )
        for set_name, zset in sets:
            f.add(m.SCHEDULED_OVERDUE_JOBS, (target, set_name), zset.overdue)
            lag = clamp_age(now, zset.oldest_score) if zset.oldest_score is not None else 0.0
            f.add(m.SCHEDULED_LAG, (target, set_name), lag)
        self._queue_metrics(f, snapshot)
        self._process_metrics(f, snapshot)
        self._running_metrics(f, snapshot)
        if snapshot.job_metrics_supported:
            self._job_class_metrics(f, snapshot)
        if sample.cron_jobs is not None:
            self._cron_metrics(f, snapshot)
        if sample.leader is not None:
            f.add(m.LEADER_INFO, (target, sample.leader), 1)

    def _queue_metrics(self, f: Sink, snapshot: Snapshot) -> None:
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
            # A quiet or stopping process fetches no new job: its threads are no capacity for
            # the jobs waiting (its running jobs still count as busy in their queues).
            if process.quiet:
                continue
            for served, threads in process.queue_capacity.items():
                workers[served] += threads
                listeners[served] += 1
        for queue in sample.queues:
            name = queue.name
            labels = (target, name)
            f.add(m.QUEUE_ENQUEUED_JOBS, labels, queue.size)
            f.add(m.QUEUE_LATENCY, labels, queue.latency_at(now))
            f.add(m.QUEUE_PAUSED, labels, 1 if queue.paused else 0)
            f.add(m.QUEUE_BUSY_WORKERS, labels, busy.get(name, 0))
            f.add(m.QUEUE_WORKERS, labels, workers.get(name, 0))
            f.add(m.QUEUE_PROCESSES, labels, listeners.get(name, 0))
            f.add(m.QUEUE_MAX_PROCESSING_TIME, labels, clamp_age(now, oldest_run.get(name)))
        for queue in sample.queues:
            name = queue.name
            sla = snapshot.queue_slas.get(name)
            if sla is None:
                continue
            labels = (target, name)
            f.add(m.QUEUE_INFO, (target, name, sla.component, sla.source), 1)
            if sla.seconds is None:
                continue
            f.add(m.QUEUE_SLA, labels, sla.seconds)
            f.add(m.QUEUE_SLA_BREACH, labels, snapshot.sla_breach_seconds.get(name, 0.0))

    def _process_metrics(self, f: Sink, snapshot: Snapshot) -> None:
        sample, target = snapshot.sample, snapshot.target
        processes = sample.processes
        f.add(m.PROCESSES, (target,), len(processes))
        f.add(m.WORKERS, (target,), sum(p.concurrency for p in processes))
        f.add(m.BUSY_WORKERS, (target,), sum(p.busy for p in processes))
        if not self.settings.collect_processes:
            return
        for p in snapshot.processes:  # within --collect.processes.max
            labels = (target, p.identity, p.hostname, p.tag)
            f.add(m.PROCESS_BUSY_WORKERS, labels, p.busy)
            f.add(m.PROCESS_CONCURRENCY, labels, p.concurrency)
            f.add(m.PROCESS_MEMORY_RSS, labels, p.rss_bytes)
            f.add(m.PROCESS_REDIS_RTT, labels, p.redis_rtt_seconds)
            f.add(m.PROCESS_HEARTBEAT, labels, p.heartbeat_timestamp)
            f.add(m.PROCESS_START_TIME, labels, p.start_timestamp)
            f.add(m.PROCESS_QUIET, labels, 1 if p.quiet else 0)
            f.add(m.PROCESS_INFO, (*labels, p.version), 1)

    def _running_metrics(self, f: Sink, snapshot: Snapshot) -> None:
        # Only jobs whose class is within the job-class limits get a `class` label.
        sample, target = snapshot.sample, snapshot.target
        count: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[tuple[str, str], float] = {}
        for job in snapshot.running_jobs:
            key = (job.queue, job.job_class)
            count[key] += 1
            oldest[key] = min(oldest.get(key, job.run_at), job.run_at)
        for (queue, job_class), running in sorted(count.items()):
            labels = (target, queue, job_class)
            f.add(m.RUNNING_JOBS, labels, running)
            f.add(
                m.RUNNING_JOB_MAX_AGE,
                labels,
                clamp_age(sample.redis_time, oldest[(queue, job_class)]),
            )

    def _job_class_metrics(self, f: Sink, snapshot: Snapshot) -> None:
        for job_class, totals in sorted(snapshot.job_classes.items()):
            labels = (snapshot.target, job_class)
            f.add(m.JOB_EXECUTIONS, labels, totals.executions)
            f.add(m.JOB_FAILURES, labels, totals.failures)
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
            f.histogram(m.JOB_DURATION, labels, buckets, totals.milliseconds / 1000)

    def _cron_metrics(self, f: Sink, snapshot: Snapshot) -> None:
        target, now = snapshot.target, snapshot.sample.redis_time
        enabled = sum(1 for s in snapshot.cron_jobs if s.job.enabled)
        f.add(m.CRON_JOBS, (target, "enabled"), enabled)
        f.add(m.CRON_JOBS, (target, "disabled"), len(snapshot.cron_jobs) - enabled)
        for schedule in snapshot.cron_jobs:
            job = schedule.job
            labels = (target, job.namespace, job.name)
            f.add(m.CRON_JOB_ENABLED, labels, 1 if job.enabled else 0)
            if job.last_enqueue_timestamp is not None:
                f.add(m.CRON_JOB_LAST_ENQUEUE, labels, job.last_enqueue_timestamp)
            if schedule.next_expected is not None:
                f.add(m.CRON_JOB_NEXT_EXPECTED, labels, schedule.next_expected)
                f.add(m.CRON_JOB_OVERDUE, labels, schedule.overdue_at(now))


class HttpCounts(Protocol):
    """What the HTTP server counted (`exporter.web.server.HttpCounters`): fixed keys."""

    @property
    def bad_requests(self) -> Mapping[str, int]: ...

    @property
    def limit_hits(self) -> Mapping[str, int]: ...


class HttpCollector(Collector):
    """The HTTP server's own counters. Pinnable, like the Sidekiq collector: /metrics renders
    them again only when a count changed (exporter/render_cache.py)."""

    def __init__(self, counts: HttpCounts) -> None:
        self.counts = counts

    def describe(self) -> Iterable[Metric]:
        families = _Families(0)
        return [families.family(row) for row in m.HTTP_SERVER]

    def collect(self) -> Iterator[Metric]:
        _, pinned = self.pin()
        yield from pinned.collect()

    def pin(self) -> tuple[Hashable, Collector]:
        """The counts now (the key: equal counts, equal output) and a collector of them."""
        counts = (
            tuple(sorted(self.counts.bad_requests.items())),
            tuple(sorted(self.counts.limit_hits.items())),
        )
        return counts, _PinnedHttpCounts(*counts)


class _PinnedHttpCounts(Collector):
    """The HTTP server's counts as `HttpCollector.pin` read them."""

    def __init__(
        self, bad_requests: Sequence[tuple[str, int]], limit_hits: Sequence[tuple[str, int]]
    ) -> None:
        self._bad_requests = bad_requests
        self._limit_hits = limit_hits

    def collect(self) -> Iterator[Metric]:
        families = _Families(0)
        self._build(families)
        return iter(families.families.values())

    def write(self, writer: ExpositionWriter) -> Exposition:
        return writer.render(lambda row: help_text(row, 0), self._build)

    def _build(self, f: Sink) -> None:
        for reason, count in self._bad_requests:
            f.add(m.HTTP_BAD_REQUESTS, (reason,), count)
        for limit, count in self._limit_hits:
            f.add(m.HTTP_LIMIT_HITS, (limit,), count)
