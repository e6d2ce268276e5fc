"""Backlog reprocessing: one confirmation number and one email per registration, whatever happens.

Real Postgres (the sample app's schema plus the fleet schema, in one database of this module), the
Resend fake (ops.devkit.sink.ProviderSink) driven through the real SDK, and real Celery workers where
Celery's behaviour is the point (bad `celery call` arguments, three workers, kill -9).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from ops.devkit.sink import ProviderSink, Reply
from tests.support import REPO
from tests.support.backlog import add_backlog, assert_exactly_once, channel, q
from worker.backlog import claims, confirmations
from worker.backlog.arguments import ReprocessArgs, ResendArgs, parse_args
from worker.backlog.confirmations import EmailRow, confirmation_number, send_call
from worker.backlog.runs import reprocess, resend_failed
from worker.backlog.status import backlog_status
from worker.checks.collect import collect_sql
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.migrate import upgrade
from worker.fleet.timeutil import parse_duration


def add_others(engine) -> None:
    """Rows that are not backlog: unpaid, cancelled, and one already confirmed with its email sent."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO registrations (id, customer_id, event_id, email, full_name, amount_in_cents, status,
                                          payment_status, confirmation_number, confirmation_generated_at,
                                          email_status, updated_at)
               VALUES (900001, 1, 1, 'unpaid@example.com', 'U', 100, 'pending', 'pending', NULL, NULL, NULL,
                       now() - interval '2 hours'),
                      (900002, 1, 1, 'cancelled@example.com', 'C', 100, 'cancelled', 'failed', NULL, NULL, NULL,
                       now() - interval '2 hours'),
                      (900003, 1, 1, 'done@example.com', 'D', 100, 'completed', 'completed', 'APP-77', now(), 'sent',
                       now() - interval '2 hours')"""))
        conn.execute(sa.text(
            """INSERT INTO confirmation_emails (registration_id, recipient, subject, status, provider_id, sent_at)
               VALUES (900003, 'done@example.com', 'Your registration is confirmed (APP-77)', 'sent', 're_x', now())"""))


def one(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


# -- the plain functions ------------------------------------------------------------------------------

def test_each_backlog_registration_gets_one_number_and_one_sent_email(engine, sink):
    add_backlog(engine, 250)
    add_others(engine)
    result = reprocess(engine, engine, channel(sink), batch_size=100)
    assert (result.status, result.claimed, result.sent, result.failed, result.batches) == ("ok", 250, 250, 0, 3)
    assert_exactly_once(engine, sink, 250)
    # the others are untouched, the confirmed one got no second email
    assert q(engine, "SELECT id, confirmation_number, email_status FROM registrations WHERE id > 900000 ORDER BY id") \
        == [(900001, None, None), (900002, None, None), (900003, "APP-77", "sent")]
    assert one(engine, "SELECT count(*) FROM confirmation_emails WHERE registration_id = 900003") == 1
    # one provider call per 100 emails, each with its own idempotency key; the email is escaped in HTML
    calls = sink.requests_for("resend.emails.batch")
    assert len(calls) == 3 and len({c.headers["Idempotency-Key"] for c in calls}) == 3
    mail = next(e for e in sink.emails if e["to"] == ["guest7@example.com"])
    assert mail["subject"] == "Your registration is confirmed (CNF-0000000007)"
    assert "Guest &lt;7&gt; &amp; co" in mail["html"] and "Guest <7> & co" in mail["text"]
    assert mail["from"] == "Events <confirm@example.com>"
    run = q(engine, "SELECT job, kind, status, rows_affected, batches, error FROM fleet.job_runs")
    assert run == [("reprocess_confirmations", "backlog", "ok", 250, 3, None)]
    # a second run finds nothing to do and sends nothing
    again = reprocess(engine, engine, channel(sink))
    assert (again.claimed, again.sent, again.recovered) == (0, 0, 0)
    assert len(sink.emails) == 250


def test_a_recovered_backlog_raises_no_slow_processing_alert(engine, sink):
    """Seed 000's recovery resets updated_at, so the "Processing Time" of a recovered registration is
    the recovery's, not the hours it waited (30 rows an hour old made p95 3,457 s, firing an hour)."""
    add_backlog(engine, 30, age="1 hour")
    assert reprocess(engine, engine, channel(sink)).sent == 30
    check = load_config(REPO / "config").checks["slow_confirmation_processing"]
    now = one(engine, "SELECT now() + interval '1 second'")
    [sample] = collect_sql(check, engine, now)
    assert sample.value is not None and not check.condition.holds(sample.value), sample.value
    assert one(engine, "SELECT count(*) FROM registrations WHERE updated_at < confirmation_generated_at - interval '1 second'") == 0


