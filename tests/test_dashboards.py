"""The generated Grafana dashboards: Grafana's own schema, the dashboard rules, and metric types.

- Schema: Grafana publishes the classic dashboard model as TypeScript in the npm package
  `@grafana/schema` (pinned in tests/node/package.json); `ts-json-schema-generator` turns it
  into a strict JSON Schema (no extra properties) that every dashboard must satisfy.
- Rules (grafana/dashboard-linter's, and docs/runbooks.md's conventions): one `datasource`
  variable used by every panel and query, a unit and a description on every panel,
  `$__rate_interval`, every selector filtered by the dashboard's variables, stable `uid`,
  `id: null`, a pinned `schemaVersion`.
- Types: `rate()`, `increase()` and `histogram_quantile()` only read counters and histograms,
  as the `# TYPE` lines of a real exporter's /metrics say (not a list kept here). The same
  holds for the rule file.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from exporter.demo.layout import V7, SidekiqWriter
from exporter.demo.simulation import Simulation
from monitoring import dashboards, grafana, rules
from monitoring.config import Config
from tests.support.exporter_process import ExporterProcess
from tests.support.node import NODE_MODULES, node
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
GRAFANA_TYPES = NODE_MODULES / "@grafana" / "schema" / "dist" / "types" / "raw" / "dashboard" / "x"
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
RATE_CALL = re.compile(r"\b(rate|increase|irate)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
QUANTILE_BUCKET = re.compile(r"histogram_quantile\([^,]+,.*?\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{", re.S)
VARIABLE_LABELS = ("target", "queue", "class")


def rendered() -> dict[str, dict[str, Any]]:
    return {d.uid: json.loads((REPO / "dashboards" / f"{d.uid}.json").read_text())
            for d in dashboards.DASHBOARDS}  # fmt: skip


@pytest.fixture(scope="module")
def grafana_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Grafana's classic dashboard model as a JSON Schema, generated from @grafana/schema."""
    generator = NODE_MODULES / "ts-json-schema-generator" / "bin" / "ts-json-schema-generator.js"
    types = GRAFANA_TYPES / "types.gen.d.ts"
    out = tmp_path_factory.mktemp("schema") / "dashboard.schema.json"
    subprocess.run(
        [node(), str(generator), "--path", str(types), "--type", "Dashboard",
         "--no-type-check", "--out", str(out)],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    schema: dict[str, Any] = json.loads(out.read_text())
    return schema


@pytest.fixture(scope="module")
def real_metrics() -> Iterator[str]:
    """/metrics of the real exporter over a real redis-server holding a simulated Sidekiq 7."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        simulation = Simulation(SidekiqWriter(client, V7))
        now = time.time()
        for i in range(30):  # 30 s of a busy cluster, with retries and metrics
            simulation.step(now - 30 + i, 1.0)
        # A queue whose oldest job is not JSON: skipped and counted, so that family shows too.
        client.sadd("queues", "broken")
        client.lpush("queue:broken", "{not json")
        with ExporterProcess(server.url, poll_interval="1s") as exporter:
            polls = exporter.polls()
            simulation.last_beat = 0.0  # beat now: flush per-class metrics after the baseline
            simulation.step(time.time(), 1.0)
            scrape = exporter.scrape_at_polls(polls + 2)
            yield scrape.text
        client.close()


def type_lines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))


def series_labels(text: str) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for name, body in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", text, re.M):
        labels.setdefault(name, set()).update(re.findall(r'(\w+)="', body))
    return labels


def is_counter_or_histogram(series: str, types: dict[str, str]) -> bool:
    if types.get(series) == "counter":
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", series)
    return base != series and types.get(base) == "histogram"


def test_dashboards_match_grafanas_published_schema(grafana_schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(grafana_schema)
    assert grafana_schema["definitions"]["Dashboard"]["additionalProperties"] is False
    for uid, dashboard in rendered().items():
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(dashboard)]
        assert not errors, (uid, errors[:5])
    # The schema is strict: an unknown key is an error.
    broken = rendered()["sidekiq-overview"] | {"colour": "blue"}
    assert list(validator.iter_errors(broken))


def test_dashboard_settings() -> None:
    uids = set()
    for uid, d in rendered().items():
        assert d["uid"] == uid
        assert len(uid) <= 40
        assert uid not in uids
        uids.add(uid)
        assert d["id"] is None
        assert d["schemaVersion"] == grafana.SCHEMA_VERSION == 39
        assert d["editable"] is False
        assert d["title"].startswith("Sidekiq / ")
        assert d["description"]
        variables = d["templating"]["list"]
        assert variables[0]["name"] == "datasource"
        assert variables[0]["type"] == "datasource"
        assert [v["name"] for v in variables if v["type"] == "datasource"] == ["datasource"]
        for v in variables[1:]:
            assert v["type"] == "query", (uid, v["name"])
            assert v["multi"], (uid, v["name"])
            assert v["includeAll"], (uid, v["name"])
            assert v["refresh"] == 2, "reload values when the time range changes"
            assert v["datasource"] == grafana.DATASOURCE
        assert {"job", "instance", "target"} <= {v["name"] for v in variables}


def test_every_panel_has_a_unit_a_description_and_the_datasource_variable() -> None:
    for uid, d in rendered().items():
        panels = [p for p in d["panels"] if p["type"] != "row"]
        assert panels
        for p in panels:
            where = (uid, p["title"])
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert p["fieldConfig"]["defaults"]["unit"], where
            assert len(p["description"]) > 20, where
            assert p["targets"], where
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"], where
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), uid


def test_rates_use_the_rate_interval() -> None:
    """`$__rate_interval` everywhere; `$__range` only for totals over the range (instant)."""
    for dashboard in dashboards.DASHBOARDS:
        for panel, query in grafana.queries(dashboard):
            for call in re.finditer(r"\b(rate|increase|irate)\(", query.expr):
                window = re.search(r"\[([^\]]+)\]", query.expr[call.end() :])
                assert window, (panel.title, query.expr)
                allowed = {"$__rate_interval"} | ({"$__range"} if query.instant else set())
                assert window.group(1) in allowed, (panel.title, query.expr)
            assert "irate(" not in query.expr, panel.title


def test_every_selector_is_filtered_by_the_dashboard_variables(real_metrics: str) -> None:
    labels = series_labels(real_metrics)
    labels["up"] = {"job", "instance"}  # Prometheus' own series
    for dashboard in dashboards.DASHBOARDS:
        variables = {v.name for v in dashboard.variables}
        exprs = [q.expr for _, q in grafana.queries(dashboard)]
        # The `job` variable is the root of the chain; each later one filters by those before.
        exprs += [v.query for v in dashboard.variables if v.name != "job"]
        for expr in exprs:
            bare = re.findall(r"\b(sidekiq_[a-z0-9_]+|up)\b(?![{a-z0-9_])", expr)
            assert not bare, f"{dashboard.uid}: unfiltered {bare} in {expr}"
            for metric, body in SELECTOR.findall(expr):
                assert metric in labels, f"{metric} is not in a real /metrics ({expr})"
                matchers = {name: value for name, _, value in MATCHER.findall(body)}
                wanted = {"job", "instance"} | (labels[metric] & variables & set(VARIABLE_LABELS))
                if expr.startswith("label_values("):  # a variable filters by the ones before
                    wanted -= {expr.rsplit(", ", 1)[1].rstrip(")")}
                    wanted &= {"job", "instance", "target"}
                missing = wanted - set(matchers)
                assert not missing, f"{dashboard.uid}: {metric} not filtered by {missing}"
                for label in wanted & set(matchers):
                    assert matchers[label] == f"${label}", (dashboard.uid, metric, label)


def test_rate_and_quantiles_only_read_counters_and_histograms(real_metrics: str) -> None:
    types = type_lines(real_metrics)
    assert types["sidekiq_processed_jobs_total"] == "counter"  # text format 0.0.4 names
    assert types["sidekiq_job_duration_seconds"] == "histogram"
    exprs = [q.expr for d in dashboards.DASHBOARDS for _, q in grafana.queries(d)]
    exprs += [
        r["expr"]
        for g in yaml.safe_load((REPO / rules.RULE_FILE).read_text())["groups"]
        for r in g["rules"]
    ]
    checked = 0
    for expr in exprs:
        for _, series in RATE_CALL.findall(expr):
            assert is_counter_or_histogram(series, types), f"rate/increase of {series}: {expr}"
            checked += 1
        for series in QUANTILE_BUCKET.findall(expr):
            assert series.endswith("_bucket"), expr
            assert is_counter_or_histogram(series, types), expr
            checked += 1
    assert checked > 20
    # And the check bites: a gauge under rate() is refused.
    assert types["sidekiq_queue_enqueued_jobs"] == "gauge"
    assert not is_counter_or_histogram("sidekiq_queue_enqueued_jobs", types)


def test_alert_links_point_at_the_dashboards_by_uid_and_grafanas_slug() -> None:
    links = {rules.OVERVIEW, rules.QUEUES, rules.JOB_CLASSES, rules.PROCESSES}
    by_uid = rendered()
    assert {link.uid for link in links} == set(by_uid)
    for link in links:
        assert by_uid[link.uid]["title"] == link.title
    # Grafana's slug of a title: lower case, each run of other characters one dash.
    assert rules.PROCESSES.slug == "sidekiq-processes-and-capacity"
    assert rules.JOB_CLASSES.slug == "sidekiq-job-classes"
    used = {r.dashboard for r in rules.alerts(Config.default())}
    assert {(link.uid, link.title) for link in used} <= {(link.uid, link.title) for link in links}
