"""Maintenance jobs and backlogs on several targets (config/targets.yaml): a config folder whose `app`
pack has a purge job and the confirmations backlog, target databases holding the sample application's
tables, and the process pointed at them (config, settings, engines) for a task called in-process:
tests/maintenance/ and tests/backlog/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

APP_PACK = """description: a test application (the sample app's tables)
requires: {tables: [webhook_logs, registrations]}
"""
PLAIN_PACK = "description: a pack with nothing of the app's\n"
APP_JOBS = """jobs:
  - name: purge_old_webhook_logs
    description: webhook_logs older than 30 days (a test job of the app pack)
    kind: purge
    schedule: "0 3 * * *"
    table: webhook_logs
    older_than: 30d
    batch_size: 100
    pause: 0s
"""
OWN_JOBS = """jobs:
  - name: analyze_everything
    description: the config folder's own job, on every target
    kind: analyze
    schedule: "30 2 * * *"
"""
APP_BACKLOGS = """backlogs:
  - name: confirmations
    description: the confirmation backlog (a test backlog of the app pack)
    task: backlog.reprocess_confirmations
    schedule: 5m
    kwargs: {limit: 20000, batch_size: 100}
"""


def write_config(root: Path, targets: dict[str, tuple[str, list[str]]] | None) -> Path:
    """A config folder under `root`: packs.yaml enabling the fleet's own pack, the `app` pack (a purge
    job, the confirmations backlog), a `plain` pack with neither, a maintenance job of the folder's own,
    and, when `targets` is given, targets.yaml: name -> (the variable holding its URL, its packs)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "packs.yaml").write_text("enabled: [fleet]\n")
    (root / "maintenance.yaml").write_text(OWN_JOBS)
    for name, files in {"app": {"pack.yaml": APP_PACK, "maintenance.yaml": APP_JOBS, "backlogs.yaml": APP_BACKLOGS},
                        "plain": {"pack.yaml": PLAIN_PACK}}.items():
        (root / name).mkdir(exist_ok=True)
        for f, text in files.items():
            (root / name / f).write_text(text)
    if targets is not None:
        (root / "targets.yaml").write_text("targets:\n" + "".join(
            f"  - name: {n}\n    url: ${{{var}}}\n    packs: [{', '.join(packs)}]\n" for n, (var, packs) in targets.items()))
    return root


def sample_database(fresh_database) -> str:
    """A fresh database with the sample application's (empty) tables: a target's database. Its URL."""
    from ops import sample_app
    from worker.fleet.db import create

    url = fresh_database()
    engine = create(url, pool_size=1)
    sample_app.init(engine)
    engine.dispose()
    return url


def count(url: str, sql: str, **params) -> int:
    from worker.fleet.db import create

    engine = create(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def _forget() -> None:
    """Drop what the process cached of its environment: settings, config, engines."""
    from worker import config
    from worker.fleet import db
    from worker.fleet.settings import get_settings

    get_settings.cache_clear()
    config.get_config.cache_clear()
    for fn in (db.fleet_engine, db.monitored_engine, db.maintenance_engine):
        fn.cache_clear()
    for engine in db._maintenance_engines.values():
        engine.dispose()
    db._maintenance_engines.clear()


@contextmanager
def pointed_at(env: dict[str, str]) -> Iterator[None]:
    """This process's environment set to `env` (OPSFLEET_CONFIG_DIR, DATABASE_URL, the targets' URL
    variables ...), its cached settings, config and engines forgotten; restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _forget()
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        _forget()


@dataclass
class Targets:
    """Targets a and b (the app pack, each a database with the sample app's tables) and c (the plain
    pack, an empty database), in a config folder of their own; `env` points a process at them."""

    root: Path
    urls: dict[str, str]
    env: dict[str, str]


def make_targets(fresh_database, root: Path) -> Targets:
    urls = {"a": sample_database(fresh_database), "b": sample_database(fresh_database), "c": fresh_database()}
    write_config(root, {n: (f"{n.upper()}_URL", ["plain"] if n == "c" else ["app"]) for n in urls})
    env = {"OPSFLEET_CONFIG_DIR": str(root), "OPSFLEET_PACKS": "fleet",
           **{f"{n.upper()}_URL": url for n, url in urls.items()}}
    return Targets(root, urls, env)