def test_dry_run_counts_and_samples_and_writes_nothing(engine, sink):
    add_backlog(engine, 40)
    add_others(engine)
    snapshot = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t"
    before = [one(engine, snapshot.format(t)) for t in ("registrations", "confirmation_emails")]
    result = reprocess(engine, engine, None, dry_run=True, limit=25)
    assert (result.status, result.would_process, result.claimed) == ("dry_run", 25, 0)
    assert len(result.sample) == 10
    assert all(s["confirmation_number"] == confirmation_number(s["id"]) for s in result.sample)
    assert [one(engine, snapshot.format(t)) for t in ("registrations", "confirmation_emails")] == before
    assert sink.requests == []
    assert q(engine, "SELECT status, rows_affected FROM fleet.job_runs") == [("dry_run", 0)]


def test_older_than_and_limit_bound_what_a_run_takes(engine, sink):
    add_backlog(engine, 100, age="1 hour")
    add_backlog(engine, 50, start=1001, age="0 seconds")  # just paid: the app may still be confirming them
    first = reprocess(engine, engine, channel(sink), older_than=parse_duration("30m"), limit=60,
                      batch_size=25)
    assert (first.claimed, first.batches) == (60, 3)
    second = reprocess(engine, engine, channel(sink), older_than=parse_duration("30m"))
    assert second.claimed == 40
    assert one(engine, "SELECT count(*) FROM registrations WHERE id > 1000 AND confirmation_number IS NULL") == 50
    assert len(sink.emails) == 100


def test_progress_reports_done_total_rate_and_eta(engine, sink):
    add_backlog(engine, 300)
    seen = []
    reprocess(engine, engine, channel(sink), batch_size=100, progress=seen.append)
    assert [p.done for p in seen] == [0, 100, 200, 300]
    assert all(p.total == 300 for p in seen)
    assert seen[-1].eta_s == 0 and seen[-1].rate > 0 and seen[-1].sent == 300
    assert set(seen[-1].as_meta()) == {"done", "total", "claimed", "sent", "failed", "rate", "eta_s"}


