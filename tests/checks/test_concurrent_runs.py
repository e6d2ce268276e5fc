"""Runs of one check for different slots at the same time (a backlog of slots, four workers): an
instance appears once, goes firing once and sends once, whichever run writes it first."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.checks import make_check
from tests.support.db import fresh_gauge
from worker.checks.engine import run_check
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ROUTING = Routing.model_validate({
    "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["email", "slack"], "repeat_interval": "1h"}],
})
WAITING_ON_ALERTS = """SELECT count(*) FROM pg_locks
                       WHERE NOT granted AND relation = CAST('fleet.alerts' AS regclass)"""


@pytest.fixture
def db(clean_fleet):
    fresh_gauge(clean_fleet, "name text, v numeric")
    with clean_fleet.begin() as conn:
        conn.execute(sa.text("INSERT INTO gauge VALUES ('a', 50), ('b', 60)"))
    return clean_fleet


def scalar(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def test_two_runs_of_other_slots_that_both_find_no_instance_fire_it_once(db):
    """Both runs claim their slot before either has written the new instances (a transaction holding
    fleet.alerts in SHARE ROW EXCLUSIVE lets their claims' FOR UPDATE read through and stops both at
    the write); released, one inserts them, the other meets its rows: recorded again, it finds them
    firing already. Two firing events and four notices would be the alert fired twice."""
    check = make_check(**{"for": "0s"})
    results = []
    with db.connect() as holder:
        holder.begin()
        holder.execute(sa.text("LOCK TABLE fleet.alerts IN SHARE ROW EXCLUSIVE MODE"))
        threads = [threading.Thread(target=lambda at=at: results.append(
            run_check(check, monitored=db, fleet=db, now=at, slot=at, routing=ROUTING)))
            for at in (T0, T0 + timedelta(minutes=1))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while scalar(db, WAITING_ON_ALERTS) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scalar(db, WAITING_ON_ALERTS) == 2, "both runs should wait to write their instances"
        holder.rollback()
    for t in threads:
        t.join(30)
    assert sorted(r.status for r in results) == ["ok", "ok"]
    assert sorted(len(r.transitions) for r in results) == [0, 2]  # a and b, by one run
    assert scalar(db, "SELECT count(*) FROM fleet.alert_events WHERE to_state = 'firing'") == 2
    assert scalar(db, "SELECT count(*) FROM fleet.notifications") == 4  # a and b, email and slack: once
    assert scalar(db, "SELECT count(*) FROM fleet.check_runs") == 2


def test_an_instance_kept_under_the_other_spelling_of_the_default_target_is_adopted_not_fired_again(db):
    """The `default` target's fingerprints leave the target out, so a check that ran for `default`
    and now runs for the fleet ('') meets its own instances, stored under `default`: they are
    adopted (moved to '') as they are, not fired again."""
    check = make_check(**{"for": "0s"})
    first = run_check(check, monitored=db, fleet=db, now=T0, slot=T0, routing=ROUTING, target="default")
    assert len(first.transitions) == 2
    later = T0 + timedelta(minutes=1)
    again = run_check(check, monitored=db, fleet=db, now=later, slot=later, routing=ROUTING, target="")
    assert (again.status, again.transitions) == ("ok", [])
    assert scalar(db, "SELECT count(*) FROM fleet.alert_events WHERE to_state = 'firing'") == 2
    assert scalar(db, "SELECT string_agg(DISTINCT target, ',') FROM fleet.alerts") == ""
