"""The generated rule file: conventions, runbooks, and promtool on Prometheus 2 and 3.

`promtool test rules` runs every file of alerts/tests/ with both promtools; the checks here make
sure each alert has such a file, and that the file tests what every alert must show: silent
just before its `for:` boundary and firing at it with every label and annotation, never on a
single-sample spike nor on a missed scrape, and resolved once the condition clears.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import prometheusrule, rules
from monitoring.__main__ import main as generate
from monitoring.__main__ import outputs
from monitoring.config import DEFAULT_EXPORTER_JOB, Config
from tests.support.prometheus import PROMETHEUS, speed_up_rules

REPO = Path(__file__).resolve().parents[1]
RULE_FILE = REPO / rules.RULE_FILE
TESTS_DIR = REPO / "alerts" / "tests"
RUNBOOKS = REPO / "docs" / "runbooks.md"
REQUIRED_TEST_GROUPS = ("for boundary", "resolves", "single-sample spike", "missed scrape")
ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
RANGE = re.compile(r"\[([0-9a-z]+)\]")


def rule_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULE_FILE.read_text())
    return doc


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rule_doc()["groups"] for r in g["rules"] if "alert" in r]


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_committed_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    for relative, text in outputs(Config.default()).items():
        committed = REPO / relative
        assert committed.read_text() == text, f"{relative}: run `python -m monitoring`"
    assert generate(["--check"]) == 0


def test_generator_overrides_the_links(tmp_path: Path) -> None:
    assert (
        generate(
            [
                "--runbook-base-url",
                "https://wiki.example.com/runbooks/sidekiq/",
                "--dashboard-base-url",
                "https://grafana.example.com/",
                "--exporter-job",
                "sidekiq",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    text = (tmp_path / rules.RULE_FILE).read_text()
    assert "runbook_url: https://wiki.example.com/runbooks/sidekiq#sidekiqqueueunserved\n" in text
    assert "dashboard_url: https://grafana.example.com/d/sidekiq-queues/sidekiq-queues?" in text
    assert 'absent(up{job="sidekiq"})' in text
    assert "github.com" not in text
    assert "localhost:3000" not in text
    assert sorted(p.name for p in (tmp_path / "dashboards").iterdir()) == sorted(
        p.name for p in (REPO / "dashboards").iterdir()
    )
    resource = yaml.safe_load((tmp_path / prometheusrule.PROMETHEUS_RULE_FILE).read_text())
    assert resource["spec"]["groups"] == yaml.safe_load(text)["groups"]


def test_runbook_links_derive_from_the_project_homepage() -> None:
    with (REPO / "pyproject.toml").open("rb") as f:
        import tomllib

        homepage = tomllib.load(f)["project"]["urls"]["Homepage"]
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"] == (
            f"{homepage}/blob/main/docs/runbooks.md#{rule['alert'].lower()}"
        )


def test_every_alert_follows_the_conventions() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert len(names) >= 14
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Sidekiq[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert "{{" not in rule["annotations"]["summary"], f"{name}: summary is static"
        assert "{{ $labels." in rule["annotations"]["description"], name
        # One sample never pages: a `for:` and a `keep_firing_for` on every alert.
        assert seconds(rule["for"]) > 0, name
        assert seconds(rule["keep_firing_for"]) > 0, name


def test_range_windows_hold_several_scrapes() -> None:
    """At least 2 minutes: twice a 1 minute scrape interval (Prometheus 3 ranges are left-open)."""
    for group in rule_doc()["groups"]:
        for rule in group["rules"]:
            for window in RANGE.findall(rule["expr"]):
                assert seconds(window) >= 120, (rule.get("alert") or rule["record"], window)


def test_recording_rules_are_named_level_metric_operations() -> None:
    records = [r["record"] for g in rule_doc()["groups"] for r in g["rules"] if "record" in r]
    assert rules.LATENCY_OVER_SLA == "target_queue:sidekiq_queue_latency_over_sla:ratio"
    assert rules.LATENCY_OVER_SLA in records
    for name in records:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_recording_rules_run_before_the_alerts_that_read_them() -> None:
    """Same group, earlier position: Prometheus runs a group's rules in order at one time."""
    for group in rule_doc()["groups"]:
        seen: set[str] = set()
        for rule in group["rules"]:
            if "record" in rule:
                seen.add(rule["record"])
                continue
            used = set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"]))
            assert used <= seen, (rule["alert"], used - seen)


def test_every_alert_has_a_runbook_section() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbooks.md"
    names = {r["alert"] for r in alert_rules()}
    assert set(headings) == names, "one section per alert, titled with its name"


