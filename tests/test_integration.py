"""The daemon end to end: a real redis-server, /metrics over HTTP, promtool, clean shutdown."""

from __future__ import annotations

import gzip
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from tests.support.exporter_process import ExporterProcess
from tests.support.layouts import V7, SidekiqWriter
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer("--requirepass", PASSWORD, password=PASSWORD) as started:
        yield started


def redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_live_metrics_values_promtool_and_clean_shutdown(server: RedisServer) -> None:
    client = redis.Redis(port=server.port, password=PASSWORD)
    writer = SidekiqWriter(client, V7)
    now = redis_time(client)
    writer.stats(processed=5000, failed=12)
    writer.push("within_5_seconds", writer.job("Fast", enqueued_at=now - 8))
    writer.push("default", writer.job("HardJob", enqueued_at=now - 2))
    writer.zadd("schedule", now - 30, writer.job("Later"))
    writer.zadd("dead", now - 99, writer.job("Gone"))
    writer.process(
        "w1:1:0123456789ab", beat=now, concurrency=4, queues=["within_5_seconds", "default"]
    )
    writer.work("w1:1:0123456789ab", "t1", "default", writer.job("HardJob"), run_at=now - 20)

    with ExporterProcess(server.url) as exporter:
        exporter.scrape_after_polls(1)  # the first poll is the per-class metrics baseline
        minute = datetime.fromtimestamp(int(redis_time(client) // 60) * 60, UTC)
        writer.metrics(
            minute, "HardJob", executions=7, failures=2, milliseconds=900, histogram={4: 5}
        )
        scrape = exporter.scrape_after_polls(2)
        t = {"target": "default"}
        assert scrape.value("sidekiq_up", **t) == 1
        assert scrape.value("sidekiq_processed_jobs_total", **t) == 5000
        assert scrape.value("sidekiq_failed_jobs_total", **t) == 12
        assert scrape.value("sidekiq_enqueued_jobs", **t) == 2
        assert scrape.value("sidekiq_scheduled_overdue_jobs", set="schedule", **t) == 1
        assert scrape.value("sidekiq_scheduled_lag_seconds", set="schedule", **t) >= 30
        assert scrape.value("sidekiq_dead_jobs", **t) == 1
        latency = scrape.value("sidekiq_queue_latency_seconds", queue="within_5_seconds", **t)
        assert 8 <= latency < 8 + 10  # sampled on Redis TIME, a few polls later
        assert scrape.value("sidekiq_queue_sla_seconds", queue="within_5_seconds", **t) == 5
        assert scrape.value("sidekiq_queue_workers", queue="default", **t) == 4
        assert scrape.value("sidekiq_queue_busy_workers", queue="default", **t) == 1
        assert scrape.value("sidekiq_processes", **t) == 1
        job = {"class": "HardJob", **t}
        assert scrape.value("sidekiq_running_jobs", queue="default", **job) == 1
        assert scrape.value("sidekiq_job_executions_total", **job) == 7
        assert scrape.value("sidekiq_job_failures_total", **job) == 2
        assert scrape.value("sidekiq_job_duration_seconds_count", **job) == 5
        assert scrape.value("sidekiq_job_duration_seconds_bucket", le="0.1", **job) == 5
        assert scrape.value("sidekiq_exporter_redis_round_trips", **t) == 2

        # promtool's linter accepts the live text exposition as it is.
        with urllib.request.urlopen(exporter.base_url + "/metrics", timeout=5) as response:
            text = response.read()
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

        # client_python's content negotiation and compression.
        request = urllib.request.Request(
            exporter.base_url + "/metrics",
            headers={
                "Accept": "application/openmetrics-text; version=1.0.0",
                "Accept-Encoding": "gzip",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(response.read()).decode()
        assert body.rstrip().endswith("# EOF")
        assert "sidekiq_job_duration_seconds_bucket" in body

        status, landing = exporter.get("/")
        assert status == 200
        assert 'href="/metrics"' in landing
        assert exporter.get("/-/healthy")[0] == 200
        assert exporter.get("/-/ready")[0] == 200

        assert exporter.stop() < 5
    for source in (exporter.log_text(), landing, body):
        assert PASSWORD not in source


def test_scrapes_send_no_command_to_redis(server: RedisServer) -> None:
    client = redis.Redis(port=server.port, password=PASSWORD)
    SidekiqWriter(client, V7).push("default", {"class": "A", "enqueued_at": 1_755_000_000.0})
    # A 5 minute interval: after the first poll, nothing but scrapes happens for a while.
    with ExporterProcess(server.url, poll_interval="5m") as exporter:
        before = client.info("commandstats")
        for _ in range(10):
            assert exporter.scrape().value("sidekiq_enqueued_jobs", target="default") == 1
        after = client.info("commandstats")
    changed = {
        name: stats["calls"] - before.get(name, {"calls": 0})["calls"]
        for name, stats in after.items()
        if stats["calls"] != before.get(name, {"calls": 0})["calls"]
    }
    assert changed == {"cmdstat_info": 1}  # only this test's own first INFO


def test_redis_down_keeps_serving_and_recovers(server: RedisServer) -> None:
    with ExporterProcess(server.url) as exporter:
        exporter.scrape_after_polls(1)
        server.kill()
        deadline = time.monotonic() + 10
        while exporter.scrape().value("sidekiq_up", target="default") != 0:
            assert time.monotonic() < deadline, "sidekiq_up never dropped to 0"
            time.sleep(0.2)
        server.restart()
        scrape = exporter.scrape_after_polls(1, timeout=10)
        assert scrape.value("sidekiq_up", target="default") == 1
        assert scrape.value("sidekiq_exporter_polls_total", target="default", result="error") >= 1
        events = [e["event"] for e in exporter.log_events()]
        assert events.count("target_down") == 1
        assert events.count("target_up") == 2  # the first poll, and the recovery
