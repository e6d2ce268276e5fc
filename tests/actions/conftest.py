"""Fixtures of the tests of worker/actions/: a monitored database of the module's own (sessions are
provoked in it), a config folder whose check proposes terminate_session for a session idle in a
transaction, and the status page serving it with Slack's signing secret and the link key set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.actions import ACTION_SECRET, AUTH, CHECK, ROUTING, SIGNING_SECRET, app_config
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.settings import Settings
from worker.web.server import Fleet, make_server


@pytest.fixture(scope="module")
def monitored(fresh_database) -> str:
    return fresh_database()


@pytest.fixture
def config_dir(tmp_path) -> Path:
    return app_config(tmp_path / "config", CHECK, ROUTING)


@pytest.fixture
def settings(monitored, clean_fleet, redis_url, sink) -> Settings:
    return Settings(database_url=monitored, fleet_database_url=clean_fleet.url.render_as_string(hide_password=False),
                    celery_broker_url=redis_url, opsfleet_ui_auth=AUTH, resend_api_key="re_test_key_0123456789",
                    resend_api_url=sink.resend_api_url, alert_email_recipients="ops@example.com",
                    alert_slack_webhook_url=sink.slack_webhook_url, slack_signing_secret=SIGNING_SECRET,
                    slack_team_id="T00000000", opsfleet_action_secret=ACTION_SECRET,
                    opsfleet_public_url="https://opsfleet.example.com")


@pytest.fixture
def served(settings, config_dir, clean_fleet, redis_url) -> Iterator[dict]:
    """The status page, its approvals sending maintenance.action through a real Celery client."""
    from celery import Celery

    with clean_fleet.begin() as conn:
        conn.execute(sa.text("TRUNCATE fleet.alert_actions"))
    cfg = load_config(config_dir)
    client = Celery(broker=redis_url)
    fleet = Fleet(settings, cfg, engine=clean_fleet, cache_s=60)
    fleet.send_action = lambda action_id: client.send_task("maintenance.action", kwargs={"action_id": action_id},
                                                           queue="maintenance")
    server = make_server(fleet, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "cfg": cfg, "fleet": clean_fleet}
    server.shutdown()
    server.server_close()
    client.close()


@pytest.fixture
def monitored_engine(monitored) -> Iterator[sa.Engine]:
    engine = create(monitored)
    yield engine
    engine.dispose()
