"""README, Environment: "Secrets (API keys, tokens, webhook URLs, DSN passwords) are masked in every log
line, ours and Celery's" -- in a real `celery -A worker worker` and beat's own stdout and stderr: their
banners, a Slack delivery failing (connection refused) and an email going dead on a 403 whose body
echoes the API key (as some providers do), so the secret reaches the worker's `notification_dead` line."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_beat, start_worker, wait_until
from ops.devkit.sink import Reply
from tests.conftest import fresh_gauge
from worker.fleet.db import create

RESEND_KEY = "re_MaskMeResendKey0123456789"
HOOK_SECRET = "HookSecretMaskMe0123"
DB_PASSWORD = "DbPassMaskMe0123"
REDIS_PASSWORD = "RedisPassMaskMe0123"  # the test Redis has no password: AUTH default <any> is accepted
SECRETS = (RESEND_KEY, HOOK_SECRET, DB_PASSWORD, REDIS_PASSWORD)

CHECK = """\
checks:
  - name: gauge_high
    description: test check
    schedule: 1h
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
    group_wait: 0s
"""


def statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT channel, status FROM fleet.notifications")).all())


@pytest.mark.slow  # about 6 s: a worker and a beat start, two deliveries fail
def test_no_secret_appears_in_a_real_workers_or_beats_output(env, fleet_db, redis_url, tmp_path, sink):
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "test.yaml").write_text(CHECK)
    (cfg / "routing.yaml").write_text(ROUTING)
    engine = create(fleet_db)
    fresh_gauge(engine, "v numeric", 50)
    closed = socket.socket()  # bound, never listening: every connection to it is refused
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    db_url = sa.make_url(fleet_db).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    redis_with_pw = redis_url.replace("redis://", f"redis://default:{REDIS_PASSWORD}@", 1)
    wenv = {**env, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": "", "DATABASE_URL": db_url,
            "CELERY_BROKER_URL": redis_with_pw, "REDIS_URL": redis_with_pw, "CELERY_RESULT_BACKEND": redis_with_pw,
            "RESEND_API_KEY": RESEND_KEY, "RESEND_API_URL": sink.resend_api_url,
            "ALERT_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{port}/services/T0MASK/B0MASK/{HOOK_SECRET}",
            "ALERT_EMAIL_RECIPIENTS": "ops@example.com", "FROM_EMAIL": "alerts@example.com", "LOG_LEVEL": "DEBUG"}
    sink.script("resend.emails", [Reply(403, body={"statusCode": 403, "name": "invalid_api_key",
                                                   "message": f"API key {RESEND_KEY} is invalid"})])
    worker = start_worker(wenv, tmp_path, queues="checks,notify")
    beat = start_beat(wenv, tmp_path, "beat")
    client = Celery(broker=redis_url)
    try:
        client.send_task("checks.run", kwargs={"name": "gauge_high"}, queue="checks")
        assert wait_until(lambda: statuses(engine) == {"email": "dead", "slack": "retrying"}, 60), \
            (statuses(engine), worker.output()[-3000:])
        assert beat.wait_for("beat: Acquired lock", 60), beat.output()[-3000:]
    finally:
        client.close()
        beat.kill()
        worker.stop()
        closed.close()
        engine.dispose()
    out = {"worker": worker.output(), "beat": beat.output()}
    assert "notification_retrying" in out["worker"] and "API key *** is invalid" in out["worker"]
    assert "celery beat" in out["beat"] and ".> transport:" in out["worker"]  # the banners are in what we read
    leaks = [(who, s) for who, text in out.items() for s in SECRETS if s in text]
    assert leaks == [], leaks


pytestmark = pytest.mark.reliability
