"""Delivery through real Celery workers: dedup under concurrency, and a worker killed mid-send."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.process import start_worker
from ops.devkit.sink import Reply
from tests.support.brokers import purge_fleet_queues


def scalar(engine, sql):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def rows(engine, sql):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


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
        if not wait_until(lambda: scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent'") == 2,
                          120):
            # the outbox rows in full first (a flake seen twice under RabbitMQ: one channel's row never sent)
            outbox = rows(engine, "SELECT channel, status, attempts, next_attempt_at, lease_until, throttled, "
                                  "last_error, created_at, now() FROM fleet.notifications")
            log = [line for line in worker.output().splitlines() if "notif" in line or "deliver" in line]
            pytest.fail(f"not both sent: {outbox}\n" + "\n".join(log)[-6000:])
        time.sleep(1)
    finally:
        worker.stop()
    assert scalar(engine, "SELECT count(*) FROM fleet.notifications") == 2
    assert scalar(engine, "SELECT count(DISTINCT status) FROM fleet.check_runs") == 1
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1
    assert len(sink.requests_for("resend.emails")) == 1


def test_worker_killed_mid_send_still_delivers_and_the_email_is_recorded_once(setup, tmp_path):
    from tests.support.notify import due
    from worker.config import load_config
    from worker.fleet.settings import Settings
    from worker.notify.delivery import deliver
    from worker.notify.outbox import LEASE

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


def test_failing_checks_are_errors_and_the_others_still_run_in_the_same_worker(setup, tmp_path):
    engine, sink, env, client = setup
    worker = start_worker(env, tmp_path, queues="checks,notify", concurrency=1)
    try:
        for name in ("writes_data", "too_slow", "gauge_high"):
            client.send_task("checks.run", kwargs={"name": name}, queue="checks")
        assert wait_until(lambda: scalar(engine, "SELECT count(*) FROM fleet.check_runs WHERE status <> 'running'") == 3,
                          60), worker.output()[-2000:]
    finally:
        worker.stop()
    with engine.connect() as conn:
        runs = {r.check_name: r for r in conn.execute(sa.text("SELECT * FROM fleet.check_runs"))}
    assert runs["writes_data"].status == "error" and "read-only transaction" in runs["writes_data"].error
    assert runs["too_slow"].status == "error" and "statement timeout" in runs["too_slow"].error
    assert runs["gauge_high"].status == "ok"
    assert scalar(engine, "SELECT count(*) FROM gauge") == 1  # nothing deleted
    assert scalar(engine, "SELECT state FROM fleet.alerts WHERE check_name = 'gauge_high'") == "firing"


def test_same_slot_from_beat_and_by_hand_concurrently_is_one_evaluation(setup, tmp_path):
    from ops.devkit.process import start_beat

    engine, sink, env, client = setup
    worker = start_worker(env, tmp_path, queues="checks,notify", concurrency=4)
    beat = start_beat(env, tmp_path, "beat")
    try:
        slot = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
        for _ in range(8):  # a doubled beat, a redelivery and an operator's `celery call`, all at once
            client.send_task("checks.run", kwargs={"name": "gauge_high", "slot": slot}, queue="checks")
        assert wait_until(lambda: scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent'") >= 2,
                          60), worker.output()[-2000:]
        time.sleep(2)
    finally:
        beat.kill()
        worker.stop()
    with engine.connect() as conn:
        slots = conn.execute(sa.text("SELECT slot, count(*) FROM fleet.check_runs WHERE check_name = 'gauge_high' "
                                     "GROUP BY slot HAVING count(*) > 1")).all()
        assert slots == []  # beat's own runs land in their own slots, never twice in one
        assert conn.execute(sa.text("SELECT count(*) FROM fleet.alert_events WHERE check_name = 'gauge_high'")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM fleet.notifications WHERE check_name = 'gauge_high'")).scalar() == 2
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1


def test_delivery_messages_lost_by_the_broker_the_sweeper_delivers_them_all(setup, tmp_path, broker):
    engine, sink, env, client = setup
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
    for i in range(5):
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO gauge VALUES (:v)"), {"v": 50 + i})
    # evaluate with no worker consuming notify: the deliver messages sit in the broker, which then loses them
    from worker.checks.engine import run_check
    from worker.config import load_config

    cfg = load_config(env["OPSFLEET_CONFIG_DIR"])
    out = run_check(cfg.checks["gauge_high"], monitored=engine, fleet=engine, now=datetime.now(UTC), routing=cfg.routing)
    assert len(out.notification_ids) == 2
    for nid in out.notification_ids:
        client.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    purge_fleet_queues(broker)
    worker = start_worker(env, tmp_path, queues="notify", concurrency=2)
    try:
        time.sleep(2)
        assert scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent'") == 0  # truly lost
        client.send_task("notify.sweep", queue="notify")  # what beat does every 30 s
        assert wait_until(lambda: scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent'") == 2,
                          30), worker.output()[-2000:]
    finally:
        worker.stop()
    assert len(sink.emails) == 1 and len(sink.slack_messages) == 1
