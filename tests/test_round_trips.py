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

from exporter.connection import create_redis_client
from exporter.sidekiq.reader import Reader
from exporter.targets import TargetSettings
from tests.support.layouts import V7, SidekiqWriter
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


async def poll(client: Redis) -> tuple[int, int, Any]:
    """(writes on the socket, round trips the sample reports, the sample) of one poll."""
    writes = 0
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        nonlocal writes
        writes += 1
        await send(self, *args, **kwargs)

    with mock.patch.object(AbstractConnection, "send_packed_command", counting):
        sample = await Reader().read(client, NOW)
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
