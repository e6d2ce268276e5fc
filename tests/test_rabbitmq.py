"""RabbitMQ as the broker. What needs Redis itself takes REDIS_URL (a worker or beat without it refuses
in one line); the rate limits stay on; every consumer asks RabbitMQ for a delivery acknowledgement
timeout above its queue's hard time limit, and a worker warns at start where the server is too old
to honour it; a task longer than RabbitMQ's channel tick runs once under a consumer_timeout set as
the README says. The Celery-behaviour tests of the other files run on both brokers (`broker`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import sqlalchemy as sa
from kombu import Connection

from ops.devkit.process import CELERY, start_worker
from ops.devkit.servers import RabbitMQServer
from tests.conftest import RABBITMQ_SKIP, REPO, run_cli
from worker.fleet.db import create
from worker.fleet.names import QUEUES
from worker.startup import consumer_timeout_ms

SLOW_JOB = """\
jobs:
  - name: slow_job
    kind: sql
    function: slow_job
    schedule: "0 3 * * *"
"""


@pytest.fixture
def amqp(rabbitmq_url):
    if rabbitmq_url is None:
        pytest.skip(RABBITMQ_SKIP)
    return rabbitmq_url


@pytest.fixture
def amqp_env(env, amqp, redis_url):
    return {**env, "CELERY_BROKER_URL": amqp, "REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}


def _no_redis(env: dict[str, str], amqp: str) -> dict[str, str]:
    e = {k: v for k, v in env.items() if k not in ("REDIS_URL", "CELERY_RESULT_BACKEND")}
    e["CELERY_BROKER_URL"] = amqp
    return e


@pytest.mark.parametrize("process", [["worker", "-Q", "checks", "-c", "1"], ["beat"]])
def test_with_rabbitmq_and_no_redis_url_a_worker_and_a_beat_refuse_in_one_line(env, amqp, process, tmp_path):
    proc = subprocess.run([*CELERY, *process, "-s", str(tmp_path / "schedule")] if process == ["beat"] else
                          [*CELERY, *process], env=_no_redis(env, amqp), capture_output=True, text=True, timeout=60,
                          cwd=REPO)  # noqa: S603
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "REDIS_URL" in line]
    assert len(lines) == 1 and "REDIS_URL is not set" in lines[0] and "export REDIS_URL=redis://" in lines[0]


def test_reading_config_needs_no_redis_even_with_rabbitmq(env, amqp):
    proc = run_cli(["config", "validate", "--offline"], _no_redis(env, amqp))
    assert proc.returncode == 0 and proc.stdout.startswith("ok: "), proc.stderr


def test_the_rate_limits_stay_on_with_rabbitmq(monkeypatch, redis_url, amqp):
    """With a RabbitMQ broker the buckets and follow-up keys live in REDIS_URL (they were silently off)."""
    import tasks.notify
    from worker.fleet.settings import reload_settings

    monkeypatch.setenv("CELERY_BROKER_URL", amqp)
    monkeypatch.setenv("REDIS_URL", redis_url)
    reload_settings()
    tasks.notify._redis.cache_clear()
    try:
        client = tasks.notify._redis()
        assert client is not None and client.ping()
        client.set("opsfleet:test:bucket-probe", "1")
        assert Connection(redis_url).default_channel.client.get("opsfleet:test:bucket-probe") == b"1"
    finally:
        monkeypatch.undo()
        reload_settings()
        tasks.notify._redis.cache_clear()


def _server_version(url: str) -> tuple[int, ...]:
    with Connection(url) as conn:
        conn.ensure_connection(max_retries=1)
        text = conn.connection.server_properties.get("version", b"0")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in text.split(".")[:3])


def test_every_consumer_asks_for_an_acknowledgement_timeout_above_its_queues_hard_limit(amqp_env, amqp, tmp_path,
                                                                                       app_db_url):
    if not shutil.which("rabbitmqctl") or "/opsfleet-test-" not in amqp:
        pytest.skip("needs rabbitmqctl and a vhost of this run's own to list the consumers")
    vhost = amqp.rsplit("/", 1)[1]
    env = {**amqp_env, "DATABASE_URL": app_db_url}
    worker = start_worker(env, tmp_path, queues=",".join(QUEUES))
    try:
        out = subprocess.run(["rabbitmqctl", "list_consumers", "-p", vhost, "queue_name", "arguments",  # noqa: S607
                              "--formatter", "json"], capture_output=True, text=True, timeout=60)
        consumers = {c["queue_name"]: {a[0]: a[2] for a in c["arguments"]} for c in json.loads(out.stdout)}
        for queue, limits in QUEUES.items():
            asked = consumers[queue]["x-consumer-timeout"]
            assert asked == consumer_timeout_ms(queue) > limits["time_limit"] * 1000, (queue, asked)
        warned = [line for line in worker.output().splitlines() if "consumer_timeout" in line]
        if _server_version(amqp) < (3, 12, 0):  # the per-consumer timeout is ignored: the worker says what to set
            assert len(warned) == 1 and f"consumer_timeout = {consumer_timeout_ms('maintenance')}" in warned[0]
            assert "rabbitmq.conf" in warned[0]
        else:
            assert warned == []
    finally:
        worker.stop()


@pytest.mark.slow
def test_a_task_longer_than_the_channel_tick_runs_once_under_a_consumer_timeout_set_as_the_readme_says(
        amqp_env, app_db_url, tmp_path):
    """A throwaway node that checks acknowledgement timeouts every second (RabbitMQ's default: 60 s)
    with consumer_timeout above the task, as the README says to set it above the longest hard limit:
    an 8-second maintenance job (acks_late) runs once, is acknowledged, and the worker stays up.
    (A consumer_timeout shorter than the task makes RabbitMQ close the channel and requeue it: the
    worker's start warning above is about that.) About 30 s, most of it the node's start."""
    try:
        node = RabbitMQServer(tmp_path / "rabbitmq", config={"consumer_timeout": 20_000},
                              advanced={"channel_tick_interval": 1000}).start()
    except Exception as exc:  # noqa: BLE001 - no binary, not root: the same one-line skip
        pytest.skip(f"cannot start a throwaway RabbitMQ node here ({exc}): install rabbitmq-server")
    engine = create(app_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE OR REPLACE FUNCTION slow_job() RETURNS int LANGUAGE sql "
                                 "AS 'SELECT 1 FROM pg_sleep(8)'"))
            conn.execute(sa.text("DELETE FROM fleet.job_runs WHERE job = 'slow_job'"))
        cfg = tmp_path / "config"
        cfg.mkdir()
        (cfg / "maintenance.yaml").write_text(SLOW_JOB)
        env = {**amqp_env, "CELERY_BROKER_URL": node.url, "DATABASE_URL": app_db_url, "OPSFLEET_CONFIG_DIR": str(cfg)}
        worker = start_worker(env, tmp_path, queues="maintenance")
        try:
            call = subprocess.run([*CELERY, "call", "maintenance.run", "--kwargs", '{"job": "slow_job"}'], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=REPO)  # noqa: S603
            assert call.returncode == 0, call.stderr
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    runs = conn.execute(sa.text("SELECT status FROM fleet.job_runs WHERE job = 'slow_job'")).scalars().all()
                if runs and "running" not in runs:
                    break
                time.sleep(0.5)
            time.sleep(3)  # several ticks after the ack: a timed-out delivery would be back by now
            assert runs == ["ok"], worker.output()[-3000:]
            assert worker.p.poll() is None and "PRECONDITION_FAILED" not in worker.output()
            with Connection(node.url) as conn:
                _, ready, _ = conn.default_channel.queue_declare("maintenance", passive=True)
            assert ready == 0  # acknowledged: nothing requeued
        finally:
            worker.stop()
    finally:
        node.stop()
        engine.dispose()


def test_the_celery_call_sections_work_with_rabbitmq(amqp_env, app_db_url, tmp_path):
    """README's `celery -A worker call` lines, as written, on RabbitMQ: a dry-run backlog call and a ping."""
    env = {**amqp_env, "DATABASE_URL": app_db_url}
    worker = start_worker(env, tmp_path, queues="backlog")
    try:
        ping = subprocess.run([*CELERY, "inspect", "ping", "--timeout", "5"], env=env, capture_output=True,
                              text=True, timeout=60, cwd=REPO)  # noqa: S603
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
        call = subprocess.run([*CELERY, "call", "backlog.reprocess_confirmations", "--kwargs",
                               '{"limit": 1000, "dry_run": true}'], env=env, capture_output=True, text=True,
                              timeout=60, cwd=REPO)  # noqa: S603
        assert call.returncode == 0, call.stderr
        assert worker.wait_for("backlog_dry_run", 30), worker.output()[-2000:]
    finally:
        worker.stop()

