"""Derived state: per-class counters from minute buckets, class limits, SLA breach time."""

from __future__ import annotations

import re

import pytest
from structlog.testing import capture_logs

from exporter.derive import CLASS_LIMIT, DeriveConfig, Deriver
from exporter.model import (
    HISTOGRAM_BUCKETS,
    ClassMinute,
    MetricsMinute,
    ProcessSample,
    QueueSample,
    QueueSla,
    Sample,
    ScheduledSetSample,
)

T0 = 1_755_450_000.0  # a minute boundary
EMPTY_SET = ScheduledSetSample(0, 0, None)


def hist(**buckets: int) -> tuple[int, ...]:
    values = [0] * HISTOGRAM_BUCKETS
    for name, count in buckets.items():
        values[int(name[1:])] = count
    return tuple(values)


def minute(start: float, *classes: ClassMinute, family: str = "7") -> MetricsMinute:
    return MetricsMinute(f"j|{family}|{int(start)}", int(start), classes)


def sample(
    now: float,
    *minutes: MetricsMinute,
    queues: tuple[QueueSample, ...] = (),
    processes: tuple[ProcessSample, ...] = (),
) -> Sample:
    return Sample(
        redis_time=now,
        processed=0,
        failed=0,
        scheduled=EMPTY_SET,
        retry=EMPTY_SET,
        dead_size=0,
        queues=queues,
        processes=processes,
        running_jobs=(),
        metrics_minutes=minutes,
        round_trips=2,
        commands=10,
    )


def cm(name: str, p: int, f: int = 0, ms: int = 0, h: tuple[int, ...] | None = None) -> ClassMinute:
    return ClassMinute(name, p, f, ms, h or hist(b0=p - f))


def test_first_poll_counts_the_window_and_rereads_count_nothing() -> None:
    derive = Deriver("main")
    first = derive(sample(T0 + 10, minute(T0, cm("A", 5, 1, 100))))
    assert first.job_classes["A"].executions == 5
    assert first.job_classes["A"].failures == 1
    assert first.job_classes["A"].milliseconds == 100
    again = derive(sample(T0 + 20, minute(T0, cm("A", 5, 1, 100))))
    assert again.job_classes["A"].executions == 5
    assert again.job_classes["A"].histogram == hist(b0=4)


def test_growth_and_late_flush_into_previous_minute_are_counted() -> None:
    derive = Deriver("main")
    derive(sample(T0 + 50, minute(T0, cm("A", 5))))
    # Next minute: the old minute got a late flush (+2), the new one has 3.
    snap = derive(sample(T0 + 65, minute(T0 + 60, cm("A", 3)), minute(T0, cm("A", 7))))
    assert snap.job_classes["A"].executions == 10
    assert snap.job_classes["A"].histogram[0] == 10


def test_mixed_families_for_the_same_minute_add_up() -> None:
    derive = Deriver("main")
    snap = derive(
        sample(T0 + 5, minute(T0, cm("A", 3), family="7"), minute(T0, cm("A", 4), family="8"))
    )
    assert snap.job_classes["A"].executions == 7


def test_minutes_are_forgotten_once_out_of_window_but_kept_while_missing() -> None:
    derive = Deriver("main", DeriveConfig(metrics_window_minutes=3))
    derive(sample(T0 + 5, minute(T0, cm("A", 5))))
    # One poll where the minute is missing (e.g. an error reply) must not reset it ...
    derive(sample(T0 + 15))
    snap = derive(sample(T0 + 25, minute(T0, cm("A", 5))))
    assert snap.job_classes["A"].executions == 5
    # ... and once it expired from the window, state for it is dropped: counters stay.
    snap = derive(sample(T0 + 60 * 10))
    assert snap.job_classes["A"].executions == 5
    assert derive._seen == {}


def test_counter_never_decreases_when_a_bucket_shrinks() -> None:
    derive = Deriver("main")
    derive(sample(T0 + 5, minute(T0, cm("A", 5, ms=50))))
    snap = derive(sample(T0 + 15, minute(T0, cm("A", 2, ms=10))))  # key recreated
    assert snap.job_classes["A"].executions == 5
    snap = derive(sample(T0 + 25, minute(T0, cm("A", 4, ms=30))))
    assert snap.job_classes["A"].executions == 7
    assert snap.job_classes["A"].milliseconds == 70


