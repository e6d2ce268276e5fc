"""README, Deploy: "the Redis visibility_timeout (2 h) is above the longest hard time limit (65 min), so a
killed worker's task runs again instead of being lost" -- on the configured app, and end to end."""

from __future__ import annotations

import signal
import uuid

import pytest
import redis
from kombu import Connection

from ops.devkit.process import start_app_worker, wait_until
from worker.app import app
from worker.fleet.names import QUEUES

LONGEST_HARD_LIMIT = max(q["time_limit"] for q in QUEUES.values())


def test_configured_app_gives_its_redis_channels_a_visibility_timeout_above_every_hard_limit(redis_url):
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] > LONGEST_HARD_LIMIT  # 2 h > 65 min
    # what kombu's Redis channel really uses (kombu's own default is 1 h, below the 65 min limit)
    with app.connection_for_write(url=redis_url) as conn:
        assert conn.default_channel.visibility_timeout == options["visibility_timeout"]
    with Connection(redis_url) as bare:
        assert bare.default_channel.visibility_timeout < LONGEST_HARD_LIMIT


@pytest.mark.slow  # about 8 s: two worker starts and a 3 s visibility timeout
def test_task_of_a_sigkilled_worker_is_redelivered_and_runs_once_to_completion(env, redis_url, tmp_path):
    broker = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own: no other test's unacked message
    client, bclient = redis.Redis.from_url(redis_url), redis.Redis.from_url(broker)
    bclient.flushdb()
    worker_env = {**env, "CELERY_BROKER_URL": broker, "REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url,
                  "OPSFLEET_PACKS": "fleet"}
    key = f"redelivery:{uuid.uuid4().hex[:8]}"
    first = start_app_worker("tests.reliability.vtapp", worker_env, tmp_path, queues="checks", name="first")
    second = None
    try:
        sender = app.connection_for_write(url=broker)
        app.send_task("checks.count_runs", kwargs={"key": key, "hold": 120}, queue="checks", connection=sender)
        assert wait_until(lambda: client.get(f"{key}:started") == b"1", 30), first.output()[-2000:]
        first.kill(signal.SIGKILL)  # the whole process group, mid-task: nothing acks, nothing rejects
        assert client.get(f"{key}:done") is None
        assert bclient.hlen("unacked") == 1  # the message is held for its visibility timeout, not lost
        second = start_app_worker("tests.reliability.vtapp", worker_env, tmp_path, queues="checks", name="second")
        assert wait_until(lambda: client.get(f"{key}:done") == b"1", 30), second.output()[-2000:]
        assert wait_until(lambda: bclient.hlen("unacked") == 0, 10)  # acked: nothing left to redeliver
        sender.release()
    finally:
        first.kill()
        if second:
            second.stop()
    assert client.get(f"{key}:started") == b"2" and client.get(f"{key}:done") == b"1"
    assert bclient.llen("checks") == 0


pytestmark = pytest.mark.reliability
