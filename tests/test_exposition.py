"""The exposition writer (exporter/exposition.py) against prometheus_client, the reference: the
same series written both ways give the same bytes in both formats, for odd label values and
odd numbers; label strings are reused between renders and do not pile up."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from prometheus_client.validation import _is_valid_legacy_labelname, _is_valid_legacy_metric_name

from exporter import collector as collector_module
from exporter import metrics as m
from exporter.collector import HISTOGRAM_LE, _Families, help_text
from exporter.exposition import ExpositionWriter, Sink, format_value
from exporter.sidekiq.decode import _label_text

ODD_FLOATS = (
    0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -5e-324,
    1e-300, 999_999.0, 999_999.9999, 1e6, 1_000_000.5, 1_234_567.0, 1.5e15, 1e16, 1e22,
    1_767_225_600.123, 2.0**53, 2.0**53 + 2, -(2.0**53), 0.1, 1 / 3,
)  # fmt: skip
ODD_INTS = (0, 1, -1, 999_999, 1_000_000, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), 10**20, -(10**20))

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(ODD_FLOATS + ODD_INTS),
    st.booleans(),
)
# Label values as the collector sees them: text from Redis keys and job JSON, where a lone
# surrogate has become U+FFFD (sidekiq/decode.py `_label_text`).
label_values = st.one_of(
    st.text(),
    st.text(alphabet='"\\\n\r\t {}=,# \u00e9\u2028\U0001f600\ufffd\ud800\udfff'),
    st.sampled_from(["", '"', "\\", "\n", '\\"', "\\n", "a\\\nb", "\ud83d"]),
).map(_label_text)


class _Reference(Collector):
    def __init__(self, families: _Families) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families.families.values())


Call = tuple[Any, ...]


def replay(calls: list[Call], sink: Sink) -> None:
    for call in calls:
        if call[0] == "histogram":
            sink.histogram(*call[1:])
        else:
            sink.add(*call[1:])


def both_ways(
    calls: list[Call], help_of: Callable[[m.Family], str], writer: ExpositionWriter
) -> None:
    """The calls written by the writer and by prometheus_client: the same bytes, both formats."""
    families = _Families(10.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collector_module, "help_text", lambda row, _: help_of(row))
        replay(calls, families)
    exposition = writer.render(help_of, lambda sink: replay(calls, sink))
    reference = _Reference(families)
    assert exposition.text == generate_latest(reference)
    assert exposition.openmetrics == openmetrics_exposition.generate_latest(reference)


def default_help(row: m.Family) -> str:
    return help_text(row, 10.0)


SERIES_ROWS = [row for row in m.METRICS if row.kind != "histogram"]


@st.composite
def series_calls(draw: st.DrawFn) -> list[Call]:
    calls: list[Call] = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        if draw(st.integers(0, 4)) == 0:
            row = m.JOB_DURATION
            values = tuple(draw(label_values) for _ in row.labels)
            counts = draw(st.lists(numbers, min_size=len(HISTOGRAM_LE), max_size=len(HISTOGRAM_LE)))
            buckets = [*zip(HISTOGRAM_LE, counts, strict=True), ("+Inf", draw(numbers))]
            calls.append(("histogram", row, values, buckets, draw(numbers)))
        else:
            row = draw(st.sampled_from(SERIES_ROWS))
            values = tuple(draw(label_values) for _ in row.labels)
            calls.append(("add", row, values, draw(numbers)))
    return calls


@settings(max_examples=300, deadline=None)
@given(series_calls())
def test_any_series_write_as_prometheus_client_writes_them(calls: list[Call]) -> None:
    both_ways(calls, default_help, ExpositionWriter())


@settings(max_examples=100, deadline=None)
@given(st.lists(series_calls(), min_size=2, max_size=4))
def test_a_reused_writer_writes_every_render_as_a_fresh_one(renders: list[list[Call]]) -> None:
    writer = ExpositionWriter()  # label strings kept from render to render
    for calls in renders:
        both_ways(calls, default_help, writer)


@settings(max_examples=200, deadline=None)
@given(label_values, series_calls())
def test_help_text_is_escaped_as_prometheus_client_escapes_it(text: str, calls: list[Call]) -> None:
    both_ways(calls, lambda row: f"{row.help} {text}", ExpositionWriter())


@pytest.mark.parametrize("value", ODD_FLOATS + ODD_INTS + (True, False))
def test_odd_numbers_format_as_float_to_go_string(value: float) -> None:
    assert format_value(value) == floatToGoString(value)


@settings(max_examples=2000)
@given(numbers)
def test_numbers_format_as_float_to_go_string(value: float) -> None:
    assert format_value(value) == floatToGoString(value)


def test_the_metric_table_uses_legacy_names_only() -> None:
    # Under them every escaping scheme the writer serves (underscores, allow-utf-8) leaves the
    # names as they are; exporter/render_cache.py `WRITTEN_ESCAPINGS` relies on it.
    for row in m.METRICS:
        assert all(_is_valid_legacy_metric_name(name) for name in (row.name, *row.samples))
        assert all(_is_valid_legacy_labelname(label) for label in row.labels)


def queue_series(queues: list[str]) -> Callable[[Sink], None]:
    def write(sink: Sink) -> None:
        for queue in queues:
            sink.add(m.QUEUE_ENQUEUED_JOBS, ("main", queue), 1)
            sink.add(m.QUEUE_LATENCY, ("main", queue), 0.5)
        sink.histogram(m.JOB_DURATION, ("main", queues[0]), [("+Inf", 1.0)], 0.5)

    return write


def test_label_strings_are_reused_and_only_the_last_render_s_kept() -> None:
    writer = ExpositionWriter()
    writer.render(default_help, queue_series(["a", "b", "c"]))
    # a, b, c once each for the two queue families; a's histogram labels (series + buckets).
    assert writer.cached_label_strings() == 5
    before = writer.label_string(m.QUEUE_ENQUEUED_JOBS.labels, ("main", "b"))
    writer.render(default_help, queue_series(["b", "d"]))
    after = writer.label_string(m.QUEUE_ENQUEUED_JOBS.labels, ("main", "b"))
    assert after is before  # built once, reused by the next render
    assert writer.cached_label_strings() == 4  # a and c dropped: not used by the last render
    for queue in range(1_000):  # churn: every render new queues, the cache stays their size
        writer.render(default_help, queue_series([f"q{queue}", f"r{queue}"]))
        assert writer.cached_label_strings() == 4


def test_rows_outside_the_table_are_refused() -> None:
    writer = ExpositionWriter()
    stray = m.Family("sidekiq_made_up", "gauge", "Made up.", ("target",), "1")
    with pytest.raises(ValueError, match="not a row of the metric table"):
        writer.render(default_help, lambda sink: sink.add(stray, ("main",), 1))
    with pytest.raises(ValueError, match="histogram"):
        writer.render(default_help, lambda sink: sink.add(m.JOB_DURATION, ("main", "A"), 1))
    with pytest.raises(ValueError, match="not a histogram"):
        writer.render(default_help, lambda sink: sink.histogram(m.UP, ("main",), [], 0.0))
