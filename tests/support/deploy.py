"""Reading and checking the manifests in deploy/: YAML documents, schema checks, queries.

Core Kubernetes kinds go to `kubernetes-validate --strict` (PyPI); it skips custom resources, so
ServiceMonitor, PrometheusRule and ScaledObject are checked against their CRD schemas by
tests/node/validate-crds.mjs (npm @kubernetes-models/*, offline, run with node).
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.node import NODE_MODULES, VALIDATE_CRDS, node

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUBERNETES_VALIDATE = REPO_ROOT / ".venv" / "bin" / "kubernetes-validate"

# API groups of the custom resources in deploy/ (their schemas: CRD_SCHEMAS).
CUSTOM_API_GROUPS = frozenset({"monitoring.coreos.com", "keda.sh"})


@dataclass(frozen=True)
class Manifest:
    """One YAML document of a file in deploy/."""

    path: Path
    index: int
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}#{self.index}"

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def is_custom_resource(self) -> bool:
        return str(self.doc.get("apiVersion", "")).split("/")[0] in CUSTOM_API_GROUPS


def manifests(directory: Path) -> list[Manifest]:
    """Every Kubernetes object in the directory's *.yaml (kustomization.yaml excluded)."""
    found: list[Manifest] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc is not None:
                found.append(Manifest(path, index, doc))
    return found


def only(found: Iterable[Manifest], kind: str) -> dict[str, Any]:
    """The one object of `kind`."""
    (doc,) = [m.doc for m in found if m.kind == kind]
    return doc


def kubernetes_validate(paths: Sequence[Path], version: str | None = None) -> str:
    """Output of `kubernetes-validate --strict` over the files; AssertionError if it fails."""
    if not KUBERNETES_VALIDATE.exists():
        raise AssertionError(f"{KUBERNETES_VALIDATE} missing: run `scripts/setup.sh --dev`")
    cmd = [str(KUBERNETES_VALIDATE), "--strict"]
    if version is not None:
        cmd += ["--kubernetes-version", version]
    done = subprocess.run([*cmd, *map(str, paths)], capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def crd_schema_errors(objects: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, str | None]:
    """{name: None if valid, else the schema error} for custom resources (see module doc)."""
    done = subprocess.run(
        [node(), str(VALIDATE_CRDS), str(NODE_MODULES)],
        input=json.dumps([{"name": name, "doc": doc} for name, doc in objects]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["name"] for r in results] == [name for name, _ in objects]
    return {r["name"]: r["error"] for r in results}


def image_repository() -> str:
    """`ghcr.io/<owner>/<name>` from pyproject's Homepage (a GitHub URL)."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    homepage = pyproject["project"]["urls"]["Homepage"]
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)/?", homepage)
    assert match, f"Homepage {homepage!r} is not a GitHub repository URL"
    return f"ghcr.io/{match[1]}/{match[2]}".lower()


def scaledobject_queries(path: Path = DEPLOY / "keda" / "scaledobject.yaml") -> dict[str, str]:
    """{queue: PromQL} of the ScaledObject's prometheus triggers, one per queue.

    Each query selects one queue of the recording rule by an exact `queue="..."` matcher;
    tests/test_monitoring_e2e.py evaluates them on real Prometheus 2 and 3.
    """
    (scaled,) = [m.doc for m in manifests(path.parent) if m.kind == "ScaledObject"]
    queries: dict[str, str] = {}
    for trigger in scaled["spec"]["triggers"]:
        query = trigger["metadata"]["query"]
        (queue,) = re.findall(r'\bqueue="([^"]+)"', query)
        assert queue not in queries, f"two triggers for queue {queue!r}"
        queries[queue] = query
    return queries
