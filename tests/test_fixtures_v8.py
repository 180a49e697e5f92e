"""Sidekiq 8.0 and 8.1.2+ from fixtures: the edge cases no real workload produces.

Real Sidekiq 8.1 runs in tests/test_conformance.py and tests/test_rolling_upgrade.py; Debian
has no 8.0, and no workload writes e.g. several capsules or an 8.0.x `info` with both
`capsules` and `concurrency`. Redis is real (redis-server) and so is the exporter (the daemon,
scraped over HTTP); the data is what Sidekiq 8 writes according to docs/redis-layout.md,
written with `SidekiqWriter` (exporter/demo/layout.py). Every expected value below is worked
out from the layout doc, not from the exporter's code, and the metric keys are checked against
its literal formats, so a mistake shared by the writer and the reader (both use `KeyNames`)
still fails.

Scenarios, one Redis DB and one exporter each:
- 8.0: payload timestamps are integer epoch **milliseconds**; `run_at`, `beat`, `started_at`
  and sorted-set scores stay seconds; metrics under `j|%y%m%d|%-H:%M` and `h|…`; one capsule.
- 8.1.2+: `concurrency` is a process-hash field (the live value; `info` has none), capsules
  give per-queue capacity, Pro's `paused` set, latency falling back to `created_at`.
- mixed 7.3/8.1 cluster during an upgrade: both timestamp units in one queue and in one
  payload, both metric key families for the same minute, a 7.x process without the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from tests.support.exporter_process import ExporterProcess, Scrape
from tests.support.layouts import V7, V8_0, V8_1_2, SidekiqWriter
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

T = {"target": "default"}
ACTIVE_JOB_WRAPPER_8 = "Sidekiq::ActiveJob::Wrapper"  # renamed from ActiveJob's in 8.0 (§5.6)
STALE = "crashed-host:1:0123456789ab"


@dataclass(frozen=True)
class FixtureRun:
    """One scenario: the Redis TIME bracket of the poll, and what /metrics said."""

    now: float  # Redis TIME just before the data was written; every timestamp is relative
    scrape: Scrape
    read_by: float  # Redis TIME just after the scrape: the poll happened in [now, read_by]
    minute: datetime  # the metrics minute written (the one before `now`'s)

    def age(self, seconds_ago: float) -> tuple[float, float]:
        """Bounds of the age the exporter can report for something `seconds_ago` at `now`."""
        return seconds_ago, seconds_ago + (self.read_by - self.now)

    def run_age(self, seconds_ago: float) -> tuple[float, float]:
        """Like `age`, for a work entry's `run_at`: whole seconds, truncated (`Time.now.to_i`)."""
        return seconds_ago, seconds_ago + 1 + (self.read_by - self.now)


def redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def ms(seconds: float) -> int:
    """Sidekiq 8's payload timestamp: `::Process.clock_gettime(CLOCK_REALTIME, :millisecond)`."""
    return int(seconds * 1000)


# The layout doc's literal key formats (§6.3), independent of exporter/sidekiq/keys.py.
def v8_minute_key(t: datetime) -> str:
    return f"j|{t:%y%m%d}|{t.hour}:{t.minute:02d}"  # j|250214|8:03


def v8_ten_minute_key(t: datetime) -> str:
    return f"j|{t:%y%m%d}|{t.hour}:{t.minute // 10}"  # 08:43 -> j|250214|8:4


def v8_histogram_key(job_class: str, t: datetime) -> str:
    return f"h|{job_class}-{t.day}-{t.hour}:{t.minute}"  # h|HardJob-14-8:3


def v7_minute_key(t: datetime) -> str:
    return f"j|{t:%Y%m%d}|{t.hour}:{t.minute}"  # j|20250214|8:3


def v7_histogram_key(job_class: str, t: datetime) -> str:
    return f"{job_class}-{t:%d}-{t:%H}:{t.minute}"  # HardJob-14-08:3


