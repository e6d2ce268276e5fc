"""`opsfleet db upgrade` creates schema fleet; it is idempotent and safe from several processes at once."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from tests.support import REPO
from tests.support.cli import run_cli
from worker.fleet.db import normalize_url

TABLES = {"check_runs", "alerts", "alert_events", "notifications", "silences", "job_runs", "held_back", "check_schedule",
          "job_schedule", "alert_evidence", "alert_actions", "statement_snapshots", "alembic_version"}


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
        assert "revision 0014" in proc.stdout
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


def test_jobs_per_target_keeps_every_job_row_of_before_as_the_implicit_targets(fresh_database):
    """0009: the job runs and the job schedule of a fleet of one database stay where they were (target
    ''), and the same job on two targets no longer collides in job_schedule."""
    from worker.fleet.migrate import upgrade

    url = fresh_database()
    upgrade(url, "0008")
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO fleet.job_runs (job, kind, status) VALUES ('archive_webhook_logs', 'archive', 'ok')"))
        conn.execute(sa.text("""INSERT INTO fleet.job_schedule (family, job, queue, longest_gap_s, enabled, recorded_at)
                                VALUES ('maintenance', 'archive_webhook_logs', 'maintenance', 3600, true, now())"""))
    upgrade(url)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT job, target FROM fleet.job_runs")).all() == [("archive_webhook_logs", "")]
        assert conn.execute(sa.text("SELECT job, target FROM fleet.job_schedule")).all() == [("archive_webhook_logs", "")]
        conn.execute(sa.text("""INSERT INTO fleet.job_schedule (family, job, target, queue, longest_gap_s, enabled,
                                                                recorded_at)
                                VALUES ('maintenance', 'archive_webhook_logs', 'b', 'maintenance', 3600, true, now())"""))
    engine.dispose()
