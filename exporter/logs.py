"""Logging: structlog events with fields, as JSON lines or for a console, stdlib loggers included.

Owns the event names (snake_case constants, listed here so they can be grepped) and the
renderers; never logs a credential (tracebacks are rendered without locals).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

import structlog
from structlog.typing import Processor

# --- event names ---
EXPORTER_STARTED: Final = "exporter_started"
EXPORTER_STOPPING: Final = "exporter_stopping"
EXPORTER_STOPPED: Final = "exporter_stopped"
SHUTDOWN_TIMED_OUT: Final = "shutdown_timed_out"
TARGET_UP: Final = "target_up"
TARGET_DOWN: Final = "target_down"
POLL_COMPLETED: Final = "poll_completed"
POLL_FAILED: Final = "poll_failed"
POLL_CRASHED: Final = "poll_crashed"
REDIS_DATA_SKIPPED: Final = "redis_data_skipped"
POLLER_DIED: Final = "poller_died"
WEB_CERTIFICATE_RELOADED: Final = "web_certificate_reloaded"
WEB_CERTIFICATE_RELOAD_FAILED: Final = "web_certificate_reload_failed"
JOB_METRICS_UNAVAILABLE: Final = "job_metrics_unavailable"
JOB_CLASS_LIMIT_REACHED: Final = "job_class_limit_reached"
QUEUE_LIMIT_REACHED: Final = "queue_limit_reached"
PROCESS_LIMIT_REACHED: Final = "process_limit_reached"
LABEL_VALUE_TOO_LONG: Final = "label_value_too_long"
CRON_JOB_LIMIT_REACHED: Final = "cron_job_limit_reached"
CRON_LINE_UNPARSEABLE: Final = "cron_line_unparseable"
HTTP_BAD_REQUEST: Final = "http_bad_request"
HTTP_HEADER_TIMEOUT: Final = "http_header_timeout"
HTTP_CONNECTION_LIMIT_REACHED: Final = "http_connection_limit_reached"
HTTP_ACCEPT_FAILED: Final = "http_accept_failed"
HTTP_CONNECTION_FAILED: Final = "http_connection_failed"
HTTP_CREDENTIAL_QUEUE_FULL: Final = "http_credential_queue_full"
RELOAD_REQUESTED: Final = "reload_requested"
WEB_CONFIG_RELOADED: Final = "web_config_reloaded"
WEB_CONFIG_RELOAD_FAILED: Final = "web_config_reload_failed"
REDIS_PASSWORD_RELOADED: Final = "redis_password_reloaded"
REDIS_PASSWORD_RELOAD_FAILED: Final = "redis_password_reload_failed"
SIGNAL_IGNORED: Final = "signal_ignored"

# A repeated event an outsider can cause (a malformed request, a connection over the limit) is
# written at most once per this many seconds, with the number held back since the last line.
THROTTLE_SECONDS: Final = 10.0

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The aiohttp access log writes one INFO line per request: per scrape, which we don't want.
ACCESS_LOGGER: Final = "aiohttp.access"


def _shared_processors() -> list[Processor]:
    """Processors for both structlog and stdlib records, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(fmt: str) -> list[Processor]:
    """The final processors for `fmt` ("json" or "console")."""
    if fmt == "json":
        # Tracebacks as structured data keep one exception on one JSON line. Never with
        # locals: a frame's locals can hold a Redis password.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        return [tracebacks, _leading_keys_first, structlog.processors.JSONRenderer()]
    if fmt == "console":
        # plain_traceback: rich/better-exceptions, if installed, would print locals.
        return [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    raise ValueError(f"unknown log format {fmt!r}")


_LEADING_KEYS: Final = ("timestamp", "level", "logger", "event")


def _leading_keys_first(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Put timestamp, level, logger and event first so JSON lines read alike."""
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def configure_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> None:
    """Send structlog and stdlib logging to `stream` (stdout) at `level`, rendered as `fmt`."""
    numeric_level = LEVELS[level]
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Caching would pin module-level loggers to the first configuration, which breaks
        # `structlog.testing.capture_logs` and reconfiguration; we log a few lines a minute.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderer(fmt)],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    logging.getLogger(ACCESS_LOGGER).setLevel(max(numeric_level, logging.WARNING))
    # Let Python's own warnings (e.g. deprecations in a dependency) come out in the same shape.
    logging.captureWarnings(True)


class Throttle:
    """One line per `interval` seconds for a repeated event, however often it happens."""

    def __init__(
        self, interval: float = THROTTLE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._next = -math.inf
        self._held = 0

    def due(self) -> int | None:
        """None: hold this one back; else write it now, with this many held back since the last."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self._interval
        return held


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named `name` (use `__name__`)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
