"""The fleet's own Prometheus metrics: bounded labels, failure series pre-created at zero."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import REPO, clear_alert_state
from worker.config import load_config
from worker.fleet.db import create
from worker.metrics import FleetCollector


def test_metrics_expose_zeros_for_every_channel_and_reason_and_count_what_exists(fleet_db):
    engine = create(fleet_db)
    with engine.begin() as conn:
        clear_alert_state(conn)
        conn.execute(sa.text("""INSERT INTO fleet.notifications (channel, transition, payload, dedup_key, status, last_error)
                                VALUES ('email', 'firing', '{}', 'm1', 'dead', 'auth: invalid API key <b>x</b>')"""))
        conn.execute(sa.text("""INSERT INTO fleet.alerts (fingerprint, check_name, severity, state, since, last_eval_at)
                                VALUES ('f', 'confirmation_backlog', 'warning', 'firing', now(), now())"""))
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, load_config(REPO / "config")))
    text = generate_latest(registry).decode()
    engine.dispose()
    assert 'opsfleet_notification_failures{channel="email",reason="auth"} 1.0' in text
    assert 'opsfleet_notification_failures{channel="slack",reason="rate_limited"} 0.0' in text
    assert 'opsfleet_notifications{channel="email",status="dead"} 1.0' in text
    assert 'opsfleet_alerts{severity="warning",state="firing"} 1.0' in text
    assert 'opsfleet_alerts{severity="critical",state="firing"} 0.0' in text
    assert 'opsfleet_check_runs{check="confirmation_backlog",status="error"} 0.0' in text
    assert "invalid API key" not in text  # labels never carry message text
