"""The postgres pack's statistics checks against the live statistics of a real server, crafted where
the server allows (dead tuples, unused indexes, the cache hit ratio, a long-running statement, client
backends, pg_stat_statements), each firing and quiet through the engine as a worker evaluates it
(tests/support/checks.py), and the size checks' unit. pg_stat_statements is read on the session's
throwaway server, which preloads it (`stats_server`, tests/checks/conftest.py); the rest on the
suite's server.

Every other check's crafted rows (the threshold, the window's edges, no data, the minimum samples) are
rule tests as data in config/<pack>/tests/<check>.yaml, run by tests/checks/test_rule_tests.py and by
`opsfleet test`: statistics are not rows one can insert, so these stay here.
"""


from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tests.support import REPO
from tests.support.checks import fires, through_engine
from worker.checks.collect import collect_sql
from worker.checks.state import is_active
from worker.config import load_config
from worker.fleet.db import create, create_for_checks

CONFIG = load_config(REPO / "config")

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

DOUBLE_BOOKING = 'duplicate key value violates unique constraint "reservation_seats_active_seat_key"'
CLEANUP_JOB = "cleanup_expired_seat_reservations"  # */5 * * * *, timeout 30 s
PURGE_JOB = "purge_whatsapp_logs"  # 15 4 * * * (daily), timeout 30 min
W1, W2 = "registration-payment-webhook", "generate-confirmation"

# Checks without a crafted FIRE case, and why (they still have cases or a dedicated test that must not fire).

# -- expectations ----------------------------------------------------------------------------------
Labels = dict[str, str]


@dataclass(frozen=True)
class Fire:
    """The condition holds: for the one instance (value, if given), or exactly for the `labels` instances."""

    value: float | None = None
    labels: list[Labels] | None = None
    instances: list[Labels] | None = None  # every instance the query returns (firing or not)


@dataclass(frozen=True)
class Quiet:
    """Evaluated (a non-NULL value) and the condition holds for no instance."""

    value: float | None = None
    instances: list[Labels] | None = None


@dataclass(frozen=True)
class NoData:
    """No row, or a NULL value: no data, which the check's no_data policy turns into "not alerting"."""

    policy: str = "ok"


# -- crafted rows ----------------------------------------------------------------------------------
_TYPES: dict[str, dict[str, str]] = {}  # table -> column -> SQL type, read from the catalog at setup
_DIRTY: set[str] = set()
_SEQ = itertools.count(1)


def _insert(c: Connection, table: str, n: int = 1, returning: str | None = None, **cols: Any) -> Any:
    """INSERT n rows (generate_series g); a str value containing {g} gets the row number substituted."""
    types = _TYPES[table]
    exprs, params = [], {"n": n}
    for i, (col, v) in enumerate(cols.items()):
        if isinstance(v, dict):
            v = json.dumps(v)
        if isinstance(v, str) and "{g}" in v:
            exprs.append(f"CAST(replace(:p{i}, '{{g}}', g::text) AS {types[col]})")
        else:
            exprs.append(f"CAST(:p{i} AS {types[col]})")
        params[f"p{i}"] = v
    sql = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM generate_series(1, :n) AS g"  # noqa: S608
    if returning:
        sql += f" RETURNING {returning}"
    _DIRTY.add(table)
    result = c.execute(sa.text(sql), params)
    return result.scalars().first() if returning else None


def insert_webhook_log(c, at, webhook_name=W1, status_code=200, n=1):
    _insert(c, "webhook_logs", n, webhook_name=webhook_name, status_code=status_code, duration_ms=120, created_at=at)


