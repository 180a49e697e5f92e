"""Times our poll (`Reader.read` + `Deriver`, on the client the daemon builds, wall and CPU) and
our `/metrics` render in-process, no HTTP: what the daemon renders per poll (the exposition
writer, both formats and OpenMetrics' gzip part), next to prometheus_client's render of the same
collector (the daemon before)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from unittest import mock

from prometheus_client import CollectorRegistry, generate_latest

from exporter.clock import SystemClock
from exporter.collector import SidekiqCollector
from exporter.connection import create_redis_client
from exporter.derive import DeriveConfig, Deriver
from exporter.model import Sample, Snapshot
from exporter.resp import Command, ReadBudget
from exporter.sidekiq import reader as reader_module
from exporter.sidekiq.reader import Reader
from exporter.store import Store, TargetStatus
from exporter.targets import TargetSettings


@dataclass(frozen=True)
class PollTimes:
    """Per-poll wall and CPU seconds, plus what one poll did."""

    wall: list[float]
    cpu: list[float]
    round_trips: int
    commands: int
    queues: int
    processes: int
    running_jobs: int
    class_minutes: int


def target(url: str) -> TargetSettings:
    return TargetSettings(name="bench", url=url, username=None, password=None, key_prefix="")


async def _time_polls(
    url: str, min_iterations: int, budget: float, warmup: int, fresh_reader: bool
) -> PollTimes:
    client = create_redis_client(target(url), timeout=60.0)
    reader = Reader(metrics_window_minutes=3)
    deriver = Deriver("bench", DeriveConfig(metrics_window_minutes=3))
    wall: list[float] = []
    cpu: list[float] = []
    sample: Sample | None = None
    try:
        for _ in range(warmup):
            deriver(await reader.read(client, time.time()))
        deadline = time.perf_counter() + budget
        while len(wall) < min_iterations or time.perf_counter() < deadline:
            if fresh_reader:  # nothing from the last poll to reuse: as if every reply changed
                reader = Reader(metrics_window_minutes=3)
            w0, c0 = time.perf_counter(), time.process_time()
            sample = await reader.read(client, time.time())
            deriver(sample)
            c1, w1 = time.process_time(), time.perf_counter()
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
            if len(wall) >= 10 * min_iterations:
                break
    finally:
        await client.aclose()
    assert sample is not None
    return PollTimes(
        wall=wall,
        cpu=cpu,
        round_trips=sample.round_trips,
        commands=sample.commands,
        queues=len(sample.queues),
        processes=len(sample.processes),
        running_jobs=len(sample.running_jobs),
        class_minutes=sum(len(m.classes) for m in sample.metrics_minutes),
    )


def time_polls(
    url: str,
    *,
    min_iterations: int = 15,
    budget: float = 2.0,
    warmup: int = 3,
    fresh_reader: bool = False,
) -> PollTimes:
    """Poll `url` repeatedly on one connection (as the daemon does) and time each poll; with
    `fresh_reader`, each poll by a new `Reader`, which has no request bytes or decoded replies
    of an earlier poll to reuse (the cost when every reply differs from the last poll's)."""
    return asyncio.run(_time_polls(url, min_iterations, budget, warmup, fresh_reader))


async def _capture(url: str) -> list[list[Command]]:
    """The command batches of one poll, one list per round trip, exactly as the reader sent them."""
    batches: list[list[Command]] = []
    original = reader_module.round_trip

    async def recording(
        client: object,
        commands: Sequence[Command],
        packed: bytes | None = None,
        budget: ReadBudget | None = None,
    ) -> list[object]:
        batches.append(list(commands))
        return await original(client, commands, packed, budget)  # type: ignore[arg-type]

    client = create_redis_client(target(url), timeout=60.0)
    try:
        with mock.patch.object(reader_module, "round_trip", recording):
            await Reader(metrics_window_minutes=3).read(client, time.time())
    finally:
        await client.aclose()
    return batches


def capture_commands(url: str) -> list[list[Command]]:
    """The commands one poll of `url` sends, grouped by round trip (for the floor)."""
    return asyncio.run(_capture(url))


@dataclass(frozen=True)
class _CollectorSettings:
    poll_interval: float = 10.0
    collect_processes: bool = True


@dataclass(frozen=True)
class RenderTimes:
    series: int
    body_bytes: int  # the text format
    openmetrics_gzip_bytes: int  # the gzip-ready OpenMetrics part the daemon keeps
    collect: list[float]  # SidekiqCollector.collect alone (prometheus_client's families)
    render: list[float]  # generate_latest: collect + text format (the daemon before)
    written: list[float]  # the exposition writer: both formats, label strings kept
    published: list[float]  # what the daemon renders per poll: `written` + OpenMetrics' gzip


async def _snapshot(url: str) -> Snapshot:
    client = create_redis_client(target(url), timeout=60.0)
    try:
        sample = await Reader(metrics_window_minutes=3).read(client, time.time())
    finally:
        await client.aclose()
    return Deriver("bench", DeriveConfig(metrics_window_minutes=3))(sample)


def time_render(url: str, repeats: int = 10) -> RenderTimes:
    """In-process `/metrics` render of one real snapshot of `url`, without HTTP."""
    # Imported here: `bench.baseline` runs `time_polls` on older copies of `exporter/`.
    from exporter.exposition import ExpositionWriter
    from exporter.render_cache import Writable, rendered

    snapshot = asyncio.run(_snapshot(url))
    store = Store(["bench"])
    now = time.time()
    store.publish(
        replace(
            TargetStatus.initial("bench"),
            snapshot=snapshot,
            snapshot_completed_at=now,
            polls_success=1,
            last_poll_duration_seconds=0.01,
            last_success_timestamp=now,
            last_round_trips=snapshot.sample.round_trips,
            up=True,
        )
    )
    registry = CollectorRegistry(auto_describe=False)
    collector = SidekiqCollector(store, _CollectorSettings(), SystemClock())
    registry.register(collector)
    body = generate_latest(registry)
    key, state = collector.pin()
    assert isinstance(state, Writable)
    writer = ExpositionWriter()  # as the daemon's: label strings kept from poll to poll
    exposition = state.write(writer)
    if exposition.text != body:
        raise AssertionError("the exposition writer's text differs from prometheus_client's")
    collect: list[float] = []
    render: list[float] = []
    written: list[float] = []
    published: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _family in collector.collect():
            pass
        collect.append(time.perf_counter() - started)
        started = time.perf_counter()
        generate_latest(registry)
        render.append(time.perf_counter() - started)
        started = time.perf_counter()
        state.write(writer)
        written.append(time.perf_counter() - started)
        started = time.perf_counter()
        part = rendered(key, state.write(writer))
        published.append(time.perf_counter() - started)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return RenderTimes(
        series=series,
        body_bytes=len(body),
        openmetrics_gzip_bytes=len(part.deflated.blocks),
        collect=collect,
        render=render,
        written=written,
        published=published,
    )
