"""The fleet's Celery app (worker.app: acks late, reject on worker lost, prefetch 1) with a 3 s Redis
visibility timeout swept every second, and one task that counts its runs in Redis: what the redelivery
test (test_promise_redelivery.py) runs as `celery -A tests.reliability.vtapp worker`."""

from __future__ import annotations

import os
import time

import redis

from worker.app import app

app.conf.broker_transport_options = {**(app.conf.broker_transport_options or {}), "visibility_timeout": 3,
                                     "unacked_restore_interval": 1, "unacked_restore_throttle": 1}


@app.task(name="checks.count_runs")  # acks late as the app says: the redelivery tests test that
def count_runs(key: str, hold: float) -> int:
    """The first run holds `hold` seconds (long enough to be killed in); every run is counted."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    run = client.incr(f"{key}:started")
    if run == 1:
        time.sleep(hold)
    client.incr(f"{key}:done")
    return run
