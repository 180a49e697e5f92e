"""The two text formats `/metrics` serves, written straight from the collector's rows: the
Prometheus text format 0.0.4 and OpenMetrics 1.0, byte for byte what prometheus_client writes
for the same families (`generate_latest` of `prometheus_client.exposition` and of
`prometheus_client.openmetrics.exposition`), for the names and label names of the metric table
(legacy names, so every escaping scheme but `dots` and `values` leaves them as they are).

One pass writes both formats: for the families the collector emits (gauges, counters,
histograms; info rows are gauges) a sample line is the same in both, only the HELP/TYPE lines
and OpenMetrics' `# EOF` differ. The label part of a line (`{queue="default",target="main"}`)
is built once per label values and kept while the next render uses it, so a queue, class or
process costs its escaping once, not once per series and poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from exporter import metrics as m

_INF: Final = float("inf")
# Integers below this (2**53) are exact as floats and `repr` writes them as `<digits>.0`.
_EXACT_INT: Final = 2**53
# `floatToGoString` switches positive values of 1e6 and up to an exponent, as Go does;
# below that it is Python's `repr`.
_GO_EXPONENT_FROM: Final = 1e6

# prometheus_client's type names in the two formats (`info` rows are gauges: collector.py).
_TEXT_TYPES: Final = {"gauge": "gauge", "info": "gauge", "counter": "counter"}
_HISTOGRAM_SUFFIXES: Final = ("_bucket", "_count", "_sum")


def format_value(value: float) -> str:
    """A sample value as prometheus_client writes it (`floatToGoString`: `repr`, `1.0` for an
    integer, `+Inf`, `-Inf`, `NaN`, Go's exponent from 1e6 up), fast for the common cases."""
    if type(value) is int:
        if -_EXACT_INT < value < _GO_EXPONENT_FROM:
            return f"{value}.0"
    elif type(value) is float and -_INF < value < _GO_EXPONENT_FROM:
        return repr(value)
    return _go_float(value)


def _go_float(value: float) -> str:
    """prometheus_client's `floatToGoString` (utils.py), as written there."""
    d = float(value)
    if d == _INF:
        return "+Inf"
    if d == -_INF:
        return "-Inf"
    if d != d:  # NaN
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def escape_label_value(value: str) -> str:
    """A label value between its quotes (both formats): backslash, newline, double quote."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help_text(text: str) -> str:
    """HELP text in the text format 0.0.4: backslash and newline (a quote stays)."""
    return text.replace("\\", r"\\").replace("\n", r"\n")


def label_string(names: Sequence[str], values: Sequence[str]) -> str:
    """`{name="value",…}` sorted by name, as prometheus_client writes labels; '' for none."""
    if not names:
        return ""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{name}="{escape_label_value(v)}"' for name, v in pairs) + "}"


def _bucket_parts(names: Sequence[str], values: Sequence[str]) -> tuple[str, str]:
    """The label part of a histogram's `_bucket` line around `le="…"`, which sorts in between."""
    pairs = sorted(zip(names, values, strict=True))
    before = "".join(f'{n}="{escape_label_value(v)}",' for n, v in pairs if n < "le")
    after = "".join(f',{n}="{escape_label_value(v)}"' for n, v in pairs if n > "le")
    return "{" + before, after + "}"


class Sink(Protocol):
    """Where the collector writes series, row by row of the metric table: prometheus_client's
    metric families (the reference, `collector._Families`) or this module's `Render`."""

    def add(self, row: m.Family, values: tuple[str, ...], value: float) -> None:
        """One series of a gauge, counter or info row; `values` in `row.labels` order."""
        ...

    def histogram(
        self,
        row: m.Family,
        values: tuple[str, ...],
        buckets: Sequence[tuple[str, float]],
        sum_value: float,
    ) -> None:
        """One series of a histogram row: cumulative `buckets` (`le`, count, +Inf last)."""
        ...


@dataclass(frozen=True, slots=True)
class Exposition:
    """One render in both formats, each a complete exposition (OpenMetrics ends in `# EOF`)."""

    text: bytes
    openmetrics: bytes


OPENMETRICS_EOF: Final = "# EOF\n"


class _Family:
    """One family of a render: its lines so far and its label cache for this render."""

    __slots__ = ("labels", "lines", "row", "sample")

    def __init__(self, row: m.Family, labels: dict[tuple[str, ...], str]) -> None:
        self.row = row
        # prometheus_client's counters strip `_total` from the family name, then add it back.
        counter = row.kind == "counter"
        self.sample = f"{row.name.removesuffix('_total')}_total" if counter else row.name
        self.lines: list[str] = []
        self.labels = labels


class Render:
    """The families of one render, in the order the collector first uses them (the order
    prometheus_client's families come out of `collect`), each series a line."""

    def __init__(self, writer: ExpositionWriter, help_text: Callable[[m.Family], str]) -> None:
        self._writer = writer
        self._help_text = help_text
        self._families: dict[str, _Family] = {}
        # Label strings used by this render, by label names then values: the cache the next
        # render starts from (what this one does not use is dropped).
        self.labels: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
        self.buckets: dict[tuple[str, ...], dict[tuple[str, ...], tuple[str, str]]] = {}

    def _family(self, row: m.Family) -> _Family:
        family = self._families.get(row.name)
        if family is None:
            if m.BY_NAME.get(row.name) is not row:
                raise ValueError(
                    f"{row.name} is not a row of the metric table (exporter/metrics.py)"
                )
            labels = self.labels.get(row.labels)
            if labels is None:
                labels = self.labels[row.labels] = {}
            family = self._families[row.name] = _Family(row, labels)
        return family

    def add(self, row: m.Family, values: tuple[str, ...], value: float) -> None:
        # Once per series (~20,000 a render at the default limits): keep it lean.
        family = self._families.get(row.name)
        if family is None:
            if row.kind == "histogram":
                raise ValueError(f"{row.name} is a histogram: its series go through histogram()")
            family = self._family(row)
        labels = family.labels.get(values)
        if labels is None:
            labels = family.labels[values] = self._writer.label_string(row.labels, values)
        family.lines.append(f"{family.sample}{labels} {format_value(value)}\n")

    def histogram(
        self,
        row: m.Family,
        values: tuple[str, ...],
        buckets: Sequence[tuple[str, float]],
        sum_value: float,
    ) -> None:
        if row.kind != "histogram":
            raise ValueError(f"{row.name} is a {row.kind}, not a histogram")
        family = self._family(row)
        names = row.labels
        parts_of = self.buckets.get(names)
        if parts_of is None:
            parts_of = self.buckets[names] = {}
        parts = parts_of.get(values)
        if parts is None:
            parts = parts_of[values] = self._writer.bucket_parts(names, values)
        before, after = parts
        name, lines, le_text = row.name, family.lines, self._writer.le_text
        for le, count in buckets:
            le_label = le_text.get(le)
            if le_label is None:
                le_label = le_text[le] = f'le="{escape_label_value(le)}"'
            lines.append(f"{name}_bucket{before}{le_label}{after} {format_value(count)}\n")
        # As HistogramMetricFamily.add_metric: no _count/_sum with a negative first bucket.
        if float(buckets[0][0]) >= 0:
            labels = family.labels.get(values)
            if labels is None:
                labels = family.labels[values] = self._writer.label_string(names, values)
            lines.append(f"{name}_count{labels} {format_value(buckets[-1][1])}\n")
            lines.append(f"{name}_sum{labels} {format_value(sum_value)}\n")

    def finish(self) -> Exposition:
        text: list[str] = []
        openmetrics: list[str] = []
        for family in self._families.values():
            text_head, openmetrics_head = self._writer.headers(
                family.row, self._help_text(family.row)
            )
            samples = "".join(family.lines)
            text += (text_head, samples)
            openmetrics += (openmetrics_head, samples)
        openmetrics.append(OPENMETRICS_EOF)
        return Exposition("".join(text).encode(), "".join(openmetrics).encode())


class ExpositionWriter:
    """Renders states to both formats, keeping what one render built for the next: the label
    strings of the series it wrote (a queue's, a class's, a process's) and the HELP/TYPE lines.
    One render at a time (a lock); bounded by what the latest render used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._labels: dict[tuple[str, ...], dict[tuple[str, ...], str]] = {}
        self._buckets: dict[tuple[str, ...], dict[tuple[str, ...], tuple[str, str]]] = {}
        self._headers: dict[tuple[str, str], tuple[str, str]] = {}
        self.le_text: dict[str, str] = {}
        self.renders = 0

    def render(
        self, help_text: Callable[[m.Family], str], write: Callable[[Sink], None]
    ) -> Exposition:
        """Both formats of what `write` emits into the `Sink` it is given; `help_text` gives
        each family's HELP text."""
        with self._lock:
            render = Render(self, help_text)
            write(render)
            exposition = render.finish()
            self._labels, self._buckets = render.labels, render.buckets
            self.renders += 1
            return exposition

    def label_string(self, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        """The label part for `values`: the previous render's string, or a new one."""
        known = self._labels.get(names)
        cached = known.get(values) if known is not None else None
        return cached if cached is not None else label_string(names, values)

    def bucket_parts(self, names: tuple[str, ...], values: tuple[str, ...]) -> tuple[str, str]:
        known = self._buckets.get(names)
        cached = known.get(values) if known is not None else None
        return cached if cached is not None else _bucket_parts(names, values)

    def headers(self, row: m.Family, help_text: str) -> tuple[str, str]:
        """The HELP and TYPE lines of `row` in the text format and in OpenMetrics."""
        key = (row.name, help_text)
        lines = self._headers.get(key)
        if lines is None:
            if len(self._headers) > 4 * len(m.METRICS):  # a new poll interval: start over
                self._headers.clear()
            lines = self._headers[key] = _headers(row, help_text)
        return lines

    def cached_label_strings(self) -> int:
        """How many label strings the next render can reuse (for tests: the cache's bound)."""
        return sum(map(len, self._labels.values())) + sum(map(len, self._buckets.values()))


def _headers(row: m.Family, help_text: str) -> tuple[str, str]:
    if row.kind == "histogram":
        family, text_name, text_type = row.name, row.name, "histogram"
    elif row.kind == "counter":
        family = row.name.removesuffix("_total")
        text_name, text_type = f"{family}_total", "counter"
    else:
        family, text_name, text_type = row.name, row.name, _TEXT_TYPES[row.kind]
    openmetrics_type = "gauge" if row.kind == "info" else row.kind
    text = f"# HELP {text_name} {escape_help_text(help_text)}\n# TYPE {text_name} {text_type}\n"
    openmetrics = (
        f"# HELP {family} {escape_label_value(help_text)}\n# TYPE {family} {openmetrics_type}\n"
    )
    return text, openmetrics
