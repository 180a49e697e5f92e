"""docs/autoscaling.md: the reaction time and the thresholds follow from the shipped assets.

The table's numbers come from deploy/, alerts/ and the exporter's defaults, or from defaults of
Kubernetes and the Prometheus Operator that this file names; when a shipped setting changes,
the documented figures must change with it.
"""

from __future__ import annotations

import re

import yaml

from exporter.settings import POLL_INTERVAL
from exporter.sla import sla_from_name
from monitoring import rules
from tests.support.deploy import DEPLOY, REPO_ROOT, manifests, only, scaledobject_queries

DOC = (REPO_ROOT / "docs" / "autoscaling.md").read_text(encoding="utf-8")
# Defaults of the platform, not of this project (the doc says where each is set):
OPERATOR_EVALUATION_INTERVAL = 30.0  # the Prometheus resource's `evaluationInterval`
PROMETHEUS_EVALUATION_INTERVAL = 60.0  # prometheus.yml `global.evaluation_interval`
HPA_SYNC_PERIOD = 15.0  # kube-controller-manager `--horizontal-pod-autoscaler-sync-period`
POD_START_UP = 10.0  # the doc's example, for the thresholds
MAX_THRESHOLD = 0.5


def _section(title: str) -> str:
    return DOC.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _seconds(cell: str) -> float:
    match = re.fullmatch(r"\**([0-9.]+) s\**", cell.strip())
    assert match, cell
    return float(match[1])


def _reaction_table() -> dict[str, tuple[float, float]]:
    """{first words of the stage: (up to, on average)} of the reaction-time table."""
    rows = {}
    for line in _section("Reaction time").splitlines():
        cells = line.strip("|").split("|")
        if len(cells) == 4 and re.search(r"\d s", cells[2]):
            stage = " ".join(cells[0].strip(" *").split()[:2])
            rows[stage] = (_seconds(cells[2]), _seconds(cells[3]))
    return rows


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_reaction_time_is_what_the_shipped_assets_configure() -> None:
    found = manifests(DEPLOY / "kubernetes")
    (container,) = only(found, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not any("poll" in arg for arg in container.get("args", []))
    assert "env" not in container
    (endpoint,) = only(found, "ServiceMonitor")["spec"]["endpoints"]
    shipped = yaml.safe_load((REPO_ROOT / rules.RULE_FILE).read_text(encoding="utf-8"))
    assert all("interval" not in group for group in shipped["groups"])

    table = _reaction_table()
    assert table == {
        "the exporter": (POLL_INTERVAL.default, POLL_INTERVAL.default / 2),
        "Prometheus scrapes": (
            _duration(endpoint["interval"]),
            _duration(endpoint["interval"]) / 2,
        ),
        "Prometheus evaluates": (OPERATOR_EVALUATION_INTERVAL, OPERATOR_EVALUATION_INTERVAL / 2),
        "the HPA": (HPA_SYNC_PERIOD, HPA_SYNC_PERIOD / 2),
        "total": (70.0, 35.0),
    }
    stages = [v for k, v in table.items() if k != "total"]
    assert table["total"] == (sum(v[0] for v in stages), sum(v[1] for v in stages))
    # The same chain with a plain Prometheus' default evaluation interval.
    worst = table["total"][0] - OPERATOR_EVALUATION_INTERVAL + PROMETHEUS_EVALUATION_INTERVAL
    text = " ".join(_section("Reaction time").split())
    assert f"{worst:g} s at worst and {worst / 2:g} s on average" in text


def test_thresholds_leave_the_reaction_time_and_start_up_within_the_sla() -> None:
    average = _reaction_table()["total"][1]
    text = " ".join(_section("Reaction time").split())
    assert f"With {average:g} s of average reaction and {POD_START_UP:g} s of start-up" in text
    (scaled,) = [m.doc for m in manifests(DEPLOY / "keda") if m.kind == "ScaledObject"]
    thresholds = {
        re.findall(r'queue="([^"]+)"', t["metadata"]["query"])[0]: float(t["metadata"]["threshold"])
        for t in scaled["spec"]["triggers"]
    }
    assert set(thresholds) == set(scaledobject_queries())
    for queue, threshold in thresholds.items():
        sla = sla_from_name(queue)
        assert sla is not None, queue
        room = round(1 - (average + POD_START_UP) / sla[0], 2)
        assert threshold == min(MAX_THRESHOLD, room), (queue, threshold, room)


def test_the_query_shown_is_a_shipped_one() -> None:
    shown = re.findall(r"```promql\n(.+?)\n```", _section("The recipe"), flags=re.DOTALL)
    assert shown
    assert set(shown) <= set(scaledobject_queries().values())
