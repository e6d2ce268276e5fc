"""Several real target databases behind one config folder, for the tests of the targets overview (the
status page and /api/, tests/web/) and of `opsfleet health`'s targets (tests/watch/): the shape of
tests/targets/conftest.py's fleet (an `app` pack reading a `jobs` table), here because test folders
share helpers through tests/support/ only. Checks are evaluated as `checks.run` does for a target:
the real engine, on the target's database, with its key and labels."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import yaml

from tests.support import REPO
from tests.support.targets import APP_CHECKS as BASE_CHECKS
from tests.support.targets import APP_PACK, UNREACHABLE, jobs_database  # noqa: F401 - the web and watch tests' too
from worker.checks.engine import Outcome, run_check
from worker.config import FleetConfig
from worker.fleet.db import checks_engine
from worker.targets import FLEET

APP_CHECKS = BASE_CHECKS + """  - name: jobs_waiting
    description: any job waiting (a test check of the app pack)
    schedule: 5m
    query: SELECT count(*) AS value FROM jobs WHERE NOT done
    condition: "> 0"
    severity: warning
    summary: "{{ value | int }} jobs waiting"
"""  # noqa: S608 - YAML, not SQL
ROUTING = yaml.safe_dump({
    "channels": {"email": {"kind": "email"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["email"], "group_wait": "0s", "repeat_interval": "4h"}],
    "inhibit_rules": yaml.safe_load((REPO / "config" / "routing.yaml").read_text())["inhibit_rules"],
})


def write_config(folder: Path, urls: dict[str, str] | None, labels: dict[str, dict[str, str]] | None = None) -> Path:
    """A config folder: packs.yaml enabling the fleet's own pack (and `app` without targets), the `app`
    pack, routing.yaml, and targets.yaml naming `urls` (target -> URL, packs postgres and app), or no
    targets.yaml when `urls` is None (DATABASE_URL is the one target `default`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "packs.yaml").write_text("enabled: [fleet]\n" if urls is not None else "enabled: [fleet, app]\n")
    (folder / "app").mkdir(exist_ok=True)
    (folder / "app" / "pack.yaml").write_text(APP_PACK)
    (folder / "app" / "checks.yaml").write_text(APP_CHECKS)
    (folder / "routing.yaml").write_text(ROUTING)
    if urls is not None:
        entries = [{"name": n, "url": u, "packs": ["postgres", "app"], **({"labels": labels[n]} if labels and n in labels
                                                                            else {})} for n, u in urls.items()]
        (folder / "targets.yaml").write_text(yaml.safe_dump({"targets": entries}, sort_keys=False))
    return folder


def evaluate(cfg: FleetConfig, fleet, check: str, target: str | None, at: datetime,
             slot: datetime | None = None) -> Outcome:
    """What checks.run does for (check, target) at `at` (in `at`'s slot, or `slot`): the target's
    database, its key and labels."""
    t = cfg.targets.get(target) if target else None
    monitored = checks_engine(url=t.url) if t is not None and t.url else fleet
    return run_check(cfg.checks[check], monitored=monitored, fleet=fleet, fleet_queries=fleet, now=at, slot=slot,
                     routing=cfg.routing, target=t.key if t else FLEET, target_labels=t.alert_labels() if t else None)
