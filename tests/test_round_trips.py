"""Round trips per poll on a real redis-server: constant across the numbers of queues, processes,
job classes and jobs.

The count is taken from the socket (one `send_packed_command` per round trip), not only from
what the reader reports, so a change that adds a per-queue, per-process or per-class round
trip fails here. No timing assertions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from exporter.cardinality import CronJobSelector
from exporter.connection import create_redis_client
from exporter.sidekiq.reader import Reader
from exporter.targets import TargetSettings
from tests.support.layouts import CRON_1, V7, SidekiqWriter
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

NOW = 1_795_000_000.0  # the reader's clock hint: metric minutes are chosen from it


def _target(url: str) -> TargetSettings:
    return TargetSettings(name="t", url=url, username=None, password=None, key_prefix="")


@pytest.fixture
def server(module_redis_server: RedisServer) -> RedisServer:
    module_redis_server.execute("FLUSHALL")
    return module_redis_server


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis_client(_target(server.url), timeout=10.0)  # as the daemon builds it
    yield client
    await client.aclose()


def populate(server: RedisServer, *, queues: int, processes: int, classes: int) -> None:
    """Sidekiq 7 data: queues with one job, live processes with one running job, classes with
    metrics and a histogram in the minute of NOW (written in pipelines: fast)."""
    sync = redis.Redis(port=server.port)
    pipe = sync.pipeline(transaction=False)
    writer = SidekiqWriter(pipe, V7)  # type: ignore[arg-type]
    for index in range(queues):
        writer.push(f"q{index}", writer.job("J", f"q{index}", enqueued_at=NOW - index))
    for index in range(processes):
        identity = f"host-{index}:{index}:0123456789ab"
        writer.process(identity, beat=NOW, busy=1, queues=["q0"])
        writer.work(identity, "t1", "q0", writer.job("J", "q0"), run_at=NOW)
    minute = datetime.fromtimestamp(int(NOW // 60) * 60, UTC)
    for index in range(classes):
        writer.metrics(minute, f"Class{index}", executions=2, milliseconds=10, histogram={1: 2})
    pipe.execute()
    sync.close()


async def poll(client: Redis, reader: Reader | None = None) -> tuple[int, int, Any]:
    """(writes on the socket, round trips the sample reports, the sample) of one poll."""
    writes = 0
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        await send(self, *args, **kwargs)

    with mock.patch.object(AbstractConnection, "send_packed_command", counting):
        sample = await (reader or Reader()).read(client, NOW)
    return writes, sample.round_trips, sample


@pytest.mark.parametrize(
    ("small", "large"),
    [
        (
            {"queues": 10, "processes": 1, "classes": 10},
            {"queues": 10_000, "processes": 1, "classes": 10},
        ),
        (
            {"queues": 10, "processes": 1, "classes": 10},
            {"queues": 10, "processes": 200, "classes": 10},
        ),
        (
            {"queues": 10, "processes": 1, "classes": 10},
            {"queues": 10, "processes": 1, "classes": 500},
        ),
        (
            {"queues": 0, "processes": 0, "classes": 0},
            {"queues": 1000, "processes": 200, "classes": 500},
        ),
    ],
    ids=["queues", "processes", "classes", "all"],
)
async def test_round_trips_per_poll_do_not_grow(
    server: RedisServer, client: Redis, small: dict[str, int], large: dict[str, int]
) -> None:
    populate(server, **small)
    small_writes, small_trips, small_sample = await poll(client)
    server.execute("FLUSHALL")
    populate(server, **large)
    large_writes, large_trips, large_sample = await poll(client)

    assert small_writes == small_trips == large_writes == large_trips == 2
    # The large poll really read the large fixture, in those same two round trips.
    assert len(large_sample.queues) == large["queues"]
    assert len(large_sample.processes) == large["processes"]
    assert len(large_sample.running_jobs) == large["processes"]
    classes = {c.job_class for m in large_sample.metrics_minutes for c in m.classes}
    assert len(classes) == large["classes"]
    assert large_sample.skipped == {}
    if large != small:
        assert large_sample.commands > small_sample.commands


async def test_deep_queues_cost_what_short_ones_cost(server: RedisServer, client: Redis) -> None:
    populate(server, queues=3, processes=0, classes=0)
    _, _, short = await poll(client)
    sync = redis.Redis(port=server.port)
    sync.rpush("queue:q0", *[b'{"class":"J","enqueued_at":1755000000.5}'] * 50_000)
    sync.close()
    writes, trips, deep = await poll(client)
    assert writes == trips == 2
    assert deep.commands == short.commands
    assert {q.name: q.size for q in deep.queues}["q0"] == 50_001


def populate_cron(server: RedisServer, *, namespaces: int, jobs: int) -> None:
    """sidekiq-cron jobs: `jobs` in 1.x's set, and `jobs` in each of `namespaces` 2.x sets."""
    sync = redis.Redis(port=server.port)
    pipe = sync.pipeline(transaction=False)
    writer = SidekiqWriter(pipe, V7)  # type: ignore[arg-type]
    for index in range(jobs):
        writer.cron_job(f"j{index}", "*/5 * * * *", generation=CRON_1, last_enqueue=NOW - 60)
        for namespace in range(namespaces):
            writer.cron_job(f"j{index}", "0 * * * *", namespace=f"ns{namespace}")
    sync.set("dear-leader", "host-0:0:0123456789ab")
    pipe.execute()
    sync.close()


@pytest.mark.parametrize("collect_cron", [True, False], ids=["cron", "no-cron"])
async def test_cron_jobs_ride_in_the_same_two_round_trips(
    server: RedisServer, client: Redis, collect_cron: bool
) -> None:
    populate(server, queues=10, processes=2, classes=10)
    populate_cron(server, namespaces=20, jobs=20)  # 420 jobs, under the default limit
    reader = Reader(collect_cron=collect_cron)
    counts = [await poll(client, reader) for _ in range(3)]
    # The first poll carries the namespace scan's page, the next two the 20 namespaces found.
    assert [(writes, trips) for writes, trips, _ in counts] == [(2, 2)] * 3
    first, second = counts[0][2], counts[1][2]
    if collect_cron:
        assert len(first.cron_jobs) == 20  # 1.x's set and `default` (empty) before the scan
        assert len(second.cron_jobs) == 420
        assert second.leader == "host-0:0:0123456789ab"
    else:
        assert first.cron_jobs is second.cron_jobs is None
        assert second.commands == first.commands  # no scan, nothing else for cron
    assert second.skipped == {}


async def test_a_runaway_cron_set_costs_no_round_trip(server: RedisServer, client: Redis) -> None:
    sync = redis.Redis(port=server.port)
    members = [f"cron_job:huge:j{i}" for i in range(100_000)]
    for start in range(0, len(members), 10_000):
        sync.sadd("cron_jobs:huge", *members[start : start + 10_000])
    sync.close()
    reader = Reader(cron_jobs=CronJobSelector(limit=500))  # the flag's default
    counts = [await poll(client, reader) for _ in range(2)]  # the scan, then the set
    assert [(writes, trips) for writes, trips, _ in counts] == [(2, 2)] * 2
    # One SSCAN page of about the limit (500), one HMGET per job kept; the rest counted.
    assert counts[1][2].skipped == {"cron_limit": 100_000 - 500}
    assert counts[1][2].commands < counts[0][2].commands + 600
