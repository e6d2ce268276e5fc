"""Escalation through real workers: a critical alert nobody acknowledges escalates at its steps
(PagerDuty after 2 minutes, the webhook after 5); the worker SIGKILLed mid-chain and started again
neither skips nor doubles a step (a slot evaluated again does nothing); an Acknowledge button clicked
in Slack (a payload signed as Slack signs) stops the chain before its third step (email after 8)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_worker, wait_until
from ops.devkit.sink.slack import signed_interaction
from tests.support.actions import SIGNING_SECRET, app_config
from worker.config import load_config
from worker.fleet.settings import Settings
from worker.web.server import Fleet, make_server

KEY = "R0UT1NGKEY0123456789ABCDEFGHIJKL"
CHECK = """\
checks:
  - name: gauge_critical
    description: a gauge over 10 (a test check)
    schedule: 1m
    query: SELECT name AS item, v AS value FROM gauge
    condition: "> 10"
    severity: critical
    summary: "{{ labels.item }} at {{ value }}"
"""
ROUTING = """\
channels:
  slack: {kind: slack}
  pagerduty: {kind: pagerduty}
  webhook: {kind: webhook}
  email: {kind: email}
routes:
  - match: {severity: critical}
    channels: [slack]
    group_wait: 0s
    escalate:
      - {after: 2m, notify: [pagerduty]}
      - {after: 5m, notify: [webhook]}
      - {after: 8m, notify: [email]}
"""


@pytest.mark.slow  # about 15 s: two worker starts, eight evaluations
def test_an_unacknowledged_critical_escalates_once_per_step_across_a_restart_until_acked_in_slack(
        db, env, sink, tmp_path, redis_url):
    cfg_dir = app_config(tmp_path / "config", CHECK, ROUTING)
    sink.pagerduty_routing_keys = None
    wenv = {**env, "OPSFLEET_CONFIG_DIR": str(cfg_dir), "OPSFLEET_PACKS": "", "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url,
            "PAGERDUTY_ROUTING_KEY": KEY, "PAGERDUTY_API_URL": sink.pagerduty_api_url, "ALERT_WEBHOOK_URL": sink.webhook_url,
            "RESEND_API_KEY": "re_test_key_0123456789", "RESEND_API_URL": sink.resend_api_url,
            "ALERT_EMAIL_RECIPIENTS": "cto@example.com", "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO gauge VALUES ('disk-a', 50)"))
    t0 = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    client = Celery(broker=env["CELERY_BROKER_URL"])

    def evaluate(minute: int) -> None:
        client.send_task("checks.run", kwargs={"name": "gauge_critical", "at": (t0 + timedelta(minutes=minute)).isoformat()},
                         queue="checks")

    def ran(minute: int) -> bool:
        with db.connect() as conn:
            return conn.execute(sa.text("SELECT 1 FROM fleet.check_runs WHERE check_name = 'gauge_critical' AND slot = :s"),
                                {"s": t0 + timedelta(minutes=minute)}).first() is not None

    def told() -> tuple[int, int, int, int]:
        return (len(sink.slack_messages), len(sink.requests_for("pagerduty.enqueue")), len(sink.requests_for("webhook")),
                len(sink.emails))

    worker = start_worker(wenv, tmp_path, queues="checks,notify", concurrency=2)
    try:
        for minute in (0, 1, 2):
            evaluate(minute)
            assert wait_until(lambda m=minute: ran(m), 30), worker.output()[-3000:]
        assert wait_until(lambda: told()[:2] == (1, 1), 30), (told(), worker.output()[-3000:])
        worker.kill()  # SIGKILL mid-chain, between steps 1 and 2
        evaluate(2)  # the slot of step 1 once more (a redelivery): claimed already, nothing
        evaluate(5)  # queued while no worker runs
        worker = start_worker(wenv, tmp_path, queues="checks,notify", concurrency=2)
        assert wait_until(lambda: ran(5), 30), worker.output()[-3000:]
        assert wait_until(lambda: told()[2] == 1, 30), (told(), worker.output()[-3000:])

        # Acknowledge, clicked in Slack on the alert's message
        message = sink.slack_messages[0]
        ack = next(e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"].startswith("ack:"))
        settings = Settings(database_url=env["DATABASE_URL"], celery_broker_url=redis_url, opsfleet_ui_auth="ops:pw",
                            slack_signing_secret=SIGNING_SECRET)
        server = make_server(Fleet(settings, load_config(cfg_dir), engine=db, cache_s=60), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        try:
            import urllib.request

            body, headers = signed_interaction(SIGNING_SECRET, value=ack["value"], action_id=ack["action_id"], user="ana",
                                               response_url=sink.slack_response_url)
            req = urllib.request.Request(f"http://127.0.0.1:{server.server_address[1]}/slack/interactions", data=body,
                                         headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
                assert resp.status == 200
        finally:
            server.shutdown()
            server.server_close()
        with db.connect() as conn:
            assert conn.execute(sa.text("SELECT acked_by FROM fleet.alerts WHERE fingerprint = :fp"),
                                {"fp": ack["value"]}).scalar() == "ana (slack)"
        evaluate(9)  # step 3 is due, but the alert is acknowledged
        assert wait_until(lambda: ran(9), 30), worker.output()[-3000:]
        evaluate(10)
        assert wait_until(lambda: ran(10), 30)
        assert told() == (1, 1, 1, 0), told()  # each step once, none after the ack
        with db.connect() as conn:
            keys = conn.execute(sa.text("SELECT dedup_key FROM fleet.notifications WHERE transition = 'escalation' "
                                        "ORDER BY dedup_key")).scalars().all()
        assert [k.split(":")[0] for k in keys] == ["pagerduty", "webhook"] and len(set(keys)) == 2
    finally:
        client.close()
        worker.stop()
