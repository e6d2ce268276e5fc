"""Check queries that try to do harm, through config validation and the real engine (run_check against
a real Postgres): writes, SET ROLE, SET SESSION AUTHORIZATION, COPY ... TO PROGRAM, a second statement
and the side-effect functions are refused when the config loads; what validation lets through and
still misbehaves (a write in a CTE, pg_sleep past the timeout, set_config('role')) is cut at run time
and recorded as an error in fleet.check_runs, leaving the connection as it was.

The least-privilege point, shown on this server: a READ ONLY transaction still lets a query call
pg_cancel_backend / pg_terminate_backend, pg_reload_conf, take a session advisory lock that outlives
the ROLLBACK, create large objects (lo_*, and lo_export writes a server file) and write through
dblink's own connection. Hence worker/checks/sqlcalls.py refuses those calls (SIDE_EFFECTS); a monitoring
role (pg_monitor, no superuser) is the second wall."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.fleet.db import create, read_only_query
from worker.fleet.migrate import upgrade

pytestmark = pytest.mark.reliability
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BASE = {"name": "hostile", "description": "d", "schedule": "1m", "condition": "> 0", "severity": "info",
        "summary": "s", "timeout": "1s"}


def check(query: str, validate: bool = True) -> Check:
    if validate:
        return Check.model_validate({**BASE, "query": query})
    return Check.model_validate({**BASE, "query": "SELECT 1 AS value"}).model_copy(update={"query": query})


@pytest.fixture(scope="module")
def db(fresh_database):
    url = fresh_database()
    upgrade(url)
    engine = create(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE gauge (v int)"))
        conn.execute(sa.text("INSERT INTO gauge VALUES (1)"))
    yield engine
    engine.dispose()


@pytest.mark.parametrize(("query", "needle"), [
    ("INSERT INTO gauge VALUES (2) RETURNING v AS value", "starts with 'INSERT'"),
    ("SET ROLE pg_monitor", "starts with 'SET'"),
    ("set session authorization nobody", "starts with 'set'"),
    ("COPY (SELECT 1 AS value) TO PROGRAM 'touch /tmp/opsfleet-owned'", "starts with 'COPY'"),
    ("/* hi */ DELETE FROM gauge", "starts with 'DELETE'"),
    ("SELECT 1 AS value; DELETE FROM gauge", "second SQL statement"),
    ("SELECT pg_terminate_backend(pid)::int AS value FROM pg_stat_activity", "calls pg_terminate_backend()"),
    ("SELECT PG_CANCEL_BACKEND (1)::int AS value", "calls pg_cancel_backend()"),  # the name the server resolves
    ("SELECT pg_reload_conf()::int AS value", "calls pg_reload_conf()"),
    ("SELECT 1 AS value FROM pg_try_advisory_lock(42)", "calls pg_try_advisory_lock()"),
    ('SELECT "lo_import"(\'/etc/passwd\')::int AS value', "calls lo_import()"),
    ("WITH x AS (SELECT dblink_exec('dbname=app', 'DROP TABLE t')) SELECT 1 AS value", "calls dblink_exec()"),
])
def test_a_harmful_query_is_refused_when_the_config_loads(query, needle):
    with pytest.raises(ValueError, match="query") as err:
        check(query)
    assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize("query", [
    "SELECT length('pg_reload_conf() and lo_import(') AS value",
    "SELECT 1 AS value -- never pg_terminate_backend(1)",
    "SELECT $$dblink(x)$$ IS NOT NULL AS flag, 1 AS value",
    "WITH lo_bound AS (SELECT 1 AS lo_x) SELECT lo_x AS value FROM lo_bound",
    "(SELECT 1 AS value)",
])
def test_names_in_literals_comments_or_columns_are_not_refused(query):
    assert check(query).query == query


def last_run(db):
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT status, error FROM fleet.check_runs ORDER BY id DESC LIMIT 1")).one()


@pytest.mark.parametrize(("query", "needle", "validate"), [
    ("WITH d AS (DELETE FROM gauge RETURNING 1) SELECT count(*) AS value FROM d", "read-only transaction", True),
    ("SELECT pg_sleep(5)::text, 1 AS value", "statement timeout", True),
    ("SELECT 1 AS value; COMMIT; DELETE FROM gauge", "must be one SQL statement", False),
    ("SET ROLE pg_monitor", "column named `value`", False),
    ("SET SESSION AUTHORIZATION DEFAULT", "column named `value`", False),
])
def test_what_reaches_the_engine_is_cut_and_recorded_as_an_error(db, query, needle, validate):
    minute = T0.replace(minute=len(query) % 60)  # a slot of its own per case
    out = run_check(check(query, validate), monitored=db, fleet=db, now=minute, routing=None)
    assert out.status == "error" and needle in (out.error or ""), out.error
    row = last_run(db)
    assert row.status == "error" and needle in row.error
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM gauge")).scalar() == 1
        assert conn.execute(sa.text("SELECT current_user = session_user")).scalar()


def test_a_role_set_by_set_config_does_not_outlive_the_check(db):
    q = "SELECT 1 AS value FROM (SELECT set_config('role', 'pg_monitor', false)) s"
    assert run_check(check(q), monitored=db, fleet=db, now=T0.replace(hour=11), routing=None).status == "ok"
    _, rows = read_only_query(db, "SELECT current_user::text, current_setting('role')", {}, statement_timeout_ms=1000)
    assert rows[0][1] == "none"


def test_read_only_still_lets_a_query_call_these_side_effect_functions(db, fresh_database):
    """What the refusal is for: each call below succeeds inside the engine's READ ONLY transaction."""
    spare = create(str(db.url.render_as_string(hide_password=False)))
    victim = spare.connect()
    pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    victim.commit()

    def ro(sql: str):
        return read_only_query(db, sql, {"pid": pid}, statement_timeout_ms=2000)[1][0][0]

    assert ro("SELECT pg_cancel_backend(%(pid)s)") is True
    assert ro("SELECT pg_reload_conf()") is True
    assert ro("SELECT lo_create(0)") > 0  # rolled back, but lo_export(oid, path) writes a server file
    assert ro("SELECT pg_advisory_lock(4242)::text") == ""
    held = victim.execute(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"))
    assert held.scalar() == 1  # a session lock: it outlives the check's ROLLBACK
    victim.commit()
    assert ro("SELECT pg_terminate_backend(%(pid)s)") is True
    victim.invalidate()
    spare.dispose()
    db.dispose()  # the pooled connection holding the advisory lock goes with it
    with db.begin() as conn:
        has_dblink = conn.execute(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'")).scalar()
        if has_dblink:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS dblink"))
    if not has_dblink:
        pytest.skip("dblink is not installed on this server (postgresql-contrib): its half is not shown")
    dsn = f"dbname={db.url.database} host={db.url.host} port={db.url.port} user={db.url.username}"
    ro_rows = read_only_query(db, "SELECT dblink_exec(%(dsn)s, 'CREATE TABLE written_through_dblink (x int)')",
                              {"dsn": dsn}, statement_timeout_ms=5000)[1]
    assert ro_rows[0][0] == "CREATE TABLE"
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('written_through_dblink') IS NOT NULL")).scalar()


def test_copy_to_program_runs_a_shell_command_even_read_only_so_validation_refuses_it(db):
    """Why the first word must be SELECT/WITH/VALUES/TABLE: the engine's own path (BEGIN READ ONLY,
    one prepared statement) lets a superuser's COPY ... TO PROGRAM run a command on the server."""
    marker = Path(tempfile.gettempdir()) / f"opsfleet-copy-{uuid.uuid4().hex}"
    query = f"COPY (SELECT 1 AS value) TO PROGRAM 'touch {marker}'"
    with pytest.raises(ValueError, match="starts with 'COPY'"):
        check(query)
    try:
        read_only_query(db, query, {}, statement_timeout_ms=5000)
        assert marker.exists()  # on a superuser connection; a monitoring role gets "permission denied"
    except Exception as exc:  # noqa: BLE001 - a server that refuses it (not a superuser) is the better case
        assert "permission denied" in str(exc) or "must be superuser" in str(exc), str(exc)
    finally:
        marker.unlink(missing_ok=True)
