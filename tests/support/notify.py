"""What the notify tests and tests/reliability/'s delivery tests share: a gauge check fired through the
real engine (check, fire), the routing and settings they deliver with, the outbox rows they read back
(note, email_id), and delivering a row again and again until it is final.

Also two fixtures, registered for every folder by the root conftest (pytest_plugins), since both
domains use them:
- `db`: an engine on fleet_db, the alert state cleared, and an empty `gauge (name text, v numeric)`;
- `setup`: a config of three checks and one route, that gauge at 50, a ProviderSink, the environment
  of a worker pointed at them on the test's broker, and a Celery client: (engine, sink, env, client).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.sink import ProviderSink
from tests.support.db import fresh_gauge
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.fleet.db import create
from worker.fleet.settings import Settings
from worker.notify import outbox
from worker.notify.delivery import deliver
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def routing(**slack_overrides) -> Routing:
    return Routing.model_validate({
        "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack", **slack_overrides},
                     "dashboard": {"kind": "table"}},
        "routes": [
            {"match": {"severity": "critical"}, "channels": ["email", "slack"], "repeat_interval": "1h",
             "group_wait": "0s"},
            {"match": {"severity": "high"}, "channels": ["email"], "group_wait": "0s"},
            {"match": {"severity": "warning"}, "channels": ["slack"], "group_wait": "0s"},
        ],
    })


def check(severity="critical", name="gauge_high") -> Check:
    return Check.model_validate({
        "name": name, "description": "test", "schedule": "1m", "for": "0s",
        "query": "SELECT name AS item, v AS value FROM gauge", "condition": "> 10", "severity": severity,
        "summary": "{{ labels.item }} at {{ value }} <script>alert(1)</script>",
    })


def settings_for(sink, **over) -> Settings:
    base = dict(resend_api_key="re_test_key_0123456789", resend_api_url=sink.resend_api_url,
                alert_slack_webhook_url=sink.slack_webhook_url, alert_email_recipients="ops@example.com",
                from_email="alerts@example.com", from_name="opsfleet")
    base.update(over)
    return Settings(**base)


def fire(db, items=("a",), severity="critical", at=T0, routes=None, name="gauge_high"):
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
        for it in items:
            conn.execute(sa.text("INSERT INTO gauge VALUES (:n, 50)"), {"n": it})
    out = run_check(check(severity, name), monitored=db, fleet=db, now=at, routing=routes or routing())
    return out.notification_ids


def due(engine, now, limit: int = 500) -> list[str]:
    """The outbox rows notify.sweep would re-enqueue at `now` (outbox.due on a connection of `engine`)."""
    with engine.connect() as conn:
        return outbox.due(conn, now, limit)


def lease(engine, nid: str, now):
    """A worker takes row `nid` at `now` (outbox.lease, committed): the row, or None."""
    with engine.begin() as conn:
        return outbox.lease(conn, nid, now)


def note(db, nid):
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM fleet.notifications WHERE id = :id"), {"id": nid}).one()


def email_id(db, ids):
    return next(i for i in ids if note(db, i).channel == "email")


ATTEMPTS = 8  # the README's and the figure: a test of the promise, not of the constant


def deliver_until_final(db, sink, nid, *, limit: int = 40, timeout: float = 10.0):
    """Deliver `nid` again each time it is due (the clock jumps to its next attempt) until it is sent or
    dead; returns the statuses and the clock."""
    s, r, now, statuses = settings_for(sink), routing(), T0, []
    for _ in range(limit):
        out = deliver(nid, fleet=db, settings=s, routing=r, now=now, timeout=timeout)
        statuses.append(out.status)
        if out.status in ("sent", "dead"):
            break
        now += timedelta(seconds=(out.retry_in or 0) + 0.01)
    return statuses, now


# -- the fixtures both domains use (pytest_plugins in tests/conftest.py) ---------------------------
@pytest.fixture
def db(clean_fleet):
    """clean_fleet with an empty `gauge (name text, v numeric)`, the table check() reads (a module whose
    checks read another gauge says so with a `db` of its own)."""
    fresh_gauge(clean_fleet, "name text, v numeric")
    return clean_fleet


SETUP_CHECKS = """\
checks:
  - name: gauge_high
    description: test check
    schedule: 1m
    query: SELECT v AS value FROM gauge
    condition: "> 10"
    severity: critical
    summary: "gauge at {{ value }}"
  - name: writes_data
    description: a check that tries to write
    schedule: 1m
    query: WITH d AS (DELETE FROM gauge RETURNING 1) SELECT count(*) AS value FROM d
    condition: "> 0"
    severity: critical
    summary: "deleted {{ value }}"
  - name: too_slow
    description: a check slower than its timeout
    schedule: 1m
    timeout: 1s
    query: SELECT 1 AS value FROM pg_sleep(5)
    condition: "> 0"
    severity: critical
    summary: slow
"""
SETUP_ROUTING = """\
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
def setup(fleet_db, broker, broker_env, tmp_path, redis_client):
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "test.yaml").write_text(SETUP_CHECKS)
    (cfg / "routing.yaml").write_text(SETUP_ROUTING)
    engine = create(fleet_db)
    fresh_gauge(engine, "v numeric", 50)
    sink = ProviderSink().start()
    env = {**broker_env, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": "", "RESEND_API_KEY": "re_test_key_0123456789",
           "RESEND_API_URL": sink.resend_api_url, "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url,
           "ALERT_EMAIL_RECIPIENTS": "ops@example.com", "FROM_EMAIL": "alerts@example.com"}
    client = Celery(broker=broker)
    yield engine, sink, env, client
    client.close()
    sink.stop()
    engine.dispose()
