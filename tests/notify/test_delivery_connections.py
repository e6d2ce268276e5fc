"""A delivery's fleet transactions on an engine that pings nothing at checkout (worker.fleet.db.
hot_fleet_engine, as notify.deliver runs): a connection that died while idle (a restart of the fleet's
Postgres) is met by a stage's first statement, which wrote nothing, and the stage runs once more on a
new connection; the notice goes out once."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from ops.devkit.process import wait_until
from ops.devkit.sink import Reply
from tests.support.notify import T0, email_id, fire, note, routing, settings_for
from worker.fleet.db import create, fleet_now
from worker.notify.delivery import deliver

APP = "opsfleet-delivery-test"


def unpinged(db):
    return create(db.url.render_as_string(hide_password=False), application_name=APP, pre_ping=False, pool_size=1)


def kill_idle(db) -> int:
    """Terminate the test engine's connections that sit idle in its pool: what a restart does to them."""
    with db.connect() as conn:
        return conn.execute(sa.text("""SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                                       WHERE application_name = :a AND state = 'idle'"""), {"a": APP}).scalar()


def test_the_lease_meets_a_connection_that_died_while_idle_and_the_notice_goes_once(db, sink):
    ids = fire(db)
    fleet, s, r = unpinged(db), settings_for(sink), routing()
    try:
        first, second = ids
        assert deliver(first, fleet=fleet, settings=s, routing=r, now=T0).status == "sent"
        assert kill_idle(db) == 1
        assert deliver(second, fleet=fleet, settings=s, routing=r, now=T0).status == "sent"
        assert len(sink.emails) + len(sink.slack_messages) == 2
    finally:
        fleet.dispose()


def test_the_record_meets_a_connection_that_died_during_the_send_and_marks_it_sent_once(db, sink):
    """The connection dies while the provider call is in flight (the stages before it have checked it
    back in): the record stage meets it, runs again, and the row is sent, not left to a second send."""
    nid = email_id(db, fire(db))
    fleet = unpinged(db)
    sink.script("resend.emails", [Reply(hang=1.5)])
    killed = []
    killer = threading.Thread(target=lambda: killed.append(
        wait_until(lambda: len(sink.requests_for("resend.emails")) == 1, 10) and kill_idle(db)))
    try:
        killer.start()
        out = deliver(nid, fleet=fleet, settings=settings_for(sink), routing=routing(), now=T0)
        killer.join()
        assert killed == [1]
        assert out.status == "sent"
        row = note(db, nid)
        assert (row.status, row.attempts) == ("sent", 1)
        assert len(sink.requests_for("resend.emails")) == 1
    finally:
        fleet.dispose()


def test_the_fleets_clock_is_read_on_a_new_connection_when_the_kept_one_died(db):
    """notify.deliver asks fleet_now on the same engine first: it reads again rather than fail."""
    fleet = unpinged(db)
    try:
        before = fleet_now(fleet)
        assert kill_idle(db) == 1
        assert fleet_now(fleet) >= before
    finally:
        fleet.dispose()
