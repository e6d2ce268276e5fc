"""Plain-dict builders of Grafana dashboards in Grafana's export format: data sources are `__inputs`
(`${DS_PROMETHEUS}`, `${DS_POSTGRES}`, `${DS_FLEET}`) chosen on import, never a uid of one Grafana.
A Board places its panels left to right in rows of 24 columns and numbers them.

`Board.by_target()` gives a board the `target` variable (the targets on /metrics, several or All) and
puts `target=~"$target"` in every selector of a metric that carries `target` (TARGETED: the per-check,
per-alert and per-job series of worker/watch/metrics.py); SQL over fleet.alerts filters with
TARGET_SQL."""

from __future__ import annotations

import re
from typing import Any

# input name -> (label, plugin id, what to pick on import)
INPUTS = {
    "DS_PROMETHEUS": ("Prometheus", "prometheus", "the Prometheus that scrapes `opsfleet metrics` (/metrics)"),
    "DS_POSTGRES": ("Application Postgres", "postgres", "the monitored application's database (DATABASE_URL), "
                    "read-only user"),
    "DS_FLEET": ("Fleet Postgres", "postgres", "the fleet's database (FLEET_DATABASE_URL, schema fleet; by "
                 "default the application's)"),
}
PLUGIN_NAMES = {"prometheus": "Prometheus", "postgres": "PostgreSQL"}
GRAFANA_VERSION = "10.4.0"
SCHEMA_VERSION = 39


# the exporter's metrics that carry `target` (the channel and outbox ones do not), and where a
# selector of one begins: its name, then its `{` if it has matchers
TARGETED = re.compile(r"\b(opsfleet_(?:alerts|check_[a-z_]+|job_[a-z_]+))\b(\s*\{)?")
TARGET_FILTER = 'target=~"$target"'
# fleet.alerts keeps a target's key ("" for the implicit default): as the `target` label names it
TARGET_SQL = "COALESCE(NULLIF(target, ''), 'default') IN ($target)"


def by_target(expr: str) -> str:
    """`expr` with target=~"$target" first in the selector of every metric that carries `target`."""
    return TARGETED.sub(lambda m: f"{m.group(1)}{{{TARGET_FILTER}" + (", " if m.group(2) else "}"), expr)


def target_variable() -> dict[str, Any]:
    """The `target` variable: every target the exporter names (opsfleet_check_runs has a series for each
    check on each target, and `fleet`), several at once, All by default."""
    query = "label_values(opsfleet_check_runs, target)"
    return {"name": "target", "label": "Target", "type": "query", "datasource": ds("DS_PROMETHEUS"),
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "definition": query, "refresh": 2, "multi": True, "includeAll": True, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": []}


def ds(name: str) -> dict[str, str]:
    return {"type": INPUTS[name][1], "uid": "${" + name + "}"}


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    """Threshold steps, lowest first: (None, "red"), (95, "yellow"), (99, "green")."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def _panel(title: str, kind: str, source: str, targets: list[dict[str, Any]], *, unit: str | None,
           description: str, steps: dict[str, Any] | None, options: dict[str, Any] | None,
           minmax: tuple[float, float] | None) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if steps:
        defaults["thresholds"] = steps
        defaults["color"] = {"mode": "thresholds"}
    if minmax:
        defaults["min"], defaults["max"] = minmax
    return {"type": kind, "title": title, "description": description, "datasource": ds(source),
            "targets": [{**t, "datasource": ds(source), "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
            "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options or {}}


def prom(title: str, kind: str, *exprs: str | tuple[str, str], unit: str | None = None, description: str = "",
         steps: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
         minmax: tuple[float, float] | None = None, instant: bool = False) -> dict[str, Any]:
    """A panel of PromQL targets; an expr is a string or (expr, legendFormat)."""
    targets = []
    for e in exprs:
        expr, legend = (e, "") if isinstance(e, str) else e
        t: dict[str, Any] = {"expr": expr, "legendFormat": legend or "__auto", "range": not instant,
                             "instant": instant}
        targets.append(t)
    return _panel(title, kind, "DS_PROMETHEUS", targets, unit=unit, description=description, steps=steps,
                  options=options, minmax=minmax)


def sql(title: str, kind: str, query: str, *, fmt: str = "table", source: str = "DS_POSTGRES",
        unit: str | None = None, description: str = "", steps: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None, minmax: tuple[float, float] | None = None) -> dict[str, Any]:
    """A panel of one SQL target (fmt: table or time_series, whose query returns a "time" column)."""
    target = {"format": fmt, "rawQuery": True, "editorMode": "code", "rawSql": " ".join(query.split())}
    return _panel(title, kind, source, [target], unit=unit, description=description, steps=steps,
                  options=options, minmax=minmax)


def query_variable(name: str, label: str, query: str, source: str = "DS_POSTGRES") -> dict[str, Any]:
    """A multi-value template variable (All by default) filled by a SQL query."""
    return {"name": name, "label": label, "type": "query", "datasource": ds(source), "query": query,
            "definition": query, "refresh": 2, "multi": True, "includeAll": True, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": []}


class Board:
    """A dashboard: rows of panels placed left to right, ids in order."""

    def __init__(self, uid: str, title: str, *, description: str, refresh: str, time_from: str = "now-24h",
                 tags: tuple[str, ...] = ()) -> None:
        self.uid, self.title, self.description, self.refresh, self.time_from = uid, title, description, refresh, time_from
        self.tags = ["opsfleet", *tags]
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self.targeted = False
        self._x = self._y = self._row_h = 0

    def by_target(self) -> Board:
        """The `target` variable, first; every PromQL target added from now on filtered by it."""
        self.variables.insert(0, target_variable())
        self.targeted = True
        return self

    def row(self, title: str) -> Board:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}})
        self._y += 1
        return self

    def add(self, panel: dict[str, Any], w: int = 6, h: int = 8) -> Board:
        if self._x + w > 24:
            self._newline()
        if self.targeted:
            panel = {**panel, "targets": [{**t, "expr": by_target(t["expr"])} if "expr" in t else t
                                          for t in panel.get("targets", [])]}
        self.panels.append({**panel, "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y}})
        self._x += w
        self._row_h = max(self._row_h, h)
        return self

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = self._row_h = 0

    def json(self) -> dict[str, Any]:
        panels = [{"id": i, **p} for i, p in enumerate(self.panels, start=1)]
        used = sorted({t["datasource"]["uid"][2:-1] for p in panels for t in p.get("targets", [])}
                      | {v["datasource"]["uid"][2:-1] for v in self.variables})
        plugins = sorted({INPUTS[n][1] for n in used})
        return {
            "__inputs": [{"name": n, "label": INPUTS[n][0], "description": INPUTS[n][2], "type": "datasource",
                          "pluginId": INPUTS[n][1], "pluginName": PLUGIN_NAMES[INPUTS[n][1]]} for n in used],
            "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
                           *({"type": "datasource", "id": p, "name": PLUGIN_NAMES[p], "version": "1.0.0"}
                             for p in plugins),
                           *({"type": "panel", "id": k, "name": k, "version": ""}
                             for k in sorted({p["type"] for p in panels} - {"row"}))],
            "uid": self.uid, "title": self.title, "description": self.description, "tags": self.tags,
            "editable": True, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION, "version": 1,
            "refresh": self.refresh, "time": {"from": self.time_from, "to": "now"}, "timezone": "utc",
            "annotations": {"list": []}, "links": [], "templating": {"list": self.variables}, "panels": panels,
        }
