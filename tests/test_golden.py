"""The golden `/metrics`: a fixed store renders byte for byte to the files in `tests/golden/`.

An accidental rename, label change, help-text edit or number format change fails here; an
intended one is committed with the regenerated files (`tests/support/generated.py`).
"""

from __future__ import annotations

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.render_cache import RenderCache, RenderRegistry
from tests.support import generated, golden

GOLDEN_FILES = {
    golden.TEXT_ACCEPT: "tests/golden/metrics.txt",
    golden.OPENMETRICS_ACCEPT: "tests/golden/metrics.openmetrics.txt",
}


@pytest.mark.parametrize("path", sorted(GOLDEN_FILES.values()))
def test_committed_exposition_is_what_the_collector_renders(path: str) -> None:
    problem = generated.stale(path)
    assert problem is None, problem


@pytest.mark.parametrize(("accept", "path"), sorted(GOLDEN_FILES.items()))
async def test_metrics_endpoint_render_path_gives_the_same_bytes(accept: str, path: str) -> None:
    # /metrics renders through the render cache (exporter/render_cache.py), not straight
    # through the encoder: it must give exactly the committed bytes too.
    registry = RenderRegistry(auto_describe=False, support_collectors_without_names=True)
    for collector in golden.golden_collectors():
        registry.register(collector)
    encoder, content_type = choose_encoder(accept)
    body = await RenderCache(registry).render(encoder, content_type)
    assert body == (generated.ROOT / path).read_bytes()


def test_golden_store_covers_stale_and_waiting_targets() -> None:
    families = text_string_to_metric_families(golden.render_openmetrics().decode())
    up = {
        s.labels["target"]: s.value for f in families if f.name == "sidekiq_up" for s in f.samples
    }
    assert up == {"main": 1, "legacy": 1, "old": 0, "new": 0}
