"""The wire (exporter/resp.py) on a real redis-server: the bulk reply reader returns what
redis-py's own `read_response` returns, and a round trip abandoned half-read never leaves a
connection out of step. No timing assertions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from unittest import mock

import pytest
import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from exporter import resp
from exporter.connection import create_redis_client
from exporter.resp import ReadBudget, ReplyTooLarge, round_trip
from exporter.targets import TargetSettings
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server(module_redis_server: RedisServer) -> RedisServer:
    module_redis_server.execute("FLUSHALL")
    return module_redis_server


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    target = TargetSettings(name="t", url=server.url, username=None, password=None, key_prefix="")
    client = create_redis_client(target, timeout=10.0)  # as the daemon builds it
    yield client
    await client.aclose()


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
        with mock.patch.object(resp, "_read_replies_in_bulk", return_value=None):
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
        replies = await resp._read_replies_in_bulk(connection, 1)
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


def test_read_budget_spans_the_round_trips_of_a_poll() -> None:
    budget = ReadBudget(100)
    budget.spend(60)  # round trip 1
    budget.spend(40)  # round trip 2: exactly the limit is fine
    with pytest.raises(ReplyTooLarge, match="over the limit of 100 bytes"):
        budget.spend(1)
    # A connection error to the poller: the poll fails like any lost connection.
    assert issubclass(ReplyTooLarge, RedisConnectionError)


def test_pack_cache_reuses_a_section_only_while_its_inputs_stay() -> None:
    cache = resp.PackCache()
    built: list[list[str]] = []

    def section(names: list[str]) -> tuple[list[resp.Command], bytes]:
        def build() -> list[resp.Command]:
            built.append(names)
            return [("LLEN", f"queue:{name}") for name in names]

        return cache.section("queues", names, build)

    first = section(["a", "b"])
    assert first == ([("LLEN", "queue:a"), ("LLEN", "queue:b")], resp.pack_commands(first[0]))
    cache.settle()  # the end of a poll: what it sent stays for the next one
    cache.next_poll()
    assert section(["a", "b"]) == first  # equal inputs (a new list): the same bytes, not built
    assert len(built) == 1
    cache.next_poll()
    changed = section(["a", "c"])
    assert (
        changed[1] == b"*2\r\n$4\r\nLLEN\r\n$7\r\nqueue:a\r\n*2\r\n$4\r\nLLEN\r\n$7\r\nqueue:c\r\n"
    )
    assert len(built) == 2
    cache.next_poll()
    cache.next_poll()  # a poll without the section forgets it
    section(["a", "c"])
    assert len(built) == 3