# seed 001
# -- the database ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def monitored(app_db_url):
    """One database for the module: the fleet schema, the sample application's schema, no rows."""
    engine = create(app_db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
                   a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind = 'r' AND n.nspname IN ('public', 'fleet')""")).all()
    _TYPES.clear()
    for table, col, typ in rows:
        _TYPES.setdefault(table, {})[col] = typ
    yield engine
    engine.dispose()


def _truncate(engine: Engine) -> None:
    if _DIRTY:
        with engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(sorted(_DIRTY))} RESTART IDENTITY CASCADE"))
        _DIRTY.clear()


@pytest.fixture
def db(monitored):
    """The module's database with the tables the previous case wrote emptied (before and after)."""
    _truncate(monitored)
    yield monitored
    _truncate(monitored)


# -- the verdict on a sample list ------------------------------------------------------------------
def _instance(check, labels: Labels) -> Labels:
    """The labels the query added (the check's static labels left out)."""
    return {k: v for k, v in labels.items() if k not in check.labels}


def _key(labels: Labels) -> tuple:
    return tuple(sorted(labels.items()))


def _same(got: list[Labels], want: list[Labels]) -> bool:
    return sorted(map(_key, got)) == sorted(map(_key, want))


def verify(name: str, samples: list, expect: Fire | Quiet | NoData) -> None:
    check = CONFIG.checks[name]
    shown = [(_instance(check, s.labels), s.value) for s in samples]
    firing = [s for s in samples if s.value is not None and check.condition.holds(s.value)]
    for s in samples:  # the engine's own verdict agrees
        if s.value is not None:
            assert is_active(check, s.value) is check.condition.holds(s.value)
    if isinstance(expect, NoData):
        assert all(s.value is None for s in samples), f"{name}: expected no data, got {shown}"
        assert check.no_data == expect.policy, f"{name}: no_data policy is {check.no_data!r}"
        assert is_active(check, None) is {"ok": False, "alerting": True, "keep": None}[expect.policy]
        return
    assert any(s.value is not None for s in samples), f"{name}: expected a value, got {shown}"
    if expect.instances is not None:
        got = [_instance(check, s.labels) for s in samples]
        assert _same(got, expect.instances), f"{name}: instances {got}, expected {expect.instances}"
    if isinstance(expect, Quiet):
        assert not firing, f"{name}: condition {check.condition} holds for {shown}"
        if expect.value is not None:
            assert [s.value for s in samples] == [pytest.approx(expect.value, abs=0.051)], f"{name}: {shown}"
        return
    assert firing, f"{name}: condition {check.condition} holds for none of {shown}"
    if expect.labels is not None:
        got = [_instance(check, s.labels) for s in firing]
        assert _same(got, expect.labels), f"{name}: firing instances {got}, expected {expect.labels}"
    if expect.value is not None:
        assert [s.value for s in firing] == [pytest.approx(expect.value, abs=0.051)], f"{name}: {shown}"


def test_size_checks_report_gigabytes(db):
    """database_size and webhook_logs_size_high cannot reach 8 and 10 GB here: their unit is checked instead."""
    with db.begin() as conn:
        insert_webhook_log(conn, NOW - MIN, n=20_000)
    with db.connect() as conn:
        db_bytes, log_bytes = conn.execute(sa.text(
            "SELECT pg_database_size(current_database()), pg_total_relation_size('webhook_logs')")).one()
    for name, size in (("database_size", db_bytes), ("webhook_logs_size_high", log_bytes)):
        [sample] = collect_sql(CONFIG.checks[name], db, NOW)
        assert sample.value == pytest.approx(size / 1024**3, abs=0.0006), name  # GB, rounded to 3 places
        assert sample.value > 0, name


# -- the pg_stat-based checks: the live statistics, crafted where the server allows ---------------
def _raw(engine: Engine) -> psycopg.Connection:
    """A connection of its own (closing it makes the backend flush its statistics at exit)."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


def _wait_for(engine: Engine, sql: str, ok: Callable[[Any], bool], timeout: float = 10.0) -> None:
    """Poll a statistics view until `ok` (cumulative statistics reach the views asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            value = conn.execute(sa.text(sql)).first()
        if ok(value):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"statistics did not settle in {timeout}s: {sql} -> {value}")
        time.sleep(0.05)


def _by(check_name: str, samples: list, label: str, prefix: str) -> dict[str, float | None]:
    return {s.labels[label]: s.value for s in samples if s.labels.get(label, "").startswith(prefix)}


def _firing(check_name: str, engine: Engine, now: datetime, label: str, prefix: str) -> set[str]:
    """The `label` of the instances (those starting with `prefix`) firing once the engine has evaluated
    the check at `now` (and, with a `for`, again that much later); the module's database holds the
    fleet's state too."""
    found = fires(CONFIG.checks[check_name], monitored=engine, fleet=engine, now=now)
    return {labels[label] for labels in found if labels.get(label, "").startswith(prefix)}


def _quiet(check_name: str, engine: Engine, now: datetime) -> bool:
    """One evaluation through the engine at `now` leaves no instance pending or firing."""
    return through_engine(CONFIG.checks[check_name], monitored=engine, fleet=engine, at=[now]) == []


def test_db_dead_tuples_high(monitored):
    """n_dead_tup against n_live_tup per table: > 20% fires, exactly 20% does not, under 1000 tuples is left out."""
    tables = {  # name: (inserted, deleted) -> live, dead
        "dead_over": (1201, 201),   # 1000 live, 201 dead: 20.1%
        "dead_at": (1200, 200),     # 1000 live, 200 dead: exactly 20%
        "dead_min": (1000, 500),    # 500 + 500: exactly the 1000-tuple minimum, 100%
        "dead_small": (999, 900),   # 999 tuples: under the minimum, left out
    }
    with _raw(monitored) as conn:
        conn.execute("DROP SCHEMA IF EXISTS craft_dead CASCADE; CREATE SCHEMA craft_dead")
        for t, (ins, dele) in tables.items():
            conn.execute(f"CREATE TABLE craft_dead.{t} (id int) WITH (autovacuum_enabled = false)")
            conn.execute(f"INSERT INTO craft_dead.{t} SELECT generate_series(1, {ins})")
            conn.execute(f"DELETE FROM craft_dead.{t} WHERE id <= {dele}")  # noqa: S608 (constants)
    try:
        _wait_for(monitored, "SELECT COUNT(*) FROM pg_stat_user_tables WHERE schemaname = 'craft_dead' "
                             "AND n_dead_tup > 0", lambda r: r[0] == len(tables))
        values = _by("db_dead_tuples_high", collect_sql(CONFIG.checks["db_dead_tuples_high"], monitored, NOW),
                     "table", "craft_dead.")
        assert values == {"craft_dead.dead_over": 20.1, "craft_dead.dead_at": 20.0, "craft_dead.dead_min": 100.0}
        assert _firing("db_dead_tuples_high", monitored, NOW, "table", "craft_dead.") == {
            "craft_dead.dead_over", "craft_dead.dead_min"}
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP SCHEMA craft_dead CASCADE")


def test_db_dead_tuples_high_just_over_20pct(monitored):
    with _raw(monitored) as conn:
        conn.execute("DROP SCHEMA IF EXISTS craft_dead2 CASCADE; CREATE SCHEMA craft_dead2")
        conn.execute("CREATE TABLE craft_dead2.t (id int) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO craft_dead2.t SELECT generate_series(1, 12001)")
        conn.execute("DELETE FROM craft_dead2.t WHERE id <= 2001")
    try:
        _wait_for(monitored, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'craft_dead2'",
                  lambda r: r is not None and r[0] == 2001)
        values = _by("db_dead_tuples_high", collect_sql(CONFIG.checks["db_dead_tuples_high"], monitored, NOW),
                     "table", "craft_dead2.")
        assert _firing("db_dead_tuples_high", monitored, NOW, "table", "craft_dead2.") == {"craft_dead2.t"}, values
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP SCHEMA craft_dead2 CASCADE")


def test_db_unused_indexes(monitored):
    """A plain index never scanned fires (idx_scan == 0); a scanned one, the primary key and a unique index
    do not; and nothing is judged while the statistics are under 7 days old (a fresh database has every
    index at 0 scans)."""
    with _raw(monitored) as conn:
        conn.execute("DROP SCHEMA IF EXISTS craft_idx CASCADE; CREATE SCHEMA craft_idx")
        conn.execute("CREATE TABLE craft_idx.t (id int PRIMARY KEY, a int, b int, c int)")
        conn.execute("CREATE INDEX used_idx ON craft_idx.t (a)")
        conn.execute("CREATE INDEX unused_idx ON craft_idx.t (b)")
        conn.execute("CREATE UNIQUE INDEX unique_idx ON craft_idx.t (c)")
        conn.execute("INSERT INTO craft_idx.t SELECT g, g, g, g FROM generate_series(1, 1000) g")
        conn.execute("ANALYZE craft_idx.t")
        conn.execute("SELECT pg_stat_reset()")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT * FROM craft_idx.t WHERE a = 5").fetchall()
        reset = conn.execute("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    check = CONFIG.checks["db_unused_indexes"]
    try:
        _wait_for(monitored, "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'used_idx' "
                             "AND schemaname = 'craft_idx'", lambda r: r is not None and r[0] >= 1)
        # statistics one second short of 7 days old: no index is judged
        assert _by("db_unused_indexes", collect_sql(check, monitored, reset + 7 * DAY - SEC), "index", "craft_idx.") == {}
        assert _quiet("db_unused_indexes", monitored, reset + 7 * DAY - SEC)
        values = _by("db_unused_indexes", collect_sql(check, monitored, reset + 7 * DAY), "index", "craft_idx.")
        assert set(values) == {"craft_idx.used_idx", "craft_idx.unused_idx"}  # no t_pkey, no unique_idx
        assert _firing("db_unused_indexes", monitored, reset + 7 * DAY, "index", "craft_idx.") == {"craft_idx.unused_idx"}
        assert check.for_ == 7 * DAY  # seen unused on two weekly runs, so an index made yesterday is not called unused
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP SCHEMA craft_idx CASCADE")


def test_db_cache_hit_ratio_low(monitored):
    """blks_hit / (blks_hit + blks_read) of this database after pg_stat_reset(): under 10000 blocks is no
    data; reading a small table over and over is quiet; scanning a table too big for its buffer ring
    (blocks come from the OS, not shared_buffers) fires."""
    check = CONFIG.checks["db_cache_hit_ratio_low"]
    blocks = "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
    with _raw(monitored) as conn:
        # CREATE TABLE AS writes through a small ring, so most of the big table is not left in shared_buffers;
        # its seq scan (> shared_buffers / 4) reads through a 256 kB ring: nearly every block is a read
        conn.execute("CREATE TABLE craft_cache_big WITH (autovacuum_enabled = false) AS "
                     "SELECT g AS x, repeat('x', 200) AS pad FROM generate_series(1, 180000) g")
        conn.execute("CREATE TABLE craft_cache_small AS SELECT g AS x FROM generate_series(1, 20000) g")
        pages = conn.execute("SELECT pg_relation_size('craft_cache_big') / 8192").fetchone()[0]
        shared = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]
    try:
        if pages <= shared // 4:
            pytest.skip(f"shared_buffers ({shared} pages) too large to craft a low hit ratio with {pages} pages")

        def reset() -> None:
            # the pool's idle backends hold unflushed statistics (flushed up to 10 s later, or at exit):
            # close them and wait for them to exit before resetting, or their counts land after the reset
            monitored.dispose()
            with _raw(monitored) as conn:
                deadline = time.monotonic() + 10
                while conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]:
                    assert time.monotonic() < deadline, "other sessions on the test database did not go away"
                    time.sleep(0.02)
                conn.execute("SELECT pg_stat_reset()")
            _wait_for(monitored, blocks, lambda r: r[0] + r[1] < 10000)

        reset()
        verify("db_cache_hit_ratio_low", collect_sql(check, monitored, NOW), NoData())

        with _raw(monitored) as conn:
            for _ in range(300):
                conn.execute("SELECT COUNT(*) FROM craft_cache_small").fetchone()
        _wait_for(monitored, blocks, lambda r: r[0] + r[1] >= 10000)
        verify("db_cache_hit_ratio_low", collect_sql(check, monitored, NOW), Quiet())
        assert _quiet("db_cache_hit_ratio_low", monitored, NOW)

        reset()
        with _raw(monitored) as conn:
            for _ in range(2 + 20000 // pages):
                conn.execute("SELECT COUNT(*) FROM craft_cache_big").fetchone()
        _wait_for(monitored, blocks, lambda r: r[0] + r[1] >= 10000)
        verify("db_cache_hit_ratio_low", collect_sql(check, monitored, NOW), Fire())
        assert fires(check, monitored=monitored, fleet=monitored, now=NOW) == [{}]  # below 95% for 15 minutes
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP TABLE IF EXISTS craft_cache_big, craft_cache_small")


@contextlib.contextmanager
def _running_statement(engine: Engine) -> Iterator[datetime]:
    """A `pg_sleep` running on a connection of its own (and a session idle in transaction next to it);
    yields the statement's query_start, cancels it on the way out."""
    idle = _raw(engine)
    idle.autocommit = False
    idle.execute("SELECT 1")  # idle in transaction from here on: not a running statement
    sleeper = _raw(engine)
    pid = sleeper.info.backend_pid
    errors: list[BaseException] = []

    def sleep() -> None:
        try:
            sleeper.execute("SELECT pg_sleep(30)")
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=sleep, daemon=True)
    thread.start()
    try:
        started = None
        deadline = time.monotonic() + 10
        while started is None and time.monotonic() < deadline:
            with engine.connect() as conn:
                started = conn.execute(sa.text(
                    "SELECT query_start FROM pg_stat_activity WHERE pid = :p AND state = 'active'"), {"p": pid}).scalar()
            time.sleep(0.02)
        assert started is not None, "the sleeping statement never showed as active"
        yield started
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_cancel_backend(:p)"), {"p": pid})
        thread.join(10)
        sleeper.close()
        idle.close()
    assert not errors, errors


