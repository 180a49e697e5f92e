"""The Grafana dashboards: Overview, Queues, Job classes, Processes and capacity.

Every query selects its series through `sel`, which filters by the dashboard's variables
(`job`, `instance`, `target`, and `queue` or `class` where the series has that label).
`rate()` and `increase()` only ever read counters and histograms, over `$__rate_interval`
(or `$__range` for the totals of instant bar gauges). Tests check all of this against a real
exporter's `/metrics` and run every query on real Prometheus 2 and 3.
"""

from __future__ import annotations

from monitoring import rules
from monitoring.grafana import Dashboard, Panel, Query, Row, Variable

RATE = "$__rate_interval"
POLL_ERRORS = 'result="error"'


def sel(metric: str, *labels: str, target: bool = True, match: str = "") -> str:
    """`metric{job=~"$job", instance=~"$instance", target=~"$target", <label>=~"$<label>"}`.

    `labels`: further variables to filter by (`queue`, `class`); `match`: extra matchers.
    """
    names = ["job", "instance", *(["target"] if target else []), *labels]
    matchers = [f'{name}=~"${name}"' for name in names] + ([match] if match else [])
    return f"{metric}{{{', '.join(matchers)}}}"


def rate(metric: str, *labels: str, match: str = "", window: str = RATE) -> str:
    return f"rate({sel(metric, *labels, match=match)}[{window}])"


def _variables(*extra: str) -> tuple[Variable, ...]:
    scrape = 'job=~"$job", instance=~"$instance"'
    target = f'{scrape}, target=~"$target"'
    known = {
        "queue": Variable(
            "queue",
            "Queue",
            f"label_values(sidekiq_queue_enqueued_jobs{{{target}}}, queue)",
            "Sidekiq queues of the selected targets.",
        ),
        "class": Variable(
            "class",
            "Job class",
            f"label_values(sidekiq_job_executions_total{{{target}}}, class)",
            "Job classes with per-class metrics (Sidekiq 7+).",
        ),
    }
    return (
        Variable(
            "job",
            "Job",
            "label_values(sidekiq_exporter_build_info, job)",
            "Prometheus scrape jobs of sidekiq-exporter.",
        ),
        Variable(
            "instance",
            "Instance",
            'label_values(sidekiq_exporter_build_info{job=~"$job"}, instance)',
            "Instances of the exporter (Prometheus' instance label).",
        ),
        Variable(
            "target",
            "Target",
            f"label_values(sidekiq_up{{{scrape}}}, target)",
            "Sidekiq Redis targets (the exporter's `target` label).",
        ),
        *(known[name] for name in extra),
    )


def _latency_over_sla() -> str:
    return (
        "max by (target, queue) (\n"
        f"  {sel('sidekiq_queue_latency_seconds', 'queue')}\n"
        f"  / {sel('sidekiq_queue_sla_seconds', 'queue')}\n"
        ")"
    )


def _queue_utilisation() -> str:
    return (
        "max by (target, queue) (\n"
        f"  {sel('sidekiq_queue_busy_workers', 'queue')}\n"
        f"  / ({sel('sidekiq_queue_workers', 'queue')} > 0)\n"
        ")"
    )


_FAILURE_RATIO = (
    f"sum by (target, class) ({rate('sidekiq_job_failures_total', 'class')})\n"
    f"/ sum by (target, class) ({rate('sidekiq_job_executions_total', 'class')})"
)
SLA_STEPS = ((None, "green"), (rules.SLA_WARNING_FRACTION, "orange"), (1.0, "red"))
SATURATION_STEPS = ((None, "green"), (rules.SATURATION_RATIO, "red"))
LONG_JOB_STEPS = ((None, "green"), (float(rules.LONG_JOB_SECONDS), "orange"))

LATENCY_OVER_SLA_PANEL = Panel(
    "Latency ÷ SLA by queue",
    "Age of each queue's oldest job as a fraction of the queue's SLA (1 = at the SLA); only "
    "queues with an SLA, from their name or the exporter's config file. The line the "
    "SidekiqQueueLatencyOverSLA alert and the autoscaling recipe use.",
    "percentunit",
    (Query(_latency_over_sla(), "{{target}} {{queue}}"),),
    thresholds=SLA_STEPS,
)
QUEUE_UTILISATION_PANEL = Panel(
    "Utilisation by queue",
    "Jobs of the queue running now ÷ threads of the live processes that serve it. A process "
    "serving several queues counts its threads for each of them.",
    "percentunit",
    (Query(_queue_utilisation(), "{{target}} {{queue}}"),),
    thresholds=SATURATION_STEPS,
)

