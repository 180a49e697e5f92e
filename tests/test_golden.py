"""The golden `/metrics`: a fixed store renders byte for byte to the files in `tests/golden/`.

An accidental rename, label change, help-text edit or number format change fails here; an
intended one is committed with the regenerated files (`tests/support/generated.py`).
"""

from __future__ import annotations

import gzip

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.render_cache import RenderCache, RenderRegistry, written_format
from tests.support import generated, golden
from tests.support.exposition import served_bodies

GOLDEN_FILES = {
    golden.TEXT_ACCEPT: "tests/golden/metrics.txt",
    golden.OPENMETRICS_ACCEPT: "tests/golden/metrics.openmetrics.txt",
}


@pytest.mark.parametrize("path", sorted(GOLDEN_FILES.values()))
def test_committed_exposition_is_what_the_collector_renders(path: str) -> None:
    problem = generated.stale(path)
    assert problem is None, problem


def golden_registry() -> RenderRegistry:
    registry = RenderRegistry(auto_describe=False, support_collectors_without_names=True)
    for collector in golden.golden_collectors():
        registry.register(collector)
    return registry


# Accept headers served by the exposition writer (exporter/exposition.py), by golden file:
# Prometheus 2 (no escaping: underscores) and 3 (`escaping=allow-utf-8`), both text versions.
WRITTEN_ACCEPTS = {
    "tests/golden/metrics.txt": (
        golden.TEXT_ACCEPT,
        "text/plain; version=0.0.4",
        "text/plain; version=1.0.0; escaping=allow-utf-8",
        "text/plain;version=1.0.0;escaping=underscores",
    ),
    "tests/golden/metrics.openmetrics.txt": (
        golden.OPENMETRICS_ACCEPT,
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text;version=1.0.0;escaping=underscores,text/plain;q=0.5",
    ),
}


@pytest.mark.parametrize(
    ("accept", "path"),
    [(accept, path) for path, accepts in sorted(WRITTEN_ACCEPTS.items()) for accept in accepts],
)
async def test_metrics_endpoint_render_path_gives_the_same_bytes(accept: str, path: str) -> None:
    # /metrics renders through the render cache (exporter/render_cache.py) and the exposition
    # writer, not through prometheus_client: it must give exactly the committed bytes too.
    cache = RenderCache(golden_registry())
    encoder, content_type = choose_encoder(accept)
    assert written_format(content_type) is not None
    assert await cache.render(encoder, content_type) == (golden_bytes(path), False)
    body, gzipped = await cache.render(encoder, content_type, gzip=True)
    # OpenMetrics, what Prometheus asks for, comes gzipped from parts compressed at render.
    assert gzipped == path.endswith("openmetrics.txt")
    assert (gzip.decompress(body) if gzipped else body) == golden_bytes(path)
    assert cache.renders() == 2  # the two pinned collectors, once each for every format


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=1.0.0; escaping=dots",
        "text/plain; version=1.0.0; escaping=values",
        "application/openmetrics-text; version=1.0.0; escaping=dots",
        "application/openmetrics-text; version=1.0.0; escaping=values",
    ],
)
async def test_other_escapings_are_prometheus_client_s(accept: str) -> None:
    cache = RenderCache(golden_registry())
    encoder, content_type = choose_encoder(accept)
    assert written_format(content_type) is None
    assert await cache.render(encoder, content_type) == (golden.render(accept), False)
    assert cache.renders() == 0


def test_the_writer_gives_prometheus_client_s_bytes_for_the_golden_store() -> None:
    text, openmetrics = served_bodies(golden_registry())
    assert text == golden_bytes("tests/golden/metrics.txt")
    assert openmetrics == golden_bytes("tests/golden/metrics.openmetrics.txt")


def golden_bytes(path: str) -> bytes:
    return (generated.ROOT / path).read_bytes()


def test_golden_store_covers_stale_and_waiting_targets() -> None:
    families = text_string_to_metric_families(golden.render_openmetrics().decode())
    up = {
        s.labels["target"]: s.value for f in families if f.name == "sidekiq_up" for s in f.samples
    }
    assert up == {"main": 1, "legacy": 1, "old": 0, "new": 0}