def write_ten_minute_rollup(client: redis.Redis, t: datetime, fields: dict[str, int]) -> None:
    """8.x also adds each flush to a 10-minute hash (72 h); a reader of minutes must skip it."""
    key = v8_ten_minute_key(t)
    for field, value in fields.items():
        client.hincrby(key, field, value)
    client.expire(key, 72 * 3600)


def job(writer: SidekiqWriter, klass: str, queue: str, **fields: Any) -> dict[str, Any]:
    """A job payload; timestamps in `fields` are written as given (caller picks the unit)."""
    payload = writer.job(klass, queue, jid=f"{abs(hash((klass, queue, *fields.items()))):024x}")
    payload.update(fields)
    return payload


# --- scenarios --------------------------------------------------------------------------------


def write_v8_0(client: redis.Redis, now: float, minute: datetime) -> None:
    w = SidekiqWriter(client, V8_0)
    w.stats(processed=1000, failed=10)
    # Queue `default`: LPUSH at the head, so the first push is the oldest (the tail).
    w.push(
        "default", job(w, "HardJob", "default", created_at=ms(now - 125), enqueued_at=ms(now - 120))
    )
    w.push("default", job(w, "HardJob", "default", created_at=ms(now - 1), enqueued_at=ms(now - 1)))
    # Queue `created_only`: the oldest job has no enqueued_at (8.1.1+ falls back to created_at).
    w.push("created_only", job(w, "HardJob", "created_only", created_at=ms(now - 60)))
    w.zadd("schedule", now + 3600, job(w, "Later", "default", created_at=ms(now)))
    w.zadd("schedule", now - 45, job(w, "Late", "default", created_at=ms(now - 100)))  # overdue
    w.zadd("retry", now + 100, job(w, "Flaky", "default", failed_at=ms(now - 5), retry_count=0))
    w.zadd("dead", now - 10, job(w, "Gone", "default", failed_at=ms(now - 10)))
    identity = "worker-80:4242:0a1b2c3d4e5f"
    w.process(
        identity,
        beat=now - 3,
        hostname="worker-80",
        tag="v80",
        concurrency=5,
        queues=("default", "critical"),
        busy=2,
        rss_kib=200_000,
        rtt_us=450,
        started_at=now - 3600,
    )
    w.work(
        identity, "t1", "default", job(w, "HardJob", "default", enqueued_at=ms(now - 40)), now - 30
    )
    wrapped = job(
        w, ACTIVE_JOB_WRAPPER_8, "critical", wrapped="MailerJob", enqueued_at=ms(now - 12)
    )
    w.work(identity, "t2", "critical", wrapped, now - 10)
    client.sadd("processes", STALE)
    w.metrics(minute, "HardJob", executions=7, failures=1, milliseconds=600, histogram={2: 4, 5: 2})
    write_ten_minute_rollup(client, minute, {"HardJob|p": 7, "HardJob|f": 1, "HardJob|ms": 600})


def write_v8_1_2(client: redis.Redis, now: float, minute: datetime) -> None:
    w = SidekiqWriter(client, V8_1_2)
    w.stats(processed=50, failed=0)
    w.push("critical", job(w, "PayJob", "critical", created_at=ms(now - 30)))  # no enqueued_at
    w.push("default", job(w, "HardJob", "default", created_at=ms(now - 9), enqueued_at=ms(now - 8)))
    client.sadd("paused", "critical")  # Sidekiq Pro's pause set, read by the 8.1.1+ API
    # One capsule whose boot-time concurrency (5, cached in `info`) was raised to 8 live.
    w.process(
        "worker-a:1:aaaaaaaaaaaa",
        beat=now - 2,
        hostname="worker-a",
        tag="a",
        concurrency=8,
        queues=("default", "critical"),
        capsules={
            "default": {
                "concurrency": 5,
                "mode": "strict",
                "weights": {"default": 0, "critical": 0},
            }
        },
    )
    # Two capsules: 3 threads for `default`, 1 strict thread for `critical` and `default`.
    w.process(
        "worker-b:2:bbbbbbbbbbbb",
        beat=now - 4,
        hostname="worker-b",
        tag="b",
        concurrency=4,
        queues=("default", "critical"),
        capsules={
            "default": {"concurrency": 3, "mode": "weighted", "weights": {"default": 1}},
            "single": {
                "concurrency": 1,
                "mode": "strict",
                "weights": {"critical": 0, "default": 0},
            },
        },
    )
    client.sadd("processes", STALE)
    w.metrics(minute, "PayJob", executions=2, milliseconds=30, histogram={1: 2})


