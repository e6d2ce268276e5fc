"""The fleet's own Prometheus metrics: bounded labels, failure series pre-created at zero."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import REPO, clear_alert_state
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.timeutil import Schedule
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


def test_each_enabled_check_exports_its_schedules_longest_gap(fleet_db):
    """OpsfleetCheckNotRunning compares a check's last run with this: a weekly check may rightly be
    silent a week, a 1-minute one a minute; a disabled check exports none (it never alerts)."""
    cfg = load_config(REPO / "config")
    engine = create(fleet_db)
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, cfg))
    text = generate_latest(registry).decode()
    engine.dispose()
    assert 'opsfleet_check_interval_seconds{check="db_unused_indexes"} 604800.0' in text       # 0 6 * * 1
    assert 'opsfleet_check_interval_seconds{check="confirmation_backlog"} 60.0' in text        # 1m
    assert 'opsfleet_check_interval_seconds{check="sms_delivery_failures"} 3600.0' in text     # 30 * * * *
    assert 'opsfleet_check_interval_seconds{check="whatsapp_top_errors"} 86400.0' in text      # 50 7 * * *
    disabled = [n for n, c in cfg.checks.items() if not c.enabled]
    assert disabled and not any(f'opsfleet_check_interval_seconds{{check="{n}"}}' in text for n in disabled)


@pytest.mark.parametrize(("schedule", "gap"), [
    ("90s", timedelta(seconds=90)), ("*/15 * * * *", timedelta(minutes=15)), ("0 9 * * 1-5", timedelta(days=3)),
    ("0 3 1 * *", timedelta(days=31)), ("0,30 8 * * *", timedelta(hours=23, minutes=30)),
    ("0 2 29 2 *", timedelta(days=400)),  # fewer than two runs in the year looked at: as long as it
])
def test_longest_gap_of_a_schedule(schedule, gap):
    assert Schedule.parse(schedule).longest_gap() == gap
