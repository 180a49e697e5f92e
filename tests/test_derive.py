"""Derived state: per-class counters from minute buckets, class limits, SLA breach time, the next
expected tick of cron jobs."""

from __future__ import annotations

import re
from dataclasses import replace
from unittest import mock

import pytest
from structlog.testing import capture_logs

from exporter.cardinality import CLASS_LIMIT, JobClassSelector
from exporter.derive import DeriveConfig, Deriver
from exporter.logs import CRON_LINE_UNPARSEABLE
from exporter.model import (
    HISTOGRAM_BUCKETS,
    ClassMinute,
    CronJobSample,
    MetricsMinute,
    ProcessSample,
    QueueSample,
    QueueSla,
    Sample,
    Snapshot,
)
from exporter.sidekiq.cron_schedule import UNPARSEABLE_CRON, parse_cron_line
from tests.support.samples import empty_sample

T0 = 1_755_450_000.0  # a minute boundary


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
    return empty_sample(now, queues=queues, processes=processes, metrics_minutes=minutes)


def cm(name: str, p: int, f: int = 0, ms: int = 0, h: tuple[int, ...] | None = None) -> ClassMinute:
    return ClassMinute(name, p, f, ms, h or hist(b0=p - f))


def started(
    config: DeriveConfig | None = None,
    now: float = T0 - 60,
    *,
    classes: JobClassSelector | None = None,
) -> Deriver:
    """A deriver past its first poll: a baseline taken on an empty Redis a minute before T0."""
    derive = Deriver("main", config, classes=classes)
    derive(sample(now))
    return derive


def test_first_poll_is_a_baseline_then_only_growth_counts() -> None:
    derive = Deriver("main")
    first = derive(sample(T0 + 10, minute(T0, cm("A", 5, 1, 100))))
    # What the window held at start is not counted, but the class exists from the start at 0.
    assert first.job_classes["A"].executions == 0
    assert first.job_classes["A"].histogram == hist()
    grown = derive(sample(T0 + 20, minute(T0, cm("A", 8, 2, 150, hist(b0=5, b3=1)))))
    assert grown.job_classes["A"].executions == 3
    assert grown.job_classes["A"].failures == 1
    assert grown.job_classes["A"].milliseconds == 50
    assert grown.job_classes["A"].histogram == hist(b0=1, b3=1)


def test_rereads_count_nothing() -> None:
    derive = started()
    first = derive(sample(T0 + 10, minute(T0, cm("A", 5, 1, 100))))
    assert first.job_classes["A"].executions == 5
    assert first.job_classes["A"].failures == 1
    assert first.job_classes["A"].milliseconds == 100
    for now in (T0 + 20, T0 + 30, T0 + 65):
        again = derive(sample(now, minute(T0, cm("A", 5, 1, 100))))
        assert again.job_classes["A"].executions == 5
        assert again.job_classes["A"].histogram == hist(b0=4)


def test_flush_after_the_minute_ended_lands_in_the_next_bucket() -> None:
    # Sidekiq flushes every beat (10 s) into the bucket of the flush time: jobs that ran at
    # 12:00:55 are flushed at 12:01:03 into the 12:01 bucket. Nothing special: a new key grows.
    derive = started()
    derive(sample(T0 + 50, minute(T0, cm("A", 5))))
    snap = derive(sample(T0 + 59, minute(T0, cm("A", 5))))
    assert snap.job_classes["A"].executions == 5
    snap = derive(sample(T0 + 65, minute(T0, cm("A", 5)), minute(T0 + 60, cm("A", 3))))
    assert snap.job_classes["A"].executions == 8
    assert snap.job_classes["A"].histogram[0] == 8


def test_skewed_worker_writes_into_the_previous_minute_after_it_ended() -> None:
    # A worker whose clock is behind still flushes into the 12:00 bucket at 12:01:05 (exporter
    # clock): the previous minute is still read and its growth is counted.
    derive = started()
    derive(sample(T0 + 50, minute(T0, cm("A", 5))))
    snap = derive(sample(T0 + 65, minute(T0 + 60, cm("A", 3)), minute(T0, cm("A", 7))))
    assert snap.job_classes["A"].executions == 10
    assert snap.job_classes["A"].histogram[0] == 10