def test_run_that_dies_after_the_provider_accepted_is_resent_with_the_same_keys(engine, sink, monkeypatch):
    """A worker gone between the provider's answer and the record: the next run rebuilds the same
    provider calls (same keys, same bodies); Resend answers them from its idempotency store."""
    add_backlog(engine, 450)
    real_record = claims.record_outcomes
    calls = {"n": 0}

    def dies_on_second_batch(conn, outcomes, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            conn.invalidate()  # the connection goes away with the process: locks released, nothing recorded
            raise SystemExit("killed")
        return real_record(conn, outcomes, rows)

    monkeypatch.setattr(claims, "record_outcomes", dies_on_second_batch)
    with pytest.raises(SystemExit):
        reprocess(engine, engine, channel(sink), batch_size=200)
    monkeypatch.setattr(claims, "record_outcomes", real_record)
    assert len(sink.emails) == 400  # batch 2 (200 emails, 2 calls) reached the provider, unrecorded
    assert one(engine, "SELECT count(*) FROM confirmation_emails WHERE status = 'pending'") == 200

    # a fresh run waits for stale_after before touching pending emails (they might be in flight)
    early = reprocess(engine, engine, channel(sink), batch_size=200)
    assert early.recovered == 0 and early.claimed == 50
    result = reprocess(engine, engine, channel(sink), stale_after=parse_duration("0s"))
    assert (result.recovered, result.claimed) == (200, 0)
    replayed = [r for r in sink.requests_for("resend.emails.batch") if r.replayed]
    assert len(replayed) == 2
    assert_exactly_once(engine, sink, 450)
    # the dead run is closed as lost by the next run
    statuses = q(engine, "SELECT status, error FROM fleet.job_runs ORDER BY id")
    assert statuses[0] == ("error", "worker lost before the run finished")


def test_provider_down_stops_the_run_and_the_next_run_sends_each_email_once(engine, sink, monkeypatch):
    monkeypatch.setattr(confirmations, "RETRY_BASE", 0.01)
    add_backlog(engine, 150)
    sink.script("resend.emails.batch", [Reply(), Reply(503), Reply(503), Reply(503), Reply(503)])
    result = reprocess(engine, engine, channel(sink), batch_size=100)
    assert result.status == "error" and "server_error" in result.error
    assert (result.claimed, result.sent, result.deferred) == (150, 100, 50)
    assert one(engine, "SELECT count(*) FROM confirmation_emails WHERE status = 'failed'") == 0
    assert q(engine, "SELECT status, error IS NOT NULL FROM fleet.job_runs") == [("error", True)]
    # the rows stay numbered and pending, never failed; the next run resends them
    pending = one(engine, "SELECT count(*) FROM confirmation_emails WHERE status = 'pending'")
    assert pending == result.deferred > 0
    again = reprocess(engine, engine, channel(sink), stale_after=parse_duration("0s"))
    assert again.status == "ok" and again.recovered == pending
    assert_exactly_once(engine, sink, 150)


def test_transient_error_is_retried_in_the_call_with_the_same_key(engine, sink, monkeypatch):
    monkeypatch.setattr(confirmations, "RETRY_BASE", 0.01)
    add_backlog(engine, 80)
    sink.script("resend.emails.batch", [Reply(hang=2.0), Reply(500)])  # accepted but no answer; then a 500
    result = reprocess(engine, engine, channel(sink, timeout=0.5))
    assert (result.status, result.sent) == ("ok", 80)
    reqs = sink.requests_for("resend.emails.batch")
    assert len(reqs) == 3 and len({r.headers["Idempotency-Key"] for r in reqs}) == 1
    assert reqs[-1].replayed
    assert_exactly_once(engine, sink, 80)


def test_rejected_emails_are_failed_and_resend_failed_sends_each_once(engine, sink):
    add_backlog(engine, 120)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE registrations SET email = 'not-an-address' WHERE id = 5"))
    sink.script("resend.emails.batch", [Reply(422)])  # the first call (100 emails) is rejected as a whole
    result = reprocess(engine, engine, channel(sink))
    assert (result.status, result.claimed, result.sent, result.failed) == ("ok", 120, 20, 100)
    failed = q(engine, "SELECT count(*), min(error) FROM confirmation_emails WHERE status = 'failed'")
    assert failed[0][0] == 100 and "validation_error" in failed[0][1]
    assert one(engine, "SELECT count(*) FROM registrations WHERE email_status = 'failed'") == 100
    # a bounced email is the recipient's problem: never resent
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE confirmation_emails SET status = 'bounced' WHERE registration_id = 9"))

    dry = resend_failed(engine, engine, None, dry_run=True)
    assert dry.would_process == 99 and len(sink.emails) == 20
    retried = resend_failed(engine, engine, channel(sink), batch_size=40)
    # permissive validation: the bad address fails alone, its 98 neighbours are sent
    assert (retried.claimed, retried.sent, retried.failed, retried.batches) == (99, 98, 1, 3)
    bad = q(engine, "SELECT status, attempts, error FROM confirmation_emails WHERE registration_id = 5")
    assert bad[0][:2] == ("failed", 2) and "to" in bad[0][2]
    assert one(engine, "SELECT attempts FROM confirmation_emails WHERE registration_id = 6") == 2
    assert one(engine, "SELECT status FROM confirmation_emails WHERE registration_id = 9") == "bounced"
    recipients = Counter(e["to"][0] for e in sink.emails)
    assert len(sink.emails) == 118 and max(recipients.values()) == 1
    # what failed again is not picked up again by the same run, and a later run tries it once more,
    # up to max_attempts tries in all
    assert resend_failed(engine, engine, channel(sink), max_attempts=3).claimed == 1
    assert resend_failed(engine, engine, channel(sink), max_attempts=3).claimed == 0
    assert one(engine, "SELECT attempts FROM confirmation_emails WHERE registration_id = 5") == 3


def test_an_idempotency_conflict_fails_the_call_instead_of_blocking_every_run(engine, sink):
    add_backlog(engine, 30)
    sink.script("resend.emails.batch", [Reply(409)])  # same key, different body: the data changed
    result = reprocess(engine, engine, channel(sink))
    assert (result.status, result.sent, result.failed) == ("ok", 0, 30)
    assert "probably delivered" in one(engine, "SELECT min(error) FROM confirmation_emails")


def test_provider_auth_error_stops_the_run_and_leaves_the_emails_pending(engine, sink):
    add_backlog(engine, 30)
    sink.script("resend.emails.batch", [Reply(401)])
    result = reprocess(engine, engine, channel(sink))
    assert result.status == "error" and "auth" in result.error
    assert (result.claimed, result.failed, result.deferred) == (30, 0, 30)
    assert one(engine, "SELECT count(*) FROM confirmation_emails WHERE status = 'pending'") == 30


def test_a_taken_confirmation_number_is_skipped_and_reported_not_doubled(engine, sink):
    add_backlog(engine, 20)
    with engine.begin() as conn:  # the application already used registration 7's number elsewhere
        conn.execute(sa.text(
            """INSERT INTO registrations (id, customer_id, event_id, email, full_name, amount_in_cents, status,
                                          payment_status, confirmation_number)
               VALUES (900010, 1, 1, 'other@example.com', 'O', 1, 'completed', 'completed', 'CNF-0000000007')"""))
    result = reprocess(engine, engine, channel(sink))
    assert (result.status, result.claimed, result.conflicts) == ("ok", 19, 1)
    assert one(engine, "SELECT confirmation_number FROM registrations WHERE id = 7") is None
    assert len(sink.emails) == 19


def test_concurrent_runs_claim_each_registration_once(engine, sink):
    add_backlog(engine, 1500)
    results = []

    def run():
        results.append(reprocess(engine, engine, channel(sink), batch_size=50))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.claimed for r in results) == 1500 and all(r.status == "ok" for r in results)
    assert_exactly_once(engine, sink, 1500)


