"""Redis cost of one poll: commands, round trips and bytes each way, on a real redis-server.

    .venv/bin/python -m bench.poll_cost            # prints a Markdown table (about 10 s)

Method (the numbers in docs/queue-slas.md come from this script):

1. Start a private `redis-server` (no persistence, loopback) and write a Sidekiq 7.3-shaped
   fixture with `bench.fixtures` (one job per queue; P processes, 5 of whose threads are busy;
   C job classes with per-minute metrics and histograms).
2. Poll it with the daemon's own client (`exporter.connection.create_redis_client`) and
   reader, with the metrics window a 1 s poll interval uses. Two warm-up polls first, so the
   connection set-up is not counted.
3. Read `INFO stats` `total_net_input_bytes` / `total_net_output_bytes` (bytes Redis received
   from / sent to all clients) on a second connection before and after `POLLS` polls; subtract
   the bytes of the `INFO` exchange itself, measured the same way with no poll in between.
   Nothing else talks to this Redis meanwhile, so the rest is the polls' traffic: RESP bytes,
   not counting TCP/IP headers or TLS overhead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis

from bench.fixtures import Fixture, FixtureSpec
from exporter.connection import create_redis_client
from exporter.sidekiq.metrics_window import window_minutes
from exporter.sidekiq.reader import Reader
from exporter.targets import TargetSettings
from tests.support.redis_server import RedisServer

POLLS = 20
POLL_INTERVAL = 1.0

SPECS = (
    FixtureSpec(queues=0, processes=0, classes=0),
    FixtureSpec(queues=10, processes=0, classes=0),
    FixtureSpec(queues=100, processes=0, classes=0),
    FixtureSpec(queues=1000, processes=0, classes=0),
    FixtureSpec(queues=0, processes=10, classes=0),
    FixtureSpec(queues=0, processes=100, classes=0),
    FixtureSpec(queues=0, processes=0, classes=20),
    FixtureSpec(queues=0, processes=0, classes=200),
    FixtureSpec(queues=10, processes=10, classes=20),
    FixtureSpec(queues=100, processes=10, classes=20),
    FixtureSpec(queues=1000, processes=10, classes=20),
    FixtureSpec(queues=1000, processes=100, classes=200),
)


@dataclass(frozen=True)
class PollCost:
    spec: FixtureSpec
    commands: int
    round_trips: int
    bytes_in: float  # to Redis, per poll
    bytes_out: float  # from Redis, per poll
    job_bytes: float  # mean size of one queue's oldest job (what LINDEX returns)


def _net(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("stats")
    return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


async def _measure(url: str, info: redis.Redis) -> tuple[int, int, float, float]:
    """(commands, round trips, bytes in, bytes out) per steady-state poll of `url`."""
    target = TargetSettings(name="cost", url=url, username=None, password=None, key_prefix="")
    client = create_redis_client(target, timeout=60.0)
    reader = Reader(metrics_window_minutes=window_minutes(POLL_INTERVAL))
    try:
        for _ in range(2):  # connect, probe; not counted
            await reader.read(client, time.time())
        # INFO reports the counters as of its own execution: its request is counted, its
        # reply not yet. So b - a is one INFO exchange, and after - b is the polls plus one.
        a = _net(info)
        b = _net(info)
        for _ in range(POLLS):
            sample = await reader.read(client, time.time())
        after = _net(info)
    finally:
        await client.aclose()
    polls_in = after[0] - b[0] - (b[0] - a[0])
    polls_out = after[1] - b[1] - (b[1] - a[1])
    return sample.commands, sample.round_trips, polls_in / POLLS, polls_out / POLLS


def measure(server: RedisServer, spec: FixtureSpec) -> PollCost:
    client = redis.Redis(host=server.host, port=server.port)
    try:
        Fixture(client, spec).build()
        tails = [client.lindex(f"queue:{q.decode()}", -1) for q in client.smembers("queues")]
        job_bytes = sum(len(t or b"") for t in tails) / len(tails) if tails else 0.0
        commands, round_trips, bytes_in, bytes_out = asyncio.run(_measure(server.url, client))
    finally:
        client.close()
    return PollCost(spec, commands, round_trips, bytes_in, bytes_out, job_bytes)


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if value >= 1024 else f"{value:,.0f} B"


def main() -> None:
    with RedisServer() as server:
        rows = [measure(server, spec) for spec in SPECS]
    window = window_minutes(POLL_INTERVAL)
    print(f"Cost per poll, mean of {POLLS} polls each, metrics window {window} min:\n")
    print(
        "| queues | processes | classes | commands | round trips | to Redis | from Redis "
        "| mean job size | from Redis per day at 1 s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        s = row.spec
        per_day = row.bytes_out * 86_400 / 1024**3
        print(
            f"| {s.queues:,} | {s.processes:,} | {s.classes:,} | {row.commands:,} | "
            f"{row.round_trips} | {_kib(row.bytes_in)} | {_kib(row.bytes_out)} | "
            f"{row.job_bytes:,.0f} B | {per_day:,.2f} GiB |"
        )


if __name__ == "__main__":
    main()
