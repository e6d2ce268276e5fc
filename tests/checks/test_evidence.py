"""Evidence gathered when an alert fires (worker/checks/evidence.py), on a real Postgres with each
condition provoked: a session holding a row lock that another waits on, a session idle in a
transaction, a table with dead tuples, an inactive replication slot. The engine stores what it
gathered with the alert (fleet.alert_evidence) and its notification carries the first lines."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support import REPO
from tests.support.checks import held_session
from worker.checks import evidence
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.migrate import upgrade
from worker.fleet.settings import Settings
from worker.notify.delivery import deliver
from worker.notify.routing import Routing

CHECKS = load_config(REPO / "config", packs="all").checks
ROUTING = Routing.model_validate({"channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}},
                                  "routes": [{"match": {}, "channels": ["email", "slack"], "group_wait": "0s"}]})


@pytest.fixture(scope="module")
def url(fresh_database) -> str:
    made = fresh_database()
    upgrade(made)
    return made


@pytest.fixture(scope="module")
def engine(url) -> Iterator[sa.Engine]:
    eng = create(url)
    yield eng
    eng.dispose()


def plain(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def session(url: str, *statements: str):
    return held_session(url, *statements, application_name="evidence-test")


def fire(engine: sa.Engine, check: Check, at: datetime):
    outcome = run_check(check, monitored=engine, fleet=engine, now=at, routing=ROUTING, slot=at)
    assert outcome.status == "ok", outcome.error
    return outcome


def stored(engine: sa.Engine, fingerprint: str) -> dict:
    with engine.connect() as conn:
        found = evidence.latest(conn, fingerprint)
    assert found is not None, f"no evidence stored for {fingerprint}"
    return {s["name"]: s for s in found["sections"]}


def payload_of(engine: sa.Engine, fingerprint: str) -> dict:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT payload FROM fleet.notifications WHERE fingerprint = :fp "
                                    "ORDER BY created_at DESC LIMIT 1"), {"fp": fingerprint}).scalar_one()


def test_a_blocked_session_fires_with_who_blocks_whom_stored_and_in_its_email_and_slack_message(url, engine, sink,
                                                                                                 redis_url):
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE locked_rows (id int PRIMARY KEY, v int)"))
        conn.execute(sa.text("INSERT INTO locked_rows VALUES (1, 0)"))
    with session(url, "BEGIN", "UPDATE locked_rows SET v = 1 WHERE id = 1") as holder, session(url) as waiter:
        blocked = threading.Thread(target=lambda: waiter.execute("UPDATE locked_rows SET v = 2 WHERE id = 1"))
        blocked.start()
        try:
            holder_pid, waiter_pid = holder.info.backend_pid, waiter.info.backend_pid
            deadline = time.monotonic() + 20
            with engine.connect() as conn:
                while time.monotonic() < deadline and not conn.execute(sa.text(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = :p AND wait_event_type = 'Lock'"),
                        {"p": waiter_pid}).first():
                    time.sleep(0.05)
            at = datetime.now(UTC) + timedelta(minutes=2)
            outcome = fire(engine, CHECKS["db_blocked_sessions"], at)
            mine = [t for t in outcome.transitions if t.labels["pid"] == str(waiter_pid)]
            assert [t.to_state for t in mine] == ["firing"], outcome.transitions
            tree = stored(engine, mine[0].fingerprint)["blocking_tree"]
            assert tree["error"] is None, tree["error"]
            rows = {r["pid"]: r for r in tree["rows"]}
            assert rows[holder_pid]["blocks"] >= 1 and rows[holder_pid]["state"] == "idle in transaction"
            assert rows[waiter_pid]["blocked_by"] == str(holder_pid)
            assert rows[waiter_pid]["query"] == "UPDATE locked_rows SET v = ? WHERE id = ?"  # literals as ?
            notice = payload_of(engine, mine[0].fingerprint)
            lines = next(s for s in notice["evidence"] if s["name"] == "blocking_tree")["lines"]
            told = next(line for line in lines if line.startswith(f"pid {holder_pid} ("))
            assert "blocks 1" in told and "idle in transaction" in told, lines
            settings = Settings(database_url=url, celery_broker_url=redis_url, resend_api_key="re_test_key_0123456789",
                                resend_api_url=sink.resend_api_url, alert_email_recipients="ops@example.com",
                                alert_slack_webhook_url=sink.slack_webhook_url)
            for nid in outcome.notification_ids:
                deliver(nid, fleet=engine, settings=settings, routing=ROUTING, now=at)
            email = next(e for e in sink.emails if f"pid {waiter_pid}" in e["text"])
            assert "who blocks whom" in email["text"] and told in email["text"], email["text"]
            assert "who blocks whom" in email["html"] and f"pid {holder_pid} (" in email["html"]
            slack = json.dumps(next(m for m in sink.slack_messages if f"pid {waiter_pid}" in json.dumps(m)))
            assert "who blocks whom" in slack and f"pid {holder_pid} (" in slack
        finally:
            holder.execute("ROLLBACK")
            blocked.join(20)


def test_a_session_idle_in_a_transaction_is_named_first_and_its_statement_keeps_no_literal(url, engine):
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS accounts (name text, secret text)"))
    with session(url, "BEGIN", "UPDATE accounts SET secret = 'hunter2-very-secret' WHERE name = 'ops'") as idle:
        outcome = fire(engine, CHECKS["db_idle_in_transaction"], datetime.now(UTC) + timedelta(minutes=10))
        mine = next(t for t in outcome.transitions if t.labels["pid"] == str(idle.info.backend_pid))
        sections = stored(engine, mine.fingerprint)
        first = sections["sessions_in_transaction"]["rows"][0]
        assert first["pid"] == idle.info.backend_pid and first["state"] == "idle in transaction"
        assert first["query"] == "UPDATE accounts SET secret = ? WHERE name = ?"
        assert "hunter2" not in str(sections) and "hunter2" not in str(payload_of(engine, mine.fingerprint))
        idle.execute("ROLLBACK")


def test_a_table_with_dead_tuples_shows_its_vacuum_its_freeze_age_and_its_size(url, engine):
    table = "public.dead_rows"
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE dead_rows (id int) WITH (autovacuum_enabled = false)"))
        conn.execute(sa.text("INSERT INTO dead_rows SELECT generate_series(1, 5000)"))
        conn.execute(sa.text("DELETE FROM dead_rows WHERE id <= 3000"))
        conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))  # the counters, as this transaction ends
    spec = next(e for e in CHECKS["db_dead_tuples_high"].evidence if e.collector == "table_maintenance")
    deadline = time.monotonic() + 10
    while True:
        section = evidence.gather_section(engine, spec, {"table": table}, datetime.now(UTC))
        if (section["rows"] and section["rows"][0]["dead"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert section["error"] is None, section["error"]
    assert [r["table"] for r in section["rows"]] == [table]  # the instance's table only
    row = section["rows"][0]
    assert row["dead"] == 3000 and row["live"] == 2000 and row["vacuum_running"] is False
    assert row["freeze_age"] >= 0 and row["size"].endswith(("kB", "MB")) and row["last_autovacuum"] is None
    assert section["lines"][0].startswith(f"{table}: 3000 dead / 2000 live")


def test_an_inactive_replication_slot_is_listed_first_with_what_it_retains(engine):
    slot = f"opsfleet_t_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_create_physical_replication_slot(:s)"), {"s": slot})
    try:
        spec = CHECKS["db_replication_slot_inactive"].evidence[0]
        section = evidence.gather_section(engine, spec, {"slot": slot}, datetime.now(UTC))
        assert section["error"] is None, section["error"]
        first = section["rows"][0]
        assert (first["slot"], first["slot_type"], first["active"], first["active_pid"]) == (slot, "physical", False, None)
        assert section["lines"][0].startswith(f"{slot} (physical, -): active False")
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})


def test_sections_are_bounded_and_a_failing_one_is_told_without_holding_the_alert_back(engine):
    check = Check.model_validate({
        "name": f"evidence_bounds_{uuid.uuid4().hex[:6]}", "description": "test", "schedule": "1m",
        "query": "SELECT 5 AS value", "condition": "> 1", "severity": "warning", "summary": "five",
        "evidence": [{"name": "many", "query": "SELECT g AS n, repeat('x', 500) AS wide FROM generate_series(1, 500) g",
                      "rows": 5},
                     {"name": "broken", "query": "SELECT 1 / (SELECT count(*) - count(*) FROM pg_class) AS boom"},
                     {"name": "mine", "query": "SELECT CAST(:check_label AS text) AS got, CAST(:absent AS text) AS none"}],
        "labels": {"check_label": "from-the-labels"}})
    outcome = fire(engine, check, datetime.now(UTC))
    assert [t.to_state for t in outcome.transitions] == ["firing"]
    sections = stored(engine, outcome.transitions[0].fingerprint)
    many = sections["many"]
    assert [r["n"] for r in many["rows"]] == [1, 2, 3, 4, 5] and many["truncated"] is True
    assert all(len(r["wide"]) == evidence.CELL_CHARS for r in many["rows"])
    assert "division by zero" in sections["broken"]["error"] and sections["broken"]["rows"] == []
    assert sections["mine"]["rows"] == [{"got": "from-the-labels", "none": None}]  # labels bound by name
    notice = payload_of(engine, outcome.transitions[0].fingerprint)
    compact = {s["name"]: s for s in notice["evidence"]}
    assert len(compact["many"]["lines"]) == evidence.COMPACT_LINES and compact["many"]["more"] == 2
    assert compact["broken"]["error"]


def test_evidence_queries_are_refused_as_a_checks_would_be():
    base = {"name": "x", "description": "d", "schedule": "1m", "query": "SELECT 1 AS value", "condition": "> 0",
            "severity": "warning", "summary": "s"}
    for bad, needle in (
            (["blocking_tre"], "did you mean 'blocking_tree'"),
            ([{"name": "m", "query": "SELECT 1; DELETE FROM t"}], "second SQL statement"),
            ([{"name": "m", "query": "SELECT pg_terminate_backend(1)"}], "pg_terminate_backend"),
            ([{"name": "m", "query": "DELETE FROM t"}], "one SELECT"),
            ([{"query": "SELECT 1"}], "needs a `name`")):
        with pytest.raises(ValueError, match=needle):
            Check.model_validate({**base, "evidence": bad})
    with pytest.raises(ValueError, match="evidence is for sql checks"):
        Check.model_validate({**base, "kind": "http", "query": None, "probe": {"url": "http://127.0.0.1:9/"},
                              "evidence": ["connections"]})


def test_every_shipped_collector_runs_on_the_suites_postgres(engine):
    for name in evidence.COLLECTORS:
        section = evidence.gather_section(engine, evidence.EvidenceSpec(collector=name), {}, datetime.now(UTC))
        if name == "top_statements" and section["error"] and "pg_stat_statements" in section["error"]:
            continue  # not installed in this database: told as the section's error, as it would be in a message
        assert section["error"] is None, (name, section["error"])


def test_an_application_pack_declares_its_own_the_failing_webhooks_of_the_confirmations_pack(app_db_url):
    """seed 000's high_confirmation_error_rate carries which function fails and its newest failures."""
    engine = create(app_db_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM webhook_logs"))
            conn.execute(sa.text(
                """INSERT INTO webhook_logs (webhook_name, status_code, duration_ms, error_message, created_at)
                   SELECT name, code, 120, CASE WHEN code = 200 THEN NULL ELSE 'upstream timed out' END,
                          :now - make_interval(secs => g)
                   FROM (VALUES ('send-confirmation', 502, 6), ('send-confirmation', 200, 4), ('sync-crm', 200, 10),
                                ('sync-crm', 500, 1)) v(name, code, n),
                        LATERAL generate_series(1, v.n) g"""), {"now": now})
        check = CHECKS["high_confirmation_error_rate"]
        sections = {s["name"]: s for s in evidence.gather(engine, check.evidence, {}, now)}
        failing = sections["failing_webhooks"]
        assert failing["error"] is None, failing["error"]
        assert [(r["webhook_name"], r["errors"], r["calls"], r["usual_status"]) for r in failing["rows"]] == [
            ("send-confirmation", 6, 10, 502), ("sync-crm", 1, 11, 500)]
        newest = sections["newest_failed_webhooks"]
        assert len(newest["rows"]) == 5 and {r["status_code"] for r in newest["rows"]} <= {500, 502}
        assert newest["rows"][0]["error"] == "upstream timed out"
    finally:
        engine.dispose()
