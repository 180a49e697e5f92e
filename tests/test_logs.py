"""Logging: one line shape for our events and stdlib loggers, levels, no secrets in tracebacks."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog
from structlog.testing import capture_logs

from exporter import logs
from exporter.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger(logs.ACCESS_LOGGER)
    access_level = access.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    access.setLevel(access_level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def configured(level: str = "info", fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_event_with_fields() -> None:
    stream = configured()
    get_logger("exporter.test").info(logs.TARGET_UP, target="main", round_trips=2)
    (line,) = json_lines(stream)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["event"] == "target_up"
    assert line["level"] == "info"
    assert line["logger"] == "exporter.test"
    assert (line["target"], line["round_trips"]) == ("main", 2)
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_stdlib_loggers_have_the_same_shape() -> None:
    stream = configured()
    logging.getLogger("aiohttp.server").error("Error handling request from %s", "10.0.0.1")
    logging.getLogger("redis").warning("reconnecting")
    first, second = json_lines(stream)
    assert first["event"] == "Error handling request from 10.0.0.1"
    assert (first["level"], first["logger"]) == ("error", "aiohttp.server")
    assert (second["level"], second["logger"]) == ("warning", "redis")
    assert set(first) >= {"timestamp", "level", "logger", "event"}


def test_access_log_is_silenced_below_warning() -> None:
    stream = configured("debug")
    access = logging.getLogger(logs.ACCESS_LOGGER)
    access.info('127.0.0.1 "GET /metrics HTTP/1.1" 200')
    access.warning("odd request")
    assert [line["event"] for line in json_lines(stream)] == ["odd request"]


def test_level_filters_our_events_and_stdlib() -> None:
    stream = configured("warning")
    log = get_logger("exporter.test")
    log.info(logs.TARGET_UP)
    log.debug(logs.POLL_COMPLETED)
    logging.getLogger("asyncio").info("quiet")
    log.error(logs.TARGET_DOWN, target="main")
    assert [line["event"] for line in json_lines(stream)] == ["target_down"]


def test_debug_level_shows_poll_completed() -> None:
    stream = configured("debug")
    get_logger("exporter.test").debug(logs.POLL_COMPLETED, duration_seconds=0.01)
    assert json_lines(stream)[0]["level"] == "debug"


def test_console_format() -> None:
    stream = configured("info", "console")
    get_logger("exporter.test").info(logs.TARGET_UP, target="main")
    logging.getLogger("aiohttp.server").warning("stdlib line")
    first, second = stream.getvalue().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[info\s*\] target_up", first)
    assert "target=main" in first
    assert "[warning" in second
    assert "stdlib line" in second


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_show_locals(fmt: str) -> None:
    stream = configured("info", fmt)
    password = "hunter2-secret"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("exporter.test").exception(logs.POLL_CRASHED, target="main")
    text = stream.getvalue()
    assert "RuntimeError" in text
    assert password not in text
    if fmt == "json":
        (line,) = json_lines(stream)
        assert line["event"] == "poll_crashed"


def test_capture_logs_works_after_configuration() -> None:
    configured()
    log = get_logger("exporter.test")
    log.info("warm_up")  # would pin the logger if loggers were cached on first use
    with capture_logs() as captured:
        log.info(logs.TARGET_DOWN, target="main")
    assert captured == [{"event": "target_down", "target": "main", "log_level": "info"}]


def test_unknown_format_rejected() -> None:
    with pytest.raises(ValueError, match="logfmt"):
        configure_logging("info", "logfmt", stream=io.StringIO())


def test_event_names_are_snake_case_constants() -> None:
    names = {
        name: value
        for name, value in vars(logs).items()
        if name.isupper() and isinstance(value, str) and name not in {"ACCESS_LOGGER"}
    }
    assert names, "no event constants found"
    for name, value in names.items():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", value), name
        assert value == name.lower()


def test_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = logs.Throttle(10.0, clock=lambda: now[0])
    assert throttle.due() == 0
    assert [throttle.due() for _ in range(5)] == [None] * 5
    now[0] += 9.9
    assert throttle.due() is None
    now[0] += 0.1
    assert throttle.due() == 6  # the ones held back since the last line
    assert throttle.due() is None
