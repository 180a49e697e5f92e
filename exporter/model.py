"""The data that flows from the reader to the collector: `Sample` (what one poll read, at one
instant) and `Snapshot` (a sample plus what only a sequence of samples tells), frozen so any
number of scrapes can share them. Imports neither redis nor prometheus_client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

# Sidekiq's execution-time histogram: 26 buckets with these exclusive upper bounds in
# milliseconds, the last one unbounded (`lib/sidekiq/metrics/shared.rb`, 6.5.2 through 8.1).
HISTOGRAM_BUCKET_BOUNDS_MS: tuple[int, ...] = (
    20, 30, 45, 65, 100, 150, 225, 335, 500, 750, 1_100, 1_700, 2_500, 3_800,
    5_750, 8_500, 13_000, 20_000, 30_000, 45_000, 65_000, 100_000, 150_000,
    225_000, 335_000,
)  # fmt: skip
HISTOGRAM_BUCKETS = len(HISTOGRAM_BUCKET_BOUNDS_MS) + 1

# A snapshot older than this many poll intervals is stale: its Sidekiq families are no longer
# exported and `sidekiq_up` is 0.
STALE_AFTER_INTERVALS = 3


def clamp_age(now: float, then: float | None) -> float:
    """Seconds from `then` to `now`, never negative (clock skew between hosts), 0 if unknown."""
    if then is None:
        return 0.0
    return max(0.0, now - then)


class QueueSample(NamedTuple):
    """One queue: its size and the timestamp of its oldest job (the next one to run).

    A named tuple, not a frozen dataclass like the others: as immutable, and built in a third
    of the time, which counts at one per queue and poll (10,000 queues: ~5 ms a poll)."""

    name: str
    size: int
    # Epoch seconds of the oldest job's `enqueued_at` (else `created_at`); None when the
    # queue is empty or the job carries neither.
    oldest_job_timestamp: float | None
    paused: bool

    def latency_at(self, now: float) -> float:
        """Age of the oldest job at `now`, as Sidekiq's `Queue#latency` computes it."""
        return clamp_age(now, self.oldest_job_timestamp)


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One live Sidekiq process (its heartbeat hash exists)."""

    identity: str
    hostname: str
    tag: str
    version: str  # "" before Sidekiq 7.0.2, which is the first to report it
    concurrency: int
    busy: int
    heartbeat_timestamp: float
    start_timestamp: float
    quiet: bool
    rss_bytes: int
    redis_rtt_seconds: float
    # Threads that can serve each queue: per capsule where `info.capsules` says (8.0.9+),
    # otherwise the whole process concurrency for every queue it listens to.
    queue_capacity: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """One job running now, from a process's work hash."""

    process_identity: str
    queue: str
    job_class: str
    run_at: float  # epoch seconds the job started (`run_at`, whole seconds in every version)


@dataclass(frozen=True, slots=True)
class ScheduledSetSample:
    """A sorted set whose score is a due time: `schedule` or `retry`."""

    size: int
    overdue: int  # members whose score is already in the past
    oldest_score: float | None  # lowest score, None when the set is empty


@dataclass(frozen=True, slots=True)
class ClassMinute:
    """One job class in one per-minute metrics bucket (Sidekiq 6.5.2+ / 7 / 8)."""

    job_class: str
    executions: int  # `<class>|p`: every execution, failures included
    failures: int  # `<class>|f`
    milliseconds: int  # `<class>|ms`: wall time of successful executions
    # HISTOGRAM_BUCKETS counts, fastest bucket first; None when it could not be read this poll
    # (an error reply or a malformed value): unknown, which is not the same as all zero.
    histogram: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class MetricsMinute:
    """One `j|…` hash: one minute of Sidekiq's execution metrics in one key family."""

    key: str  # the Redis key; unique per minute and family, used to de-duplicate re-reads
    minute_start: int  # epoch seconds of the minute's start (UTC)
    classes: tuple[ClassMinute, ...]


@dataclass(frozen=True, slots=True)
class CronJobSample:
    """One sidekiq-cron job, from its hash: `cron_job:<name>` (1.x), `cron_job:<ns>:<name>`."""

    namespace: str  # "" for sidekiq-cron 1.x, which has none
    name: str
    enabled: bool  # `status` is "enabled" (a missing one too, as sidekiq-cron reads it)
    cron: str  # the cron line as stored, in the syntax of sidekiq-cron's parser (fugit)
    last_enqueue_timestamp: float | None  # when it last enqueued (its poller's clock); None: never


