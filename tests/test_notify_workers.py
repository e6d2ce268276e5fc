"""Delivery through real Celery workers: dedup under concurrency, and a worker killed mid-send."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

from tests.fleet import start_worker
from worker.db import create
from worker.sink import ProviderSink, Reply

CHECK = """\
checks:
  - name: gauge_high
    description: test check
    schedule: 1m
    query: SELECT v AS value FROM gauge
    condition: "> 10"
    severity: critical
    summary: "gauge at {{ value }}"
"""
ROUTING = """\
channels:
  email: {kind: email}
  slack: {kind: slack}
routes:
  - match: {severity: critical}
    channels: [email, slack]
    repeat_interval: 4h
    group_wait: 0s
"""


@pytest.fixture
def setup(fleet_db, redis_url, env, tmp_path, redis_client):
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "test.yaml").write_text(CHECK)
    (cfg / "routing.yaml").write_text(ROUTING)
    engine = create(fleet_db)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE fleet.check_runs, fleet.alerts, fleet.alert_events, fleet.notifications, "
                             "fleet.held_back CASCADE"))
        conn.execute(sa.text("DROP TABLE IF EXISTS gauge"))
        conn.execute(sa.text("CREATE TABLE gauge (v numeric)"))
        conn.execute(sa.text("INSERT INTO gauge VALUES (50)"))
    sink = ProviderSink().start()
    env = {**env, "OPSFLEET_CONFIG_DIR": str(cfg), "RESEND_API_KEY": "re_test_key_0123456789",
           "RESEND_API_URL": sink.resend_api_url, "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url,
           "ALERT_EMAIL_RECIPIENTS": "ops@example.com", "FROM_EMAIL": "alerts@example.com"}
    client = Celery(broker=redis_url)
    yield engine, sink, env, client
    client.close()
    sink.stop()
    engine.dispose()


def scalar(engine, sql):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def wait_until(fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.2)
    return False


def test_same_alert_evaluated_1000_times_by_4_workers_sends_one_message_per_channel(setup, tmp_path):
    engine, sink, env, client = setup
    worker = start_worker(env, tmp_path, queues="checks,notify", concurrency=4)
    try:
        now = datetime.now(UTC)
        for i in range(1000):  # 1,000 distinct slots, so each one really evaluates
            client.send_task("checks.run", kwargs={"name": "gauge_high",
                                                   "slot": (now - timedelta(seconds=i)).isoformat()}, queue="checks")
        assert wait_until(lambda: scalar(engine, "SELECT count(*) FROM fleet.check_runs") == 1000, 120), \
            worker.output()[-2000:]
        assert wait_until(lambda: scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent'") == 2)
        time.sleep(1)
    finally:
        worker.stop()
    assert scalar(engine, "SELECT count(*) FROM fleet.notifications") == 2
    assert scalar(engine, "SELECT count(DISTINCT status) FROM fleet.check_runs") == 1
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1
    assert len(sink.requests_for("resend.emails")) == 1


def test_worker_killed_mid_send_still_delivers_and_the_email_is_recorded_once(setup, tmp_path):
    from worker.config import load_config
    from worker.delivery import LEASE, deliver, due
    from worker.settings import Settings

    engine, sink, env, client = setup
    sink.script("resend.emails", [Reply(hang=30.0)])  # accepted, then the connection hangs
    worker = start_worker(env, tmp_path, queues="checks,notify", concurrency=1)
    try:
        client.send_task("checks.run", kwargs={"name": "gauge_high"}, queue="checks")
        assert wait_until(lambda: len(sink.requests_for("resend.emails")) == 1, 60), worker.output()[-2000:]
        assert scalar(engine, "SELECT status FROM fleet.notifications WHERE channel = 'email'") == "sending"
    finally:
        worker.kill(signal.SIGKILL)  # the whole process group, mid-request
    nid = str(scalar(engine, "SELECT id FROM fleet.notifications WHERE channel = 'email'"))
    # the lease is still held just after the kill; once it expires the sweeper finds the row again
    later = datetime.now(UTC) + LEASE + timedelta(seconds=1)
    assert nid not in due(engine, datetime.now(UTC))
    assert nid in due(engine, later)
    cfg = load_config(env["OPSFLEET_CONFIG_DIR"])
    settings = Settings(resend_api_key=env["RESEND_API_KEY"], resend_api_url=env["RESEND_API_URL"],
                        alert_slack_webhook_url=env["ALERT_SLACK_WEBHOOK_URL"], alert_email_recipients="ops@example.com")
    assert deliver(nid, fleet=engine, settings=settings, routing=cfg.routing, now=later).status == "sent"
    assert len(sink.requests_for("resend.emails")) == 2
    assert len(sink.emails) == 1  # the retry carried the same Idempotency-Key
