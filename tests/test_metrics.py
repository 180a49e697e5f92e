"""The metric table (exporter/metrics.py): the collector emits its rows and nothing else,
describes them to the registry, and docs/metrics.md is the table rendered."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.registry import DuplicateTimeseries

from exporter import cardinality, metrics
from exporter.collector import _Families
from exporter.metrics import METRICS
from exporter.sidekiq import decode
from exporter.sidekiq.cron_schedule import UNPARSEABLE_CRON
from tests.support import generated, golden


def test_the_golden_store_emits_every_row_and_only_rows() -> None:
    # Both ways: a family the collector emits is in the table, and every row is emitted by
    # the golden store (tests/support/golden.py), which exercises every family.
    emitted = {
        family.name: family.type
        for collector in golden.golden_collectors()
        for family in collector.collect()
    }
    table = {row.family_name: "gauge" if row.kind == "info" else row.kind for row in METRICS}
    assert emitted == table


def test_emitted_help_and_labels_are_the_table_rows() -> None:
    for family in (f for c in golden.golden_collectors() for f in c.collect()):
        row = next(r for r in METRICS if r.family_name == family.name)
        suffix = "" if row.own else " Sampled every 10s."
        assert family.documentation == row.help + suffix
        label_names = {name for s in family.samples for name in s.labels} - {"le"}
        assert label_names == set(row.labels), row.name


def test_rows_are_well_formed() -> None:
    names = [row.name for row in METRICS]
    assert len(names) == len(set(names))
    assert {row.name: row for row in METRICS} == metrics.BY_NAME
    for row in METRICS:
        assert re.fullmatch(r"sidekiq_[a-z_]+", row.name), row.name
        assert row.name.endswith("_total") == (row.kind == "counter"), row.name
        assert row.name.endswith("_info") == (row.kind == "info"), row.name
        # Per target, but for the build and the HTTP server, which serves all targets.
        assert row.labels[0] == "target" or row is metrics.BUILD_INFO or row in metrics.HTTP_SERVER
        assert row.help.endswith("."), row.name
        assert row.unit, row.name
        assert row.sidekiq, row.name
        assert not row.name.startswith("sidekiq_exporter_") or row.own, row.name


def test_skipped_items_lists_every_reason_and_only_those() -> None:
    # The reasons are constants of the rooms that skip (decoders and limits); the reference
    # names each in backquotes, so a new reason cannot go undocumented.
    listed = set(re.findall(r"`([a-z_]+)`", metrics.SKIPPED_ITEMS.notes)) - {"reason"}
    assert listed == set(decode.REASONS) | set(cardinality.REASONS) | {UNPARSEABLE_CRON}


def test_the_collector_refuses_a_family_outside_the_table() -> None:
    families = _Families(10.0)
    stray = replace(metrics.UP, name="sidekiq_made_up")
    with pytest.raises(ValueError, match="not a row of the metric table"):
        families.add(stray, ["main"], 1)
    # A copy of a row is not the row: the table is the only source.
    with pytest.raises(ValueError, match="not a row of the metric table"):
        families.add(replace(metrics.UP), ["main"], 1)
    with pytest.raises(ValueError, match="histogram"):
        families.add(metrics.JOB_DURATION, ["main", "A"], 1)
    with pytest.raises(ValueError, match="not a histogram"):
        families.histogram(metrics.UP, ["main"], [("+Inf", 1.0)], 0.0)


def test_describe_answers_from_the_table() -> None:
    sidekiq, http = golden.golden_collector(), golden.golden_collectors()[0]
    described = [*sidekiq.describe(), *http.describe()]
    assert [family.name for family in described] == [row.family_name for row in METRICS]
    assert all(not family.samples for family in described)


def test_registry_checks_the_described_names_for_duplicates() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(golden.golden_collector())
    with pytest.raises(DuplicateTimeseries):
        Gauge("sidekiq_up", "A clash.", registry=registry)
    with pytest.raises(DuplicateTimeseries):
        registry.register(golden.golden_collector())


def test_name_filter_reaches_the_collector_by_its_described_names() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(golden.golden_collector())
    wanted = ["sidekiq_up", "sidekiq_job_duration_seconds_count"]
    restricted = registry.restricted_registry(wanted)
    samples = {s.name for family in restricted.collect() for s in family.samples}
    assert samples == set(wanted)


def test_reference_page_is_the_table_rendered() -> None:
    problem = generated.stale("docs/metrics.md")
    assert problem is None, problem
    page = (generated.ROOT / "docs/metrics.md").read_text()
    documented = re.findall(r"^\| `([a-z_]+)` \|", page, flags=re.MULTILINE)
    assert documented == [row.name for row in METRICS]  # both ways, in the table's order