def test_restart_is_a_counter_reset() -> None:
    Deriver("main")(sample(T0 + 5, minute(T0, cm("A", 5))))
    fresh = Deriver("main")(sample(T0 + 15, minute(T0, cm("A", 6))))
    assert fresh.job_classes["A"].executions == 6


def test_class_limit_drops_and_counts_never_merges() -> None:
    derive = Deriver("main", DeriveConfig(job_classes_max=2))
    with capture_logs() as logs:
        snap = derive(sample(T0 + 5, minute(T0, cm("A", 1), cm("B", 1), cm("C", 1), cm("D", 1))))
        snap2 = derive(sample(T0 + 15, minute(T0, cm("A", 2), cm("C", 5))))
    assert set(snap.job_classes) == {"A", "B"}
    assert snap.skipped == {CLASS_LIMIT: 2}
    assert snap2.skipped == {CLASS_LIMIT: 1}
    assert snap2.job_classes["A"].executions == 2
    assert [e["event"] for e in logs].count("job_class_limit_reached") == 1


def test_allow_and_deny_patterns() -> None:
    config = DeriveConfig(
        job_class_allow=re.compile(r"Billing::.*"), job_class_deny=re.compile(r".*Test")
    )
    derive = Deriver("main", config)
    snap = derive(
        sample(T0 + 5, minute(T0, cm("Billing::Invoice", 1), cm("Billing::Test", 1), cm("X", 1)))
    )
    assert set(snap.job_classes) == {"Billing::Invoice"}
    assert snap.skipped == {}  # filtered on purpose, not dropped by a limit


def process(version: str) -> ProcessSample:
    return ProcessSample("id", "h", "", version, 5, 0, T0, T0, False, 0, 0.0, {})


def test_job_metrics_support_by_version_and_data() -> None:
    with capture_logs() as logs:
        old = Deriver("main")
        assert old(sample(T0, processes=(process(""),))).job_metrics_supported is False
        assert old(sample(T0 + 10, processes=(process(""),))).job_metrics_supported is False
        assert Deriver("main")(sample(T0, processes=(process("7.3.2"),))).job_metrics_supported
        beta = Deriver("main")(sample(T0 + 5, minute(T0, cm("A", 1)), processes=(process(""),)))
        assert beta.job_metrics_supported  # 6.5 with SIDEKIQ_METRICS_BETA: data appears
    assert [e["event"] for e in logs].count("job_metrics_unavailable") == 1


def queue(name: str, oldest: float | None) -> QueueSample:
    return QueueSample(name, 1 if oldest else 0, oldest, False)


def sla_by_name(name: str) -> QueueSla:
    if name == "fast":
        return QueueSla(2.0, "", "name")
    return QueueSla(None, "", "none")


def test_breach_time_accumulates_between_polls_on_redis_time() -> None:
    derive = Deriver("main", DeriveConfig(sla_for=sla_by_name))
    stuck = T0  # the oldest job in "fast" never moves
    first = derive(sample(T0 + 1, queues=(queue("fast", stuck), queue("other", stuck))))
    assert first.sla_breach_seconds == {"fast": 0.0}  # nothing before the first poll
    assert first.queue_slas["other"].source == "none"
    # At T0+3 latency is 3 s: over the 2 s SLA for 1 s only, not the 2 s since the last poll.
    assert derive(sample(T0 + 3, queues=(queue("fast", stuck),))).sla_breach_seconds["fast"] == 1
    assert derive(sample(T0 + 13, queues=(queue("fast", stuck),))).sla_breach_seconds[
        "fast"
    ] == pytest.approx(11)
    # Healthy again: nothing added.
    healthy = derive(sample(T0 + 23, queues=(queue("fast", T0 + 22.5),)))
    assert healthy.sla_breach_seconds["fast"] == pytest.approx(11)


def test_breach_ignores_gaps_longer_than_the_limit_and_clock_steps_back() -> None:
    derive = Deriver("main", DeriveConfig(sla_for=sla_by_name, max_breach_gap_seconds=30))
    derive(sample(T0 + 10, queues=(queue("fast", T0),)))
    after_gap = derive(sample(T0 + 100, queues=(queue("fast", T0),)))
    assert after_gap.sla_breach_seconds["fast"] == 0  # 90 s unobserved: not counted
    back = derive(sample(T0 + 90, queues=(queue("fast", T0),)))
    assert back.sla_breach_seconds["fast"] == 0
    later = derive(sample(T0 + 100, queues=(queue("fast", T0),)))
    assert later.sla_breach_seconds["fast"] == pytest.approx(10)
