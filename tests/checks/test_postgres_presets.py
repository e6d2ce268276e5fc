"""The postgres pack's presets against a real server of their own: the objects and sessions each one
watches made for real (XIDs burnt, sequences advanced, a slot retaining WAL, a failed concurrent index
build, a session idle in a transaction, one blocked on a lock, checkpoints requested, every connection
slot taken), each check evaluated through the engine as a worker does (run_check: its query, the
state machine, fleet.alerts; tests/support/checks.py) firing on the finding with its labels, quiet
without it, and the session checks without pg_monitor saying so once, as no data.

The session's throwaway server (`stats_server`, tests/checks/conftest.py) with small limits, so the
figures reach the pack's own thresholds in seconds: autovacuum_freeze_max_age 100000, max_connections
20 with 3 reserved. Their rule test files (config/postgres/tests/) prove they evaluate on the server
the rule tests run on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from ops.devkit.servers import PostgresServer
from tests.support import REPO
from tests.support.checks import fires, held_session, through_engine
from worker.checks import store
from worker.checks.collect import Sample, collect_sql
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet.db import create
from worker.notify.inhibit import alert_labels, inhibiting

CONFIG = load_config(REPO / "config", packs="all")
CHECK = CONFIG.checks
FREEZE_MAX_AGE = 100_000
MIN = timedelta(minutes=1)


@pytest.fixture(scope="module")
def server(stats_server) -> PostgresServer:
    assert sql(stats_server, "SHOW autovacuum_freeze_max_age")[0][0] == str(FREEZE_MAX_AGE)
    sql(stats_server, "CREATE SCHEMA IF NOT EXISTS app")
    return stats_server


@pytest.fixture(scope="module")
def engine(server):
    eng = create(server.url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def fleet(fleet_db):
    """Where the engine keeps the alerts of these evaluations (the session's fleet database)."""
    eng = create(fleet_db)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def settled(server):
    """Each test starts once the sessions of the one before have gone (a closed connection's backend
    leaves pg_stat_activity a moment later)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sql(server, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                                      "'client backend' AND pid <> pg_backend_pid() "
                                                      "AND (state <> 'idle' OR application_name = 'presets-test')")[0][0]:
        time.sleep(0.05)
    yield


def sql(server, statement: str, *, autocommit: bool = True):
    with psycopg.connect(server.url, autocommit=autocommit, application_name="presets-test") as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else None


def samples(engine, name: str, now: datetime | None = None) -> list[Sample]:
    return collect_sql(CHECK[name], engine, now or datetime.now(UTC))


def firing(engine, fleet, name: str, now: datetime | None = None) -> list[dict[str, str]]:
    """The label sets (the check's own labels left out) of the instances firing once the engine has
    evaluated the check at `now` (and, with a `for`, again that much later)."""
    return fires(CHECK[name], monitored=engine, fleet=fleet, now=now or datetime.now(UTC))


def fired(engine, fleet, name: str, label: str, now: datetime | None = None) -> set[str]:
    return {labels[label] for labels in firing(engine, fleet, name, now)}


def quiet(engine, fleet, name: str, now: datetime | None = None) -> bool:
    """One evaluation through the engine at `now` leaves no instance pending or firing."""
    return through_engine(CHECK[name], monitored=engine, fleet=fleet, at=[now or datetime.now(UTC)]) == []


def eventually(fn, timeout: float = 10.0) -> bool:
    """`fn()` true within `timeout`: a closed session's backend leaves pg_stat_activity a moment later."""
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def by_label(found: list[Sample], label: str) -> dict[str, Sample]:
    return {s.labels.get(label): s for s in found}


def session(server, *statements: str):
    """A client session that ran `statements` and stays as it is (e.g. inside its transaction)."""
    return held_session(server.url, *statements, application_name="presets-test")


def since(server, conn: psycopg.Connection, column: str, at: datetime) -> float:
    """Seconds from the session's pg_stat_activity `column` to `at`, as the server recorded it."""
    started = sql(server, f"SELECT {column} FROM pg_stat_activity WHERE pid = {int(pid_of(conn))}")[0][0]  # noqa: S608
    return (at - started).total_seconds()


def pid_of(conn: psycopg.Connection) -> str:
    return str(conn.info.backend_pid)


# -- transaction ID wraparound --------------------------------------------------------------------
def test_xid_wraparound_warns_over_50pct_and_pages_over_80pct_of_autovacuum_freeze_max_age(server, engine, fleet):
    sql(server, """CREATE OR REPLACE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
                   BEGIN FOR i IN 1..n LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$""")
    age = sql(server, "SELECT age(datfrozenxid) FROM pg_database WHERE datname = 'postgres'")[0][0]
    assert age < 0.3 * FREEZE_MAX_AGE
    assert quiet(engine, fleet, "db_xid_wraparound_warning")
    sql(server, f"CALL burn({int(0.55 * FREEZE_MAX_AGE) - age})")
    found = by_label([s for s in samples(engine, "db_xid_wraparound_warning") if s.labels["counter"] == "xid"],
                     "datname")
    assert {"postgres", "template1"} <= set(found)  # every database that takes connections
    assert 55 <= found["postgres"].value < 56, found["postgres"]
    want = 100 * sql(server, "SELECT age(datfrozenxid) FROM pg_database WHERE datname = 'postgres'")[0][0] / FREEZE_MAX_AGE
    assert found["postgres"].value == pytest.approx(want, abs=0.02)
    warned = firing(engine, fleet, "db_xid_wraparound_warning")
    assert {"datname": "postgres", "counter": "xid"} in warned
    assert {"datname": "postgres", "counter": "multixact"} not in warned
    assert quiet(engine, fleet, "db_xid_wraparound_critical")
    sql(server, f"CALL burn({int(0.30 * FREEZE_MAX_AGE)})")
    assert {"datname": "postgres", "counter": "xid"} in firing(engine, fleet, "db_xid_wraparound_critical")
    sql(server, "VACUUM (FREEZE)")  # what the runbook says: the postgres database is frozen again
    assert {"datname": "postgres", "counter": "xid"} not in firing(engine, fleet, "db_xid_wraparound_warning")


def test_the_shipped_inhibit_rule_holds_the_warning_back_while_the_critical_fires_for_the_same_database():
    rules = CONFIG.routing.inhibit_rules
    critical = alert_labels("db_xid_wraparound_critical", "critical", {"datname": "app", "counter": "xid"}, "monitored")
    same = alert_labels("db_xid_wraparound_warning", "warning", {"datname": "app", "counter": "xid"}, "monitored")
    other_db = alert_labels("db_xid_wraparound_warning", "warning", {"datname": "other", "counter": "xid"}, "monitored")
    other_counter = alert_labels("db_xid_wraparound_warning", "warning", {"datname": "app", "counter": "multixact"},
                                 "monitored")
    assert inhibiting(rules, same, "w1", [("c1", critical)]) == "c1"
    assert inhibiting(rules, other_db, "w2", [("c1", critical)]) is None
    assert inhibiting(rules, other_counter, "w3", [("c1", critical)]) is None


# -- sequences ------------------------------------------------------------------------------------
def test_sequences_near_their_limit_fire_one_instance_each_schema_qualified_with_the_columns_cap(server, engine, fleet):
    sql(server, """
        CREATE TABLE app.orders (id serial PRIMARY KEY);                  -- an integer sequence
        CREATE TABLE app.events (id integer);
        CREATE SEQUENCE app.events_seq AS bigint OWNED BY app.events.id;  -- bigint, feeding an integer
        CREATE SEQUENCE app.half AS integer;
        CREATE SEQUENCE app.down INCREMENT -1 MINVALUE -1000 MAXVALUE -1 START -1;
        CREATE SEQUENCE app.round_robin AS smallint CYCLE;
        CREATE SEQUENCE app.never_used;
        SELECT setval('app.orders_id_seq', 1900000000);   -- 88.5% of 2^31 - 1
        SELECT setval('app.events_seq', 1800000000);      -- 83.8% of the column's 2^31 - 1 (0% of bigint's)
        SELECT setval('app.half', 1073741824);            -- 50%
        SELECT setval('app.down', -900);                  -- 90% of the way down to -1000
        SELECT setval('app.round_robin', 32000);          -- cycles: never runs out
    """)
    found = by_label(samples(engine, "db_sequences_near_max"), "sequence")
    assert found["app.orders_id_seq"].value == pytest.approx(88.48, abs=0.01)
    assert found["app.orders_id_seq"].labels["column"] == "app.orders.id"
    assert found["app.events_seq"].value == pytest.approx(83.82, abs=0.01)
    assert found["app.events_seq"].labels["column"] == "app.events.id"
    assert found["app.half"].labels["column"] == "-"
    assert fired(engine, fleet, "db_sequences_near_max", "sequence") == {"app.orders_id_seq", "app.events_seq", "app.down"}
    assert "app.round_robin" not in found and "app.never_used" not in found


# -- replication slots ----------------------------------------------------------------------------
def test_an_inactive_slot_is_pending_30_minutes_then_fires_and_its_retained_wal_against_the_budget(server, engine, fleet):
    sql(server, "SELECT pg_create_physical_replication_slot('standby_1', true)")
    try:
        found = by_label(samples(engine, "db_replication_slot_inactive"), "slot")
        assert found["standby_1"].value == 1 and found["standby_1"].labels["slot_type"] == "physical"
        now = datetime.now(UTC)
        inactive = CHECK["db_replication_slot_inactive"]
        assert through_engine(inactive, monitored=engine, fleet=fleet, at=[now, now + 29 * MIN]) == [
            ({"slot": "standby_1", "slot_type": "physical", "datname": "-"}, "pending", 1)]
        assert firing(engine, fleet, "db_replication_slot_inactive", now) == [
            {"slot": "standby_1", "slot_type": "physical", "datname": "-"}]  # 30 minutes later
        retained = by_label(samples(engine, "db_replication_slot_wal_retained"), "slot")["standby_1"]
        assert retained.labels["budget"] == "10 x max_wal_size" and retained.value < 5
        assert quiet(engine, fleet, "db_replication_slot_wal_retained")
        sql(server, "ALTER SYSTEM SET max_slot_wal_keep_size = '48MB'")
        sql(server, "SELECT pg_reload_conf()")
        assert eventually(lambda: by_label(samples(engine, "db_replication_slot_wal_retained"), "slot")[
            "standby_1"].labels["budget"] == "max_slot_wal_keep_size")  # the pool's sessions took the reload
        sql(server, "CREATE TABLE wal_filler AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, 45000)")
        retained = by_label(samples(engine, "db_replication_slot_wal_retained"), "slot")["standby_1"]
        assert retained.value > 80, retained
        assert firing(engine, fleet, "db_replication_slot_wal_retained") == [
            {"slot": "standby_1", "slot_type": "physical", "budget": "max_slot_wal_keep_size"}]
    finally:
        sql(server, "SELECT pg_drop_replication_slot('standby_1')")
        sql(server, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        sql(server, "SELECT pg_reload_conf()")
    assert not samples(engine, "db_replication_slot_inactive")


# -- invalid indexes ------------------------------------------------------------------------------
def test_a_failed_concurrent_build_leaves_an_invalid_index_and_one_being_built_is_not_one(server, engine, fleet):
    sql(server, "CREATE TABLE app.dupes (v int); INSERT INTO app.dupes VALUES (1), (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(server, "CREATE UNIQUE INDEX CONCURRENTLY dupes_v ON app.dupes (v)")
    assert firing(engine, fleet, "db_invalid_indexes") == [{"index": "app.dupes_v", "table": "app.dupes"}]
    assert CHECK["db_invalid_indexes"].for_ == timedelta(hours=1)
    sql(server, "DROP INDEX app.dupes_v")
    assert not samples(engine, "db_invalid_indexes")
    # a concurrent build waits for the table's writers: meanwhile its index is invalid, and in progress
    sql(server, "CREATE TABLE app.slow (v int)")
    with session(server, "BEGIN", "INSERT INTO app.slow VALUES (1)") as holder:
        build = threading.Thread(target=sql, args=(server, "CREATE INDEX CONCURRENTLY slow_v ON app.slow (v)"))
        build.start()
        try:
            deadline = time.monotonic() + 20
            while not sql(server, "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                  "WHERE c.relname = 'slow_v' AND NOT i.indisvalid") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sql(server, "SELECT count(*) FROM pg_stat_progress_create_index")[0][0] == 1
            assert not samples(engine, "db_invalid_indexes")
            assert quiet(engine, fleet, "db_invalid_indexes")
        finally:
            holder.execute("COMMIT")
            build.join(20)
    assert not samples(engine, "db_invalid_indexes")


# -- sessions -------------------------------------------------------------------------------------
def test_a_session_idle_in_a_transaction_over_5_minutes_fires_by_its_pid(server, engine, fleet):
    with session(server, "BEGIN", "SELECT 1") as idle, session(server) as plain:
        now = datetime.now(UTC)
        found = by_label(samples(engine, "db_idle_in_transaction", now + 10 * MIN), "pid")
        assert pid_of(plain) not in found  # idle, but in no transaction
        s = found[pid_of(idle)]
        assert s.labels["user"] == "postgres" and s.labels["application"] == "presets-test"
        assert s.value == round(since(server, idle, "state_change", now + 10 * MIN))  # seconds idle, against :now
        assert pid_of(idle) not in fired(engine, fleet, "db_idle_in_transaction", "pid", now + 4 * MIN)
        assert firing(engine, fleet, "db_idle_in_transaction", now + 6 * MIN) == [
            {"pid": pid_of(idle), "user": "postgres", "application": "presets-test", "datname": "postgres"}]
        idle.execute("COMMIT")
        assert pid_of(idle) not in by_label(samples(engine, "db_idle_in_transaction", now + 10 * MIN), "pid")


def test_a_session_blocked_on_a_lock_over_a_minute_fires_naming_the_blocker(server, engine, fleet):
    sql(server, "CREATE TABLE app.locked (v int)")
    with session(server, "BEGIN", "LOCK TABLE app.locked IN ACCESS EXCLUSIVE MODE") as holder, session(server) as waiter:
        blocked = threading.Thread(target=lambda: waiter.execute("SELECT * FROM app.locked"))
        blocked.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and pid_of(waiter) not in {
                    str(r[0]) for r in sql(server, "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'")}:
                time.sleep(0.1)
            now = datetime.now(UTC)
            found = by_label(samples(engine, "db_blocked_sessions", now + 2 * MIN), "pid")
            assert set(found) == {pid_of(waiter)}  # the holder waits for nothing
            assert found[pid_of(waiter)].labels["blocked_by"] == pid_of(holder)
            assert found[pid_of(waiter)].value == round(since(server, waiter, "query_start", now + 2 * MIN))
            assert quiet(engine, fleet, "db_blocked_sessions", now + 30 * timedelta(seconds=1))
            assert firing(engine, fleet, "db_blocked_sessions", now + 2 * MIN) == [
                {"pid": pid_of(waiter), "user": "postgres", "application": "presets-test", "blocked_by": pid_of(holder)}]
        finally:
            holder.execute("COMMIT")
            blocked.join(20)
    assert eventually(lambda: not samples(engine, "db_blocked_sessions", datetime.now(UTC) + 2 * MIN))


def test_the_longest_open_transaction_over_an_hour_fires_labelled_with_its_session(server, engine, fleet):
    with session(server, "BEGIN", "SELECT txid_current()") as old:
        time.sleep(0.05)
        with session(server, "BEGIN", "SELECT 1"):
            now = datetime.now(UTC)
            found = samples(engine, "db_longest_transaction", now + 2 * timedelta(hours=1))
            assert len(found) == 1 and found[0].labels["pid"] == pid_of(old)
            assert found[0].labels["state"] == "idle in transaction"
            assert quiet(engine, fleet, "db_longest_transaction", now + 50 * MIN)
            assert firing(engine, fleet, "db_longest_transaction", now + 70 * MIN) == [
                {"pid": pid_of(old), "user": "postgres", "application": "presets-test", "state": "idle in transaction"}]
    assert eventually(lambda: not samples(engine, "db_longest_transaction", datetime.now(UTC) + 2 * timedelta(hours=1)))


def test_without_pg_monitor_the_session_checks_have_no_data_and_say_why_once(server, engine, fleet_db):
    sql(server, "CREATE ROLE watcher LOGIN")
    watcher = create(server.url.replace("postgres@", "watcher@", 1))
    fleet = create(fleet_db)
    try:
        with session(server, "BEGIN", "SELECT 1") as idle:
            now = datetime.now(UTC) + 10 * MIN
            for name in ("db_idle_in_transaction", "db_blocked_sessions", "db_longest_transaction",
                         "db_long_running_queries"):
                got = samples(watcher, name, now)
                assert [(s.value, s.reason) for s in got] == [
                    (None, "role watcher cannot see other sessions: GRANT pg_monitor TO watcher")], name
                assert got[0].labels == dict(CHECK[name].labels)  # the reason is no label
            with fleet.begin() as conn:
                conn.execute(sa.text("DELETE FROM fleet.check_runs WHERE check_name = 'db_idle_in_transaction'"))
            check = CHECK["db_idle_in_transaction"]
            outcomes = [run_check(check, monitored=watcher, fleet=fleet, now=now + i * MIN, routing=None,
                                  slot=now + i * MIN) for i in range(3)]
            assert [o.status for o in outcomes] == ["no_data"] * 3
            assert [o.note_is_new for o in outcomes] == [True, False, False]  # logged once, not every run
            with fleet.connect() as conn:
                last = store.last_runs(conn)["db_idle_in_transaction"]
            assert last.status == "no_data" and last.note.startswith("role watcher cannot see")
            sql(server, "GRANT pg_monitor TO watcher")
            assert pid_of(idle) in by_label(samples(watcher, "db_idle_in_transaction", now), "pid")
            later = run_check(check, monitored=watcher, fleet=fleet, now=now + 5 * MIN, routing=None, slot=now + 5 * MIN)
            assert later.status == "ok" and later.note is None
    finally:
        watcher.dispose()
        fleet.dispose()


# -- connections, checkpoints ---------------------------------------------------------------------
def test_connections_count_against_the_slots_left_to_applications(server, engine, fleet):
    free = 20 - 3  # max_connections less superuser_reserved_connections (reserved_connections: 16+, 0 here)

    def clients() -> float:
        v = samples(engine, "db_connections_near_limit")[0].value
        assert (v * free / 100) == pytest.approx(round(v * free / 100), abs=0.01), f"{v}% is not n/{free}"
        return round(v * free / 100)

    sql(server, "DO $$ BEGIN CREATE ROLE app_user LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    before = clients()  # this test's own sessions (the sampling one, the pool's)
    assert 100 * before / free < 90
    assert quiet(engine, fleet, "db_connections_near_limit") and quiet(engine, fleet, "db_connections_high")
    with contextlib.ExitStack() as stack:
        def full_and_refused() -> bool:
            """Top the sessions up to every free slot (a backend of an earlier test may still be
            leaving), then an application's next connection must be refused."""
            while clients() < free:
                stack.enter_context(session(server))
            try:
                psycopg.connect(server.url.replace("postgres@", "app_user@", 1)).close()
            except psycopg.OperationalError as exc:
                assert "reserved for" in str(exc)
                return True
            return False

        assert eventually(full_and_refused)
        assert clients() == free  # every slot left to applications taken: 100%
        assert firing(engine, fleet, "db_connections_near_limit") == [{}]  # over 90% for 2 minutes
        assert firing(engine, fleet, "db_connections_high") == [{}]  # 17 of max_connections 20: over 70%
    assert eventually(lambda: clients() <= before)


def test_checkpoints_requested_against_timed_from_the_servers_own_view(server, engine, fleet):
    v17 = sql(server, "SELECT current_setting('server_version_num')::int >= 170000")[0][0]
    view = ("SELECT num_timed, num_requested FROM pg_stat_checkpointer" if v17 else
            "SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter")
    sql(server, f"SELECT pg_stat_reset_shared('{'checkpointer' if v17 else 'bgwriter'}')")
    assert samples(engine, "db_checkpoints_requested")[0].value is None  # under 10 checkpoints: no data
    assert quiet(engine, fleet, "db_checkpoints_requested")
    for _ in range(12):
        sql(server, "CHECKPOINT")
    deadline = time.monotonic() + 10
    while sql(server, view)[0][1] < 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    timed, req = sql(server, view)[0]
    value = samples(engine, "db_checkpoints_requested")[0].value
    assert value == pytest.approx(100 * req / (timed + req), abs=0.01)
    assert firing(engine, fleet, "db_checkpoints_requested") == [{}]
