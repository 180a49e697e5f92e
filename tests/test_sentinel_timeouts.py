"""A hung Sentinel must not stall discovery: Sentinel connections get their own short timeout.

redis-py asks the Sentinels in list order and moves only one that answers to the front. With
the poll timeout on each Sentinel connection, a first Sentinel that accepts connections and
never answers used up every poll, so the healthy Sentinel after it was never asked and every
poll failed (exporter/connection.py, "Sentinel timeouts").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from exporter.connection import (
    MAX_SENTINEL_TIMEOUT,
    MIN_SENTINEL_TIMEOUT,
    create_redis_client,
    sentinel_timeout,
)
from exporter.settings import DEFAULT_TIMEOUT_RATIO, MIN_POLL_INTERVAL
from exporter.sidekiq.reader import Reader
from exporter.targets import build_target
from tests.support.redis_server import RedisServer
from tests.support.sentinel import MASTER_NAME, SentinelServer

# The shortest poll timeout by default (1 s interval × 0.8): the least room for a hung Sentinel.
POLL_TIMEOUT = MIN_POLL_INTERVAL * DEFAULT_TIMEOUT_RATIO


def test_sentinel_timeout_is_a_share_of_the_poll_timeout() -> None:
    assert sentinel_timeout(8.0, 1) == MAX_SENTINEL_TIMEOUT
    assert sentinel_timeout(8.0, 3) == MAX_SENTINEL_TIMEOUT
    assert sentinel_timeout(0.8, 2) == pytest.approx(0.2)
    assert sentinel_timeout(0.8, 10) == MIN_SENTINEL_TIMEOUT
    assert sentinel_timeout(0.8, 0) == pytest.approx(0.4)  # never divides by zero


def test_sentinel_connections_use_the_short_timeout() -> None:
    target = build_target(
        name="ha",
        url="redis://unused/0",
        sentinels=(("127.0.0.1", 26379), ("127.0.0.1", 26380)),
        sentinel_master=MASTER_NAME,
    )
    pool = create_redis_client(target, timeout=POLL_TIMEOUT).connection_pool
    master = pool.connection_kwargs
    assert (master["socket_timeout"], master["socket_connect_timeout"]) == (0.8, 0.8)
    for node in pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        kwargs = node.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == pytest.approx(0.2)
        assert kwargs["socket_connect_timeout"] == pytest.approx(0.2)


class HungSentinel:
    """Accepts TCP connections on 127.0.0.1, reads what they send and never answers."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            while await reader.read(4096):  # until the client gives up and closes
                pass
        finally:
            writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[HungSentinel]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for writer in self._writers:  # Server.close_clients() needs Python 3.13
                writer.close()
            await server.wait_closed()


@pytest.mark.integration
@pytest.mark.parametrize("password", [None, "s3ntinel"], ids=["no-auth", "auth"])
async def test_polls_succeed_with_a_hung_sentinel_listed_first(password: str | None) -> None:
    with RedisServer() as master, SentinelServer(master.port, password=password) as sentinel:
        async with asyncio.timeout(30), HungSentinel().serving() as hung:
            target = build_target(
                name="ha",
                url="redis://unused/0",
                sentinels=(("127.0.0.1", hung.port), ("127.0.0.1", sentinel.port)),
                sentinel_master=MASTER_NAME,
                sentinel_password=password,
            )
            client = create_redis_client(target, timeout=POLL_TIMEOUT)
            reader = Reader()
            durations = []
            try:
                for _ in range(3):
                    started = time.monotonic()
                    async with asyncio.timeout(POLL_TIMEOUT):  # as the poller runs a poll
                        sample = await reader.read(client, time.time())
                    durations.append(time.monotonic() - started)
                    assert sample.queues == ()
            finally:
                await client.aclose()
    # The hung Sentinel was asked first and waited for (AUTH or SENTINEL MASTERS) ...
    assert hung.accepted == 1
    assert durations[0] >= sentinel_timeout(POLL_TIMEOUT, 2)
    # ... and once the healthy one had answered it went to the front: never asked again.
