"""deploy/keda: the ScaledObject scales a worker on latency ÷ SLA, out eagerly, in slowly."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from monitoring import rules
from tests.support.deploy import (
    DEPLOY,
    REPO_ROOT,
    crd_schema_errors,
    manifests,
    only,
    scaledobject_queries,
)

KEDA = DEPLOY / "keda"
FOUND = manifests(KEDA)
SCALED = only(FOUND, "ScaledObject")
SPEC: dict[str, Any] = SCALED["spec"]


def test_every_manifest_passes_its_crd_schema() -> None:
    assert [m.kind for m in FOUND] == ["ScaledObject"]
    kustomization = yaml.safe_load((KEDA / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["resources"] == [m.path.name for m in FOUND]
    assert crd_schema_errors([(m.name, m.doc) for m in FOUND]) == {m.name: None for m in FOUND}


def test_the_schema_check_rejects_a_numeric_threshold() -> None:
    broken = copy.deepcopy(SCALED)
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 0.5
    (error,) = crd_schema_errors([("broken", broken)]).values()
    assert error is not None
    assert "threshold must be string" in error


def test_one_prometheus_trigger_per_queue_on_the_latency_over_sla_rule() -> None:
    queries = scaledobject_queries()
    assert len(queries) == len(SPEC["triggers"]) >= 1
    for queue, query in queries.items():
        # Exactly one series per trigger (KEDA refuses several): one queue, aggregated to it.
        assert re.fullmatch(
            rf"max by \(target, queue\) \({re.escape(rules.LATENCY_OVER_SLA)}"
            rf'\{{target="[^"]+", queue="{re.escape(queue)}"\}}\)',
            query,
        ), query
    names = [t["name"] for t in SPEC["triggers"]]
    assert len(set(names)) == len(names)


def test_the_queries_select_the_target_of_the_shipped_exporter_config() -> None:
    configmap = only(manifests(DEPLOY / "kubernetes"), "ConfigMap")
    config = yaml.safe_load(configmap["data"]["config.yml"])
    targets = {target["name"] for target in config["targets"]}
    for query in scaledobject_queries().values():
        (target,) = re.findall(r'\btarget="([^"]+)"', query)
        assert target in targets, (target, targets)


def test_every_recording_rule_the_queries_read_is_in_the_rule_file() -> None:
    shipped = yaml.safe_load((REPO_ROOT / rules.RULE_FILE).read_text(encoding="utf-8"))
    records = {r["record"] for g in shipped["groups"] for r in g["rules"] if "record" in r}
    for query in scaledobject_queries().values():
        used = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", query))
        assert used, query
        assert used <= records, used - records


def test_triggers_use_value_string_thresholds_and_fail_on_missing_data() -> None:
    for trigger in SPEC["triggers"]:
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] == "Value"  # a ratio per queue, not a per-pod share
        metadata = trigger["metadata"]
        for key in ("threshold", "activationThreshold"):
            assert isinstance(metadata[key], str)
            assert float(metadata[key]) > 0
        assert float(metadata["activationThreshold"]) < float(metadata["threshold"]) < 1
        # A dead monitoring path must reach the fallback, not read as 0 and scale in.
        assert metadata["ignoreNullValues"] == "false"
        assert metadata["serverAddress"].startswith("http")


def test_fallback_holds_capacity_when_monitoring_fails() -> None:
    fallback = SPEC["fallback"]
    assert fallback["failureThreshold"] >= 1
    assert SPEC["minReplicaCount"] <= fallback["replicas"] <= SPEC["maxReplicaCount"]
    assert fallback.get("behavior") == "currentReplicasIfHigher"
    assert SPEC["minReplicaCount"] >= 1


def test_hpa_scales_out_eagerly_and_in_conservatively() -> None:
    behavior = SPEC["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0
    assert up["selectPolicy"] == "Max"
    assert sorted((p["type"], p["value"], p["periodSeconds"]) for p in up["policies"]) == [
        ("Percent", 100, 15),
        ("Pods", 4, 15),
    ]
    assert 300 <= down["stabilizationWindowSeconds"] <= 600
    assert [(p["type"], p["value"], p["periodSeconds"]) for p in down["policies"]] == [
        ("Percent", 10, 60)
    ]
