"""The reference pages, rendered from the tables they document: `docs/metrics.md` from the
metric table. Pure text; `tests/support/generated.py` writes the files and the tests check
that the committed ones are current.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter import metrics
from exporter.model import STALE_AFTER_INTERVALS

GENERATED_BY = "`.venv/bin/python -m tests.support.generated`"


def _code(items: Iterable[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


def _cell(text: str) -> str:
    """`text` for a Markdown table cell: `|` escaped."""
    return text.replace("|", "\\|")


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
        cells = (
            f"`{family.name}`",
            kind,
            _code(family.labels),
            family.unit,
            family.sidekiq,
            meaning,
        )
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"
