"""`opsfleet db upgrade` creates schema fleet; it is idempotent and safe from several processes at once."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from tests.conftest import REPO, run_cli
from worker.fleet.db import normalize_url

TABLES = {"check_runs", "alerts", "alert_events", "notifications", "silences", "job_runs", "held_back", "check_schedule",
          "job_schedule", "alembic_version"}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'fleet'"))
        names = {r[0] for r in rows}
    engine.dispose()
    return names


def test_upgrade_is_idempotent(fresh_database, env):
    url = fresh_database()
    for _ in range(2):
        proc = run_cli(["db", "upgrade"], {**env, "DATABASE_URL": url})
        assert proc.returncode == 0, proc.stderr
        assert "revision 0007" in proc.stdout
    assert _tables(url) == TABLES


def test_concurrent_upgrades_from_several_containers(fresh_database, env):
    url = fresh_database()
    procs = [
        subprocess.Popen([sys.executable, "-m", "worker.cli", "db", "upgrade"], env={**env, "DATABASE_URL": url},  # noqa: S603
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert _tables(url) == TABLES


def test_dedup_and_slot_constraints_exist(fleet_db):
    engine = sa.create_engine(normalize_url(fleet_db))
    with engine.connect() as conn:
        names = {r[0] for r in conn.execute(sa.text(
            "SELECT conname FROM pg_constraint WHERE connamespace = 'fleet'::regnamespace AND contype = 'u'"))}
    engine.dispose()
    assert {"notifications_dedup_key", "check_runs_one_per_slot"} <= names
