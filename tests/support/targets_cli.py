"""Helpers of the tests that run the CLI and the reports on several targets (tests/cli/, tests/reports/):
a config folder with a targets.yaml, real databases for its targets (a `jobs` table for the test `app`
pack, the seeded sample app for the confirmations pack), and the environment that points the CLI or a
worker at them. tests/targets/ keeps its own (the same shapes)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
import yaml

from tests.support.targets import APP_CHECKS, APP_PACK, jobs_database  # noqa: F401 - the cli and reports tests'


def write_config(root: Path, targets: dict[str, str], routing: dict | None = None) -> Path:
    """A config folder at `root`: packs.yaml enabling the fleet's own pack, a test pack `app` (one check,
    jobs_backlog), `routing` as routing.yaml (default: every alert to email), and a targets.yaml with
    one entry per `targets` item, name -> its packs ("[app]"), its URL from ${NAME_URL}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "packs.yaml").write_text("enabled: [fleet]\n")
    (root / "app").mkdir(exist_ok=True)
    (root / "app" / "pack.yaml").write_text(APP_PACK)
    (root / "app" / "checks.yaml").write_text(APP_CHECKS)
    routing = routing or {"channels": {"email": {"kind": "email"}},
                          "routes": [{"match": {}, "channels": ["email"], "group_wait": "0s"}]}
    (root / "routing.yaml").write_text(yaml.safe_dump(routing))
    (root / "targets.yaml").write_text("targets:\n" + "".join(
        f"  - name: {name}\n    url: ${{{url_var(name)}}}\n    packs: {packs}\n" for name, packs in targets.items()))
    return root


def url_var(target: str) -> str:
    return f"{target.upper()}_URL"


def target_env(env: dict[str, str], config: Path, urls: dict[str, str]) -> dict[str, str]:
    """`env` (the root conftest's) for a CLI or a worker reading `config`: only the fleet's own pack
    enabled by packs.yaml (not OPSFLEET_PACKS=all), each target's URL in its variable."""
    return {**env, "OPSFLEET_CONFIG_DIR": str(config), "OPSFLEET_PACKS": "fleet",
            **{url_var(name): url for name, url in urls.items()}}


def confirmations_database(fresh_database, scale: int, now: datetime) -> str:
    """A fresh database with the sample app (seed 000's tables, the confirmations pack's) seeded with
    `scale` registrations over the 120 days before `now`; its URL."""
    from ops.sample_app import init, seed
    from worker.fleet.db import create

    url = fresh_database()
    engine = create(url, pool_size=1)
    init(engine)
    seed(engine, scale, now=now)
    engine.dispose()
    return url


def registrations(url: str, start: datetime, end: datetime) -> int:
    """How many registrations the database at `url` holds created in [start, end)."""
    from worker.fleet.db import create

    engine = create(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM registrations WHERE created_at >= :s AND created_at < :e"),
                                {"s": start, "e": end}).scalar()
    finally:
        engine.dispose()
