"""Entry point (`sidekiq-exporter`, `python -m exporter`): settings, wiring, serve until a signal.

Wiring only: every decision worth testing lives in the modules this one connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from exporter import __version__
from exporter.cardinality import CronJobSelector, JobClassSelector, ProcessSelector, QueueSelector
from exporter.clock import Clock, SystemClock
from exporter.collector import HttpCollector, SidekiqCollector
from exporter.config_file import ConfigError
from exporter.connection import Reload, create_redis_client
from exporter.derive import DeriveConfig, Deriver
from exporter.logs import (
    EXPORTER_STARTED,
    EXPORTER_STOPPED,
    EXPORTER_STOPPING,
    RELOAD_REQUESTED,
    SHUTDOWN_TIMED_OUT,
    SIGNAL_IGNORED,
    configure_logging,
    get_logger,
)
from exporter.model import STALE_AFTER_INTERVALS
from exporter.poller import Poller
from exporter.render_cache import RenderRegistry
from exporter.settings import PROG, InfoRequested, Settings, load_settings
from exporter.sidekiq.cron_namespaces import CronNamespaces
from exporter.sidekiq.metrics_window import window_minutes
from exporter.sidekiq.reader import Reader
from exporter.sla import SlaResolver
from exporter.store import Store
from exporter.web.app import create_app
from exporter.web.server import (
    ConnectionLimits,
    HttpCounters,
    LimitedSite,
    check_descriptor_limit,
)

if TYPE_CHECKING:
    # Imported only when --web.config.file is given (load_web_config below): TLS contexts,
    # basic auth, bcrypt and YAML are memory a daemon without the file does not need.
    from exporter.web.config import ServedWebConfig, WebConfig

log = get_logger(__name__)

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 2

# Signals and what they do (docs/security.md, "Signals"). Any other signal has its
# default effect (SIGPIPE: ignored by Python; writes to a closed socket fail instead).
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD_SIGNAL: Final = signal.SIGHUP
IGNORED_SIGNALS: Final = (signal.SIGUSR1, signal.SIGUSR2)

# Builds the per-target pieces: registers collectors into the registry, pushes every resource
# it opens (Redis clients) onto the exit stack, adds what reads their password files again to
# the list of reloads (SIGHUP), and returns one poller per target.
Builder = Callable[
    [Settings, Store, CollectorRegistry, Clock, AsyncExitStack, list[Reload]], Sequence[Poller]
]


class StartupError(Exception):
    """The exporter could not start (e.g. the listen port is taken); one-line message."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the process exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = load_settings(args, os.environ, stdout_is_tty=sys.stdout.isatty())
        # TLS and basic auth: a bad file stops us here, before anything listens.
        web_config = load_web_config(settings.web_config_file)
    except InfoRequested as info:
        sys.stdout.write(info.text)
        return EXIT_OK
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    # Until serve() installs its handlers: a reload or an ignored signal must not kill us.
    for sig in (RELOAD_SIGNAL, *IGNORED_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    try:
        asyncio.run(serve(settings, web_config=web_config))
    except StartupError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        # Ctrl-C before our signal handlers were installed: still a requested stop.
        return EXIT_OK
    return EXIT_OK


def load_web_config(path: str | None) -> WebConfig | None:
    """The web config file, parsed and checked (web/config.py); None without one."""
    if path is None:
        return None
    from exporter.web import config

    return config.load_web_config(path)


def _served(web_config: WebConfig | None, counters: HttpCounters) -> ServedWebConfig | None:
    """What serves the web config's TLS context and guard; None without one."""
    if web_config is None:
        return None
    from exporter.web.config import ServedWebConfig

    return ServedWebConfig(web_config, counters)


def _fail(message: str) -> int:
    """Print the one-line error Prometheus tools print, and return the config exit code."""
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return EXIT_CONFIG


def build_pollers(
    settings: Settings,
    store: Store,
    registry: CollectorRegistry,
    clock: Clock,
    stack: AsyncExitStack,
    reloads: list[Reload] | None = None,
) -> list[Poller]:
    """Production wiring: the Sidekiq collector; a Redis client, reader and deriver per target."""
    registry.register(SidekiqCollector(store, settings, clock))
    window = window_minutes(settings.poll_interval)
    derive_config = DeriveConfig(
        metrics_window_minutes=window,
        # A gap the collector would call stale adds no SLA breach time, at any interval.
        max_breach_gap_seconds=STALE_AFTER_INTERVALS * settings.poll_interval,
        # SLA per queue: the config file's first matching `queues:` entry, else the name.
        sla_for=SlaResolver(settings.queue_rules),
    )
    pollers = []
    for target in settings.targets:
        client = create_redis_client(target, timeout=settings.poll_timeout, reloads=reloads)
        stack.push_async_callback(client.aclose)
        label_bytes = settings.label_value_length_max
        queues = QueueSelector(
            target.name,
            limit=settings.queues_max,
            allow=settings.queues_allow,
            deny=settings.queues_deny,
            max_label_bytes=label_bytes,
        )
        classes = JobClassSelector(
            target.name,
            limit=settings.job_classes_max,
            allow=settings.job_classes_allow,
            deny=settings.job_classes_deny,
            max_label_bytes=label_bytes,
        )
        processes = (
            ProcessSelector(target.name, limit=settings.processes_max, max_label_bytes=label_bytes)
            if settings.collect_processes
            else None
        )
        cron_jobs = CronJobSelector(
            target.name,
            limit=settings.cron_max,
            allow=settings.cron_allow,
            deny=settings.cron_deny,
            max_label_bytes=label_bytes,
        )
        reader = Reader(
            target.key_prefix,
            metrics_window_minutes=window,
            queues=queues,
            collect_cron=settings.collect_cron,
            cron_jobs=cron_jobs,
            # The scan's state, per target: kept here, outside the reader (docs/architecture.md).
            cron_namespaces=CronNamespaces(),
            max_reply_bytes=settings.poll_max_bytes,
            max_label_bytes=label_bytes,
        )
        pollers.append(
            Poller(
                target,
                settings,
                store,
                functools.partial(reader.read, client),
                Deriver(target.name, derive_config, classes=classes, processes=processes),
                clock,
            )
        )
    return pollers


async def serve(
    settings: Settings,
    *,
    clock: Clock | None = None,
    build: Builder = build_pollers,
    stop: asyncio.Event | None = None,
    web_config: WebConfig | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT/SIGQUIT (or `stop` is set), then shut down within the
    timeout; SIGHUP reads the web config and the password files again."""
    clock = clock if clock is not None else SystemClock()
    stop = stop if stop is not None else asyncio.Event()
    reload_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def request_stop(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    def request_reload(sig: signal.Signals) -> None:
        log.info(RELOAD_REQUESTED, signal=sig.name)
        reload_requested.set()

    def ignore(sig: signal.Signals) -> None:
        log.info(SIGNAL_IGNORED, signal=sig.name)

    handlers = {
        **{sig: request_stop for sig in STOP_SIGNALS},
        RELOAD_SIGNAL: request_reload,
        **{sig: ignore for sig in IGNORED_SIGNALS},
    }
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread / Windows
            loop.add_signal_handler(sig, handler, sig)

    store = Store(target.name for target in settings.targets)
    # Lists its collectors so /metrics can render the Sidekiq collector (pinnable) once per
    # store state. Collectors without names (client_python's process and platform collectors
    # describe none) must stay in `name[]`-restricted scrapes too.
    registry = RenderRegistry(auto_describe=False, support_collectors_without_names=True)
    # The usual process_* and python_info series, as every client_python exporter has; they
    # change on every scrape and are rendered on every scrape.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    counters = HttpCounters()
    registry.register(HttpCollector(counters))
    reloads: list[Reload] = []

    # LIFO: the runner is cleaned up (HTTP stops, pollers cancelled) before clients close.
    stack = AsyncExitStack()
    try:
        try:
            check_descriptor_limit(
                settings.max_connections, redis_connections(settings), descriptor_limit()
            )
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        pollers = build(settings, store, registry, clock, stack, reloads)
        if web_config is None:
            try:
                web_config = load_web_config(settings.web_config_file)
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
        served = _served(web_config, counters)
        app = create_app(
            settings,
            registry,
            store,
            pollers,
            middlewares=(served.middleware(),) if served else (),
        )
        # access_log=None: no per-scrape log lines (the logger is also silenced below WARNING).
        # handler_cancellation: a request whose client went away stops waiting (for a
        # credential check, a render) instead of holding its place.
        runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=settings.shutdown_timeout / 2,
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = LimitedSite(
            runner,
            settings.listen_host,
            settings.listen_port,
            limits=ConnectionLimits(
                max_connections=settings.max_connections,
                read_header_timeout=settings.read_header_timeout,
                idle_timeout=settings.idle_timeout,
            ),
            counters=counters,
            ssl_context=served.ssl_context if served else lambda: None,
        )
        try:
            await site.start()
        except OSError as exc:
            # asyncio's message repeats the address; the errno text alone is the reason.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot listen on {settings.listen_address}: {reason}") from None
        reloader = asyncio.create_task(_reload_on_request(reload_requested, served, reloads))
        stack.push_async_callback(_cancelled, reloader)
        log.info(
            EXPORTER_STARTED,
            version=__version__,
            listen_address=settings.listen_address,
            addresses=site.addresses,
            telemetry_path=settings.telemetry_path,
            config_file=settings.config_file,
            poll_interval_seconds=settings.poll_interval,
            targets={t.name: t.redacted_url for t in settings.targets},
            web=web_config.summary if web_config else None,
            max_connections=settings.max_connections,
        )
        await stop.wait()
        log.info(EXPORTER_STOPPING, signal=received[0] if received else None)
    finally:
        try:
            async with asyncio.timeout(settings.shutdown_timeout):
                await stack.aclose()
        except TimeoutError:
            log.warning(SHUTDOWN_TIMED_OUT, timeout_seconds=settings.shutdown_timeout)
        for sig in handlers:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    log.info(EXPORTER_STOPPED)


async def _reload_on_request(
    requested: asyncio.Event, served: ServedWebConfig | None, reloads: Sequence[Reload]
) -> None:
    """Each time a reload is asked for (SIGHUP; several at once count as one): the web config,
    then every target's password files."""
    while True:
        await requested.wait()
        requested.clear()
        if served is not None:
            served.reload()
        for reload in reloads:
            await reload()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def redis_connections(settings: Settings) -> int:
    """Connections to Redis the exporter holds at most: one per target, one per Sentinel."""
    return sum(1 + len(target.sentinels) for target in settings.targets)


def descriptor_limit() -> int:
    """The process's soft limit on open file descriptors (`ulimit -n`)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else sys.maxsize
