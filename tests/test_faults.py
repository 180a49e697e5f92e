"""Faults, against a real redis-server on loopback and the real daemon where it matters.

Redis down at start; killed mid-run; restarted; slower than the poll timeout; a connection reset
in the middle of a pipeline; `LOADING` during a restart; a 10 MB job at a queue's tail. In
every case: /metrics keeps answering (fast), `sidekiq_up` is 0 while data can't be read, the
exporter is back within one interval of Redis returning (measured from the daemon's own
`target_up` log timestamp), nothing leaks (file descriptors of the daemon, connections in
`CLIENT LIST`, asyncio tasks in-process), and each state change is logged exactly once.

Faults other than "down" and "killed" come from `tests/support/fault_proxy.py`, a TCP proxy
between the exporter and Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from exporter.cardinality import QueueSelector
from exporter.connection import create_redis_client
from exporter.logs import TARGET_DOWN, TARGET_UP
from exporter.sidekiq.reader import Reader
from exporter.targets import build_target
from tests.support.exporter_process import ExporterProcess, Scrape
from tests.support.fault_proxy import FaultProxy
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration

INTERVAL = 1.0  # the shortest poll interval there is; the poll timeout is 0.8 s
POLL_TIMEOUT = 0.8
# "Back within one interval": the first poll after Redis returns starts within INTERVAL;
# this much more allows for that poll itself (connect + two round trips) on a busy machine.
RECOVERY_SLACK = 0.6
SCRAPE_BUDGET = 0.5  # /metrics must answer this fast even while Redis is stuck
STATE_EVENTS = (TARGET_UP, TARGET_DOWN)

T = TypeVar("T")


# --- helpers -------------------------------------------------------------------------------


def wait_until(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `check` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def redis_clients(server: RedisServer) -> int:
    """Clients connected to `server`, not counting the connection that asks."""
    listing = server.execute("CLIENT", "LIST")
    return len(str(listing).strip().splitlines()) - 1


def populate(server: RedisServer) -> None:
    with server.connect() as conn:
        for name in ("default", "mailers"):
            conn.execute("SADD", "queues", name)
            job = {"class": "J", "enqueued_at": time.time() - 5}
            conn.execute("LPUSH", f"queue:{name}", json.dumps(job))
        conn.execute("SET", "stat:processed", 10)


def timed_scrape(exporter: ExporterProcess) -> Scrape:
    """A scrape that must answer within SCRAPE_BUDGET, whatever Redis does."""
    started = time.monotonic()
    scrape = exporter.scrape(timeout=SCRAPE_BUDGET * 4)
    elapsed = time.monotonic() - started
    assert elapsed < SCRAPE_BUDGET, f"/metrics took {elapsed:.3f}s"
    return scrape


def up(exporter: ExporterProcess) -> float:
    return timed_scrape(exporter).value("sidekiq_up", target="default")


def state_changes(exporter: ExporterProcess) -> list[dict[str, Any]]:
    return [e for e in exporter.log_events() if e.get("event") in STATE_EVENTS]


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def unexpected_log_lines(exporter: ExporterProcess) -> list[dict[str, Any]]:
    """Warnings and errors other than `target_down`, and anything with a traceback."""
    return [
        e
        for e in exporter.log_events()
        if (e.get("level") in ("warning", "error", "critical") and e.get("event") != TARGET_DOWN)
        or "exception" in e
    ]


class Baseline:
    """Resource counts of a healthy daemon, to compare with after a fault."""

    def __init__(self, exporter: ExporterProcess, server: RedisServer) -> None:
        self.exporter, self.server = exporter, server
        self.fds = exporter.open_fds()
        self.clients = redis_clients(server)
        assert self.clients == 1, "the exporter holds exactly one Redis connection"

    def assert_no_leak(self) -> None:
        # HTTP connections of our own scrapes close a moment after their response.
        wait_until(lambda: self.exporter.open_fds() <= self.fds, 3.0, f"fds back to {self.fds}")
        wait_until(lambda: redis_clients(self.server) == self.clients, 3.0, "one Redis client")
        print(f"fds {self.fds}->{self.exporter.open_fds()}, Redis clients {self.clients}->1")


def assert_down_then_back(
    exporter: ExporterProcess,
    restore: Callable[[], None],
    *,
    error: str | None = None,
    down_for: float = 1.5,
) -> float:
    """With the fault in place: up goes 0 and stays 0 while /metrics answers. Then `restore`
    and return how long after it the daemon logged `target_up`."""
    wait_until(lambda: up(exporter) == 0, INTERVAL + POLL_TIMEOUT + 1.0, "sidekiq_up 0")
    before = len(state_changes(exporter))
    deadline = time.monotonic() + down_for  # several failed attempts: still one log line
    while time.monotonic() < deadline:
        assert up(exporter) == 0
        time.sleep(0.1)
    changes = state_changes(exporter)
    assert len(changes) == before
    assert changes[-1]["event"] == TARGET_DOWN
    if error is not None:
        assert error in changes[-1]["error"], changes[-1]
    restored_at = time.time()
    restore()
    wait_until(lambda: state_changes(exporter)[-1]["event"] == TARGET_UP, 5.0, "target_up")
    back_after = event_time(state_changes(exporter)[-1]) - restored_at
    print(f"\nback {back_after:.3f}s after Redis returned")  # for the record (pytest -s)
    assert back_after <= INTERVAL + RECOVERY_SLACK, f"back after {back_after:.3f}s"
    assert up(exporter) == 1
    return back_after


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server on a fixed port, so that it can come back where it was."""
    server = RedisServer(port=free_port())
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def proxied(server: RedisServer) -> Iterator[tuple[FaultProxy, ExporterProcess]]:
    server.start()
    populate(server)
    with (
        FaultProxy(server.port) as proxy,
        ExporterProcess(f"redis://127.0.0.1:{proxy.port}/0") as exporter,
    ):
        yield proxy, exporter


