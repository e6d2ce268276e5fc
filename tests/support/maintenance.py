"""The repository's maintenance jobs with test-sized batches, and webhook_logs rows for them to move:
tests/maintenance/ and tests/reliability/."""

from __future__ import annotations

import sqlalchemy as sa

from tests.support import REPO
from worker.config import load_config
from worker.maintenance.spec import MaintenanceJob

REPO_JOBS = load_config(REPO / "config", packs="all").maintenance


def job(name: str, **changes) -> MaintenanceJob:
    """A job as one of the repository's packs configures it (config/<pack>/maintenance.yaml), with test-sized
    batches."""
    return REPO_JOBS[name].model_copy(update=changes)


def add_webhook_logs(conn, n: int, days_old: float, start: int | None = None) -> None:
    conn.execute(sa.text(
        """INSERT INTO webhook_logs (webhook_name, registration_id, status_code, duration_ms, payload, created_at)
           SELECT 'stripe-webhook', i, CASE WHEN i % 10 = 0 THEN 500 ELSE 200 END, i % 300,
                  jsonb_build_object('n', i), now() - make_interval(secs => :age) - make_interval(secs => i % 3600)
           FROM generate_series(1, :n) i"""), {"n": n, "age": days_old * 86400})
