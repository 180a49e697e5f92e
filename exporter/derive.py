"""State between polls: turns one target's Samples into Snapshots.

Owns the per-class counters rebuilt from Sidekiq's per-minute buckets (growth only, the first
poll a baseline), the time each queue spent over its SLA, and when each sidekiq-cron job is
next expected (on Redis TIME, from its cron line, its last enqueue and when it was seen
enabled). Touches no Redis; the reasoning is in docs/architecture.md, docs/job-metrics.md
and docs/cron.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.cardinality import JobClassSelector, ProcessSelector
from exporter.logs import CRON_LINE_UNPARSEABLE, JOB_METRICS_UNAVAILABLE, get_logger
from exporter.model import (
    HISTOGRAM_BUCKETS,
    NO_SLA,
    ClassMinute,
    CronJobSample,
    CronJobSchedule,
    JobClassTotals,
    MetricsMinute,
    ProcessSample,
    QueueSla,
    Sample,
    Snapshot,
)
from exporter.sidekiq.cron_schedule import UNPARSEABLE_CRON, parse_cron_line
from exporter.sidekiq.metrics_window import MIN_WINDOW_MINUTES, window_start

log = get_logger(__name__)


def no_sla(queue: str) -> QueueSla:
    """The SLA resolver used when none is configured: no queue has an SLA."""
    return NO_SLA


@dataclass(frozen=True, slots=True)
class DeriveConfig:
    """What derive needs to know from the settings."""

    metrics_window_minutes: int = MIN_WINDOW_MINUTES
    sla_for: Callable[[str], QueueSla] = field(default=no_sla)
    # A gap between polls longer than this (the exporter could not read) adds no breach time.
    max_breach_gap_seconds: float = 30.0


_ZERO_MINUTE = (0, 0, 0, (0,) * HISTOGRAM_BUCKETS)


def _minute_values(
    minute: ClassMinute, previous: tuple[int, int, int, tuple[int, ...]]
) -> tuple[int, int, int, tuple[int, ...]]:
    # An unreadable histogram keeps the last one seen: its growth is counted when it is
    # readable again, never twice.
    histogram = minute.histogram if minute.histogram is not None else previous[3]
    return minute.executions, minute.failures, minute.milliseconds, histogram


class Deriver:
    """Per-target state between polls; call it with each new Sample to get a Snapshot."""

    def __init__(
        self,
        target: str,
        config: DeriveConfig | None = None,
        *,
        classes: JobClassSelector | None = None,
        processes: ProcessSelector | None = None,
    ) -> None:
        self.target = target
        self.config = config or DeriveConfig()
        # --collect.job-classes.*: the same classes label the job families and running jobs.
        self.classes = classes if classes is not None else JobClassSelector(target)
        # --collect.processes.max; None: no per-process series at all (--no-collect.processes).
        self.processes = processes
        # minute key -> class -> last (executions, failures, ms, histogram) seen
        self._seen: dict[str, dict[str, tuple[int, int, int, tuple[int, ...]]]] = {}
        self._minute_start: dict[str, int] = {}  # minute key -> epoch start of that minute
        # minute key -> the classes (the very tuple) and exported set it was last counted with
        self._counted: dict[str, tuple[tuple[ClassMinute, ...], frozenset[str]]] = {}
        # Minutes starting before this were forgotten: never counted again (only ever grows).
        self._forgotten_before: int | None = None
        self._baseline_taken = False  # the first sample is a baseline (see the module doc)
        self._totals: dict[str, JobClassTotals] = {}
        self._job_metrics_seen = False
        self._unsupported_logged = False
        self._previous_redis_time: float | None = None
        self._breach_seconds: dict[str, float] = {}
        self._slas: dict[str, QueueSla] = {}
        # (namespace, name) of each cron job of the last poll -> None if disabled, else (Redis
        # time it was first seen enabled, whether it was seen disabled before that).
        self._cron_enabled: dict[tuple[str, str], tuple[float, bool] | None] = {}
        # (namespace, name) -> (cron line, reference time, next tick): a tick is computed again
        # only when the job enqueues or its line changes.
        self._cron_ticks: dict[tuple[str, str], tuple[str, float, float | None]] = {}
        self._unparseable_logged = False

    def __call__(self, sample: Sample) -> Snapshot:
        """Fold one sample into the state and return the snapshot to publish."""
        minutes = self._minutes_to_count(sample)
        # The classes this poll saw: in the metrics window, or running now.
        present = {c.job_class for minute in minutes for c in minute.classes}
        present.update(job.job_class for job in sample.running_jobs)
        exported, class_skips, released = self.classes.select(present, sample.redis_time)
        for job_class in released:  # its counters start again if it gets a slot back
            self._totals.pop(job_class, None)
        self._accumulate_job_metrics(minutes, exported)
        running = tuple(j for j in sample.running_jobs if j.job_class in exported)
        supported = self._job_metrics_supported(sample)
        resolve, known = self.config.sla_for, self._slas
        queue_slas = {q.name: known.get(q.name) or resolve(q.name) for q in sample.queues}
        self._slas = queue_slas  # resolved once per queue name while the queue exists
        self._accumulate_breach(sample, queue_slas)
        # One per class or process dropped in this poll, however many series it had.
        skipped: Counter[str] = Counter(class_skips)
        processes: tuple[ProcessSample, ...] = ()
        if self.processes is not None:
            processes, process_skips = self.processes.select(sample.processes)
            skipped.update(process_skips)
        cron_jobs = self._cron_schedules(sample, skipped)
        return Snapshot(
            target=self.target,
            sample=sample,
            job_classes=dict(self._totals),
            job_metrics_supported=supported,
            queue_slas=queue_slas,
            sla_breach_seconds=dict(self._breach_seconds),
            running_jobs=running,
            skipped=dict(skipped),
            cron_jobs=cron_jobs,
            processes=processes,
        )

    def _minutes_to_count(self, sample: Sample) -> list[MetricsMinute]:
        """The sample's minutes not yet forgotten; moves the horizon and forgets older ones."""
        if sample.metrics_minutes:
            self._job_metrics_seen = True
        start = sample.metrics_window_start
        if start is None:  # not told: the window ending at Redis TIME, one minute wider
            start = window_start(sample.redis_time, self.config.metrics_window_minutes + 1)
        # Monotonic: a poll whose clock went back (Redis failover, a clock step) re-reads a
        # minute already forgotten; counting it from zero again would count it twice. The
        # baseline poll counts nothing, so it sets no horizon: its window comes from the
        # exporter's clock alone (the poller learns Redis TIME from it), maybe far off.
        if self._baseline_taken and (
            self._forgotten_before is None or start > self._forgotten_before
        ):
            self._forgotten_before = start
        forgotten_before = self._forgotten_before
        if forgotten_before is None:
            return list(sample.metrics_minutes)
        # Forget minutes that can no longer change: the reader no longer reads them. A minute
        # merely missing from one sample (an error reply) is kept, so it is never counted twice.
        for key, minute_start in list(self._minute_start.items()):
            if minute_start < forgotten_before:
                del self._seen[key], self._minute_start[key]
                self._counted.pop(key, None)
        return [m for m in sample.metrics_minutes if m.minute_start >= forgotten_before]

    def _accumulate_job_metrics(
        self, minutes: list[MetricsMinute], exported: frozenset[str]
    ) -> None:
        baseline = not self._baseline_taken
        self._baseline_taken = True
        permitted, fits = self.classes.permitted, self.classes.fits
        for minute in minutes:
            # The very classes of the last poll (the reader hands a minute read as before as
            # the same tuple), under the same exported classes (a release changes them):
            # nothing to add or change.
            last = self._counted.get(minute.key)
            if last is not None and last[0] is minute.classes and last[1] == exported:
                continue
            self._counted[minute.key] = (minute.classes, exported)
            seen = self._seen.setdefault(minute.key, {})
            self._minute_start[minute.key] = minute.minute_start
            for class_minute in minute.classes:
                klass = class_minute.job_class
                counted = klass in exported
                if not counted and not (permitted(klass) and fits(klass)):
                    continue
                previous = seen.get(klass, _ZERO_MINUTE)
                current = _minute_values(class_minute, previous)
                # Seen also while the class is not exported, so that once it gets a slot only
                # what it runs from then on is counted.
                seen[klass] = current
                if not counted:
                    continue
                totals = self._totals.get(klass)
                if totals is None:
                    totals = self._totals[klass] = JobClassTotals()
                if baseline or current == previous:
                    continue
                # Only growth counts: a re-read adds nothing, a late flush adds its part. A
                # value that fell (the key was deleted and re-created) adds nothing either, and
                # the lower value becomes the base for what follows.
                self._totals[klass] = JobClassTotals(
                    executions=totals.executions + max(0, current[0] - previous[0]),
                    failures=totals.failures + max(0, current[1] - previous[1]),
                    milliseconds=totals.milliseconds + max(0, current[2] - previous[2]),
                    histogram=tuple(
                        total + max(0, now - before)
                        for total, now, before in zip(
                            totals.histogram, current[3], previous[3], strict=True
                        )
                    ),
                )

    def _job_metrics_supported(self, sample: Sample) -> bool:
        # Sidekiq 7.0+ always records metrics (and is the first to report `version`); 6.5.2+
        # only with SIDEKIQ_METRICS_BETA=1 and 6.4 never: then the job families stay absent.
        if self._job_metrics_seen or any(
            p.version and not p.version.startswith("6.") for p in sample.processes
        ):
            return True
        if sample.processes and not self._unsupported_logged:
            self._unsupported_logged = True
            log.info(
                JOB_METRICS_UNAVAILABLE,
                target=self.target,
                reason="no execution metrics in Redis and no process reports Sidekiq 7.0.2+: "
                "Sidekiq 6.4 keeps none, 6.5 only with SIDEKIQ_METRICS_BETA=1; the per-class "
                "job families are omitted until some appear",
            )
        return False

    def _accumulate_breach(self, sample: Sample, queue_slas: dict[str, QueueSla]) -> None:
        now, previous = sample.redis_time, self._previous_redis_time
        self._previous_redis_time = now
        elapsed = 0.0 if previous is None else now - previous
        if not 0.0 < elapsed <= self.config.max_breach_gap_seconds:
            elapsed = 0.0  # first poll, clock step back, or a gap we did not observe
        breach: dict[str, float] = {}
        for queue in sample.queues:
            sla = queue_slas[queue.name].seconds
            if sla is None:
                continue
            total = self._breach_seconds.get(queue.name, 0.0)
            over = queue.latency_at(now) - sla
            if over > 0:
                # The breach cannot have begun before the oldest job crossed the SLA.
                total += min(elapsed, over)
            breach[queue.name] = total
        self._breach_seconds = breach

    def _cron_schedules(self, sample: Sample, skipped: Counter[str]) -> tuple[CronJobSchedule, ...]:
        """Each cron job with its next expected tick: the first tick of its cron line after its
        last enqueue; for a job seen enabled again, after that if it is later (it fires at its
        next tick, not at the ones it missed while disabled); for one that never fired, after
        the exporter first saw it enabled."""
        now = sample.redis_time
        previous, previous_ticks = self._cron_enabled, self._cron_ticks
        enabled: dict[tuple[str, str], tuple[float, bool] | None] = {}
        ticks: dict[tuple[str, str], tuple[str, float, float | None]] = {}
        schedules = []
        for job in sample.cron_jobs or ():
            key = (job.namespace, job.name)
            if not job.enabled:
                enabled[key] = None
                schedules.append(CronJobSchedule(job, None))
                continue
            # Seen disabled before: enabled again now. Never seen (a new job, the exporter's
            # first poll, a namespace just found): its last enqueue is all that is known.
            since, again = enabled[key] = previous.get(key) or (now, key in previous)
            last = job.last_enqueue_timestamp
            reference = since if last is None else max(last, since) if again else last
            cached = previous_ticks.get(key)
            if cached is not None and cached[0] == job.cron and cached[1] == reference:
                tick = cached[2]
            else:
                schedule = parse_cron_line(job.cron)
                tick = schedule.next_after(reference) if schedule is not None else None
            ticks[key] = (job.cron, reference, tick)
            if tick is None:
                skipped[UNPARSEABLE_CRON] += 1
                self._unparseable(job)
            schedules.append(CronJobSchedule(job, tick))
        self._cron_enabled, self._cron_ticks = enabled, ticks
        return tuple(sorted(schedules, key=lambda s: (s.job.namespace, s.job.name)))

    def _unparseable(self, job: CronJobSample) -> None:
        if not self._unparseable_logged:
            self._unparseable_logged = True
            log.warning(
                CRON_LINE_UNPARSEABLE,
                target=self.target,
                namespace=job.namespace,
                cron_job=job.name,
                cron=job.cron,
                reason="a cron line the exporter cannot evaluate (docs/cron.md says which it "
                "can): the job has no next-expected or overdue series, and is counted in "
                'sidekiq_exporter_skipped_items_total{reason="unparseable_cron"}',
            )
