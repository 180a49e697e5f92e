"""The daemon's `/metrics` bodies checked against prometheus_client, the reference the
exposition writer (exporter/exposition.py) must match byte for byte.

- In-process (`served_bodies`): every pinnable collector's state is pinned once and rendered
  both ways, by the writer (what the daemon serves) and by prometheus_client's encoders; the
  bodies must be equal in both formats.
- Over HTTP (`check_reference_format`), where the test cannot reach the daemon's snapshot:
  the body must be exactly what prometheus_client writes for the families it parses to. Any
  difference in line order, escaping, HELP/TYPE lines or number format shows; a lossy number
  format would not (the parsed value is the rounded one), which the property tests of
  tests/test_exposition.py cover for every float.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter.exposition import ExpositionWriter
from exporter.render_cache import (
    OPENMETRICS_CONTENT_TYPE,
    Pinnable,
    RenderRegistry,
    Writable,
    join_bodies,
)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Live(Collector):
    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def served_bodies(registry: RenderRegistry) -> tuple[bytes, bytes]:
    """The text and OpenMetrics bodies `/metrics` serves for `registry` now, each checked to
    equal prometheus_client's rendering of the same pinned states."""
    collectors = registry.collectors()
    live = _Live(c for c in collectors if not isinstance(c, Pinnable))
    states = [c.pin()[1] for c in collectors if isinstance(c, Pinnable)]
    writable = [s for s in states if isinstance(s, Writable)]
    assert len(writable) == len(states), "a pinned state the exposition writer cannot write"
    written = [s.write(ExpositionWriter()) for s in writable]
    bodies = []
    for encoder, content_type, part in (
        (generate_latest, TEXT_CONTENT_TYPE, "text"),
        (openmetrics_exposition.generate_latest, OPENMETRICS_CONTENT_TYPE, "openmetrics"),
    ):
        live_part = encoder(live)
        for state, exposition in zip(states, written, strict=True):
            reference = encoder(state)
            ours = getattr(exposition, part)
            assert ours == reference, _first_difference(reference, ours)
        served = [live_part, *(getattr(e, part) for e in written)]
        bodies.append(join_bodies(served, content_type))
    return bodies[0], bodies[1]


def check_reference_format(body: str, *, openmetrics: bool) -> None:
    """`body` is byte for byte what prometheus_client writes for the families it parses to."""
    if openmetrics:
        families = openmetrics_parser.text_string_to_metric_families(body)
        again = openmetrics_exposition.generate_latest(_Families(families))
    else:
        again = generate_latest(_Families(text_string_to_metric_families(body)))
    assert again == body.encode(), _first_difference(again, body.encode())


def _first_difference(reference: bytes, served: bytes) -> str:
    ref_lines, our_lines = reference.splitlines(), served.splitlines()
    for index, (ref, ours) in enumerate(zip(ref_lines, our_lines, strict=False)):
        if ref != ours:
            return f"line {index + 1}: prometheus_client {ref!r}, served {ours!r}"
    return f"{len(ref_lines)} lines from prometheus_client, {len(our_lines)} served"
