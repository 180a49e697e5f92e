"""The metric table: one row per family the exporter serves (name, type, HELP, labels, unit,
the Sidekiq versions that feed it). The collector emits only these rows, `describe()` and
docs/metrics.md come from them; computes no value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from exporter.model import STALE_AFTER_INTERVALS

# "info": a gauge whose value is always 1 and whose labels carry the facts.
Kind = Literal["gauge", "counter", "histogram", "info"]

# Which Sidekiq versions feed a family.
ALL_VERSIONS: Final = "6.4 – 8.1"
JOB_METRICS_VERSIONS: Final = "7.0 – 8.1; 6.5.2+ with `SIDEKIQ_METRICS_BETA=1`"
CRON_VERSIONS: Final = "6.4 – 8.1 with sidekiq-cron 1.x or 2.x"
EXPORTER_ITSELF: Final = "— (the exporter's own)"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as the exporter serves it."""

    name: str  # as queried: a counter's name ends in `_total`
    kind: Kind
    help: str  # HELP text; Sidekiq families get "Sampled every <interval>." appended
    labels: tuple[str, ...]
    # What a value counts or measures, for the reference. Not sent as an OpenMetrics `# UNIT`
    # line: the exposition has never carried one, and adding it would change every scrape.
    unit: str
    sidekiq: str = ALL_VERSIONS  # which Sidekiq versions feed it
    notes: str = ""  # more for the reference (docs/metrics.md), never in HELP

    @property
    def own(self) -> bool:
        """The exporter's own metric, not sampled from Sidekiq (its HELP says no interval)."""
        return self.sidekiq == EXPORTER_ITSELF

    @property
    def family_name(self) -> str:
        """The name in the exposition's HELP/TYPE lines of OpenMetrics (no `_total`)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names the family's series carry."""
        if self.kind == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


_TARGET: Final = ("target",)
_QUEUE: Final = ("target", "queue")
_SET: Final = ("target", "set")
_PROCESS: Final = ("target", "identity", "hostname", "tag")
_RUNNING: Final = ("target", "queue", "class")
_CLASS: Final = ("target", "class")
# Not `job` and `namespace`: Prometheus sets `job` on every target, and Kubernetes service
# discovery (the ServiceMonitor of deploy/) sets `namespace`; either would be renamed
# `exported_*` at ingestion.
_CRON_JOB: Final = ("target", "cron_namespace", "cron_job")


# --- the exporter's own --------------------------------------------------------------------------

BUILD_INFO: Final = Family(
    "sidekiq_exporter_build_info",
    "info",
    "sidekiq-exporter build, value 1.",
    ("version",),
    "1",
    EXPORTER_ITSELF,
)
UP: Final = Family(
    "sidekiq_up",
    "gauge",
    "1 if the last poll of this target's Redis succeeded and its data is fresh "
    f"(younger than {STALE_AFTER_INTERVALS} poll intervals), else 0.",
    _TARGET,
    "1 or 0",
    EXPORTER_ITSELF,
    "Stays while the exporter runs; the target's Sidekiq series disappear while it is 0 "
    "because the data went stale.",
)
POLL_DURATION: Final = Family(
    "sidekiq_exporter_poll_duration_seconds",
    "gauge",
    "Duration of the last poll of this target's Redis.",
    _TARGET,
    "seconds",
    EXPORTER_ITSELF,
)
POLLS: Final = Family(
    "sidekiq_exporter_polls_total",
    "counter",
    "Polls of this target's Redis, by result.",
    ("target", "result"),
    "polls",
    EXPORTER_ITSELF,
    "`result` is `success` or `error`.",
)
LAST_POLL_SUCCESS: Final = Family(
    "sidekiq_exporter_last_poll_success_timestamp_seconds",
    "gauge",
    "When the last successful poll of this target finished (exporter clock).",
    _TARGET,
    "seconds (Unix time)",
    EXPORTER_ITSELF,
)
ROUND_TRIPS: Final = Family(
    "sidekiq_exporter_redis_round_trips",
    "gauge",
    "Redis round trips the last successful poll needed (constant per poll).",
    _TARGET,
    "round trips",
    EXPORTER_ITSELF,
    "2, plus one per extra SSCAN page of a set over ~50,000 members.",
)
SKIPPED_ITEMS: Final = Family(
    "sidekiq_exporter_skipped_items_total",
    "counter",
    "Items read from Redis but skipped: malformed, wrong Redis type, over a limit.",
    ("target", "reason"),
    "items",
    EXPORTER_ITSELF,
    "`reason`: `invalid_job`, `invalid_process`, `invalid_work`, `invalid_metric`, "
    "`invalid_counter` (a counter key such as `stat:processed` that is not a whole number of "
    "at least 0: its series is left out), `invalid_timestamp` (a time from Redis before "
    "2001-09-09 or after the year 5138: a job's, a process's, a sorted-set score, Redis "
    "`TIME`), `invalid_cron_job`, `unparseable_cron`, `wrong_type`, `command_error`, "
    "`queue_limit`, `class_limit`, `cron_limit` ([cron](cron.md) for the three cron ones), "
    "`process_limit` (a live process without per-process series), `label_too_long` (a queue, "
    "class, process, cron job or leader whose name, identity, hostname, tag, version or "
    "namespace is longer than `--collect.label-value-length.max`).",
)

