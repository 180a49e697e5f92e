"""A small builder for classic Grafana dashboard JSON (the shape Grafana 10.4 and later import).

Only what the dashboards here use: rows of time series, stat and bar gauge panels, Prometheus
queries, and query variables. Every panel and query points at the `datasource` variable;
every panel has a unit and a description. Panel ids and grid positions are assigned in order,
so the output is stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Pinned: the dashboard JSON model of Grafana 10.4 / 11.0. Newer Grafana migrates it on load.
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel.

    `instant`: one value per series at the end of the range (stat and bar gauge panels).
    `quiet`: why this query may return nothing while Sidekiq is busy and healthy (the
    end-to-end test requires data from every other query).
    """

    expr: str
    legend: str = ""
    instant: bool = False
    quiet: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat", "bargauge"
    width: int = 12
    height: int = 8
    min: float | None = 0
    max: float | None = None
    # (value, color) steps; the first value is None (the base). A line at the first real step
    # is drawn on time series panels.
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    stack: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Variable:
    """A Prometheus query variable (`label_values(...)`), multi-select with an `All` of `.*`."""

    name: str
    label: str
    query: str
    description: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    links: tuple[str, ...] = field(default=("sidekiq",))  # tags of the dashboards linked to

    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]


def _target(query: Query, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "instant": query.instant,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "refId": ref,
    }


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        },
    }
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stack else "none"},
            "thresholdsStyle": {"mode": "dashed" if len(panel.thresholds) > 1 else "off"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "timeseries":
        return {
            "legend": {
                "calcs": [],
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "stat":
        return {
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": reduce,
            "textMode": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "displayMode": "basic",
            "orientation": "horizontal",
            "reduceOptions": reduce,
            "showUnfilled": True,
        }
    raise ValueError(f"unknown panel kind {panel.kind!r}")


def _variable(v: Variable) -> dict[str, Any]:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "description": v.description,
        "includeAll": True,
        "label": v.label,
        "multi": True,
        "name": v.name,
        "options": [],
        "query": v.query,
        "refresh": 2,  # on time range change: queues and classes come and go
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def _datasource_variable() -> dict[str, Any]:
    return {
        "description": "The Prometheus that scrapes sidekiq-exporter.",
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's classic JSON model (import it as is)."""
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row in dashboard.rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        next_id, y, x, row_height = next_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(
                {
                    "datasource": DATASOURCE,
                    "description": panel.description,
                    "fieldConfig": _field_config(panel),
                    "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
                    "id": next_id,
                    "options": _options(panel),
                    "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
                    "title": panel.title,
                    "type": panel.kind,
                }
            )
            next_id, x, row_height = next_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": dashboard.description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": True,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": list(dashboard.links),
                "targetBlank": False,
                "title": "Sidekiq dashboards",
                "tooltip": "",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": list(dashboard.tags),
        "templating": {
            "list": [_datasource_variable(), *(_variable(v) for v in dashboard.variables)]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
        "weekStart": "",
    }


def queries(dashboard: Dashboard) -> Sequence[tuple[Panel, Query]]:
    """Every (panel, query) pair of a dashboard, in order."""
    return [(p, q) for p in dashboard.panels() for q in p.queries]