def test_mixed_families_for_the_same_minute_add_up() -> None:
    derive = started()
    snap = derive(
        sample(T0 + 5, minute(T0, cm("A", 3), family="7"), minute(T0, cm("A", 4), family="8"))
    )
    assert snap.job_classes["A"].executions == 7
    snap = derive(
        sample(T0 + 15, minute(T0, cm("A", 3), family="7"), minute(T0, cm("A", 6), family="8"))
    )
    assert snap.job_classes["A"].executions == 9


def test_minutes_are_forgotten_once_out_of_window_but_kept_while_missing() -> None:
    derive = started(DeriveConfig(metrics_window_minutes=3))
    derive(sample(T0 + 5, minute(T0, cm("A", 5))))
    # One poll where the minute is missing (e.g. an error reply) must not reset it ...
    derive(sample(T0 + 15))
    snap = derive(sample(T0 + 25, minute(T0, cm("A", 5))))
    assert snap.job_classes["A"].executions == 5
    # ... and once it expired from the window, state for it is dropped: counters stay.
    snap = derive(sample(T0 + 60 * 10))
    assert snap.job_classes["A"].executions == 5
    assert derive._seen == {}


def test_bucket_expiry_in_redis_counts_nothing_and_loses_nothing() -> None:
    # Sidekiq's keys expire after 8 h, long after they left the window; a minute that vanishes
    # from Redis while still in the window (deleted) leaves the counters as they were.
    derive = started()
    derive(sample(T0 + 5, minute(T0, cm("A", 5, 1, 40))))
    snap = derive(sample(T0 + 15))
    assert snap.job_classes["A"] == derive(sample(T0 + 25)).job_classes["A"]
    assert snap.job_classes["A"].executions == 5