@dataclass(frozen=True, slots=True)
class Sample:
    """Everything one poll read from one Sidekiq Redis, at one instant."""

    redis_time: float  # Redis `TIME`, epoch seconds: the reference clock for every age
    processed: int | None  # `stat:processed`; None when its value was unusable (skipped)
    failed: int | None  # `stat:failed`; likewise
    scheduled: ScheduledSetSample
    retry: ScheduledSetSample
    dead_size: int
    # Every exported queue: the `queues` set's, then (empty, by name) those only processes or
    # running jobs name, served but never pushed to.
    queues: tuple[QueueSample, ...]
    processes: tuple[ProcessSample, ...]
    running_jobs: tuple[RunningJob, ...]
    metrics_minutes: tuple[MetricsMinute, ...]
    round_trips: int
    commands: int
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> items skipped here
    # Jobs waiting in ALL queues (sum of LLEN), including queues not exported (deny regex,
    # queue limit) and so missing from `queues`; None: the sum over `queues`.
    enqueued_jobs: int | None = None
    # Epoch start of the oldest metrics minute the reader asked for (present or not); the
    # deriver forgets older minutes. None: derive it from `redis_time` and the window size.
    metrics_window_start: int | None = None
    # (reason, Redis key) of the first few items skipped here, for the debug log.
    skipped_keys: tuple[tuple[str, str], ...] = ()
    # sidekiq-cron's jobs within the cron limits; None: not read (`--no-collect.cron`)
    cron_jobs: tuple[CronJobSample, ...] | None = None
    leader: str | None = None  # identity of Sidekiq Enterprise's leader, if there is one

    @property
    def enqueued_total(self) -> int:
        """Jobs waiting in all queues, exported or not (Sidekiq's `Stats#enqueued`)."""
        if self.enqueued_jobs is not None:
            return self.enqueued_jobs
        return sum(q.size for q in self.queues)


@dataclass(frozen=True, slots=True)
class JobClassTotals:
    """Counters for one job class, accumulated over every minute bucket the exporter saw."""

    executions: int = 0
    failures: int = 0
    milliseconds: int = 0
    histogram: tuple[int, ...] = (0,) * HISTOGRAM_BUCKETS  # per bucket, not cumulative

    @property
    def successes(self) -> int:
        """Executions that did not raise: the population of `milliseconds` and `histogram`."""
        return self.executions - self.failures


@dataclass(frozen=True, slots=True)
class QueueSla:
    """The latency a queue promises, and where that promise was found."""

    seconds: float | None  # None: no SLA known
    component: str  # "" when none
    source: str  # "name", "config" or "none"


NO_SLA = QueueSla(seconds=None, component="", source="none")


@dataclass(frozen=True, slots=True)
class CronJobSchedule:
    """A cron job and when it is next expected to enqueue, on Redis TIME."""

    job: CronJobSample
    # The first tick of its cron line after its last enqueue (never enqueued: after the
    # exporter first saw it). None: disabled, or a cron line the exporter cannot evaluate.
    next_expected: float | None

    def overdue_at(self, now: float) -> float:
        """How long the expected tick has passed without an enqueue at `now`, 0 if it has not."""
        return clamp_age(now, self.next_expected)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A sample plus the state derived from earlier samples; what `/metrics` renders."""

    target: str
    sample: Sample
    job_classes: Mapping[str, JobClassTotals]
    job_metrics_supported: bool
    queue_slas: Mapping[str, QueueSla]
    sla_breach_seconds: Mapping[str, float]
    # The sample's running jobs whose class is within the job-class limits: the ones exported
    # by class. (Per-queue busy counts use every running job of the sample.)
    running_jobs: tuple[RunningJob, ...]
    # reason -> skipped while deriving: over a limit, or a cron line that cannot be evaluated
    skipped: Mapping[str, int] = field(default_factory=dict)
    cron_jobs: tuple[CronJobSchedule, ...] = ()  # the sample's cron jobs, by (namespace, name)
    # The sample's processes within the process limit: the ones with per-process series. (The
    # totals and per-queue capacity count every process of the sample.)
    processes: tuple[ProcessSample, ...] = ()