def write_mixed(client: redis.Redis, now: float, minute: datetime) -> None:
    old, new = SidekiqWriter(client, V7), SidekiqWriter(client, V8_1_2)
    old.stats(processed=300, failed=3)
    # One queue, both units: the oldest job from a 7.x client (float s), newer from 8.x (int ms).
    old.push(
        "default", job(old, "HardJob", "default", created_at=now - 200.5, enqueued_at=now - 200.25)
    )
    new.push(
        "default", job(new, "HardJob", "default", created_at=ms(now - 5), enqueued_at=ms(now - 5))
    )
    # One payload, both units: created by a 7.x client, re-enqueued by an 8.x scheduler.
    new.push(
        "mixed_payload",
        job(new, "HardJob", "mixed_payload", created_at=now - 95.5, enqueued_at=ms(now - 90)),
    )
    # The reverse order in a queue: the oldest from 8.x, a newer one from 7.x.
    new.push("v8_oldest", job(new, "HardJob", "v8_oldest", enqueued_at=ms(now - 50)))
    old.push("v8_oldest", job(old, "HardJob", "v8_oldest", enqueued_at=now - 2.5))
    old.process(
        "old-7:1:777777777777",
        beat=now - 6,
        hostname="old-7",
        tag="old",
        concurrency=10,
        queues=("default",),
    )
    new.process(
        "new-8:2:888888888888",
        beat=now - 1,
        hostname="new-8",
        tag="new",
        concurrency=5,
        queues=("default",),
    )
    old.work(
        "old-7:1:777777777777",
        "o1",
        "default",
        job(old, "HardJob", "default", enqueued_at=now - 70.0),
        now - 65,
    )
    new.work(
        "new-8:2:888888888888",
        "n1",
        "default",
        job(new, "HardJob", "default", enqueued_at=ms(now - 25)),
        now - 20,
    )
    client.sadd("processes", STALE)
    # The same minute in both metric families: a cluster total needs both.
    old.metrics(minute, "HardJob", executions=3, milliseconds=300, histogram={4: 3})
    new.metrics(
        minute, "HardJob", executions=4, failures=1, milliseconds=450, histogram={4: 2, 6: 1}
    )


SCENARIOS: dict[str, tuple[int, Callable[[redis.Redis, float, datetime], None]]] = {
    "8.0": (1, write_v8_0),
    "8.1.2": (2, write_v8_1_2),
    "mixed": (3, write_mixed),
}


