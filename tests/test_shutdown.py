"""Shutdown: on SIGTERM stop accepting, cancel the pollers, close Redis connections, exit 0
within the shutdown timeout, also while a poll hangs on a Redis that never answers."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest
from structlog.testing import capture_logs

from exporter import __version__, cli
from exporter.logs import EXPORTER_STOPPED, EXPORTER_STOPPING, SHUTDOWN_TIMED_OUT
from exporter.settings import load_settings
from tests.support.exporter_process import STOP_TIMEOUT_SECONDS, ExporterProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

# A poll interval long enough that the stuck poll is still stuck when the signal comes.
STUCK_ARGS = ["--poll.interval=10s", "--poll.timeout=9s"]


def refused(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except OSError:
        return True


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def stuck_redis(redis_server: RedisServer) -> Iterator[FaultProxy]:
    """A Redis that accepts connections and commands but never answers."""
    with FaultProxy(redis_server.port) as proxy:
        proxy.mode = "blackhole"
        yield proxy


@pytest.mark.parametrize("redis_state", ["healthy", "stuck"])
def test_sigterm_exits_0_quickly_and_closes_everything(
    redis_server: RedisServer, redis_state: str
) -> None:
    with FaultProxy(redis_server.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        exporter = ExporterProcess(url, args=STUCK_ARGS if redis_state == "stuck" else ())
        try:
            if redis_state == "stuck":
                proxy.mode = "blackhole"
                exporter.launch()
            else:
                exporter.start()  # ready: one successful poll
            # A poll is on the wire (stuck, or the connection kept for the next one).
            wait_until(lambda: proxy.open_connections == 1, 5.0, "a Redis connection")
            if redis_state == "stuck":
                wait_until(lambda: proxy.commands["TIME"] >= 1, 5.0, "a poll in flight")
                assert exporter.get("/-/ready")[0] == 503
            assert exporter.scrape().value("sidekiq_exporter_build_info", version=__version__)
            elapsed = exporter.stop()  # SIGTERM; asserts exit 0 within 5 s
            assert elapsed < STOP_TIMEOUT_SECONDS
            events = exporter.log_events()
            assert refused(exporter.port)
        finally:
            exporter.cleanup()
        wait_until(lambda: proxy.open_connections == 0, 3.0, "the Redis connection closed")
    names = [e["event"] for e in events]
    assert names[-2:] == [EXPORTER_STOPPING, EXPORTER_STOPPED]
    assert events[-2]["signal"] == "SIGTERM"
    assert SHUTDOWN_TIMED_OUT not in names
    assert not [e for e in events if "exception" in e or e.get("event") == "poller_died"]


async def test_serve_stops_within_the_timeout_while_a_poll_hangs(
    stuck_redis: FaultProxy,
) -> None:
    """In-process: the stuck poll is cancelled, a keep-alive scraper does not hold the exit
    up, no task outlives `serve`, and the Redis connection is closed."""
    port = free_port()
    settings = load_settings(
        [
            f"--redis.url=redis://127.0.0.1:{stuck_redis.port}/0",
            f"--web.listen-address=127.0.0.1:{port}",
            *STUCK_ARGS,
        ],
        {},
        stdout_is_tty=False,
    )
    settings = dataclasses.replace(settings, shutdown_timeout=2.0)
    tasks_before = asyncio.all_tasks()
    stop = asyncio.Event()
    with capture_logs() as logs:
        server = asyncio.create_task(cli.serve(settings, stop=stop))
        async with aiohttp.ClientSession() as session:  # keeps its connection alive
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        assert response.status == 200
                        await response.read()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            for _ in range(250):
                if stuck_redis.commands["TIME"]:
                    break
                await asyncio.sleep(0.02)
            assert stuck_redis.commands["TIME"] >= 1, "a poll should be in flight"
            assert stuck_redis.open_connections == 1
            started = time.monotonic()
            stop.set()
            await asyncio.wait_for(server, settings.shutdown_timeout + 1.0)
            elapsed = time.monotonic() - started
    assert elapsed < settings.shutdown_timeout, f"took {elapsed:.2f}s"
    assert asyncio.all_tasks() - tasks_before == {asyncio.current_task()} - tasks_before
    assert refused(port)
    for _ in range(150):
        if stuck_redis.open_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert stuck_redis.open_connections == 0
    names = [e["event"] for e in logs]
    assert names[-2:] == [EXPORTER_STOPPING, EXPORTER_STOPPED]
    assert SHUTDOWN_TIMED_OUT not in names
