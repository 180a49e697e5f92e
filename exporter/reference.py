"""The reference pages rendered from the rows they document: docs/metrics.md from the metric
table, docs/configuration.md from the flag and config-file key rows. Pure text: it writes no
file (tests/support/generated.py does).
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter import metrics, settings, targets
from exporter.model import STALE_AFTER_INTERVALS

GENERATED_BY = "`.venv/bin/python -m tests.support.generated`"


def _code(items: Iterable[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


def _row(*cells: str) -> str:
    """One Markdown table row; `|` in a cell is escaped."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def metrics_reference() -> str:
    """docs/metrics.md: every family, its type, labels, unit, Sidekiq versions and meaning."""
    lines = [
        "# Metrics reference",
        "",
        f"<!-- Generated from exporter/metrics.py by {GENERATED_BY}: edit the table there. -->",
        "",
        "Every family the exporter serves. Sidekiq families are sampled on the exporter's own "
        "clock (`--poll.interval`) and their HELP text says so (`Sampled every 10s.`); no "
        "sample carries a timestamp. A target whose last good poll is older than "
        f"{STALE_AFTER_INTERVALS} poll intervals is stale: its Sidekiq series "
        "disappear and `sidekiq_up` is 0, while the exporter's own series stay. The exporter "
        "also serves client_python's `process_*` and `python_info` series.",
        "",
        "| name | type | labels | unit | Sidekiq | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for family in metrics.METRICS:
        kind = "gauge (info: value 1)" if family.kind == "info" else family.kind
        meaning = f"{family.help} {family.notes}".strip()
        lines.append(
            _row(
                f"`{family.name}`", kind, _code(family.labels), family.unit, family.sidekiq, meaning
            )
        )
    return "\n".join(lines) + "\n"


def _default(text: str, is_value: bool) -> str:
    return f"`{text}`" if is_value else text


def configuration_reference() -> str:
    """docs/configuration.md: every flag with its variable and default, every config-file key."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from exporter/settings.py and exporter/targets.py by "
        f"{GENERATED_BY}: edit the rows there. -->",
        "",
        f"Every flag has an environment variable: `{settings.ENV_PREFIX}` and the flag name in "
        "upper case, dots and dashes as underscores. A flag given wins over its variable; an "
        "empty variable counts as unset. A bad flag, variable or config file stops the exporter "
        "at start: exit code 2 and one line naming the problem.",
        "",
        "## Flags",
        "",
        "| flag | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for flag in settings.FLAGS:
        names = f"`--{flag.name}`" + (f", `--no-{flag.name}`" if flag.boolean else "")
        default = _default(flag.default_text, flag.default_is_value)
        lines.append(_row(names, f"`{flag.env}`", default, flag.help))
    lines += [
        "",
        "## The config file",
        "",
        "`--config.file` is a YAML file with two optional lists. `targets:` holds one entry per "
        "Sidekiq Redis and replaces the one target the `--redis.*` and `--target.name` flags "
        "describe (giving both is an error); TLS, ACL users and Sentinel are explained in "
        "[security.md](security.md). `queues:` gives queues their SLA and component, the first "
        "matching entry winning over the queue's name ([queue-slas.md](queue-slas.md)).",
    ]
    for section, keys in (("targets", targets.TARGET_KEYS), ("queues", targets.QUEUE_KEYS)):
        lines += [
            "",
            f"### `{section}:` entries",
            "",
            "| key | default | meaning |",
            "|---|---|---|",
        ]
        for key in keys:
            default = _default(key.default_text, key.default_is_value)
            lines.append(_row(f"`{key.name}`", default, key.help))
    return "\n".join(lines) + "\n"
