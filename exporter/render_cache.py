"""`/metrics` bodies rendered once per state of the data, off the event loop, and reused until
that state changes (docs/architecture.md): rendered as soon as the state changes (`published`,
and a pinned state's expiry), in both formats and gzip-ready, by the exposition writer, so a
scrape finds them done. Knows nothing of Sidekiq, Redis or the store: a collector opts in by
being `Pinnable`, its pinned states by being `Writable`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, cast, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.core import InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.exposition import Exposition, ExpositionWriter
from exporter.gzip_join import Deflated, deflate, gzip_member

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

        Called on the event loop on every scrape and publish, so it must be cheap; the returned
        collector is rendered (maybe) later in a worker thread and must render the state the
        key names.
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


@runtime_checkable
class Expiring(Protocol):
    """A pinned state whose key changes with time alone (the collector's staleness deadline)."""

    @property
    def valid_for(self) -> float | None:
        """Seconds from the pin until the key changes without a publish; None: never."""
        ...


@runtime_checkable
class Writable(Protocol):
    """A pinned state the exposition writer renders (exporter/exposition.py): both formats in
    one pass, without prometheus_client's metric objects."""

    def write(self, writer: ExpositionWriter) -> Exposition: ...


@dataclass(frozen=True, slots=True)
class Rendered:
    """One pinned state as `/metrics` serves it: the text format, OpenMetrics without its
    `# EOF` line, and that OpenMetrics part gzip-ready."""

    key: Hashable
    text: bytes
    openmetrics: bytes
    deflated: Deflated  # `openmetrics`, compressed once to join gzip bodies (gzip_join.py)


def rendered(key: Hashable, exposition: Exposition) -> Rendered:
    """`exposition` ready to serve: runs in the worker thread, with the render."""
    openmetrics = _without_eof(exposition.openmetrics)
    return Rendered(key, exposition.text, openmetrics, deflate(openmetrics))


class _Renders:
    """The renders of one pinned collector's states by the exposition writer: the latest
    finished, the one under way, and the newest state waiting for it to finish. One render at
    a time, one per state: a state that arrives while one renders replaces any state waiting
    behind it (those renders would be thrown away unseen), and whoever waited for the replaced
    state gets the newer one."""

    def __init__(self) -> None:
        self.writer = ExpositionWriter()
        self.done: Rendered | None = None
        self._running_key: Hashable = _NO_KEY
        self._running: asyncio.Future[Rendered] | None = None
        self._next: tuple[Hashable, Writable, asyncio.Future[Rendered]] | None = None
        self._tasks: set[asyncio.Future[Rendered]] = set()
        self.renders = 0  # started, for tests and the benchmark

    def request(self, key: Hashable, state: Writable) -> Rendered | asyncio.Future[Rendered]:
        """The render of `key`: finished, under way, or queued behind the one under way.
        On the event loop only."""
        done = self.done
        if done is not None and done.key == key:
            return done
        if self._running is None:
            return self._start(key, state, asyncio.get_running_loop().create_future())
        if self._running_key == key:
            return self._running
        future = self._next[2] if self._next is not None else None
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._next = (key, state, future)
        return future

    def pending(self) -> list[asyncio.Future[Rendered]]:
        """The renders under way or queued."""
        running, queued = self._running, self._next
        return [f for f in (running, queued[2] if queued else None) if f is not None]

    def _start(
        self, key: Hashable, state: Writable, future: asyncio.Future[Rendered]
    ) -> asyncio.Future[Rendered]:
        self._running_key, self._running = key, future
        self.renders += 1
        task = asyncio.ensure_future(asyncio.to_thread(self._render, key, state))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, future))
        return future

    def _render(self, key: Hashable, state: Writable) -> Rendered:
        return rendered(key, state.write(self.writer))

    def _finished(self, future: asyncio.Future[Rendered], task: asyncio.Future[Rendered]) -> None:
        self._tasks.discard(task)
        self._running_key, self._running = _NO_KEY, None
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            # The scrapes waiting get the error; nobody else asks for it (no "never retrieved"
            # warning for an eager render); the next scrape of that state renders again.
            future.set_exception(error)
            future.exception()
        else:
            self.done = task.result()
            future.set_result(self.done)
        if self._next is not None:
            key, state, waiting = self._next
            self._next = None
            if self.done is not None and self.done.key == key:
                waiting.set_result(self.done)
            else:
                self._start(key, state, waiting)


class _PinnedBodies:
    """Bodies prometheus_client renders for one pinned collector's latest key, one per format:
    the formats the exposition writer does not write (escaping schemes other than
    `underscores` and `allow-utf-8`), rendered when a scrape asks for them."""

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


class _Pinned:
    """What the cache keeps for one pinned collector."""

    def __init__(self) -> None:
        self.renders = _Renders()
        self.fallback = _PinnedBodies()


