"""Notification delivery through the real Resend and Slack SDKs against loopback fakes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from ops.devkit.sink import Reply
from tests.support.clock import Clock
from tests.support.notify import T0, check, due, email_id, fire, note, routing, settings_for
from worker.checks.engine import run_check
from worker.notify.delivery import deliver
from worker.notify.routing import Routing


def test_email_is_sent_once_with_escaped_html_and_a_text_part(db, sink):
    ids = fire(db)
    assert len(ids) == 2
    for nid in ids:
        assert deliver(nid, fleet=db, settings=settings_for(sink), routing=routing(), now=T0).status == "sent"
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1
    mail = sink.emails[0]
    assert "<script>" not in mail["html"] and "&lt;script&gt;" in mail["html"]
    assert mail["text"] and mail["subject"].startswith("[CRITICAL]")
    assert note(db, email_id(db, ids)).provider_id == mail["id"]


def test_server_errors_then_success_is_sent_after_three_attempts(db, sink):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(500), Reply(500)])
    s, r = settings_for(sink), routing()
    first = deliver(nid, fleet=db, settings=s, routing=r, now=T0)
    assert first.status == "retrying"
    second = deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=first.retry_in + 0.01))
    assert second.status == "retrying" and second.retry_in > first.retry_in * 0.6  # exponential, with jitter
    third = deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=first.retry_in + second.retry_in + 1))
    assert third.status == "sent"
    assert note(db, nid).attempts == 3
    assert len(sink.requests_for("resend.emails")) == 3 and len(sink.emails) == 1


def test_rate_limited_with_retry_after_is_not_retried_before_it(db, sink):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(429, headers={"Retry-After": "2"})])
    s, r = settings_for(sink), routing()
    first = deliver(nid, fleet=db, settings=s, routing=r, now=T0)
    assert first.status == "retrying" and first.retry_in >= 2
    assert note(db, nid).next_attempt_at >= T0 + timedelta(seconds=2)
    assert deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=1.9)).status == "early"  # not due: asks again at its time
    assert nid not in due(db, T0 + timedelta(seconds=1.9))
    assert deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=first.retry_in)).status == "sent"
    assert len(sink.requests_for("resend.emails")) == 2


@pytest.mark.parametrize("status", [422, 401, 403])
def test_permanent_error_goes_dead_after_one_attempt(db, sink, status):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(status)])
    s, r = settings_for(sink), routing()
    assert deliver(nid, fleet=db, settings=s, routing=r, now=T0).status == "dead"
    for later in (60, 3600):
        assert deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=later)).status == "skipped"
    assert nid not in due(db, T0 + timedelta(days=1))
    row = note(db, nid)
    assert row.status == "dead" and row.attempts == 1 and row.last_error
    assert len(sink.requests_for("resend.emails")) == 1
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count FROM fleet.held_back WHERE reason = 'dead'")).scalar() == 1


def test_hanging_request_is_cut_by_the_timeout_and_the_retry_sends_one_email(db, sink):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(hang=3.0)])
    s, r = settings_for(sink), routing()
    first = deliver(nid, fleet=db, settings=s, routing=r, now=T0, timeout=1.0)
    assert first.status == "retrying" and "timeout" in first.error
    later = T0 + timedelta(seconds=first.retry_in)
    assert deliver(nid, fleet=db, settings=s, routing=r, now=later, timeout=5.0).status == "sent"
    assert len(sink.requests_for("resend.emails")) == 2
    assert len(sink.emails) == 1  # the Idempotency-Key (the notification id) made the retry a replay


def test_silenced_notification_is_recorded_as_suppressed(db, sink):
    from worker.notify import silences

    silences.add(db, check="gauge_high", labels={"item": "a"}, duration=timedelta(hours=2), comment="deploy",
                 author="test", now=T0 - timedelta(minutes=1))
    ids = fire(db, items=("a", "b"))
    results = {nid: deliver(nid, fleet=db, settings=settings_for(sink), routing=routing(), now=T0).status for nid in ids}
    assert sorted(results.values()) == ["sent", "sent", "suppressed", "suppressed"]
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1  # only item b
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT sum(count) FROM fleet.held_back WHERE reason = 'silenced'")).scalar() == 2


def test_empty_bucket_folds_the_queue_into_one_summary_instead_of_dropping(db, sink, redis_client):
    clock = Clock()
    r = routing(rate_limit=0.5, burst=1)
    s = settings_for(sink)
    first = fire(db, items=("a",), severity="warning", routes=r)
    assert deliver(first[0], fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client, clock=clock).status == "sent"
    # four more alerts right behind it: the bucket (burst 1, 0.5/s) is empty
    ids = fire(db, items=("a", "b", "c", "d", "e"), severity="warning", routes=r, at=T0 + timedelta(minutes=1))
    assert len(ids) == 4
    statuses = [deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=1),
                        redis_client=redis_client, clock=clock).status for nid in ids]
    assert statuses == ["throttled"] * 4
    assert len(sink.slack_messages) == 1
    clock.advance(2.1)  # the bucket refills at 0.5/s
    pending = due(db, T0 + timedelta(minutes=2))
    assert len(pending) == 4
    result = deliver(pending[0], fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=2), redis_client=redis_client, clock=clock)
    assert result.status == "sent"
    assert len(sink.slack_messages) == 2  # one summary for the four that waited, none dropped
    assert "4 alerts" in sink.slack_messages[1]["text"]
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fleet.notifications WHERE status = 'sent'")).scalar() == 5
        assert conn.execute(sa.text("SELECT count(*) FROM fleet.notifications WHERE folded_into IS NOT NULL")).scalar() == 3
        assert conn.execute(sa.text("SELECT sum(count) FROM fleet.held_back WHERE reason = 'folded'")).scalar() == 3
    assert due(db, T0 + timedelta(hours=1)) == []


def test_a_silenced_row_waiting_in_a_group_is_suppressed_not_folded_into_the_summary(db, sink):
    from worker.notify import silences

    r = Routing.model_validate({
        "channels": {"slack": {"kind": "slack"}},
        "routes": [{"match": {"severity": "warning"}, "channels": ["slack"], "group_wait": "30s"}],
    })
    silences.add(db, check="gauge_high", labels={"item": "b"}, duration=timedelta(hours=2), comment="deploy",
                 author="test", now=T0 - timedelta(minutes=1))
    ids = fire(db, items=("a", "b", "c"), severity="warning", routes=r)
    later = T0 + timedelta(seconds=30)
    assert deliver(ids[0], fleet=db, settings=settings_for(sink), routing=r, now=later).status == "sent"
    assert len(sink.slack_messages) == 1
    text = sink.slack_messages[0]["text"]
    assert "2 alerts" in text and "b at" not in str(sink.slack_messages[0]), text  # a and c, never b
    with db.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT payload->'labels'->>'item', status FROM fleet.notifications")).all())
        held = conn.execute(sa.text("SELECT sum(count) FROM fleet.held_back WHERE reason = 'silenced'")).scalar()
    assert rows == {"a": "sent", "b": "suppressed", "c": "sent"} and held == 1


def test_alerts_of_one_run_wait_group_wait_and_go_out_as_one_message(db, sink):
    r = Routing.model_validate({
        "channels": {"slack": {"kind": "slack"}},
        "routes": [{"match": {"severity": "warning"}, "channels": ["slack"], "group_wait": "30s"}],
    })
    ids = fire(db, items=("a", "b", "c"), severity="warning", routes=r)
    s = settings_for(sink)
    assert [deliver(n, fleet=db, settings=s, routing=r, now=T0).status for n in ids] == ["early"] * 3
    later = T0 + timedelta(seconds=30)
    assert [deliver(n, fleet=db, settings=s, routing=r, now=later).status for n in ids] == ["sent", "skipped", "skipped"]
    assert len(sink.slack_messages) == 1 and "3 alerts" in sink.slack_messages[0]["text"]
    # a storm across checks inside group_wait is one message too
    storm = T0 + timedelta(minutes=1)
    other = fire(db, items=("x",), severity="warning", routes=r, at=storm, name="other_check")
    more = fire(db, items=("a", "b", "c", "d"), severity="warning", routes=r, at=storm)
    assert len(other) == 1 and len(more) == 1
    deliver(other[0], fleet=db, settings=s, routing=r, now=storm + timedelta(seconds=30))
    assert len(sink.slack_messages) == 2 and "2 alerts" in sink.slack_messages[1]["text"]


def test_slack_web_api_threads_repeats_and_updates_the_original_when_resolved(db, sink):
    s = settings_for(sink, alert_slack_webhook_url=None, slack_bot_token="xoxb-test-token", slack_channel="#alerts",
                     slack_api_url=sink.slack_api_url)
    r = routing()
    ids = fire(db)
    for nid in ids:
        assert deliver(nid, fleet=db, settings=s, routing=r, now=T0).status == "sent"
    ts = next(note(db, i).provider_id for i in ids if note(db, i).channel == "slack")
    assert ts
    # an hour later, still firing: the reminder threads onto the original message
    out = run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=61), routing=r)
    for nid in out.notification_ids:
        deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=61))
    posts = sink.requests_for("slack.chat.postMessage")
    assert len(posts) == 2
    # resolved: the original message is updated, not a new one posted
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    out = run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=62), routing=r)
    for nid in out.notification_ids:
        assert deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=62)).status == "sent"
    assert len(sink.requests_for("slack.chat.postMessage")) == 2
    assert len(sink.requests_for("slack.chat.update")) == 1


def test_table_channel_writes_and_resolves_system_alerts(db, sink):
    from ops import sample_app

    sample_app.init(db)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM system_alerts"))
    r = Routing.model_validate({"channels": {"dashboard": {"kind": "table"}},
                                "routes": [{"match": {}, "channels": ["dashboard"], "group_wait": "0s"}]})
    ids = fire(db, routes=r)
    deliver(ids[0], fleet=db, settings=settings_for(sink), routing=r, now=T0, monitored=db)
    with db.begin() as conn:
        row = conn.execute(sa.text("SELECT * FROM system_alerts")).one()
        assert row.severity == "critical" and row.alert_type == "gauge_high" and row.resolved_at is None
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    out = run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=1), routing=r)
    assert deliver(out.notification_ids[0], fleet=db, settings=settings_for(sink), routing=r,
                   now=T0 + timedelta(minutes=1), monitored=db).status == "sent"
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT resolved_at IS NOT NULL FROM system_alerts")).scalar()


def test_sweep_finds_rows_whose_lease_expired(db, sink):
    from tests.support.notify import lease
    from worker.notify.outbox import LEASE

    nid = email_id(db, fire(db))
    assert lease(db, nid, T0) is not None  # a worker took it and died
    assert nid not in due(db, T0 + timedelta(seconds=5))
    assert nid in due(db, T0 + LEASE + timedelta(seconds=1))
    assert deliver(nid, fleet=db, settings=settings_for(sink), routing=routing(), now=T0 + LEASE + timedelta(seconds=1)
                   ).status == "sent"


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("opsfleet:bucket:*"):
        client.delete(key)
    yield client
    client.close()


def test_silenced_alert_is_sent_once_when_the_silence_ends_then_follows_repeat_rules(db, sink):
    from worker.notify import silences

    s, r = settings_for(sink), routing()
    silences.add(db, check="gauge_high", labels={}, duration=timedelta(minutes=30), comment="maintenance",
                 author="test", now=T0 - timedelta(minutes=1))
    ids = fire(db)
    assert [deliver(n, fleet=db, settings=s, routing=r, now=T0).status for n in ids] == ["suppressed"] * 2
    assert run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=10), routing=r).notification_ids == []
    # the silence ended at T0+29m; the alert still fires: one message per channel, once
    out = run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=31), routing=r)
    assert len(out.notification_ids) == 2
    for n in out.notification_ids:
        assert deliver(n, fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=31)).status == "sent"
    assert run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=32), routing=r).notification_ids == []
    # then the repeat interval (1h from firing) as usual
    assert len(run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=61), routing=r).notification_ids) == 2
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1


def test_markup_in_alert_text_is_escaped_in_html_and_in_slack(db, sink):
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
        conn.execute(sa.text("INSERT INTO gauge VALUES ('<script>x</script> <@channel> & <!here>', 50)"))
    out = run_check(check(), monitored=db, fleet=db, now=T0, routing=routing())
    for n in out.notification_ids:
        deliver(n, fleet=db, settings=settings_for(sink), routing=routing(), now=T0)
    html = sink.emails[0]["html"]
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;@channel&gt;" in html
    slack = sink.slack_messages[0]

    def mrkdwn(node):  # every text Slack formats (plain_text is shown literally, so mentions there are inert)
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                yield node["text"]
            for v in node.values():
                yield from mrkdwn(v)
        elif isinstance(node, list):
            for v in node:
                yield from mrkdwn(v)

    blob = " ".join([slack.get("text", ""), *mrkdwn(slack.get("blocks", []))])
    assert "<@channel>" not in blob and "<!here>" not in blob and "<script>" not in blob
    assert "&lt;@channel&gt;" in blob


def test_follow_up_at_the_next_token_delivers_what_waits_even_if_its_own_row_went_out(db, sink, redis_client):
    clock = Clock()
    r = routing(rate_limit=0.5, burst=1)
    s = settings_for(sink)
    first = fire(db, items=("a",), severity="warning", routes=r)
    assert deliver(first[0], fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client, clock=clock).status == "sent"
    waiting = fire(db, items=("a", "b"), severity="warning", routes=r, at=T0 + timedelta(minutes=1))
    assert deliver(waiting[0], fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=1),
                   redis_client=redis_client, clock=clock).status == "throttled"
    clock.advance(2.1)  # the bucket refills at 0.5/s
    # the follow-up names a row that is no longer due (it was the one already sent): the channel's
    # oldest throttled row goes instead
    out = deliver(first[0], fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=2), redis_client=redis_client, clock=clock,
                  channel_hint="slack")
    assert out.status == "sent" and out.notification_id == waiting[0]
    assert len(sink.slack_messages) == 2


def test_provider_429_empties_the_shared_bucket_for_its_retry_after(db, sink, redis_client):
    from worker.notify.delivery import bucket_for

    r = routing(rate_limit=5, burst=5)
    s = settings_for(sink)
    sink.script("slack.webhook", [Reply(429, headers={"Retry-After": "3"})])
    ids = fire(db, items=("a",), severity="warning", routes=r)
    out = deliver(ids[0], fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client)
    assert out.status == "retrying" and out.retry_in >= 3
    assert note(db, ids[0]).throttled  # still foldable into the next send
    bucket = bucket_for("slack", "slack", s, r, redis_client)
    assert bucket.take() >= 2.5  # no worker sends to this webhook before Retry-After has passed
    assert bucket.wait_turn(max_wait=0.5, sleep=lambda s: None) > 0
    # the wire bucket is emptied too: no request leaves before Retry-After, whatever the admission said


def test_requests_leave_spaced_at_the_rate_whatever_happened_between_admission_and_send(redis_client):
    """Six senders, preparation of uneven length (folding, rendering, a slow database), then
    wait_turn(): the wire bucket (burst 1) lets one request leave per 1/rate, so the last cannot leave
    before (6 - 1) / rate after the first started; without it all six are out within the 0.3 s of
    preparation. Scheduling delays only make the span longer."""
    from worker.notify import ratelimit

    target = f"spacing-{time.time_ns()}"
    rate = 5.0
    left: list[float] = []
    started = time.monotonic()

    def worker(prep: float) -> None:
        time.sleep(prep)
        ratelimit.TokenBucket(redis_client, target, rate, 1).wait_turn()
        left.append(time.monotonic())

    threads = [threading.Thread(target=worker, args=(p,)) for p in (0.0, 0.15, 0.02, 0.3, 0.01, 0.22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(left) == 6 and max(left) - started >= 5 / rate - 0.01


def test_follow_up_takes_a_pending_row_that_has_no_task_of_its_own(db, sink, redis_client):
    """A storm's last runs leave pending rows behind a busy bucket with no task of their own (one
    task per run and channel, the rest wait to be folded): the follow-up sends them, not the sweeper."""
    clock = Clock()
    r = routing(rate_limit=0.5, burst=1)
    s = settings_for(sink)
    first = fire(db, items=("a",), severity="warning", routes=r)
    out = deliver(first[0], fleet=db, settings=s, routing=r, now=T0, redis_client=redis_client, clock=clock)
    assert out.status == "sent" and not out.more_waiting
    later = fire(db, items=("a", "b", "c"), severity="warning", routes=r, at=T0 + timedelta(minutes=1))
    assert len(later) == 2 and {note(db, n).status for n in later} == {"pending"}
    clock.advance(2.1)  # the bucket refills at 0.5/s
    out = deliver(first[0], fleet=db, settings=s, routing=r, now=T0 + timedelta(minutes=1), redis_client=redis_client, clock=clock,
                  channel_hint="slack")
    assert out.status == "sent" and out.notification_id in later
    assert {note(db, n).status for n in later} == {"sent"}  # the other one folded into the same message
    assert len(sink.slack_messages) == 2
