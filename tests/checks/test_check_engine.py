"""The check engine against real Postgres: state machine, one evaluation per slot, errors recorded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.checks import make_check
from tests.support.db import fresh_gauge
from worker.checks.collect import CheckError
from worker.checks.engine import run_check
from worker.fleet.db import create
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

ROUTING = Routing.model_validate({
    "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}, "digest": {"kind": "digest"}},
    "routes": [
        {"match": {"severity": "critical"}, "channels": ["email", "slack"], "repeat_interval": "1h"},
        {"match": {"severity": "warning"}, "channels": ["slack"], "repeat_interval": "4h"},
        {"match": {"severity": "info"}, "channels": ["digest"]},
    ],
})


@pytest.fixture
def db(clean_fleet):
    """The shared `db`'s gauge with a timestamp column, `at`."""
    fresh_gauge(clean_fleet, "name text, v numeric, at timestamptz")
    return clean_fleet


def set_gauge(engine, **values):
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
        for name, v in values.items():
            conn.execute(sa.text("INSERT INTO gauge VALUES (:n, :v, now())"), {"n": name, "v": v})


def run(engine, check, at, **kw):
    return run_check(check, monitored=engine, fleet=engine, now=at, routing=ROUTING, **kw)


def rows(engine, sql, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_pending_then_firing_after_for_then_resolved(db):
    check = make_check()
    set_gauge(db, a=50)
    assert [t.to_state for t in run(db, check, T0).transitions] == ["pending"]
    assert run(db, check, T0 + timedelta(minutes=5)).transitions == []
    out = run(db, check, T0 + timedelta(minutes=10))
    assert [t.to_state for t in out.transitions] == ["firing"]
    assert len(out.notification_ids) == 2  # email + slack for critical
    # still firing inside the repeat interval: nothing new
    assert run(db, check, T0 + timedelta(minutes=11)).notification_ids == []
    set_gauge(db, a=1)
    out = run(db, check, T0 + timedelta(minutes=12))
    assert [t.to_state for t in out.transitions] == ["resolved"]
    assert len(out.notification_ids) == 2
    events = rows(db, "SELECT from_state, to_state FROM fleet.alert_events ORDER BY id")
    assert [tuple(e) for e in events] == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]
    notes = rows(db, "SELECT channel, transition, status FROM fleet.notifications ORDER BY created_at, channel")
    assert sorted((n.channel, n.transition) for n in notes) == [
        ("email", "firing"), ("email", "resolved"), ("slack", "firing"), ("slack", "resolved")]


def test_for_equal_to_the_interval_fires_at_the_next_run_though_it_starts_a_few_ms_early(db):
    """A 30 s schedule with for 30s: runs start 30 s apart give or take the queue's jitter. The run
    after the pending one, 29.98 s later, fires (bench/mttd.py saw it wait a whole interval more);
    one 25 s later does not."""
    check = make_check(schedule="30s", **{"for": "30s"})
    set_gauge(db, a=50)
    start = T0 + timedelta(milliseconds=155)
    assert [t.to_state for t in run(db, check, start, slot=T0).transitions] == ["pending"]
    assert run(db, check, start + timedelta(seconds=25), slot=T0 + timedelta(seconds=25)).transitions == []
    fired = run(db, check, start + timedelta(seconds=29.98), slot=T0 + timedelta(seconds=30))
    assert [t.to_state for t in fired.transitions] == ["firing"]


def test_condition_that_stops_holding_while_pending_goes_back_to_inactive(db):
    check = make_check()
    set_gauge(db, a=50)
    run(db, check, T0)
    set_gauge(db, a=5)
    out = run(db, check, T0 + timedelta(minutes=1))
    assert [t.to_state for t in out.transitions] == ["inactive"]
    assert out.notification_ids == []


def test_repeat_interval_sends_the_next_reminder_and_no_other(db):
    check = make_check(**{"for": "0s"})
    set_gauge(db, a=50)
    assert len(run(db, check, T0).notification_ids) == 2
    for minutes in (10, 30, 59):
        assert run(db, check, T0 + timedelta(minutes=minutes)).notification_ids == []
    assert len(run(db, check, T0 + timedelta(minutes=61)).notification_ids) == 2
    assert run(db, check, T0 + timedelta(minutes=62)).notification_ids == []


def test_one_alert_instance_per_label_set(db):
    check = make_check(**{"for": "0s"})
    set_gauge(db, stripe=50, resend=60, ok=1)
    out = run(db, check, T0)
    assert sorted(t.labels["item"] for t in out.transitions) == ["resend", "stripe"]
    assert len({t.fingerprint for t in out.transitions}) == 2
    # an instance whose row disappears is resolved (no_data: ok)
    set_gauge(db, stripe=50)
    out = run(db, check, T0 + timedelta(minutes=1))
    assert [(t.labels["item"], t.to_state) for t in out.transitions] == [("resend", "resolved")]


