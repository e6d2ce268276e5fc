"""What a check run writes to the fleet database: an instance that stays where it was is left as it
is (its row not rewritten), a firing one is written every run (its repeats are timed by it), a
resolved one keeps the time it resolved, and only a run that moves or holds an alert waits for the
disk as it commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.checks import make_check
from tests.support.db import fresh_gauge
from worker.checks.engine import run_check
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ROUTING = Routing.model_validate({
    "channels": {"email": {"kind": "email"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["email"], "repeat_interval": "1h"}],
})
CHECK = make_check(**{"for": "0s"})


@pytest.fixture
def db(clean_fleet):
    fresh_gauge(clean_fleet, "name text, v numeric")
    return clean_fleet


def set_gauge(db, value: float) -> None:
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
        conn.execute(sa.text("INSERT INTO gauge VALUES ('a', :v)"), {"v": value})


def run(db, at: datetime, routing: Routing | None = ROUTING, check=CHECK):
    outcome = run_check(check, monitored=db, fleet=db, now=at, slot=at, routing=routing)
    assert outcome.status == "ok", outcome.error
    return outcome


def row(db):
    """The instance's row: its version (xmin changes whenever the row is written) and columns."""
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT xmin::text AS version, state, last_value, last_eval_at, resolved_at "
                                    "FROM fleet.alerts WHERE check_name = :c"), {"c": CHECK.name}).one()


def test_an_instance_that_stays_inactive_with_the_same_value_is_not_written_again(db):
    check = make_check(**{"for": "0s", "summary": "{{ labels.item }} is high"})  # its text leaves the value out
    set_gauge(db, 5)
    run(db, T0, check=check)
    first = row(db)
    assert (first.state, first.last_value) == ("inactive", 5.0)
    run(db, T0 + timedelta(minutes=1), check=check)
    run(db, T0 + timedelta(minutes=2), check=check)
    assert row(db) == first  # the same row version: nothing rewritten
    set_gauge(db, 6)
    run(db, T0 + timedelta(minutes=3), check=check)
    moved = row(db)
    assert moved.version != first.version
    assert (moved.state, moved.last_value, moved.last_eval_at) == ("inactive", 6.0, T0 + timedelta(minutes=3))
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fleet.check_runs")).scalar() == 4  # every run recorded


def test_a_firing_instance_is_written_every_run_and_repeats_once_per_window(db):
    """A firing alert's repeat is due when its evaluation before was in an earlier repeat window: its
    row must record every evaluation, or each run after the first hour would repeat it again."""
    set_gauge(db, 50)
    run(db, T0)
    for minutes in (30, 61, 62, 63):
        run(db, T0 + timedelta(minutes=minutes))
        assert row(db).last_eval_at == T0 + timedelta(minutes=minutes)
    with db.connect() as conn:
        reasons = conn.execute(sa.text("SELECT dedup_key FROM fleet.notifications ORDER BY created_at")).scalars().all()
    assert [k.split(":")[2] for k in reasons] == ["firing", "repeat"]


def test_a_resolved_instance_keeps_the_time_it_resolved(db):
    set_gauge(db, 50)
    run(db, T0)
    set_gauge(db, 5)
    run(db, T0 + timedelta(minutes=1))
    assert (row(db).state, row(db).resolved_at) == ("resolved", T0 + timedelta(minutes=1))
    set_gauge(db, 4)  # a new value: the row is written, its resolution stays when it was
    run(db, T0 + timedelta(minutes=2))
    assert (row(db).state, row(db).last_value, row(db).resolved_at) == ("resolved", 4.0, T0 + timedelta(minutes=1))


def test_only_a_run_that_moves_or_holds_an_alert_waits_for_the_disk(db):
    """synchronous_commit as each run's fleet transaction commits: `on` for a run that makes a
    transition or holds a pending or firing instance (what it writes, notifications included, must
    survive a crash of the fleet's Postgres); `off` for one whose instances all stay inactive or
    resolved (its own row, a new value: such a crash may lose the last of them, and the slot then
    reads as not run)."""
    seen: list[str] = []

    def at_commit(conn):
        raw = conn.connection.driver_connection
        seen.append(raw.execute("SELECT current_setting('synchronous_commit')").fetchone()[0])

    def committed(at: datetime) -> str:
        seen.clear()
        run(db, at)
        return seen[-1]  # the run's own transaction (set_gauge commits on this engine too)

    sa.event.listen(db, "commit", at_commit)
    try:
        set_gauge(db, 5)
        got = [committed(T0),  # a new instance, inactive
               committed(T0 + timedelta(minutes=1))]  # nothing moved
        set_gauge(db, 6)
        got += [committed(T0 + timedelta(minutes=2))]  # a new value, still inactive
        set_gauge(db, 50)
        got += [committed(T0 + timedelta(minutes=3)),  # fires, and writes its notification
                committed(T0 + timedelta(minutes=4))]  # still firing
        set_gauge(db, 5)
        got += [committed(T0 + timedelta(minutes=5)),  # resolves
                committed(T0 + timedelta(minutes=6))]  # stays resolved
    finally:
        sa.event.remove(db, "commit", at_commit)
    assert got == ["off", "off", "off", "on", "on", "on", "off"]
