"""A worker outlives its Redis broker restarting while it holds an unacked task and waits for more
(worker/fleet/brokerfix.py): kombu 5.7.0 alone ends the worker there with "Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')" (bench/soak.py saw it at every Redis
restart). A real worker (concurrency 2: one slot busy with an acks-late task, one in BRPOP), its
broker a throwaway redis-server restarted empty under it, up to three times; the task counters live
in another Redis (REDIS_URL), which is not restarted. The worker must stay up, reconnect, and run
work sent after the restarts."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery

from ops.devkit.process import start_app_worker, wait_until
from ops.devkit.servers import RedisServer
from tests.support.restarts import fleet_env
from worker.fleet.db import normalize_url

RESTARTS = 3


def test_a_worker_outlives_its_redis_broker_restarting_under_an_unacked_task(tmp_path: Path, redis_url, pg_admin_url):
    from ops.devkit.sink import ProviderSink

    broker = RedisServer(tmp_path / "broker").start()
    sink = ProviderSink().start()
    env = fleet_env(tmp_path, database_url=normalize_url(pg_admin_url), fleet_url=normalize_url(pg_admin_url),
                    redis_url=broker.url, sink=sink)
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    counters = redis.Redis.from_url(redis_url)
    client = Celery(broker=broker.url)
    worker = start_app_worker("tests.reliability.vtapp", env, tmp_path, queues="checks", concurrency=2, name="guard")
    try:
        for i in range(RESTARTS):
            key = f"guard:{uuid.uuid4().hex}"
            client.send_task("checks.count_runs", args=[key, 8.0], queue="checks")
            assert wait_until(lambda k=key: counters.get(f"{k}:started") == b"1", 30), worker.output()[-3000:]
            broker.restart(down=1.0)  # one slot holds the unacked task, the other waits in BRPOP
            client.close()
            client = Celery(broker=broker.url)
            reconnected = wait_until(lambda n=i: worker.output().count("Connected to redis") >= n + 2
                                     or worker.p.poll() is not None, 40)
            assert worker.p.poll() is None, f"the worker died at restart {i + 1}:\n{worker.output()[-3000:]}"
            assert reconnected, worker.output()[-3000:]
        after = f"guard:{uuid.uuid4().hex}"
        client.send_task("checks.count_runs", args=[after, 0.0], queue="checks")
        assert wait_until(lambda: counters.get(f"{after}:done") == b"1", 30), worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output()
    finally:
        worker.kill()
        client.close()
        broker.stop()
        sink.stop()


pytestmark = [pytest.mark.reliability, pytest.mark.slow]
