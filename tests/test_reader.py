"""The reader on fakeredis: every generation's layout, bad data, and constant round trips."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import fakeredis
import pytest
import redis

from exporter.model import CronJobSample, RunningJob, Sample
from exporter.sidekiq import decode
from exporter.sidekiq.reader import Reader
from tests.support.layouts import ALL, CRON_1, V6_4_1, V7, V8_0, V8_1_2, SidekiqWriter


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def sync_client(server: fakeredis.FakeServer) -> Iterator[redis.Redis]:
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def client(
    server: fakeredis.FakeServer, request: pytest.FixtureRequest
) -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    # The exporter speaks RESP2 (exporter/connection.py); RESP3 shapes are decoded too.
    client = fakeredis.FakeAsyncRedis(server=server, protocol=request.param)
    yield client
    await client.aclose()


def redis_now(sync_client: redis.Redis) -> float:
    seconds, micros = sync_client.time()
    return float(seconds) + micros / 1e6


def minute_of(now: float) -> datetime:
    return datetime.fromtimestamp(int(now // 60) * 60, UTC)


def populate(writer: SidekiqWriter, now: float) -> None:
    """A small cluster: three queues, two live processes and a stale one, sets, metrics."""
    writer.stats(processed=1000, failed=7)
    writer.push("default", writer.job("HardJob", enqueued_at=now - 42.5, created_at=now - 50))
    writer.push("default", writer.job("HardJob", enqueued_at=now - 1))
    writer.push("within_5_seconds", writer.job("Fast", created_at=now - 3))  # no enqueued_at
    writer.client.sadd(writer.keys.queues, "empty")
    writer.zadd("schedule", now - 20, writer.job("Later", jid="a"))
    writer.zadd("schedule", now + 3600, writer.job("Later", jid="b"))
    writer.zadd("retry", now + 60, writer.job("Flaky"))
    writer.zadd("dead", now - 99, writer.job("Gone"))
    writer.process(
        "worker-1:1:aaaaaaaaaaaa",
        beat=now - 2,
        tag="one",
        concurrency=5,
        queues=["default", "within_5_seconds"],
        busy=2,
    )
    writer.process("worker-2:2:bbbbbbbbbbbb", beat=now - 4, tag="two", concurrency=3, busy=0)
    writer.client.sadd(writer.keys.processes, "gone:3:cccccccccccc")  # stale: no hash
    wrapper = "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
    writer.work("worker-1:1:aaaaaaaaaaaa", "t1", "default", writer.job("HardJob"), run_at=now - 30)
    writer.work(
        "worker-1:1:aaaaaaaaaaaa",
        "t2",
        "within_5_seconds",
        writer.job(wrapper, wrapped="Mailer"),
        run_at=now - 5,
    )
    if writer.version != V6_4_1:
        writer.metrics(
            minute_of(now),
            "HardJob",
            executions=40,
            failures=5,
            milliseconds=3500,
            histogram={0: 30, 5: 5},
        )


@pytest.mark.parametrize("version", ALL)
async def test_reads_every_generation(
    version: str, sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, version)
    now = redis_now(sync_client)
    populate(writer, now)

    sample = await Reader().read(client, now)

    assert sample.redis_time == pytest.approx(now, abs=5)
    assert (sample.processed, sample.failed) == (1000, 7)
    assert (sample.scheduled.size, sample.scheduled.overdue) == (2, 1)
    assert sample.scheduled.oldest_score == pytest.approx(now - 20)
    assert (sample.retry.size, sample.retry.overdue) == (1, 0)
    assert sample.dead_size == 1
    queues = {q.name: q for q in sample.queues}
    assert set(queues) == {"default", "within_5_seconds", "empty"}
    assert queues["default"].size == 2
    # ms timestamps in 8.x lose sub-millisecond digits
    assert queues["default"].latency_at(sample.redis_time) == pytest.approx(
        42.5 + sample.redis_time - now, abs=0.01
    )
    assert queues["within_5_seconds"].oldest_job_timestamp == pytest.approx(now - 3, abs=0.01)
    assert queues["empty"].size == 0
    assert queues["empty"].latency_at(sample.redis_time) == 0
    processes = {p.identity: p for p in sample.processes}
    assert set(processes) == {"worker-1:1:aaaaaaaaaaaa", "worker-2:2:bbbbbbbbbbbb"}
    one = processes["worker-1:1:aaaaaaaaaaaa"]
    assert (one.concurrency, one.busy, one.tag) == (5, 2, "one")
    assert one.queue_capacity == {"default": 5, "within_5_seconds": 5}
    running = sorted(sample.running_jobs, key=lambda j: j.queue)
    assert running == [
        RunningJob("worker-1:1:aaaaaaaaaaaa", "default", "HardJob", float(int(now - 30))),
        RunningJob("worker-1:1:aaaaaaaaaaaa", "within_5_seconds", "Mailer", float(int(now - 5))),
    ]
    if version == V6_4_1:
        assert sample.metrics_minutes == ()
    else:
        (minute,) = sample.metrics_minutes
        (hard,) = minute.classes
        assert (hard.job_class, hard.executions, hard.failures, hard.milliseconds) == (
            "HardJob",
            40,
            5,
            3500,
        )
        assert hard.histogram[0] == 30
        assert hard.histogram[5] == 5
        assert sum(hard.histogram) == 35
    assert sample.skipped == {}
    assert sample.round_trips == 2


async def test_round_trips_do_not_grow_with_queues_processes_or_jobs(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V7)
    now = redis_now(sync_client)
    reader = Reader()

    async def read() -> Sample:
        return await reader.read(client, now)

    def add_queues(count: int) -> None:
        for index in range(count):
            writer.push(f"q{index}", writer.job("J", enqueued_at=now - index))

    def add_processes(count: int) -> None:
        for index in range(count):
            identity = f"host-{index}:{index}:0123456789ab"
            writer.process(identity, beat=now, busy=1)
            writer.work(identity, "t", "q0", writer.job("J"), run_at=now)

    add_queues(10)
    add_processes(1)
    small = await read()
    add_queues(1000)
    add_processes(200)
    for index in range(50):
        writer.metrics(minute_of(now), f"Class{index}", executions=1, histogram={1: 1})
    large = await read()
    # Plus "default", which the processes serve and nobody pushed to.
    assert len(small.queues) == 10 + 1
    assert len(large.queues) == 1000 + 1
    assert len(large.processes) == 200
    assert len(large.running_jobs) == 200
    assert small.round_trips == large.round_trips == 2
    assert large.commands > small.commands


async def test_large_sets_page_with_sscan_and_deduplicate(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V7)
    now = redis_now(sync_client)
    for index in range(250):
        writer.push(f"q{index}", writer.job("J", enqueued_at=now))
    sample = await Reader(scan_count=100).read(client, now)
    names = [q.name for q in sample.queues]
    assert len(names) == len(set(names)) == 250
    assert sample.round_trips > 2  # a set larger than one SSCAN reply costs extra pages


async def test_namespace_prefix_applies_to_keys_not_members(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V6_4_1, namespace="myapp")
    now = redis_now(sync_client)
    populate(writer, now)
    SidekiqWriter(sync_client, V6_4_1).push("other_app", {"class": "X"})  # not namespaced
    sample = await Reader("myapp").read(client, now)
    assert {q.name for q in sample.queues} == {"default", "within_5_seconds", "empty"}
    assert len(sample.processes) == 2
    assert len(sample.running_jobs) == 2
    assert sample.processed == 1000


async def test_mixed_7_and_8_cluster_reads_both_families_and_units(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    old, new = SidekiqWriter(sync_client, V7), SidekiqWriter(sync_client, V8_1_2)
    now = redis_now(sync_client)
    # Oldest job pushed by a 7.x client (float s), newest by an 8.x client (int ms).
    old.push("default", old.job("A", enqueued_at=now - 100))
    new.push("default", new.job("A", enqueued_at=now - 1))
    old.metrics(minute_of(now), "A", executions=3, milliseconds=30, histogram={0: 3})
    new.metrics(minute_of(now), "A", executions=4, failures=1, milliseconds=60, histogram={1: 3})
    old.process("old:1:aaaaaaaaaaaa", beat=now, concurrency=5)
    new.process("new:2:bbbbbbbbbbbb", beat=now, concurrency=7)
    sample = await Reader().read(client, now)
    (queue,) = sample.queues
    assert queue.latency_at(now) == pytest.approx(100, abs=0.01)
    assert sorted(m.key.split("|")[1] for m in sample.metrics_minutes) == sorted(
        [f"{minute_of(now):%Y%m%d}", f"{minute_of(now):%y%m%d}"]
    )
    by_family = {len(m.key.split("|")[1]): m.classes[0] for m in sample.metrics_minutes}
    assert (by_family[8].executions, by_family[8].histogram[0]) == (3, 3)
    assert (by_family[6].executions, by_family[6].failures, by_family[6].histogram[1]) == (4, 1, 3)
    assert sorted(p.concurrency for p in sample.processes) == [5, 7]


async def test_wrong_types_and_malformed_items_are_skipped_and_counted(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V8_0)
    now = redis_now(sync_client)
    populate(writer, now)
    sync_client.sadd("queues", "stringy", "broken")
    sync_client.set("queue:stringy", "I am a string")  # WRONGTYPE for LLEN and LINDEX
    sync_client.lpush("queue:broken", b"{not json")
    sync_client.set("stat:processed", "lots")
    sync_client.sadd("processes", "listy:1:x", "badinfo:1:x")
    sync_client.rpush("listy:1:x", "a")  # process "hash" that is a list
    sync_client.hset("badinfo:1:x", mapping={"info": "{", "beat": "1"})
    sync_client.hset("worker-1:1:aaaaaaaaaaaa:work", mapping={"t3": "", "t4": "[]"})
    key = writer.keys.metrics_minute_v8(minute_of(now))
    sync_client.hset(key, mapping={"Weird|zz": "1", "Neg|p": "-4"})
    sync_client.set("paused", "not a set")
    sample = await Reader().read(client, now)
    assert sample.skipped == {
        decode.WRONG_TYPE: 4,  # LLEN, LINDEX, HMGET listy, SMEMBERS paused
        decode.INVALID_COUNTER: 1,  # stat:processed is not an integer
        decode.INVALID_JOB: 1,
        decode.INVALID_PROCESS: 1,
        decode.INVALID_WORK: 2,
        decode.INVALID_METRIC: 2,
    }
    names = {q.name: q for q in sample.queues}
    assert names["stringy"].size == 0
    assert names["broken"].size == 1
    assert names["broken"].oldest_job_timestamp is None
    assert names["default"].size == 2  # everything else still read
    assert len(sample.processes) == 2
    assert len(sample.running_jobs) == 2
    assert sample.processed is None  # skipped: not exported rather than shown as 0


async def test_empty_redis(client: fakeredis.FakeAsyncRedis) -> None:
    sample = await Reader().read(client, 1_755_450_000.0)
    assert sample.queues == sample.processes == sample.running_jobs == ()
    assert (sample.processed, sample.failed, sample.dead_size) == (0, 0, 0)
    assert sample.scheduled.oldest_score is None
    assert sample.round_trips == 2


def test_job_payload_as_sidekiq_writes_it() -> None:
    job = SidekiqWriter(fakeredis.FakeRedis(), V8_0).job("A", enqueued_at=1.5, created_at=2.0)
    assert json.dumps(job).count("1500") == 1


async def test_unreadable_histogram_is_none_and_counts_are_kept(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V7)
    now = redis_now(sync_client)
    writer.metrics(minute_of(now), "A", executions=4, milliseconds=40)
    sync_client.lpush(writer.keys.histogram_v7("A", minute_of(now)), "not a string")
    reader = Reader()
    sample = await reader.read(client, now)
    (minute,) = sample.metrics_minutes
    (a,) = minute.classes
    assert (a.executions, a.milliseconds, a.histogram) == (4, 40, None)
    assert sample.skipped == {decode.WRONG_TYPE: 1}


async def test_metrics_window_widens_after_a_gap_between_reads(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V7)
    now = redis_now(sync_client)
    twenty_minutes_ago = minute_of(now - 20 * 60)
    writer.metrics(twenty_minutes_ago, "A", executions=3)
    reader = Reader(metrics_window_minutes=3)
    assert (await reader.read(client, now, since=now - 10)).metrics_minutes == ()
    after_gap = await reader.read(client, now, since=now - 30 * 60)
    assert [m.minute_start for m in after_gap.metrics_minutes] == [
        int(twenty_minutes_ago.timestamp())
    ]
    assert after_gap.round_trips == 2
    # A gap longer than the cap reads the last MAX_CATCH_UP_MINUTES only.
    days = await reader.read(client, now + 2 * 3600, since=now - 3600)
    assert days.metrics_window_start == (int((now + 2 * 3600) // 60) - 59) * 60


# --- sidekiq-cron and the Enterprise leader ---------------------------------------------------


async def test_cron_jobs_of_both_generations_and_the_leader(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V7)
    now = redis_now(sync_client)
    writer.cron_job("tick", "* * * * *", generation=CRON_1, last_enqueue=now - 20)
    writer.cron_job("hourly", "0 * * * *", generation=CRON_1, saved_after_enqueue=True,
                    last_enqueue=now - 3600)  # fmt: skip
    writer.cron_job("nightly", "0 3 * * * Europe/Berlin", last_enqueue=now - 86_400)
    writer.cron_job("new", "@daily", namespace="billing:eu", enabled=False)
    sync_client.set(writer.keys.leader, "web-1:7:0123456789ab")
    reader = Reader()
    first = await reader.read(client, now)
    # The namespace scan rides in this first poll: `billing:eu` is read from the next one.
    assert {(j.namespace, j.name) for j in first.cron_jobs or ()} == {
        ("", "tick"),
        ("", "hourly"),
        ("default", "nightly"),
    }
    sample = await reader.read(client, now + 1)
    jobs = {(j.namespace, j.name): j for j in sample.cron_jobs or ()}
    assert jobs[("", "tick")] == CronJobSample("", "tick", True, "* * * * *", int(now - 20))
    assert jobs[("", "hourly")].last_enqueue_timestamp == int(now - 3600)  # `… UTC`
    assert jobs[("default", "nightly")].cron == "0 3 * * * Europe/Berlin"
    assert jobs[("billing:eu", "new")] == CronJobSample("billing:eu", "new", False, "@daily", None)
    assert len(jobs) == 4
    assert sample.leader == "web-1:7:0123456789ab"
    assert sample.skipped == {}
    assert (first.round_trips, sample.round_trips) == (2, 2)


async def test_cron_under_a_sidekiq_6_namespace_prefix(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V6_4_1, namespace="myapp")
    now = redis_now(sync_client)
    writer.cron_job("tick", "* * * * *", generation=CRON_1, last_enqueue=now - 20)
    writer.cron_job("nightly", "0 3 * * *", namespace="ops")
    SidekiqWriter(sync_client, V7).cron_job("other_app", "* * * * *", generation=CRON_1)
    reader = Reader("myapp")
    await reader.read(client, now)
    sample = await reader.read(client, now + 1)
    assert sorted((j.namespace, j.name) for j in sample.cron_jobs or ()) == [
        ("", "tick"),
        ("ops", "nightly"),
    ]


async def test_without_cron_no_cron_command_is_sent(
    sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    writer = SidekiqWriter(sync_client, V7)
    now = redis_now(sync_client)
    writer.cron_job("tick", "* * * * *", last_enqueue=now - 20)
    on, off = await Reader().read(client, now), await Reader(collect_cron=False).read(client, now)
    assert off.cron_jobs is None
    assert on.cron_jobs
    # SSCAN + SCARD of `cron_jobs` and `cron_jobs:default`, a SCAN page, one HMGET.
    assert on.commands - off.commands == 6


def _facts(sample: Sample) -> tuple[object, ...]:
    return (
        sample.queues,
        sample.processes,
        sample.running_jobs,
        sample.metrics_minutes,
        sample.skipped,
        sample.commands,
    )


@pytest.mark.parametrize("version", [V7, V8_1_2])
async def test_a_reader_that_polled_before_reads_what_a_new_one_reads(
    version: str, sync_client: redis.Redis, client: fakeredis.FakeAsyncRedis
) -> None:
    # The reader reuses request bytes and decoded replies of its last poll: whatever changed
    # since must show exactly as a reader that never polled sees it.
    writer = SidekiqWriter(sync_client, version)
    now = redis_now(sync_client)
    populate(writer, now)
    writer.push("broken", b"{")
    reader = Reader()
    for _ in range(2):
        assert _facts(await reader.read(client, now)) == _facts(await Reader().read(client, now))
    changes = [
        lambda: sync_client.rpop(writer.keys.queue("default")),  # a new oldest job
        lambda: writer.push("new_queue", writer.job("J", enqueued_at=now - 7)),
        lambda: writer.work(
            "worker-2:2:bbbbbbbbbbbb", "t9", "default", writer.job("Other"), run_at=now - 1
        ),
        lambda: writer.metrics(minute_of(now), "HardJob", executions=2),  # same histogram
        lambda: writer.metrics(minute_of(now), "HardJob", executions=0, histogram={3: 1}),
        lambda: writer.metrics(minute_of(now), "NewJob", executions=1, histogram={1: 1}),
        lambda: sync_client.srem(writer.keys.processes, "gone:3:cccccccccccc"),
    ]
    for change in changes:
        change()
        again = await reader.read(client, now)
        assert _facts(again) == _facts(await Reader().read(client, now))
        assert again.skipped == {decode.INVALID_JOB: 1}  # counted in every poll
    assert {q.name for q in again.queues} >= {"new_queue", "broken"}
