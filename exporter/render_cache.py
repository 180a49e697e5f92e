"""`/metrics` bodies rendered once per state of the data, off the event loop, and reused until
that state changes (docs/architecture.md). Knows nothing of Sidekiq, Redis or the store: a
collector opts in by being `Pinnable`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.core import InfoMetricFamily, Metric
from prometheus_client.registry import Collector

Encoder = Callable[[Collector], bytes]

OPENMETRICS_CONTENT_TYPE: Final = "application/openmetrics-text"
OPENMETRICS_EOF: Final = b"# EOF\n"
# Bodies kept per pinned collector for its current key: one per output format (content type)
# asked for. Prometheus asks for one or two; the bound keeps odd Accept headers from piling up.
MAX_FORMATS: Final = 4


@runtime_checkable
class Pinnable(Protocol):
    """A collector whose output is a function of a state it can name with a key."""

    def pin(self) -> tuple[Hashable, Collector]:
        """A key for the current state (equal keys, equal output) and a collector of that state.

        Called on the event loop on every scrape, so it must be cheap; the returned collector
        is collected (maybe) later in a worker thread and must render the state the key names.
        """
        ...


class RenderRegistry(CollectorRegistry):
    """A `CollectorRegistry` that also lists its collectors, so `RenderCache` can split them."""

    def __init__(
        self,
        auto_describe: bool = False,
        target_info: dict[str, str] | None = None,
        support_collectors_without_names: bool = False,
    ) -> None:
        self._listing_lock = threading.Lock()
        self._listed: tuple[Collector, ...] = ()
        super().__init__(auto_describe, target_info, support_collectors_without_names)

    def register(self, collector: Collector) -> None:
        with self._listing_lock:
            super().register(collector)
            self._listed = (*self._listed, collector)

    def unregister(self, collector: Collector) -> None:
        with self._listing_lock:
            super().unregister(collector)
            self._listed = tuple(c for c in self._listed if c is not collector)

    def collectors(self) -> tuple[Collector, ...]:
        """The registered collectors, in registration order."""
        return self._listed


class _Live(Collector):
    """The collectors rendered on every scrape, as one (and the registry's target_info)."""

    def __init__(self, registry: CollectorRegistry, collectors: Sequence[Collector]) -> None:
        self._registry = registry
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        info = self._registry.get_target_info()
        if info:  # as CollectorRegistry.collect yields it: first
            yield InfoMetricFamily("target", "Target metadata", value=info)
        for collector in self._collectors:
            yield from collector.collect()


_NO_KEY: Final = object()


class _PinnedBodies:
    """The rendered bodies of one pinned collector for its latest key, one per format."""

    def __init__(self) -> None:
        self._key: Hashable = _NO_KEY
        self._bodies: dict[str, bytes] = {}
        # Renders in flight, shared by the scrapes that ask for the same (key, format).
        self._pending: dict[tuple[Hashable, str], asyncio.Task[bytes]] = {}

    async def get(self, key: Hashable, state: Collector, encoder: Encoder, fmt: str) -> bytes:
        if key != self._key:  # a new state: the old bodies will not be asked for again
            self._key, self._bodies = key, {}
        body = self._bodies.get(fmt)
        if body is not None:
            return body
        task = self._pending.get((key, fmt))
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(encoder, state))
            self._pending[(key, fmt)] = task
            task.add_done_callback(functools.partial(self._rendered, key, fmt))
        # A scrape that goes away (client disconnect) does not cancel the others' render.
        return await asyncio.shield(task)

    def _rendered(self, key: Hashable, fmt: str, task: asyncio.Task[bytes]) -> None:
        del self._pending[(key, fmt)]
        if task.cancelled() or task.exception() is not None:
            return  # the waiting scrapes get the error; the next scrape renders again
        if key != self._key:
            return  # the state moved on while this rendered
        if len(self._bodies) >= MAX_FORMATS:
            del self._bodies[next(iter(self._bodies))]
        self._bodies[fmt] = task.result()


class RenderCache:
    """Renders `registry` for `/metrics`: pinnable collectors once per state and format."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._pinned: dict[Pinnable, _PinnedBodies] = {}

    async def render(self, encoder: Encoder, content_type: str) -> bytes:
        """The whole registry in the format of `encoder`, which `choose_encoder` returned with
        `content_type` (the content type names the format: the cache is keyed by it)."""
        if not isinstance(self._registry, RenderRegistry):
            return await asyncio.to_thread(encoder, self._registry)
        live: list[Collector] = []
        pinned: list[Pinnable] = []
        for collector in self._registry.collectors():
            if isinstance(collector, Pinnable):
                pinned.append(collector)
            else:
                live.append(collector)
        # Drop the bodies of collectors unregistered since the last scrape.
        self._pinned = caches = {c: self._pinned.get(c) or _PinnedBodies() for c in pinned}
        # Pin every state now, on the event loop, where pollers publish: a consistent view.
        pins = [(caches[c], *c.pin()) for c in pinned]
        parts = await asyncio.gather(
            asyncio.to_thread(encoder, _Live(self._registry, live)),
            *(bodies.get(key, state, encoder, content_type) for bodies, key, state in pins),
        )
        return join_bodies(parts, content_type)


def join_bodies(parts: Sequence[bytes], content_type: str) -> bytes:
    """One exposition from the renders of disjoint collectors, in `content_type`'s format.

    OpenMetrics ends every render with a `# EOF` line, which must appear once, at the very end:
    it is removed from all parts but the last (an empty render is that line alone).
    """
    if not content_type.startswith(OPENMETRICS_CONTENT_TYPE):
        return b"".join(parts)
    return b"".join([*map(_without_eof, parts[:-1]), *parts[-1:]])


def _without_eof(part: bytes) -> bytes:
    body = part.removesuffix(OPENMETRICS_EOF)
    if body == part or not (body == b"" or body.endswith(b"\n")):
        raise ValueError("an OpenMetrics render does not end with a '# EOF' line")
    return body
