"""README, RabbitMQ as the broker: REDIS_URL is "still needed: RedBeat, rate limits". With RabbitMQ as
the broker and REDIS_URL set, a real worker's deliveries take their tokens from the Redis bucket: the
second message to a Slack webhook limited to 0.5/s leaves no sooner than 2 s after the first (rate
limiting is not silently off when the broker is not Redis: tasks/notify.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_worker, wait_until
from tests.support.brokers import RABBITMQ_SKIP, purge_fleet_queues
from tests.support.db import fresh_gauge
from worker.fleet.db import create

RATE = 0.5
CHECK = """\
checks:
  - name: gauge_items
    description: test check
    schedule: 1m
    query: SELECT name AS item, v AS value FROM gauge
    condition: "> 10"
    severity: warning
    summary: "{{ labels.item }} at {{ value }}"
"""
ROUTING = f"""\
channels:
  slack: {{kind: slack, rate_limit: {RATE}, burst: 1}}
routes:
  - match: {{severity: warning}}
    channels: [slack]
    group_wait: 0s
"""


@pytest.mark.slow  # about 7 s: a worker on RabbitMQ starts, two messages 2 s apart
def test_rabbitmq_worker_with_redis_url_throttles_deliveries_by_the_redis_bucket(env, fleet_db, redis_url,
                                                                                 rabbitmq_url, sink, tmp_path):
    if rabbitmq_url is None:
        pytest.skip(RABBITMQ_SKIP)
    purge_fleet_queues(rabbitmq_url)
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "test.yaml").write_text(CHECK)
    (cfg / "routing.yaml").write_text(ROUTING)
    engine = create(fleet_db)
    fresh_gauge(engine, "name text, v numeric")
    rclient = redis.Redis.from_url(redis_url)
    for key in rclient.scan_iter("opsfleet:bucket:*"):
        rclient.delete(key)
    wenv = {**env, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": "", "CELERY_BROKER_URL": rabbitmq_url,
            "REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url, "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url}
    worker = start_worker(wenv, tmp_path, queues="checks,notify", concurrency=2)
    client = Celery(broker=rabbitmq_url)
    now = datetime.now(UTC)
    buckets: set[bytes] = set()
    try:
        for i, (items, at) in enumerate(((["a"], now - timedelta(minutes=1)), (["a", "b"], now))):
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM gauge"))
                for item in items:
                    conn.execute(sa.text("INSERT INTO gauge VALUES (:n, 50)"), {"n": item})
            client.send_task("checks.run", kwargs={"name": "gauge_items", "at": at.isoformat()}, queue="checks")
            assert wait_until(lambda n=i + 1: len(sink.requests_for("slack.webhook")) >= n, 30), worker.output()[-3000:]
            # read at once: a bucket lives burst/rate + 1 s (3 s here) after its last token, less than a
            # worker takes to stop on a busy machine
            buckets.update(rclient.scan_iter("opsfleet:bucket:*"))
    finally:
        client.close()
        worker.stop()
        engine.dispose()
    first, second = sink.requests_for("slack.webhook")[:2]
    assert second.at - first.at >= 1 / RATE - 0.2, second.at - first.at  # the bucket's pace, not the worker's
    assert buckets  # the tokens came from Redis
    assert len(sink.slack_messages) == 2


pytestmark = pytest.mark.reliability