def test_every_alert_has_a_promtool_test_of_every_case() -> None:
    files = {p.stem: p for p in TESTS_DIR.glob("*.yml")}
    names = {r["alert"] for r in alert_rules()}
    assert set(files) == names, "alerts/tests/<AlertName>.yml for every alert, and only those"
    for name, path in files.items():
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../sidekiq.rules.yml"], path
        groups = {t["name"]: t for t in doc["tests"]}
        for wanted in REQUIRED_TEST_GROUPS:
            assert wanted in groups, f"{path.name}: no test group named {wanted!r}"
        evaluations = [
            case for t in doc["tests"] for case in t.get("alert_rule_test", [])
            if case["alertname"] == name
        ]  # fmt: skip
        firing = [a for case in evaluations for a in case["exp_alerts"]]
        assert firing, f"{path.name}: never expects {name} to fire"
        for alert in firing:
            assert "severity" in alert["exp_labels"], path.name
            assert set(alert["exp_annotations"]) == ANNOTATIONS, path.name
        boundary = [c for c in groups["for boundary"]["alert_rule_test"] if c["alertname"] == name]
        silent = [seconds(c["eval_time"]) for c in boundary if not c["exp_alerts"]]
        fires = [seconds(c["eval_time"]) for c in boundary if c["exp_alerts"]]
        step = seconds(doc["evaluation_interval"])
        assert silent, path.name
        assert fires, path.name
        assert min(fires) - max(silent) == step, (
            f"{path.name}: the boundary group must expect silence one evaluation before firing"
        )
        spikes = [
            c for c in groups["single-sample spike"]["alert_rule_test"] if c["alertname"] == name
        ]
        assert spikes, path.name
        assert all(not c["exp_alerts"] for c in spikes), f"{path.name}: a spike never fires"
        resolved = [c for c in groups["resolves"]["alert_rule_test"] if c["alertname"] == name]
        before, after = (
            {frozenset(a["exp_labels"].items()) for a in case["exp_alerts"]}
            for case in (resolved[0], resolved[-1])
        )
        assert before - after, f"{path.name}: 'resolves' must see an alert fire, then stop"


@pytest.mark.parametrize("major", sorted(PROMETHEUS))
def test_promtool_check_rules(major: str) -> None:
    promtool = str(PROMETHEUS[major].require().promtool)
    result = subprocess.run(
        [promtool, "check", "rules", str(RULE_FILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = len([r for g in rule_doc()["groups"] for r in g["rules"]])
    assert f"SUCCESS: {count} rules found" in result.stdout


@pytest.mark.parametrize("major", sorted(PROMETHEUS))
def test_promtool_unit_tests(major: str) -> None:
    promtool = str(PROMETHEUS[major].require().promtool)
    files = sorted(p.name for p in TESTS_DIR.glob("*.yml"))
    result = subprocess.run(
        [promtool, "test", "rules", *files],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


@pytest.mark.parametrize("major", sorted(PROMETHEUS))
def test_promtool_unit_tests_catch_a_broken_rule(major: str, tmp_path: Path) -> None:
    """The unit tests can fail: a `for:` one step shorter breaks the boundary test."""
    doc = rule_doc()
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "SidekiqQueueLatencyOverSLA":
                rule["for"] = "2m"
    (tmp_path / "sidekiq.rules.yml").write_text(yaml.safe_dump(doc))
    (tmp_path / "tests").mkdir()
    test = TESTS_DIR / "SidekiqQueueLatencyOverSLA.yml"
    (tmp_path / "tests" / test.name).write_text(test.read_text())
    result = subprocess.run(
        [str(PROMETHEUS[major].require().promtool), "test", "rules", test.name],
        cwd=tmp_path / "tests",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "for boundary" in result.stdout + result.stderr


def test_speed_up_rules_scales_every_duration() -> None:
    fast = yaml.safe_load(speed_up_rules(RULE_FILE.read_text(), 30))
    slow = rule_doc()
    for group_fast, group_slow in zip(fast["groups"], slow["groups"], strict=True):
        for a, b in zip(group_fast["rules"], group_slow["rules"], strict=True):
            windows = [seconds(w) for w in RANGE.findall(b["expr"])]
            assert [seconds(w) for w in RANGE.findall(a["expr"])] == [w / 30 for w in windows]
            for key in ("for", "keep_firing_for"):
                if key in b:
                    assert seconds(a[key]) == pytest.approx(seconds(b[key]) / 30, abs=0.001)


def _matches(matchers: list[str], labels: dict[str, str]) -> bool:
    """Whether Alertmanager matchers (`name="v"`, `!=`, `=~`, `!~`; anchored) select labels."""
    for matcher in matchers:
        found = re.fullmatch(r'(\w+)(=~|!~|!=|=)"(.*)"', matcher)
        assert found, matcher
        name, op, value = found.groups()
        have = labels.get(name, "")
        regex = re.fullmatch(value, have) is not None
        if not {"=": have == value, "!=": have != value, "=~": regex, "!~": not regex}[op]:
            return False
    return True


def test_the_example_alertmanager_config_holds_back_every_alert_the_cause_blinds() -> None:
    """A new alert is covered by the inhibitions without anyone editing their name lists."""
    example = yaml.safe_load((REPO / "alerts" / "alertmanager.example.yml").read_text())
    inhibitions = {
        tuple(r["source_matchers"]): r["target_matchers"] for r in example["inhibit_rules"]
    }
    redis = inhibitions[('alertname="SidekiqRedisUnreachable"',)]
    scrape = inhibitions[('alertname="SidekiqExporterDown"',)]
    for group in rule_doc()["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            labels = {"alertname": rule["alert"], **rule["labels"]}
            # Every alert on Sidekiq's data goes blind with its Redis; the monitoring path's not.
            reads_sidekiq = group["name"] != "sidekiq.monitoring"
            assert _matches(redis, labels) == reads_sidekiq, rule["alert"]
            assert _matches(scrape, labels) == (rule["alert"] != "SidekiqExporterDown")


def test_the_docs_name_the_scrape_job_the_rules_watch() -> None:
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"scrape the exporter as job `{DEFAULT_EXPORTER_JOB}`" in readme
    assert f'`job="{DEFAULT_EXPORTER_JOB}"`' in RUNBOOKS.read_text()