def test_doubled_beat_or_redelivery_evaluates_once_per_slot(db):
    check = make_check(**{"for": "0s"})
    set_gauge(db, a=50)
    results = []
    barrier = threading.Barrier(4)

    def go():
        barrier.wait()
        results.append(run(db, check, T0 + timedelta(seconds=5)))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["ok", "skipped", "skipped", "skipped"]
    assert rows(db, "SELECT count(*) FROM fleet.check_runs")[0][0] == 1
    assert rows(db, "SELECT count(*) FROM fleet.notifications")[0][0] == 2


@pytest.mark.parametrize(
    ("query", "timeout", "needle"),
    [
        ("SELECT v AS value FROM no_such_table", "5s", "no_such_table"),
        ("INSERT INTO gauge VALUES ('x', 1, now()) RETURNING v AS value", "5s", "read-only transaction"),
        ("WITH d AS (DELETE FROM gauge RETURNING 1) SELECT count(*) AS value FROM d", "5s", "read-only transaction"),
        ("SELECT pg_sleep(3)::text, 1 AS value", "1s", "statement timeout"),
        ("SELECT 'high' AS value", "5s", "must be numeric"),
        ("SELECT 1 AS v", "5s", "column named `value`"),
    ],
)
def test_failing_query_is_recorded_as_error_and_never_resolves(db, query, timeout, needle):
    good = make_check(**{"for": "0s"})
    set_gauge(db, a=50)
    assert [t.to_state for t in run(db, good, T0).transitions] == ["firing"]
    # built past validation (which refuses a top-level INSERT): the engine's READ ONLY cuts it too
    bad = make_check(**{"for": "0s", "timeout": timeout}).model_copy(update={"query": query})
    out = run(db, bad, T0 + timedelta(minutes=1))
    assert out.status == "error" and needle in out.error
    assert out.transitions == []
    run_row = rows(db, "SELECT status, error FROM fleet.check_runs ORDER BY id DESC LIMIT 1")[0]
    assert run_row.status == "error" and needle in run_row.error
    assert rows(db, "SELECT state FROM fleet.alerts")[0].state == "firing"
    assert rows(db, "SELECT count(*) FROM gauge WHERE name = 'x'")[0][0] == 0


@pytest.mark.parametrize(("policy", "expected"), [("ok", "resolved"), ("alerting", None), ("keep", None)])
def test_no_data_policy(db, policy, expected):
    check = make_check(**{"for": "0s", "no_data": policy, "query": "SELECT max(v) AS value FROM gauge"})
    set_gauge(db, a=50)
    run(db, check, T0)
    set_gauge(db)
    out = run(db, check, T0 + timedelta(minutes=1))
    assert out.status == "no_data"
    assert [t.to_state for t in out.transitions] == ([expected] if expected else [])


def test_now_is_a_bind_parameter_so_tests_and_backtests_control_the_clock(db):
    check = make_check(**{"for": "0s", "query": "SELECT count(*) AS value FROM gauge WHERE at > :now - interval '1 hour'",
                          "condition": "> 0"})
    set_gauge(db, a=50)
    assert run(db, check, datetime.now(UTC)).status == "ok"
    assert rows(db, "SELECT state FROM fleet.alerts")[0].state == "firing"
    out = run(db, check, datetime.now(UTC) + timedelta(hours=3))
    assert [t.to_state for t in out.transitions] == ["resolved"]


def test_info_alerts_go_to_the_digest_not_the_outbox(db):
    check = make_check(**{"for": "0s", "severity": "info"})
    set_gauge(db, a=50)
    out = run(db, check, T0)
    assert [t.to_state for t in out.transitions] == ["firing"]
    assert out.notification_ids == []


def test_backtest_replays_a_rule_and_counts_the_notifications_it_would_send(db):
    from worker.checks.backtest import backtest

    with db.begin() as conn:
        # a metric that is high from 10:20 to 11:40 on an otherwise quiet day
        conn.execute(sa.text("""INSERT INTO gauge SELECT 'x', CASE WHEN t >= :a AND t < :b THEN 50 ELSE 1 END, t
                                FROM generate_series(CAST(:s AS timestamptz), CAST(:e AS timestamptz),
                                                     interval '1 minute') t"""),
                     {"a": T0 + timedelta(minutes=20), "b": T0 + timedelta(minutes=100), "s": T0, "e": T0 + timedelta(hours=3)})
    check = make_check(query="SELECT v AS value FROM gauge WHERE at = date_trunc('minute', CAST(:now AS timestamptz))")
    result = backtest(check, db, ROUTING, start=T0, end=T0 + timedelta(hours=3), step=timedelta(minutes=5))
    assert result.steps == 37 and result.errors == []
    assert [(e.at - T0, e.to_state) for e in result.events] == [
        (timedelta(minutes=20), "pending"), (timedelta(minutes=30), "firing"), (timedelta(minutes=100), "resolved")]
    # firing at 10:30, one repeat at 11:30 (repeat_interval 1h), resolved at 11:40: 3 per channel
    assert result.notifications == {"email": 3, "slack": 3}
    assert rows(db, "SELECT count(*) FROM fleet.alerts")[0][0] == 0  # nothing written


