"""top_statements as an alert's window (worker/checks/statements.py): snapshots of pg_stat_statements
kept by the fleet, and the evidence showing what ran since the last snapshot at or before the window's
start, not the totals since the last reset. On the statistics checks' own Postgres, which preloads
pg_stat_statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.db import clear_alert_state
from worker.checks import evidence, statements
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.db import create, create_for_checks


@pytest.fixture
def monitored(statements_database):
    url = statements_database("snapshots")
    engine = create_for_checks(url)
    yield url, engine
    engine.dispose()


def run(url: str, statement: str, times: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(times):
            conn.execute(statement)


def test_the_evidence_shows_what_ran_in_the_window_not_since_the_reset(monitored, fleet_db):
    url, engine = monitored
    fleet = create(fleet_db)
    now = datetime.now(UTC)
    try:
        with fleet.begin() as conn:
            conn.execute(sa.text("DELETE FROM fleet.statement_snapshots WHERE target = 'stats'"))
        run(url, "SELECT pg_sleep(0.02), 'before the window'", 4)
        assert statements.snapshot(engine, fleet, "stats", now - timedelta(minutes=16)) > 0
        run(url, "SELECT pg_sleep(0.03), 'in the window'", 5)
        spec = evidence.EvidenceSpec(collector="top_statements", rows=5)
        section = evidence.gather_section(engine, spec, {}, now, fleet=fleet, target="stats")
        assert section["error"] is None, section["error"]
        assert "the 15 min window" in section["title"]
        rows = {r["query"]: r for r in section["rows"]}
        inside = rows["SELECT pg_sleep(?), ?"]  # both statements normalise alike: counted from the snapshot
        assert inside["calls"] == 5 and inside["total_ms"] >= 5 * 30 - 1, section["rows"]
        assert section["lines"][0].startswith(f"{inside['total_ms']} ms in 5 calls")

        # no snapshot before the window yet: the totals since the reset, and it says so
        totals = evidence.gather_section(engine, spec, {}, now, fleet=fleet, target="nobody")
        assert "since pg_stat_statements was last reset" in totals["title"]
        assert {r["query"]: r for r in totals["rows"]}["SELECT pg_sleep(?), ?"]["calls"] == 9
    finally:
        fleet.dispose()


def test_snapshots_are_kept_a_day_and_beat_takes_one_every_5_minutes_where_top_statements_is_gathered(
        monitored, fleet_db):
    url, engine = monitored
    fleet = create(fleet_db)
    now = datetime.now(UTC)
    try:
        statements.snapshot(engine, fleet, "keep", now - timedelta(days=2))
        statements.snapshot(engine, fleet, "keep", now)
        with fleet.connect() as conn:
            kept = conn.execute(sa.text("SELECT DISTINCT taken_at FROM fleet.statement_snapshots WHERE target = 'keep'"))
            assert [r[0] for r in kept] == [now]
    finally:
        fleet.dispose()
    from pathlib import Path

    from worker.beat import build_schedule

    entries = build_schedule(load_config(Path(__file__).parents[2] / "config", packs="all"))
    assert entries["statements:snapshot"]["task"] == "checks.snapshot_statements"
    assert entries["statements:snapshot"]["schedule"] == statements.INTERVAL_S == 300


def test_a_run_gathers_top_statements_in_its_own_fleet_transaction(monitored, fleet_db):
    """The run's fleet transaction is open while an instance that goes firing gathers its evidence:
    the window's snapshot is read through it, not a second fleet connection (through a transaction
    pooler's few server connections, threads each waiting for a second one while holding one hang
    the worker). A fleet pool of one connection would time out here."""
    url, engine = monitored
    fleet = sa.create_engine(fleet_db.replace("postgresql://", "postgresql+psycopg://", 1), pool_size=1,
                             max_overflow=0, pool_timeout=2)
    now = datetime.now(UTC)
    check = Check.model_validate({"name": "busy", "description": "d", "schedule": "1m", "query": "SELECT 1 AS value",
                                  "condition": "> 0", "severity": "warning", "summary": "busy",
                                  "evidence": ["top_statements"]})
    try:
        with fleet.begin() as conn:
            clear_alert_state(conn)
            conn.execute(sa.text("DELETE FROM fleet.statement_snapshots WHERE target = 'stats'"))
        assert statements.snapshot(engine, fleet, "stats", now - timedelta(minutes=16)) > 0
        outcome = run_check(check, monitored=engine, fleet=fleet, now=now, routing=None, target="stats")
        assert [t.to_state for t in outcome.transitions] == ["firing"]
        with fleet.connect() as conn:
            (sections,) = conn.execute(sa.text("SELECT sections FROM fleet.alert_evidence WHERE check_name = 'busy'")).one()
        assert sections[0]["error"] is None, sections[0]["error"]
        assert "the 15 min window" in sections[0]["title"]
    finally:
        fleet.dispose()
