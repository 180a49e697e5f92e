"""Cardinality: allow/deny regexes and caps per kind (queues, job classes, cron jobs), selector
to /metrics."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis
from structlog.testing import capture_logs

from exporter.cardinality import (
    QUEUE_LIMIT,
    QUEUE_LIMIT_REACHED,
    CronJobSelector,
    JobClassSelector,
    QueueSelector,
)
from exporter.logs import CRON_JOB_LIMIT_REACHED, JOB_CLASS_LIMIT_REACHED
from exporter.model import ProcessSample, QueueSample, RunningJob
from exporter.sidekiq.reader import Reader
from tests.support.exporter_process import ExporterProcess
from tests.support.layouts import V8_1_2, SidekiqWriter
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer

NOW = 1_755_450_000.0


# --- the selector --------------------------------------------------------------------------


def test_no_limits_keeps_every_name_in_order() -> None:
    selector = QueueSelector()
    assert selector.plan(["b", "a"]) == {"a", "b"}
    assert selector.select(["b", "a"], ["c"]) == ({"a", "b", "c"}, 0)


def test_allow_and_deny_are_full_matches_and_not_counted() -> None:
    selector = QueueSelector(allow=re.compile("billing_.*|default"), deny=re.compile(".*_tmp"))
    names = ["default", "default2", "billing_a", "billing_tmp", "x_billing_b"]
    assert selector.select(names) == ({"default", "billing_a"}, 0)


def test_limit_keeps_names_in_order_and_counts_the_rest_every_poll() -> None:
    selector = QueueSelector("main", limit=2)
    with capture_logs() as logs:
        assert selector.select(["c", "b", "a", "d"]) == ({"a", "b"}, 2)
        assert selector.select(["c", "b", "a", "d"]) == ({"a", "b"}, 2)
    assert [e["event"] for e in logs] == [QUEUE_LIMIT_REACHED]  # once per target
    assert logs[0]["target"] == "main"
    assert logs[0]["limit"] == 2


def test_limit_is_stable_when_queues_appear() -> None:
    selector = QueueSelector(limit=2)
    assert selector.select(["m", "n", "z"])[0] == {"m", "n"}
    # "a" sorts first but does not evict the queues already exported: no flapping series.
    assert selector.select(["a", "m", "n", "z"])[0] == {"m", "n"}
    assert selector.select(["a", "m", "n", "z"])[0] == {"m", "n"}
    # When an exported queue goes away, the next by name takes its place and stays.
    assert selector.select(["a", "n", "z"])[0] == {"a", "n"}
    assert selector.select(["a", "m", "n", "z"])[0] == {"a", "n"}


def test_queue_set_first_then_extras_with_what_is_left() -> None:
    selector = QueueSelector(limit=3, deny=re.compile("secret"))
    exported, dropped = selector.select(["b", "a"], ["a", "secret", "y", "x"])
    assert (exported, dropped) == ({"a", "b", "x"}, 1)  # "y" dropped, "secret" not counted
    # The plan (which tails to read) never misses a queue-set name that select() keeps.
    assert selector.plan(["b", "a", "c"]) == {"a", "b", "c"}
    assert selector.select(["b", "a", "c"], ["x"]) == ({"a", "b", "c"}, 1)


def test_zero_budget_for_extras() -> None:
    selector = QueueSelector(limit=1)
    assert selector.select(["a"], ["b", "c"]) == ({"a"}, 2)


def test_exported_only_drops_a_queue_wherever_its_label_would_come_from() -> None:
    selector = QueueSelector(limit=2)
    queues = [QueueSample(name, 1, None, False) for name in ("a", "b", "c")]
    process = ProcessSample("p", "h", "", "", 5, 1, NOW, NOW, False, 0, 0.0, {"b": 5, "z": 5})
    running = [RunningJob("p", "c", "J", NOW), RunningJob("p", "b", "J", NOW)]
    kept, (served,), busy, dropped = selector.exported_only(
        ["a", "b", "c"], queues, [process], running
    )
    assert [q.name for q in kept] == ["a", "b"]
    assert served.queue_capacity == {"b": 5}  # "z" only served: over the cap like "c"
    assert [job.queue for job in busy] == ["b"]
    assert dropped == 2


# --- job classes ---------------------------------------------------------------------------


def test_job_classes_first_come_first_kept_and_counted_every_time() -> None:
    selector = JobClassSelector("main", limit=2)
    dropped: set[str] = set()
    with capture_logs() as logs:
        assert [selector.admit(c, dropped) for c in ("B", "A", "C", "B")] == [
            True,
            True,
            False,
            True,
        ]
        assert selector.admit("C", dropped) is False
    assert dropped == {"C"}
    assert [e["event"] for e in logs] == [JOB_CLASS_LIMIT_REACHED]  # once per target
    assert (logs[0]["target"], logs[0]["limit"], logs[0]["first_dropped"]) == ("main", 2, "C")


def test_job_class_allow_and_deny_are_full_matches_and_not_counted() -> None:
    selector = JobClassSelector(allow=re.compile(r"Billing::.*"), deny=re.compile(r".*Test"))
    dropped: set[str] = set()
    admitted = [
        c
        for c in ("Billing::Invoice", "Billing::Test", "XBilling::A")
        if selector.admit(c, dropped)
    ]
    assert admitted == ["Billing::Invoice"]
    assert dropped == set()


def test_cron_jobs_by_namespace_and_name_stable_across_polls() -> None:
    selector = CronJobSelector("main", limit=2)
    jobs = [("default", "c"), ("", "b"), ("default", "a")]
    with capture_logs() as logs:
        assert selector.select(jobs) == ([("", "b"), ("default", "a")], 1)
        # A job that sorts first appears: those exported last time stay.
        assert selector.select([("", "a"), *jobs], unread=3) == ([("", "b"), ("default", "a")], 5)
    assert [e["event"] for e in logs] == [CRON_JOB_LIMIT_REACHED]  # once per target
    assert CronJobSelector().select(jobs) == (jobs, 0)  # no limit: every job, as found


def test_cron_allow_deny_on_the_job_name_and_sets_within_the_limit() -> None:
    selector = CronJobSelector(allow=re.compile("report_.*"), deny=re.compile(".*_tmp"))
    jobs = [("a", "report_daily"), ("b", "report_tmp"), ("report_x", "other")]
    assert selector.select(jobs) == ([("a", "report_daily")], 0)
    # Each set holds a job at least: no more sets are read than jobs can be exported.
    assert CronJobSelector(limit=2).sets(["", "b", "c"]) == (["", "b"], 1)
    assert CronJobSelector().sets(["", "b", "c"]) == (["", "b", "c"], 0)


# --- the reader ----------------------------------------------------------------------------


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def sync_client(server: fakeredis.FakeServer) -> Iterator[redis.Redis]:
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


@pytest.fixture
async def client(server: fakeredis.FakeServer) -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=server)
    yield client
    await client.aclose()


def populate(sync_client: redis.Redis) -> None:
    """Five queues (one denied below), a process serving two more, jobs running on three."""
    writer = SidekiqWriter(sync_client, V8_1_2)
    for index, name in enumerate(["q1", "q2", "q3", "q4", "secret"]):
        for _ in range(index + 1):
            writer.push(name, writer.job("J", enqueued_at=NOW - 10 * (index + 1)))
    identity = "w:1:aaaaaaaaaaaa"
    writer.process(
        identity, beat=NOW, concurrency=5, busy=3, queues=["q1", "served_only", "secret"]
    )
    for tid, queue in (("t1", "q1"), ("t2", "q4"), ("t3", "secret")):
        writer.work(identity, tid, queue, writer.job("J"), run_at=NOW - 5)


async def test_reader_skips_tails_but_counts_every_queue_in_the_total(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    populate(sync_client)
    everything = await Reader().read(client, NOW)
    limited = Reader(queues=QueueSelector(limit=3, deny=re.compile("secret")))
    sample = await limited.read(client, NOW)

    assert everything.enqueued_total == sample.enqueued_total == 1 + 2 + 3 + 4 + 5
    assert [q.name for q in sample.queues] == ["q1", "q2", "q3"]  # first by name
    assert sample.queues[0].oldest_job_timestamp == pytest.approx(NOW - 10)
    # q4 (over the limit) and secret (denied): their LLEN is sent, their LINDEX is not.
    assert everything.commands - sample.commands == 2
    assert sample.round_trips == everything.round_trips
    # q4 and served_only are over the limit; secret is denied, so not counted.
    assert sample.skipped == {QUEUE_LIMIT: 2}
    (process,) = sample.processes
    assert process.queue_capacity == {"q1": 5}
    assert [job.queue for job in sample.running_jobs] == ["q1"]
    assert process.busy == everything.processes[0].busy  # process totals are untouched


async def test_limit_and_deny_through_to_metrics(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    populate(sync_client)
    argv = ["--collect.queues.max=4", "--collect.queues.deny=secret", "--poll.interval=1s"]
    async with Pipeline.build(argv, client=client) as pipeline:
        with capture_logs() as logs:
            assert await pipeline.poll()
            assert await pipeline.poll()
        scrape = pipeline.scrape()
    queue_labels = {
        dict(labels)["queue"]
        for (name, labels) in scrape.samples
        if name.startswith("sidekiq_") and "queue" in dict(labels)
    }
    assert queue_labels == {"q1", "q2", "q3", "q4"}  # never "other", never "secret"
    assert scrape.value("sidekiq_enqueued_jobs", target="default") == 15
    # served_only is dropped on each of the two polls.
    assert (
        scrape.value("sidekiq_exporter_skipped_items_total", target="default", reason=QUEUE_LIMIT)
        == 2
    )
    assert [e["event"] for e in logs].count(QUEUE_LIMIT_REACHED) == 1
    assert scrape.value("sidekiq_busy_workers", target="default") == 3


async def test_within_limits_nothing_is_dropped(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    populate(sync_client)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        with capture_logs() as logs:
            assert await pipeline.poll()
        scrape = pipeline.scrape()
    assert not scrape.series("sidekiq_exporter_skipped_items_total")
    assert QUEUE_LIMIT_REACHED not in [e["event"] for e in logs]
    assert set(scrape.by_label("sidekiq_queue_enqueued_jobs", "queue")) == {
        "q1",
        "q2",
        "q3",
        "q4",
        "secret",
        "served_only",
    }


# --- the daemon ----------------------------------------------------------------------------


@pytest.mark.integration
def test_daemon_applies_the_queue_flags(redis_server: RedisServer) -> None:
    conn = redis_server.connect()
    for name in ("a", "b", "c", "d", "skip_me"):
        conn.execute("SADD", "queues", name)
        conn.execute("LPUSH", f"queue:{name}", '{"class":"J","enqueued_at":1.0}')
    conn.close()
    flags = ["--collect.queues.max=2", "--collect.queues.deny=skip_.*"]
    with ExporterProcess(redis_server.url, args=flags) as exporter:
        scrape = exporter.scrape_after_polls(2)
        assert set(scrape.by_label("sidekiq_queue_enqueued_jobs", "queue")) == {"a", "b"}
        assert scrape.value("sidekiq_enqueued_jobs", target="default") == 5
        skipped = scrape.value(
            "sidekiq_exporter_skipped_items_total", target="default", reason=QUEUE_LIMIT
        )
        assert skipped == 2 * exporter.polls(scrape)  # c and d, on every poll
        exporter.stop()
        events = [e["event"] for e in exporter.log_events()]
    assert events.count(QUEUE_LIMIT_REACHED) == 1
