"""Maintenance jobs (config/maintenance.yaml) against real Postgres: archive, purge, vacuum, sql and the
fleet's own retention; batched, one advisory lock per job, every run in fleet.job_runs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.maintenance import REPO_JOBS, add_webhook_logs, job
from worker.config import load_config
from worker.fleet.errors import ConfigError
from worker.maintenance.catalog import check_catalog
from worker.maintenance.jobs import run_job
from worker.maintenance.spec import MaintenanceJob


def run(j: MaintenanceJob, engine):
    return run_job(j, monitored=engine, fleet=engine, now=datetime.now(UTC))


def one(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def rows(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_archive_moves_old_rows_in_batches_and_records_the_run(engine):
    with engine.begin() as conn:
        add_webhook_logs(conn, 2500, days_old=100)
        add_webhook_logs(conn, 500, days_old=10)
        old_checksum = conn.execute(sa.text(
            """SELECT md5(string_agg(concat_ws('|', id, webhook_name, registration_id, status_code, duration_ms,
                                               payload, error_message, created_at), ',' ORDER BY id))
               FROM webhook_logs WHERE created_at < now() - interval '90 days'""")).scalar()
    result = run(job("archive_webhook_logs", batch_size=400, pause=timedelta(0)), engine)
    assert (result.status, result.rows, result.batches) == ("ok", 2500, 7)
    assert one(engine, "SELECT count(*) FROM webhook_logs") == 500
    assert one(engine, "SELECT min(created_at) > now() - interval '90 days' FROM webhook_logs")
    assert one(engine, """SELECT md5(string_agg(concat_ws('|', id, webhook_name, registration_id, status_code,
                                                          duration_ms, payload, error_message, created_at),
                                                ',' ORDER BY id)) FROM webhook_logs_archive""") == old_checksum
    assert rows(engine, "SELECT job, kind, status, rows_affected, batches, error FROM fleet.job_runs") == \
        [("archive_webhook_logs", "archive", "ok", 2500, 7, None)]
    assert rows(engine, "SELECT task, rows_affected FROM maintenance_log") == [("archive_webhook_logs", 2500)]


def test_an_archive_run_that_fails_mid_way_records_the_batches_that_committed(engine):
    """Batch 3 of 3 fails (a trigger on the archive refuses its rows): the run is an error, and its
    record counts the 200 rows the first two batches moved for good, not 0."""
    with engine.begin() as conn:
        add_webhook_logs(conn, 300, days_old=100)
        conn.execute(sa.text("""CREATE FUNCTION refuse_late_rows() RETURNS trigger LANGUAGE plpgsql AS $$
                                BEGIN IF NEW.id > 250 THEN RAISE EXCEPTION 'archive is full'; END IF; RETURN NEW; END $$"""))
        conn.execute(sa.text("CREATE TRIGGER refuse_late_rows BEFORE INSERT ON webhook_logs_archive "
                             "FOR EACH ROW EXECUTE FUNCTION refuse_late_rows()"))
    try:
        result = run(job("archive_webhook_logs", batch_size=100, pause=timedelta(0)), engine)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse_late_rows ON webhook_logs_archive"))
            conn.execute(sa.text("DROP FUNCTION refuse_late_rows()"))
    assert (result.status, result.rows, result.batches) == ("error", 200, 2) and "archive is full" in result.error
    assert rows(engine, "SELECT status, rows_affected, batches FROM fleet.job_runs") == [("error", 200, 2)]
    assert (one(engine, "SELECT count(*) FROM webhook_logs_archive"), one(engine, "SELECT count(*) FROM webhook_logs")) \
        == (200, 100)  # the failed batch rolled back whole


def test_archive_under_concurrent_inserts_loses_nothing_and_doubles_nothing(engine):
    with engine.begin() as conn:
        add_webhook_logs(conn, 3000, days_old=100)
        add_webhook_logs(conn, 1000, days_old=1)
    before = one(engine, "SELECT count(*) FROM webhook_logs")
    stop = threading.Event()
    inserted = [0]

    def app_keeps_writing():  # the application logging webhooks, some of them backfilled (old)
        while not stop.is_set():
            with engine.begin() as conn:
                add_webhook_logs(conn, 10, days_old=0)
                add_webhook_logs(conn, 10, days_old=95)
            inserted[0] += 20

    writer = threading.Thread(target=app_keeps_writing)
    writer.start()
    try:
        time.sleep(0.05)
        result = run(job("archive_webhook_logs", batch_size=150, pause=timedelta(milliseconds=5)), engine)
    finally:
        stop.set()
        writer.join(10)
    assert result.status == "ok" and result.rows >= 3000 and inserted[0] > 0
    live, archived = one(engine, "SELECT count(*) FROM webhook_logs"), one(engine, "SELECT count(*) FROM webhook_logs_archive")
    assert live + archived == before + inserted[0]  # nothing lost
    assert one(engine, "SELECT count(*) FROM webhook_logs w JOIN webhook_logs_archive a USING (id)") == 0  # none in both
    assert archived == result.rows
    assert one(engine, "SELECT count(*) FROM webhook_logs_archive WHERE created_at >= now() - interval '90 days'") == 0


def test_a_second_concurrent_run_of_the_same_job_skips_and_never_doubles(engine):
    with engine.begin() as conn:
        add_webhook_logs(conn, 3000, days_old=100)
    slow = job("archive_webhook_logs", batch_size=100, pause=timedelta(0))
    holding, second_done = threading.Event(), threading.Event()
    results = []

    def first_batch_then_wait(rows: int, batches: int) -> None:  # the first run, mid-job, holding its lock
        holding.set()
        second_done.wait(30)

    first = threading.Thread(target=lambda: results.append(
        run_job(slow, monitored=engine, fleet=engine, now=datetime.now(UTC), progress=first_batch_then_wait)))
    first.start()
    try:
        assert holding.wait(30)
        results.append(run(slow, engine))  # while the first run is between two batches
    finally:
        second_done.set()
        first.join(60)
    assert sorted(r.status for r in results) == ["ok", "skipped"]
    skipped = next(r for r in results if r.status == "skipped")
    assert "in progress" in skipped.error
    assert one(engine, "SELECT count(*) FROM webhook_logs_archive") == 3000
    assert one(engine, "SELECT count(*) FROM webhook_logs") == 0
    assert sorted(rows(engine, "SELECT status, rows_affected FROM fleet.job_runs")) == [("ok", 3000), ("skipped", 0)]
    # the lock is released after the run: the next run runs (and finds nothing to move)
    assert run(slow, engine).status == "ok"


def test_purge_deletes_only_rows_past_retention_with_a_cap_per_run(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO whatsapp_error_logs (error_type, error_message, created_at)
               SELECT 'timeout', 'x', now() - make_interval(days => CASE WHEN i <= 700 THEN 40 ELSE 5 END)
               FROM generate_series(1, 1000) i"""))
    capped = run(job("purge_whatsapp_logs", batch_size=200, max_rows=500, pause=timedelta(0)), engine)
    assert (capped.status, capped.rows, capped.batches) == ("ok", 500, 3)  # 200 + 200 + 100, then the cap
    rest = run(job("purge_whatsapp_logs", batch_size=200, pause=timedelta(0)), engine)
    assert (rest.status, rest.rows) == ("ok", 200)
    assert one(engine, "SELECT count(*) FROM whatsapp_error_logs") == 300
    assert one(engine, "SELECT count(*) FROM whatsapp_error_logs WHERE created_at < now() - interval '30 days'") == 0
    assert [r[0] for r in rows(engine, "SELECT rows_affected FROM fleet.job_runs ORDER BY id")] == [500, 200]


