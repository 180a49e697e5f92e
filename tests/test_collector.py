"""The collector fed with hand-built snapshots: names, labels, values, staleness."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.collector import HISTOGRAM_LE, SidekiqCollector
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

NOW = 1_755_450_000.0


@dataclass
class FakeClock:
    now: float = NOW + 1

    def time(self) -> float:
        return self.now


@dataclass(frozen=True)
class FakeSettings:
    poll_interval: float = 10.0
    collect_processes: bool = True


def make_sample() -> Sample:
    return Sample(
        redis_time=NOW,
        processed=1000,
        failed=7,
        scheduled=ScheduledSetSample(size=3, overdue=2, oldest_score=NOW - 12),
        retry=ScheduledSetSample(size=1, overdue=0, oldest_score=NOW + 60),
        dead_size=4,
        queues=(
            QueueSample("default", 5, NOW - 42, False),
            QueueSample("within_5_seconds", 0, None, True),
            QueueSample("orphan", 2, NOW + 3, False),  # skewed clock: clamped to 0
            QueueSample("low", 0, None, False),  # served, never pushed to (the reader adds it)
        ),
        processes=(
            ProcessSample(
                "w1:1:a",
                "w1",
                "one",
                "7.3.2",
                5,
                2,
                NOW - 1,
                NOW - 100,
                False,
                2048,
                0.0003,
                {"default": 5, "within_5_seconds": 5},
            ),
            ProcessSample(
                "w2:2:b",
                "w2",
                "two",
                "",
                3,
                1,
                NOW - 2,
                NOW - 50,
                True,
                1024,
                0.0001,
                {"default": 3, "low": 3},
            ),
        ),
        running_jobs=(
            RunningJob("w1:1:a", "default", "HardJob", NOW - 30),
            RunningJob("w1:1:a", "default", "HardJob", NOW - 10),
            RunningJob("w2:2:b", "default", "Mailer", NOW - 5),
        ),
        metrics_minutes=(),
        round_trips=2,
        commands=20,
        skipped={},
    )


def make_snapshot(sample: Sample | None = None) -> Snapshot:
    histogram = [0] * HISTOGRAM_BUCKETS
    histogram[0], histogram[4], histogram[25] = 30, 4, 1
    sample = sample or make_sample()
    return Snapshot(
        target="main",
        sample=sample,
        job_classes={"HardJob": JobClassTotals(40, 5, 3500, tuple(histogram))},
        job_metrics_supported=True,
        queue_slas={
            "default": QueueSla(None, "", "none"),
            "within_5_seconds": QueueSla(5.0, "", "name"),
            "orphan": QueueSla(60.0, "billing", "config"),
            "low": QueueSla(None, "", "none"),
        },
        sla_breach_seconds={"within_5_seconds": 0.0, "orphan": 12.5},
        # "Mailer" is beyond the job-class limit: no series by class, still busy in its queue.
        running_jobs=tuple(j for j in sample.running_jobs if j.job_class != "Mailer"),
        processes=sample.processes,
    )


def make_status(snapshot: Snapshot | None, **changes: object) -> TargetStatus:
    status = replace(
        TargetStatus.initial("main"),
        snapshot=snapshot,
        snapshot_completed_at=NOW,
        polls_success=3,
        polls_error=1,
        last_poll_duration_seconds=0.012,
        last_success_timestamp=NOW,
        last_round_trips=2,
        skipped_totals={"invalid_job": 2},
        up=True,
    )
    return replace(status, **changes)  # type: ignore[arg-type]


def registry_for(
    status: TargetStatus, clock: FakeClock | None = None, settings: FakeSettings | None = None
) -> CollectorRegistry:
    store = Store(["main"])
    store.publish(status)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidekiqCollector(store, settings or FakeSettings(), clock or FakeClock()))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"target": "main", **labels})


def test_global_families() -> None:
    r = registry_for(make_status(make_snapshot()))
    assert value(r, "sidekiq_up") == 1
    assert value(r, "sidekiq_processed_jobs_total") == 1000
    assert value(r, "sidekiq_failed_jobs_total") == 7
    assert value(r, "sidekiq_enqueued_jobs") == 7
    assert value(r, "sidekiq_scheduled_jobs") == 3
    assert value(r, "sidekiq_retry_jobs") == 1
    assert value(r, "sidekiq_dead_jobs") == 4
    assert value(r, "sidekiq_scheduled_overdue_jobs", set="schedule") == 2
    assert value(r, "sidekiq_scheduled_lag_seconds", set="schedule") == 12
    assert value(r, "sidekiq_scheduled_lag_seconds", set="retry") == 0
    assert value(r, "sidekiq_processes") == 2
    assert value(r, "sidekiq_workers") == 8
    assert value(r, "sidekiq_busy_workers") == 3


def test_queue_families() -> None:
    r = registry_for(make_status(make_snapshot()))
    assert value(r, "sidekiq_queue_enqueued_jobs", queue="default") == 5
    assert value(r, "sidekiq_queue_latency_seconds", queue="default") == 42
    assert value(r, "sidekiq_queue_latency_seconds", queue="orphan") == 0  # clamped
    assert value(r, "sidekiq_queue_paused", queue="within_5_seconds") == 1
    assert value(r, "sidekiq_queue_paused", queue="default") == 0
    assert value(r, "sidekiq_queue_busy_workers", queue="default") == 3
    assert value(r, "sidekiq_queue_busy_workers", queue="orphan") == 0
    # w2 is quiet: it fetches nothing, so only w1's 5 threads serve "default".
    assert value(r, "sidekiq_queue_workers", queue="default") == 5
    assert value(r, "sidekiq_queue_processes", queue="default") == 1
    assert value(r, "sidekiq_queue_workers", queue="orphan") == 0
    assert value(r, "sidekiq_queue_max_processing_time_seconds", queue="default") == 30
    assert value(r, "sidekiq_queue_enqueued_jobs", queue="low") == 0


def test_quiet_processes_are_no_capacity_but_their_jobs_are_busy() -> None:
    # "low" is served only by the quiet w2: no thread will take its jobs. The totals keep
    # counting every live process, quiet or not.
    r = registry_for(make_status(make_snapshot()))
    assert value(r, "sidekiq_queue_workers", queue="low") == 0
    assert value(r, "sidekiq_queue_processes", queue="low") == 0
    assert value(r, "sidekiq_queue_busy_workers", queue="default") == 3  # w2's Mailer too
    assert value(r, "sidekiq_processes") == 2
    assert value(r, "sidekiq_workers") == 8
    assert value(r, "sidekiq_busy_workers") == 3
    awake = replace(make_sample().processes[1], quiet=False)
    sample = replace(make_sample(), processes=(make_sample().processes[0], awake))
    r = registry_for(make_status(make_snapshot(sample)))
    assert value(r, "sidekiq_queue_workers", queue="low") == 3
    assert value(r, "sidekiq_queue_processes", queue="low") == 1
    assert value(r, "sidekiq_queue_workers", queue="default") == 8


def test_sla_families() -> None:
    r = registry_for(make_status(make_snapshot()))
    assert value(r, "sidekiq_queue_sla_seconds", queue="within_5_seconds") == 5
    assert value(r, "sidekiq_queue_sla_seconds", queue="default") is None
    assert value(r, "sidekiq_queue_sla_breach_seconds_total", queue="orphan") == 12.5
    assert value(r, "sidekiq_queue_sla_breach_seconds_total", queue="default") is None
    info = {"queue": "orphan", "component": "billing", "sla_source": "config"}
    assert value(r, "sidekiq_queue_info", **info) == 1


def test_process_families_and_switch() -> None:
    r = registry_for(make_status(make_snapshot()))
    labels = {"identity": "w2:2:b", "hostname": "w2", "tag": "two"}
    assert value(r, "sidekiq_process_busy_workers", **labels) == 1
    assert value(r, "sidekiq_process_concurrency", **labels) == 3
    assert value(r, "sidekiq_process_memory_rss_bytes", **labels) == 1024
    assert value(r, "sidekiq_process_redis_rtt_seconds", **labels) == 0.0001
    assert value(r, "sidekiq_process_heartbeat_timestamp_seconds", **labels) == NOW - 2
    assert value(r, "sidekiq_process_start_time_seconds", **labels) == NOW - 50
    assert value(r, "sidekiq_process_quiet", **labels) == 1
    assert value(r, "sidekiq_process_info", version="", **labels) == 1
    off = registry_for(make_status(make_snapshot()), settings=FakeSettings(collect_processes=False))
    assert value(off, "sidekiq_process_busy_workers", **labels) is None
    assert value(off, "sidekiq_processes") == 2


def test_running_job_families() -> None:
    r = registry_for(make_status(make_snapshot()))
    assert value(r, "sidekiq_running_jobs", queue="default", **{"class": "HardJob"}) == 2
    assert (
        value(r, "sidekiq_running_job_max_age_seconds", queue="default", **{"class": "HardJob"})
        == 30
    )
    assert value(r, "sidekiq_running_jobs", queue="default", **{"class": "Mailer"}) is None
    assert value(r, "sidekiq_queue_busy_workers", queue="default") == 3


def test_job_class_histogram_is_cumulative_with_sidekiq_bounds() -> None:
    r = registry_for(make_status(make_snapshot()))
    c = {"class": "HardJob"}
    assert value(r, "sidekiq_job_executions_total", **c) == 40
    assert value(r, "sidekiq_job_failures_total", **c) == 5
    assert value(r, "sidekiq_job_duration_seconds_bucket", le="0.02", **c) == 30
    assert value(r, "sidekiq_job_duration_seconds_bucket", le="0.065", **c) == 30
    assert value(r, "sidekiq_job_duration_seconds_bucket", le="0.1", **c) == 34
    assert value(r, "sidekiq_job_duration_seconds_bucket", le="335.0", **c) == 34
    assert value(r, "sidekiq_job_duration_seconds_bucket", le="+Inf", **c) == 35
    assert value(r, "sidekiq_job_duration_seconds_count", **c) == 35
    assert value(r, "sidekiq_job_duration_seconds_sum", **c) == 3.5
    assert HISTOGRAM_LE[:3] == ("0.02", "0.03", "0.045")
    assert len(HISTOGRAM_LE) == HISTOGRAM_BUCKETS - 1


def test_job_families_absent_when_unsupported() -> None:
    snapshot = replace(make_snapshot(), job_metrics_supported=False)
    r = registry_for(make_status(snapshot))
    assert value(r, "sidekiq_job_executions_total", **{"class": "HardJob"}) is None


def test_self_metrics() -> None:
    r = registry_for(make_status(make_snapshot()))
    assert value(r, "sidekiq_exporter_polls_total", result="success") == 3
    assert value(r, "sidekiq_exporter_polls_total", result="error") == 1
    assert value(r, "sidekiq_exporter_poll_duration_seconds") == 0.012
    assert value(r, "sidekiq_exporter_last_poll_success_timestamp_seconds") == NOW
    assert value(r, "sidekiq_exporter_redis_round_trips") == 2
    assert value(r, "sidekiq_exporter_skipped_items_total", reason="invalid_job") == 2
    assert r.get_sample_value("sidekiq_exporter_build_info", {"version": __version__}) == 1


@pytest.mark.parametrize(("age", "fresh"), [(29.9, True), (30.1, False)])
def test_stale_snapshot_drops_sidekiq_families_keeps_self_metrics(age: float, fresh: bool) -> None:
    r = registry_for(make_status(make_snapshot()), clock=FakeClock(NOW + age))
    assert value(r, "sidekiq_up") == (1 if fresh else 0)
    assert (value(r, "sidekiq_queue_enqueued_jobs", queue="default") is not None) is fresh
    assert value(r, "sidekiq_exporter_polls_total", result="success") == 3


def test_failed_last_poll_is_down_but_keeps_fresh_data() -> None:
    r = registry_for(make_status(make_snapshot(), up=False))
    assert value(r, "sidekiq_up") == 0
    assert value(r, "sidekiq_enqueued_jobs") == 7


def test_before_first_poll_only_self_metrics() -> None:
    r = registry_for(TargetStatus.initial("main"))
    assert value(r, "sidekiq_up") == 0
    assert value(r, "sidekiq_exporter_polls_total", result="success") == 0
    assert value(r, "sidekiq_enqueued_jobs") is None


def test_exposition_parses_and_help_says_sampling_interval() -> None:
    text = generate_latest(registry_for(make_status(make_snapshot()))).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "Sampled every 10s." in families["sidekiq_queue_latency_seconds"].documentation
    assert families["sidekiq_processed_jobs"].type == "counter"
    assert families["sidekiq_job_duration_seconds"].type == "histogram"
    for family in families.values():
        for s in family.samples:
            assert "target" in s.labels or s.name == "sidekiq_exporter_build_info"
            assert not {"job", "instance", "type", "cluster", "env"} & set(s.labels)


def test_cron_families_and_leader() -> None:
    jobs = (
        CronJobSchedule(CronJobSample("", "tick", True, "* * * * *", NOW - 20), NOW + 40),
        CronJobSchedule(CronJobSample("default", "late", True, "0 * * * *", NOW - 7200), NOW - 90),
        CronJobSchedule(CronJobSample("default", "off", False, "0 * * * *", None), None),
        CronJobSchedule(CronJobSample("default", "odd", True, "every day", NOW - 9), None),
    )
    sample = replace(make_sample(), cron_jobs=tuple(s.job for s in jobs), leader="w1:1:a")
    r = registry_for(make_status(replace(make_snapshot(sample), cron_jobs=jobs)))
    assert value(r, "sidekiq_cron_jobs", status="enabled") == 3
    assert value(r, "sidekiq_cron_jobs", status="disabled") == 1
    tick = {"cron_namespace": "", "cron_job": "tick"}
    late = {"cron_namespace": "default", "cron_job": "late"}
    assert value(r, "sidekiq_cron_job_enabled", **tick) == 1
    assert value(r, "sidekiq_cron_job_last_enqueue_timestamp_seconds", **tick) == NOW - 20
    assert value(r, "sidekiq_cron_job_next_expected_timestamp_seconds", **tick) == NOW + 40
    assert value(r, "sidekiq_cron_job_overdue_seconds", **tick) == 0
    assert value(r, "sidekiq_cron_job_overdue_seconds", **late) == 90  # on Redis TIME
    off = {"cron_namespace": "default", "cron_job": "off"}
    assert value(r, "sidekiq_cron_job_enabled", **off) == 0
    # Never enqueued, disabled: no timestamps, no schedule.
    for name in (
        "sidekiq_cron_job_last_enqueue_timestamp_seconds",
        "sidekiq_cron_job_next_expected_timestamp_seconds",
        "sidekiq_cron_job_overdue_seconds",
    ):
        assert value(r, name, **off) is None
    odd = {"cron_namespace": "default", "cron_job": "odd"}
    assert value(r, "sidekiq_cron_job_last_enqueue_timestamp_seconds", **odd) == NOW - 9
    assert value(r, "sidekiq_cron_job_overdue_seconds", **odd) is None  # cannot be evaluated
    assert value(r, "sidekiq_leader_info", identity="w1:1:a") == 1


def test_cron_not_read_no_cron_family_and_no_leader_no_info() -> None:
    r = registry_for(make_status(make_snapshot()))  # `cron_jobs` None: --no-collect.cron
    names = {m.name for m in r.collect()}
    assert not {n for n in names if n.startswith(("sidekiq_cron", "sidekiq_leader"))}
    empty = registry_for(make_status(make_snapshot(replace(make_sample(), cron_jobs=()))))
    assert value(empty, "sidekiq_cron_jobs", status="enabled") == 0
    assert value(empty, "sidekiq_cron_jobs", status="disabled") == 0
