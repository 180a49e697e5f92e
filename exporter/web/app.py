"""The aiohttp app: `/metrics`, the landing page, `/-/healthy` and `/-/ready`, and the pollers'
lifetime. Renders whatever the registry holds, off the event loop (exporter/render_cache.py);
knows nothing of Sidekiq or Redis. The web config plugs in as middlewares and a TLS context.
"""

from __future__ import annotations

import asyncio
import functools
import html
from collections.abc import AsyncIterator, Sequence
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_response import ContentCoding
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.logs import POLLER_DIED, get_logger
from exporter.poller import Poller
from exporter.render_cache import OPENMETRICS_CONTENT_TYPE, Encoder, RenderCache
from exporter.settings import Settings
from exporter.store import Store
from exporter.values import format_duration

log = get_logger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
STORE_KEY = web.AppKey("store", Store)
POLLERS_KEY = web.AppKey[tuple[Poller, ...]]("pollers")
RENDER_CACHE_KEY = web.AppKey("render_cache", RenderCache)

HEALTHY_PATH = "/-/healthy"
READY_PATH = "/-/ready"
# The OpenMetrics versions served as asked; any other is served as the first.
OPENMETRICS_VERSIONS: Final = ("1.0.0",)


def create_app(
    settings: Settings,
    registry: CollectorRegistry,
    store: Store,
    pollers: Sequence[Poller] | None = None,
    *,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The exporter's web app; `pollers` run for as long as the app does."""
    app = web.Application(middlewares=list(middlewares))
    app[SETTINGS_KEY] = settings
    app[REGISTRY_KEY] = registry
    app[STORE_KEY] = store
    app[POLLERS_KEY] = tuple(pollers or ())
    app[RENDER_CACHE_KEY] = cache = RenderCache(registry)
    app.cleanup_ctx.append(functools.partial(_render_on_publish, cache, store))
    app.cleanup_ctx.append(_run_pollers)
    app.router.add_get(settings.telemetry_path, metrics_handler(registry, cache))
    app.router.add_get("/", landing_page)
    app.router.add_get(HEALTHY_PATH, healthy)
    app.router.add_get(READY_PATH, ready)
    return app


def metrics_handler(registry: CollectorRegistry, cache: RenderCache | None = None) -> Handler:
    """The `/metrics` handler: prometheus_client's exposition, rendered off the event loop.

    Does what `prometheus_client.aiohttp.make_aiohttp_handler` does (content negotiation by
    `choose_encoder`, `name[]` filtering, gzip/deflate), except that collecting and encoding
    run in a worker thread (`asyncio.to_thread`) instead of on the event loop, that on a
    `RenderRegistry` the pinnable collectors' part (the Sidekiq families) is rendered once per
    state of the store and format, then reused (exporter/render_cache.py), and that the format
    and the coding are chosen as `choose_format` and `choose_coding` say. The app renders
    the pinnable part when a poll publishes (`_render_on_publish`), so a scrape finds it done.
    """
    if cache is None:
        cache = RenderCache(registry)

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_format(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        coding = choose_coding(",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, [])))
        names = request.query.getall("name[]", [])
        if names:  # rare (debugging): rendered in full, uncached
            body = await asyncio.to_thread(encoder, registry.restricted_registry(names))
            gzipped = False
        else:
            gzip = coding is ContentCoding.gzip
            body, gzipped = await cache.render(encoder, content_type, gzip=gzip)
        headers = {hdrs.CONTENT_TYPE: content_type, hdrs.VARY: hdrs.ACCEPT_ENCODING}
        if gzipped:  # compressed when rendered, but for the live part
            headers[hdrs.CONTENT_ENCODING] = ContentCoding.gzip.value
        response = web.Response(body=body, headers=headers)
        if coding is not ContentCoding.identity and not gzipped:
            response.enable_compression(coding)
        return response

    return metrics


def choose_format(accept: str) -> tuple[Encoder, str]:
    """The exposition format for an `Accept` header: prometheus_client's choice, except that
    an OpenMetrics version it would echo without knowing it becomes 1.0.0, and a header it
    cannot read gets the text format instead of an error."""
    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):  # e.g. `version=abc`: its version comparison raises
        return choose_encoder("")
    if content_type.startswith(OPENMETRICS_CONTENT_TYPE):
        version = _parameter(content_type, "version")
        if version not in OPENMETRICS_VERSIONS:
            escaping = _parameter(content_type, "escaping")
            supported = f"{OPENMETRICS_CONTENT_TYPE}; version={OPENMETRICS_VERSIONS[0]}"
            return choose_encoder(f"{supported}; escaping={escaping}" if escaping else supported)
    return encoder, content_type


def choose_coding(accept_encoding: str) -> ContentCoding:
    """gzip, deflate or identity for an `Accept-Encoding` header, q-values honoured (RFC 9110
    12.5.3): the acceptable coding with the highest q, gzip on a tie; `*` stands for codings
    not named. aiohttp's own choice looks for the names only, so `gzip;q=0` got gzip."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        name, *parameters = (part.strip() for part in item.split(";"))
        weight = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if name:
            weights[name] = weight if 0.0 <= weight <= 1.0 else 0.0
    best, best_weight = ContentCoding.identity, 0.0
    for coding in (ContentCoding.gzip, ContentCoding.deflate):
        weight = weights.get(coding.value, weights.get("*", 0.0))
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


def _parameter(content_type: str, name: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


async def _render_on_publish(
    cache: RenderCache, store: Store, app: web.Application
) -> AsyncIterator[None]:
    """Render the store's state (and the other pinnable collectors') now and after every
    publish, off the event loop, while the app runs: scrapes find the bytes ready."""
    cache.attach(asyncio.get_running_loop())
    unsubscribe = store.subscribe(cache.published)
    cache.refresh()
    yield
    unsubscribe()
    cache.attach(None)


async def _run_pollers(app: web.Application) -> AsyncIterator[None]:
    """Start one task per poller on startup; cancel and await them all on cleanup."""
    tasks = tuple(
        asyncio.create_task(poller.run(), name=f"poller:{poller.target}")
        for poller in app[POLLERS_KEY]
    )
    for task in tasks:
        task.add_done_callback(_report_death)
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _report_death(task: asyncio.Task[None]) -> None:
    """Pollers never return on their own; if one does, say so (its target goes stale)."""
    if task.cancelled():
        return
    exc = task.exception()
    log.error(
        POLLER_DIED,
        task=task.get_name(),
        error=type(exc).__name__ if exc else None,
        exc_info=exc,
    )


async def healthy(request: web.Request) -> web.Response:
    """200 while the process serves HTTP."""
    return web.Response(text="OK")


async def ready(request: web.Request) -> web.Response:
    """200 once every target has had a successful poll, else 503 naming the ones still waiting."""
    waiting = request.app[STORE_KEY].waiting_for()
    if not waiting:
        return web.Response(text="OK")
    return web.Response(
        status=503, text="Not ready: no successful poll yet for target(s) " + ", ".join(waiting)
    )


async def landing_page(request: web.Request) -> web.Response:
    """A small HTML page linking to the metrics and listing the targets (credentials redacted)."""
    settings = request.app[SETTINGS_KEY]
    metrics = html.escape(settings.telemetry_path, quote=True)
    interval = format_duration(settings.poll_interval)
    rows = "\n".join(
        f"<tr><td>{html.escape(t.name)}</td><td><code>{html.escape(t.redacted_url)}</code></td>"
        f"<td>{html.escape(t.key_prefix) or '&mdash;'}</td></tr>"
        for t in settings.targets
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sidekiq Exporter</title></head>
<body>
<h1>Sidekiq Exporter</h1>
<p>Version {html.escape(__version__)}. Samples Sidekiq's Redis every {interval} and serves
the latest snapshot.</p>
<ul>
<li><a href="{metrics}">Metrics</a></li>
<li><a href="{HEALTHY_PATH}">Health</a></li>
<li><a href="{READY_PATH}">Readiness</a></li>
</ul>
<h2>Targets</h2>
<table>
<tr><th>target</th><th>Redis</th><th>key prefix</th></tr>
{rows}
</table>
</body>
</html>
"""
    return web.Response(text=page, content_type="text/html")
