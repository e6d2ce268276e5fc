"""Fixtures of the tests of worker/maintenance/: the sample application's database with the tables the
jobs work on emptied. The repository's jobs and webhook_logs rows: tests/support/maintenance.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker.fleet.db import create


@pytest.fixture
def engine(app_db_url):
    eng = create(app_db_url)
    with eng.begin() as conn:
        conn.execute(sa.text("""TRUNCATE webhook_logs, webhook_logs_archive, maintenance_log, whatsapp_error_logs,
                                rate_limit_logs, shows, reservation_cleanup_runs, seat_reservation_audit_log
                                RESTART IDENTITY CASCADE"""))
        conn.execute(sa.text("TRUNCATE fleet.job_runs, fleet.check_runs RESTART IDENTITY"))
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def two_targets(fresh_database, tmp_path_factory):
    """Targets a and b running the app pack's jobs on databases of their own, c running none of them
    (tests/support/targets_jobs.py)."""
    from tests.support.targets_jobs import make_targets

    return make_targets(fresh_database, tmp_path_factory.mktemp("targets") / "config")
