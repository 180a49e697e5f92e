"""Round trips per poll on a real redis-server: constant across sizes, and the bulk reply reader.

The count is taken from the socket (one `send_packed_command` per round trip), not only from
what the reader reports, so a change that adds a per-queue, per-process or per-class round
trip fails here. No timing assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from exporter.connection import create_redis_client
from exporter.settings import TargetSettings
from exporter.sidekiq import reader as reader_module
from exporter.sidekiq.reader import Reader, round_trip
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
    sync.rpush("queue:q0", *[b'{"class":"J","enqueued_at":1.5}'] * 50_000)
    sync.close()
    writes, trips, deep = await poll(client)
    assert writes == trips == 2
    assert deep.commands == short.commands
    assert {q.name: q.size for q in deep.queues}["q0"] == 50_001


# --- the bulk reply reader (exporter/sidekiq/reader.py `_read_replies_in_bulk`) -------------


def _mixed_commands(server: RedisServer) -> list[tuple[str | int, ...]]:
    """Commands whose replies cover every RESP2/RESP3 shape the reader sees, and errors."""
    sync = redis.Redis(port=server.port)
    sync.set("string", "text")
    sync.rpush("list", "a", "b")
    sync.hset("hash", mapping={"f1": "v1", "f2": "v2"})
    sync.zadd("zset", {"m1": 1.5, "m2": 2.5})
    sync.sadd("set", "x")
    sync.close()
    return [
        ("GET", "string"),
        ("LLEN", "string"),  # WRONGTYPE: an error reply in place
        ("LINDEX", "list", -1),
        ("LINDEX", "missing", -1),  # nil
        ("HGETALL", "hash"),  # RESP3: a map
        ("HMGET", "hash", "f1", "nope"),
        ("ZRANGE", "zset", 0, 0, "WITHSCORES"),  # RESP3: [[member, double]]
        ("SSCAN", "set", 0, "COUNT", 10),
        ("BITFIELD_RO", "string", "GET", "u16", "#0"),
        ("NOSUCHCOMMAND",),  # ERR unknown command: in place too
        ("TIME",),
    ]


def _comparable(replies: list[object]) -> list[object]:
    return [(type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in replies]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_bulk_reader_returns_what_read_response_returns(
    server: RedisServer, protocol: int
) -> None:
    commands = _mixed_commands(server)
    client = Redis(port=server.port, protocol=protocol)
    try:
        bulk = await round_trip(client, commands)
        with mock.patch.object(reader_module, "_read_replies_in_bulk", return_value=None):
            generic = await round_trip(client, commands)
    finally:
        await client.aclose()
    assert isinstance(bulk[1], ResponseError)
    assert str(bulk[1]).startswith("WRONGTYPE")
    assert isinstance(bulk[9], ResponseError)
    # TIME differs between the two calls; everything else is identical, shapes included.
    assert _comparable(bulk[:-1]) == _comparable(generic[:-1])
    assert isinstance(bulk[-1], list)
    assert len(bulk[-1]) == 2


async def test_the_daemon_client_takes_the_bulk_path(client: Redis) -> None:
    # Guards the redis-py internals the bulk reader relies on (checked against redis-py 8.1):
    # if an upgrade changes them the reader silently falls back to the slow path; fail instead.
    connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(b"*1\r\n$4\r\nPING\r\n", check_health=False)
        replies = await reader_module._read_replies_in_bulk(connection, 1)
    finally:
        await client.connection_pool.release(connection)
    assert replies == [b"PONG"]


async def test_cancelling_a_read_drops_the_connection(server: RedisServer) -> None:
    client = Redis(port=server.port, socket_timeout=10)
    try:
        task = asyncio.create_task(round_trip(client, [("BLPOP", "nothing", 5), ("PING",)]))
        await asyncio.sleep(0.2)  # blocked in the bulk read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Not returned to the pool out of step: the next round trip reads its own replies.
        assert await round_trip(client, [("PING",), ("ECHO", "x")]) == [b"PONG", b"x"]
    finally:
        await client.aclose()


async def test_socket_timeout_applies_to_the_bulk_read(server: RedisServer) -> None:
    client = Redis(port=server.port, socket_timeout=0.2)
    try:
        with pytest.raises(RedisTimeoutError):
            await round_trip(client, [("BLPOP", "nothing", 2)])
        assert await round_trip(client, [("PING",)]) == [b"PONG"]
    finally:
        await client.aclose()
