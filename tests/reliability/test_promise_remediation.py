"""README: a check's `remediate` (config/confirmations/checks.yaml: confirmation_backlog enqueues
backlog.reprocess_confirmations when it fires) numbers the registrations and emails the customers; and
maintenance and backlog tasks report PROGRESS to the result backend (what Flower shows). Through one
real worker. Backlog PROGRESS under load is also proven by
tests/backlog/test_backlog.py::test_three_workers_share_a_backlog_and_claim_no_row_twice (docs/guarantees.md)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_worker, wait_until
from ops.devkit.sink import ProviderSink
from tests.support.db import clear_alert_state
from worker.fleet.db import create

KEY = "re_test_key_0123456789"


@pytest.fixture(scope="module")
def sink():
    with ProviderSink(resend_api_keys=[KEY]) as s:
        yield s


@pytest.fixture
def fleet(app_db_url, env, redis_url, sink, tmp_path):
    engine = create(app_db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE registrations, confirmation_emails, webhook_logs, webhook_logs_archive, "
                             "maintenance_log RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("TRUNCATE fleet.job_runs"))
        clear_alert_state(conn)
    sink.reset()
    wenv = {**env, "DATABASE_URL": app_db_url, "REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
            "RESEND_API_KEY": KEY, "RESEND_API_URL": sink.resend_api_url, "FROM_EMAIL": "confirm@example.com"}
    worker = start_worker(wenv, tmp_path, queues="checks,backlog,maintenance", concurrency=1)
    client = Celery(broker=redis_url, backend=redis_url)
    # every state change of every task, as the result backend publishes it (PROGRESS is overwritten)
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("celery-task-meta-*")
    yield engine, client, worker, pubsub
    pubsub.close()
    client.close()
    worker.stop()
    engine.dispose()


def states(pubsub, seen: list[dict]) -> list[dict]:
    while (msg := pubsub.get_message(timeout=0.05)) is not None:
        seen.append(json.loads(msg["data"]))
    return seen


def one(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


@pytest.mark.slow  # about 6 s: a worker consuming three queues starts (its config checks) and runs three tasks
def test_confirmation_backlog_firing_remediates_numbers_and_emails_each_customer_once(fleet, sink):
    engine, client, worker, pubsub = fleet
    n = 30  # above the check's threshold (> 20)
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO registrations (id, customer_id, event_id, email, full_name, amount_in_cents, status,
                                          payment_status, created_at, updated_at)
               SELECT i, i, 1, 'guest' || i || '@example.com', 'Guest ' || i, 4500, 'completed', 'completed',
                      now() - interval '2 hours', now() - interval '1 hour'
               FROM generate_series(1, :n) i"""), {"n": n})
    now = datetime.now(UTC)
    # `for: 15m`: pending at the first evaluation, firing at one 16 minutes later
    for at in (now - timedelta(minutes=16), now):
        client.send_task("checks.run", kwargs={"name": "confirmation_backlog", "at": at.isoformat()}, queue="checks")
    assert wait_until(lambda: one(engine, "SELECT state FROM fleet.alerts WHERE check_name = 'confirmation_backlog'")
                      == "firing", 60), worker.output()[-3000:]
    seen: list[dict] = []
    assert wait_until(lambda: one(engine, "SELECT count(*) FROM registrations WHERE confirmation_number IS NOT NULL")
                      == n and len(sink.emails) == n, 60), worker.output()[-3000:]
    assert sorted(e["to"][0] for e in sink.emails) == sorted(f"guest{i}@example.com" for i in range(1, n + 1))
    assert one(engine, "SELECT count(DISTINCT confirmation_number) FROM registrations") == n
    assert wait_until(lambda: any(s["status"] == "SUCCESS" and s.get("name") == "backlog.reprocess_confirmations"
                                  for s in states(pubsub, seen)), 30)
    progress = [s["result"] for s in seen if s["status"] == "PROGRESS"]
    assert progress and progress[-1]["job"] == "reprocess_confirmations" and progress[-1]["total"] == n


@pytest.mark.slow  # about 4 s (the worker's start)
def test_maintenance_run_reports_progress_with_rows_and_batches(fleet):
    engine, client, worker, pubsub = fleet
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO webhook_logs (webhook_name, registration_id, status_code, duration_ms, payload, created_at)
               SELECT 'stripe-webhook', i, 200, 5, '{}', now() - interval '100 days' FROM generate_series(1, 300) i"""))
    task_id = str(uuid.uuid4())
    client.send_task("maintenance.run", kwargs={"job": "archive_webhook_logs"}, queue="maintenance", task_id=task_id)
    seen: list[dict] = []
    assert wait_until(lambda: any(s["task_id"] == task_id and s["status"] == "SUCCESS" for s in states(pubsub, seen)),
                      60), worker.output()[-3000:]
    mine = [s for s in seen if s["task_id"] == task_id]
    progress = [s["result"] for s in mine if s["status"] == "PROGRESS"]
    assert progress == [{"job": "archive_webhook_logs", "rows": 300, "batches": 1}], [s["status"] for s in mine]
    assert mine[-1]["result"]["rows"] == 300 and one(engine, "SELECT count(*) FROM webhook_logs_archive") == 300


pytestmark = pytest.mark.reliability
