"""A bounded soak: 10,000 polls against a real redis-server whose data changes between polls.

Queues, processes (with running jobs) and job classes appear and disappear between every two
polls; the poll path is the daemon's own (Reader, Deriver, Poller, collector; wired by
`cli.build_pollers`, see tests/support/pipeline.py), run back to back with no sleep. Checked:
every poll succeeds; asyncio tasks, Redis connections (`CLIENT LIST`) and file descriptors are
the same at the end as after the warm-up; the exporter's own state and its live objects do not
grow with the number of polls. RSS at start and end is measured and printed (run with `-s`).

Bounded in count (POLLS) and in time (TIME_BUDGET): on a machine too slow for all polls in the
budget, the checks run over the polls that fit, which must still be most of them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis

from exporter.derive import Deriver
from exporter.sidekiq.keys import KeyNames
from tests.support.pipeline import Pipeline
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

POLLS = 10_000
WARM_UP = 1_000  # counts are taken after this many polls, and compared with the end
TIME_BUDGET = 120.0  # seconds for the whole loop
MIN_POLLS = 3_000  # at least this many must fit in the budget
RENDER_EVERY = 50  # polls between two renders of /metrics
QUEUE_NAMES = 200  # queue names rotate through this many ...
LIVE_QUEUES = 60  # ... with this many existing at a time
QUEUES_MAX = 50  # so the queue limit drops some, and which ones changes as they rotate
PROCESS_NAMES = 40
LIVE_PROCESSES = 12
CLASS_NAMES = 20  # job classes rotate through this many (each minute's metrics are re-read)
KEYS = KeyNames()


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def redis_clients(server: RedisServer) -> int:
    """Connections to Redis other than the one asking."""
    return len(str(server.execute("CLIENT", "LIST")).strip().splitlines()) - 1


def exporter_objects() -> Counter[str]:
    """Live objects per class defined in the `exporter` package."""
    gc.collect()
    return Counter(
        type(o).__qualname__
        for o in gc.get_objects()
        if str(getattr(type(o), "__module__", "")).startswith("exporter")
    )


def deriver_state(deriver: Deriver) -> dict[str, int]:
    """Sizes of everything the Deriver keeps between polls (its private attributes)."""
    return {
        name: len(value)
        for name, value in vars(deriver).items()
        if isinstance(value, dict | list | set)
    }


@dataclass
class Measure:
    polls: int
    tasks: int
    clients: int
    fds: int
    rss: int
    objects: Counter[str]
    state: dict[str, int]


class Churn:
    """Changes the data set before every poll: one queue, one process, one class in, one out."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def step(self, i: int, now: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        new_queue, old_queue = f"q{i % QUEUE_NAMES}", f"q{(i - LIVE_QUEUES) % QUEUE_NAMES}"
        pipe.srem(KEYS.queues, old_queue)
        pipe.delete(KEYS.queue(old_queue))
        job = {"class": f"C{i % CLASS_NAMES}", "enqueued_at": now - (i % 17)}
        pipe.sadd(KEYS.queues, new_queue)
        pipe.lpush(KEYS.queue(new_queue), json.dumps(job))

        new_process = f"host:{i % PROCESS_NAMES}:abcdef"
        old_process = f"host:{(i - LIVE_PROCESSES) % PROCESS_NAMES}:abcdef"
        pipe.srem(KEYS.processes, old_process)
        pipe.delete(KEYS.process(old_process), KEYS.work(old_process))
        info = {"hostname": "host", "started_at": now - 60, "queues": [new_queue, "extra"]}
        pipe.sadd(KEYS.processes, new_process)
        pipe.hset(
            KEYS.process(new_process),
            mapping={"info": json.dumps(info), "busy": 1, "beat": now, "concurrency": 5},
        )
        work = {"queue": new_queue, "payload": json.dumps(job), "run_at": int(now) - 3}
        pipe.hset(KEYS.work(new_process), "tid", json.dumps(work))

        minute = datetime.fromtimestamp(int(now // 60) * 60, UTC)
        job_class = f"C{i % CLASS_NAMES}"
        pipe.hincrby(KEYS.metrics_minute_v8(minute), f"{job_class}|p", 1)
        pipe.hincrby(KEYS.metrics_minute_v8(minute), f"{job_class}|ms", 25)
        pipe.bitfield(KEYS.histogram_v8(job_class, minute)).incrby("u16", "#1", 1).execute()
        pipe.expire(KEYS.metrics_minute_v8(minute), 300)
        pipe.incr(KEYS.processed)
        pipe.execute()


async def test_ten_thousand_polls_leak_nothing(redis_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    argv = [f"--redis.url={url}", "--poll.interval=1s", f"--collect.queues.max={QUEUES_MAX}"]
    with redis.Redis(port=redis_server.port) as mutator:
        churn = Churn(mutator)
        async with Pipeline.build(argv) as pipeline:
            deriver, selector = pipeline.deriver, pipeline.reader.queues
            started = time.monotonic()
            deadline = started + TIME_BUDGET
            rss_start = rss_bytes()

            def measure(polls: int) -> Measure:
                return Measure(
                    polls=polls,
                    tasks=len(asyncio.all_tasks()),
                    clients=redis_clients(redis_server),
                    fds=open_fds(),
                    rss=rss_bytes(),
                    objects=exporter_objects(),
                    state=deriver_state(deriver),
                )

            warm: Measure | None = None
            polls = 0
            while polls < POLLS and time.monotonic() < deadline:
                churn.step(polls, time.time())
                assert await pipeline.poll(), f"poll {polls} failed"
                polls += 1
                if polls % RENDER_EVERY == 0:
                    scrape = pipeline.scrape()
                    queues = scrape.by_label("sidekiq_queue_enqueued_jobs", "queue")
                    assert len(queues) <= QUEUES_MAX
                if polls == WARM_UP:
                    warm = measure(polls)
            elapsed = time.monotonic() - started
            end = measure(polls)
            status = pipeline.status

    assert warm is not None
    assert polls >= MIN_POLLS, f"only {polls} polls in {TIME_BUDGET}s"
    print(  # the numbers for the record (pytest -s)
        f"\nsoak: {polls} polls in {elapsed:.1f}s ({elapsed / polls * 1000:.2f} ms/poll); "
        f"RSS start {rss_start / 2**20:.1f} MiB, after warm-up {warm.rss / 2**20:.1f} MiB, "
        f"end {end.rss / 2**20:.1f} MiB; tasks {warm.tasks}->{end.tasks}, "
        f"Redis clients {warm.clients}->{end.clients}, fds {warm.fds}->{end.fds}; "
        f"exporter objects {sum(warm.objects.values())}->{sum(end.objects.values())}; "
        f"deriver state {end.state}; skipped {dict(status.skipped_totals)}; "
        f"objects grown {dict(end.objects - warm.objects)}, "
        f"shrunk {dict(warm.objects - end.objects)}"
    )
    assert (status.polls_success, status.polls_error) == (polls, 0)
    assert end.tasks == warm.tasks
    assert end.clients == warm.clients == 2  # the exporter's one connection, and the mutator's
    assert end.fds == warm.fds
    assert end.rss - warm.rss < 32 * 2**20  # generous: a leak of one sample per poll is more
    # The exporter's state is bounded by the data, not by the number of polls.
    assert len(selector.exported) <= QUEUES_MAX
    assert end.state.get("_totals", 0) <= CLASS_NAMES
    for name, size in end.state.items():
        assert size <= max(warm.state.get(name, 0) * 2, CLASS_NAMES), (name, size)
    # Same data set shape at both points: live objects of our own types do not pile up.
    for kind, count in end.objects.items():
        assert count <= warm.objects.get(kind, 0) * 1.5 + 50, (kind, warm.objects[kind], count)
    assert status.skipped_totals.get("queue_limit", 0) > 0