# --- the daemon ----------------------------------------------------------------------------


def test_redis_down_at_start(server: RedisServer) -> None:
    with ExporterProcess(server.url).launch() as exporter:
        wait_until(lambda: state_changes(exporter), 5.0, "the first poll's outcome")
        assert exporter.get("/-/ready")[0] == 503
        fds = exporter.open_fds()

        def redis_returns() -> None:
            server.start()
            populate(server)

        assert_down_then_back(exporter, redis_returns, error="ConnectionError")
        assert [e["event"] for e in state_changes(exporter)] == [TARGET_DOWN, TARGET_UP]
        assert exporter.get("/-/ready")[0] == 200
        # Data written just after Redis came back shows from the next poll on.
        scrape = exporter.scrape_after_polls(2)
        assert scrape.value("sidekiq_processed_jobs_total", target="default") == 10
        wait_until(lambda: redis_clients(server) == 1, 3.0, "one Redis client")
        # One Redis connection more than while it was down, nothing else.
        wait_until(lambda: exporter.open_fds() <= fds + 1, 3.0, "fds")
        assert unexpected_log_lines(exporter) == []
        exporter.stop()


def test_redis_killed_mid_run_and_started_again_twice(server: RedisServer) -> None:
    server.start()
    populate(server)
    with ExporterProcess(server.url) as exporter:
        baseline = Baseline(exporter, server)
        for _ in range(2):  # a second cycle shows nothing accumulates
            server.kill()

            def redis_returns() -> None:
                server.start()
                populate(server)

            assert_down_then_back(exporter, redis_returns, error="ConnectionError")
            baseline.assert_no_leak()
        assert [e["event"] for e in state_changes(exporter)] == [TARGET_UP] + [
            TARGET_DOWN,
            TARGET_UP,
        ] * 2
        assert unexpected_log_lines(exporter) == []
        exporter.stop()


def test_redis_restarted(server: RedisServer) -> None:
    server.start()
    populate(server)
    with ExporterProcess(server.url) as exporter:
        baseline = Baseline(exporter, server)
        server.restart()  # graceful: a poll may never notice
        restarted_at = time.time()
        populate(server)
        scrape = exporter.scrape_after_polls(2)
        assert scrape.value("sidekiq_up", target="default") == 1
        changes = [e["event"] for e in state_changes(exporter)]
        assert changes in ([TARGET_UP], [TARGET_UP, TARGET_DOWN, TARGET_UP])
        if len(changes) == 3:
            back_after = event_time(state_changes(exporter)[-1]) - restarted_at
            assert back_after <= INTERVAL + RECOVERY_SLACK
        baseline.assert_no_leak()
        assert unexpected_log_lines(exporter) == []
        exporter.stop()


