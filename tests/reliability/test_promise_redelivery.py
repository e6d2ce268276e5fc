"""README, Deploy: "the Redis visibility_timeout (2 h) is above the longest hard time limit (65 min), so a
killed worker's task runs again instead of being lost" -- on the configured app, and end to end; and
README, RabbitMQ as the broker: "RabbitMQ hands it back as soon as the worker's channel closes"."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from urllib.parse import unquote, urlsplit

import pytest
import redis
from kombu import Connection

from ops.devkit.process import start_app_worker, wait_until
from tests.support.brokers import RABBITMQ_SKIP, purge_fleet_queues
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


@pytest.mark.slow  # about 12 s: two worker starts
def test_on_rabbitmq_the_task_of_a_sigkilled_worker_goes_at_once_to_another_and_runs_once_to_completion(
        env, redis_url, rabbitmq_url, tmp_path):
    """Two workers of the configured app (acks late, prefetch 1) on this run's RabbitMQ vhost: the one
    that took a long task is SIGKILLed mid-task; RabbitMQ hands the unacknowledged delivery to the other
    as soon as the dead worker's connection closes (no timeout to wait for), and it runs to completion
    once: started twice, done once, nothing left in the queue."""
    if rabbitmq_url is None:
        pytest.skip(RABBITMQ_SKIP)
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl not found: install rabbitmq-server (the test reads the queue's unacknowledged count)")
    purge_fleet_queues(rabbitmq_url)
    client = redis.Redis.from_url(redis_url)
    worker_env = {**env, "CELERY_BROKER_URL": rabbitmq_url, "REDIS_URL": redis_url,
                  "CELERY_RESULT_BACKEND": redis_url, "OPSFLEET_PACKS": "fleet"}
    key = f"redelivery:{uuid.uuid4().hex[:8]}"
    workers = [start_app_worker("tests.reliability.vtapp", worker_env, tmp_path, queues="checks", name=name)
               for name in ("left", "right")]
    try:
        with app.connection_for_write(url=rabbitmq_url) as sender:
            sent = app.send_task("checks.count_runs", kwargs={"key": key, "hold": 120}, queue="checks",
                                 connection=sender)
        assert wait_until(lambda: client.get(f"{key}:started") == b"1", 30), workers[0].output()[-2000:]
        took, other = sorted(workers, key=lambda w: f"[{sent.id}] received" not in w.output())
        assert f"[{sent.id}] received" in took.output() and f"[{sent.id}]" not in other.output()
        assert client.get(f"{key}:done") is None  # mid-task (read before the kill: the other worker may
        # finish the redelivered run before kill() has reaped the dead one; done == 1 at the end says the
        # killed run never completed)
        killed_at = time.monotonic()
        took.kill(signal.SIGKILL)  # the whole process group, mid-task: nothing acks, nothing rejects
        assert wait_until(lambda: client.get(f"{key}:done") == b"1", 30), other.output()[-2000:]
        assert time.monotonic() - killed_at < 10  # handed over when the channel closed, not after a timeout
        assert f"[{sent.id}] received" in other.output()
        # acked (a stop between the task's end and its ack puts the message back: CI saw one left)
        assert wait_until(lambda: nothing_active(rabbitmq_url), 30), other.output()[-2000:]
        other.stop()  # a delivery still unacknowledged would go back to the queue now
    finally:
        for worker in workers:
            worker.kill()
    assert client.get(f"{key}:started") == b"2" and client.get(f"{key}:done") == b"1"
    with Connection(rabbitmq_url) as conn:
        assert conn.default_channel.queue_declare("checks", passive=True).message_count == 0


pytestmark = pytest.mark.reliability



def nothing_active(url: str) -> bool:
    """RabbitMQ holds no unacknowledged delivery on the fleet's `checks` queue of `url`'s vhost."""
    vhost = unquote(urlsplit(url).path[1:]) or "/"
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "messages_unacknowledged"],  # noqa: S603 S607
                         capture_output=True, text=True, timeout=30).stdout
    return any(line.split() == ["checks", "0"] for line in out.splitlines())
