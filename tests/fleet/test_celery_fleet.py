"""The Celery plumbing, with real workers and beats on a real Redis."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis

from ops.devkit.process import CELERY, start_beat, start_worker
from tests.support import REPO
from worker.app import app
from worker.fleet.names import QUEUES, VISIBILITY_TIMEOUT


def test_every_task_is_routed_to_its_family_queue():
    import importlib

    from worker.fleet.names import KNOWN_TASKS, TASK_MODULES

    for module in TASK_MODULES:
        importlib.import_module(module)

    for name in KNOWN_TASKS:
        t = app.tasks[name]
        family = name.split(".")[0]
        assert app.amqp.router.route({}, name)["queue"].name == family
        assert t.time_limit == QUEUES[family]["time_limit"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    # the configured app's Redis option, not a constant (tests/reliability/test_promise_redelivery.py: end to end)
    assert app.conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT > \
        max(q["time_limit"] for q in QUEUES.values())
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]


def test_task_decorator_rejects_a_typo_in_options():
    from worker.app import task

    with pytest.raises(TypeError, match="ignore_results"):
        task("checks.run", ignore_results=True)


def test_running_worker_answers_inspect_ping(broker_env, tmp_path, app_db_url):
    env = broker_env
    worker = start_worker({**env, "DATABASE_URL": app_db_url}, tmp_path)  # the application's tables: jobs check out
    try:
        proc = subprocess.run([*CELERY, "inspect", "ping", "--timeout", "5", "--json"], env=env, cwd=REPO,  # noqa: S603
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        replies = json.loads(proc.stdout.strip().splitlines()[-1])
        assert any(v == {"ok": "pong"} for v in replies.values()), proc.stdout
    finally:
        worker.stop()


def test_two_beats_one_schedules_the_other_waits(broker_env, tmp_path, redis_url):
    env = broker_env
    client = redis.Redis.from_url(redis_url)
    client.delete("opsfleet:redbeat::lock")
    beat_env = {**env}
    first = start_beat(beat_env, tmp_path, "beat1")
    second = None
    try:
        assert first.wait_for("beat: Acquired lock", 60), first.output()[-3000:]
        second = start_beat(beat_env, tmp_path, "beat2")
        assert second.wait_for("beat: Starting...", 60), second.output()[-3000:]
        time.sleep(6)  # several beat ticks: the standby must not have acquired the lock
        assert "beat: Acquired lock" not in second.output()
        # the leader schedules: the sweeper (every 30 s) and every check are in RedBeat
        keys = {k.decode() for k in client.zrange("opsfleet:redbeat::schedule", 0, -1)}
        assert "opsfleet:redbeat:notify:sweep" in keys, keys
        assert [k for k in keys if k.startswith("opsfleet:redbeat:checks[")], keys  # the checks, in batches
        # the leader dying without releasing and the standby taking over within 35 s (the 30 s lock
        # timeout and one 5 s poll): tests/reliability/test_promise_beat_takeover.py (the lock is
        # RedBeat's in Redis whatever the broker, so it is not waited out twice more here)
    finally:
        first.kill()
        if second:
            second.kill()