@pytest.fixture(scope="module")
def runs(module_redis_server: RedisServer) -> Iterator[dict[str, FixtureRun]]:
    """Per scenario: one exporter on its own empty DB, write the scenario, scrape it.

    The exporter's first poll is its per-class baseline (docs/job-metrics.md): it must see the
    DB empty, so that the metrics written afterwards are growth it counts.
    """
    server = module_redis_server
    with ExitStack() as stack:
        exporters: dict[str, ExporterProcess] = {}
        clients: dict[str, redis.Redis] = {}
        for name, (db, _) in SCENARIOS.items():
            clients[name] = stack.enter_context(redis.Redis(port=server.port, db=db))
            clients[name].flushdb()
            exporters[name] = ExporterProcess(server.url_for_db(db))
            stack.enter_context(exporters[name])  # ready = one poll (the baseline) done
        # All exporters run at once: their waits for a poll after the writes overlap.
        written: dict[str, tuple[float, datetime, int]] = {}
        for name, (_, write) in SCENARIOS.items():
            polls = exporters[name].polls() + 2  # then a poll that began after the writes
            now = redis_time(clients[name])
            minute = datetime.fromtimestamp((int(now // 60) - 1) * 60, UTC)
            write(clients[name], now, minute)
            written[name] = (now, minute, polls)
        out: dict[str, FixtureRun] = {}
        for name, (now, minute, polls) in written.items():
            scrape = exporters[name].scrape_at_polls(polls)
            out[name] = FixtureRun(now, scrape, redis_time(clients[name]), minute)
        for exporter in exporters.values():
            exporter.stop()  # SIGTERM: exit 0 within 5 s
        yield out


def assert_age(actual: float, bounds: tuple[float, float], what: str) -> None:
    low, high = bounds
    assert low - 1e-6 <= actual <= high + 1e-6, f"{what}: {actual} not in [{low}, {high}]"


# --- the fixtures follow the layout doc's literal key formats --------------------------------


def test_fixture_keys_follow_the_spec(
    runs: dict[str, FixtureRun], module_redis_server: RedisServer
) -> None:
    def exists(db: int, key: str) -> bool:
        return bool(module_redis_server.execute("EXISTS", key, db=db))

    for name in ("8.0", "8.1.2"):
        db, minute = SCENARIOS[name][0], runs[name].minute
        assert exists(db, v8_minute_key(minute)), name
        assert not exists(db, v7_minute_key(minute)), name
    minute = runs["8.0"].minute
    assert exists(1, v8_histogram_key("HardJob", minute))
    assert exists(1, v8_ten_minute_key(minute))
    assert (
        8 * 3600 - 60 < module_redis_server.execute("TTL", v8_minute_key(minute), db=1) <= 8 * 3600
    )
    info = json.loads(module_redis_server.execute("HGET", "worker-a:1:aaaaaaaaaaaa", "info", db=2))
    assert "concurrency" not in info  # 8.1.2+ (§5.3)
    assert "capsules" in info
    assert (
        module_redis_server.execute("HGET", "worker-a:1:aaaaaaaaaaaa", "concurrency", db=2) == "8"
    )
    info = json.loads(
        module_redis_server.execute("HGET", "worker-80:4242:0a1b2c3d4e5f", "info", db=1)
    )
    assert info["concurrency"] == 5  # 8.0.9–8.1.1
    assert "capsules" in info
    mixed = runs["mixed"].minute
    assert exists(3, v7_minute_key(mixed))
    assert exists(3, v8_minute_key(mixed))
    assert exists(3, v7_histogram_key("HardJob", mixed))
    assert exists(3, v8_histogram_key("HardJob", mixed))
    # The work hash of 8.x: `<identity>:work`, run_at whole seconds, payload ms.
    raw = module_redis_server.execute("HGET", "worker-80:4242:0a1b2c3d4e5f:work", "t1", db=1)
    entry = json.loads(raw)
    assert isinstance(entry["run_at"], int)
    assert isinstance(json.loads(entry["payload"])["enqueued_at"], int)


@pytest.mark.parametrize(
    ("when", "v8_minute", "v8_ten", "v8_hist", "v7_minute", "v7_hist"),
    [
        # The layout doc's own examples (§6.3), and a two-digit everything.
        ((2025, 2, 14, 8, 3), "j|250214|8:03", "j|250214|8:0", "h|HardJob-14-8:3",
         "j|20250214|8:3", "HardJob-14-08:3"),
        ((2025, 2, 14, 8, 43), "j|250214|8:43", "j|250214|8:4", "h|HardJob-14-8:43",
         "j|20250214|8:43", "HardJob-14-08:43"),
        ((2026, 1, 5, 0, 0), "j|260105|0:00", "j|260105|0:0", "h|HardJob-5-0:0",
         "j|20260105|0:0", "HardJob-05-00:0"),
        ((2026, 12, 31, 23, 59), "j|261231|23:59", "j|261231|23:5", "h|HardJob-31-23:59",
         "j|20261231|23:59", "HardJob-31-23:59"),
    ],
)  # fmt: skip
def test_key_formats_at_any_minute(
    when: tuple[int, int, int, int, int],
    v8_minute: str,
    v8_ten: str,
    v8_hist: str,
    v7_minute: str,
    v7_hist: str,
) -> None:
    """The formats above, and the writer's (shared with the reader), at fixed minutes: the
    scenarios only see the current minute, which may not need any padding."""
    year, month, day, hour, minute = when
    t = datetime(year, month, day, hour, minute, tzinfo=UTC)
    assert (v8_minute_key(t), v8_ten_minute_key(t), v8_histogram_key("HardJob", t)) == (
        v8_minute,
        v8_ten,
        v8_hist,
    )
    assert (v7_minute_key(t), v7_histogram_key("HardJob", t)) == (v7_minute, v7_hist)
    keys = SidekiqWriter(redis.Redis(), V8_0).keys  # no connection is made
    assert keys.metrics_minute_v8(t) == v8_minute
    assert keys.histogram_v8("HardJob", t) == v8_hist
    assert keys.metrics_minute_v7(t) == v7_minute
    assert keys.histogram_v7("HardJob", t) == v7_hist


# --- Sidekiq 8.0 ------------------------------------------------------------------------------


def test_v8_0_millisecond_payloads_give_sane_ages(runs: dict[str, FixtureRun]) -> None:
    r = runs["8.0"]
    s = r.scrape
    assert s.value("sidekiq_up", **T) == 1
    # Not 1.7e12 s (ms read as s) and not 0 (now − ms clamped): 120 s, as 8.0's Queue#latency.
    assert_age(
        s.value("sidekiq_queue_latency_seconds", **T, queue="default"), r.age(120), "latency"
    )
    assert s.value("sidekiq_queue_enqueued_jobs", **T, queue="default") == 2
    assert s.value("sidekiq_enqueued_jobs", **T) == 3
    # 8.0.0–8.1.0's API reports 0.0 here (enqueued_at only); 8.1.1+ uses created_at. We
    # follow 8.1.1+: a job with no enqueued_at has still been waiting since it was created.
    assert_age(
        s.value("sidekiq_queue_latency_seconds", **T, queue="created_only"), r.age(60), "created"
    )
    # Sorted-set scores stay float seconds in 8.x.
    assert s.value("sidekiq_scheduled_jobs", **T) == 2
    assert s.value("sidekiq_scheduled_overdue_jobs", **T, set="schedule") == 1
    assert_age(s.value("sidekiq_scheduled_lag_seconds", **T, set="schedule"), r.age(45), "lag")
    assert s.value("sidekiq_retry_jobs", **T) == 1
    assert s.value("sidekiq_scheduled_overdue_jobs", **T, set="retry") == 0
    assert s.value("sidekiq_dead_jobs", **T) == 1
    assert s.value("sidekiq_processed_jobs_total", **T) == 1000
    assert s.value("sidekiq_failed_jobs_total", **T) == 10


def test_v8_0_process_and_running_jobs(runs: dict[str, FixtureRun]) -> None:
    r = runs["8.0"]
    s = r.scrape
    labels = {**T, "identity": "worker-80:4242:0a1b2c3d4e5f", "hostname": "worker-80", "tag": "v80"}
    assert s.value("sidekiq_processes", **T) == 1  # the stale member is ignored
    assert s.value("sidekiq_process_concurrency", **labels) == 5  # info.concurrency (8.0)
    assert s.value("sidekiq_process_busy_workers", **labels) == 2
    assert s.value("sidekiq_process_memory_rss_bytes", **labels) == 200_000 * 1024
    assert s.value("sidekiq_process_redis_rtt_seconds", **labels) == pytest.approx(450e-6)
    # `beat` and `started_at` stay float seconds in 8.x.
    beat = s.value("sidekiq_process_heartbeat_timestamp_seconds", **labels)
    assert beat == pytest.approx(r.now - 3, abs=1e-3)
    started = s.value("sidekiq_process_start_time_seconds", **labels)
    assert started == pytest.approx(r.now - 3600, abs=1e-3)
    assert s.value("sidekiq_process_quiet", **labels) == 0
    assert s.value("sidekiq_process_info", **labels, version="8.0.9") == 1
    # run_at is whole seconds in every version: ages from it, not from the ms payload.
    running = s.value(
        "sidekiq_running_job_max_age_seconds", **T, queue="default", **{"class": "HardJob"}
    )
    assert_age(running, r.run_age(30), "HardJob running")
    assert s.value("sidekiq_running_jobs", **T, queue="critical", **{"class": "MailerJob"}) == 1
    assert s.value("sidekiq_queue_busy_workers", **T, queue="critical") == 1
    assert s.value("sidekiq_queue_workers", **T, queue="critical") == 5
    assert_age(
        s.value("sidekiq_queue_max_processing_time_seconds", **T, queue="critical"),
        r.run_age(10),
        "critical running",
    )


def test_v8_0_job_metrics_from_minute_keys_only(runs: dict[str, FixtureRun]) -> None:
    """`j|%y%m%d|%-H:%M` and `h|…`; the 10-minute rollup holding the same flush is not added."""
    s = runs["8.0"].scrape
    c = {**T, "class": "HardJob"}
    assert s.value("sidekiq_job_executions_total", **c) == 7
    assert s.value("sidekiq_job_failures_total", **c) == 1
    assert s.value("sidekiq_job_duration_seconds_count", **c) == 6  # successes: p − f
    assert s.value("sidekiq_job_duration_seconds_sum", **c) == pytest.approx(0.6)
    buckets = s.by_label("sidekiq_job_duration_seconds_bucket", "le", **c)
    # Bucket 2 is 30–45 ms (le 0.045), bucket 5 is 100–150 ms (le 0.15) (§6.4).
    assert (buckets["0.03"], buckets["0.045"], buckets["0.1"], buckets["0.15"]) == (0, 4, 4, 6)
    assert buckets["+Inf"] == 6


# --- Sidekiq 8.1.2+ ---------------------------------------------------------------------------


def test_v8_1_2_concurrency_field_and_capsules(runs: dict[str, FixtureRun]) -> None:
    s = runs["8.1.2"].scrape
    a = {**T, "identity": "worker-a:1:aaaaaaaaaaaa", "hostname": "worker-a", "tag": "a"}
    b = {**T, "identity": "worker-b:2:bbbbbbbbbbbb", "hostname": "worker-b", "tag": "b"}
    # The hash field is the live value; info.capsules holds the boot-time 5.
    assert s.value("sidekiq_process_concurrency", **a) == 8
    assert s.value("sidekiq_process_concurrency", **b) == 4
    assert s.value("sidekiq_workers", **T) == 12
    assert s.value("sidekiq_processes", **T) == 2
    assert s.value("sidekiq_process_info", **a, version="8.1.7") == 1
    # Capacity per queue: a serves both with all 8 threads; b's capsules give 3 + 1 threads
    # to `default` and only the strict capsule's 1 to `critical`.
    assert s.value("sidekiq_queue_workers", **T, queue="default") == 8 + 4
    assert s.value("sidekiq_queue_workers", **T, queue="critical") == 8 + 1
    assert s.value("sidekiq_queue_processes", **T, queue="critical") == 2


def test_v8_1_2_paused_and_created_at_latency(runs: dict[str, FixtureRun]) -> None:
    r = runs["8.1.2"]
    s = r.scrape
    assert s.value("sidekiq_queue_paused", **T, queue="critical") == 1  # SISMEMBER paused
    assert s.value("sidekiq_queue_paused", **T, queue="default") == 0
    assert_age(s.value("sidekiq_queue_latency_seconds", **T, queue="critical"), r.age(30), "crit")
    assert_age(s.value("sidekiq_queue_latency_seconds", **T, queue="default"), r.age(8), "default")
    assert s.value("sidekiq_job_executions_total", **T, **{"class": "PayJob"}) == 2


# --- a mixed 7.3 / 8.1 cluster ---------------------------------------------------------------


def test_mixed_cluster_units_per_field_per_job(runs: dict[str, FixtureRun]) -> None:
    r = runs["mixed"]
    s = r.scrape

    def latency(queue: str) -> float:
        return s.value("sidekiq_queue_latency_seconds", **T, queue=queue)

    assert_age(latency("default"), r.age(200.25), "7.x float oldest, 8.x ms newest")
    assert_age(latency("mixed_payload"), r.age(90), "created_at float, enqueued_at ms")
    assert_age(latency("v8_oldest"), r.age(50), "8.x ms oldest, 7.x float newest")
    ages = s.series("sidekiq_running_job_max_age_seconds", **T, queue="default")
    assert len(ages) == 1
    assert_age(next(iter(ages.values())), r.run_age(65), "oldest running (7.x)")
    assert s.value("sidekiq_running_jobs", **T, queue="default", **{"class": "HardJob"}) == 2


def test_mixed_cluster_concurrency_of_a_7x_process(runs: dict[str, FixtureRun]) -> None:
    """The 8.1.2+ API merges `HMGET concurrency`.to_i: 0 for a 7.x process (no such field),
    so its ProcessSet#total_concurrency says 5 here. The 7.x process has 10 threads (its
    `info.concurrency`); we report 10 and a total of 15."""
    s = runs["mixed"].scrape
    old = {**T, "identity": "old-7:1:777777777777", "hostname": "old-7", "tag": "old"}
    new = {**T, "identity": "new-8:2:888888888888", "hostname": "new-8", "tag": "new"}
    assert s.value("sidekiq_process_concurrency", **old) == 10
    assert s.value("sidekiq_process_concurrency", **new) == 5
    assert s.value("sidekiq_workers", **T) == 15
    assert s.value("sidekiq_queue_workers", **T, queue="default") == 15
    assert s.value("sidekiq_process_info", **old, version="7.3.2") == 1
    assert s.value("sidekiq_process_info", **new, version="8.1.7") == 1
    assert s.value("sidekiq_processes", **T) == 2


def test_mixed_cluster_adds_both_metric_families(runs: dict[str, FixtureRun]) -> None:
    s = runs["mixed"].scrape
    c = {**T, "class": "HardJob"}
    assert s.value("sidekiq_job_executions_total", **c) == 3 + 4
    assert s.value("sidekiq_job_failures_total", **c) == 1
    assert s.value("sidekiq_job_duration_seconds_sum", **c) == pytest.approx(0.75)
    assert s.value("sidekiq_job_duration_seconds_count", **c) == 6
    buckets = s.by_label("sidekiq_job_duration_seconds_bucket", "le", **c)
    # Bucket 4 is 65–100 ms (le 0.1): 3 + 2; bucket 6 is 150–225 ms (le 0.225): 1.
    assert (buckets["0.065"], buckets["0.1"], buckets["0.15"], buckets["0.225"]) == (0, 5, 5, 6)


def test_no_item_skipped_in_any_layout(runs: dict[str, FixtureRun]) -> None:
    for name, r in runs.items():
        assert r.scrape.total("sidekiq_exporter_skipped_items_total") == 0, name
        assert r.scrape.value("sidekiq_exporter_redis_round_trips", **T) == 2, name