def test_vacuum_job_vacuums_and_analyzes_each_table_and_is_recorded(engine):
    tables = ["registrations", "webhook_logs", "confirmation_emails"]
    count_sql = "SELECT sum(vacuum_count + analyze_count) FROM pg_stat_user_tables WHERE relname = ANY(:t)"
    before = one(engine, count_sql, t=tables)
    result = run(job("vacuum_confirmation_tables"), engine)  # VACUUM cannot run in a transaction block
    assert (result.status, result.batches, result.error) == ("ok", 3, None)
    deadline = time.monotonic() + 5
    while one(engine, count_sql, t=tables) < before + 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert one(engine, count_sql, t=tables) >= before + 6
    assert rows(engine, "SELECT job, kind, status FROM fleet.job_runs") == \
        [("vacuum_confirmation_tables", "vacuum", "ok")]
    assert rows(engine, "SELECT task FROM maintenance_log") == [("vacuum_confirmation_tables",)]


def test_sql_job_runs_cleanup_expired_seat_reservations(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO shows (id, title, venue, starts_at) VALUES (1, 'Show', 'Hall', now() + interval '1 day')"))
        conn.execute(sa.text("""INSERT INTO show_seats (id, show_id, section, row_label, seat_number, price_in_cents, status)
                                SELECT i, 1, 'A', 'R', i, 1000, 'reserved' FROM generate_series(1, 3) i"""))
        conn.execute(sa.text(
            """INSERT INTO seat_reservations (id, show_id, session_id, is_active, expires_at) VALUES
               (1, 1, 's1', true, now() - interval '5 minutes'), (2, 1, 's2', true, now() - interval '1 minute'),
               (3, 1, 's3', true, now() + interval '10 minutes')"""))
        conn.execute(sa.text("INSERT INTO reservation_seats (reservation_id, seat_id) VALUES (1, 1), (2, 2), (3, 3)"))
    result = run(job("cleanup_expired_seat_reservations"), engine)
    assert (result.status, result.rows, result.batches) == ("ok", 2, 1)
    assert rows(engine, "SELECT id, status FROM show_seats ORDER BY id") == \
        [(1, "available"), (2, "available"), (3, "reserved")]
    assert rows(engine, "SELECT status, expired_count FROM reservation_cleanup_runs") == [("succeeded", 2)]
    assert rows(engine, "SELECT job, kind, status, rows_affected FROM fleet.job_runs") == \
        [("cleanup_expired_seat_reservations", "sql", "ok", 2)]
    # the next run (every 5 minutes) finds nothing more
    assert run(job("cleanup_expired_seat_reservations"), engine).rows == 0


def test_sql_job_whose_function_reports_failure_is_an_error(engine):
    """cleanup_expired_seat_reservations() catches its own errors, records the run as failed and returns
    NULL: the job must not call that a success."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO shows (id, title, venue, starts_at) VALUES (1, 'S', 'H', now())"))
        conn.execute(sa.text("""INSERT INTO seat_reservations (show_id, session_id, is_active, expires_at)
                                VALUES (1, 's1', true, now() - interval '5 minutes')"""))
        conn.execute(sa.text("""CREATE FUNCTION pg_temp_boom() RETURNS trigger LANGUAGE plpgsql AS
                                $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$"""))
        conn.execute(sa.text("""CREATE TRIGGER boom BEFORE UPDATE ON seat_reservations
                                FOR EACH ROW EXECUTE FUNCTION pg_temp_boom()"""))
    try:
        result = run(job("cleanup_expired_seat_reservations"), engine)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER boom ON seat_reservations"))
            conn.execute(sa.text("DROP FUNCTION pg_temp_boom()"))
    assert result.status == "error" and "returned NULL" in result.error
    assert rows(engine, "SELECT status, error_message FROM reservation_cleanup_runs") == \
        [("failed", "could not extend file: No space left on device")]
    assert rows(engine, "SELECT status FROM fleet.job_runs") == [("error",)]


def test_sql_job_runs_cleanup_rate_limit_logs(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO rate_limit_logs (identifier, endpoint, window_start, created_at)
               SELECT 'u' || i, '/api', now(), now() - make_interval(hours => CASE WHEN i <= 40 THEN 30 ELSE 1 END)
               FROM generate_series(1, 100) i"""))
    result = run(job("cleanup_rate_limit_logs"), engine)
    assert (result.status, result.rows) == ("ok", 40)
    assert one(engine, "SELECT count(*) FROM rate_limit_logs") == 60