def test_flapping_condition_never_fires_while_for_has_not_elapsed(db):
    check = make_check()  # for: 10m
    for minute in range(0, 60, 5):
        set_gauge(db, a=50 if (minute // 5) % 2 == 0 else 1)  # true, false, true, false ... every 5 minutes
        run(db, check, T0 + timedelta(minutes=minute))
    states = [r.to_state for r in rows(db, "SELECT to_state FROM fleet.alert_events ORDER BY id")]
    assert set(states) == {"pending", "inactive"} and "firing" not in states
    assert rows(db, "SELECT count(*) FROM fleet.notifications")[0][0] == 0


def test_flapping_condition_without_for_notifies_each_episode_once(db):
    check = make_check(**{"for": "0s"})
    for minute in range(0, 20, 5):
        set_gauge(db, a=50 if (minute // 5) % 2 == 0 else 1)
        run(db, check, T0 + timedelta(minutes=minute))
    states = [r.to_state for r in rows(db, "SELECT to_state FROM fleet.alert_events ORDER BY id")]
    assert states == ["firing", "resolved", "firing", "resolved"]
    assert rows(db, "SELECT count(*) FROM fleet.notifications")[0][0] == 8  # 2 channels x 4 transitions


def test_a_check_survives_its_pooled_connection_being_killed(fleet_db):
    """No pre-ping round trip per check: a connection that went away (a restart) is retried once."""
    from worker.checks.collect import collect_sql

    engine = create(fleet_db, pre_ping=False, pool_size=1)
    check = make_check(query="SELECT 1 AS value")
    assert collect_sql(check, engine, T0)[0].value == 1
    with engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    killer = create(fleet_db)
    with killer.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    killer.dispose()
    assert collect_sql(check, engine, T0)[0].value == 1
    engine.dispose()


def test_a_run_survives_its_fleet_connection_dying_while_idle(db, fleet_db):
    """run_check's fleet engine pings nothing (worker.fleet.db.hot_fleet_engine): a kept connection
    that died between two runs (a restart) is met by the claim, which nothing has written before, and
    the run goes through on a new one, recorded once."""
    state = create(fleet_db, pre_ping=False, pool_size=1)
    check = make_check(**{"for": "0s"})
    set_gauge(db, a=50)
    assert run_check(check, monitored=db, fleet=state, now=T0, routing=ROUTING).status == "ok"
    with state.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    set_gauge(db, a=5)
    out = run_check(check, monitored=db, fleet=state, now=T0 + timedelta(minutes=1), routing=ROUTING)
    assert (out.status, [t.to_state for t in out.transitions]) == ("ok", ["resolved"])
    assert rows(db, "SELECT count(*) FROM fleet.check_runs")[0][0] == 2
    state.dispose()


def test_a_run_writes_its_instances_and_transitions_whatever_their_values(db):
    """The infinities arrive in fleet.alerts as float8 and in the notification's payload (JSON has no
    Infinity: it failed the run before), labels with quotes and unicode as they were; a loaded instance
    is updated, a new one inserted."""
    check = make_check(**{"for": "0s"}, query="SELECT name AS item, v::float8 AS value FROM gauge")
    set_gauge(db, a=50, b=3)
    run(db, check, T0)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
        conn.execute(sa.text("""INSERT INTO gauge VALUES ('a', 'NaN', now()), ('b', 'Infinity', now()),
                                ('c "x" é', '-Infinity', now())"""))
    out = run(db, check, T0 + timedelta(minutes=1))
    assert out.status == "ok"
    got = {r.item: (r.state, r.last_value) for r in rows(
        db, "SELECT labels->>'item' AS item, state, last_value FROM fleet.alerts ORDER BY 1")}
    assert got["b"] == ("firing", float("inf")) and got['c "x" é'] == ("inactive", float("-inf"))
    assert got["a"] == ("resolved", 50.0)  # NaN is no value (no_data: ok), the last one kept
    assert [(t.labels["item"], t.from_state, t.to_state) for t in sorted(out.transitions, key=lambda t: t.labels["item"])] \
        == [("a", "firing", "resolved"), ("b", "inactive", "firing")]
    assert len(rows(db, "SELECT 1 FROM fleet.alert_events")) == 3


@pytest.mark.parametrize("tail", ["COMMIT; DELETE FROM gauge", "ROLLBACK; DELETE FROM gauge", "DELETE FROM gauge"])
def test_a_query_cannot_end_the_read_only_transaction_with_more_statements(db, tail):
    """The extended protocol takes one statement: `...; COMMIT; DELETE` is an error and deletes nothing."""
    from worker.checks.collect import collect_sql

    set_gauge(db, a=50)
    with pytest.raises(ValueError, match="second SQL statement"):  # refused when the config loads
        make_check(query=f"SELECT 1 AS value; {tail}")
    # and again at run time, should a query reach the engine unvalidated
    check = make_check().model_copy(update={"query": f"SELECT 1 AS value; {tail}"})
    with pytest.raises(CheckError, match="must be one SQL statement"):
        collect_sql(check, db, T0)
    assert rows(db, "SELECT count(*) FROM gauge")[0][0] == 1


def test_the_pooled_connection_goes_back_as_it_came(fleet_db):
    """On an engine that writers share (any engine but create_for_checks'), a check leaves the
    connection as it found it: not autocommit, not read only, no timeout."""
    from worker.checks.collect import collect_sql

    engine = create(fleet_db, pre_ping=False, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS gauge2"))
            conn.execute(sa.text("CREATE TABLE gauge2 (v int)"))
        for query in ("SELECT 1 AS value", "SELECT 1/0 AS value", "SELECT pg_sleep(2), 1 AS value"):
            try:
                collect_sql(make_check(query=query, timeout="1s"), engine, T0)
            except CheckError:
                pass
            with engine.connect() as conn:  # a transaction of our own, rolled back: nothing autocommitted
                assert conn.execute(sa.text("SHOW transaction_read_only")).scalar() == "off"
                assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "0"
                conn.execute(sa.text("INSERT INTO gauge2 VALUES (1)"))
                conn.rollback()
            with engine.begin() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM gauge2")).scalar() == 0
    finally:
        engine.dispose()


def _backend(engine) -> int:
    from worker.checks.collect import collect_sql

    return int(collect_sql(make_check(query="SELECT pg_backend_pid() AS value"), engine, T0)[0].value)


def _sessions(engine, name: str, expect: int) -> int:
    """The server's count of sessions named `name`, once it is `expect` (a backend ends a moment after
    its socket closes) or 10 s have passed."""
    import time

    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                             {"n": name}).scalar()
        if n == expect or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def test_a_checks_engine_keeps_one_connection_per_thread_through_errors_and_its_death(fleet_db):
    """create_for_checks: no checkout per check; a failed check leaves the connection usable; a killed
    one is replaced at once; dispose() closes every thread's."""
    from worker.checks.collect import collect_sql
    from worker.fleet.db import create_for_checks

    name = "opsfleet-checks-kept-test"
    engine, other = create_for_checks(fleet_db, application_name=name), create(fleet_db)
    try:
        first = _backend(engine)
        for query in ("SELECT 1/0 AS value", "SELECT pg_sleep(2), 1 AS value", "SELECT 'x' AS value"):
            with pytest.raises(CheckError):
                collect_sql(make_check(query=query, timeout="1s"), engine, T0)
            assert _backend(engine) == first
        assert collect_sql(make_check(query="SELECT current_setting('transaction_read_only') = 'on' AS value"),
                           engine, T0)[0].value == 1
        seen = []
        worker = threading.Thread(target=lambda: seen.append(_backend(engine)))
        worker.start()
        worker.join()
        assert seen and seen[0] != first  # each thread its own
        with other.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
        replaced = _backend(engine)
        assert replaced not in (first, seen[0])
        assert _backend(engine) == replaced
        assert _sessions(other, name, 2) == 2  # this thread's new one and the other thread's
        engine.dispose()
        assert _sessions(other, name, 0) == 0
        assert _backend(engine) not in (first, replaced)  # and it works on after a dispose
    finally:
        engine.dispose()
        other.dispose()


def test_a_forked_child_never_touches_the_connection_its_parent_keeps(fleet_db):
    """Celery's prefork pool forks the worker: the child opens its own connections, of a kept checks
    engine and of an ordinary pool alike."""
    import multiprocessing

    from worker.fleet.db import create_for_checks

    engine, pooled = create_for_checks(fleet_db), create(fleet_db)

    def pid_of_pooled() -> int:
        with pooled.connect() as conn:
            return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    try:
        parent, parent_pooled = _backend(engine), pid_of_pooled()  # one kept, one idle in its pool
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        child = ctx.Process(target=lambda: out.put((_backend(engine), pid_of_pooled())))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        kept_in_child, pooled_in_child = out.get(timeout=5)
        assert kept_in_child not in (parent, parent_pooled) and pooled_in_child not in (parent, parent_pooled)
        assert (_backend(engine), pid_of_pooled()) == (parent, parent_pooled)  # the parent's are intact
    finally:
        engine.dispose()
        pooled.dispose()