def test_db_long_running_queries(monitored):
    """The longest active statement of this database, measured against :now: 0 when nothing runs (idle in
    transaction does not count), exactly 5 s does not fire, 6 s does."""
    check = CONFIG.checks["db_long_running_queries"]
    verify("db_long_running_queries", collect_sql(check, monitored, NOW), Quiet(0))
    with _running_statement(monitored) as started:
        verify("db_long_running_queries", collect_sql(check, monitored, started + 5 * SEC), Quiet(5))
        verify("db_long_running_queries", collect_sql(check, monitored, started + 6 * SEC), Fire(6))
        assert _quiet("db_long_running_queries", monitored, started + 5 * SEC)
        assert fires(check, monitored=monitored, fleet=monitored, now=started + 6 * SEC) == [{}]  # and a minute on


def test_db_long_running_queries_just_over_5s(monitored):
    check = CONFIG.checks["db_long_running_queries"]
    with _running_statement(monitored) as started:
        verify("db_long_running_queries", collect_sql(check, monitored, started + timedelta(seconds=5.04)), Fire())


def test_db_connections_high_counts_client_backends(monitored):
    """Not crafted to fire (holding ~70 connections would starve concurrent tests): the value is client backends as a % of max_connections,
    so holding 5 more connections shows in it."""
    check = CONFIG.checks["db_connections_high"]
    with monitored.connect() as conn:
        max_conn = int(conn.execute(sa.text("SHOW max_connections")).scalar())
    held = [_raw(monitored) for _ in range(5)]
    try:
        [sample] = collect_sql(check, monitored, NOW)
    finally:
        for conn in held:
            conn.close()
    assert 100.0 * 6 / max_conn - 0.1 <= sample.value <= 100.0  # our 5 and the check's own, at least
    assert check.condition.holds(sample.value) is (sample.value > 70)


