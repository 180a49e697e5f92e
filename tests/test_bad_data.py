"""Bad data, property-based: whatever Sidekiq's Redis holds, a poll succeeds and skips are counted.

Everything the reader parses is fuzzed: queue tails, process `info` and hash fields, work-hash
values, `j|` fields and histogram strings (random bytes and random JSON, big and non-finite
numbers included), sidekiq-cron job hashes (times and cron lines), and every key the reader
touches is given every wrong Redis type.

The world tests go through the whole poll path as the daemon wires it (Reader, Deriver, Poller,
collector, text exposition; tests/support/pipeline.py) on fakeredis, and check each skip reason
against what was planted: items built to be invalid must all be counted, valid ones never,
random ones may be either. One check runs on a real redis-server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from exporter import cardinality, metrics
from exporter.cardinality import LABEL_TOO_LONG
from exporter.model import HISTOGRAM_BUCKETS, ProcessSample, RunningJob
from exporter.sidekiq import decode
from exporter.sidekiq.cron_schedule import UNPARSEABLE_CRON
from exporter.sidekiq.decode import Skip
from exporter.sidekiq.keys import KeyNames
from exporter.sidekiq.reader import PROCESS_FIELDS
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer

KEYS = KeyNames()
SKIP_REASONS = set(decode.REASONS) | set(cardinality.REASONS) | {UNPARSEABLE_CRON}
# Moderate example counts keep this file at a few seconds; no example database in the tree.
FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WORLDS = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ----------------------------------------------------------------------------

BIG_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**30, 10**400, -(10**400)])
NUMBERS = (
    st.integers()
    | BIG_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 1.5, 1e308, -1e308, 5e-324])
)
# Text with lone UTF-16 surrogates too: JSON's "\ud800" decodes to one, which cannot be
# written as UTF-8 (Hypothesis leaves them out of text by default).
TEXT = st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=12)
JSON_SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
NUMERIC_TEXT = (
    st.integers().map(lambda i: str(i).encode())
    | BIG_INTS.map(lambda i: str(i).encode())
    | st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode())
    | st.sampled_from(
        [b"", b"-", b"nan", b"inf", b"-inf", b"1e400", b"9" * 400, b"9" * 5000, b"1_0", b" 7 "]
    )
)
RAW = st.binary(max_size=48) | NUMERIC_TEXT | JSON_VALUES.map(lambda v: dumps(v))


def dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def json_object_or_none(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


NOT_A_JSON_OBJECT = (
    st.binary(max_size=64) | JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(dumps)
).filter(lambda raw: json_object_or_none(raw) is None)
NOT_NUMERIC = st.binary(max_size=16).filter(
    lambda raw: decode.parse_float(raw) is None and decode.parse_int(raw) is None
)
NOT_A_TIME = st.binary(min_size=1, max_size=24).filter(
    lambda raw: decode.cron_enqueue_time(raw) == Skip(decode.INVALID_CRON_JOB)
)
TIMESTAMP_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "enqueued_at": JSON_VALUES,
        "created_at": JSON_VALUES,
        "class": JSON_VALUES,
        "wrapped": JSON_VALUES,
    },
)


def finite_float(value: object) -> bool:
    """True when `value` becomes a finite float (what the text exposition needs)."""
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):
        return False


def assert_renderable(item: object) -> None:
    """Every number and text in a decoded dataclass can be exported."""
    for f in fields(item):  # type: ignore[arg-type]
        value = getattr(item, f.name)
        if isinstance(value, int | float):
            assert finite_float(value), (f.name, value)
        if isinstance(value, str):
            value.encode()  # the exposition is UTF-8: no lone surrogate
        if isinstance(value, dict):
            assert all(finite_float(v) for v in value.values()), (f.name, value)
            for key in value:
                key.encode()


# --- the decoders on their own -------------------------------------------------------------


@FAST
@given(raw=st.none() | RAW | TIMESTAMP_FIELDS.map(dumps))
@example(raw=b"[" * 100_000)  # nesting beyond the recursion limit
@example(raw=b'{"enqueued_at": 1' + b"0" * 400 + b"}")
def test_queue_tail_never_raises(raw: bytes | None) -> None:
    result = decode.oldest_job_timestamp(raw)
    assert result is None or isinstance(result, Skip) or finite_float(result)
    if raw is not None and json_object_or_none(raw) is None:
        assert result == Skip(decode.INVALID_JOB)


PROCESS_INFO = st.fixed_dictionaries(
    {},
    optional={
        "hostname": JSON_VALUES,
        "tag": JSON_VALUES,
        "version": JSON_VALUES,
        "concurrency": JSON_VALUES,
        "started_at": JSON_VALUES,
        "queues": JSON_VALUES | st.lists(JSON_VALUES, max_size=3),
        "capsules": JSON_VALUES
        | st.dictionaries(
            st.text(max_size=4),
            st.fixed_dictionaries(
                {}, optional={"concurrency": JSON_VALUES, "weights": JSON_VALUES}
            ),
            max_size=3,
        ),
    },
)


@FAST
@given(
    info=st.none() | RAW | PROCESS_INFO.map(dumps),
    rest=st.lists(st.none() | RAW, min_size=len(PROCESS_FIELDS) - 1, max_size=6),
)
@example(info=b'{"started_at": 1' + b"0" * 400 + b"}", rest=[None, b"1", b"1", None, b"1", b"1"])
@example(info=b'{"concurrency": 1' + b"0" * 400 + b"}", rest=[None, b"1", b"1", None, b"1", b"1"])
@example(  # lone surrogates in every text that becomes a label
    info=b'{"hostname": "\\ud800", "tag": "a\\udfff", "version": "\\udbff", "queues": ["\\ud801"],'
    b' "capsules": {"x": {"concurrency": 1, "weights": {"\\ud802": 1}}, "y": {"concurrency": 1,'
    b' "weights": {"\\ud803": 1}}}, "started_at": 1755000000.5}',
    rest=[None, b"1", b"1755000000.5", None, b"1", b"1"],
)
def test_process_never_raises(info: bytes | None, rest: list[bytes | None]) -> None:
    result = decode.decode_process("host:1:abc", [info, *rest])
    assert result is None or isinstance(result, Skip | ProcessSample)
    if info is None:
        assert result is None  # a stale member, not an error
    elif json_object_or_none(info) is None:
        assert result == Skip(decode.INVALID_PROCESS)
    if isinstance(result, ProcessSample):
        assert_renderable(result)
        assert all(isinstance(q, str) for q in result.queue_capacity)


WORK_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "queue": JSON_VALUES,
        "run_at": JSON_VALUES,
        "payload": JSON_VALUES | TIMESTAMP_FIELDS | TIMESTAMP_FIELDS.map(json.dumps),
    },
)


@FAST
@given(raw=RAW | WORK_ENTRY.map(dumps))
@example(
    raw=b'{"queue": "q\\ud800", "payload": "{\\"class\\": \\"\\\\udfff\\"}", "run_at": 1700000000}'
)
def test_work_entry_never_raises(raw: bytes) -> None:
    result = decode.decode_work_entry("host:1:abc", raw)
    assert isinstance(result, Skip | RunningJob)
    if json_object_or_none(raw) is None:
        assert result == Skip(decode.INVALID_WORK)
    if isinstance(result, RunningJob):
        assert_renderable(result)


@FAST
@given(st.dictionaries(RAW | st.binary(max_size=8).map(lambda b: b + b"|p"), RAW, max_size=8))
def test_metric_fields_never_raise(fields_: dict[bytes, bytes]) -> None:
    by_class, malformed = decode.decode_metrics_fields(fields_)
    assert 0 <= malformed <= len(fields_)
    # Every field is either counted as malformed or lands in a class: a class comes from at
    # least one well-formed field, and a well-formed field always makes a class.
    well_formed = len(fields_) - malformed
    assert len(by_class) <= well_formed
    assert bool(by_class) == (well_formed > 0)
    for counts in by_class.values():
        assert len(counts) == 3
        assert all(0 <= value < 2**63 for value in counts)


@FAST
@given(raw=st.none() | st.binary(max_size=200))
def test_histogram_string_never_raises(raw: bytes | None) -> None:
    result = decode.decode_histogram_bytes(raw)
    if isinstance(result, Skip):
        assert raw is not None
        assert len(raw) > 2 * HISTOGRAM_BUCKETS
    else:
        assert len(result) == HISTOGRAM_BUCKETS
        assert all(0 <= count < 2**16 for count in result)


# --- whole polls on fakeredis: planted garbage is counted, valid data never ------------------


@dataclass
class Plan:
    """What a world plants: per skip reason, items certain to count and items that may."""

    certain: Counter[str] = field(default_factory=Counter)
    maybe: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, reason: str, *, timestamps: bool = False) -> None:
        """One item of `kind`, skipped as `reason` if bad; one `with timestamps` may instead
        be skipped for an implausible time, if random."""
        if kind == "garbage":
            self.certain[reason] += 1
        elif kind == "random":
            self.maybe[reason] += 1
            if timestamps:
                self.maybe[decode.INVALID_TIMESTAMP] += 1

    def check(self, skipped: dict[str, int]) -> None:
        assert set(skipped) <= SKIP_REASONS, skipped
        for reason in SKIP_REASONS:
            count = skipped.get(reason, 0)
            low, high = self.certain[reason], self.certain[reason] + self.maybe[reason]
            assert low <= count <= high, (reason, count, self.certain, self.maybe)


KIND = st.sampled_from(["valid", "garbage", "random"])
NAME = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=10)
RUN_AT = 1_755_000_000  # a plausible time (whole seconds, as `run_at`)


def valid_info() -> bytes:
    return dumps(
        {"hostname": "h", "started_at": RUN_AT - 60.5, "concurrency": 5, "queues": ["default"]}
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Callable[[redis.Redis, float], None], Plan]:
    """A Sidekiq Redis full of mixed data, and the plan of what must be skipped."""
    plan = Plan()
    writes: list[Callable[[redis.Redis, float], Any]] = []

    for name in draw(st.lists(NAME, max_size=4, unique=True)):
        kind = draw(KIND)
        tail = {
            "valid": st.just(dumps({"class": "J", "enqueued_at": 1_755_000_000.5})),
            "garbage": NOT_A_JSON_OBJECT,
            "random": TIMESTAMP_FIELDS.map(dumps),
        }[kind]
        plan.add(kind, decode.INVALID_JOB, timestamps=True)
        value = draw(tail)
        writes.append(
            lambda c, now, n=name, v=value: (c.sadd("queues", n), c.rpush(f"queue:{n}", v))
        )
    junk_members = draw(st.lists(st.binary(min_size=1, max_size=8), max_size=2))
    if junk_members:  # members with no list behind them (or an unreadable name)
        writes.append(lambda c, now, m=junk_members: c.sadd("queues", *m))

    for index in range(draw(st.integers(0, 3))):
        identity = f"w{index}:{index}:{draw(st.text('abc123', max_size=6))}"
        kind = draw(KIND)
        if kind == "valid":
            hash_fields = {b"info": valid_info(), b"busy": b"1", b"beat": b"1755000000.5"}
        elif kind == "garbage":
            broken = draw(st.sampled_from(["info", "beat", "busy"]))
            hash_fields = {b"info": valid_info(), b"beat": b"1755000000.5"}
            hash_fields[broken.encode()] = draw(
                NOT_A_JSON_OBJECT if broken == "info" else NOT_NUMERIC
            )
        else:
            hash_fields = {b"info": draw(RAW | PROCESS_INFO.map(dumps))}
            for name in PROCESS_FIELDS[1:]:
                field_value = draw(st.none() | RAW)
                if field_value is not None:
                    hash_fields[name.encode()] = field_value
        plan.add(kind, decode.INVALID_PROCESS, timestamps=True)
        work: dict[bytes, bytes] = {}
        if kind == "valid":  # work hashes are only read for processes that decode
            for tid in range(draw(st.integers(0, 3))):
                work_kind = draw(KIND)
                plan.add(work_kind, decode.INVALID_WORK, timestamps=True)
                valid_entry = {
                    "queue": "q",
                    "payload": json.dumps({"class": "J"}),
                    "run_at": RUN_AT,
                }
                work[b"t%d" % tid] = draw(
                    {
                        "valid": st.just(dumps(valid_entry)),
                        "garbage": NOT_A_JSON_OBJECT,
                        "random": WORK_ENTRY.map(dumps),
                    }[work_kind]
                )
        suffix = draw(st.sampled_from([":work", ":workers"]))

        def write_process(
            c: redis.Redis,
            now: float,
            i: str = identity,
            h: dict[bytes, bytes] = hash_fields,
            w: dict[bytes, bytes] = work,
            s: str = suffix,
        ) -> None:
            c.sadd("processes", i)
            c.hset(i, mapping=h)  # type: ignore[arg-type]
            if w:
                c.hset(i + s, mapping=w)  # type: ignore[arg-type]

        writes.append(write_process)

    metric_fields: dict[bytes, bytes] = {}
    histograms: dict[str, bytes] = {}
    for index in range(draw(st.integers(0, 3))):
        job_class = f"C{index}{draw(st.text(max_size=4))}"
        metric_fields[f"{job_class}|p".encode()] = b"%d" % draw(st.integers(0, 2**40))
        field_kind = draw(KIND)
        plan.add(field_kind, decode.INVALID_METRIC)
        metric = draw(st.sampled_from(["f", "ms"]))
        metric_fields[f"{job_class}|{metric}".encode()] = draw(
            {
                "valid": st.integers(0, 2**40).map(lambda i: b"%d" % i),
                "garbage": NOT_NUMERIC | st.integers(max_value=-1).map(lambda i: b"%d" % i),
                "random": NUMERIC_TEXT,
            }[field_kind]
        )
        histogram_kind = draw(KIND)
        plan.add(histogram_kind, decode.INVALID_METRIC)
        histograms[job_class] = draw(
            {
                "valid": st.binary(min_size=0, max_size=2 * HISTOGRAM_BUCKETS),
                "garbage": st.binary(min_size=2 * HISTOGRAM_BUCKETS + 65, max_size=300),
                "random": st.binary(max_size=200),
            }[histogram_kind]
        )
    no_metric = st.binary(max_size=12).filter(lambda b: b"|" not in b).map(lambda b: b + b"#")
    for raw_field in draw(st.lists(no_metric, max_size=2, unique=True)):  # no |p, |f or |ms
        plan.add("garbage", decode.INVALID_METRIC)
        metric_fields[raw_field] = draw(RAW)

    def write_metrics(c: redis.Redis, now: float) -> None:
        minute = datetime.fromtimestamp(int(now // 60) * 60, UTC)
        if metric_fields:
            c.hset(KEYS.metrics_minute_v8(minute), mapping=metric_fields)  # type: ignore[arg-type]
        for job_class, value in histograms.items():
            c.set(KEYS.histogram_v8(job_class, minute), value)

    writes.append(write_metrics)

    for stat in ("stat:processed", "stat:failed"):
        kind = draw(KIND)
        plan.add(kind, decode.INVALID_COUNTER)
        value = draw(
            {
                "valid": st.integers(0, 2**62).map(lambda i: b"%d" % i),
                "garbage": NOT_NUMERIC | st.integers(max_value=-1).map(lambda i: b"%d" % i),
                "random": NUMERIC_TEXT,
            }[kind]
        )
        writes.append(lambda c, now, k=stat, v=value: c.set(k, v))

    for index in range(draw(st.integers(0, 3))):
        time_kind, line_kind = draw(KIND), draw(KIND)
        times = {"valid": st.just(b"2025-02-14 08:00:00 +0000"), "garbage": NOT_A_TIME}
        lines = {"valid": st.just(b"*/5 * * * *"), "garbage": st.just(b"every day at noon")}
        job_fields = {
            b"status": b"enabled",
            b"cron": draw(lines.get(line_kind, RAW)),
            b"last_enqueue_time": draw(times.get(time_kind, RAW)),
        }
        if time_kind == "random":
            job_fields[b"status"] = draw(st.sampled_from([b"enabled", b"disabled"]) | RAW)
        plan.add(time_kind, decode.INVALID_CRON_JOB, timestamps=True)
        # The line is evaluated only for a job that decodes and is enabled.
        if time_kind == "valid":
            plan.add(line_kind, UNPARSEABLE_CRON)
        elif time_kind == "random" and line_kind != "valid":
            plan.maybe[UNPARSEABLE_CRON] += 1
        writes.append(
            lambda c, now, n=f"cron_job:default:job{index}", f=job_fields: (
                c.sadd("cron_jobs:default", n),
                c.hset(n, mapping=f),  # type: ignore[arg-type]
            )
        )

    scores = st.floats(allow_nan=False, allow_infinity=True)
    for zset in ("schedule", "retry", "dead"):
        members = draw(st.dictionaries(st.binary(max_size=16), scores, max_size=3))
        if members and zset != "dead":  # the lowest score of schedule and retry is read
            plan.maybe[decode.INVALID_TIMESTAMP] += 1
        if members:
            writes.append(lambda c, now, k=zset, m=members: c.zadd(k, m))  # type: ignore[misc]
    # Label values over the default limit (1 KiB): a queue name, a job class, a hostname.
    long = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1025)
    if draw(st.booleans()):
        name = draw(long.map(lambda n: n[:2000]))
        plan.add("garbage", LABEL_TOO_LONG)
        job = dumps({"class": "J", "enqueued_at": 1_755_000_000.5})
        writes.append(lambda c, now, n=name, j=job: (c.sadd("queues", n), c.rpush(f"queue:{n}", j)))
    if draw(st.booleans()):
        info = json.loads(valid_info())
        info["hostname"] = draw(long.map(lambda n: n[:2000]))
        plan.add("garbage", LABEL_TOO_LONG)
        hash_fields = {b"info": dumps(info), b"busy": b"0", b"beat": b"1755000000.5"}

        def write_long(c: redis.Redis, now: float, h: dict[bytes, bytes] = hash_fields) -> None:
            c.sadd("processes", "long:1:a")
            c.hset("long:1:a", mapping=h)  # type: ignore[arg-type]

        writes.append(write_long)
    paused = draw(st.lists(st.binary(min_size=1, max_size=8), max_size=3))
    if paused:
        writes.append(lambda c, now, m=paused: c.sadd("paused", *m))

    def write_all(client: redis.Redis, now: float) -> None:
        for write in writes:
            write(client, now)

    return write_all, plan


async def poll_world(server: fakeredis.FakeServer) -> tuple[dict[str, int], int]:
    """One poll through the daemon's wiring; (skipped by reason, series rendered)."""
    client = fakeredis.FakeAsyncRedis(server=server)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        assert await pipeline.poll(), "the poll must succeed whatever the data"
        scrape = pipeline.scrape()  # the text exposition renders (no overflow, no dupes)
        skipped = dict(pipeline.status.skipped_totals)
        rendered = scrape.by_label(
            "sidekiq_exporter_skipped_items_total", "reason", target="default"
        )
        assert rendered == {reason: float(count) for reason, count in skipped.items()}
        assert scrape.value("sidekiq_up", target="default") == 1
        return skipped, len(scrape.samples)