def test_a_forgotten_minute_read_again_is_never_counted_twice() -> None:
    # The reader says which minutes it asked for; the deriver forgets older ones for good,
    # even when a later poll's clock went back (Redis failover, a clock step) and re-reads one.
    derive = started(now=T0 - 120)
    window = 3 * 60

    def read(now: float, *minutes: MetricsMinute) -> Sample:
        start = int(now // 60) * 60 - window + 60
        return replace(sample(now, *minutes), metrics_window_start=start)

    derive(read(T0 + 5, minute(T0, cm("A", 5))))
    derive(read(T0 + 60 * 4, minute(T0 + 60 * 4, cm("A", 1))))  # T0 fell out of the window
    assert T0 not in derive._minute_start.values()
    back = derive(read(T0 + 30, minute(T0, cm("A", 6)), minute(T0 + 60 * 4, cm("A", 1))))
    assert back.job_classes["A"].executions == 6  # 5 + 1, not + 6 again


def test_a_skewed_first_poll_does_not_hide_later_minutes() -> None:
    # The first poll's window comes from the exporter's clock (Redis TIME is learnt from it);
    # five minutes fast, it reads future minutes. That baseline must not make the deriver
    # ignore the real minutes the next, corrected poll reads.
    derive = Deriver("main")

    def read(now: float, *minutes: MetricsMinute) -> Sample:
        return replace(sample(now, *minutes), metrics_window_start=int(now // 60) * 60 - 120)

    derive(read(T0 + 300))
    derive(read(T0 + 5, minute(T0, cm("A", 2))))
    snap = derive(read(T0 + 15, minute(T0, cm("A", 5))))
    assert snap.job_classes["A"].executions == 5  # a minute first seen after the baseline


def test_counter_never_decreases_when_a_bucket_shrinks() -> None:
    derive = started()
    derive(sample(T0 + 5, minute(T0, cm("A", 5, ms=50))))
    snap = derive(sample(T0 + 15, minute(T0, cm("A", 2, ms=10))))  # key recreated
    assert snap.job_classes["A"].executions == 5
    snap = derive(sample(T0 + 25, minute(T0, cm("A", 4, ms=30))))
    assert snap.job_classes["A"].executions == 7
    assert snap.job_classes["A"].milliseconds == 70


def test_restart_is_a_counter_reset_to_zero() -> None:
    derive = started()
    assert derive(sample(T0 + 5, minute(T0, cm("A", 5)))).job_classes["A"].executions == 5
    # A new exporter process: its first poll is a baseline, so the executions the old one
    # exported are not counted again; Prometheus sees a reset to 0 and counts growth after.
    restarted = Deriver("main")
    assert restarted(sample(T0 + 15, minute(T0, cm("A", 6)))).job_classes["A"].executions == 0
    assert restarted(sample(T0 + 25, minute(T0, cm("A", 9)))).job_classes["A"].executions == 3


def test_class_limit_drops_and_counts_never_merges() -> None:
    derive = started(classes=JobClassSelector("main", limit=2))
    with capture_logs() as logs:
        snap = derive(sample(T0 + 5, minute(T0, cm("A", 1), cm("B", 1), cm("C", 1), cm("D", 1))))
        snap2 = derive(sample(T0 + 15, minute(T0, cm("A", 2), cm("C", 5))))
    assert set(snap.job_classes) == {"A", "B"}
    assert snap.skipped == {CLASS_LIMIT: 2}
    assert snap2.skipped == {CLASS_LIMIT: 1}
    assert snap2.job_classes["A"].executions == 2
    assert set(snap2.job_classes) == {"A", "B"}  # nothing like "other" is made up
    assert [e["event"] for e in logs].count("job_class_limit_reached") == 1


def test_class_slots_turn_over_after_a_deploy_renames_the_classes() -> None:
    # Full slots, then the old classes stop for good and new ones run (executions and running
    # jobs). Once the old ones have been idle for a while, the new ones are exported, and
    # count only what they run from then on; the running jobs follow the same classes.
    from dataclasses import replace

    from exporter.model import RunningJob

    derive = started(classes=JobClassSelector("main", limit=2))
    derive(sample(T0 + 5, minute(T0, cm("OldA", 1), cm("OldB", 1))))
    new: Snapshot | None = None
    ran: dict[float, int] = {}  # minute -> NewA's executions in it (NewB runs twice as often)
    for step in range(1, 60):  # ten minutes of polls every 10 s, new classes only
        now = T0 + 5 + 10 * step
        bucket = now // 60 * 60
        ran[bucket] = ran.get(bucket, 0) + 1
        window = [b for b in ran if b >= bucket - 120]
        runs = replace(
            sample(now, *(minute(b, cm("NewA", ran[b]), cm("NewB", 2 * ran[b])) for b in window)),
            running_jobs=(RunningJob("id", "default", "NewA", now - 1),),
        )
        new = derive(runs)
    assert new is not None
    assert set(new.job_classes) == {"NewA", "NewB"}  # the old ones gave their slots back
    assert [job.job_class for job in new.running_jobs] == ["NewA"]
    assert new.skipped == {}
    # Counted from when they got their slots: something, and less than all they ran.
    assert 0 < new.job_classes["NewA"].executions < sum(ran.values())
    assert new.job_classes["NewB"].executions == 2 * new.job_classes["NewA"].executions


def test_allow_and_deny_patterns() -> None:
    classes = JobClassSelector(allow=re.compile(r"Billing::.*"), deny=re.compile(r".*Test"))
    derive = Deriver("main", classes=classes)
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


def test_running_jobs_by_class_follow_the_same_class_limit() -> None:
    from dataclasses import replace

    from exporter.model import RunningJob

    derive = Deriver("main", classes=JobClassSelector(limit=2))
    running = tuple(RunningJob("id", "default", klass, T0) for klass in ("A", "B", "C", "B"))
    snap = derive(replace(sample(T0 + 5, minute(T0, cm("A", 1))), running_jobs=running))
    # A (from the metrics) and B fill the limit; C is dropped, counted once, not merged.
    assert [j.job_class for j in snap.running_jobs] == ["A", "B", "B"]
    assert snap.skipped == {CLASS_LIMIT: 1}
    assert len(snap.sample.running_jobs) == 4  # per-queue busy still counts every job


def test_unreadable_histogram_is_unknown_not_zero() -> None:
    # Good read, a poll where the histogram could not be read, good read: counted once.
    derive = Deriver("main")
    derive(sample(T0 + 5))  # baseline
    derive(sample(T0 + 15, minute(T0, cm("A", 5, h=hist(b4=5)))))
    unreadable = ClassMinute("A", 5, 0, 0, None)
    derive(sample(T0 + 25, minute(T0, unreadable)))
    snap = derive(sample(T0 + 35, minute(T0, cm("A", 6, h=hist(b4=6)))))
    assert snap.job_classes["A"].histogram == hist(b4=6)
    assert snap.job_classes["A"].executions == 6


def test_minutes_during_a_gap_are_counted_when_the_window_catches_up() -> None:
    from dataclasses import replace

    derive = Deriver("main", DeriveConfig(metrics_window_minutes=3))
    derive(sample(T0 + 5))  # baseline
    derive(replace(sample(T0 + 65), metrics_window_start=int(T0 - 60)))
    # Thirty minutes unread; the reader then reads every minute since the last success.
    later = T0 + 31 * 60
    catch_up = replace(
        sample(later + 5, minute(T0 + 600, cm("A", 4)), minute(later, cm("A", 1))),
        metrics_window_start=int(T0),
    )
    assert derive(catch_up).job_classes["A"].executions == 5


# --- sidekiq-cron: the next expected tick -----------------------------------------------------


def cron(name: str, line: str, last: float | None, *, enabled: bool = True) -> CronJobSample:
    return CronJobSample("default", name, enabled, line, last)


def schedules(derive: Deriver, now: float, *jobs: CronJobSample) -> dict[str, float | None]:
    snapshot = derive(empty_sample(now, cron_jobs=jobs))
    return {s.job.name: s.next_expected for s in snapshot.cron_jobs}


def test_next_tick_after_the_last_enqueue_and_overdue_on_redis_time() -> None:
    derive = Deriver("main")
    on_time = cron("tick", "* * * * *", T0 + 2)  # fired 2 s after its tick
    stopped = cron("hourly", "0 * * * *", T0 - 3 * 3600 + 5)
    snapshot = derive(empty_sample(T0 + 30, cron_jobs=(on_time, stopped)))
    by_name = {s.job.name: s for s in snapshot.cron_jobs}
    assert by_name["tick"].next_expected == T0 + 60
    assert by_name["tick"].overdue_at(T0 + 30) == 0
    # Missed the ticks of two hours ago and one hour ago: overdue since the first of them.
    assert by_name["hourly"].next_expected == T0 - 2 * 3600
    assert by_name["hourly"].overdue_at(T0 + 30) == 2 * 3600 + 30
    assert snapshot.skipped == {}


def test_a_job_that_never_fired_is_expected_after_the_exporter_first_saw_it() -> None:
    derive = Deriver("main")
    job = cron("new", "*/5 * * * *", None)
    assert schedules(derive, T0 + 10, job) == {"new": T0 + 300}
    # The reference stays where it was first seen: five minutes on, it is overdue.
    assert schedules(derive, T0 + 400, job) == {"new": T0 + 300}


def test_enabled_again_it_is_expected_at_its_next_tick_not_the_missed_ones() -> None:
    derive = Deriver("main")
    last = T0 - 86_400
    assert schedules(derive, T0, cron("daily", "0 * * * *", last, enabled=False)) == {"daily": None}
    assert schedules(derive, T0 + 600, cron("daily", "0 * * * *", last)) == {"daily": T0 + 3600}
    # Disabled and enabled again: counted from the second time it was seen enabled.
    schedules(derive, T0 + 700, cron("daily", "0 * * * *", last, enabled=False))
    assert schedules(derive, T0 + 4000, cron("daily", "0 * * * *", last)) == {"daily": T0 + 7200}


def test_a_job_never_seen_before_counts_from_its_last_enqueue_alone() -> None:
    # An exporter restarted long after the job stopped reports the job overdue at once ...
    derive = Deriver("main")
    assert schedules(derive, T0, cron("hourly", "0 * * * *", T0 - 3 * 3600)) == {
        "hourly": T0 - 2 * 3600
    }
    # ... and so does a later poll for a job it had not seen (a namespace the scan just found).
    later = cron("later", "0 * * * *", T0 - 3 * 3600)
    assert schedules(derive, T0 + 10, later)["later"] == T0 - 2 * 3600


def test_unparseable_lines_are_counted_every_poll_and_logged_once() -> None:
    derive = Deriver("main")
    jobs = (
        cron("natural", "every day at noon", T0 - 60),
        cron("disabled", "not a line", None, enabled=False),  # never evaluated: not counted
        cron("fine", "@hourly", T0 - 60),
    )
    with capture_logs() as logs:
        for now in (T0, T0 + 10):
            snapshot = derive(empty_sample(now, cron_jobs=jobs))
            assert snapshot.skipped == {UNPARSEABLE_CRON: 1}
    assert [s.job.name for s in snapshot.cron_jobs] == ["disabled", "fine", "natural"]
    assert [s.next_expected for s in snapshot.cron_jobs] == [None, T0, None]
    assert [(e["event"], e["cron_job"]) for e in logs] == [(CRON_LINE_UNPARSEABLE, "natural")]


def test_a_tick_is_computed_again_only_when_the_job_enqueues_or_its_line_changes() -> None:
    derive = Deriver("main")
    with mock.patch("exporter.derive.parse_cron_line", wraps=parse_cron_line) as parse:
        for now in range(int(T0), int(T0) + 50, 10):  # five polls, nothing changes
            schedules(derive, now, cron("tick", "* * * * *", T0 - 58))
        assert parse.call_count == 1
        schedules(derive, T0 + 62, cron("tick", "* * * * *", T0 + 61))
        schedules(derive, T0 + 70, cron("tick", "*/2 * * * *", T0 + 61))
        assert parse.call_count == 3


def test_a_minute_handed_again_as_the_same_tuple_counts_as_a_new_equal_one() -> None:
    # The reader hands a minute read as before as the very same tuple of classes, and derive
    # skips it then: through slot turnover, re-reads and growth, the totals must be those of
    # equal but new tuples.
    from exporter.model import RunningJob

    config = DeriveConfig(metrics_window_minutes=10)  # a minute read again for 10 minutes
    fresh = started(config, classes=JobClassSelector("main", limit=2))
    reused = started(config, classes=JobClassSelector("main", limit=2))
    tuples: dict[tuple[str, tuple[ClassMinute, ...]], tuple[ClassMinute, ...]] = {}

    def same_tuples(s: Sample) -> Sample:
        minutes = tuple(
            replace(m, classes=tuples.setdefault((m.key, m.classes), m.classes))
            for m in s.metrics_minutes
        )
        return replace(s, metrics_minutes=minutes)

    old = minute(T0, cm("OldA", 1), cm("OldB", 1))
    steps = [sample(T0 + 5, old), sample(T0 + 10, old)]
    ran: dict[float, int] = {}
    for step in range(1, 60):  # the old classes idle, new ones run: their slots turn over
        now = T0 + 5 + 10 * step
        bucket = now // 60 * 60
        if step % 3:  # a re-read every third poll, else one more execution
            ran[bucket] = ran.get(bucket, 0) + 1
        window = [b for b in ran if b >= bucket - 120]
        steps.append(
            replace(
                sample(
                    now, *(minute(b, cm("NewA", ran[b]), cm("NewB", 2 * ran[b])) for b in window)
                ),
                running_jobs=(RunningJob("id", "default", "NewA", now - 1),),
            )
        )
    # A slot freed while a minute stays as it was: "A" (only running) idles out, and "C",
    # dropped so far, gets its slot while its minute is read again unchanged.
    still = minute(T0 + 600, cm("B", 1), cm("C", 1))
    steps.append(
        replace(sample(T0 + 605, still), running_jobs=(RunningJob("id", "default", "A", T0),))
    )
    steps += [sample(T0 + 605 + 10 * step, still) for step in range(1, 40)]
    for s in steps:
        a, b = fresh(replace(s)), reused(same_tuples(s))
        assert a.job_classes == b.job_classes
        assert a.skipped == b.skipped
    assert set(a.job_classes) == {"B", "C"}