def test_pg_stat_statements_checks_have_no_data_without_the_library_preloaded(monitored):
    """db_slow_queries and db_query_time_avg_high on the suite's server, which does not preload
    pg_stat_statements: no data (not an error) without the extension, and with it installed but its
    library not in shared_preload_libraries (they fire on stats_server, which preloads it: below)."""
    names = ("db_slow_queries", "db_query_time_avg_high")
    with monitored.connect() as conn:
        loaded = conn.execute(sa.text("SELECT current_setting('pg_stat_statements.max', true)")).scalar()
        available = conn.execute(sa.text(
            "SELECT COUNT(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")).scalar()
        installed = conn.execute(sa.text(
            "SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")).scalar()
    if loaded is not None:
        pytest.skip("the suite's Postgres preloads pg_stat_statements: no server here lacks it")
    if not installed:
        for name in names:
            verify(name, collect_sql(CONFIG.checks[name], monitored, NOW), NoData())
    if not available:
        pytest.skip("pg_stat_statements is not available on this server (it comes with PostgreSQL's contrib)")
    with monitored.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    for _ in range(3):  # on pooled connections too, one of which loaded the library creating the extension
        for name in names:
            verify(name, collect_sql(CONFIG.checks[name], monitored, NOW), NoData())


def test_pg_stat_statements_checks_fire_on_a_server_that_preloads_it(statements_database, fleet_db):
    """On stats_server (pg_stat_statements preloaded), in a database of its own, through the engine with
    the workers' engine for checks: quiet after a reset (no statement over 100 ms, a mean of a few
    microseconds); a statement of 1.5 s makes db_slow_queries fire (one statement averaging over 100 ms)
    and db_query_time_avg_high (the call-weighted mean of this database's statements, the evaluation's
    own BEGIN and SETs among them, over 200 ms)."""
    slow, avg = CONFIG.checks["db_slow_queries"], CONFIG.checks["db_query_time_avg_high"]
    url = statements_database("statements")

    def run(statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    def reset() -> None:  # this database's statements only
        run("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = 'statements'), 0)")

    monitored, fleet = create_for_checks(url), create(fleet_db)
    try:
        collect_sql(slow, monitored, NOW)  # the pool's connection made (its first statements) before the reset
        reset()
        assert through_engine(slow, monitored=monitored, fleet=fleet, at=[NOW]) == []
        assert through_engine(avg, monitored=monitored, fleet=fleet, at=[NOW]) == []
        reset()
        run("SELECT pg_sleep(1.5)")
        [(labels, state, value)] = through_engine(avg, monitored=monitored, fleet=fleet, at=[NOW])
        assert (labels, state) == ({}, "firing") and 200 < value < 1500, value
        assert through_engine(slow, monitored=monitored, fleet=fleet, at=[NOW]) == [({}, "firing", 1)]
    finally:
        monitored.dispose()
        fleet.dispose()