def test_redis_slower_than_the_poll_timeout(
    server: RedisServer, proxied: tuple[FaultProxy, ExporterProcess]
) -> None:
    proxy, exporter = proxied
    baseline = Baseline(exporter, server)
    proxy.delay = POLL_TIMEOUT + 0.7

    def fast_again() -> None:
        proxy.delay = 0.0

    assert_down_then_back(exporter, fast_again, error="TimeoutError")
    baseline.assert_no_leak()
    wait_until(lambda: proxy.open_connections == 1, 3.0, "one proxied connection")
    assert [e["event"] for e in state_changes(exporter)] == [TARGET_UP, TARGET_DOWN, TARGET_UP]
    assert unexpected_log_lines(exporter) == []
    exporter.stop()


def test_connection_reset_in_the_middle_of_a_pipeline(
    server: RedisServer, proxied: tuple[FaultProxy, ExporterProcess]
) -> None:
    proxy, exporter = proxied
    with server.connect() as conn:  # a second round trip worth cutting into
        for index in range(200):
            conn.execute("SADD", "queues", f"q{index}")
            conn.execute("LPUSH", f"queue:q{index}", json.dumps({"class": "J", "n": index}))
    exporter.scrape_after_polls(1)
    baseline = Baseline(exporter, server)
    before = proxy.reply_bytes
    exporter.scrape_after_polls(1)
    per_poll = proxy.reply_bytes - before
    assert per_poll > 4_000
    proxy.cut_after(per_poll // 2)  # well inside the next poll's replies
    cut_at = time.time()
    wait_until(lambda: proxy.resets == 1, 3 * INTERVAL, "the reset")
    wait_until(lambda: len(state_changes(exporter)) == 3, 3 * INTERVAL, "down and up again")
    changes = state_changes(exporter)
    assert [e["event"] for e in changes] == [TARGET_UP, TARGET_DOWN, TARGET_UP]
    assert "ConnectionError" in changes[1]["error"]
    # The retry comes after the backoff (at most 0.5 s after one failure), within one interval.
    assert event_time(changes[2]) - cut_at <= 2 * INTERVAL
    assert event_time(changes[2]) - event_time(changes[1]) <= INTERVAL
    assert up(exporter) == 1
    baseline.assert_no_leak()
    assert unexpected_log_lines(exporter) == []
    exporter.stop()


def test_loading_during_a_restart(
    server: RedisServer, proxied: tuple[FaultProxy, ExporterProcess]
) -> None:
    proxy, exporter = proxied
    baseline = Baseline(exporter, server)
    proxy.mode = "loading"  # what a restarting Redis answers while it reads its RDB
    server.kill()

    def loaded() -> None:
        server.start()
        populate(server)
        proxy.mode = "forward"

    assert_down_then_back(exporter, loaded, error="BusyLoadingError")
    assert proxy.commands["TIME"] > 2  # LOADING answers were read, not just refused connects
    baseline.assert_no_leak()
    assert [e["event"] for e in state_changes(exporter)] == [TARGET_UP, TARGET_DOWN, TARGET_UP]
    assert unexpected_log_lines(exporter) == []
    exporter.stop()


def test_ten_megabyte_job_at_a_queue_tail(server: RedisServer) -> None:
    server.start()
    big = {"class": "Big", "enqueued_at": time.time() - 30, "args": ["x" * 10_000_000]}
    with server.connect() as conn:
        conn.execute("SADD", "queues", "big")
        conn.execute("RPUSH", "queue:big", json.dumps(big))  # the tail: the oldest job
        conn.execute("LPUSH", "queue:big", json.dumps({"class": "Small"}))
    with ExporterProcess(server.url) as exporter:
        baseline = Baseline(exporter, server)
        scrape = exporter.scrape_after_polls(3)
        assert scrape.value("sidekiq_up", target="default") == 1
        assert scrape.value("sidekiq_queue_enqueued_jobs", target="default", queue="big") == 2
        latency = scrape.value("sidekiq_queue_latency_seconds", target="default", queue="big")
        assert 30 <= latency < 60
        assert scrape.value("sidekiq_exporter_polls_total", target="default", result="error") == 0
        assert timed_scrape(exporter).value("sidekiq_up", target="default") == 1
        baseline.assert_no_leak()
        assert [e["event"] for e in state_changes(exporter)] == [TARGET_UP]
        exporter.stop()


# --- in-process ----------------------------------------------------------------------------


async def test_a_denied_queue_costs_no_tail_bytes(redis_server: RedisServer) -> None:
    """The 10 MB tail is read only when that queue is exported (exporter/cardinality.py)."""
    with redis_server.connect() as conn:
        conn.execute("SADD", "queues", "big")
        conn.execute("RPUSH", "queue:big", json.dumps({"class": "B", "a": "x" * 10_000_000}))
    with FaultProxy(redis_server.port) as proxy:
        client = create_redis_client(
            build_target(name="t", url=f"redis://127.0.0.1:{proxy.port}/0"), timeout=5.0
        )
        try:
            sizes = []
            for reader in (Reader(), Reader(queues=QueueSelector(deny=re.compile("big")))):
                before = proxy.reply_bytes
                sample = await reader.read(client, time.time())
                assert sample.enqueued_total == 1
                sizes.append(proxy.reply_bytes - before)
        finally:
            await client.aclose()
    exported, denied = sizes
    assert exported > 10_000_000
    assert denied < 2_000


async def test_a_huge_reply_is_refused_at_the_byte_budget(redis_server: RedisServer) -> None:
    """A server that announces a 2 GiB bulk string and sends it: the poll stops reading at
    --poll.max-bytes and fails with that reason (not at the poll timeout), and the next poll
    against a sane server succeeds."""
    populate(redis_server)
    with FaultProxy(redis_server.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        argv = [f"--redis.url={url}", "--poll.interval=10s", "--poll.max-bytes=1MiB"]
        async with Pipeline.build(argv) as pipeline:
            assert await pipeline.poll()
            proxy.mode = "huge"
            before = proxy.reply_bytes
            with capture_logs() as logs:
                assert not await pipeline.poll()
            (down,) = [e for e in logs if e["event"] == TARGET_DOWN]
            assert down["error"] == "exporter.resp.ReplyTooLarge"
            assert "over the limit of 1048576 bytes" in down["message"]
            # What the proxy got out before the client closed: the budget plus what loopback
            # socket buffers hold, not the 2 GiB announced.
            assert proxy.reply_bytes - before < 64 * 1024**2
            proxy.mode = "forward"
            assert await pipeline.poll()
            assert pipeline.scrape().value("sidekiq_up", target="default") == 1


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_every_fault_in_process_leaks_no_task_connection_or_fd(
    redis_server: RedisServer,
) -> None:
    """Poller + Reader + Deriver as the daemon wires them, through each fault and back."""
    populate(redis_server)
    with FaultProxy(redis_server.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with Pipeline.build([f"--redis.url={url}", "--poll.interval=1s"]) as pipeline:
            assert await pipeline.poll()
            tasks, fds = len(asyncio.all_tasks()), own_fds()
            clients = redis_clients(redis_server)
            assert clients == 1

            def cut() -> None:
                proxy.cut_after(30)

            faults: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
                ("slow", lambda: setattr(proxy, "delay", 1.0), lambda: setattr(proxy, "delay", 0)),
                ("reset", cut, lambda: None),
                ("loading", lambda: setattr(proxy, "mode", "loading"), lambda: None),
                ("stuck", lambda: setattr(proxy, "mode", "blackhole"), lambda: None),
            ]
            for name, inject, clear in faults:
                inject()
                started = time.monotonic()
                assert not await pipeline.poll(), name
                assert time.monotonic() - started < POLL_TIMEOUT + 0.5, name
                assert pipeline.scrape().value("sidekiq_up", target="default") == 0, name
                clear()
                proxy.mode = "forward"
                assert await pipeline.poll(), name
                assert pipeline.scrape().value("sidekiq_up", target="default") == 1, name
                assert len(asyncio.all_tasks()) == tasks, name
                assert own_fds() <= fds, name
                assert redis_clients(redis_server) == clients, name
            status = pipeline.status
            assert (status.polls_success, status.polls_error) == (len(faults) + 1, len(faults))
        # Closing the exporter's client closes its connection.
        wait_until(lambda: redis_clients(redis_server) == 0, 3.0, "no Redis client")
        wait_until(lambda: proxy.open_connections == 0, 3.0, "no proxied connection")