OVERVIEW = Dashboard(
    uid=rules.OVERVIEW.uid,
    title=rules.OVERVIEW.title,
    description="Sidekiq at a glance: throughput, backlog, latency against SLA, capacity, "
    "retries and dead jobs, the scheduler, sidekiq-cron jobs and the exporter itself.",
    tags=("sidekiq", "sidekiq-exporter"),
    variables=_variables("queue"),
    rows=(
        Row(
            "Health",
            (
                Panel(
                    "Redis reachable",
                    "Whether the exporter's last poll of every selected Redis succeeded with "
                    "fresh data (sidekiq_up).",
                    "bool_yes_no",
                    (Query(f"min({sel('sidekiq_up')})", instant=True),),
                    kind="stat",
                    width=4,
                    height=4,
                    thresholds=((None, "red"), (1.0, "green")),
                ),
                Panel(
                    "Exporter scraped",
                    "Whether Prometheus' last scrape of every selected exporter succeeded (up).",
                    "bool_yes_no",
                    (Query(f"min({sel('up', target=False)})", instant=True),),
                    kind="stat",
                    width=4,
                    height=4,
                    thresholds=((None, "red"), (1.0, "green")),
                ),
                Panel(
                    "Live processes",
                    "Sidekiq processes whose heartbeat is current.",
                    "short",
                    (Query(f"sum({sel('sidekiq_processes')})", instant=True),),
                    kind="stat",
                    width=4,
                    height=4,
                    thresholds=((None, "red"), (1.0, "green")),
                ),
                Panel(
                    "Jobs waiting",
                    "Jobs waiting in all queues.",
                    "short",
                    (Query(f"sum({sel('sidekiq_enqueued_jobs')})", instant=True),),
                    kind="stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Queues over SLA",
                    "Queues whose oldest job has waited longer than the queue's SLA.",
                    "short",
                    (
                        Query(
                            f"count(\n  {sel('sidekiq_queue_latency_seconds', 'queue')}\n"
                            f"  / {sel('sidekiq_queue_sla_seconds', 'queue')}\n  > 1\n)"
                            " or vector(0)",
                            instant=True,
                        ),
                    ),
                    kind="stat",
                    width=4,
                    height=4,
                    thresholds=((None, "green"), (1.0, "red")),
                ),
                Panel(
                    "Busy threads",
                    "Jobs running ÷ threads of all live processes.",
                    "percentunit",
                    (
                        Query(
                            f"sum({sel('sidekiq_busy_workers')})\n/ sum({sel('sidekiq_workers')})",
                            instant=True,
                        ),
                    ),
                    kind="stat",
                    width=4,
                    height=4,
                    max=1,
                    thresholds=SATURATION_STEPS,
                ),
            ),
        ),
        Row(
            "Throughput and backlog",
            (
                Panel(
                    "Jobs processed and failed",
                    "Job executions per second, failures included, and those that raised "
                    "(Sidekiq's stat:processed and stat:failed).",
                    "ops",
                    (
                        Query(
                            f"sum by (target) ({rate('sidekiq_processed_jobs_total')})",
                            "{{target}} processed",
                        ),
                        Query(
                            f"sum by (target) ({rate('sidekiq_failed_jobs_total')})",
                            "{{target}} failed",
                        ),
                    ),
                ),
                Panel(
                    "Jobs waiting by queue",
                    "Jobs waiting in each queue (its length).",
                    "short",
                    (
                        Query(
                            "sum by (target, queue) "
                            f"({sel('sidekiq_queue_enqueued_jobs', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                    stack=True,
                ),
            ),
        ),
        Row(
            "Latency against SLA",
            (
                LATENCY_OVER_SLA_PANEL,
                Panel(
                    "Latency by queue",
                    "Age of each queue's oldest job (Sidekiq's queue latency), 0 when empty.",
                    "s",
                    (
                        Query(
                            "max by (target, queue) "
                            f"({sel('sidekiq_queue_latency_seconds', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Capacity",
            (
                Panel(
                    "Busy threads and capacity",
                    "Jobs running now against the threads (concurrency) of all live processes.",
                    "short",
                    (
                        Query(
                            f"sum by (target) ({sel('sidekiq_busy_workers')})", "{{target}} busy"
                        ),
                        Query(f"sum by (target) ({sel('sidekiq_workers')})", "{{target}} capacity"),
                    ),
                ),
                Panel(
                    "Processes",
                    "Live Sidekiq processes, and those of them that are quiet or stopping "
                    "(they fetch no new jobs).",
                    "short",
                    (
                        Query(f"sum by (target) ({sel('sidekiq_processes')})", "{{target}} live"),
                        Query(
                            f"sum by (target) ({sel('sidekiq_process_quiet')})",
                            "{{target}} quiet",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Retries, dead jobs and the scheduler",
            (
                Panel(
                    "Retry, dead and scheduled sets",
                    "Jobs waiting for a retry, jobs out of retries (the dead set, capped at "
                    f"{rules.DEAD_SET_CAP:,} by default) and jobs scheduled for later.",
                    "short",
                    (
                        Query(f"sum by (target) ({sel('sidekiq_retry_jobs')})", "{{target}} retry"),
                        Query(f"sum by (target) ({sel('sidekiq_dead_jobs')})", "{{target}} dead"),
                        Query(
                            f"sum by (target) ({sel('sidekiq_scheduled_jobs')})",
                            "{{target}} scheduled",
                        ),
                    ),
                ),
                Panel(
                    "Scheduler lag",
                    "How long the oldest due job of the schedule and retry sets has waited to "
                    "be moved to its queue; a stuck scheduler shows here first.",
                    "s",
                    (
                        Query(
                            f"max by (target, set) ({sel('sidekiq_scheduled_lag_seconds')})",
                            "{{target}} {{set}}",
                        ),
                    ),
                    thresholds=((None, "green"), (float(rules.SCHEDULER_LAG_SECONDS), "red")),
                ),
            ),
        ),
        Row(
            "Cron jobs",
            (
                Panel(
                    "Cron jobs overdue",
                    "How long each sidekiq-cron job is past the tick its cron line expected it "
                    "to enqueue at, 0 while on time (its poller runs every 30 s by default). "
                    "The SidekiqCronJobOverdue alert fires past the red line.",
                    "s",
                    (
                        Query(
                            "max by (target, cron_namespace, cron_job) "
                            f"({sel('sidekiq_cron_job_overdue_seconds')})",
                            "{{target}} {{cron_namespace}} {{cron_job}}",
                        ),
                    ),
                    thresholds=((None, "green"), (float(rules.CRON_OVERDUE_SECONDS), "red")),
                ),
                Panel(
                    "Cron jobs by status",
                    "sidekiq-cron jobs, enabled and disabled: a job disabled by mistake shows "
                    "as a step here.",
                    "short",
                    (
                        Query(
                            f"sum by (target, status) ({sel('sidekiq_cron_jobs')})",
                            "{{target}} {{status}}",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "Exporter",
            (
                Panel(
                    "Poll duration",
                    "How long the exporter's last poll of each Redis took.",
                    "s",
                    (
                        Query(
                            f"max by (target) ({sel('sidekiq_exporter_poll_duration_seconds')})",
                            "{{target}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Failed polls",
                    "Polls of each Redis that failed, per second.",
                    "ops",
                    (
                        Query(
                            "sum by (target) "
                            f"({rate('sidekiq_exporter_polls_total', match=POLL_ERRORS)})",
                            "{{target}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Skipped items",
                    "Items read from Redis but skipped, per second, by reason: malformed data "
                    "or over a cardinality limit.",
                    "ops",
                    (
                        Query(
                            "sum by (target, reason) "
                            f"({rate('sidekiq_exporter_skipped_items_total')})",
                            "{{target}} {{reason}}",
                            quiet="nothing is skipped while Redis holds well-formed Sidekiq "
                            "data within the limits",
                        ),
                    ),
                    width=8,
                ),
            ),
        ),
    ),
)

QUEUES = Dashboard(
    uid=rules.QUEUES.uid,
    title=rules.QUEUES.title,
    description="Per-queue drill-down: backlog, latency against SLA, time in breach, the "
    "threads that serve each queue and what runs on them.",
    tags=("sidekiq", "sidekiq-exporter"),
    variables=_variables("queue"),
    rows=(
        Row(
            "Backlog and latency",
            (
                Panel(
                    "Jobs waiting",
                    "Jobs waiting in each queue (its length).",
                    "short",
                    (
                        Query(
                            "sum by (target, queue) "
                            f"({sel('sidekiq_queue_enqueued_jobs', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                ),
                Panel(
                    "Latency and SLA",
                    "Age of each queue's oldest job, and the latency the queue promises.",
                    "s",
                    (
                        Query(
                            "max by (target, queue) "
                            f"({sel('sidekiq_queue_latency_seconds', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                        Query(
                            f"max by (target, queue) ({sel('sidekiq_queue_sla_seconds', 'queue')})",
                            "{{target}} {{queue}} SLA",
                        ),
                    ),
                ),
            ),
        ),
        Row(
            "SLA",
            (
                LATENCY_OVER_SLA_PANEL,
                Panel(
                    "Time in breach",
                    "Fraction of time each queue spent above its SLA, measured by the exporter "
                    "at every poll (so no breach between two scrapes is missed).",
                    "percentunit",
                    (
                        Query(
                            "max by (target, queue) "
                            f"({rate('sidekiq_queue_sla_breach_seconds_total', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                    max=1,
                    width=8,
                ),
                Panel(
                    "Time in breach over the range",
                    "Seconds each queue spent above its SLA during the dashboard's time range.",
                    "s",
                    (
                        Query(
                            "sort_desc(max by (target, queue) (increase("
                            f"{sel('sidekiq_queue_sla_breach_seconds_total', 'queue')}"
                            "[$__range])))",
                            "{{target}} {{queue}}",
                            instant=True,
                        ),
                    ),
                    kind="bargauge",
                    width=4,
                ),
            ),
        ),
        Row(
            "Workers",
            (
                Panel(
                    "Busy threads and capacity",
                    "Jobs of each queue running now, and the threads of the live processes "
                    "that serve it.",
                    "short",
                    (
                        Query(
                            "sum by (target, queue) "
                            f"({sel('sidekiq_queue_busy_workers', 'queue')})",
                            "{{target}} {{queue}} busy",
                        ),
                        Query(
                            f"sum by (target, queue) ({sel('sidekiq_queue_workers', 'queue')})",
                            "{{target}} {{queue}} capacity",
                        ),
                    ),
                ),
                QUEUE_UTILISATION_PANEL,
                Panel(
                    "Processes serving the queue",
                    "Live processes that fetch from each queue (quiet or stopping ones do not).",
                    "short",
                    (
                        Query(
                            f"max by (target, queue) ({sel('sidekiq_queue_processes', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Oldest running job",
                    "How long the oldest job of each queue running now has been running.",
                    "s",
                    (
                        Query(
                            "max by (target, queue) "
                            f"({sel('sidekiq_queue_max_processing_time_seconds', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                    width=8,
                    thresholds=LONG_JOB_STEPS,
                ),
                Panel(
                    "Running jobs by class",
                    "Jobs running now, by queue and class (the wrapped class for ActiveJob).",
                    "short",
                    (
                        Query(
                            "sum by (target, queue, class) "
                            f"({sel('sidekiq_running_jobs', 'queue')})",
                            "{{target}} {{queue}} {{class}}",
                        ),
                    ),
                    width=8,
                    stack=True,
                ),
                Panel(
                    "Paused",
                    "1 while Sidekiq Pro has paused the queue: its jobs wait on purpose.",
                    "bool_yes_no",
                    (
                        Query(
                            f"max by (target, queue) ({sel('sidekiq_queue_paused', 'queue')})",
                            "{{target}} {{queue}}",
                        ),
                    ),
                    width=24,
                    height=5,
                    max=1,
                ),
            ),
        ),
    ),
)

DURATION_QUANTILE_PANELS = tuple(
    Panel(
        f"Duration {name}",
        f"{q:.0%} of the successful executions of each class took at most this long, from "
        "Sidekiq's own duration histogram (failures are not timed).",
        "s",
        (
            Query(
                f"histogram_quantile({q:g}, sum by (target, class, le) "
                f"({rate('sidekiq_job_duration_seconds_bucket', 'class')}))",
                "{{target}} {{class}}",
            ),
        ),
        width=8,
    )
    for name, q in rules.QUANTILES
)

JOB_CLASSES = Dashboard(
    uid=rules.JOB_CLASSES.uid,
    title=rules.JOB_CLASSES.title,
    description="Per-class executions, failures and durations from Sidekiq's own per-minute "
    "metrics (Sidekiq 7+), and where the workers' time goes.",
    tags=("sidekiq", "sidekiq-exporter"),
    variables=_variables("class"),
    rows=(
        Row(
            "Executions and failures",
            (
                Panel(
                    "Executions",
                    "Executions per second by class, failures included.",
                    "ops",
                    (
                        Query(
                            "sum by (target, class) "
                            f"({rate('sidekiq_job_executions_total', 'class')})",
                            "{{target}} {{class}}",
                        ),
                    ),
                    width=8,
                    stack=True,
                ),
                Panel(
                    "Failures",
                    "Executions that raised, per second, by class.",
                    "ops",
                    (
                        Query(
                            "sum by (target, class) "
                            f"({rate('sidekiq_job_failures_total', 'class')})",
                            "{{target}} {{class}}",
                        ),
                    ),
                    width=8,
                    stack=True,
                ),
                Panel(
                    "Failure ratio",
                    "Failures ÷ executions by class. The line is the failure budget the "
                    "SidekiqJobFailureBudgetBurn alert spends.",
                    "percentunit",
                    (
                        Query(
                            _FAILURE_RATIO,
                            "{{target}} {{class}}",
                        ),
                    ),
                    width=8,
                    max=1,
                    thresholds=((None, "green"), (rules.FAILURE_BUDGET, "red")),
                ),
            ),
        ),
        Row(
            "Duration of successful executions",
            (
                *DURATION_QUANTILE_PANELS,
                Panel(
                    "Mean duration",
                    "Total time ÷ number of the successful executions of each class.",
                    "s",
                    (
                        Query(
                            "sum by (target, class) "
                            f"({rate('sidekiq_job_duration_seconds_sum', 'class')})\n"
                            "/ sum by (target, class) "
                            f"({rate('sidekiq_job_duration_seconds_count', 'class')})",
                            "{{target}} {{class}}",
                        ),
                    ),
                ),
                Panel(
                    "Oldest running job",
                    "How long the oldest running job of each class has been running.",
                    "s",
                    (
                        Query(
                            "max by (target, class) "
                            f"({sel('sidekiq_running_job_max_age_seconds', 'class')})",
                            "{{target}} {{class}}",
                        ),
                    ),
                    thresholds=LONG_JOB_STEPS,
                ),
            ),
        ),
        Row(
            "Where the workers' time goes",
            (
                Panel(
                    "Threads kept busy by class",
                    "Seconds of successful execution per second, by class: the average number "
                    "of threads each class occupies (failed executions are not timed).",
                    "short",
                    (
                        Query(
                            "sum by (target, class) "
                            f"({rate('sidekiq_job_duration_seconds_sum', 'class')})",
                            "{{target}} {{class}}",
                        ),
                    ),
                    width=8,
                    stack=True,
                ),
                Panel(
                    "Top 10 classes by worker time",
                    "The classes whose successful executions took the most time during the "
                    "dashboard's time range.",
                    "s",
                    (
                        Query(
                            "topk(10, sum by (target, class) (increase("
                            f"{sel('sidekiq_job_duration_seconds_sum', 'class')}[$__range])))",
                            "{{target}} {{class}}",
                            instant=True,
                        ),
                    ),
                    kind="bargauge",
                    width=8,
                ),
                Panel(
                    "Running now by class",
                    "Jobs running now, by class.",
                    "short",
                    (
                        Query(
                            f"sum by (target, class) ({sel('sidekiq_running_jobs', 'class')})",
                            "{{target}} {{class}}",
                        ),
                    ),
                    width=8,
                    stack=True,
                ),
            ),
        ),
    ),
)

# Little's law: the threads a queue needs on average = arrivals per second × time per job,
# and in a steady state arrivals = executions, so Σ over its classes of rate(duration_sum).
# Classes are attributed to the queue they were last seen running on in the past hour
# (Sidekiq records no queue with its per-class metrics).
_THREADS_NEEDED = (
    "sum by (target, queue) (\n"
    f"  {rate('sidekiq_job_duration_seconds_sum')}\n"
    "  * on (job, instance, target, class) group_left (queue)\n"
    "  topk by (job, instance, target, class) (\n"
    f"    1, max_over_time({sel('sidekiq_running_jobs', 'queue')}[1h])\n"
    "  )\n"
    ")"
)

PROCESSES = Dashboard(
    uid=rules.PROCESSES.uid,
    title=rules.PROCESSES.title,
    description="Each Sidekiq process (busy threads, memory, heartbeat, Redis round trip), "
    "utilisation and long-running jobs per queue, and a capacity estimate from Little's law.",
    tags=("sidekiq", "sidekiq-exporter"),
    variables=_variables("queue"),
    rows=(
        Row(
            "Processes",
            (
                Panel(
                    "Busy threads by process",
                    "Jobs running on each process.",
                    "short",
                    (
                        Query(
                            "max by (target, identity, hostname, tag) "
                            f"({sel('sidekiq_process_busy_workers')})",
                            "{{hostname}} {{tag}} {{identity}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Utilisation by process",
                    "Busy threads ÷ concurrency of each process.",
                    "percentunit",
                    (
                        Query(
                            "max by (target, identity, hostname, tag) (\n"
                            f"  {sel('sidekiq_process_busy_workers')}\n"
                            f"  / ({sel('sidekiq_process_concurrency')} > 0)\n"
                            ")",
                            "{{hostname}} {{tag}} {{identity}}",
                        ),
                    ),
                    width=8,
                    max=1,
                    thresholds=SATURATION_STEPS,
                ),
                Panel(
                    "Memory (RSS)",
                    "Resident memory of each process, as it reported at its last heartbeat.",
                    "bytes",
                    (
                        Query(
                            "max by (target, identity, hostname, tag) "
                            f"({sel('sidekiq_process_memory_rss_bytes')})",
                            "{{hostname}} {{tag}} {{identity}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Heartbeat age",
                    "Time from each process's last heartbeat to the scrape that saw it. "
                    "Sidekiq 7+ beats every 10 s (6.x: 5 s) and drops a process 60 s after "
                    "its last beat; the line is where SidekiqProcessHeartbeatStale fires.",
                    "s",
                    (
                        Query(
                            "max by (target, identity, hostname, tag) (\n"
                            f"  timestamp({sel('sidekiq_process_heartbeat_timestamp_seconds')})\n"
                            f"  - {sel('sidekiq_process_heartbeat_timestamp_seconds')}\n"
                            ")",
                            "{{hostname}} {{tag}} {{identity}}",
                        ),
                    ),
                    width=8,
                    min=None,
                    thresholds=((None, "green"), (float(rules.HEARTBEAT_STALE_SECONDS), "red")),
                ),
                Panel(
                    "Redis round trip",
                    "Redis PING time each process measured at its last heartbeat.",
                    "s",
                    (
                        Query(
                            "max by (target, identity, hostname, tag) "
                            f"({sel('sidekiq_process_redis_rtt_seconds')})",
                            "{{hostname}} {{tag}} {{identity}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "Quiet processes",
                    "Processes that are quiet or stopping: they finish their jobs but fetch "
                    "no new ones.",
                    "short",
                    (Query(f"sum by (target) ({sel('sidekiq_process_quiet')})", "{{target}}"),),
                    width=8,
                ),
            ),
        ),
        Row(
            "Capacity by queue",
            (
                QUEUE_UTILISATION_PANEL,
                Panel(
                    "Threads needed (Little's law) and capacity",
                    "Threads each queue needs on average (executions per second × time per "
                    "execution, summed over the classes last seen running on the queue in the "
                    "past hour; successful executions only) against the threads serving it.",
                    "short",
                    (
                        Query(_THREADS_NEEDED, "{{target}} {{queue}} needed"),
                        Query(
                            f"sum by (target, queue) ({sel('sidekiq_queue_workers', 'queue')})",
                            "{{target}} {{queue}} capacity",
                        ),
                    ),
                ),
                Panel(
                    "Long-running jobs",
                    "Age of the oldest running job by queue and class. The line is where "
                    "SidekiqLongRunningJob fires (outside queues meant for long jobs).",
                    "s",
                    (
                        Query(
                            "max by (target, queue, class) "
                            f"({sel('sidekiq_running_job_max_age_seconds', 'queue')})",
                            "{{target}} {{queue}} {{class}}",
                        ),
                    ),
                    width=24,
                    thresholds=LONG_JOB_STEPS,
                ),
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, QUEUES, JOB_CLASSES, PROCESSES)
