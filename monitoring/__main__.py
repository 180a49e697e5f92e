"""`python -m monitoring`: write alerts/sidekiq.rules.yml, its PrometheusRule and dashboards/*.json.

    python -m monitoring                       # regenerate the committed files
    python -m monitoring --check               # exit 1 if they differ from the sources
    python -m monitoring --runbook-base-url https://wiki.example.com/sidekiq-runbooks \\
        --dashboard-base-url https://grafana.example.com --output-dir /tmp/mine
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from monitoring import dashboards, grafana, prometheusrule, rules
from monitoring.config import DEFAULT_DASHBOARD_BASE_URL, DEFAULT_EXPORTER_JOB, REPO_ROOT, Config


def outputs(config: Config) -> dict[str, str]:
    """Every generated file: path relative to the repository (or --output-dir) -> text."""
    rule_file = rules.render(config)
    files = {
        rules.RULE_FILE: rule_file,
        prometheusrule.PROMETHEUS_RULE_FILE: prometheusrule.render(rule_file),
    }
    for dashboard in dashboards.DASHBOARDS:
        text = json.dumps(grafana.render(dashboard), indent=2, ensure_ascii=False) + "\n"
        files[f"dashboards/{dashboard.uid}.json"] = text
    return files


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Config.default()
    parser = argparse.ArgumentParser(
        prog="python -m monitoring",
        description="Generate the Prometheus rule file, its PrometheusRule and the Grafana "
        "dashboards.",
    )
    parser.add_argument(
        "--runbook-base-url",
        default=defaults.runbook_base_url,
        help="page holding the runbooks; runbook_url is <this>#<alert name in lower case> "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--dashboard-base-url",
        default=DEFAULT_DASHBOARD_BASE_URL,
        help="your Grafana's root URL, for dashboard_url (default: %(default)s)",
    )
    parser.add_argument(
        "--exporter-job",
        default=DEFAULT_EXPORTER_JOB,
        help="Prometheus scrape job of the exporter, for the up and absent() alerts "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO_ROOT,
        help="write alerts/, dashboards/ and deploy/kubernetes/prometheusrule.yaml under this "
        "directory (default: the repository)",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file would change"
    )
    args = parser.parse_args(argv)
    config = Config(args.runbook_base_url, args.dashboard_base_url, args.exporter_job)
    stale = []
    for relative, text in outputs(config).items():
        path = args.output_dir / relative
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(relative)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ from the sources" if args.check else "written"
    for relative in stale:
        print(f"{relative}: {verb}", file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
