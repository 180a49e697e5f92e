"""`/metrics` render cache: the Sidekiq part rendered once per store state and format, the
process part on every scrape; invalidation by publish and by the staleness deadline."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import SidekiqCollector
from exporter.exposition import Render, Sink
from exporter.gzip_join import crc32_combine
from exporter.model import STALE_AFTER_INTERVALS, QueueSample, Snapshot
from exporter.render_cache import (
    MAX_FORMATS,
    RenderCache,
    RenderRegistry,
    join_bodies,
)
from exporter.settings import Settings
from exporter.store import Store, TargetStatus
from exporter.targets import build_target
from exporter.web.app import RENDER_CACHE_KEY, create_app
from tests.support.samples import empty_sample

Client = TestClient[web.Request, web.Application]

NOW = 1_755_450_000.0
INTERVAL = 10.0
DEADLINE = NOW + STALE_AFTER_INTERVALS * INTERVAL  # still fresh at, stale after
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


@dataclass
class FakeClock:
    now: float = NOW + 1

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def make_settings() -> Settings:
    return Settings(
        targets=(build_target(name="main", url="redis://redis.local:6379/0"),),
        poll_interval=INTERVAL,
        poll_timeout=8.0,
        listen_host="127.0.0.1",
        listen_port=0,
        telemetry_path="/metrics",
        log_level="info",
        log_format="json",
        collect_processes=True,
    )


def make_status(processed: int = 1000, completed_at: float = NOW) -> TargetStatus:
    queues = (QueueSample("default", 5, NOW - 42, False), QueueSample("low", 0, None, False))
    sample = empty_sample(NOW, processed=processed, failed=7, queues=queues)
    snapshot = Snapshot("main", sample, {}, False, {}, {}, ())
    return replace(
        TargetStatus.initial("main"),
        snapshot=snapshot,
        snapshot_completed_at=completed_at,
        polls_success=1,
        last_poll_duration_seconds=0.01,
        last_success_timestamp=completed_at,
        last_round_trips=2,
        up=True,
    )


class CountingCollector(SidekiqCollector):
    """The real collector, counting its renders by the exposition writer (and the states they
    were of), and prometheus_client's collects; optionally holding renders until released."""

    def __init__(self, store: Store, settings: Settings, clock: FakeClock) -> None:
        super().__init__(store, settings, clock)
        self.renders = 0
        self.rendered: list[Sequence[TargetStatus]] = []  # the statuses of each render
        self.collects = 0
        self.threads: set[int] = set()
        self.hold: threading.Event | None = None
        self.started = threading.Event()
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        self.collects += 1
        return super().collect()

    def _build(self, f: Sink, statuses: Sequence[TargetStatus], fresh: Sequence[bool]) -> None:
        if isinstance(f, Render):
            self.renders += 1
            self.rendered.append(statuses)
            self.threads.add(threading.get_ident())
            self.started.set()
            if self.hold is not None:
                assert self.hold.wait(5)
        if self.fail:
            raise RuntimeError("render failed")
        super()._build(f, statuses, fresh)


