"""README, Checks and notifications: transient failures back off and go `dead` after MAX_ATTEMPTS (8),
counted as held back, and the fleet pack's `notifications_dead` alert fires; a 429 is pacing, not an
attempt. And the retry path of Resend's `409 concurrent_idempotent_requests` (a retry while the first
request is still in flight) ends in exactly one email.

Already proven elsewhere (linked from docs/guarantees.md): a permanent 401/403/422 goes dead at once
(tests/notify/test_notify.py::test_permanent_error_goes_dead_after_one_attempt), 500s then success
(::test_server_errors_then_success_is_sent_after_three_attempts), Retry-After honoured
(::test_rate_limited_with_retry_after_is_not_retried_before_it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.process import wait_until
from ops.devkit.sink import Reply
from tests.support import REPO
from tests.support.notify import (
    ATTEMPTS,
    T0,
    deliver_until_final,
    due,
    email_id,
    fire,
    note,
    routing,
    settings_for,
)
from worker.checks.engine import run_check
from worker.config import load_config
from worker.notify.delivery import deliver


def held_back_dead(db) -> int:
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT coalesce(sum(count), 0) FROM fleet.held_back WHERE reason = 'dead' "
                                    "AND channel = 'email'")).scalar()


def test_eight_server_errors_go_dead_are_held_back_and_fire_notifications_dead(db, sink):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(500)] * ATTEMPTS)
    statuses, now = deliver_until_final(db, sink, nid)
    assert statuses == ["retrying"] * (ATTEMPTS - 1) + ["dead"]
    row = note(db, nid)
    assert (row.status, row.attempts) == ("dead", ATTEMPTS) and row.last_error.startswith("server_error")
    assert len(sink.requests_for("resend.emails")) == ATTEMPTS and sink.emails == []
    assert nid not in due(db, now + timedelta(days=1))  # never retried again
    assert held_back_dead(db) == 1
    cfg = load_config(REPO / "config", packs="all")
    out = run_check(cfg.checks["notifications_dead"], monitored=db, fleet=db, fleet_queries=db,
                    now=now + timedelta(minutes=1), routing=cfg.routing)
    assert out.status == "ok"
    with db.connect() as conn:
        alert = conn.execute(sa.text("SELECT state, last_value AS value FROM fleet.alerts WHERE check_name = 'notifications_dead'")).one()
    assert alert.state == "firing" and alert.value == 1


def test_429s_are_not_attempts_only_transient_failures_count_toward_dead(db, sink):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(429, headers={"Retry-After": "1"})] * 10 + [Reply(500)] * ATTEMPTS)
    statuses, _ = deliver_until_final(db, sink, nid)
    assert statuses == ["retrying"] * (10 + ATTEMPTS - 1) + ["dead"]  # ten 429s cost no attempt
    assert note(db, nid).attempts == ATTEMPTS
    assert len(sink.requests_for("resend.emails")) == 10 + ATTEMPTS


def test_retry_while_the_first_request_is_in_flight_gets_409_concurrent_then_one_email(db, sink):
    """Real Resend answers a retry under the same Idempotency-Key while the original is still being
    processed with 409 concurrent_idempotent_requests: transient (worker/channels/email.py), so the row
    retries, and the retry after the original answered replays it: one email."""
    nid = email_id(db, fire(db))
    sink.resend_concurrent_mode = True
    sink.script("resend.emails", [Reply(hang=2.0)])  # accepted and recorded, answered 2 s later
    s, r = settings_for(sink), routing()
    first = deliver(nid, fleet=db, settings=s, routing=r, now=T0, timeout=0.5)
    assert first.status == "retrying" and first.error.startswith("timeout")
    assert sink.resend_in_flight() == 1
    at = T0 + timedelta(seconds=first.retry_in + 0.01)
    second = deliver(nid, fleet=db, settings=s, routing=r, now=at, timeout=0.5)
    assert second.status == "retrying" and "concurrent_idempotent_requests" in second.error, second.error
    assert note(db, nid).status == "retrying"
    assert wait_until(lambda: sink.resend_in_flight() == 0, 10)  # the original has answered
    third = deliver(nid, fleet=db, settings=s, routing=r, now=at + timedelta(seconds=second.retry_in + 0.01))
    assert third.status == "sent"
    attempts = sink.requests_for("resend.emails")
    assert [(a.status, a.replayed) for a in attempts] == [(200, False), (409, False), (200, True)]
    assert len(sink.emails) == 1 and note(db, nid).provider_id == sink.emails[0]["id"]


pytestmark = pytest.mark.reliability