def test_fleet_retention_purges_the_fleets_own_history(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO fleet.check_runs (check_name, slot, started_at, status)
               SELECT 'c', now() - make_interval(days => i), now() - make_interval(days => i), 'ok'
               FROM generate_series(1, 120) i"""))
    result = run(job("fleet_history_retention", pause=timedelta(0)), engine)
    assert result.status == "ok" and result.rows == 31  # days 90 (just past the cutoff) .. 120
    assert one(engine, "SELECT count(*) FROM fleet.check_runs") == 89


# -- bad configuration: a clear error naming the job, nothing written ---------------------------------------

def write_config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "maintenance.yaml").write_text(body)
    return tmp_path


@pytest.mark.parametrize(("body", "expected"), [
    ("jobs:\n  - name: bad_ident\n    kind: purge\n    schedule: 1h\n    table: 'webhook_logs; DROP TABLE x'\n"
     "    older_than: 1d\n", "maintenance.yaml:5: jobs[bad_ident].table: 'webhook_logs; DROP TABLE x' is not a valid SQL identifier"),
    ("jobs:\n  - name: bad_kind\n    kind: truncate\n    schedule: 1h\n    table: webhook_logs\n",
     "maintenance.yaml:3: jobs[bad_kind].kind: Input should be 'archive', 'purge', 'vacuum', 'analyze', 'sql' or 'fleet_retention'"),
    ("jobs:\n  - name: no_age\n    kind: archive\n    schedule: 1h\n    table: webhook_logs\n",
     "jobs[no_age]: a archive job needs archive_table, older_than"),
    ("jobs:\n  - name: bad_col\n    kind: purge\n    schedule: 1h\n    table: webhook_logs\n    older_than: 1d\n"
     "    age_column: created-at\n", "jobs[bad_col].age_column: 'created-at' is not a valid SQL identifier"),
])
def test_invalid_job_config_is_refused_when_loaded(tmp_path, body, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, body))
    assert expected in str(exc.value)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"table": "webhook_logz"}, "maintenance job archive_webhook_logs: table 'webhook_logz' does not exist in the monitored database"),
    ({"archive_table": "nowhere"}, "maintenance job archive_webhook_logs: table 'nowhere' does not exist in the monitored database"),
    ({"age_column": "made_at"}, "maintenance job archive_webhook_logs: column webhook_logs.made_at does not exist"),
    ({"kind": "sql", "function": "no_such_function"},
     "maintenance job archive_webhook_logs: function 'no_such_function' does not exist"),
])
def test_a_job_naming_a_missing_table_or_column_fails_clearly_and_writes_nothing(engine, changes, expected):
    with engine.begin() as conn:
        add_webhook_logs(conn, 50, days_old=100)
    bad = job("archive_webhook_logs", **changes)
    assert check_catalog([bad, job("purge_whatsapp_logs")], engine) == [expected]  # at start, every job at once
    result = run(bad, engine)
    assert (result.status, result.error, result.rows) == ("error", expected, 0)
    assert one(engine, "SELECT count(*) FROM webhook_logs") == 50
    assert one(engine, "SELECT count(*) FROM webhook_logs_archive") == 0
    assert one(engine, "SELECT count(*) FROM maintenance_log") == 0
    assert rows(engine, "SELECT status, error FROM fleet.job_runs") == [("error", expected)]


def test_every_configured_job_passes_the_catalog_check(engine):
    assert check_catalog(REPO_JOBS.values(), engine) == []
