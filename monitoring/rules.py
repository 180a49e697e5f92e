"""The alerts and recording rules, as data, and their rendering as a Prometheus rule file.

Conventions (monitoring mixins): alert names are CamelCase with the `Sidekiq` prefix;
`severity` is `critical` (pages), `warning` (chat) or `info`; annotations are `summary` (a
static sentence), `description` (templated with the labels), `runbook_url` (the section of
docs/runbooks.md named after the alert) and `dashboard_url`. Recording rules are named
`level:metric:operations`, where the level names the exporter's own labels kept (`target`,
`queue`, `class`); no rule aggregates away `job` or `instance`, so several Sidekiq
applications whose exporters all use the default target name never mix.

Nothing pages on one sample: every alert has a `for:`, most also look at a `*_over_time`
window, and `keep_firing_for` stops a condition that wavers at its threshold from flapping.
Windows are at least 2 minutes, twice a 1 minute scrape interval (Prometheus 3 ranges are
left-open: a window of exactly one interval can hold a single sample).

Per-queue thresholds are data: the SLA is `sidekiq_queue_sla_seconds`, so one rule serves
every queue. To add an alert: one `Alert(...)` below, a promtool test
`alerts/tests/<AlertName>.yml`, and a `## <AlertName>` section in docs/runbooks.md.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, replace
from typing import Any

from monitoring import yaml_text
from monitoring.config import Config

RULE_FILE = "alerts/sidekiq.rules.yml"

# Thresholds shared by several rules; each is written once, here.
SLA_WARNING_FRACTION = 0.75  # the warning tier: latency above this fraction of the SLA
SATURATION_RATIO = 0.9  # busy ÷ capacity of a queue's workers
HEARTBEAT_STALE_SECONDS = 30  # 3 missed beats on Sidekiq 7+ (10 s), 6 on 6.x (5 s)
SCHEDULER_LAG_SECONDS = 60  # Sidekiq moves due jobs within ~5-15 s when its poller runs
DEAD_SET_CAP = 10_000  # Sidekiq's default `dead_max_jobs`: beyond it the oldest dead jobs go
DEAD_SET_NEAR_CAP_RATIO = 0.9
LONG_JOB_SECONDS = 600  # longer than this, a job blocks deploys (Sidekiq waits 25 s on TERM)
# sidekiq-cron never runs a tick its poller reaches more than a minute late
# (`reschedule_grace_period`): a job this overdue has lost a run, whatever its period (five
# for an every-minute job), and its poller runs every 30 s by default, so no healthy job is.
CRON_OVERDUE_SECONDS = 300
# Queues meant for long jobs, by name: a `long` part (`long`, `reports_long`, `long_exports`).
LONG_JOB_QUEUES_REGEX = "(.+_)?long(_.+)?"
# Job failures: the objective is that at most 1 % of executions of a class fail; a burn rate of
# N spends that budget N times as fast as allowed (Google SRE workbook, alerting on SLOs).
FAILURE_BUDGET = 0.01
MIN_EXECUTIONS = 20  # fewer executions in the long window than this: too few to judge a ratio
# (long window, short window, burn rate), fast burns page, slow ones go to chat.
FAST_BURNS = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
SLOW_BURNS = (("1d", "2h", 3.0), ("3d", "6h", 1.0))
FAILURE_RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

# The names other assets rely on (the KEDA recipe scales on the first).
LATENCY_OVER_SLA = "target_queue:sidekiq_queue_latency_over_sla:ratio"
UTILISATION = "target_queue:sidekiq_queue_utilisation:ratio"


def failure_ratio(window: str) -> str:
    return f"target_class:sidekiq_job_failures_per_executions:ratio_rate{window}"


def _promql(text: str) -> str:
    """An expression written as an indented block in this file, as it goes in the YAML."""
    return textwrap.dedent(text).strip("\n")


@dataclass(frozen=True)
class Record:
    """A recording rule."""

    record: str
    expr: str


@dataclass(frozen=True)
class DashboardLink:
    """A dashboard an alert's `dashboard_url` points to, and which of its labels become variables.

    monitoring.dashboards takes each dashboard's uid and title from here.
    """

    uid: str
    title: str
    variables: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The URL slug Grafana derives from the title."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


OVERVIEW = DashboardLink("sidekiq-overview", "Sidekiq / Overview", ("job", "instance", "target"))
QUEUES = DashboardLink("sidekiq-queues", "Sidekiq / Queues", ("job", "instance", "target", "queue"))
JOB_CLASSES = DashboardLink(
    "sidekiq-job-classes", "Sidekiq / Job classes", ("job", "instance", "target", "class")
)
PROCESSES = DashboardLink(
    "sidekiq-processes", "Sidekiq / Processes and capacity", ("job", "instance", "target")
)
# The alerts on the monitoring path have no `target` (and `absent()` no `instance`) label.
OVERVIEW_BY_INSTANCE = replace(OVERVIEW, variables=("job", "instance"))
OVERVIEW_BY_JOB = replace(OVERVIEW, variables=("job",))


@dataclass(frozen=True)
class Alert:
    """An alerting rule with the annotations every alert carries."""

    name: str
    expr: str
    for_: str
    keep_firing_for: str
    severity: str
    summary: str
    description: str
    dashboard: DashboardLink
    labels: tuple[tuple[str, str], ...] = ()

    def rule(self, config: Config) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "keep_firing_for": self.keep_firing_for,
            "labels": {"severity": self.severity, **dict(self.labels)},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": config.runbook_url(self.name),
                "dashboard_url": config.dashboard_url(
                    self.dashboard.uid, self.dashboard.slug, self.dashboard.variables
                ),
            },
        }


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Record | Alert, ...]


def _burn_expr(burns: tuple[tuple[str, str, float], ...]) -> str:
    branches = []
    for long, short, rate in burns:
        threshold = f"({rate:g} * {FAILURE_BUDGET:g})"
        branches.append(
            f"(\n"
            f"    {failure_ratio(long)} > {threshold}\n"
            f"  and\n"
            f"    {failure_ratio(short)} > {threshold}\n"
            f"  and\n"
            f"    increase(sidekiq_job_executions_total[{long}]) >= {MIN_EXECUTIONS}\n"
            f")"
        )
    return "\nor\n".join(branches)


def _burn_description(burns: tuple[tuple[str, str, float], ...]) -> str:
    # $value: the failure ratio over the long window of the first pair that holds.
    pairs = ", or ".join(f"above {rate:g} over {long} and {short}" for long, short, rate in burns)
    return (
        "Job class {{ $labels.class }} on {{ $labels.target }} fails "
        "{{ $value | humanizePercentage }} of its executions against a failure budget of "
        f"{FAILURE_BUDGET:.0%}: burn rate {pairs}."
    )


def _queue_duration(metric: str) -> str:
    """Template text: the alert's queue's `metric` at evaluation time, as a duration.

    For descriptions that need a second number besides `$value` (the oldest job's wait and the
    SLA next to a ratio); `?` if the series is gone.
    """
    labels = ("job", "instance", "target", "queue")
    matchers = ", ".join(f"{label}=%q" for label in labels)
    args = " ".join(f"$labels.{label}" for label in labels)
    return (
        f"{{{{ with printf `{metric}{{{matchers}}}` {args} | query }}}}"
        "{{ . | first | value | humanizeDuration }}{{ else }}?{{ end }}"
    )


OLDEST_WAIT = _queue_duration("sidekiq_queue_latency_seconds")
SLA = _queue_duration("sidekiq_queue_sla_seconds")


JOB_CLASS_RECORDS = tuple(
    Record(
        failure_ratio(window),
        f"rate(sidekiq_job_failures_total[{window}])\n/\nrate(sidekiq_job_executions_total[{window}])",
    )
    for window in FAILURE_RATIO_WINDOWS
) + tuple(
    Record(
        f"target_class:sidekiq_job_duration_seconds:{name}_rate5m",
        f"histogram_quantile({q:g}, rate(sidekiq_job_duration_seconds_bucket[5m]))",
    )
    for name, q in QUANTILES
)


def groups(config: Config) -> tuple[Group, ...]:
    """Every rule group of the rule file, in order.

    Recording rules sit in the group of the alerts that read them: Prometheus runs the rules of
    one group in order at the same timestamp, while another group may run before or after.
    """
    up = f'up{{job="{config.exporter_job}"}}'
    return (
        Group(
            "sidekiq.queues",
            (
                Record(
                    LATENCY_OVER_SLA,
                    # Only queues with an SLA have sidekiq_queue_sla_seconds: the others drop out.
                    "sidekiq_queue_latency_seconds / sidekiq_queue_sla_seconds",
                ),
                Record(UTILISATION, "sidekiq_queue_busy_workers / (sidekiq_queue_workers > 0)"),
                Alert(
                    "SidekiqQueueLatencyOverSLA",
                    f"min_over_time({LATENCY_OVER_SLA}[2m]) > 1",
                    for_="3m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="A Sidekiq queue's oldest job has waited longer than the queue's SLA.",
                    description=(
                        "Queue {{ $labels.queue }} on {{ $labels.target }}: the oldest job has "
                        f"waited {OLDEST_WAIT}, past the SLA of {SLA}. Over the SLA for 5 "
                        "minutes (at least {{ $value | humanizePercentage }} of it throughout "
                        "the last 2)."
                    ),
                    dashboard=QUEUES,
                ),
                Alert(
                    "SidekiqQueueLatencyNearSLA",
                    f"min_over_time({LATENCY_OVER_SLA}[5m]) > {SLA_WARNING_FRACTION:g}",
                    for_="5m",
                    keep_firing_for="5m",
                    severity="warning",
                    summary="A Sidekiq queue's latency is close to the queue's SLA.",
                    description=(
                        "Queue {{ $labels.queue }} on {{ $labels.target }}: the oldest job has "
                        f"waited {OLDEST_WAIT}, against an SLA of {SLA}. Over "
                        f"{SLA_WARNING_FRACTION:.0%} of the SLA for 10 minutes (at least "
                        "{{ $value | humanizePercentage }} of it throughout the last 5)."
                    ),
                    dashboard=QUEUES,
                ),
                Alert(
                    "SidekiqQueueUnserved",
                    _promql(
                        """
                        min_over_time(sidekiq_queue_enqueued_jobs[5m]) > 0
                        and
                        max_over_time(sidekiq_queue_processes[5m]) == 0
                        """
                    ),
                    for_="5m",
                    keep_firing_for="5m",
                    severity="warning",
                    summary="Jobs wait in a Sidekiq queue that no live process fetches from.",
                    description=(
                        "Queue {{ $labels.queue }} on {{ $labels.target }} has held at least "
                        "{{ $value }} jobs for 10 minutes and no live Sidekiq process fetches from "
                        f"it (quiet or stopping ones fetch nothing); the oldest has waited "
                        f"{OLDEST_WAIT}."
                    ),
                    dashboard=QUEUES,
                ),
                Alert(
                    "SidekiqQueueStalled",
                    _promql(
                        """
                        min_over_time(sidekiq_queue_enqueued_jobs[10m]) > 0
                        and
                        max_over_time(sidekiq_queue_busy_workers[10m]) == 0
                        and
                        min_over_time(sidekiq_queue_processes[10m]) > 0
                        and
                        sidekiq_queue_paused == 0
                        """
                    ),
                    for_="5m",
                    keep_firing_for="5m",
                    severity="warning",
                    summary="A served Sidekiq queue holds jobs but none of them runs.",
                    description=(
                        "Queue {{ $labels.queue }} on {{ $labels.target }} has held at least "
                        "{{ $value }} jobs for 15 minutes and none of them ran, although live "
                        f"processes listen to it; the oldest has waited {OLDEST_WAIT}."
                    ),
                    dashboard=QUEUES,
                ),
                Alert(
                    "SidekiqQueueWorkersSaturated",
                    f"min_over_time({UTILISATION}[5m]) >= {SATURATION_RATIO:g}",
                    for_="5m",
                    keep_firing_for="5m",
                    severity="warning",
                    summary="A Sidekiq queue keeps nearly all the threads that serve it busy.",
                    description=(
                        "Jobs of queue {{ $labels.queue }} on {{ $labels.target }} have kept "
                        f"at least {SATURATION_RATIO:.0%} of the threads serving it busy for 10 "
                        "minutes (at least {{ $value | humanizePercentage }} throughout the "
                        "last 5)."
                    ),
                    dashboard=QUEUES,
                ),
            ),
        ),
        Group(
            "sidekiq.processes",
            (
                Alert(
                    "SidekiqNoProcesses",
                    "max_over_time(sidekiq_processes[5m]) == 0",
                    for_="2m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="No Sidekiq process is alive.",
                    description=(
                        "Target {{ $labels.target }} has had no live Sidekiq process for 7 "
                        "minutes: no job of any queue runs."
                    ),
                    dashboard=OVERVIEW,
                ),
                Alert(
                    "SidekiqProcessHeartbeatStale",
                    # `timestamp()`: the age when the sample was scraped, not at evaluation,
                    # so a long scrape interval does not age every process. Sidekiq deletes
                    # a process's hash 60 s after its last beat, and the exporter stops
                    # showing it then: an age past a minute cannot be observed, and the age
                    # is past 30 s for only ~30 s, hence the short `for:` and the long
                    # `keep_firing_for` that keeps a crashed process in view.
                    _promql(
                        f"""
                        timestamp(sidekiq_process_heartbeat_timestamp_seconds)
                          - sidekiq_process_heartbeat_timestamp_seconds
                        > {HEARTBEAT_STALE_SECONDS}
                        """
                    ),
                    for_="20s",
                    keep_firing_for="10m",
                    severity="warning",
                    summary="A Sidekiq process has stopped beating: it hangs or has died.",
                    description=(
                        "Process {{ $labels.identity }} on {{ $labels.target }} last beat "
                        "{{ $value | humanizeDuration }} before it was sampled; Sidekiq drops a "
                        "process 60 s after its last beat."
                    ),
                    dashboard=PROCESSES,
                ),
                Alert(
                    "SidekiqSchedulerLagging",
                    f"min_over_time(sidekiq_scheduled_lag_seconds[5m]) > {SCHEDULER_LAG_SECONDS}",
                    for_="5m",
                    keep_firing_for="5m",
                    severity="warning",
                    summary="Due scheduled or retry jobs are not being moved to their queues.",
                    description=(
                        "Due jobs of the {{ $labels.set }} set on {{ $labels.target }} have waited "
                        f"more than {SCHEDULER_LAG_SECONDS} s to be enqueued for 10 minutes; the "
                        "oldest at least {{ $value | humanizeDuration }} throughout the last 5."
                    ),
                    dashboard=OVERVIEW,
                ),
            ),
        ),
        Group(
            "sidekiq.jobs",
            (
                *JOB_CLASS_RECORDS,
                Alert(
                    "SidekiqJobFailureBudgetBurn",
                    _burn_expr(FAST_BURNS),
                    for_="2m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="A Sidekiq job class fails fast enough to exhaust its error budget.",
                    description=_burn_description(FAST_BURNS),
                    dashboard=JOB_CLASSES,
                    labels=(("burn", "fast"),),
                ),
                Alert(
                    "SidekiqJobFailureBudgetBurn",
                    _burn_expr(SLOW_BURNS),
                    for_="15m",
                    keep_firing_for="30m",
                    severity="warning",
                    summary="A Sidekiq job class fails fast enough to exhaust its error budget.",
                    description=_burn_description(SLOW_BURNS),
                    dashboard=JOB_CLASSES,
                    labels=(("burn", "slow"),),
                ),
                Alert(
                    "SidekiqLongRunningJob",
                    _promql(
                        f"""
                        min_over_time(
                          sidekiq_running_job_max_age_seconds{{queue!~"{LONG_JOB_QUEUES_REGEX}"}}[5m]
                        ) > {LONG_JOB_SECONDS}
                        """
                    ),
                    for_="5m",
                    keep_firing_for="5m",
                    severity="warning",
                    summary="A Sidekiq job has run for long outside a queue meant for long jobs.",
                    description=(
                        "A {{ $labels.class }} job on queue {{ $labels.queue }} of "
                        "{{ $labels.target }} has been running for more than "
                        "{{ $value | humanizeDuration }} (limit outside queues for long jobs: "
                        f"{LONG_JOB_SECONDS // 60} minutes)."
                    ),
                    dashboard=PROCESSES,
                ),
                Alert(
                    "SidekiqDeadSetGrowing",
                    "delta(sidekiq_dead_jobs[1h]) > 0",
                    for_="15m",
                    keep_firing_for="15m",
                    severity="warning",
                    summary="Jobs keep running out of retries into Sidekiq's dead set.",
                    description=(
                        "The dead set of {{ $labels.target }} has grown by about "
                        '{{ printf "%.0f" $value }} jobs in the last hour.'
                    ),
                    dashboard=OVERVIEW,
                ),
                Alert(
                    "SidekiqDeadSetNearCap",
                    f"min_over_time(sidekiq_dead_jobs[5m]) "
                    f">= {DEAD_SET_NEAR_CAP_RATIO * DEAD_SET_CAP:g}",
                    for_="15m",
                    keep_firing_for="15m",
                    severity="warning",
                    summary="Sidekiq's dead set is close to its cap; the oldest dead jobs will go.",
                    description=(
                        "The dead set of {{ $labels.target }} holds "
                        '{{ printf "%.0f" $value }} jobs; '
                        f"at Sidekiq's default cap of {DEAD_SET_CAP:,} the oldest are deleted."
                    ),
                    dashboard=OVERVIEW,
                ),
            ),
        ),
        Group(
            "sidekiq.cron",
            (
                Alert(
                    "SidekiqCronJobOverdue",
                    f"min_over_time(sidekiq_cron_job_overdue_seconds[2m]) > {CRON_OVERDUE_SECONDS}",
                    for_="3m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="A sidekiq-cron job has stopped enqueuing on schedule.",
                    description=(
                        "Cron job {{ $labels.cron_job }}"
                        "{{ with $labels.cron_namespace }} (namespace {{ . }}){{ end }} on "
                        "{{ $labels.target }} is {{ $value | humanizeDuration }} past the tick "
                        "it should have enqueued at (at least, throughout the last 2 minutes). "
                        "sidekiq-cron does not run missed ticks: those runs are lost."
                    ),
                    dashboard=OVERVIEW,
                ),
            ),
        ),
        Group(
            "sidekiq.monitoring",
            (
                Alert(
                    "SidekiqRedisUnreachable",
                    "max_over_time(sidekiq_up[2m]) == 0",
                    for_="3m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="The exporter cannot read Sidekiq's Redis, or its data is stale.",
                    description=(
                        "The exporter at {{ $labels.instance }} has had no fresh data from the "
                        "Redis of target {{ $labels.target }} for 5 minutes (sidekiq_up 0): its "
                        "polls fail or time out, and no queue there is watched."
                    ),
                    dashboard=OVERVIEW,
                ),
                Alert(
                    "SidekiqExporterDown",
                    f"max_over_time({up}[2m]) == 0",
                    for_="3m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="Prometheus cannot scrape the Sidekiq exporter.",
                    description=(
                        "Scrapes of {{ $labels.instance }} (job {{ $labels.job }}) have failed "
                        "for 5 minutes: no Sidekiq alert can fire."
                    ),
                    dashboard=OVERVIEW_BY_INSTANCE,
                ),
                Alert(
                    "SidekiqExporterAbsent",
                    f"absent({up})",
                    for_="5m",
                    keep_firing_for="5m",
                    severity="critical",
                    summary="Prometheus has no Sidekiq exporter to scrape.",
                    description=(
                        "No target of job {{ $labels.job }} has been discovered for 5 minutes: "
                        "no Sidekiq alert can fire."
                    ),
                    dashboard=OVERVIEW_BY_JOB,
                ),
            ),
        ),
    )


def alerts(config: Config) -> tuple[Alert, ...]:
    return tuple(r for g in groups(config) for r in g.rules if isinstance(r, Alert))


def records(config: Config) -> tuple[Record, ...]:
    return tuple(r for g in groups(config) for r in g.rules if isinstance(r, Record))


HEADER = """\
# Generated by `python -m monitoring` from monitoring/rules.py: edit that file, not this one.
# Alerts and recording rules for sidekiq-exporter; every alert is explained in docs/runbooks.md.
"""


def render(config: Config) -> str:
    """The rule file, as text."""
    doc = {
        "groups": [
            {
                "name": group.name,
                "rules": [
                    {"record": r.record, "expr": r.expr}
                    if isinstance(r, Record)
                    else r.rule(config)
                    for r in group.rules
                ],
            }
            for group in groups(config)
        ]
    }
    return HEADER + yaml_text.dump(doc)
