"""Per-class job timing (issue 4): Sidekiq's execution metrics as counters and a histogram.

Cheapest first:
1. Key names of both families across minute, hour, UTC midnight, month and year boundaries,
   checked against docs/redis-layout.md's literal formats (§6.3), not against `KeyNames`.
2. Histograms on a real redis-server, written as Sidekiq writes them (`BITFIELD … OVERFLOW SAT
   INCRBY u16 #i n`, saturating at 65,535) and read back by the Reader with `GET`, as the
   read-only ACL user and on a Redis without `BITFIELD_RO`: the numbers `BITFIELD_RO` reads.
3. 8.x and mixed 7/8 fixtures from the layout doc (`SidekiqWriter`) on fakeredis, through Reader →
   Deriver → collector, across UTC midnight: both families added, late flushes, re-reads,
   forgetting, the first-poll baseline.
4. Real Sidekiq 7.3.2 running a known workload, the real exporter daemon against it, checked
   against `Sidekiq::Metrics::Query` for the same minutes; then a restarted exporter (its first
   poll is a baseline), `--collect.job-classes.deny` and `--collect.job-classes.max`.
5. Real Sidekiq 6.4.1 (no metrics): the families are absent and one log line says why.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from exporter.cardinality import CLASS_LIMIT
from exporter.collector import HISTOGRAM_LE, SidekiqCollector
from exporter.connection import create_redis_client
from exporter.derive import Deriver
from exporter.model import (
    HISTOGRAM_BUCKET_BOUNDS_MS,
    HISTOGRAM_BUCKETS,
    ClassMinute,
    MetricsMinute,
    Sample,
    Snapshot,
)
from exporter.sidekiq import decode
from exporter.sidekiq.keys import KeyNames
from exporter.sidekiq.metrics_window import minute_starts
from exporter.sidekiq.reader import Reader
from exporter.store import Store, TargetStatus
from exporter.targets import build_target
from tests.support.conformance import EXPORTER_ACL_COMMANDS
from tests.support.exporter_process import ExporterProcess, Scrape
from tests.support.families import JOB_CLASS_FAMILIES
from tests.support.layouts import V7, V8_0, V8_1_2, SidekiqWriter
from tests.support.redis_server import RedisServer, hgetall_dict
from tests.support.samples import empty_sample
from tests.support.sidekiq import (
    SIDEKIQ_6_4_1,
    SIDEKIQ_7_3_2,
    SidekiqProcess,
    enqueue,
    truth,
    wait_for,
)

KEYS = KeyNames()
T = {"target": "default"}
SATURATED = 65_535


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


# The layout doc's literal formats (§6.3), written out independently of exporter/sidekiq/keys.py.
def v7_minute(t: datetime) -> str:
    return f"j|{t:%Y%m%d}|{t.hour}:{t.minute}"  # j|%Y%m%d|%-H:%-M


def v8_minute(t: datetime) -> str:
    return f"j|{t:%y%m%d}|{t.hour}:{t:%M}"  # j|%y%m%d|%-H:%M


def v7_histogram(job_class: str, t: datetime) -> str:
    return f"{job_class}-{t:%d}-{t:%H}:{t.minute}"  # <klass>-%d-%H:%-M


def v8_histogram(job_class: str, t: datetime) -> str:
    return f"h|{job_class}-{t.day}-{t.hour}:{t.minute}"  # h|<klass>-%-d-%-H:%-M


def cumulative(hist: Sequence[int]) -> list[float]:
    """Prometheus `_bucket` values for the 25 finite bounds from 26 storage-order counts."""
    out, total = [], 0
    for count in hist[: len(HISTOGRAM_LE)]:
        total += count
        out.append(float(total))
    return out


def buckets_of(scrape: Scrape, job_class: str) -> list[float]:
    """The finite `_bucket` values of one class, ordered by `le`; +Inf last."""
    series = scrape.by_label(
        "sidekiq_job_duration_seconds_bucket", "le", **T, **{"class": job_class}
    )
    return [series[le] for le in (*HISTOGRAM_LE, "+Inf")]


# --- 1. key names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            utc(2025, 2, 14, 8, 9),
            utc(2025, 2, 14, 8, 10),
            [
                ("j|20250214|8:9", "j|250214|8:09", "HardJob-14-08:9", "h|HardJob-14-8:9"),
                ("j|20250214|8:10", "j|250214|8:10", "HardJob-14-08:10", "h|HardJob-14-8:10"),
            ],
            id="minute",
        ),
        pytest.param(
            utc(2025, 2, 14, 9, 59),
            utc(2025, 2, 14, 10, 0),
            [
                ("j|20250214|9:59", "j|250214|9:59", "HardJob-14-09:59", "h|HardJob-14-9:59"),
                ("j|20250214|10:0", "j|250214|10:00", "HardJob-14-10:0", "h|HardJob-14-10:0"),
            ],
            id="hour",
        ),
        pytest.param(
            utc(2025, 2, 13, 23, 59),
            utc(2025, 2, 14, 0, 0),
            [
                ("j|20250213|23:59", "j|250213|23:59", "HardJob-13-23:59", "h|HardJob-13-23:59"),
                ("j|20250214|0:0", "j|250214|0:00", "HardJob-14-00:0", "h|HardJob-14-0:0"),
            ],
            id="midnight",
        ),
        pytest.param(
            utc(2025, 2, 28, 23, 59),
            utc(2025, 3, 1, 0, 0),
            [
                ("j|20250228|23:59", "j|250228|23:59", "HardJob-28-23:59", "h|HardJob-28-23:59"),
                ("j|20250301|0:0", "j|250301|0:00", "HardJob-01-00:0", "h|HardJob-1-0:0"),
            ],
            id="month",
        ),
        pytest.param(
            utc(2025, 12, 31, 23, 59),
            utc(2026, 1, 1, 0, 0),
            [
                ("j|20251231|23:59", "j|251231|23:59", "HardJob-31-23:59", "h|HardJob-31-23:59"),
                ("j|20260101|0:0", "j|260101|0:00", "HardJob-01-00:0", "h|HardJob-1-0:0"),
            ],
            id="year",
        ),
    ],
)
def test_key_names_across_boundaries(
    before: datetime, after: datetime, expected: list[tuple[str, str, str, str]]
) -> None:
    for t, keys in zip((before, after), expected, strict=True):
        ours = (
            KEYS.metrics_minute_v7(t),
            KEYS.metrics_minute_v8(t),
            KEYS.histogram_v7("HardJob", t),
            KEYS.histogram_v8("HardJob", t),
        )
        spec = (v7_minute(t), v8_minute(t), v7_histogram("HardJob", t), v8_histogram("HardJob", t))
        assert ours == spec == keys


def test_read_window_crosses_midnight_minute_by_minute() -> None:
    now = utc(2025, 2, 14, 0, 1, 59).timestamp()
    window = minute_starts(now, 3)
    assert window == [utc(2025, 2, 14, 0, 1), utc(2025, 2, 14, 0, 0), utc(2025, 2, 13, 23, 59)]
    assert [KEYS.metrics_minute_v7(t) for t in window] == [
        "j|20250214|0:1",
        "j|20250214|0:0",
        "j|20250213|23:59",
    ]
    assert [KEYS.histogram_v7("A", t) for t in window] == ["A-14-00:1", "A-14-00:0", "A-13-23:59"]


def test_v7_histogram_key_has_no_month_which_the_ttl_makes_safe() -> None:
    # `%d` without the month: Feb 14 08:03 and Mar 14 08:03 share a key name. Safe because the
    # histogram TTL is 8 h (7.x, 8.x; 24 h in 6.5) and a day-of-month repeats ≥ 28 days later;
    # the real-Sidekiq test below checks the TTL Sidekiq 7.3.2 sets.
    assert KEYS.histogram_v7("A", utc(2025, 2, 14, 8, 3)) == KEYS.histogram_v7(
        "A", utc(2025, 3, 14, 8, 3)
    )
    assert KEYS.histogram_v7("A", utc(2025, 2, 14, 8, 3)) != KEYS.histogram_v7(
        "A", utc(2025, 2, 15, 8, 3)
    )


def test_ten_minute_rollup_keys_never_collide_with_minute_keys() -> None:
    # 8.x also writes `j|%y%m%d|%-H:<tens digit>` (10-minute rollups, 72 h); our 1-minute 8.x
    # keys always have two minute digits, and the 7.x keys a four-digit year.
    for minute in range(60):
        t = utc(2025, 2, 14, 8, minute)
        rollup = f"j|{t:%y%m%d}|{t.hour}:{minute // 10}"
        assert rollup not in {KEYS.metrics_minute_v8(t), KEYS.metrics_minute_v7(t)}
        assert all(
            rollup not in {KEYS.metrics_minute_v8(u), KEYS.metrics_minute_v7(u)}
            for u in (utc(2025, 2, 14, 8, m) for m in range(60))
        )


# --- 2. histograms on a real redis-server -------------------------------------------------


def sidekiq_persist(server: RedisServer, key: str, counts: dict[int, int]) -> None:
    """One tracker flush of a histogram, as `Histogram#persist` sends it (shared.rb)."""
    command: list[str | int] = ["BITFIELD", key, "OVERFLOW", "SAT"]
    for index, count in sorted(counts.items()):
        if count > 0:
            command += ["INCRBY", "u16", f"#{index}", count]
    server.execute(*command)
    server.execute("EXPIRE", key, 8 * 3600)


def sidekiq_counts(server: RedisServer, key: str, job_class: str, p: int, f: int, ms: int) -> None:
    """One tracker flush of the `j|` hash: HINCRBY per field, then EXPIRE (tracking.rb)."""
    for field, value in (("p", p), ("f", f), ("ms", ms)):
        if value:
            server.execute("HINCRBY", key, f"{job_class}|{field}", value)
    server.execute("EXPIRE", key, 8 * 3600)


def redis_now(server: RedisServer) -> float:
    seconds, micros = server.execute("TIME")
    return int(seconds) + int(micros) / 1e6


def bitfield_ro(server: RedisServer, key: str) -> list[int]:
    args = [a for i in range(HISTOGRAM_BUCKETS) for a in ("GET", "u16", f"#{i}")]
    return [int(v) for v in server.execute("BITFIELD_RO", key, *args)]


def raw_get(server: RedisServer, key: str) -> bytes | None:
    value = server.execute("GET", key)
    return value.encode("latin-1") if isinstance(value, str) else value


# Three flushes into one class-minute: bucket 0 saturates (40,000 + 40,000 > 65,535), bucket 1
# is saturated by a single increment, the slowest bucket (25, "≥ 335 s") gets some too.
FLUSHES = ({0: 40_000, 3: 2, 25: 7}, {0: 40_000, 12: 1}, {1: 70_000, 3: 1})
EXPECTED_HIST = (SATURATED, SATURATED, 0, 3, *([0] * 8), 1, *([0] * 12), 7)


def test_sidekiq_style_writes_saturate_and_get_agrees_with_bitfield_ro(
    redis_server: RedisServer,
) -> None:
    for flush in FLUSHES:
        sidekiq_persist(redis_server, "HardJob-14-08:3", flush)
    assert tuple(bitfield_ro(redis_server, "HardJob-14-08:3")) == EXPECTED_HIST
    raw = raw_get(redis_server, "HardJob-14-08:3")
    assert raw is not None
    assert len(raw) == 2 * HISTOGRAM_BUCKETS
    assert decode.decode_histogram_bytes(raw) == EXPECTED_HIST
    # Random counts in every bucket, incl. byte edges and values past the saturation point.
    rng = random.Random(4)
    edges = [0, 1, 255, 256, 257, 65_534, 65_535, 65_536, 100_000]
    for n in range(20):
        counts = {i: rng.choice([*edges, rng.randrange(0, 70_000)]) for i in range(26)}
        key = f"Rand{n}-14-08:3"
        sidekiq_persist(redis_server, key, counts)
        expected = tuple(min(counts[i], SATURATED) for i in range(26))
        assert tuple(bitfield_ro(redis_server, key)) == expected
        assert decode.decode_histogram_bytes(raw_get(redis_server, key)) == expected
    # A short string (only low buckets written) and a missing key read as zeros both ways.
    sidekiq_persist(redis_server, "Short-14-08:3", {1: 5})
    assert len(raw_get(redis_server, "Short-14-08:3") or b"") == 4
    assert decode.decode_histogram_bytes(raw_get(redis_server, "Short-14-08:3")) == tuple(
        bitfield_ro(redis_server, "Short-14-08:3")
    )
    assert bitfield_ro(redis_server, "Missing-14-08:3") == [0] * 26
    assert decode.decode_histogram_bytes(None) == (0,) * 26


class _Settings:
    poll_interval = 1.0
    collect_processes = False


class _Clock:
    def time(self) -> float:
        return 1_000.0

    def monotonic(self) -> float:
        return 1_000.0

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the collector never sleeps")


def render(snapshot: Snapshot) -> Scrape:
    """What `/metrics` shows for this snapshot (the real collector, a private registry)."""
    store = Store([snapshot.target])
    status = TargetStatus.initial(snapshot.target)
    store.publish(
        replace(status, snapshot=snapshot, snapshot_completed_at=1_000.0, polls_success=1, up=True)
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidekiqCollector(store, _Settings(), _Clock()))
    return Scrape.parse(generate_latest(registry).decode())


async def read_once(url: str, reader: Reader, now: float) -> Sample:
    """One `Reader.read` through the client the daemon builds (RESP2, AUTH only on connect)."""
    client = create_redis_client(build_target(name="default", url=url), timeout=5.0)
    try:
        return await reader.read(client, now)
    finally:
        await client.aclose()


def by_class(sample: Sample) -> dict[str, dict[str, tuple[int, int, int, tuple[int, ...]]]]:
    return {
        m.key: {
            c.job_class: (c.executions, c.failures, c.milliseconds, c.histogram) for c in m.classes
        }
        for m in sample.metrics_minutes
    }


def hist(**buckets: int) -> tuple[int, ...]:
    values = [0] * HISTOGRAM_BUCKETS
    for name, count in buckets.items():
        values[int(name[1:])] = count
    return tuple(values)


# The true counts behind FLUSHES, before saturation: 150,011 successful executions.
TRUE_SUCCESSES_V7 = 80_000 + 70_000 + 3 + 1 + 7
EXPECTED_V8_HIST = hist(b4=3, b6=1)


def write_both_families(server: RedisServer, minute: datetime) -> None:
    """One minute of a mixed 7/8 cluster for HardJob (7.x saturated), plus a 7.x-only class."""
    for flush in FLUSHES:
        sidekiq_persist(server, v7_histogram("HardJob", minute), flush)
    sidekiq_counts(server, v7_minute(minute), "HardJob", p=TRUE_SUCCESSES_V7 + 2, f=2, ms=9_000_000)
    sidekiq_persist(server, v8_histogram("HardJob", minute), {4: 3, 6: 1})
    sidekiq_counts(server, v8_minute(minute), "HardJob", p=5, f=1, ms=500)
    sidekiq_persist(server, v7_histogram("Old::Job", minute), {2: 2})
    sidekiq_counts(server, v7_minute(minute), "Old::Job", p=2, f=0, ms=80)


@pytest.mark.integration
@pytest.mark.parametrize("server_kind", ["acl", "no_bitfield_ro"])
async def test_reader_reads_histograms_by_get_as_bitfield_ro_reads_them(
    redis_server: RedisServer, server_kind: str
) -> None:
    with ExitStack() as stack:
        if server_kind == "acl":
            # The read-only ACL user of docs/redis-layout.md §11, which grants no BITFIELD_RO.
            server = redis_server
            server.execute(
                "ACL", "SETUSER", "ro", "on", ">pw", "%R~*", "-@all", *EXPORTER_ACL_COMMANDS
            )
            url = f"redis://ro:pw@127.0.0.1:{server.port}/0"
        else:
            # A Redis without the command (as before 6.0).
            server = stack.enter_context(RedisServer("--rename-command", "BITFIELD_RO", '""'))
            url = server.url
        now = redis_now(server)
        minute = datetime.fromtimestamp(int(now // 60) * 60, UTC)
        write_both_families(server, minute)

        first = await read_once(url, Reader(), now)
        assert first.round_trips == 2
        assert first.skipped == {}
        read = by_class(first)
        if server_kind == "acl":  # the oracle: what Sidekiq's own BITFIELD_RO reads
            for key, job_class in (
                (v7_histogram("HardJob", minute), "HardJob"),
                (v7_histogram("Old::Job", minute), "Old::Job"),
            ):
                assert read[v7_minute(minute)][job_class][3] == tuple(bitfield_ro(server, key))
            assert read[v8_minute(minute)]["HardJob"][3] == tuple(
                bitfield_ro(server, v8_histogram("HardJob", minute))
            )
        assert read[v7_minute(minute)]["HardJob"] == (
            TRUE_SUCCESSES_V7 + 2,
            2,
            9_000_000,
            EXPECTED_HIST,
        )
        assert read[v8_minute(minute)]["HardJob"] == (5, 1, 500, EXPECTED_V8_HIST)
        assert read[v7_minute(minute)]["Old::Job"] == (2, 0, 80, hist(b2=2))

        # Both families add up; the saturated excess shows in +Inf (= successes) only.
        derive = Deriver("default")
        derive(replace(first, metrics_minutes=()))  # the baseline: an empty Redis
        s = render(derive(first))
        c = {**T, "class": "HardJob"}
        successes = TRUE_SUCCESSES_V7 + 4
        assert s.value("sidekiq_job_executions_total", **c) == TRUE_SUCCESSES_V7 + 2 + 5
        assert s.value("sidekiq_job_failures_total", **c) == 3
        assert s.value("sidekiq_job_duration_seconds_count", **c) == successes
        assert s.value("sidekiq_job_duration_seconds_sum", **c) == pytest.approx(9_000.5)
        both = [a + b for a, b in zip(EXPECTED_HIST, EXPECTED_V8_HIST, strict=True)]
        assert buckets_of(s, "HardJob") == [*cumulative(both), successes]
        assert buckets_of(s, "HardJob")[-2] < successes  # le=335 excludes the excess


# --- 3. 8.x and mixed 7/8 fixtures from the layout doc, on fakeredis, across UTC midnight --

MIDNIGHT = utc(2025, 2, 14)
BEFORE_MIDNIGHT = MIDNIGHT - timedelta(minutes=1)


@pytest.mark.parametrize("v8", [V8_0, V8_1_2])
async def test_v8_and_mixed_minutes_across_midnight(v8: str) -> None:
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    client = fakeredis.FakeAsyncRedis(server=server, protocol=2)
    reader, derive = Reader(), Deriver("default")
    now = MIDNIGHT.timestamp() + 30  # 00:00:30 UTC: the window is 00:00, 23:59, 23:58
    assert derive(await reader.read(client, now)).job_classes == {}  # baseline: empty

    new, old = SidekiqWriter(sync, v8), SidekiqWriter(sync, V7)
    new.metrics(
        BEFORE_MIDNIGHT, "HardJob", executions=7, failures=1, milliseconds=600,
        histogram={2: 4, 5: 2},
    )  # fmt: skip
    new.metrics(MIDNIGHT, "HardJob", executions=3, milliseconds=90, histogram={1: 3})
    old.metrics(MIDNIGHT, "HardJob", executions=2, milliseconds=40, histogram={0: 2})
    old.metrics(MIDNIGHT, "Billing::InvoiceJob", executions=1, failures=1)  # failed only
    # 8.x also writes 10-minute rollups (`j|250214|0:0`, 72 h): never to be read as a minute.
    sync.hincrby("j|250214|0:0", "HardJob|p", 1000)
    for key in (
        "j|250213|23:59",
        "h|HardJob-13-23:59",
        "j|250214|0:00",
        "h|HardJob-14-0:0",
        "j|20250214|0:0",
        "HardJob-14-00:0",
    ):
        assert sync.exists(key), key

    sample = await reader.read(client, now + 10)
    assert sample.round_trips == 2
    assert {m.key for m in sample.metrics_minutes} == {
        "j|250213|23:59",
        "j|250214|0:00",
        "j|20250214|0:0",
    }
    s = render(derive(sample))
    c = {**T, "class": "HardJob"}
    assert s.value("sidekiq_job_executions_total", **c) == 7 + 3 + 2
    assert s.value("sidekiq_job_failures_total", **c) == 1
    assert s.value("sidekiq_job_duration_seconds_count", **c) == 11
    assert s.value("sidekiq_job_duration_seconds_sum", **c) == pytest.approx(0.73)
    expected = hist(b0=2, b1=3, b2=4, b5=2)
    assert buckets_of(s, "HardJob") == [*cumulative(expected), 11]
    b = {**T, "class": "Billing::InvoiceJob"}
    assert s.value("sidekiq_job_executions_total", **b) == 1
    assert s.value("sidekiq_job_failures_total", **b) == 1
    assert buckets_of(s, "Billing::InvoiceJob") == [0.0] * 26  # failures are not timed
    assert s.value("sidekiq_job_duration_seconds_sum", **b) == 0
    assert s.types["sidekiq_job_duration_seconds"] == "histogram"

    # A flush lands in the 00:00 bucket after its jobs ran (the 8.x family), then re-reads.
    new.metrics(MIDNIGHT, "HardJob", executions=1, milliseconds=200, histogram={6: 1})
    for later in (20, 30, 40):
        s = render(derive(await reader.read(client, now + later)))
        assert s.value("sidekiq_job_executions_total", **c) == 13
        assert s.value("sidekiq_job_duration_seconds_sum", **c) == pytest.approx(0.93)
        assert buckets_of(s, "HardJob") == [*cumulative(hist(b0=2, b1=3, b2=4, b5=2, b6=1)), 12]

    # Ten minutes on, every minute left the window: counters stay, per-minute state is gone.
    before = derive(await reader.read(client, now + 40)).job_classes
    after = derive(await reader.read(client, now + 600))
    assert after.job_classes == before
    assert derive._seen == {}
    await client.aclose()
    sync.close()


def minute_sample(now: float, *classes: ClassMinute) -> Sample:
    start = int(now // 60) * 60
    minutes = (MetricsMinute(f"j|{start}", start, classes),) if classes else ()
    return empty_sample(now, metrics_minutes=minutes)


def test_histogram_one_flush_ahead_keeps_inf_at_or_above_every_bucket() -> None:
    # Sidekiq writes a flush's histograms before its `j|` counts, and we read the counts in
    # the first round trip, the histograms in the second: a flush in between shows 2 more
    # timed jobs (one of them ≥ 335 s) than successes. +Inf must not fall below any bucket.
    now = MIDNIGHT.timestamp() + 5
    derive = Deriver("default")
    derive(minute_sample(now))
    ahead = render(derive(minute_sample(now + 1, ClassMinute("A", 3, 0, 30, hist(b0=4, b25=1)))))
    assert buckets_of(ahead, "A")[-2:] == [4.0, 5.0]  # le=335, +Inf = Σ buckets
    assert ahead.value("sidekiq_job_duration_seconds_count", **T, **{"class": "A"}) == 5
    caught_up = ClassMinute("A", 5, 0, 400_030, hist(b0=4, b25=1))
    s = render(derive(minute_sample(now + 2, caught_up)))
    assert buckets_of(s, "A")[-2:] == [4.0, 5.0]
    assert s.value("sidekiq_job_duration_seconds_sum", **T, **{"class": "A"}) == 400.03


# --- 4. real Sidekiq 7.3.2, a known workload, the real daemon --------------------------------

# Class -> (executions, failures) of the first workload; durations from tests/sidekiq_app.
WORKLOAD = {"fast": 40, "slow": 20, "slow_seconds": 0.3, "medium": 5, "failing": 5, "dead": 1}
WORKLOAD |= {"billing": 3, "wrapped": 2, "wrapped_seconds": 0.05}
EXPECTED = {
    "FastJob": (40, 0),  # sleep 0.01
    "SlowJob": (20, 0),  # sleep 0.3
    "MediumJob": (5, 0),  # sleep 0.2
    "FailingJob": (5, 5),  # raises; retried an hour later
    "DeadJob": (1, 1),  # raises, retry: 0
    "Billing::InvoiceJob": (3, 0),  # sleep 0.01
    "WrappedMailerJob": (2, 0),  # ActiveJob-style `wrapped`, sleep 0.05
}
# The second workload, run while three exporters watch: the first one (running since before
# any job), a restarted one denying FailingJob, one limited to a single class.
SECOND = {"fast": 10, "failing": 2}
HISTOGRAM_KEY = re.compile(r"^(?P<class>.+)-(?P<day>\d\d)-(?P<hour>\d\d):(?P<minute>\d{1,2})$")


@dataclass(frozen=True)
class SidekiqRun:
    """What one real-Sidekiq scenario observed; the Redis stays up for the module."""

    server: RedisServer
    flushed_after: float  # seconds from the end of the first workload to its metrics flush
    truth_before: dict[str, Any]
    scrape: Scrape  # the first exporter, after the first workload
    truth_after: dict[str, Any]
    keys: dict[str, tuple[str, int]]  # every key after the first workload: (type, TTL)
    histograms: dict[str, tuple[bytes | None, list[int]]]  # key -> (GET bytes, BITFIELD_RO)
    first_after_second: Scrape  # the first exporter, after the second workload
    restarted: Scrape  # started after the first workload, deny=FailingJob
    limited: Scrape  # started after the first workload, max=1 class
    restarted_events: list[dict[str, Any]]


def minute_sums(server: RedisServer, minutes: int = 10) -> dict[str, list[int]]:
    """Class -> [p, f, ms] summed over the last `minutes` 7.x minute hashes (spec format)."""
    now = redis_now(server)
    sums: dict[str, list[int]] = {}
    for i in range(minutes):
        t = datetime.fromtimestamp((int(now // 60) - i) * 60, UTC)
        for field, value in hgetall_dict(server.execute("HGETALL", v7_minute(t))).items():
            klass, _, metric = field.rpartition("|")
            slot = {"p": 0, "f": 1, "ms": 2}[metric]
            sums.setdefault(klass, [0, 0, 0])[slot] += int(value)
    return sums


def flushed(server: RedisServer, expected: dict[str, tuple[int, int]]) -> bool:
    sums = minute_sums(server)
    return all(sums.get(k, [0, 0])[:2] == [p, f] for k, (p, f) in expected.items()) and set(
        sums
    ) == set(expected)


def key_facts(server: RedisServer) -> dict[str, tuple[str, int]]:
    """(type, TTL) of every key (the test may SCAN; the exporter never does)."""
    facts: dict[str, tuple[str, int]] = {}
    cursor = "0"
    for _ in range(1000):
        cursor, batch = server.execute("SCAN", cursor, "COUNT", 1000)
        for key in batch:
            facts[key] = (server.execute("TYPE", key), int(server.execute("TTL", key)))
        if cursor == "0":
            break
    return facts


@pytest.fixture(scope="module")
def sidekiq_run() -> Iterator[SidekiqRun]:
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        # Started before any job runs: its first poll (the baseline) sees an empty Redis.
        exporter = stack.enter_context(ExporterProcess(server.url))
        sidekiq = stack.enter_context(
            SidekiqProcess(
                SIDEKIQ_7_3_2,
                server.url,
                queues=("default", "billing_within_5_minutes"),
                concurrency=10,
            )
        )
        enqueue(SIDEKIQ_7_3_2, server.url, **WORKLOAD)
        wait_for(
            lambda: (
                server.execute("LLEN", "queue:default") == 0
                and server.execute("ZCARD", "retry") == 5
                and server.execute("ZCARD", "dead") == 1
            ),
            30,
            0.1,
            "the first workload did not run",
        )
        ran_at = redis_now(server)
        # Metrics reach Redis on the next heartbeat (every 10 s on 7.x), into that minute.
        wait_for(lambda: flushed(server, EXPECTED), 25, 0.2, "no metrics flush")
        flushed_after = redis_now(server) - ran_at
        truth_before = truth(SIDEKIQ_7_3_2, server.url, minutes=10)
        scrape = exporter.scrape_after_polls(2)
        truth_after = truth(SIDEKIQ_7_3_2, server.url, minutes=10)
        keys = key_facts(server)
        histograms = {
            key: (raw_get(server, key), bitfield_ro(server, key))
            for key, (kind, _) in keys.items()
            if kind == "string" and HISTOGRAM_KEY.match(key)
        }

        # Second workload: a restarted exporter (baseline now) and cardinality flags.
        restarted = stack.enter_context(
            ExporterProcess(server.url, args=["--collect.job-classes.deny", "Failing.*"])
        )
        limited = stack.enter_context(
            ExporterProcess(server.url, args=["--collect.job-classes.max", "1"])
        )
        enqueue(SIDEKIQ_7_3_2, server.url, **SECOND)
        second = dict(EXPECTED, FastJob=(50, 0), FailingJob=(7, 7))
        wait_for(lambda: flushed(server, second), 40, 0.2, "no flush of the second workload")
        first_after_second = exporter.scrape_after_polls(2)
        restarted_scrape = restarted.scrape_after_polls(2)
        limited_scrape = limited.scrape_after_polls(2)
        for process in (exporter, restarted, limited):
            assert process.stop() < 5
        sidekiq.stop()
        yield SidekiqRun(
            server=server,
            flushed_after=flushed_after,
            truth_before=truth_before,
            scrape=scrape,
            truth_after=truth_after,
            keys=keys,
            histograms=histograms,
            first_after_second=first_after_second,
            restarted=restarted_scrape,
            limited=limited_scrape,
            restarted_events=restarted.log_events(),
        )


@pytest.mark.integration
def test_known_workload_per_class(sidekiq_run: SidekiqRun) -> None:
    s = sidekiq_run.scrape
    assert s.by_label("sidekiq_job_executions_total", "class", **T) == {
        k: float(p) for k, (p, _) in EXPECTED.items()
    }
    assert s.by_label("sidekiq_job_failures_total", "class", **T) == {
        k: float(f) for k, (_, f) in EXPECTED.items()
    }
    assert s.by_label("sidekiq_job_duration_seconds_count", "class", **T) == {
        k: float(p - f) for k, (p, f) in EXPECTED.items()
    }
    # Durations the jobs sleep put lower bounds on the buckets (`ms` ≥ sleep − 1 ms).
    for klass, floor_ms, runs in (
        ("SlowJob", 300, 20),
        ("MediumJob", 200, 5),
        ("WrappedMailerJob", 50, 2),
        ("FastJob", 10, 40),
    ):
        buckets = dict(zip((*HISTOGRAM_BUCKET_BOUNDS_MS, None), buckets_of(s, klass), strict=True))
        assert all(v == 0 for bound, v in buckets.items() if bound and bound <= floor_ms), klass
        assert buckets[None] == runs, klass
        sum_seconds = s.value("sidekiq_job_duration_seconds_sum", **T, **{"class": klass})
        assert sum_seconds >= runs * (floor_ms - 1) / 1000, klass
    for klass in ("FailingJob", "DeadJob"):  # failures are counted, never timed
        assert buckets_of(s, klass) == [0.0] * 26
        assert s.value("sidekiq_job_duration_seconds_sum", **T, **{"class": klass}) == 0


@pytest.mark.integration
def test_matches_sidekiq_metrics_query_for_the_same_minutes(sidekiq_run: SidekiqRun) -> None:
    metrics = sidekiq_run.truth_before["metrics"]
    assert metrics["available"], metrics
    assert sidekiq_run.truth_after["metrics"]["top_jobs"] == metrics["top_jobs"]  # still
    s = sidekiq_run.scrape
    top = metrics["top_jobs"]
    assert set(top) == set(EXPECTED)
    for klass, result in top.items():
        totals = result["totals"]
        labels = {**T, "class": klass}
        p, f, ms = totals.get("p", 0), totals.get("f", 0), totals.get("ms", 0)
        assert s.value("sidekiq_job_executions_total", **labels) == p, klass
        assert s.value("sidekiq_job_failures_total", **labels) == f, klass
        assert s.value("sidekiq_job_duration_seconds_count", **labels) == p - f, klass
        assert s.value("sidekiq_job_duration_seconds_sum", **labels) == pytest.approx(ms / 1000)
        # Query's per-minute histograms (storage order), summed: every cumulative bucket.
        per_minute = metrics["for_job"][klass]["hist"].values()
        summed = [sum(column) for column in zip(*per_minute, strict=True)]
        assert buckets_of(s, klass) == [*cumulative(summed), p - f], klass
        assert sum(summed) == p - f, klass  # no saturation here: Σ buckets = successes


@pytest.mark.integration
def test_observed_layout_of_sidekiq_7_3_2(sidekiq_run: SidekiqRun) -> None:
    """The key names, TTLs and histogram encoding a real 7.3.2 wrote (§6.3, §6.4, §13.5)."""
    # Metrics reach Redis at the next heartbeat after the jobs ran (10 s on 7.x), not before.
    assert sidekiq_run.flushed_after < SIDEKIQ_7_3_2.beat_seconds + 5
    keys = sidekiq_run.keys
    minute_keys = {k: v for k, v in keys.items() if k.startswith("j|")}
    assert minute_keys
    minutes = []
    for key, (kind, ttl) in minute_keys.items():
        date, _, hour_minute = key[2:].partition("|")
        hour, minute = hour_minute.split(":")
        t = datetime.strptime(date, "%Y%m%d").replace(
            hour=int(hour), minute=int(minute), tzinfo=UTC
        )
        minutes.append(t)
        assert key == v7_minute(t), key  # j|%Y%m%d|%-H:%-M, nothing padded
        assert kind == "hash"
        assert 8 * 3600 - 120 < ttl <= 8 * 3600, (key, ttl)  # SHORT_TERM, 8 h
        assert abs(t.timestamp() - redis_now(sidekiq_run.server)) < 600
    histograms = sidekiq_run.histograms
    timed = {k for k, (p, f) in EXPECTED.items() if p > f}
    assert {HISTOGRAM_KEY.match(k)["class"] for k in histograms} == timed  # type: ignore[index]
    for key, (raw, values) in histograms.items():
        kind, ttl = keys[key]
        assert 8 * 3600 - 120 < ttl <= 8 * 3600, (key, ttl)  # HISTOGRAM_TTL, 8 h
        assert raw is not None
        assert len(raw) % 2 == 0
        assert len(raw) <= 2 * HISTOGRAM_BUCKETS
        assert list(decode.decode_histogram_bytes(raw)) == values, key  # GET = BITFIELD_RO
        # Each histogram belongs to a minute hash of the same flush minute and class.
        match = HISTOGRAM_KEY.match(key)
        assert match is not None
        assert key in {v7_histogram(match["class"], t) for t in minutes}, key
    # Nothing else of the metrics family: no 8.x keys, no hourly/daily rollups (7.x).
    assert not any(k.startswith("h|") for k in keys)
    assert all(k.count("|") == 2 for k in minute_keys)


@pytest.mark.integration
async def test_reader_agrees_with_bitfield_ro_on_real_sidekiq_data(
    sidekiq_run: SidekiqRun,
) -> None:
    server = sidekiq_run.server
    now = redis_now(server)
    sample = await read_once(server.url, Reader(metrics_window_minutes=10), now)
    compared = 0
    for minute in sample.metrics_minutes:
        t = datetime.fromtimestamp(minute.minute_start, UTC)
        for read in minute.classes:
            key = v7_histogram(read.job_class, t)  # what Sidekiq 7.3's own Query reads
            assert read.histogram == tuple(bitfield_ro(server, key)), key
            compared += 1
    assert compared >= len(EXPECTED)
    assert sample.skipped == {}


@pytest.mark.integration
def test_counters_only_grow_and_restart_starts_from_a_baseline(sidekiq_run: SidekiqRun) -> None:
    first = sidekiq_run.first_after_second
    assert first.value("sidekiq_job_executions_total", **T, **{"class": "FastJob"}) == 50
    assert first.value("sidekiq_job_failures_total", **T, **{"class": "FailingJob"}) == 7
    assert first.value("sidekiq_job_executions_total", **T, **{"class": "SlowJob"}) == 20
    # The restarted exporter's first poll was a baseline: it counts only the second workload,
    # and the classes it saw then exist from 0 (so rate() sees their first increase).
    restarted = sidekiq_run.restarted
    executions = restarted.by_label("sidekiq_job_executions_total", "class", **T)
    assert executions == {k: 0.0 for k in EXPECTED if k != "FailingJob"} | {"FastJob": 10.0}
    assert "FailingJob" not in restarted.by_label("sidekiq_job_failures_total", "class", **T)
    assert restarted.value("sidekiq_job_duration_seconds_count", **T, **{"class": "FastJob"}) == 10
    assert restarted.total("sidekiq_exporter_skipped_items_total") == 0  # denied on purpose
    events = [e["event"] for e in sidekiq_run.restarted_events]
    assert "job_metrics_unavailable" not in events


@pytest.mark.integration
def test_class_limit_drops_and_counts_never_merges(sidekiq_run: SidekiqRun) -> None:
    limited = sidekiq_run.limited
    classes = limited.by_label("sidekiq_job_executions_total", "class", **T)
    assert len(classes) == 1
    assert set(classes) <= set(EXPECTED)  # one real class, no made-up "other"
    assert limited.value("sidekiq_exporter_skipped_items_total", **T, reason=CLASS_LIMIT) > 0


# --- 5. real Sidekiq 6.4.1: no metrics ---------------------------------------------------


@pytest.mark.integration
def test_sidekiq_6_4_has_no_job_families_and_says_so_once(redis_server: RedisServer) -> None:
    with ExitStack() as stack:
        exporter = stack.enter_context(ExporterProcess(redis_server.url))
        stack.enter_context(SidekiqProcess(SIDEKIQ_6_4_1, redis_server.url, queues=("default",)))
        enqueue(SIDEKIQ_6_4_1, redis_server.url, fast=3, failing=1)
        wait_for(
            lambda: redis_server.execute("GET", "stat:processed") == "4",
            30,
            0.1,
            "the jobs did not run",
        )
        scrape = exporter.scrape_after_polls(3)
        assert scrape.value("sidekiq_processed_jobs_total", **T) == 4
        assert not scrape.names & JOB_CLASS_FAMILIES
        assert not scrape.text.count("sidekiq_job_")
        exporter.stop()
        events = [e for e in exporter.log_events() if e.get("event") == "job_metrics_unavailable"]
        assert len(events) == 1, events
        assert events[0]["target"] == "default"
        assert "6.4" in events[0]["reason"]
        assert not any(k.startswith("j|") for k in key_facts(redis_server))
