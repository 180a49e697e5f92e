"""sidekiq-cron's jobs as metrics, on a real redis-server.

- Real sidekiq-cron 1.8.0 with Sidekiq 6.4.1 (Debian 12): every-minute jobs (one in another
  time zone) and a disabled one fire, the exporter daemon agrees with sidekiq-cron's own
  `Sidekiq::Cron::Job.all`; then Sidekiq stops and the job turns overdue at its next tick,
  not before.
- sidekiq-cron 2.x, which no Debian release packages: its layout written as its source writes
  it (exporter/demo/layout.py, `cron@v2.3.1`): namespaces (one with a `:`), `"1"`/`"0"`
  booleans, an empty `last_enqueue_time`, a zone in a cron line, next to a stale 1.x job saved
  with the other time format; and Sidekiq Enterprise's leader.
- Bad input: a `cron_job:` key of the wrong type, a line the exporter cannot evaluate and a
  100,000-member namespace set are skipped and counted, in the usual two round trips.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis

from exporter.cardinality import CRON_LIMIT
from exporter.sidekiq import decode
from exporter.sidekiq.cron_schedule import UNPARSEABLE_CRON
from tests.support.exporter_process import ExporterProcess
from tests.support.layouts import CRON_1, V7, SidekiqWriter
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer
from tests.support.sidekiq import SidekiqProcess, cron_jobs, get_version, load_cron, wait_for

pytestmark = pytest.mark.integration

T = {"target": "default"}
OVERDUE = "sidekiq_cron_job_overdue_seconds"
NEXT = "sidekiq_cron_job_next_expected_timestamp_seconds"
LAST = "sidekiq_cron_job_last_enqueue_timestamp_seconds"


def job(name: str, namespace: str = "") -> dict[str, str]:
    return {**T, "cron_namespace": namespace, "cron_job": name}


def redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis(port=redis_server.port) as client:
        yield client


# --- real sidekiq-cron 1.8.0 ------------------------------------------------------------------


def test_real_sidekiq_cron_then_overdue_after_the_next_tick(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    """Wall time: ~15 s plus the time from the first enqueue to the next minute boundary (on
    average ~45 s, at most ~75 s: every-minute jobs, and nothing faked)."""
    started = time.monotonic()
    version = get_version("6.4.1")
    with ExitStack() as stack:
        exporter = stack.enter_context(ExporterProcess(redis_server.url, poll_interval="1s"))
        load_cron(version, redis_server.url, due_now=True)  # the first cron poll enqueues
        sidekiq = SidekiqProcess(
            version,
            redis_server.url,
            cron=True,
            # Cron poller every second, its first poll within 5 s of boot (app.rb).
            env={"SIDEKIQ_APP_CRON_POLL": "1", "SIDEKIQ_APP_POLL_AVERAGE": "1"},
        )
        stack.callback(sidekiq.cleanup)
        # When to start: the first enqueue comes ~5 s after, stopping and the first scrape take
        # ~5 s more. Started after second 45, the next tick could come before the "not yet"
        # check below: such a start waits for the next minute (15 s at most).
        phase = redis_time(client) % 60
        if phase > 45:
            time.sleep(60 - phase + 0.5)
        sidekiq.start()
        enabled = ("every_minute", "every_minute_berlin")
        wait_for(
            lambda: all(client.hget(f"cron_job:{n}", "last_enqueue_time") for n in enabled),
            30,
            0.1,
            "sidekiq-cron did not enqueue",
        )
        assert sidekiq.stop() == 0  # its cron poller stops with it: nothing fires any more
        truth = {j["name"]: j for j in cron_jobs(version, redis_server.url)}
        scrape = exporter.scrape_after_polls(2)

        assert set(truth) == {*enabled, "hourly_disabled"}
        assert scrape.value("sidekiq_cron_jobs", **T, status="enabled") == 2
        assert scrape.value("sidekiq_cron_jobs", **T, status="disabled") == 1
        for name, their in truth.items():
            assert their["enabled"] is (their["status"] == "enabled")
            assert scrape.value("sidekiq_cron_job_enabled", **job(name)) == their["enabled"]
            assert scrape.get(LAST, None, **job(name)) == their["last_enqueue_epoch"], name
        assert truth["hourly_disabled"]["last_enqueue_epoch"] is None
        assert scrape.get(NEXT, None, **job("hourly_disabled")) is None
        assert scrape.get(OVERDUE, None, **job("hourly_disabled")) is None
        # Each enabled job is next expected at the minute boundary after its enqueue.
        ticks = {n: (math.floor(truth[n]["last_enqueue_epoch"] / 60) + 1) * 60 for n in enabled}
        for name, tick in ticks.items():
            assert scrape.value(NEXT, **job(name)) == tick

        # Not yet overdue before the tick (the latest poll is at most ~1 s old) ...
        first_tick, last_tick = min(ticks.values()), max(ticks.values())
        assert first_tick - redis_time(client) > 2, "started too late in the minute"
        time.sleep(max(0.0, first_tick - redis_time(client) - 1.5))
        before = exporter.scrape()
        for name in enabled:
            assert before.value(OVERDUE, **job(name)) == 0
        # ... overdue from the tick on: by how long it has passed, on Redis TIME.
        time.sleep(max(0.0, last_tick - redis_time(client) + 2))
        after = exporter.scrape_after_polls(2)
        now = redis_time(client)
        for name, tick in ticks.items():
            assert 1.0 <= after.value(OVERDUE, **job(name)) <= now - tick
            assert after.value(NEXT, **job(name)) == tick
        assert after.total("sidekiq_exporter_skipped_items_total") == 0
    print(f"real sidekiq-cron test: {time.monotonic() - started:.1f} s")


# --- sidekiq-cron 2.x's layout, from its source ---------------------------------------------


async def test_sidekiq_cron_2_layout_written_as_its_source_writes_it(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    writer = SidekiqWriter(client, V7)
    now = redis_time(client)
    minute = math.floor(now / 60) * 60
    # Fired 3 s after the previous minute's tick: due at this minute's, which has passed.
    writer.cron_job("every_minute", "* * * * *", last_enqueue=minute - 57)
    writer.cron_job("never_fired", "0 3 * * *", namespace="reports")  # `last_enqueue_time` ""
    writer.cron_job("paused", "*/5 * * * *", namespace="reports", enabled=False)
    # A zone, and a namespace with a ':' (2.3 takes any name; KEYS-based 2.0 split on ':').
    writer.cron_job(
        "payroll",
        "0 9 * * * Europe/Berlin",
        namespace="billing:eu",
        last_enqueue=minute - 86_400,
    )
    # A 1.x job left behind by the 2.x migration, saved in the `… UTC` format.
    writer.cron_job(
        "legacy", "0 * * * *", generation=CRON_1, saved_after_enqueue=True, last_enqueue=minute
    )
    client.set("dear-leader", "web-1:4242:0123456789ab")

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    async with Pipeline.build([f"--redis.url={url}", "--poll.interval=1s"]) as pipeline:
        assert await pipeline.poll()  # finds the namespaces: read from the next poll on
        assert await pipeline.poll()
        scrape, status = pipeline.scrape(), pipeline.status
    assert status.snapshot is not None
    polled = status.snapshot.sample.redis_time
    assert scrape.value("sidekiq_cron_jobs", **T, status="enabled") == 4
    assert scrape.value("sidekiq_cron_jobs", **T, status="disabled") == 1
    assert scrape.value("sidekiq_cron_job_enabled", **job("paused", "reports")) == 0
    assert scrape.value(LAST, **job("every_minute", "default")) == minute - 57
    assert scrape.value(NEXT, **job("every_minute", "default")) == minute
    assert scrape.value(OVERDUE, **job("every_minute", "default")) == pytest.approx(polled - minute)
    assert scrape.get(LAST, None, **job("never_fired", "reports")) is None
    # Never fired: expected at the first 03:00 after the exporter first saw it, not overdue.
    assert scrape.value(NEXT, **job("never_fired", "reports")) > polled
    assert scrape.value(OVERDUE, **job("never_fired", "reports")) == 0
    payroll = scrape.value(NEXT, **job("payroll", "billing:eu"))
    berlin = time.gmtime(payroll)
    assert (berlin.tm_min, berlin.tm_sec) == (0, 0)
    assert berlin.tm_hour in (7, 8)  # 09:00 in Berlin: CEST or CET
    assert scrape.value(LAST, **job("legacy")) == minute
    assert scrape.value(NEXT, **job("legacy")) == (math.floor(minute / 3600) + 1) * 3600
    assert scrape.value("sidekiq_leader_info", **T, identity="web-1:4242:0123456789ab") == 1
    assert status.skipped_totals == {}
    assert status.last_round_trips == 2


# --- bad input ----------------------------------------------------------------------------------


async def test_bad_cron_data_is_skipped_and_counted_in_two_round_trips(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    writer = SidekiqWriter(client, V7)
    now = redis_time(client)
    writer.cron_job("fine", "@yearly", last_enqueue=now - 10)
    writer.cron_job("natural", "every day at noon", last_enqueue=now - 10)
    client.sadd("cron_jobs:default", "cron_job:default:broken")
    client.rpush("cron_job:default:broken", "not a hash")
    # A runaway namespace: 100,000 members (no hashes behind them), one SSCAN page read.
    huge = 100_000
    pipe = client.pipeline(transaction=False)
    for start in range(0, huge, 10_000):
        pipe.sadd("cron_jobs:huge", *(f"cron_job:huge:j{i}" for i in range(start, start + 10_000)))
    pipe.execute()

    url = f"redis://127.0.0.1:{redis_server.port}/0"
    async with Pipeline.build([f"--redis.url={url}", "--poll.interval=1s"]) as pipeline:
        assert await pipeline.poll()  # `default` only; the scan finds `huge`
        first = dict(pipeline.status.skipped_totals)
        assert await pipeline.poll()
        second = dict(pipeline.status.skipped_totals)
        round_trips = pipeline.status.last_round_trips
        scrape = pipeline.scrape()
        commands = pipeline.status.snapshot.sample.commands if pipeline.status.snapshot else 0
    assert first == {decode.WRONG_TYPE: 1, UNPARSEABLE_CRON: 1}
    # The limit (500) keeps the three jobs of `default`, which sort first, and 497 of `huge`.
    assert second == {decode.WRONG_TYPE: 2, UNPARSEABLE_CRON: 2, CRON_LIMIT: huge + 3 - 500}
    assert round_trips == 2
    assert commands < 600  # one HMGET per kept job, not per member
    assert scrape.value("sidekiq_cron_job_enabled", **job("natural", "default")) == 1
    assert scrape.get(OVERDUE, None, **job("natural", "default")) is None
    assert scrape.value(OVERDUE, **job("fine", "default")) == 0
    assert scrape.get("sidekiq_cron_job_enabled", None, **job("broken", "default")) is None