class RenderCache:
    """Renders `registry` for `/metrics`: pinnable collectors once per state (eagerly when
    told a state changed: `refresh`), the others on every scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._pinned: dict[Pinnable, _Pinned] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiry: asyncio.TimerHandle | None = None

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Render on `loop` from now on when `published` is called and when a pinned state
        expires (the app's startup); None: no more (its cleanup)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._loop = loop

    def published(self) -> None:
        """A pinnable collector's state may have changed (a poll published): render it now, in
        a worker thread, so the next scrape finds it rendered or under way. Any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.refresh()
        else:
            loop.call_soon_threadsafe(self.refresh)

    def refresh(self) -> None:
        """Start rendering every pinnable collector's current state not rendered yet (both
        formats and gzip). On the event loop."""
        expires: list[float] = []
        for caches, key, state in self._pins():
            if isinstance(state, Writable):
                caches.renders.request(key, state)
            if isinstance(state, Expiring) and state.valid_for is not None:
                expires.append(state.valid_for)
        # Render again when a state expires (a target going stale), as at a publish.
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires and self._loop is not None:
            delay = max(0.0, min(expires)) + EXPIRY_SLACK_SECONDS
            self._expiry = self._loop.call_later(delay, self.refresh)

    def _pins(self) -> list[tuple[_Pinned, Hashable, Collector]]:
        pinned: list[Pinnable] = [c for c in self._registry_collectors() if isinstance(c, Pinnable)]
        # Drop what the cache kept for collectors unregistered since.
        self._pinned = caches = {c: self._pinned.get(c) or _Pinned() for c in pinned}
        # Pin every state now, on the event loop, where pollers publish: a consistent view.
        return [(caches[c], *c.pin()) for c in pinned]

    def _registry_collectors(self) -> tuple[Collector, ...]:
        if isinstance(self._registry, RenderRegistry):
            return self._registry.collectors()
        return ()

    def renders(self) -> int:
        """Renders by the exposition writer started so far, over all pinned collectors."""
        return sum(p.renders.renders for p in self._pinned.values())

    async def settled(self) -> None:
        """Once no render is under way or queued (for tests and the benchmark)."""
        while pending := [f for p in self._pinned.values() for f in p.renders.pending()]:
            await asyncio.wait(pending)

    async def render(
        self, encoder: Encoder, content_type: str, *, gzip: bool = False
    ) -> tuple[bytes, bool]:
        """The whole registry in the format of `encoder`, which `choose_encoder` returned with
        `content_type` (the content type names the format: the cache is keyed by it), and
        whether it is gzip-encoded: with `gzip`, the format Prometheus asks for by default
        (OpenMetrics) comes gzipped from parts compressed when they were rendered."""
        if not isinstance(self._registry, RenderRegistry):
            return await asyncio.to_thread(encoder, self._registry), False
        live = _Live(
            self._registry,
            [c for c in self._registry.collectors() if not isinstance(c, Pinnable)],
        )
        pins = self._pins()
        written = written_format(content_type)
        if written is None or not all(isinstance(state, Writable) for _, _, state in pins):
            parts = await asyncio.gather(
                asyncio.to_thread(encoder, live),
                *(p.fallback.get(key, state, encoder, content_type) for p, key, state in pins),
            )
            return join_bodies(parts, content_type), False
        live_body = asyncio.to_thread(encoder, live)
        requests = [p.renders.request(key, cast(Writable, state)) for p, key, state in pins]
        waits = [r for r in requests if not isinstance(r, Rendered)]
        if not waits:
            live_part = await live_body
        else:
            # A scrape that goes away (client disconnect) does not cancel the others' render.
            both = await asyncio.gather(live_body, *map(asyncio.shield, waits))
            live_part = cast(bytes, both[0])
        done = [r if isinstance(r, Rendered) else r.result() for r in requests]
        if written == TEXT:
            return b"".join([live_part, *(r.text for r in done)]), False
        head = _without_eof(live_part)
        if not gzip:
            return b"".join([head, *(r.openmetrics for r in done), OPENMETRICS_EOF]), False
        return gzip_member(head, [r.deflated for r in done], OPENMETRICS_EOF), True


# After a state's deadline: the collector's freshness test is `age <= deadline`.
EXPIRY_SLACK_SECONDS: Final = 0.001
TEXT: Final = "text"
OPENMETRICS: Final = "openmetrics"
# Escaping schemes (the Accept header's `escaping=`) under which prometheus_client writes the
# metric table's names unchanged (they are legacy names: tests/test_exposition.py checks).
WRITTEN_ESCAPINGS: Final = ("", "underscores", "allow-utf-8")


def written_format(content_type: str) -> str | None:
    """The format of `content_type` the exposition writer writes, or None (prometheus_client
    renders it): the text format, or OpenMetrics 1.0.0, with a written escaping scheme."""
    kind, *parameters = (part.strip() for part in content_type.split(";"))
    values = dict(p.partition("=")[::2] for p in parameters)
    if values.get("escaping", "") not in WRITTEN_ESCAPINGS:
        return None
    if kind == "text/plain":
        return TEXT
    if kind == OPENMETRICS_CONTENT_TYPE and values.get("version") == "1.0.0":
        return OPENMETRICS
    return None


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