HTTP_BAD_REQUESTS: Final = Family(
    "sidekiq_exporter_http_bad_requests_total",
    "counter",
    "Malformed HTTP requests answered 400, by reason.",
    ("reason",),
    "requests",
    EXPORTER_ITSELF,
    "`reason`: `method`, `request_line`, `url`, `too_long` (request line or a header), "
    "`malformed` (anything else: headers, framing, smuggling attempts). Logged at DEBUG only, "
    "once per 10 s at most.",
)
HTTP_LIMIT_HITS: Final = Family(
    "sidekiq_exporter_http_limit_hits_total",
    "counter",
    "Connections closed and requests refused by a limit of the HTTP server, by limit.",
    ("limit",),
    "connections or requests",
    EXPORTER_ITSELF,
    "`limit`: `max_connections` (an idle connection closed to make room, or a new one "
    "refused), `read_header_timeout` (a TLS handshake or a request's headers too slow), "
    "`credential_queue` (429: too many credential checks waiting). See the Hardening "
    "section of docs/security.md.",
)
# The HTTP server's families: not per target; emitted by `HttpCollector` on every scrape.
HTTP_SERVER: Final = (HTTP_BAD_REQUESTS, HTTP_LIMIT_HITS)

# --- Sidekiq: the whole target -------------------------------------------------------------------

PROCESSED_JOBS: Final = Family(
    "sidekiq_processed_jobs_total",
    "counter",
    "Jobs executed, failures included (Sidekiq stat:processed).",
    _TARGET,
    "jobs",
)
FAILED_JOBS: Final = Family(
    "sidekiq_failed_jobs_total",
    "counter",
    "Job executions that raised (Sidekiq stat:failed).",
    _TARGET,
    "jobs",
)
ENQUEUED_JOBS: Final = Family(
    "sidekiq_enqueued_jobs",
    "gauge",
    "Jobs waiting in all queues (sum of the queue sizes, exported or not).",
    _TARGET,
    "jobs",
)
SCHEDULED_JOBS: Final = Family(
    "sidekiq_scheduled_jobs", "gauge", "Jobs in the schedule set.", _TARGET, "jobs"
)
RETRY_JOBS: Final = Family("sidekiq_retry_jobs", "gauge", "Jobs in the retry set.", _TARGET, "jobs")
DEAD_JOBS: Final = Family("sidekiq_dead_jobs", "gauge", "Jobs in the dead set.", _TARGET, "jobs")
SCHEDULED_OVERDUE_JOBS: Final = Family(
    "sidekiq_scheduled_overdue_jobs",
    "gauge",
    "Members of the schedule or retry set already due but not yet moved to a queue.",
    _SET,
    "jobs",
    notes="`set` is `schedule` or `retry`.",
)
SCHEDULED_LAG: Final = Family(
    "sidekiq_scheduled_lag_seconds",
    "gauge",
    "How long the oldest due member of the set has been waiting to be moved, 0 if none: a "
    "stuck scheduler shows here first.",
    _SET,
    "seconds",
)

# --- Sidekiq: per queue --------------------------------------------------------------------------

