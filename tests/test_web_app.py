"""The web app: metrics via prometheus_client, landing page, health, readiness, poller lifecycle."""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from exporter import __version__
from exporter.clock import SystemClock
from exporter.model import Sample, Snapshot
from exporter.poller import Poller
from exporter.settings import Settings
from exporter.store import Store, TargetStatus
from exporter.targets import TargetSettings, build_target
from exporter.web.app import create_app

Client = TestClient[web.Request, web.Application]
Start = Callable[[web.Application], Awaitable[Client]]


def make_settings(*targets: TargetSettings, telemetry_path: str = "/metrics") -> Settings:
    return Settings(
        targets=targets or (build_target(name="main", url="redis://:hunter2@redis.local:6379/0"),),
        poll_interval=10.0,
        poll_timeout=8.0,
        listen_host="127.0.0.1",
        listen_port=0,
        telemetry_path=telemetry_path,
        log_level="info",
        log_format="json",
        collect_processes=True,
    )


def registry_with_gauge() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    Gauge("sidekiq_test_value", "A test gauge.", ["target"], registry=registry).labels("main").set(
        42
    )
    return registry


@pytest.fixture
async def clients() -> AsyncIterator[Start]:
    """Start test clients on 127.0.0.1; closing them runs the app's cleanup."""
    started: list[Client] = []

    async def start(app: web.Application) -> Client:
        client: Client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()


async def test_metrics_served_from_the_registry(clients: Start) -> None:
    settings = make_settings()
    client = await clients(create_app(settings, registry_with_gauge(), Store(["main"])))
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert families["sidekiq_test_value"].samples[0].value == 42


async def test_metrics_openmetrics_negotiation(clients: Start) -> None:
    client = await clients(create_app(make_settings(), registry_with_gauge(), Store(["main"])))
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    body = await response.text()
    assert body.endswith("# EOF\n")
    assert 'sidekiq_test_value{target="main"} 42.0\n' in body


async def test_metrics_gzip(clients: Start) -> None:
    client = await clients(create_app(make_settings(), registry_with_gauge(), Store(["main"])))
    response = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert b"sidekiq_test_value" in gzip.decompress(await response.read())
    response = await client.get(
        "/metrics",
        headers={"Accept-Encoding": "gzip", "Accept": "application/openmetrics-text"},
        auto_decompress=False,
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(await response.read()).endswith(b"# EOF\n")
    plain = await client.get(
        "/metrics", headers={"Accept-Encoding": "identity"}, auto_decompress=False
    )
    assert "Content-Encoding" not in plain.headers
    assert b"sidekiq_test_value" in await plain.read()


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        ("gzip;q=0", None),  # "not gzip", explicitly
        ("gzip; q=0, deflate", "deflate"),
        ("gzip, deflate", "gzip"),  # a tie: gzip, what Prometheus asks for
        ("deflate;q=0.9, gzip;q=0.5", "deflate"),
        ("*", "gzip"),
        ("gzip;q=0, *", "deflate"),  # `*` stands for the codings not named
        ("*;q=0", None),
        ("GZip", "gzip"),
        ("gzip;q=2", None),  # not a q-value
        ("gzip;q=x", None),
        ("br, zstd", None),
        ("", None),
    ],
)
async def test_metrics_content_coding_honours_q_values(
    clients: Start, accept_encoding: str, coding: str | None
) -> None:
    client = await clients(create_app(make_settings(), registry_with_gauge(), Store(["main"])))
    response = await client.get(
        "/metrics", headers={"Accept-Encoding": accept_encoding}, auto_decompress=False
    )
    assert response.headers.get("Content-Encoding") == coding
    assert response.headers["Vary"] == "Accept-Encoding"
    body = await response.read()
    plain = {"gzip": gzip.decompress, "deflate": zlib.decompress, None: bytes}[coding](body)
    assert b"sidekiq_test_value" in plain


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (
            "application/openmetrics-text; version=1.0.0",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        ),
        (
            "application/openmetrics-text; version=9.9.9",  # unknown: the one we speak
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        ),
        (
            "application/openmetrics-text; version=2.0.0; escaping=allow-utf-8",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        ),
        ("application/openmetrics-text; version=abc", "text/plain; version=0.0.4; charset=utf-8"),
        ("application/openmetrics-text; version=0.0.1", "text/plain; version=0.0.4; charset=utf-8"),
        (
            # Prometheus 3's header: its first choice.
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
            "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
        ),
    ],
)
async def test_metrics_content_type_is_a_version_it_speaks(
    clients: Start, accept: str, content_type: str
) -> None:
    client = await clients(create_app(make_settings(), registry_with_gauge(), Store(["main"])))
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    body = await response.text()
    assert body.endswith("# EOF\n") == content_type.startswith("application/openmetrics-text")


async def test_metrics_name_filter(clients: Start) -> None:
    registry = registry_with_gauge()
    Gauge("sidekiq_other", "Another gauge.", registry=registry).set(1)
    client = await clients(create_app(make_settings(), registry, Store(["main"])))
    response = await client.get("/metrics", params={"name[]": "sidekiq_other"})
    names = {f.name for f in text_string_to_metric_families(await response.text())}
    assert names == {"sidekiq_other"}


