"""Through a transaction pooler (PgBouncer pool_mode=transaction, as Supabase's pooler): the whole check
catalog, a maintenance job and a backlog run by a real worker with four threads, the monitored database
through one server connection (default_pool_size = 1), the fleet's through four, so a statement one
client left on a server connection is what the next one meets. Named prepared statements (psycopg's,
prepared on a statement's 6th run on a connection, or at once with prepare=True) fail there with
`prepared statement "_pg3_0" already exists`: opsfleet makes none on a monitored database, nor on the
fleet's with FLEET_DATABASE_POOLED (worker.fleet.db.NO_PREPARED), and the checks' query path still
takes one statement only."""

from __future__ import annotations

import signal
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_worker, wait_until
from ops.sample_app import init
from tests.support import REPO
from tests.support.backlog import KEY, add_backlog, assert_exactly_once
from tests.support.checks import make_check
from tests.support.pooler import SKIP, PgBouncer, pgbouncer_binary
from worker.checks.collect import CheckError, collect_sql
from worker.config import load_config
from worker.fleet.db import create, create_for_checks
from worker.fleet.migrate import upgrade

pytestmark = pytest.mark.slow  # ~15 s: a worker's start, the catalog's 73 checks, 7 purge batches, a backlog

CONFIG = load_config(REPO / "config", packs="all")
SQL_CHECKS = sorted(n for n, c in CONFIG.checks.items() if c.kind == "sql" and c.enabled)
OLD_LOGS, BATCH = 6 * 5000 + 123, 5000  # purge_whatsapp_logs's batch_size: seven batches of one statement
BACKLOG = 40


@pytest.fixture
def app(fresh_database):
    """The monitored database (the sample app's tables, old WhatsApp logs for the purge job, a
    confirmation backlog) and the fleet's own: their direct URLs, made without the pooler."""
    url, fleet = fresh_database(), fresh_database()
    upgrade(fleet)
    engine = create(url, pool_size=1)
    init(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO whatsapp_error_logs (error_type, error_message, created_at)
               SELECT 'timeout', 'log ' || i, now() - interval '40 days' - make_interval(secs => i)
               FROM generate_series(1, :n) i"""), {"n": OLD_LOGS})
        conn.execute(sa.text("""INSERT INTO whatsapp_error_logs (error_type, error_message)
                                SELECT 'timeout', 'young' FROM generate_series(1, 50)"""))
    add_backlog(engine, BACKLOG)
    fleet_engine = create(fleet, pool_size=1)
    yield url, fleet, engine, fleet_engine
    engine.dispose()
    fleet_engine.dispose()


@pytest.fixture
def pooler(pg_admin_url, app):
    """PgBouncer in transaction mode: one server connection for the monitored database, which every
    worker thread's checks, the maintenance job and the backlog share; four for the fleet's."""
    if pgbouncer_binary() is None:
        pytest.skip(SKIP)
    fleet = sa.make_url(app[1]).database
    # a folder of its own under /tmp: as root PgBouncer runs as postgres, which pytest's tmp_path is closed to
    with tempfile.TemporaryDirectory(prefix="opsfleet-pgbouncer-") as run_dir:
        bouncer = PgBouncer(Path(run_dir), pg_admin_url, pool_size=1, pools={fleet: 4}).start()
        yield bouncer
        bouncer.stop()


def test_the_catalog_a_maintenance_job_and_a_backlog_run_through_a_transaction_pooler(pooler, app, env, redis_url,
                                                                                   sink, tmp_path):
    direct, fleet_direct, engine, fleet = app
    sink.reset()
    wenv = {**env, "DATABASE_URL": pooler.url(direct), "FLEET_DATABASE_URL": pooler.url(fleet_direct),
            "FLEET_DATABASE_POOLED": "true", "OPSFLEET_PACKS": "all", "RESEND_API_KEY": KEY,
            "RESEND_API_URL": sink.resend_api_url, "FROM_EMAIL": "confirm@example.com"}
    worker = start_worker(wenv, tmp_path, queues="checks,maintenance,backlog", concurrency=4, pool="threads")
    client = Celery(broker=env["CELERY_BROKER_URL"], backend=redis_url)
    try:
        half = len(SQL_CHECKS) // 2
        sent = {n: client.send_task("checks.run", kwargs={"name": n}, queue="checks") for n in SQL_CHECKS[:half]}
        job = client.send_task("maintenance.run", kwargs={"job": "purge_whatsapp_logs"}, queue="maintenance")
        backlog = client.send_task("backlog.reprocess_confirmations", kwargs={"batch_size": 5}, queue="backlog")
        sent |= {n: client.send_task("checks.run", kwargs={"name": n}, queue="checks") for n in SQL_CHECKS[half:]}
        if not wait_until(lambda: all(r.ready() for r in [*sent.values(), job, backlog]), 90):
            pending = [n for n, r in {**sent, "purge_whatsapp_logs": job, "backlog": backlog}.items() if not r.ready()]
            pytest.fail(f"not done in 90 s: {pending}\npgbouncer: {pooler.log_tail()}\n{worker.output()[-4000:]}")
        results = {n: r.get(timeout=5, propagate=False) for n, r in sent.items()}
        failed = {n: (r.get("error") if isinstance(r, dict) else repr(r)) for n, r in results.items()
                  if not isinstance(r, dict) or r.get("status") == "error"}
        assert failed == {}, f"{failed}\npgbouncer: {pooler.log_tail()}\n{worker.output()[-6000:]}"
        out = job.get(timeout=60)
        assert (out["status"], out["rows"], out["batches"]) == ("ok", OLD_LOGS, OLD_LOGS // BATCH + 1), \
            f"{out}\npgbouncer: {pooler.log_tail()}\n{worker.output()[-6000:]}"
        assert backlog.get(timeout=60)["status"] == "ok"
        assert_exactly_once(engine, sink, BACKLOG)  # (a remediation the catalog sent may have taken some)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM whatsapp_error_logs")).scalar() == 50
        with fleet.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM fleet.check_runs WHERE status = 'error'")).scalar() == 0
        assert "prepared statement" not in worker.output()
    finally:
        worker.kill(signal.SIGKILL)
        client.close()


def test_a_check_query_is_still_one_statement_through_the_pooler(pooler, app):
    """No named statement does not mean the simple protocol: `...; DELETE` is refused, deletes nothing."""
    direct, _, engine, _ = app
    checks = create_for_checks(pooler.url(direct))
    try:
        for tail in ("DELETE FROM registrations", "COMMIT; DELETE FROM registrations"):
            check = make_check().model_copy(update={"query": f"SELECT 1 AS value; {tail}"})  # as if unvalidated
            with pytest.raises(CheckError, match="must be one SQL statement"):
                collect_sql(check, checks, datetime.now(UTC))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM registrations")).scalar() == BACKLOG
    finally:
        checks.dispose()
