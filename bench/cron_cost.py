"""What sidekiq-cron costs a poll, and what the namespace scan costs Redis, on a real redis-server.

    .venv/bin/python -m bench.cron_cost            # prints two Markdown tables (about 1 minute)

Method (the numbers in docs/cron.md come from this script):

1. Poll cost: on a private `redis-server` (no persistence, loopback), J sidekiq-cron 2.x jobs
   spread over N namespaces (exporter/demo/layout.py), polled by the daemon's reader and
   deriver (limit 500, as the flag's default). After a warm-up (the scan finds the namespaces,
   every tick computed once), `POLLS` polls: commands, round trips, bytes each way per poll
   (`INFO stats` before and after, less the `INFO` exchange itself), and the exporter's CPU
   time per poll (reader + deriver, `time.process_time`), cron on and off.
2. Scan cost: K keys of other kinds plus one namespace set; one full pass of the scan as the
   reader sends it (`SCAN cursor MATCH cron_jobs:* TYPE set COUNT n`, the reader's n and ten
   times it): pages, and the time Redis spent per page (`INFO commandstats`, `cmdstat_scan`
   `usec` / `calls`), that is how long one page blocks Redis.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis

from exporter.cardinality import CronJobSelector
from exporter.connection import create_redis_client
from exporter.demo.layout import V7, SidekiqWriter
from exporter.derive import Deriver
from exporter.sidekiq.cron_namespaces import SCAN_PAGE_KEYS
from exporter.sidekiq.reader import Reader
from exporter.targets import TargetSettings
from tests.support.redis_server import RedisServer

POLLS = 50
POLL_SPECS = ((0, 0), (20, 1), (100, 5), (500, 20), (2_000, 50))  # (jobs, namespaces)
SCAN_KEYS = (10_000, 100_000, 1_000_000)
SCAN_COUNTS = (SCAN_PAGE_KEYS, 100_000)  # the reader's, and ten times as many


@dataclass(frozen=True)
class PollCost:
    jobs: int
    namespaces: int
    cron: bool
    commands: int
    round_trips: int
    bytes_in: float
    bytes_out: float
    cpu_ms: float
    skipped: int


def _net(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("stats")
    return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


async def _poll_cost(
    url: str, info: redis.Redis, jobs: int, namespaces: int, cron: bool
) -> PollCost:
    target = TargetSettings(name="cost", url=url, username=None, password=None, key_prefix="")
    client = create_redis_client(target, timeout=60.0)
    reader = Reader(collect_cron=cron, cron_jobs=CronJobSelector(limit=500))
    derive = Deriver("cost")
    try:
        for _ in range(3):  # connect, the scan's pass, the first ticks; not counted
            derive(await reader.read(client, time.time()))
        a = _net(info)
        b = _net(info)
        cpu = time.process_time()
        for _ in range(POLLS):
            snapshot = derive(await reader.read(client, time.time()))
        cpu = time.process_time() - cpu
        after = _net(info)
    finally:
        await client.aclose()
    sample = snapshot.sample
    return PollCost(
        jobs,
        namespaces,
        cron,
        sample.commands,
        sample.round_trips,
        (after[0] - b[0] - (b[0] - a[0])) / POLLS,
        (after[1] - b[1] - (b[1] - a[1])) / POLLS,
        cpu / POLLS * 1000,
        sum(sample.skipped.values()),
    )


def poll_costs() -> list[PollCost]:
    rows = []
    for jobs, namespaces in POLL_SPECS:
        with RedisServer() as server:
            client = redis.Redis(host=server.host, port=server.port)
            writer = SidekiqWriter(client, V7)
            now = time.time()
            for index in range(jobs):
                namespace = f"ns{index % namespaces}"
                writer.cron_job(f"job{index}", "*/5 * * * *", namespace=namespace, last_enqueue=now)
            for cron in (True, False):
                rows.append(asyncio.run(_poll_cost(server.url, client, jobs, namespaces, cron)))
            client.close()
    return rows


def scan_cost(keys: int, count: int) -> tuple[int, float, float]:
    """(pages of one pass, Redis µs per page, Redis ms for the pass) over `keys` other keys."""
    with RedisServer() as server:
        client = redis.Redis(host=server.host, port=server.port)
        pipe = client.pipeline(transaction=False)
        for index in range(keys):
            pipe.set(f"unique:lock:{index}", "1")  # what fills a Sidekiq Redis: locks, caches
            if index % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
        client.sadd("cron_jobs:default", "cron_job:default:tick")
        client.config_resetstat()
        cursor, pages, found = 0, 0, []
        while True:
            cursor, page = client.scan(cursor, match="cron_jobs:*", count=count, _type="set")
            pages += 1
            found += page
            if cursor == 0:
                break
        assert found == [b"cron_jobs:default"], found
        stats = client.info("commandstats")["cmdstat_scan"]
        client.close()
    return pages, float(stats["usec_per_call"]), float(stats["usec"]) / 1000


def _size(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if value >= 1024 else f"{value:,.0f} B"


def main() -> None:
    rows = poll_costs()
    print(f"Cost per poll with sidekiq-cron 2.x jobs, mean of {POLLS} polls (limit 500):\n")
    print(
        "| jobs | namespaces | cron | commands | round trips | to Redis | from Redis "
        "| exporter CPU per poll | skipped |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.jobs:,} | {r.namespaces} | {'on' if r.cron else 'off'} | {r.commands:,} | "
            f"{r.round_trips} | {_size(r.bytes_in)} | {_size(r.bytes_out)} | "
            f"{r.cpu_ms:.2f} ms | {r.skipped:,} |"
        )
    print("\nOne pass of the namespace scan, once a minute at most:\n")
    print("| other keys | `COUNT` | pages (polls) | Redis time per page | Redis time per pass |")
    print("|---:|---:|---:|---:|---:|")
    for keys in SCAN_KEYS:
        for count in SCAN_COUNTS:
            pages, per_page, total = scan_cost(keys, count)
            print(f"| {keys:,} | {count:,} | {pages} | {per_page / 1000:.1f} ms | {total:.1f} ms |")


if __name__ == "__main__":
    main()
