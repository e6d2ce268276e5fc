"""The follow-up chain at a bucket's next token takes every row the bucket throttled, not only the
foldable ones: a digest, a report or a test notice behind a busy channel goes at the next token,
alone, instead of waiting for the sweeper (every 30 s, which sent two or three a sweep: found by
bench/soak.py's notification storm, whose drain took 170 s for 66 rows at a 1.9/s bucket)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.conftest import Clock
from tests.test_notify import T0, db, note, routing, settings_for  # noqa: F401 - db: the fixture
from worker.notify import outbox
from worker.notify.delivery import deliver


def write_notices(fleet, n: int) -> list[str]:
    with fleet.begin() as conn:
        return [outbox.insert(conn, channel="slack", check="system_test", transition="test", due=T0,
                              payload={"check": "system_test", "severity": "info", "status": "test",
                                       "title": f"test {i}", "summary": f"test notice {i}", "labels": {}},
                              dedup_key=f"test:{uuid.uuid4()}") for i in range(n)]


def test_the_follow_up_sends_throttled_test_notices_in_turn_without_the_sweeper(db, sink, redis_client):  # noqa: F811
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