QUEUE_ENQUEUED_JOBS: Final = Family(
    "sidekiq_queue_enqueued_jobs",
    "gauge",
    "Jobs waiting in the queue (LLEN).",
    _QUEUE,
    "jobs",
    notes="Queues that live processes serve but nobody pushed to are shown as empty queues.",
)
QUEUE_LATENCY: Final = Family(
    "sidekiq_queue_latency_seconds",
    "gauge",
    "Age of the oldest job in the queue (enqueued_at, else created_at), 0 if empty.",
    _QUEUE,
    "seconds",
    notes="Measured on Redis `TIME`; job timestamps are read per field and job (Sidekiq 8 "
    "writes milliseconds).",
)
QUEUE_PAUSED: Final = Family(
    "sidekiq_queue_paused",
    "gauge",
    "1 if Sidekiq Pro has paused the queue.",
    _QUEUE,
    "1 or 0",
    "6.4 – 8.1 (Sidekiq Pro's `paused` set)",
)
QUEUE_BUSY_WORKERS: Final = Family(
    "sidekiq_queue_busy_workers",
    "gauge",
    "Jobs of this queue running now, counted from the processes' work hashes.",
    _QUEUE,
    "jobs",
)
QUEUE_WORKERS: Final = Family(
    "sidekiq_queue_workers",
    "gauge",
    "Threads of live processes that fetch from this queue (capacity); quiet or stopping "
    "processes fetch nothing and do not count.",
    _QUEUE,
    "threads",
    notes="Per capsule where the process reports capsules (8.0.9+), else its concurrency. "
    "`sidekiq_workers` still counts every live process.",
)
QUEUE_PROCESSES: Final = Family(
    "sidekiq_queue_processes",
    "gauge",
    "Live processes that fetch from this queue; quiet or stopping ones do not count.",
    _QUEUE,
    "processes",
    notes="0 while jobs wait means nobody will take them: every process serving the queue is "
    "gone or quiet. `sidekiq_processes` still counts every live process.",
)
QUEUE_MAX_PROCESSING_TIME: Final = Family(
    "sidekiq_queue_max_processing_time_seconds",
    "gauge",
    "Age of the oldest job of this queue running now, 0 if none.",
    _QUEUE,
    "seconds",
)
QUEUE_INFO: Final = Family(
    "sidekiq_queue_info",
    "info",
    "Queue facts, value 1: component, and where its SLA comes from (name/config/none).",
    ("target", "queue", "component", "sla_source"),
    "1",
    notes='`component` is `""` if none; `sla_source` is `config`, `name` or `none` '
    "([queue SLAs](queue-slas.md)).",
)
QUEUE_SLA: Final = Family(
    "sidekiq_queue_sla_seconds",
    "gauge",
    "Latency the queue promises, from its name (within_5_seconds) or the config file.",
    _QUEUE,
    "seconds",
    notes="Only for queues with an SLA.",
)
QUEUE_SLA_BREACH: Final = Family(
    "sidekiq_queue_sla_breach_seconds_total",
    "counter",
    "Seconds this exporter observed the queue's latency above its SLA, measured on Redis TIME "
    "between polls; rate() is the fraction of time in breach.",
    _QUEUE,
    "seconds",
    notes="Only for queues with an SLA; counted from the exporter's start "
    "([queue SLAs](queue-slas.md)).",
)

# --- Sidekiq: processes --------------------------------------------------------------------------