@WORLDS
@given(world=worlds())
def test_any_data_polls_and_every_skip_is_counted_by_reason(
    world: tuple[Callable[[redis.Redis, float], None], Plan],
) -> None:
    write, plan = world
    server = fakeredis.FakeServer()
    with fakeredis.FakeRedis(server=server) as client:
        write(client, time.time())
    skipped, _ = asyncio.run(poll_world(server))
    plan.check(skipped)


# --- wrong key types -----------------------------------------------------------------------

TYPES = ("string", "list", "set", "zset", "hash")


def put(client: redis.Redis, key: str, redis_type: str) -> None:
    """Replace `key` with a small value of `redis_type`."""
    client.delete(key)
    {
        "string": lambda: client.set(key, "x"),
        "list": lambda: client.rpush(key, "x"),
        "set": lambda: client.sadd(key, "x"),
        "zset": lambda: client.zadd(key, {"x": 1}),
        "hash": lambda: client.hset(key, "x", "y"),
    }[redis_type]()


@dataclass(frozen=True)
class Key:
    """A key the reader touches: its Redis type, and how many commands read it per poll."""

    name: str
    right: str
    commands: int
    needs: str | None = None  # counted only if this other key is of the right type


IDENTITY = "w:1:abc"
QUEUE = "default"
JOB_CLASS = "HardJob"
CRON_1_JOB = "cron_job:tick"  # sidekiq-cron 1.x
CRON_2_JOB = "cron_job:default:nightly"  # 2.x


