"""The follow-up chain at a bucket's next token takes every row the bucket throttled, not only the
foldable ones: a digest, a report or a test notice behind a busy channel goes at the next token,
alone, instead of waiting for the sweeper (every 30 s, which sent two or three a sweep: found by
bench/soak.py's notification storm, whose drain took 170 s for 66 rows at a 1.9/s bucket)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.support.clock import Clock
from tests.support.notify import T0, note, routing, settings_for
from worker.notify import outbox
from worker.notify.delivery import deliver


def write_notices(fleet, n: int) -> list[str]:
    with fleet.begin() as conn:
        return [outbox.insert(conn, channel="slack", check="system_test", transition="test", due=T0,
                              payload={"check": "system_test", "severity": "info", "status": "test",
                                       "title": f"test {i}", "summary": f"test notice {i}", "labels": {}},
                              dedup_key=f"test:{uuid.uuid4()}") for i in range(n)]


def test_the_follow_up_sends_throttled_test_notices_in_turn_without_the_sweeper(db, sink, redis_client):
    clock = Clock()
    r = routing(rate_limit=1.0, burst=1)
    s = settings_for(sink)
    first, *rest = write_notices(db, 3)
    out = deliver(first, fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client, clock=clock)
    assert out.status == "sent"
    for nid in rest:  # their own tasks find the bucket empty
        out = deliver(nid, fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client, clock=clock)
        assert out.status == "throttled", out
    sent = []
    for step in range(1, 3):  # the chain: each run at the next token names the row it was armed with
        clock.advance(1.05)
        out = deliver(first, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=step), redis_client=redis_client,
                      clock=clock, channel_hint="slack")
        assert out.status == "sent", out
        sent.append(out.notification_id)
        assert out.more_waiting == (step == 1)  # the chain goes on while a throttled row waits, then ends
    assert sorted(sent) == sorted(rest)  # alone, each in turn (a test notice is never folded)
    assert {note(db, n).status for n in rest} == {"sent"}
    assert len(sink.slack_messages) == 3


def test_a_summary_refused_with_429_is_taken_by_the_chain_with_its_rows_not_left_to_the_sweeper(db, sink, redis_client):
    """A summary the provider refused (429) keeps the rows it folded bound to it for its retry. When
    another delivery holds the channel's chain, the chain is the summary's retry: it must take the
    refused leader at the next token (found by bench/notify.py's storm: one 429 left a 101-row summary
    to the sweeper, 66 s late)."""
    from ops.devkit.sink import Reply
    from tests.support.notify import fire

    clock = Clock()
    r = routing(rate_limit=1.0, burst=1)
    s = settings_for(sink)
    sink.script("slack.webhook", [Reply(429, headers={"Retry-After": "1"})])
    ids = fire(db, items=("a", "b", "c"), severity="warning", routes=r)
    out = deliver(ids[0], fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client, clock=clock)
    assert out.status == "retrying" and out.error.startswith("rate_limited")  # it folded b and c first
    assert {note(db, n).status for n in ids[1:]} == {"retrying"}  # bound to the refused summary
    clock.advance(2.1)  # Retry-After and the next token
    out = deliver(str(uuid.uuid4()), fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=3),
                  redis_client=redis_client, clock=clock, channel_hint="slack")  # the chain, armed by another row
    assert (out.status, out.notification_id) == ("sent", ids[0]), out
    assert len(sink.slack_messages) == 1 and "3 alerts" in sink.slack_messages[0]["text"]
    assert {note(db, n).status for n in ids} == {"sent"}


def test_the_oldest_waiting_row_is_found_through_the_waiting_index_not_the_channels_sent_rows(db):
    """A storm leaves a channel with many sent rows and a few still waiting; the follow-up's lease, the
    fold and `waiting` must find the waiting ones without reading the rest (100,000 alerts: 237 ms a
    lease before migration 0014, bench/RESULTS.md). The planner's own choice, on the real statements."""
    import sqlalchemy as sa

    with db.begin() as conn:
        conn.execute(sa.text("""INSERT INTO fleet.notifications (channel, check_name, transition, payload, dedup_key,
                                                                 status, next_attempt_at, created_at)
                                SELECT 'slack', 'storm', 'firing', '{}', 'sent:' || i, 'sent', :t, :t
                                FROM generate_series(1, 20000) i"""), {"t": T0})
    waiting = write_notices(db, 3)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE fleet.notifications SET transition = 'firing' WHERE id = ANY(CAST(:ids AS uuid[]))"),
                     {"ids": waiting})
        conn.execute(sa.text("ANALYZE fleet.notifications"))
    plans = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if "fleet.notifications" in statement and "throttled))" in statement:
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(r[0] for r in cursor.fetchall()))

    sa.event.listen(db, "before_cursor_execute", explain)
    try:
        with db.begin() as conn:
            assert str(outbox.lease_next_waiting(conn, "slack", T0 + timedelta(minutes=1)).id) == waiting[0]
            assert outbox.waiting(conn, "slack", T0 + timedelta(minutes=1))
            conn.rollback()
    finally:
        sa.event.remove(db, "before_cursor_execute", explain)
    lease, exists = plans
    assert "Index Scan using notifications_waiting" in lease, lease  # the oldest waiting row, in index order
    assert not any(f in exists for f in ("Seq Scan", "notifications_created", "notifications_fp_channel")), exists
