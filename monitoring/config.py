"""Where the generated alerts link to and which scrape job they watch: one place, overridable.

    runbook_url    <runbook base>#<alert name in lower case>
                   default: <Homepage>/blob/main/docs/runbooks.md, Homepage from pyproject.toml
    dashboard_url  <Grafana base>/d/<dashboard uid>/<slug>?var-...=<the alert's labels>
                   default: http://localhost:3000, Grafana's own default address

Users who host runbooks or Grafana elsewhere regenerate with
`python -m monitoring --runbook-base-url URL --dashboard-base-url URL`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS_PATH = "docs/runbooks.md"
# Grafana's default `root_url`: a placeholder that works for a local Grafana and is obviously
# one to replace for a shared one.
DEFAULT_DASHBOARD_BASE_URL = "http://localhost:3000"
# The scrape job of the exporter, as the alerts on the monitoring path select it (`up`,
# `absent`): the name the README's scrape config and the Kubernetes Service use.
DEFAULT_EXPORTER_JOB = "sidekiq-exporter"


def homepage(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """`[project.urls] Homepage` of pyproject.toml: the one place the project's home is written."""
    with pyproject.open("rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Homepage"]
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"{pyproject}: [project.urls] Homepage is not an https URL: {url!r}")
    return url.rstrip("/")


def default_runbook_base_url() -> str:
    return f"{homepage()}/blob/main/{RUNBOOKS_PATH}"


@dataclass(frozen=True)
class Config:
    """What the generated files depend on besides the rules and panels themselves."""

    runbook_base_url: str
    dashboard_base_url: str = DEFAULT_DASHBOARD_BASE_URL
    exporter_job: str = DEFAULT_EXPORTER_JOB

    @classmethod
    def default(cls) -> Config:
        return cls(runbook_base_url=default_runbook_base_url())

    def runbook_url(self, alert: str) -> str:
        """The runbook section of an alert: its heading is the alert name (anchor: lower case)."""
        return f"{self.runbook_base_url.rstrip('/')}#{alert.lower()}"

    def dashboard_url(self, uid: str, slug: str, labels: tuple[str, ...]) -> str:
        """A dashboard link whose variables are the alert's labels (an alert template)."""
        query = "&".join(f"var-{label}={{{{ $labels.{label} | urlquery }}}}" for label in labels)
        return f"{self.dashboard_base_url.rstrip('/')}/d/{uid}/{slug}" + (
            f"?{query}" if query else ""
        )
