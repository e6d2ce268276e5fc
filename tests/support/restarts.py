"""The restart and partition tests' databases and workers (tests/reliability/): a throwaway server's
database prepared, its URL, a query's one value or rows, and a worker's environment over the test's
own databases, Redis and sink. The `servers` fixture is tests/reliability/conftest.py's."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from ops import sample_app
from ops.devkit.servers import PostgresServer
from ops.devkit.sink import ProviderSink
from tests.support.backlog import KEY
from worker.fleet.db import create, normalize_url
from worker.fleet.migrate import upgrade

ROUTING_YAML = """\
channels:
  email: {kind: email, rate_limit: 500, burst: 500}
routes:
  - match: {severity: critical}
    channels: [email]
    repeat_interval: 4h
    group_wait: 0s
"""


def prepare(url: str, *, fleet: bool = False, app: bool = False, gauge: float | None = None) -> str:
    if fleet:
        upgrade(url)
    engine = create(url)
    if app:
        sample_app.init(engine)
    if gauge is not None:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE gauge (v numeric)"))
            conn.execute(sa.text("INSERT INTO gauge VALUES (:v)"), {"v": gauge})
    engine.dispose()
    return url


def url_of(server: PostgresServer) -> str:
    return normalize_url(server.url)


def one(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def fleet_env(tmp_path: Path, *, database_url: str, fleet_url: str, redis_url: str, sink: ProviderSink,
              packs: str = "") -> dict:
    """A worker's environment: the test's own databases, Redis and sink; a config of one email route and
    `packs` enabled (a backlog's task needs its pack: tasks of a pack that is off are refused)."""
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True, exist_ok=True)
    (cfg / "checks" / "none.yaml").write_text("checks: []\n")
    (cfg / "routing.yaml").write_text(ROUTING_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESEND_", "SLACK_", "ALERT_", "OPSFLEET_"))}
    env.update(OPSFLEET_PACKS=packs, OPSFLEET_CONFIG_DIR=str(cfg), DATABASE_URL=database_url,
               FLEET_DATABASE_URL=fleet_url, CELERY_BROKER_URL=redis_url, REDIS_URL=redis_url,
               CELERY_RESULT_BACKEND=redis_url, RESEND_API_KEY=KEY, RESEND_API_URL=sink.resend_api_url,
               FROM_EMAIL="alerts@example.com", ALERT_EMAIL_RECIPIENTS="ops@example.com", LOG_FORMAT="json",
               PYTHONUNBUFFERED="1")
    return env
