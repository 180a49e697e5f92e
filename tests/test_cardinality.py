"""Cardinality: allow/deny regexes and caps per kind (queues, job classes, processes, cron
jobs), label length, selector to /metrics."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import fakeredis
import pytest
import redis
from structlog.testing import capture_logs

from exporter.cardinality import (
    CLASS_LIMIT,
    CRON_LIMIT,
    LABEL_TOO_LONG,
    PROCESS_LIMIT,
    QUEUE_LIMIT,
    QUEUE_LIMIT_REACHED,
    CronJobSelector,
    JobClassSelector,
    ProcessSelector,
    QueueSelector,
)
from exporter.logs import (
    CRON_JOB_LIMIT_REACHED,
    JOB_CLASS_LIMIT_REACHED,
    LABEL_VALUE_TOO_LONG,
    PROCESS_LIMIT_REACHED,
)
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
    assert selector.select(["b", "a"], ["c"]) == ({"a", "b", "c"}, {})


def test_allow_and_deny_are_full_matches_and_not_counted() -> None:
    selector = QueueSelector(allow=re.compile("billing_.*|default"), deny=re.compile(".*_tmp"))
    names = ["default", "default2", "billing_a", "billing_tmp", "x_billing_b"]
    assert selector.select(names) == ({"default", "billing_a"}, {})


def test_limit_keeps_names_in_order_and_counts_the_rest_every_poll() -> None:
    selector = QueueSelector("main", limit=2)
    with capture_logs() as logs:
        assert selector.select(["c", "b", "a", "d"]) == ({"a", "b"}, {QUEUE_LIMIT: 2})
        assert selector.select(["c", "b", "a", "d"]) == ({"a", "b"}, {QUEUE_LIMIT: 2})
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
    assert (exported, dropped) == ({"a", "b", "x"}, {QUEUE_LIMIT: 1})  # "y"; not "secret"
    # The plan (which tails to read) never misses a queue-set name that select() keeps.
    assert selector.plan(["b", "a", "c"]) == {"a", "b", "c"}
    assert selector.select(["b", "a", "c"], ["x"]) == ({"a", "b", "c"}, {QUEUE_LIMIT: 1})


def test_zero_budget_for_extras() -> None:
    selector = QueueSelector(limit=1)
    assert selector.select(["a"], ["b", "c"]) == ({"a"}, {QUEUE_LIMIT: 2})


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
    assert dropped == {QUEUE_LIMIT: 2}


# --- job classes ---------------------------------------------------------------------------


def test_job_classes_over_the_limit_are_counted_every_poll_and_kept_ones_stay() -> None:
    selector = JobClassSelector("main", limit=2)
    with capture_logs() as logs:
        assert selector.select({"B", "C", "A"}, NOW) == ({"A", "B"}, {CLASS_LIMIT: 1}, set())
        # "B" is not seen this poll, but keeps its slot: it was present moments ago.
        assert selector.select({"A", "C"}, NOW + 10) == ({"A", "B"}, {CLASS_LIMIT: 1}, set())
    assert [e["event"] for e in logs] == [JOB_CLASS_LIMIT_REACHED]  # once per target
    assert (logs[0]["target"], logs[0]["limit"], logs[0]["first_dropped"]) == ("main", 2, "C")


def test_job_class_allow_and_deny_are_full_matches_and_not_counted() -> None:
    selector = JobClassSelector(allow=re.compile(r"Billing::.*"), deny=re.compile(r".*Test"))
    present = {"Billing::Invoice", "Billing::Test", "XBilling::A"}
    assert selector.select(present, NOW) == ({"Billing::Invoice"}, {}, set())


def test_idle_job_classes_give_their_slots_to_new_ones() -> None:
    # A deploy renames the classes: the old names stop, the new ones are dropped at first
    # (the slots are taken), then take over once the old ones have been idle long enough.
    selector = JobClassSelector(limit=2, idle_seconds=300)
    assert selector.select({"OldA", "OldB"}, NOW)[0] == {"OldA", "OldB"}
    old, new = {"OldA", "OldB"}, {"NewA", "NewB"}
    assert selector.select({"NewA", "NewB", "OldB"}, NOW + 200) == (old, {CLASS_LIMIT: 2}, set())
    # OldA idle 300 s: its slot goes to the first newcomer by name. OldB was seen at +200.
    exported, skipped, released = selector.select(new, NOW + 301)
    assert (exported, skipped, released) == ({"NewA", "OldB"}, {CLASS_LIMIT: 1}, {"OldA"})
    assert selector.select(new, NOW + 501) == (new, {}, {"OldB"})
    # The new set is as stable as the old: an old name back later is the one turned away.
    assert selector.select(new | {"OldA"}, NOW + 510) == (new, {CLASS_LIMIT: 1}, set())


def test_idle_job_classes_keep_their_slots_while_nothing_needs_them() -> None:
    selector = JobClassSelector(limit=3, idle_seconds=300)
    selector.select({"Hourly", "Busy"}, NOW)
    # Idle for an hour, but a slot is free: no series is taken away for nothing.
    assert selector.select({"Busy", "New"}, NOW + 3600) == ({"Hourly", "Busy", "New"}, {}, set())
    # Under pressure the longest idle goes first.
    assert selector.select({"Busy", "New", "Newer"}, NOW + 3700)[2] == {"Hourly"}


# --- processes -----------------------------------------------------------------------------


def process(identity: str) -> ProcessSample:
    return ProcessSample(identity, "h", "", "", 5, 1, NOW, NOW - 60, False, 0, 0.0, {"q": 5})


def identities(processes: tuple[ProcessSample, ...]) -> list[str]:
    return [p.identity for p in processes]


def test_processes_within_the_limit_are_all_kept_in_order() -> None:
    selector = ProcessSelector(limit=3)
    given = (process("c"), process("a"), process("b"))
    assert selector.select(given) == (given, {})


def test_process_limit_is_stable_and_fills_free_slots_by_identity() -> None:
    selector = ProcessSelector("main", limit=2)
    with capture_logs() as logs:
        kept, dropped = selector.select((process("m"), process("z"), process("n")))
        assert (identities(kept), dropped) == (["m", "n"], {PROCESS_LIMIT: 1})
        # A new process that sorts first does not evict those already exported.
        kept, dropped = selector.select(tuple(map(process, "azmn")))
        assert (identities(kept), dropped) == (["m", "n"], {PROCESS_LIMIT: 2})
        # When an exported one is gone (deploy, crash), the first newcomer by identity takes
        # its slot, and keeps it.
        kept, dropped = selector.select(tuple(map(process, "azn")))
        assert (identities(kept), dropped) == (["a", "n"], {PROCESS_LIMIT: 1})
        kept, _ = selector.select(tuple(map(process, "azmn")))
        assert identities(kept) == ["a", "n"]
    assert [e["event"] for e in logs] == [PROCESS_LIMIT_REACHED]  # once per target


async def test_process_limit_caps_per_process_series_and_keeps_totals_exact(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V8_1_2)
    for index in range(5):
        identity = f"host-{index}:1:aaaaaaaaaaaa"
        writer.process(identity, beat=NOW, concurrency=index + 1, busy=1, queues=["q"])
        writer.work(identity, "t1", "q", writer.job("J"), run_at=NOW - 5)
    argv = ["--collect.processes.max=2", "--poll.interval=1s"]
    async with Pipeline.build(argv, client=client) as pipeline:
        assert await pipeline.poll()
        writer.process("a-new:1:aaaaaaaaaaaa", beat=NOW, concurrency=10, queues=["q"])
        assert await pipeline.poll()
        scrape = pipeline.scrape()
    exported = set(scrape.by_label("sidekiq_process_concurrency", "identity"))
    # The first two by identity, kept when a process that sorts before them arrives.
    assert exported == {"host-0:1:aaaaaaaaaaaa", "host-1:1:aaaaaaaaaaaa"}
    per_process = {labels for name, labels in scrape.samples if name.startswith("sidekiq_process_")}
    assert len(per_process) == 2 * 2  # 2 processes; the info series has one more label
    # Totals and per-queue capacity count every live process.
    t = {"target": "default"}
    assert scrape.value("sidekiq_processes", **t) == 6
    assert scrape.value("sidekiq_workers", **t) == 1 + 2 + 3 + 4 + 5 + 10
    assert scrape.value("sidekiq_busy_workers", **t) == 5
    assert scrape.value("sidekiq_queue_workers", **t, queue="q") == 25
    assert scrape.value("sidekiq_queue_processes", **t, queue="q") == 6
    assert scrape.value("sidekiq_queue_busy_workers", **t, queue="q") == 5
    # Three dropped on the first poll, four on the second.
    assert scrape.value("sidekiq_exporter_skipped_items_total", **t, reason=PROCESS_LIMIT) == 7


# --- label length --------------------------------------------------------------------------


def test_label_length_is_counted_in_utf8_bytes() -> None:
    selector = QueueSelector(max_label_bytes=8)
    assert selector.fits("12345678")
    assert not selector.fits("123456789")
    assert selector.fits("ééé")  # 6 bytes
    assert not selector.fits("éééé5")  # 9 bytes in 5 characters
    assert QueueSelector().fits("x" * 100_000)  # no limit


def test_every_selector_skips_and_counts_values_too_long() -> None:
    long = "x" * 9
    queues = QueueSelector(limit=2, max_label_bytes=8)
    with capture_logs() as logs:
        # Too long names take no slot: "b" fits in the place the long one would have taken.
        assert queues.select([long, "a"], ["b", long + "y"]) == (
            {"a", "b"},
            {LABEL_TOO_LONG: 2},
        )
    assert [e["event"] for e in logs] == [LABEL_VALUE_TOO_LONG]
    assert (logs[0]["kind"], logs[0]["length_bytes"], logs[0]["prefix"]) == ("queue", 9, long)
    assert queues.plan([long, "a"]) == {"a"}  # its tail is not read either
    classes = JobClassSelector(max_label_bytes=8)
    assert classes.select({long, "Job"}, NOW) == ({"Job"}, {LABEL_TOO_LONG: 1}, set())
    processes = ProcessSelector(max_label_bytes=8)
    fine = process("p1")
    every_label = [
        process(long),
        replace(fine, identity="p2", hostname=long),
        replace(fine, identity="p3", tag=long),
        replace(fine, identity="p4", version=long),
    ]
    assert processes.select([fine, *every_label]) == ((fine,), {LABEL_TOO_LONG: 4})
    cron = CronJobSelector(max_label_bytes=8)
    jobs = [("", "nightly"), ("", long), (long, "hourly")]
    assert cron.select(jobs) == ([("", "nightly")], {LABEL_TOO_LONG: 2})


async def test_no_label_value_from_redis_exceeds_the_limit(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    # A long value in every place a label value comes from: queue names (the queues set, a
    # process's queues, a running job's queue), job classes (metrics, running jobs), a
    # process's identity, hostname, tag and version, a sidekiq-cron job's name and namespace,
    # and Sidekiq Enterprise's leader. One of each, 2 KiB, over the 1 KiB default: skipped and
    # counted, and nothing else changes (totals stay exact).
    long = "L" * 2048
    writer = SidekiqWriter(sync_client, V8_1_2)
    now = float(sync_client.time()[0])
    writer.push("default", writer.job("Job", enqueued_at=now - 1))
    writer.push(long + "q", writer.job("Job", enqueued_at=now - 1))
    writer.process("ok:1:aaaaaaaaaaaa", beat=now, queues=["default", long + "served"])
    writer.work("ok:1:aaaaaaaaaaaa", "t1", long + "ran", writer.job("Job"), run_at=now - 1)
    writer.work("ok:1:aaaaaaaaaaaa", "t2", "default", writer.job(long + "Class"), run_at=now - 1)
    writer.process(long + ":1:aaaaaaaaaaaa", beat=now, concurrency=2)
    writer.process("h:1:aaaaaaaaaaaa", beat=now, concurrency=3, hostname=long)
    writer.process("t:1:aaaaaaaaaaaa", beat=now, concurrency=4, tag=long)
    writer.process("v:1:aaaaaaaaaaaa", beat=now, concurrency=6)
    info = json.loads(sync_client.hget("v:1:aaaaaaaaaaaa", "info") or b"{}")
    sync_client.hset("v:1:aaaaaaaaaaaa", "info", json.dumps({**info, "version": long}))
    minute = datetime.fromtimestamp(int(now // 60) * 60, UTC)
    writer.metrics(minute, "Job", executions=1)
    writer.metrics(minute, long + "Metric", executions=1)
    cron_jobs = {
        "cron_job:nightly": "",  # 1.x
        f"cron_job:{long}": "",
        "cron_job:default:hourly": "default",  # 2.x
        f"cron_job:{long}:hourly": long,
    }
    for member, namespace in cron_jobs.items():
        sync_client.sadd(writer.keys.cron_set(namespace), member)
        sync_client.hset(member, mapping={"status": "enabled", "cron": "0 * * * *"})
    sync_client.set(writer.keys.leader, long)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        assert await pipeline.poll()  # finds the cron namespaces; the next poll reads them
        assert await pipeline.poll()
        scrape = await pipeline.scrape_openmetrics()
    values = {value for _, labels in scrape.samples for _, value in labels}
    assert max(len(value.encode()) for value in values) <= 1024
    t = {"target": "default"}
    # Per poll: three queues, two classes, four processes, a 1.x cron job, the leader; the
    # cron job of the long namespace on the second poll only (when its set is first read).
    too_long = scrape.value("sidekiq_exporter_skipped_items_total", **t, reason=LABEL_TOO_LONG)
    assert too_long == 2 * (3 + 2 + 4 + 1 + 1) + 1
    cron = scrape.series("sidekiq_cron_job_enabled", **t)
    assert {(dict(ls)["cron_namespace"], dict(ls)["cron_job"]) for ls in cron} == {
        ("", "nightly"),
        ("default", "hourly"),
    }
    assert scrape.get("sidekiq_leader_info", **t, identity=long) is None
    assert set(scrape.by_label("sidekiq_queue_enqueued_jobs", "queue", **t)) == {"default"}
    assert scrape.value("sidekiq_enqueued_jobs", **t) == 2
    assert scrape.value("sidekiq_processes", **t) == 5
    assert scrape.value("sidekiq_workers", **t) == 5 + 2 + 3 + 4 + 6
    assert set(scrape.by_label("sidekiq_process_concurrency", "identity", **t)) == {
        "ok:1:aaaaaaaaaaaa"
    }
    assert scrape.value("sidekiq_busy_workers", **t) == 0  # from the processes' busy counts
    assert scrape.value("sidekiq_queue_busy_workers", **t, queue="default") == 1


def test_cron_jobs_by_namespace_and_name_stable_across_polls() -> None:
    selector = CronJobSelector("main", limit=2)
    jobs = [("default", "c"), ("", "b"), ("default", "a")]
    with capture_logs() as logs:
        assert selector.select(jobs) == ([("", "b"), ("default", "a")], {CRON_LIMIT: 1})
        # A job that sorts first appears: those exported last time stay.
        kept = selector.select([("", "a"), *jobs], unread=3)
        assert kept == ([("", "b"), ("default", "a")], {CRON_LIMIT: 5})
    assert [e["event"] for e in logs] == [CRON_JOB_LIMIT_REACHED]  # once per target
    assert CronJobSelector().select(jobs) == (jobs, {})  # no limit: every job, as found


def test_cron_allow_deny_on_the_job_name_and_sets_within_the_limit() -> None:
    selector = CronJobSelector(allow=re.compile("report_.*"), deny=re.compile(".*_tmp"))
    jobs = [("a", "report_daily"), ("b", "report_tmp"), ("report_x", "other")]
    assert selector.select(jobs) == ([("a", "report_daily")], {})
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
        conn.execute("LPUSH", f"queue:{name}", '{"class":"J","enqueued_at":1755000000.0}')
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
