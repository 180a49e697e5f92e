"""Sidekiq-shaped benchmark fixtures, written into a real redis-server with `SidekiqWriter`.

A fixture is Q queues with one job each (plus optional deep queues), P live processes with
work hashes and C job classes with per-minute metrics and histograms, in Sidekiq 7.3's layout
(the generation both Sidekiq's Ruby API in `.cache/` and our reader understand fully).

Writes go through a non-transactional redis-py pipeline flushed every few thousand commands,
so building even the 10,000-queue fixture takes about a second.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from exporter.demo.layout import V7, SidekiqWriter

# Process hashes expire after 60 s in Sidekiq (a beat every 10 s refreshes them). The benchmark
# re-beats before every measurement, and sets a longer TTL so a slow phase cannot lose them.
PROCESS_TTL_SECONDS = 3600
BUSY_PER_PROCESS = 5
QUEUES_PER_PROCESS = 5
# Metric minutes written around "now" so that a reader with a 3-minute window sees 3 × C class
# minutes for the whole of a measurement phase, even one that crosses a minute boundary.
METRIC_MINUTES_BACK = 2
METRIC_MINUTES_AHEAD = 3
FLUSH_EVERY = 5_000


@dataclass(frozen=True)
class FixtureSpec:
    """Sizes of one fixture."""

    queues: int
    processes: int
    classes: int
    deep_queues: int = 0  # extra queues holding `deep_jobs` jobs each
    deep_jobs: int = 100_000

    @property
    def label(self) -> str:
        deep = f" + {self.deep_queues}×{self.deep_jobs:,}" if self.deep_queues else ""
        return f"{self.queues:,} q{deep} / {self.processes:,} p / {self.classes:,} c"

    @property
    def slug(self) -> str:
        deep = f"+{self.deep_queues}x{self.deep_jobs}" if self.deep_queues else ""
        return f"q{self.queues}{deep}-p{self.processes}-c{self.classes}"


def queue_name(index: int) -> str:
    return f"queue_{index:05d}"


def class_name(index: int) -> str:
    return f"Bench::Job{index:04d}"


def identity(index: int) -> str:
    return f"worker-{index:03d}:{1000 + index}:{index:012x}"


class _Batch:
    """A pipeline that flushes itself every FLUSH_EVERY commands."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self.pending = 0

    def tick(self, commands: int = 1) -> None:
        self.pending += commands
        if self.pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.pipe.execute()
        self.pending = 0


@dataclass
class Fixture:
    """A fixture written into one Redis database; `refresh` keeps it alive between phases."""

    client: redis.Redis
    spec: FixtureSpec
    written_minutes: set[int] = field(default_factory=set)
    last_beat: float = 0.0

    @property
    def writer(self) -> SidekiqWriter:
        return SidekiqWriter(self.client, V7)

    def build(self, now: float | None = None) -> float:
        """Flush the database and write the whole fixture; returns seconds taken."""
        started = time.perf_counter()
        now = time.time() if now is None else now
        self.client.flushdb()
        self.written_minutes.clear()
        batch = _Batch(self.client)
        writer = SidekiqWriter(batch.pipe, V7)  # type: ignore[arg-type]
        spec = self.spec
        writer.stats(processed=123_456_789, failed=4_321)
        batch.tick(2)
        for index in range(spec.queues):
            name = queue_name(index)
            job = writer.job(
                class_name(index % max(spec.classes, 1)),
                name,
                enqueued_at=now - index % 600,
                created_at=now - index % 600 - 1,
                jid=f"{index:024x}",
            )
            writer.push(name, job)
            batch.tick(2)
        for deep in range(spec.deep_queues):
            name = f"deep_{deep}"
            batch.pipe.sadd(writer.keys.queues, name)
            chunk: list[str] = []
            for index in range(spec.deep_jobs):
                job = writer.job(
                    class_name(index % max(spec.classes, 1)),
                    name,
                    enqueued_at=now - 3600 + index * 0.01,
                    jid=f"{index:024x}",
                )
                chunk.append(json.dumps(job))
                if len(chunk) == 1000:
                    batch.pipe.lpush(writer.keys.queue(name), *chunk)
                    chunk.clear()
                    batch.tick(1000)
            if chunk:
                batch.pipe.lpush(writer.keys.queue(name), *chunk)
                batch.tick(len(chunk))
        for set_name, count in (("schedule", 50), ("retry", 20), ("dead", 10)):
            for index in range(count):
                score = now + 60 * (index - 2) if set_name != "dead" else now - index
                writer.zadd(set_name, score, writer.job("Bench::Later", jid=f"{index:024x}"))
                batch.tick()
        batch.flush()
        self._beat(now, batch)
        self._write_metrics(now, batch)
        batch.flush()
        return time.perf_counter() - started

    def refresh(self, now: float | None = None, *, beat_after: float = 20.0) -> None:
        """Re-beat the processes (if the last beat is older than `beat_after` seconds) and make
        sure the metric minutes around `now` exist."""
        now = time.time() if now is None else now
        batch = _Batch(self.client)
        if now - self.last_beat >= beat_after:
            self._beat(now, batch)
        self._write_metrics(now, batch)
        batch.flush()

    def _beat(self, now: float, batch: _Batch) -> None:
        """What each process's heartbeat writes: the process hash and its work hash."""
        writer = SidekiqWriter(batch.pipe, V7)  # type: ignore[arg-type]
        keys = writer.keys
        spec = self.spec
        for index in range(spec.processes):
            ident = identity(index)
            served = [
                queue_name((index * QUEUES_PER_PROCESS + k) % max(spec.queues, 1))
                for k in range(QUEUES_PER_PROCESS)
            ]
            writer.process(
                ident,
                beat=now,
                hostname=ident.split(":")[0],
                concurrency=10,
                queues=served,
                busy=BUSY_PER_PROCESS,
                started_at=now - 3600,
            )
            batch.pipe.expire(keys.process(ident), PROCESS_TTL_SECONDS)
            for tid in range(BUSY_PER_PROCESS):
                job = writer.job(
                    class_name((index + tid) % max(spec.classes, 1)),
                    served[0],
                    enqueued_at=now - 5,
                    jid=f"{index:012x}{tid:012x}",
                )
                writer.work(ident, f"t{tid:04x}", served[0], job, run_at=now - tid)
            batch.pipe.expire(keys.work(ident), PROCESS_TTL_SECONDS)
            batch.tick(6 + 2 * BUSY_PER_PROCESS)
        self.last_beat = now

    def _write_metrics(self, now: float, batch: _Batch) -> None:
        """Per-minute counts and histograms for every class, as Sidekiq 7's tracker flushes."""
        if not self.spec.classes:
            return
        writer = SidekiqWriter(batch.pipe, V7)  # type: ignore[arg-type]
        current = int(now // 60) * 60
        for offset in range(-METRIC_MINUTES_BACK, METRIC_MINUTES_AHEAD + 1):
            start = current + 60 * offset
            if start in self.written_minutes:
                continue
            self.written_minutes.add(start)
            minute = datetime.fromtimestamp(start, UTC)
            for index in range(self.spec.classes):
                writer.metrics(
                    minute,
                    class_name(index),
                    executions=20 + index % 7,
                    failures=index % 3,
                    milliseconds=1000 + index,
                    histogram={0: 10, 3: 5, 7: 2},
                )
                batch.tick(9)


def describe(client: redis.Redis) -> dict[str, Any]:
    """Key count and memory of the database, for the report."""
    info = client.info("memory")
    return {"keys": client.dbsize(), "used_memory_human": info.get("used_memory_human")}