class ScrapeCounter:
    """A live collector whose value changes on every collect (as process_cpu_seconds does)."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("test_scrape_number", "Collects so far.", value=next(self.count))


@dataclass
class Rig:
    store: Store
    clock: FakeClock
    collector: CountingCollector
    registry: RenderRegistry
    cache: RenderCache | None = None  # the app's


def make_rig() -> Rig:
    settings, store, clock = make_settings(), Store(["main"]), FakeClock()
    store.publish(make_status())
    registry = RenderRegistry(auto_describe=False, support_collectors_without_names=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(ScrapeCounter())
    collector = CountingCollector(store, settings, clock)
    registry.register(collector)
    return Rig(store, clock, collector, registry)


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Rig, Client]]:
    rig = make_rig()
    app = create_app(make_settings(), rig.registry, rig.store)
    rig.cache = app[RENDER_CACHE_KEY]
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield rig, client
    await client.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sidekiq_part(body: str) -> str:
    """The lines of the cached part (everything but process_*, python_info and the counter)."""
    live = ("process_", "python_", "test_scrape_")
    return "".join(
        line
        for line in body.splitlines(keepends=True)
        if not line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(live)
    )


UP = ("sidekiq_up", (("target", "main"),))
PROCESSED = ("sidekiq_processed_jobs_total", (("target", "main"),))
SCRAPE = ("test_scrape_number", ())


async def scrape(client: Client, **kwargs: object) -> str:
    response = await client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status == 200
    return await response.text()


async def test_unchanged_store_is_rendered_once(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    first = await scrape(client)
    second = await scrape(client)
    assert (r.collector.renders, r.collector.collects) == (1, 0)
    assert sidekiq_part(first) == sidekiq_part(second)  # the very same bytes
    assert "sidekiq_queue_enqueued_jobs" in sidekiq_part(first)
    # The live part is rendered per scrape: its value moved, process_* and python_info are there.
    before, after = samples(first), samples(second)
    assert after[SCRAPE] == before[SCRAPE] + 1
    assert any(name.startswith("process_") for name, _ in after)
    assert any(name == "python_info" for name, _ in after)
    assert r.collector.threads  # rendered in a worker thread, not on the event loop
    assert threading.get_ident() not in r.collector.threads


async def test_publish_invalidates(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    assert samples(await scrape(client))[PROCESSED] == 1000
    r.store.publish(make_status(processed=1500))
    assert samples(await scrape(client))[PROCESSED] == 1500
    assert r.collector.renders == 2
    await scrape(client)
    assert r.collector.renders == 2


async def test_staleness_deadline_invalidates(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    assert samples(await scrape(client))[UP] == 1
    r.clock.now = DEADLINE  # the last instant the snapshot is fresh: same state, cached
    fresh = samples(await scrape(client))
    assert (fresh[UP], r.collector.renders) == (1, 1)
    r.clock.now = DEADLINE + 0.001  # no publish, but now stale: rendered again
    stale = samples(await scrape(client))
    assert (stale[UP], r.collector.renders) == (0, 2)
    assert PROCESSED not in stale  # a stale target's Sidekiq families are dropped
    r.clock.now = DEADLINE + 60
    await scrape(client)
    assert r.collector.renders == 2  # stale and staying stale: cached
    r.clock.now = NOW + 5  # the wall clock stepped back: fresh again, rendered as such
    assert samples(await scrape(client))[UP] == 1
    assert r.collector.renders == 3


async def test_openmetrics_has_one_eof_and_parses(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    bodies = [await scrape(client, headers=OPENMETRICS) for _ in range(2)]
    assert (r.collector.renders, r.collector.collects) == (1, 0)
    for body in bodies:
        assert body.count("# EOF") == 1
        assert body.endswith("\n# EOF\n")
        families = {f.name: f for f in om_parser.text_string_to_metric_families(body)}
        assert {"process_cpu_seconds", "python_info", "sidekiq_up", "test_scrape_number"} <= set(
            families
        )
    assert sidekiq_part(bodies[0]) == sidekiq_part(bodies[1])
    # Text and OpenMetrics are two formats of one state, written by one render.
    text = await scrape(client)
    assert "# EOF" not in text
    assert samples(text)[UP] == 1
    await scrape(client)
    await scrape(client, headers=OPENMETRICS)
    assert r.collector.renders == 1


async def test_gzip(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    formats = (
        ({}, text_string_to_metric_families),
        (OPENMETRICS, om_parser.text_string_to_metric_families),
    )
    for headers, parse in formats:
        plain = await scrape(client, headers=headers)
        response = await client.get(
            "/metrics", headers={**headers, "Accept-Encoding": "gzip"}, auto_decompress=False
        )
        assert response.headers["Content-Encoding"] == "gzip"
        # One gzip member, nothing after it (the parts compressed at render are one stream).
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        body = inflate.decompress(await response.read()).decode()
        assert (inflate.eof, inflate.unused_data) == (True, b"")
        assert sidekiq_part(body) == sidekiq_part(plain)
        assert {"sidekiq_up", "python_info"} <= {family.name for family in parse(body)}
    assert r.collector.renders == 1  # one render: both formats and OpenMetrics' gzip


async def test_name_filter_skips_the_cache(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    await scrape(client)
    for _ in range(2):
        text = await scrape(client, params=[("name[]", "sidekiq_up"), ("name[]", "python_info")])
        names = {family.name for family in text_string_to_metric_families(text)}
        assert names == {"sidekiq_up", "python_info"}
    assert (r.collector.renders, r.collector.collects) == (1, 2)
    await scrape(client)
    assert (r.collector.renders, r.collector.collects) == (1, 2)  # the cached body is still good


async def test_concurrent_scrapes_render_once() -> None:
    r = make_rig()
    r.collector.hold = threading.Event()
    cache = RenderCache(r.registry)
    encoder, content_type = choose_encoder("")
    scrapes = [asyncio.create_task(cache.render(encoder, content_type)) for _ in range(5)]
    assert await asyncio.to_thread(r.collector.started.wait, 5)
    await asyncio.sleep(0.05)  # every scrape is waiting now
    scrapes[0].cancel()  # one scraper goes away: the others still get the shared render
    r.collector.hold.set()
    bodies = [body for body, _ in await asyncio.gather(*scrapes[1:])]
    assert scrapes[0].cancelled()
    assert r.collector.renders == 1
    assert len({sidekiq_part(b.decode()) for b in bodies}) == 1
    await cache.render(encoder, content_type)
    assert r.collector.renders == 1


async def test_failed_render_is_not_cached() -> None:
    r = make_rig()
    cache = RenderCache(r.registry)
    encoder, content_type = choose_encoder("")
    r.collector.fail = True
    with pytest.raises(RuntimeError, match="render failed"):
        await cache.render(encoder, content_type)
    r.collector.fail = False
    assert samples((await cache.render(encoder, content_type))[0].decode())[UP] == 1
    assert r.collector.renders == 2


async def test_formats_per_state_are_bounded() -> None:
    r = make_rig()
    cache = RenderCache(r.registry)
    for minor in range(MAX_FORMATS + 2):
        encoder, content_type = choose_encoder(f"application/openmetrics-text; version=1.{minor}.0")
        assert f"version=1.{minor}.0" in content_type
        await cache.render(encoder, content_type)
    # Version 1.0.0 is the writer's; the others prometheus_client's, a body per format.
    (pinned,) = cache._pinned.values()
    assert len(pinned.fallback._bodies) == MAX_FORMATS


async def test_unregistered_collectors_are_dropped() -> None:
    r = make_rig()
    cache = RenderCache(r.registry)
    encoder, content_type = choose_encoder("")
    assert b"sidekiq_up" in (await cache.render(encoder, content_type))[0]
    r.registry.unregister(r.collector)
    assert b"sidekiq_up" not in (await cache.render(encoder, content_type))[0]
    assert cache._pinned == {}


def test_store_version_counts_publishes() -> None:
    store = Store(["a", "b"])
    assert store.version == 0
    store.publish(TargetStatus.initial("a"))
    store.publish(TargetStatus.initial("b"))
    state = store.state()
    assert (state.version, [s.target for s in state.statuses]) == (2, ["a", "b"])
    store.publish(replace(TargetStatus.initial("a"), polls_error=1))
    assert store.state() is not state
    assert (store.version, state.version) == (3, 2)  # a state read earlier does not change


def test_pin_key_is_version_and_freshness() -> None:
    r = make_rig()
    key, pinned = r.collector.pin()
    assert key == (1, (True,))
    r.store.publish(make_status(processed=2000))
    r.clock.now = DEADLINE + 1
    assert r.collector.pin()[0] == (2, (False,))
    # The pinned collector renders the state it was pinned at, not the newer one.
    families = {f.name: f for f in pinned.collect()}
    assert families["sidekiq_processed_jobs"].samples[0].value == 1000
    assert families["sidekiq_up"].samples[0].value == 1


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([b"a 1\n", b"b 2\n"], b"a 1\nb 2\n"),
        ([b"", b"b 2\n"], b"b 2\n"),
    ],
)
def test_join_text(parts: list[bytes], expected: bytes) -> None:
    assert join_bodies(parts, "text/plain; version=0.0.4; charset=utf-8") == expected


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([b"a 1\n# EOF\n", b"b 2\n# EOF\n"], b"a 1\nb 2\n# EOF\n"),
        ([b"# EOF\n", b"b 2\n# EOF\n"], b"b 2\n# EOF\n"),
        ([b"a 1\n# EOF\n", b"# EOF\n"], b"a 1\n# EOF\n"),
        ([b"a 1\n# EOF\n"], b"a 1\n# EOF\n"),
    ],
)
def test_join_openmetrics(parts: list[bytes], expected: bytes) -> None:
    assert join_bodies(parts, "application/openmetrics-text; version=1.0.0") == expected


@pytest.mark.parametrize("bad", [b"a 1\n", b"a 1# EOF\n"])
def test_join_openmetrics_refuses_a_part_without_eof(bad: bytes) -> None:
    with pytest.raises(ValueError, match="EOF"):
        join_bodies([bad, b"# EOF\n"], "application/openmetrics-text")


# --- rendered when a poll publishes ---------------------------------------------------------


async def settled(r: Rig) -> None:
    """Until no render is under way or queued (renders run in worker threads)."""
    assert r.cache is not None
    await asyncio.wait_for(r.cache.settled(), 5)


async def test_every_published_state_renders_once_and_scrapes_render_none(
    rig: tuple[Rig, Client],
) -> None:
    r, client = rig
    await settled(r)
    states = [r.store.state().statuses]  # rendered at the app's start
    for processed in (1100, 1200, 1300):
        r.store.publish(make_status(processed=processed))
        states.append(r.store.state().statuses)
        await settled(r)
        for headers in ({}, OPENMETRICS, {**OPENMETRICS, "Accept-Encoding": "gzip"}):
            for _ in range(3):
                assert samples(await scrape(client, headers=headers))[PROCESSED] == processed
    # One render per state, each state once: both formats and gzip come from it.
    assert [id(s) for s in r.collector.rendered] == [id(s) for s in states]
    assert r.collector.collects == 0


async def test_a_scrape_right_after_a_publish_finds_the_render_under_way(
    rig: tuple[Rig, Client],
) -> None:
    r, client = rig
    await settled(r)
    r.collector.started.clear()
    r.collector.hold = threading.Event()
    r.store.publish(make_status(processed=2000))
    # No scrape yet: the publish alone started the render, in a worker thread.
    assert await asyncio.to_thread(r.collector.started.wait, 5)
    assert r.collector.renders == 2
    scraping = asyncio.create_task(scrape(client))
    await asyncio.sleep(0.05)
    assert not scraping.done()  # the scrape waits for the render of the state it pinned
    r.collector.hold.set()
    assert samples(await scraping)[PROCESSED] == 2000
    assert r.collector.renders == 2  # the scrape rendered nothing itself


async def test_states_published_during_a_render_coalesce_to_the_newest(
    rig: tuple[Rig, Client],
) -> None:
    r, client = rig
    await settled(r)
    r.collector.started.clear()
    r.collector.hold = threading.Event()
    r.store.publish(make_status(processed=2000))
    assert await asyncio.to_thread(r.collector.started.wait, 5)
    r.store.publish(make_status(processed=3000))
    waiting = asyncio.create_task(scrape(client))  # pinned 3000: waits behind the 2000 render
    await asyncio.sleep(0.05)
    for processed in (4000, 5000):  # polls faster than renders
        r.store.publish(make_status(processed=processed))
    newest = r.store.state().statuses
    r.collector.hold.set()
    # The scrape that pinned 3000 gets the newest state rendered: 3000 and 4000 never were.
    assert samples(await waiting)[PROCESSED] == 5000
    await settled(r)
    assert r.collector.renders == 3  # start, 2000 (under way), 5000 (the newest)
    assert r.collector.rendered[-1] is newest
    assert samples(await scrape(client))[PROCESSED] == 5000
    assert r.collector.renders == 3


async def test_a_publish_from_another_thread_renders_on_the_loop(rig: tuple[Rig, Client]) -> None:
    r, client = rig
    await settled(r)
    await asyncio.to_thread(r.store.publish, make_status(processed=2500))
    await settled(r)
    assert r.collector.renders == 2
    assert samples(await scrape(client))[PROCESSED] == 2500
    assert r.collector.renders == 2


async def test_a_failed_eager_render_is_rendered_again_by_the_next_scrape(
    rig: tuple[Rig, Client],
) -> None:
    r, client = rig
    await settled(r)
    r.collector.fail = True
    r.store.publish(make_status(processed=2000))
    await settled(r)
    assert r.collector.renders == 2
    r.collector.fail = False
    assert samples(await scrape(client))[PROCESSED] == 2000
    assert r.collector.renders == 3


@given(st.binary(), st.binary())
def test_crc32_combine(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


async def test_a_target_going_stale_is_rendered_at_its_deadline_without_a_scrape() -> None:
    interval = 0.05  # stale STALE_AFTER_INTERVALS intervals after the poll: in 0.15 s
    settings = replace(make_settings(), poll_interval=interval)
    clock = WallClock()
    store = Store(["main"])
    registry = RenderRegistry(auto_describe=False, support_collectors_without_names=True)
    collector = CountingCollector(store, settings, clock)  # type: ignore[arg-type]
    registry.register(collector)
    app = create_app(settings, registry, store)
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        store.publish(make_status(completed_at=clock.time()))
        await asyncio.wait_for(app[RENDER_CACHE_KEY].settled(), 5)
        assert [s.snapshot is not None for (s,) in collector.rendered] == [False, True]
        await asyncio.sleep(STALE_AFTER_INTERVALS * interval + 0.2)
        await asyncio.wait_for(app[RENDER_CACHE_KEY].settled(), 5)
        assert collector.renders == 3  # at the deadline, with no scrape
        stale = samples(await scrape(client))
        assert (stale[UP], PROCESSED in stale) == (0, False)
        assert collector.renders == 3
    finally:
        await client.close()


class WallClock:
    def time(self) -> float:
        return time.time()