def test_a_row_the_application_keeps_locked_holds_up_nothing_else(engine, sink):
    """SKIP LOCKED: the run claims every other registration; the locked one stays in the backlog and
    the next run takes it."""
    add_backlog(engine, 400)
    app = engine.connect()
    app.execute(sa.text("SELECT id FROM registrations WHERE id = 150 FOR UPDATE"))  # an app transaction, open
    results = []  # in a thread: a claim that waited for the locked row would never return
    runner = threading.Thread(target=lambda: results.append(reprocess(engine, engine, channel(sink), batch_size=100)))
    runner.start()
    try:
        runner.join(60)
        assert results, "the run is waiting for the locked registration"
        assert results[0].status == "ok" and results[0].claimed == 399
        assert one(engine, "SELECT count(*) FROM registrations WHERE confirmation_number IS NULL") == 1
    finally:
        app.rollback()
        app.close()
        runner.join()
    again = reprocess(engine, engine, channel(sink), batch_size=100)
    assert again.status == "ok" and again.claimed == 1
    assert_exactly_once(engine, sink, 400)


def test_backlog_status_shows_backlog_emails_and_runs(engine, sink):
    add_backlog(engine, 30)
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO confirmation_emails (registration_id, recipient, subject, status, created_at)
               VALUES (1, 'a@example.com', 's', 'failed', now()), (2, 'b@example.com', 's', 'pending',
                       now() - interval '1 hour'), (3, 'c@example.com', 's', 'bounced', now())"""))
        conn.execute(sa.text("""INSERT INTO fleet.job_runs (job, kind, status) VALUES
                                ('reprocess_confirmations', 'backlog', 'running')"""))
    status = backlog_status(engine, engine)
    assert status["pending_confirmations"] == 30
    assert 3600 <= status["oldest_pending_age_s"] < 3700
    assert (status["emails_pending"], status["emails_pending_stale"], status["emails_failed"],
            status["emails_bounced"]) == (1, 1, 1, 1)
    assert len(status["running_jobs"]) == 1 and status["running_jobs"][0]["alive"] is False


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"limit": "lots"}, "limit='lots' is invalid (expected a whole number >= 1, or null for no cap)"),
    ({"limit": 0}, "limit=0 is invalid"),
    ({"limit": True}, "limit=True is invalid"),
    ({"batch_size": 0}, "batch_size=0 is invalid (expected a whole number from 1 to 5000)"),
    ({"batch_size": 100000}, "batch_size=100000 is invalid"),
    ({"dry_run": "yes"}, "dry_run='yes' is invalid (expected true or false)"),
    ({"older_than": "soon"}, "older_than='soon' is invalid (expected a duration"),
    ({"limti": 10}, "unknown argument 'limti'"),
])
def test_bad_arguments_are_rejected_with_the_argument_and_its_accepted_form(kwargs, named):
    with pytest.raises(ValueError) as exc:
        parse_args("backlog.reprocess_confirmations", ReprocessArgs, kwargs)
    assert named in str(exc.value)
    assert "Accepted arguments: limit (a whole number >= 1, or null for no cap), batch_size (" in str(exc.value)


def test_the_scheduled_backlog_runs_are_valid_config_and_valid_task_arguments():
    from worker.beat import build_schedule
    from worker.config import load_config

    cfg = load_config()
    tasks = {b.task: b for b in cfg.backlogs.values()}
    assert set(tasks) == {"backlog.reprocess_confirmations", "backlog.resend_failed_emails"}
    parse_args("t", ReprocessArgs, tasks["backlog.reprocess_confirmations"].kwargs)
    parse_args("t", ResendArgs, tasks["backlog.resend_failed_emails"].kwargs)
    sched = build_schedule(cfg)
    assert sched["backlog:confirmations"]["options"] == {"queue": "backlog"}


def test_good_arguments_parse():
    args = parse_args("t", ReprocessArgs, {"limit": 1000, "dry_run": True, "older_than": "15m"})
    assert (args.limit, args.batch_size, args.dry_run, args.older_than) == (1000, 500, True, "15m")
    assert parse_args("t", ResendArgs, {}).batch_size == 100
    with pytest.raises(ValueError, match="unknown argument 'older_than'"):
        parse_args("backlog.resend_failed_emails", ResendArgs, {"older_than": "1h"})


# -- through real Celery workers -------------------------------------------------------------------------


def wait_until(fn, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def test_celery_call_with_bad_arguments_fails_clearly_and_writes_nothing(engine, fleet, sink):
    start, client = fleet
    (worker,) = start(1)
    add_backlog(engine, 10)
    bad = {"limit": "lots", "batch_size": 0, "bogus": 1}
    res = client.send_task("backlog.reprocess_confirmations", kwargs=bad, queue="backlog")
    res.get(timeout=30, propagate=False)
    assert res.state == "FAILURE"
    message = str(res.result)
    assert isinstance(res.result, ValueError)
    for part in ("limit='lots' is invalid", "batch_size=0 is invalid", "unknown argument 'bogus'",
                 "Accepted arguments"):
        assert part in message
    res2 = client.send_task("backlog.resend_failed_emails", kwargs={"limit": -1}, queue="backlog")
    res2.get(timeout=30, propagate=False)
    assert res2.state == "FAILURE" and "limit=-1 is invalid" in str(res2.result)
    assert wait_until(lambda: "backlog_arguments_rejected" in worker.output(), 10)
    assert "unknown argument 'bogus'" in worker.output()
    # nothing written anywhere
    assert one(engine, "SELECT count(*) FROM registrations WHERE confirmation_number IS NOT NULL") == 0
    assert one(engine, "SELECT count(*) FROM confirmation_emails") == 0
    assert one(engine, "SELECT count(*) FROM fleet.job_runs") == 0
    assert sink.requests == []
    # the same worker then takes a good call (a dry run, exactly as the runbook does it)
    ok = client.send_task("backlog.reprocess_confirmations", kwargs={"limit": 1000, "dry_run": True}, queue="backlog")
    assert ok.get(timeout=30)["would_process"] == 10


def test_three_workers_share_a_backlog_and_claim_no_row_twice(engine, fleet, sink):
    n = 50_000
    add_backlog(engine, n)
    start, client = fleet
    start(3)
    results = [client.send_task("backlog.reprocess_confirmations", kwargs={"batch_size": 500}, queue="backlog")
               for _ in range(3)]
    progress = []
    deadline = time.monotonic() + 120
    while not all(r.ready() for r in results) and time.monotonic() < deadline:
        metas = [r.backend.get_task_meta(r.id) for r in results]  # state and info of one reading
        progress += [m["result"] for m in metas if m["status"] == "PROGRESS"]
        time.sleep(0.02)
    summaries = [r.get(timeout=5) for r in results]
    assert sum(s["claimed"] for s in summaries) == n
    assert all(s["claimed"] > 0 for s in summaries), [s["claimed"] for s in summaries]  # all three took part
    runs = q(engine, "SELECT task_id, status, rows_affected FROM fleet.job_runs ORDER BY id")
    assert {r[0] for r in runs} == {r.id for r in results} and {r[1] for r in runs} == {"ok"}
    assert_exactly_once(engine, sink, n)
    assert progress and {"done", "total", "rate", "eta_s"} <= set(progress[-1])  # what Flower shows


def test_worker_killed_mid_send_then_a_second_run_leaves_one_number_and_one_email_each(engine, fleet, sink):
    n = 1500
    add_backlog(engine, n)
    start, client = fleet
    (worker,) = start(1)
    # batches of 300 = 3 provider calls each; the 5th call (batch 2's second) is accepted, then hangs
    sink.script("resend.emails.batch", [Reply(), Reply(), Reply(), Reply(), Reply(hang=60)])
    client.send_task("backlog.reprocess_confirmations", kwargs={"batch_size": 300}, queue="backlog")
    assert wait_until(lambda: len(sink.requests_for("resend.emails.batch")) == 5, 60), worker.output()[-3000:]
    time.sleep(0.2)
    worker.kill(signal.SIGKILL)  # the whole process group, mid-request
    assert len(sink.emails) == 500
    assert one(engine, "SELECT count(*) FROM confirmation_emails WHERE status = 'pending'") == 300
    assert one(engine, "SELECT count(*) FROM registrations WHERE confirmation_number IS NOT NULL") == 600

    (second,) = start(1)
    # RabbitMQ hands the killed worker's unacknowledged message back at once (its channel closed), so the
    # second worker first reruns the killed run itself (Redis keeps it for the visibility timeout)
    res = client.send_task("backlog.reprocess_confirmations", kwargs={"stale_after": "0s"}, queue="backlog")
    res.get(timeout=60)
    assert wait_until(lambda: one(engine, "SELECT count(*) FROM fleet.job_runs WHERE status = 'running'") == 0, 60)
    results = [r[0] for r in q(engine, "SELECT params->'result' FROM fleet.job_runs WHERE status = 'ok' ORDER BY id")]
    assert len(results) == (2 if client.broker_name == "rabbitmq" else 1)
    assert sum(r["recovered"] for r in results) == 300 and sum(r["claimed"] for r in results) == n - 600
    # the two calls the provider had accepted are answered from its idempotency store, not sent again
    assert sum(r.replayed for r in sink.requests_for("resend.emails.batch")) == 2
    assert_exactly_once(engine, sink, n)
    assert q(engine, "SELECT status, error FROM fleet.job_runs ORDER BY id")[0] == \
        ("error", "worker lost before the run finished")


def test_backlog_cli_status_and_reprocess(env, fresh_database):
    """`opsfleet backlog reprocess --dry-run` counts and writes nothing; then it clears the backlog with a
    progress bar, and `opsfleet backlog status` shows it empty."""
    from ops import sample_app
    from tests.support.cli import run_cli

    url = fresh_database()
    upgrade(url)
    engine = create(url)
    sample_app.init(engine)
    from ops.sample_app.seed import seed

    seed(engine, 500)
    with engine.connect() as conn:
        pending = conn.execute(sa.text("SELECT count(*) FROM registrations WHERE status = 'completed' AND "
                                       "payment_status = 'completed' AND confirmation_number IS NULL")).scalar()
    assert pending >= 25
    with ProviderSink() as sink:
        e = {**env, "DATABASE_URL": url, "RESEND_API_KEY": "re_test_key_0123456789",
             "RESEND_API_URL": sink.resend_api_url, "FROM_EMAIL": "tickets@example.com"}
        dry = run_cli(["backlog", "reprocess", "--dry-run"], e)
        assert dry.returncode == 0, dry.stderr
        assert len(sink.emails) == 0
        status = run_cli(["backlog", "status"], e)
        assert status.returncode == 0 and f"{pending:,}" in status.stdout
        done = run_cli(["backlog", "reprocess"], e)
        assert done.returncode == 0, done.stderr
        assert len(sink.emails) == pending
        after = run_cli(["backlog", "status"], e)
        row = next(line for line in after.stdout.splitlines() if "pending confirmations" in line)
        assert row.split("│")[2].strip() == "0", after.stdout
        bad = run_cli(["backlog", "reprocess", "--older-than", "soon"], e)
        assert bad.returncode == 2 and "--older-than" in bad.stderr and "Traceback" not in bad.stderr
    engine.dispose()


def test_a_call_waits_out_the_providers_retry_after_then_backs_off_exponentially(sink, monkeypatch):
    """send_call alone: 429 with Retry-After, then two 503s, then success, all with the same key."""
    monkeypatch.setattr(confirmations, "RETRY_BASE", 0.25)
    rows = [EmailRow(i, i, f"guest{i}@example.com", "Your confirmation", 0, "1", f"Guest {i}",
                             confirmation_number(i), 7, 12_500) for i in (1, 2)]
    sink.script("resend.emails.batch", [Reply(429, headers={"Retry-After": "3"}), Reply(503), Reply(503), Reply()])
    waits: list[float] = []
    outcomes = send_call(channel(sink), rows, sleep=waits.append)
    assert [o.status for o in outcomes] == ["sent", "sent"]
    assert waits == [3.0, 0.5, 1.0]  # Retry-After as given; then RETRY_BASE * 2 ** (attempt - 1)
    reqs = sink.requests_for("resend.emails.batch")[-4:]
    assert len({r.headers["Idempotency-Key"] for r in reqs}) == 1