class BlockingCollector:
    """A collector whose collect() blocks until released: a slow render of a large registry."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.thread: int | None = None

    def collect(self) -> Iterator[Metric]:
        self.thread = threading.get_ident()
        self.started.set()
        self.release.wait(5)  # on the event loop, this would hold every request for 5 s
        self.finished.set()
        yield GaugeMetricFamily("sidekiq_slow", "Rendered slowly.", value=1)


async def test_metrics_render_off_the_event_loop(clients: Start) -> None:
    registry = CollectorRegistry(auto_describe=False)
    collector = BlockingCollector()
    registry.register(collector)
    client = await clients(create_app(make_settings(), registry, Store(["main"])))
    async with asyncio.timeout(20):
        scrape = asyncio.create_task(client.get("/metrics"))
        assert await asyncio.to_thread(collector.started.wait, 5)
        # While the scrape is rendering, the loop still serves other requests.
        healthy = await client.get("/-/healthy")
        assert healthy.status == 200
        assert not collector.finished.is_set()
        assert not scrape.done()
        collector.release.set()
        response = await scrape
        assert response.status == 200
        assert "sidekiq_slow 1.0" in await response.text()
    assert collector.thread != threading.get_ident()


async def test_custom_telemetry_path(clients: Start) -> None:
    settings = make_settings(telemetry_path="/probe/metrics")
    client = await clients(create_app(settings, registry_with_gauge(), Store(["main"])))
    assert (await client.get("/probe/metrics")).status == 200
    assert (await client.get("/metrics")).status == 404


async def test_landing_page(clients: Start) -> None:
    targets = (
        build_target(name="main", url="redis://:hunter2@redis.local:6379/0"),
        build_target(name="<legacy>", url="redis://old.local/1", key_prefix="sidekiq"),
    )
    settings = make_settings(*targets, telemetry_path="/probe")
    client = await clients(create_app(settings, CollectorRegistry(), Store(["main", "<legacy>"])))
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    body = await response.text()
    assert '<a href="/probe">' in body
    assert "redis://:***@redis.local:6379/0" in body
    assert "hunter2" not in body
    assert "&lt;legacy&gt;" in body  # escaped
    assert "sidekiq" in body
    assert __version__ in body


async def test_healthy_always(clients: Start) -> None:
    client = await clients(create_app(make_settings(), CollectorRegistry(), Store(["main"])))
    response = await client.get("/-/healthy")
    assert (response.status, await response.text()) == (200, "OK")
    assert (await client.head("/-/healthy")).status == 200


async def test_ready_after_every_target_succeeded_once(clients: Start) -> None:
    store = Store(["a", "b"])
    targets = (build_target(name="a", url="redis://a/0"), build_target(name="b", url="redis://b/0"))
    client = await clients(create_app(make_settings(*targets), CollectorRegistry(), store))
    response = await client.get("/-/ready")
    assert response.status == 503
    assert "a, b" in await response.text()
    store.publish(replace(TargetStatus.initial("a"), polls_success=1, up=True))
    response = await client.get("/-/ready")
    assert response.status == 503
    assert "a," not in await response.text()
    store.publish(replace(TargetStatus.initial("b"), polls_success=1, up=True))
    response = await client.get("/-/ready")
    assert (response.status, await response.text()) == (200, "OK")


async def test_middleware_hook(clients: Start) -> None:
    @web.middleware
    async def deny(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
        raise web.HTTPUnauthorized()

    app = create_app(make_settings(), registry_with_gauge(), Store(["main"]), middlewares=[deny])
    client = await clients(app)
    assert (await client.get("/metrics")).status == 401


class BlockingRead:
    """A read that records that it ran and waits until cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, now_hint: float, since: float | None = None) -> Sample:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


def make_pollers(settings: Settings, store: Store, reads: Sequence[BlockingRead]) -> list[Poller]:
    def derive(sample: Sample) -> Snapshot:
        raise AssertionError("never reached")

    return [
        Poller(target, settings, store, read, derive, SystemClock())
        for target, read in zip(settings.targets, reads, strict=True)
    ]


async def test_pollers_run_with_the_app_and_are_cancelled_on_cleanup() -> None:
    targets = (build_target(name="a", url="redis://a/0"), build_target(name="b", url="redis://b/0"))
    settings = make_settings(*targets)
    store = Store(["a", "b"])
    reads = [BlockingRead(), BlockingRead()]
    app = create_app(settings, CollectorRegistry(), store, make_pollers(settings, store, reads))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        async with asyncio.timeout(5):
            for read in reads:
                await read.started.wait()
        assert not any(read.cancelled.is_set() for read in reads)
    finally:
        await client.close()
    assert all(read.cancelled.is_set() for read in reads)
    assert store.get("a").polls_error == 0  # cancelled, not failed


async def test_poller_dying_is_logged() -> None:
    class Broken(Poller):
        async def run(self) -> None:
            raise RuntimeError("boom")

    settings = make_settings(build_target(name="a", url="redis://a/0"))
    store = Store(["a"])
    (broken,) = make_pollers(settings, store, [BlockingRead()])
    broken.__class__ = Broken
    app = create_app(settings, CollectorRegistry(), store, [broken])
    client = TestClient(TestServer(app, host="127.0.0.1"))
    with capture_logs() as logs:
        await client.start_server()
        await asyncio.sleep(0.01)
        await client.close()
    (died,) = [e for e in logs if e["event"] == "poller_died"]
    assert died["task"] == "poller:a"
    assert died["error"] == "RuntimeError"