PROCESSES: Final = Family(
    "sidekiq_processes",
    "gauge",
    "Live Sidekiq processes (their heartbeat hash exists; stale set members ignored).",
    _TARGET,
    "processes",
)
WORKERS: Final = Family(
    "sidekiq_workers",
    "gauge",
    "Total concurrency (threads) of the live processes.",
    _TARGET,
    "threads",
)
BUSY_WORKERS: Final = Family(
    "sidekiq_busy_workers",
    "gauge",
    "Jobs running now on the live processes (sum of their busy counts).",
    _TARGET,
    "jobs",
)
_PER_PROCESS = (
    "Per live process, up to `--collect.processes.max`; only with `--collect.processes` (the "
    "default)."
)
PROCESS_BUSY_WORKERS: Final = Family(
    "sidekiq_process_busy_workers",
    "gauge",
    "Jobs running on the process.",
    _PROCESS,
    "jobs",
    notes=_PER_PROCESS,
)
PROCESS_CONCURRENCY: Final = Family(
    "sidekiq_process_concurrency",
    "gauge",
    "Threads of the process.",
    _PROCESS,
    "threads",
    notes=_PER_PROCESS + " From the process hash on 8.1.2+, else from its `info`.",
)
PROCESS_MEMORY_RSS: Final = Family(
    "sidekiq_process_memory_rss_bytes",
    "gauge",
    "Resident memory of the process as it reported it (0 where unknown).",
    _PROCESS,
    "bytes",
    notes=_PER_PROCESS,
)
PROCESS_REDIS_RTT: Final = Family(
    "sidekiq_process_redis_rtt_seconds",
    "gauge",
    "Redis PING round trip the process measured at its last heartbeat.",
    _PROCESS,
    "seconds",
    notes=_PER_PROCESS,
)
PROCESS_HEARTBEAT: Final = Family(
    "sidekiq_process_heartbeat_timestamp_seconds",
    "gauge",
    "When the process last beat (its own clock).",
    _PROCESS,
    "seconds (Unix time)",
    notes=_PER_PROCESS,
)
PROCESS_START_TIME: Final = Family(
    "sidekiq_process_start_time_seconds",
    "gauge",
    "When the process started (its own clock).",
    _PROCESS,
    "seconds (Unix time)",
    notes=_PER_PROCESS,
)
PROCESS_QUIET: Final = Family(
    "sidekiq_process_quiet",
    "gauge",
    "1 if the process is quiet or stopping (it fetches no new jobs).",
    _PROCESS,
    "1 or 0",
    notes=_PER_PROCESS,
)
PROCESS_INFO: Final = Family(
    "sidekiq_process_info",
    "info",
    "Process facts, value 1.",
    (*_PROCESS, "version"),
    "1",
    notes=_PER_PROCESS + ' `version` is `""` before 7.0.2, the first to report it.',
)

# --- Sidekiq: running jobs and per-class execution metrics --------------------------------------

RUNNING_JOBS: Final = Family(
    "sidekiq_running_jobs",
    "gauge",
    "Jobs running now, by queue and class (wrapped class for ActiveJob).",
    _RUNNING,
    "jobs",
    notes="Classes within the job-class limits only (`--collect.job-classes.*`).",
)
RUNNING_JOB_MAX_AGE: Final = Family(
    "sidekiq_running_job_max_age_seconds",
    "gauge",
    "Age of the oldest running job of this queue and class.",
    _RUNNING,
    "seconds",
)
JOB_EXECUTIONS: Final = Family(
    "sidekiq_job_executions_total",
    "counter",
    "Job executions by class, failures included, from Sidekiq's per-minute metrics.",
    _CLASS,
    "executions",
    JOB_METRICS_VERSIONS,
    "Counted from the exporter's start ([job metrics](job-metrics.md)).",
)
JOB_FAILURES: Final = Family(
    "sidekiq_job_failures_total",
    "counter",
    "Job executions that raised, by class, from Sidekiq's per-minute metrics.",
    _CLASS,
    "executions",
    JOB_METRICS_VERSIONS,
)
JOB_DURATION: Final = Family(
    "sidekiq_job_duration_seconds",
    "histogram",
    "Duration of successful job executions only (failures are not timed), by class, built "
    "from Sidekiq's per-minute buckets; each bucket saturates at 65,535 per class per minute "
    "(the excess shows in +Inf only).",
    _CLASS,
    "seconds",
    JOB_METRICS_VERSIONS,
    "Sidekiq's 26 buckets (`le` 0.02 … 335.0, +Inf); `_count` is the successes (or the sum "
    "of the buckets, if a flush landed between the two round trips), `_sum` from `ms`.",
)

# --- Sidekiq: sidekiq-cron and Enterprise ---------------------------------------------------------

