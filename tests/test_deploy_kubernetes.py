"""deploy/kubernetes: schema-valid manifests that wire up a working, locked-down exporter."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from exporter.settings import LISTEN_ADDRESS
from monitoring import prometheusrule, rules
from monitoring.config import DEFAULT_EXPORTER_JOB
from tests.support.deploy import (
    DEPLOY,
    REPO_ROOT,
    crd_schema_errors,
    image_repository,
    kubernetes_validate,
    manifests,
    only,
)
from tests.support.exporter_process import ExporterProcess
from tests.support.layouts import V7, SidekiqWriter
from tests.support.redis_server import RedisServer

KUBERNETES = DEPLOY / "kubernetes"
FOUND = manifests(KUBERNETES)
KUSTOMIZATION = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
# An older Kubernetes many clusters still run, and kubernetes-validate's newest.
KUBERNETES_VERSIONS = ("1.32", None)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_kinds_pass_kubernetes_validate_strict(version: str | None) -> None:
    core = sorted({m.path for m in FOUND if not m.is_custom_resource})
    assert {m.kind for m in FOUND if not m.is_custom_resource} == {
        "ConfigMap",
        "Deployment",
        "Secret",
        "Service",
    }
    output = kubernetes_validate(core, version)
    assert "WARN" not in output, output
    assert "ERROR" not in output, output


def test_custom_resources_pass_their_crd_schemas() -> None:
    custom = [m for m in FOUND if m.is_custom_resource]
    assert {m.kind for m in custom} == {"ServiceMonitor", "PrometheusRule"}
    assert crd_schema_errors([(m.name, m.doc) for m in custom]) == dict.fromkeys(
        (m.name for m in custom), None
    )


def test_the_crd_schema_check_rejects_broken_resources() -> None:
    monitor = only(FOUND, "ServiceMonitor")
    broken_monitor = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": 8743}]}}
    rule = {**only(FOUND, "PrometheusRule"), "spec": {"groups": [{"rules": [{"expr": "up"}]}]}}
    errors = crd_schema_errors(
        [("monitor", broken_monitor), ("rule", rule), ("pod", {"kind": "Pod"})]
    )
    assert "port must be string" in (errors["monitor"] or "")
    assert "groups/0 must have required property name" in (errors["rule"] or "")
    assert errors["pod"] is not None  # no schema here is an error, never a pass


def test_kustomization_lists_every_resource_and_the_image() -> None:
    files = {m.path.name for m in FOUND} - {"secret.example.yaml"}
    assert sorted(KUSTOMIZATION["resources"]) == sorted(files)
    (image,) = KUSTOMIZATION["images"]
    pod = only(FOUND, "Deployment")["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == [image["name"]]
    assert image["newName"] == image_repository()
    assert image["newTag"] == _pyproject_version()


def _pyproject_version() -> str:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(pyproject["project"]["version"])


def _dockerfile_user() -> tuple[int, int]:
    for line in (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("USER "):
            uid, gid = line.split()[1].split(":")
            return int(uid), int(gid)
    raise AssertionError("no USER in the Dockerfile")


def test_deployment_is_locked_down_as_the_image_user() -> None:
    pod = only(FOUND, "Deployment")["spec"]["template"]["spec"]
    uid, gid = _dockerfile_user()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # The password reaches the exporter as a file, never through the environment.
    assert "env" not in container
    assert "envFrom" not in container
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_probes_service_and_servicemonitor_meet_on_the_named_port() -> None:
    deployment = only(FOUND, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == LISTEN_ADDRESS.default[1]  # the exporter's default
    assert port["name"] == "http-metrics"
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": port["name"]}
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = only(FOUND, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    assert service_port["port"] == port["containerPort"]

    monitor = only(FOUND, "ServiceMonitor")
    service_labels = {**service["metadata"].get("labels", {}), **_kustomize_labels()}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service_port["name"]]
    assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]


def test_the_service_name_is_the_scrape_job_the_alerts_watch() -> None:
    # The Prometheus Operator names a ServiceMonitor's job after the Service (unless jobLabel
    # says otherwise); SidekiqExporterDown and SidekiqExporterAbsent select that job.
    monitor = only(FOUND, "ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]
    assert only(FOUND, "Service")["metadata"]["name"] == DEFAULT_EXPORTER_JOB


def _kustomize_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for entry in KUSTOMIZATION.get("labels", []):
        labels.update(entry["pairs"])
    return labels


def test_prometheusrule_holds_the_groups_promtool_tests() -> None:
    # That the committed file is what `python -m monitoring` writes: test_monitoring_rules.py.
    resource = yaml.safe_load((REPO_ROOT / prometheusrule.PROMETHEUS_RULE_FILE).read_text())
    rule_file = yaml.safe_load((REPO_ROOT / rules.RULE_FILE).read_text())
    assert resource == only(FOUND, "PrometheusRule")
    assert resource["spec"]["groups"] == rule_file["groups"]


def test_the_prometheusrule_carries_rule_groups_unchanged() -> None:
    groups = [
        {
            "name": "sidekiq-recording",
            "interval": "15s",
            "rules": [
                {
                    "record": "target_queue:example:ratio",
                    "expr": "max by (target, queue) (\n  sidekiq_queue_latency_seconds\n)\n",
                }
            ],
        },
        {
            "name": "sidekiq-alerts",
            "rules": [
                {
                    "alert": "SidekiqExampleDown",
                    "expr": "sidekiq_up == 0",
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {"description": "{{ $labels.target }} is down.\n"},
                }
            ],
        },
    ]
    rendered = prometheusrule.render(yaml.safe_dump({"groups": groups}))
    resource = yaml.safe_load(rendered)
    assert resource["spec"]["groups"] == groups
    assert "expr: |" in rendered  # PromQL stays readable
    assert crd_schema_errors([("rule", resource)]) == {"rule": None}
    with pytest.raises(ValueError, match="no `groups:` list"):
        prometheusrule.render("rules: []\n")


def _mounts(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{volume source kind and name: mount path} for the container's mounts."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


@pytest.mark.integration
def test_configmap_and_secret_example_run_the_exporter(tmp_path: Path) -> None:
    # The files as the pod sees them, under tmp_path: config.yml from the ConfigMap, the
    # password from the example Secret, at the paths the Deployment mounts them.
    pod = only(FOUND, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text(encoding="utf-8"))
    configmap = only(FOUND, "ConfigMap")
    for mount_path, volume in _mounts(container, pod).items():
        directory = tmp_path / mount_path.lstrip("/")
        directory.mkdir(parents=True)
        if "configMap" in volume:
            assert volume["configMap"]["name"] == configmap["metadata"]["name"]
            for key, text in configmap["data"].items():
                (directory / key).write_text(text)
        else:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            for key, text in secret["stringData"].items():
                (directory / key).write_text(text)

    (flag,) = container["args"]
    config_path = tmp_path / flag.removeprefix("--config.file=").lstrip("/")
    config = yaml.safe_load(config_path.read_text())
    (target,) = config["targets"]
    password_file = tmp_path / target["password_file"].lstrip("/")
    password = password_file.read_text()
    with RedisServer("--requirepass", password, password=password) as server:
        SidekiqWriter(redis.Redis(port=server.port, password=password), V7).push(
            "default", {"class": "Job", "queue": "default", "jid": "0" * 24, "args": []}
        )
        target["url"] = server.url.replace(f":{password}@", "")  # the password is the file's
        target["password_file"] = str(password_file)
        config_path.write_text(yaml.safe_dump(config))
        with ExporterProcess(None, args=[f"--config.file={config_path}"]) as exporter:
            scrape = exporter.scrape()
    assert scrape.value("sidekiq_up", target=target["name"]) == 1
    assert scrape.value("sidekiq_queue_sla_seconds", target=target["name"], queue="default") == 60


def test_manifest_names_are_unique() -> None:
    keys = [(m.kind, m.doc["metadata"]["name"]) for m in FOUND]
    assert len(keys) == len(set(keys)), keys
