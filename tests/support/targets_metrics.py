"""What the tests of `target` on the fleet's own watch share (tests/watch: metrics and heartbeat;
tests/ops: the rules and dashboards): a config folder with two declared targets, `a` and `b`, of a
small `app` pack, rows of the fleet's state written for one target, and a scrape of the exporter."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support import REPO
from worker.config import FleetConfig, load_config
from worker.watch.metrics import FleetCollector

TARGETS = ("a", "b")
# two checks of the app pack, on every target that enables it: one a minute, one every five
APP_CHECKS = [
    {"name": "app_up", "description": "the target's database answers", "schedule": "1m", "query": "SELECT 1 AS value",
     "condition": "< 1", "severity": "critical", "summary": "the database does not answer"},
    {"name": "app_rows", "description": "rows waiting, per shard", "schedule": "5m",
     "query": "SELECT 's1' AS shard, 1 AS value", "condition": "> 5", "severity": "warning",
     "summary": "{{ value }} rows waiting", "export_labels": ["shard"]},
]


def write_two_targets(folder: Path, *, schedule: str | None = None, queue_b: str | None = None) -> Path:
    """A config folder: packs.yaml enabling the fleet's own pack, the `app` pack, and targets.yaml with
    `a` and `b` (URLs from $A_URL and $B_URL; `b` on a queue of its own with `queue_b`). `schedule`
    replaces the app checks' schedules."""
    (folder / "app").mkdir(parents=True, exist_ok=True)
    (folder / "packs.yaml").write_text("enabled: [fleet]\n")
    (folder / "app" / "pack.yaml").write_text("description: a test application\n")
    checks = [{**c, "schedule": schedule or c["schedule"]} for c in APP_CHECKS]
    (folder / "app" / "checks.yaml").write_text(yaml.safe_dump({"checks": checks}))
    targets = [{"name": "a", "url": "${A_URL}", "packs": ["app"]},
               {"name": "b", "url": "${B_URL}", "packs": ["app"], **({"queue": queue_b} if queue_b else {})}]
    (folder / "targets.yaml").write_text(yaml.safe_dump({"targets": targets}))
    return folder


def with_fleet_pack_hourly(folder: Path) -> Path:
    """The repository's fleet pack copied into `folder` (for OPSFLEET_PACKS_DIR), every check of it on
    an hourly schedule: a worker and beat run it without it crowding the test's own checks."""
    shutil.copytree(REPO / "config" / "fleet", folder / "fleet", ignore=shutil.ignore_patterns("tests"))
    checks = yaml.safe_load((folder / "fleet" / "checks.yaml").read_text())
    for c in checks["checks"]:
        c["schedule"] = "1h"
        c.pop("runbook", None)  # relative to the shipped config, not this copy
    (folder / "fleet" / "checks.yaml").write_text(yaml.safe_dump(checks))
    return folder


def load_two_targets(folder: Path, monkeypatch: Any, url: str = "postgresql://x/app", **kw: Any) -> FleetConfig:
    """write_two_targets' folder, loaded with both targets' URLs set to `url`."""
    monkeypatch.setenv("A_URL", url)
    monkeypatch.setenv("B_URL", url)
    return load_config(write_two_targets(folder, **kw), packs=["fleet"])


def run_at(conn: Any, check: str, target: str, at: datetime, status: str = "ok") -> None:
    """A run of `check` on the target whose state key is `target`, started at `at`."""
    conn.execute(sa.text("INSERT INTO fleet.check_runs (check_name, target, slot, started_at, status) "
                         "VALUES (:c, :t, :at, :at, :s)"), {"c": check, "t": target, "at": at, "s": status})


def instance(conn: Any, check: str, target: str, state: str, *, value: float | None = None,
             labels: dict[str, str] | None = None, severity: str = "warning") -> None:
    """An alert instance of `check` on the target whose state key is `target`."""
    labels = labels or {}
    conn.execute(sa.text(
        """INSERT INTO fleet.alerts (fingerprint, check_name, target, labels, severity, state, since, last_eval_at,
                                     last_value)
           VALUES (:fp, :c, :t, CAST(:labels AS jsonb), :sev, :st, now(), now(), :v)"""),
        {"fp": f"{check}/{target}/{sorted(labels.items())}", "c": check, "t": target, "labels": json.dumps(labels),
         "sev": severity, "st": state, "v": value})


def scrape(engine: Any, cfg: FleetConfig) -> dict[str, list[Sample]]:
    """One scrape of the exporter over `engine`'s state: family name -> its samples."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, cfg))
    return {f.name: f.samples for f in text_string_to_metric_families(generate_latest(registry).decode())}


def of(samples: list[Sample], **labels: str) -> list[Sample]:
    """The samples carrying every one of `labels`."""
    return [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]


def scraped_labels(engine: Any, cfg: FleetConfig) -> dict[str, set[str]]:
    """Each sample name of one scrape -> the label names its series carry."""
    labels: dict[str, set[str]] = {}
    for samples in scrape(engine, cfg).values():
        for s in samples:
            labels.setdefault(s.name, set()).update(s.labels)
    return labels


TARGET_MATCHER = ("target", "=~", "$target")


SELECTOR = re.compile(r'"[^"]*"|(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\{(?:[^}"]|"[^"]*")*\})?')


def unfiltered(expr: str, targeted: set[str]) -> list[str]:
    """The selectors of `expr` that select a metric carrying `target` (`targeted`) without the
    dashboards' target=~"$target" among their matchers."""
    out = []
    for m in SELECTOR.finditer(expr):  # a quoted string is matched whole, so a label value is never a name
        if m.group(1) in targeted and TARGET_MATCHER not in re.findall(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"',
                                                                       m.group(2) or ""):
            out.append(m.group(0))
    return out