_PER_CRON_JOB = (
    "Per sidekiq-cron job within the cron limits (`--collect.cron.*`); `cron_namespace` is "
    '`""` for sidekiq-cron 1.x, which has no namespaces (so no such label in Prometheus).'
)
CRON_JOBS: Final = Family(
    "sidekiq_cron_jobs",
    "gauge",
    "sidekiq-cron jobs by status (enabled or disabled), within the cron-job limits.",
    ("target", "status"),
    "jobs",
    CRON_VERSIONS,
    "Only with `--collect.cron` (the default), then 0 without sidekiq-cron. A status other "
    "than `enabled` counts as `disabled`, as sidekiq-cron reads it ([cron](cron.md)).",
)
CRON_JOB_ENABLED: Final = Family(
    "sidekiq_cron_job_enabled",
    "gauge",
    "1 if the sidekiq-cron job is enabled.",
    _CRON_JOB,
    "1 or 0",
    CRON_VERSIONS,
    _PER_CRON_JOB,
)
CRON_JOB_LAST_ENQUEUE: Final = Family(
    "sidekiq_cron_job_last_enqueue_timestamp_seconds",
    "gauge",
    "When the sidekiq-cron job last enqueued (the clock of the process that enqueued it).",
    _CRON_JOB,
    "seconds (Unix time)",
    CRON_VERSIONS,
    _PER_CRON_JOB + " Absent for a job that never enqueued.",
)
CRON_JOB_NEXT_EXPECTED: Final = Family(
    "sidekiq_cron_job_next_expected_timestamp_seconds",
    "gauge",
    "When the job's cron line expects its next enqueue: the first tick after its last one "
    "(or after the exporter saw it enabled again, or first saw it if it never fired).",
    _CRON_JOB,
    "seconds (Unix time)",
    CRON_VERSIONS,
    _PER_CRON_JOB + " Enabled jobs whose cron line the exporter can evaluate.",
)
CRON_JOB_OVERDUE: Final = Family(
    "sidekiq_cron_job_overdue_seconds",
    "gauge",
    "How long the job's expected tick has passed without an enqueue, on Redis TIME; 0 when "
    "on time.",
    _CRON_JOB,
    "seconds",
    CRON_VERSIONS,
    _PER_CRON_JOB + " Enabled jobs whose cron line the exporter can evaluate. sidekiq-cron "
    "enqueues a tick up to its poll interval (30 s by default) late.",
)
LEADER_INFO: Final = Family(
    "sidekiq_leader_info",
    "info",
    "The process Sidekiq Enterprise elected leader, value 1.",
    ("target", "identity"),
    "1",
    "6.4 – 8.1 with Sidekiq Enterprise (`dear-leader`)",
    "Absent without Enterprise, or while no process leads.",
)

# Every family, in the order the reference lists them.
METRICS: Final[tuple[Family, ...]] = (
    UP,
    PROCESSED_JOBS,
    FAILED_JOBS,
    ENQUEUED_JOBS,
    SCHEDULED_JOBS,
    RETRY_JOBS,
    DEAD_JOBS,
    SCHEDULED_OVERDUE_JOBS,
    SCHEDULED_LAG,
    QUEUE_ENQUEUED_JOBS,
    QUEUE_LATENCY,
    QUEUE_PAUSED,
    QUEUE_BUSY_WORKERS,
    QUEUE_WORKERS,
    QUEUE_PROCESSES,
    QUEUE_MAX_PROCESSING_TIME,
    QUEUE_SLA,
    QUEUE_SLA_BREACH,
    QUEUE_INFO,
    PROCESSES,
    WORKERS,
    BUSY_WORKERS,
    PROCESS_BUSY_WORKERS,
    PROCESS_CONCURRENCY,
    PROCESS_MEMORY_RSS,
    PROCESS_REDIS_RTT,
    PROCESS_HEARTBEAT,
    PROCESS_START_TIME,
    PROCESS_QUIET,
    PROCESS_INFO,
    RUNNING_JOBS,
    RUNNING_JOB_MAX_AGE,
    JOB_EXECUTIONS,
    JOB_FAILURES,
    JOB_DURATION,
    CRON_JOBS,
    CRON_JOB_ENABLED,
    CRON_JOB_LAST_ENQUEUE,
    CRON_JOB_NEXT_EXPECTED,
    CRON_JOB_OVERDUE,
    LEADER_INFO,
    BUILD_INFO,
    POLL_DURATION,
    POLLS,
    LAST_POLL_SUCCESS,
    ROUND_TRIPS,
    SKIPPED_ITEMS,
    HTTP_BAD_REQUESTS,
    HTTP_LIMIT_HITS,
)

BY_NAME: Final[Mapping[str, Family]] = MappingProxyType({f.name: f for f in METRICS})