def reader_keys(now: float) -> list[Key]:
    minute = datetime.fromtimestamp(int(now // 60) * 60, UTC)
    metrics = KEYS.metrics_minute_v8(minute)
    return [
        Key("queues", "set", 1),
        Key("processes", "set", 1),
        Key("stat:processed", "string", 1),
        Key("stat:failed", "string", 1),
        Key("schedule", "zset", 3),  # ZCARD, ZRANGE, ZCOUNT
        Key("retry", "zset", 3),
        Key("dead", "zset", 1),
        Key("paused", "set", 1),
        Key(f"queue:{QUEUE}", "list", 2, needs="queues"),  # LLEN, LINDEX
        Key(IDENTITY, "hash", 1, needs="processes"),  # HMGET
        Key(f"{IDENTITY}:work", "hash", 1, needs=IDENTITY),
        Key(f"{IDENTITY}:workers", "hash", 1, needs=IDENTITY),
        Key(metrics, "hash", 1),
        Key(KEYS.histogram_v8(JOB_CLASS, minute), "string", 1, needs=metrics),
        Key(KEYS.leader, "string", 1),
        # A refused SSCAN page ends the set's read: its SCARD is not looked at.
        Key(KEYS.cron_jobs, "set", 1),
        Key(KEYS.cron_namespace("default"), "set", 1),
        Key(CRON_1_JOB, "hash", 1, needs=KEYS.cron_jobs),  # HMGET
        Key(CRON_2_JOB, "hash", 1, needs=KEYS.cron_namespace("default")),
    ]


def write_right(client: redis.Redis, key: Key) -> None:
    """`key` with valid Sidekiq data of its right type."""
    client.delete(key.name)
    job = dumps({"class": "J", "enqueued_at": 1_755_000_000.5})
    if key.name == "queues":
        client.sadd(key.name, QUEUE)
    elif key.name == "processes":
        client.sadd(key.name, IDENTITY)
    elif key.name == "paused":
        client.sadd(key.name, QUEUE)
    elif key.name.startswith("stat:"):
        client.set(key.name, 5)
    elif key.right == "zset":
        client.zadd(key.name, {job: 1_755_000_000})
    elif key.name.startswith("queue:"):
        client.rpush(key.name, job)
    elif key.name == IDENTITY:
        client.hset(key.name, mapping={"info": valid_info(), "busy": 1, "beat": RUN_AT + 0.5})
    elif key.name.startswith(IDENTITY):
        entry = {"queue": QUEUE, "payload": json.dumps({"class": "J"}), "run_at": RUN_AT}
        client.hset(key.name, "tid", dumps(entry))
    elif key.name.startswith("j|"):
        client.hset(key.name, f"{JOB_CLASS}|p", 3)
    elif key.name == KEYS.leader:
        client.set(key.name, IDENTITY)
    elif key.name == KEYS.cron_jobs:
        client.sadd(key.name, CRON_1_JOB)
    elif key.name == KEYS.cron_namespace("default"):
        client.sadd(key.name, CRON_2_JOB)
    elif key.name.startswith("cron_job:"):
        client.hset(key.name, mapping={"status": "enabled", "cron": "* * * * *"})
    else:  # the histogram
        client.set(key.name, b"\x00\x01" * HISTOGRAM_BUCKETS)


def plant(client: redis.Redis, types: dict[str, str | None], now: float) -> int:
    """Write every reader key, wrong-typed where `types` says; the WRONGTYPE replies expected."""
    keys = reader_keys(now)
    for key in keys:
        wrong = types.get(key.name)
        if wrong is None:
            write_right(client, key)
        else:
            put(client, key.name, wrong)
    wrong_keys = {k.name for k in keys if types.get(k.name) is not None}

    def read(key: Key) -> bool:
        parent = next((k for k in keys if k.name == key.needs), None)
        return parent is None or (parent.name not in wrong_keys and read(parent))

    return sum(k.commands for k in keys if k.name in wrong_keys and read(k))


def wrong_type_choices(now: float) -> st.SearchStrategy[dict[str, str | None]]:
    return st.fixed_dictionaries(
        {
            key.name: st.none() | st.sampled_from([t for t in TYPES if t != key.right])
            for key in reader_keys(now)
        }
    )


_NOW = time.time()


@WORLDS
@given(types=wrong_type_choices(_NOW))
@example(
    types={key.name: "string" if key.right != "string" else "list" for key in reader_keys(_NOW)}
)
def test_wrong_key_types_are_counted_exactly(types: dict[str, str | None]) -> None:
    server = fakeredis.FakeServer()
    with fakeredis.FakeRedis(server=server) as client:
        now = time.time()
        if int(now // 60) != int(_NOW // 60):  # keys are per minute: rename to this minute's
            renames = dict(zip((k.name for k in reader_keys(_NOW)), reader_keys(now), strict=True))
            types = {renames[name].name: t for name, t in types.items()}
        expected = plant(client, types, now)
    skipped, _ = asyncio.run(poll_world(server))
    assert skipped == ({decode.WRONG_TYPE: expected} if expected else {})


@pytest.mark.integration
@pytest.mark.parametrize("wrong", TYPES)
async def test_wrong_key_types_on_real_redis(redis_server: RedisServer, wrong: str) -> None:
    """Every key wrong-typed but the two sets that lead to the rest, then those two as well."""
    with redis.Redis(port=redis_server.port) as client:
        # The planted keys name the current minute: start with enough of it left (≤ 15 s wait).
        left_in_minute = 60 - time.time() % 60
        if left_in_minute < 15:
            await asyncio.sleep(left_in_minute + 0.1)
        now = time.time()
        keys = reader_keys(now)
        entry_points = {"queues", "processes", keys[12].name}  # sets and the j| hash

        def choose(chosen: Iterable[str]) -> dict[str, str | None]:
            names = set(chosen)
            return {
                k.name: (wrong if wrong != k.right else "hash" if k.right != "hash" else "list")
                if k.name in names
                else None
                for k in keys
            }

        for types in (
            choose(k.name for k in keys if k.name not in entry_points),
            choose([k.name for k in keys]),
        ):
            assert int(time.time() // 60) == int(now // 60), "planting took over 15 s"
            expected = plant(client, types, now)
            assert expected >= 13  # see reader_keys(): each wrong key's commands
            url = f"redis://127.0.0.1:{redis_server.port}/0"
            async with Pipeline.build([f"--redis.url={url}", "--poll.interval=1s"]) as pipeline:
                assert await pipeline.poll()
                assert dict(pipeline.status.skipped_totals) == {decode.WRONG_TYPE: expected}
                assert pipeline.scrape().value("sidekiq_up", target="default") == 1


# --- text that UTF-8 cannot carry ----------------------------------------------------------


async def test_lone_surrogates_in_json_never_break_the_exposition() -> None:
    # JSON's "\ud800" is a valid escape that decodes to a lone surrogate, which no UTF-8
    # encoder accepts: in a hostname or a job's queue it failed the whole /metrics render.
    server = fakeredis.FakeServer()
    info = {"hostname": "web-\ud800", "tag": "\udfff", "version": "8.1.7", "started_at": 1.7e9}
    info |= {"concurrency": 5, "queues": ["default", "q\udbff"]}
    entry = {"queue": "q\udbff", "payload": json.dumps({"class": "Job\ud800"}), "run_at": 1.7e9}
    with fakeredis.FakeRedis(server=server) as sync:
        sync.sadd("processes", "w:1:a")
        sync.hset("w:1:a", mapping={"info": json.dumps(info), "busy": 1, "beat": time.time()})
        sync.hset("w:1:a:work", "t1", json.dumps(entry))
    client = fakeredis.FakeAsyncRedis(server=server)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        assert await pipeline.poll()
        pipeline.scrape()  # the text format renders too
        scrape = await pipeline.scrape_openmetrics()
    labels = {"target": "default", "identity": "w:1:a", "hostname": "web-\ufffd\ufffd\ufffd"}
    assert scrape.value("sidekiq_process_busy_workers", **labels, tag="\ufffd" * 3) == 1
    queue = "q" + "\ufffd" * 3
    assert scrape.value("sidekiq_queue_busy_workers", target="default", queue=queue) == 1


# --- the keys of skipped data are logged at debug, never the values -----------------------


async def test_skipped_data_is_logged_by_key_and_reason_never_by_value() -> None:
    secret = "hunter2-do-not-log"
    server = fakeredis.FakeServer()
    now = time.time()
    with fakeredis.FakeRedis(server=server) as sync:
        sync.sadd("queues", "broken")
        sync.rpush("queue:broken", f"not json {secret}")
        sync.set("stat:failed", f"-{secret}")
        sync.sadd("processes", "w:1:a")
        info = {"hostname": "h", "started_at": now, "concurrency": 1, "queues": ["q"]}
        sync.hset("w:1:a", mapping={"info": json.dumps(info), "busy": 0, "beat": now})
        sync.hset("w:1:a:work", "t1", f"{{{secret}")
        minute = datetime.fromtimestamp(int(now // 60) * 60, UTC)
        sync.hset(KEYS.metrics_minute_v8(minute), "Job|p", secret)
    client = fakeredis.FakeAsyncRedis(server=server)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        with capture_logs() as logs:
            assert await pipeline.poll()
    lines = {(e["reason"], e["key"]) for e in logs if e["event"] == "redis_data_skipped"}
    assert lines == {
        (decode.INVALID_JOB, "queue:broken"),
        (decode.INVALID_COUNTER, "stat:failed"),
        (decode.INVALID_WORK, "w:1:a:work"),
        (decode.INVALID_METRIC, KEYS.metrics_minute_v8(minute)),
    }
    assert secret not in repr(logs)


# --- times outside the plausible years ----------------------------------------------------


async def test_implausible_times_make_no_absurd_ages_and_are_counted() -> None:
    # A score of -1e308 in the schedule set was a lag of 1e308 s; a job enqueued in 1970 an
    # age of 56 years. Each such time is skipped and counted; the rest of the data stays.
    server = fakeredis.FakeServer()
    now = time.time()
    with fakeredis.FakeRedis(server=server) as sync:
        sync.zadd("schedule", {b'{"class":"J"}': -1e308})
        sync.zadd("retry", {b'{"class":"J"}': now - 5})
        sync.sadd("queues", "default", "old")
        sync.rpush("queue:default", dumps({"class": "J", "enqueued_at": now - 3}))
        sync.rpush("queue:old", dumps({"class": "J", "enqueued_at": 0.5}))
    client = fakeredis.FakeAsyncRedis(server=server)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        assert await pipeline.poll()
        scrape = await pipeline.scrape_openmetrics()
    t = {"target": "default"}
    assert scrape.value("sidekiq_scheduled_lag_seconds", **t, set="schedule") == 0
    assert scrape.value("sidekiq_scheduled_overdue_jobs", **t, set="schedule") == 1  # still due
    assert 4 < scrape.value("sidekiq_scheduled_lag_seconds", **t, set="retry") < 60
    assert scrape.value("sidekiq_queue_latency_seconds", **t, queue="old") == 0
    assert 2 < scrape.value("sidekiq_queue_latency_seconds", **t, queue="default") < 60
    skipped = scrape.by_label("sidekiq_exporter_skipped_items_total", "reason", **t)
    assert skipped == {decode.INVALID_TIMESTAMP: 2}


# --- negative input never makes a negative counter -----------------------------------------
# OpenMetrics refuses a negative counter (or `_sum`, `_count`, bucket), and its parser then
# rejects the whole response: one bad key would cost Prometheus every series of the exporter.


def _negative_stat(key: str) -> Callable[[redis.Redis, int], None]:
    def write(client: redis.Redis, poll: int) -> None:
        client.set(key, 5 if poll == 0 else -5)

    return write


def _negative_latency(client: redis.Redis, poll: int) -> None:
    # A job enqueued in the future (a producer's clock ahead): a negative latency, never a
    # negative breach time.
    job = {"class": "J", "enqueued_at": time.time() + 3600}
    client.delete("queue:within_1_seconds")
    client.sadd("queues", "within_1_seconds")
    client.rpush("queue:within_1_seconds", dumps(job))


def _negative_job_metrics(client: redis.Redis, poll: int) -> None:
    # Counts that fall below zero (or failures above executions) after a good first poll.
    minute = datetime.fromtimestamp(int(time.time() // 60) * 60, UTC)
    key = KEYS.metrics_minute_v8(minute)
    if poll == 0:
        client.hset(key, mapping={"Job|p": 10, "Job|f": 2, "Job|ms": 500, "Upside|p": 1})
        client.set(KEYS.histogram_v8("Job", minute), b"\x00\x08")
    else:
        client.hset(key, mapping={"Job|p": -5, "Job|f": -3, "Job|ms": -100, "Upside|f": 5})


# Every counter-like family fed by Redis, and what plants negative input for it.
NEGATIVE_INPUT: dict[str, Callable[[redis.Redis, int], None]] = {
    "sidekiq_processed_jobs_total": _negative_stat("stat:processed"),
    "sidekiq_failed_jobs_total": _negative_stat("stat:failed"),
    "sidekiq_queue_sla_breach_seconds_total": _negative_latency,
    "sidekiq_job_executions_total": _negative_job_metrics,
    "sidekiq_job_failures_total": _negative_job_metrics,
    "sidekiq_job_duration_seconds": _negative_job_metrics,
}


def test_every_counter_family_fed_by_redis_has_a_negative_input_case() -> None:
    counters = {row.name for row in metrics.METRICS if row.kind in ("counter", "histogram")}
    own = {row.name for row in metrics.METRICS if row.own}
    assert set(NEGATIVE_INPUT) == counters - own


@pytest.mark.parametrize("family", sorted(NEGATIVE_INPUT))
async def test_negative_input_keeps_openmetrics_valid(family: str) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server)
    async with Pipeline.build(["--poll.interval=1s"], client=client) as pipeline:
        for poll in range(2):  # a good (or baseline) poll, then the negative input
            with fakeredis.FakeRedis(server=server) as sync:
                NEGATIVE_INPUT[family](sync, poll)
            assert await pipeline.poll()
            # The OpenMetrics parser refuses the whole body if any counter is negative.
            scrape = await pipeline.scrape_openmetrics()
            assert scrape.value("sidekiq_up", target="default") == 1
            negative = {k: v for k, v in scrape.samples.items() if v < 0}
            assert not negative
    skipped = dict(pipeline.status.skipped_totals)
    if family in ("sidekiq_processed_jobs_total", "sidekiq_failed_jobs_total"):
        # Skipped and counted, and the series left out rather than shown as a false reset.
        assert skipped == {decode.INVALID_COUNTER: 1}
        assert scrape.get(family, target="default") is None
    elif family == "sidekiq_queue_sla_breach_seconds_total":
        assert scrape.value(family, target="default", queue="within_1_seconds") == 0
    else:
        assert skipped == {decode.INVALID_METRIC: 3}
