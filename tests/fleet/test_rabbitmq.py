"""RabbitMQ as the broker. What needs Redis itself takes REDIS_URL (a worker or beat without it refuses
in one line); the rate limits stay on; every consumer asks RabbitMQ for a delivery acknowledgement
timeout above its queue's hard time limit, and a worker warns at start where the server is too old
to honour it; a task that outlives consumer_timeout runs once where the consumer's timeout is honoured
(3.12+), and on an older server is cut and runs again until the node has the line the worker and the
README name. Redelivery of a killed worker's task: tests/reliability/test_promise_redelivery.py. The
Celery-behaviour tests of the other files run on both brokers (`broker`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import sqlalchemy as sa
from kombu import Connection

from ops.devkit.process import CELERY, start_worker, wait_until
from ops.devkit.servers import RabbitMQServer
from tests.support import REPO
from tests.support.cli import run_cli
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


def _runs(engine) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM fleet.job_runs WHERE job = 'slow_job' ORDER BY started_at")
                            ).scalars().all()


def _ready(url: str) -> int:
    """Messages waiting in the maintenance queue (a delivery the broker took back is counted again)."""
    with Connection(url) as conn:
        return conn.default_channel.queue_declare("maintenance", passive=True)[1]


@pytest.mark.slow  # about 30 s: a RabbitMQ node started twice (8 s each), two workers, two 5-second jobs
def test_a_task_that_outlives_consumer_timeout_runs_once_where_the_readme_says_it_does(amqp_env, app_db_url, tmp_path):
    """A throwaway node with consumer_timeout = 2000 that checks acknowledgement timeouts every second
    (RabbitMQ's default tick: 60 s), and a 5-second maintenance job (acks_late). RabbitMQ 3.12+ honours
    the per-consumer timeout opsfleet asks for (70 min): the job runs once. An older server applies its
    server-wide timeout whatever the consumer asks: the broker cuts the delivery, the worker stops
    (saying so in one line) and the job is queued again (the README's warning); with the line the worker's start warning names
    (the README's) in rabbitmq.conf and the node restarted, a fresh worker runs it once."""
    try:
        node = RabbitMQServer(tmp_path / "rabbitmq", config={"consumer_timeout": 2000},
                              advanced={"channel_tick_interval": 1000}).start()
    except Exception as exc:  # noqa: BLE001 - no binary, not root: the same one-line skip
        pytest.skip(f"cannot start a throwaway RabbitMQ node here ({exc}): install rabbitmq-server")
    engine = create(app_db_url)
    worker = None
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE OR REPLACE FUNCTION slow_job() RETURNS int LANGUAGE sql "
                                 "AS 'SELECT 1 FROM pg_sleep(5)'"))
            conn.execute(sa.text("DELETE FROM fleet.job_runs WHERE job = 'slow_job'"))
        cfg = tmp_path / "config"
        cfg.mkdir()
        (cfg / "maintenance.yaml").write_text(SLOW_JOB)
        env = {**amqp_env, "CELERY_BROKER_URL": node.url, "DATABASE_URL": app_db_url, "OPSFLEET_CONFIG_DIR": str(cfg)}
        worker = start_worker(env, tmp_path, queues="maintenance", name="asked")
        call = subprocess.run([*CELERY, "call", "maintenance.run", "--kwargs", '{"job": "slow_job"}'], env=env,
                              capture_output=True, text=True, timeout=60, cwd=REPO)  # noqa: S603
        assert call.returncode == 0, call.stderr
        if _server_version(node.url) >= (3, 12, 0):  # the consumer argument holds it
            assert wait_until(lambda: _runs(engine) == ["ok"], 30, every=0.5), worker.output()[-3000:]
            worker.stop()  # closing the channel would put an unacknowledged delivery back
            assert "PRECONDITION_FAILED" not in worker.output() and _ready(node.url) == 0
        else:
            _cut_then_held_by_the_readmes_line(node, env, engine, worker, tmp_path)
    finally:
        if worker:
            worker.kill()
        node.stop()
        engine.dispose()


def _cut_then_held_by_the_readmes_line(node, env, engine, worker, tmp_path) -> None:
    """RabbitMQ < 3.12: the broker cuts the delivery whatever the consumer asked (`worker` exits); with
    the line the worker names in rabbitmq.conf and the node restarted, a fresh worker runs the job once."""
    # RabbitMQ < 3.12: the broker closes the channel at 2 s, whatever the consumer asked for; the
    # job runs to its end, and the worker exits (its supervisor starts it again) with the job queued
    assert wait_until(lambda: worker.p.poll() is not None, 30, every=0.5), worker.output()[-3000:]
    assert _runs(engine) == ["ok"] and _ready(node.url) == 1  # done, never acknowledged: it runs again
    line = re.search(r"set (consumer_timeout = \d+) in rabbitmq.conf", worker.output()).group(1)
    cut = [text for text in worker.output().splitlines() if "closed this worker's channel" in text]
    assert worker.p.returncode != 0 and len(cut) == 1 and "(2000 ms)" in cut[0] and f"set {line} " in cut[0]
    noisy = [text for text in worker.output().splitlines() if '"exception"' in text or "Traceback" in text]
    assert not noisy, noisy  # one line, no traceback
    node.stop()  # the node reads rabbitmq.conf at start
    node.config["consumer_timeout"] = int(line.split(" = ")[1])
    node.start()
    fixed = start_worker(env, tmp_path, queues="maintenance", name="fixed")
    try:
        assert wait_until(lambda: _runs(engine) == ["ok", "ok"], 30, every=0.5), fixed.output()[-3000:]
        assert fixed.p.poll() is None
        fixed.stop()  # closing the channel would put an unacknowledged delivery back
        assert "timed out" not in fixed.output() and _ready(node.url) == 0  # ran once more, acknowledged
    finally:
        fixed.kill()
    readme = (REPO / "README.md").read_text().split("### RabbitMQ as the broker", 1)[1].split("\n## ", 1)[0]
    assert f"\n{line}\n" in readme  # the line the worker names is the README's


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



def test_an_ack_after_the_broker_closed_the_connection_is_one_warning_without_its_traceback():
    """kombu's "Couldn't ack N" (logged with its traceback on the logger Celery's request acks through)
    when the broker had closed the connection, as RabbitMQ does past its consumer_timeout, becomes one
    warning saying the task runs again: the test above meets it when the machine is busy."""
    import logging
    import sys

    from amqp.exceptions import RecoverableConnectionError

    import worker.app  # noqa: F401 - attaches the filters

    logger = logging.getLogger("celery.worker.request")
    try:
        raise RecoverableConnectionError(None, "connection already closed", None, "")
    except RecoverableConnectionError as exc:
        record = logger.makeRecord(logger.name, logging.CRITICAL, __file__, 1, "Couldn't ack %r, reason:%r", (7, exc),
                                   sys.exc_info())
    assert all(f.filter(record) for f in logger.filters)
    assert record.getMessage().startswith("could not acknowledge delivery 7: the broker had closed the connection")
    assert record.exc_info is None and record.levelno == logging.WARNING
