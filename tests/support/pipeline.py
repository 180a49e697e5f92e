"""The exporter's poll-to-exposition path in-process, wired exactly as the daemon wires it.

    async with Pipeline.build(["--collect.queues.max=2"], client=fake) as pipeline:
        assert await pipeline.poll()              # one Poller.poll_once: read, derive, publish
        scrape = pipeline.scrape()                # SidekiqCollector -> text format -> parsed
        scrape = await pipeline.scrape_openmetrics()  # as /metrics renders it for Prometheus

`cli.build_pollers` does the wiring (settings -> QueueSelector, Reader, Deriver, Poller), so a
test through here also covers it. `client=` swaps in any redis-py compatible async client
(fakeredis, or a real one with other timeouts); without it the client comes from the URL.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from unittest import mock

from prometheus_client.exposition import choose_encoder

from exporter import cli
from exporter.clock import SystemClock
from exporter.derive import Deriver
from exporter.poller import Poller
from exporter.render_cache import RenderCache, RenderRegistry
from exporter.settings import Settings, load_settings
from exporter.sidekiq.reader import Reader
from exporter.store import Store, TargetStatus

from .exporter_process import Scrape
from .exposition import served_bodies


@dataclass
class Pipeline:
    """One or more targets' pollers, their store and the registry `/metrics` renders."""

    settings: Settings
    store: Store
    registry: RenderRegistry
    pollers: Sequence[Poller]
    stack: AsyncExitStack

    @classmethod
    def build(cls, argv: Sequence[str], *, client: Any = None) -> Pipeline:
        """Settings from `argv` (flags only, no environment), wired by `cli.build_pollers`."""
        settings = load_settings(list(argv), {}, stdout_is_tty=False)
        store = Store(target.name for target in settings.targets)
        # As `cli.serve` builds it, so /metrics' render path can be taken too.
        registry = RenderRegistry(auto_describe=False, support_collectors_without_names=True)
        stack = AsyncExitStack()
        if client is None:
            pollers = cli.build_pollers(settings, store, registry, SystemClock(), stack)
        else:
            with mock.patch.object(cli, "create_redis_client", return_value=client):
                pollers = cli.build_pollers(settings, store, registry, SystemClock(), stack)
        return cls(settings, store, registry, pollers, stack)

    @property
    def poller(self) -> Poller:
        return self.pollers[0]

    @property
    def status(self) -> TargetStatus:
        return self.poller.status

    @property
    def reader(self) -> Reader:
        """The first poller's Reader (build_pollers binds `reader.read` with functools.partial)."""
        read = self.poller._read
        assert isinstance(read, functools.partial)
        reader = read.func.__self__  # type: ignore[attr-defined]
        assert isinstance(reader, Reader)
        return reader

    @property
    def deriver(self) -> Deriver:
        derive = self.poller._derive
        assert isinstance(derive, Deriver)
        return derive

    async def poll(self) -> bool:
        """One poll of the first target; True when it succeeded."""
        return await self.poller.poll_once()

    def scrape(self) -> Scrape:
        """What `/metrics` would answer now, parsed (duplicate series raise); checked to be
        prometheus_client's rendering of the same state, in both formats."""
        text, _ = served_bodies(self.registry)
        return Scrape.parse(text.decode("utf-8"))

    async def scrape_openmetrics(self) -> Scrape:
        """What `/metrics` would answer Prometheus now (OpenMetrics, through the render cache
        as the web app renders it), parsed by the OpenMetrics parser; the state is checked to
        render as prometheus_client renders it, in both formats."""
        served_bodies(self.registry)
        encoder, content_type = choose_encoder("application/openmetrics-text; version=1.0.0")
        body, _ = await RenderCache(self.registry).render(encoder, content_type)
        return Scrape.parse(body.decode("utf-8"), openmetrics=True)

    async def aclose(self) -> None:
        await self.stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
