"""Every task checks its `celery call` arguments before doing anything (an unknown or missing name, a
bad value: one message naming each, with what the task accepts and the closest known name), and a
service that stops answering fails a task in one line while the worker stays up."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

import tasks.actions  # noqa: F401 - registers maintenance.action
import tasks.backlog
import tasks.checks
import tasks.digest
import tasks.heartbeat  # noqa: F401 - registers notify.heartbeat
import tasks.maintenance
import tasks.notify
import tasks.reports  # noqa: F401 - registers digest.weekly_report and digest.monthly_growth
from ops.devkit.process import CELERY, start_worker, wait_until
from ops.devkit.servers import PostgresServer
from tests.support import REPO
from worker.fleet.errors import ArgumentError
from worker.fleet.migrate import upgrade

CALLS = [
    (tasks.checks.run, {"nmae": "confirmation_backlog"},
     ["unknown argument 'nmae' (did you mean 'name'?)", "missing argument 'name'", "Accepted arguments: name ("]),
    (tasks.checks.run, {"name": "confirmaton_backlog"}, ["name='confirmaton_backlog' is not known (did you mean "
                                                        "'confirmation_backlog'?)"]),
    (tasks.checks.run, {"name": "confirmation_backlog", "at": "yesterday"},
     ["at='yesterday' is not an ISO 8601 instant with a timezone"]),
    (tasks.checks.run, {"name": "confirmation_backlog", "slot": "2026-11-23T10:00:00"},
     ["slot='2026-11-23T10:00:00' is not an ISO 8601 instant with a timezone"]),
    (tasks.maintenance.run, {"jbo": "archive_webhook_logs"}, ["unknown argument 'jbo' (did you mean 'job'?)",
                                                             "missing argument 'job'"]),
    (tasks.maintenance.run, {"job": "archive_webhook_log"}, ["job='archive_webhook_log' is not known (did you mean "
                                                             "'archive_webhook_logs'?)"]),
    (tasks.notify.deliver, {"notification_id": "42"}, ["notification_id='42' is not a UUID"]),
    (tasks.notify.deliver, {"id": "x"}, ["unknown argument 'id'", "missing argument 'notification_id'"]),
    (tasks.notify.sweep, {"limit": "all"}, ["limit='all' is invalid", "Accepted arguments: limit ("]),
    (tasks.notify.sweep, {"limt": 5}, ["unknown argument 'limt' (did you mean 'limit'?)"]),
    (tasks.digest.daily_summary, {"channel": "email"}, ["unknown argument 'channel'", "Accepted arguments: none"]),
    (tasks.backlog.reprocess_confirmations, {"limt": 1000}, ["unknown argument 'limt'", "Accepted arguments: limit"]),
    (tasks.backlog.resend_failed_emails, {"max_attempts": 0}, ["max_attempts=0 is invalid"]),
]


@pytest.mark.parametrize(("fn", "kwargs", "needles"), CALLS, ids=[f"{c[0].name}-{i}" for i, c in enumerate(CALLS)])
def test_every_task_rejects_bad_arguments_before_doing_anything(fn, kwargs, needles):
    with pytest.raises(ArgumentError) as err:
        fn(**kwargs)
    text = str(err.value)
    assert text.startswith(f"{fn.name} rejected its arguments, nothing was done: "), text
    for n in needles:
        assert n in text, text
    assert "\n" not in text


def test_every_known_task_is_registered_with_the_argument_check():
    from worker.app import EXPECTED, app
    from worker.fleet.names import KNOWN_TASKS

    for name in KNOWN_TASKS:
        t = app.tasks[name]
        assert t.throws == EXPECTED, name
        assert getattr(t.run, "__wrapped__", None) is not None, f"{name} is not made by worker.app.task"


def test_celery_call_with_a_misspelt_argument_is_one_line_in_the_worker_and_a_failure(broker_env, app_db_url,
                                                                                      tmp_path, redis_url):
    env = {**broker_env, "DATABASE_URL": app_db_url}
    worker = start_worker(env, tmp_path, queues="checks,maintenance")
    client = Celery(broker=env["CELERY_BROKER_URL"], backend=redis_url)
    try:
        call = subprocess.run([*CELERY, "call", "checks.run", "--kwargs", '{"nmae": "confirmation_backlog"}'],
                              env=env, capture_output=True, text=True, timeout=60, cwd=REPO)  # noqa: S603
        assert call.returncode == 0, call.stderr
        result = client.AsyncResult(call.stdout.strip())
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE" and "unknown argument 'nmae'" in str(result.result)
        bad_job = client.send_task("maintenance.run", kwargs={"job": "archive_webhook_log"}, queue="maintenance")
        bad_job.get(timeout=30, propagate=False)
        assert "did you mean 'archive_webhook_logs'" in str(bad_job.result)
        assert worker.wait_for("rejected its arguments", 10)
        # a call by name (as `celery call` sends it: no shadow header) is announced under the name beat's
        # calls carry: Flower's task-received event and the worker's log line
        received: list[str] = []
        with client.connection_for_read() as conn:
            recv = client.events.Receiver(conn, handlers={"task-received": lambda e: received.append(e["name"])})
            threading.Thread(target=lambda: recv.capture(limit=None, timeout=None, wakeup=False), daemon=True).start()
            for _ in range(10):  # the receiver's subscription starts with its first read: send until it hears
                client.send_task("checks.run", kwargs={"name": "confirmation_backlog"}, queue="checks")
                if wait_until(lambda: "checks.run:confirmation_backlog" in received, 2):
                    break
            recv.should_stop = True
        assert "checks.run:confirmation_backlog" in received, received
        assert worker.wait_for("Task checks.run:confirmation_backlog[", 30), worker.output()[-3000:]
        assert "checks.run:None" not in worker.output()
        time.sleep(0.5)
        out = worker.output()
        assert "Traceback" not in out, out[-3000:]
        assert out.count("checks.run rejected its arguments") <= 2, out[-6000:]  # our line, and Celery's "raised expected"
        assert worker.p.poll() is None
    finally:
        client.close()
        worker.stop()


@pytest.mark.slow
def test_a_database_that_goes_away_fails_tasks_in_one_line_and_the_worker_stays_up(broker_env, tmp_path, redis_url,
                                                                                    run_dir):
    """A throwaway Postgres, stopped under a running worker: each check run fails with one line, no
    traceback; started again, the next run works. About 15 s (the server's own start and stop)."""
    server = PostgresServer(run_dir / f"pg-{tmp_path.name}").start()  # not under /tmp/pytest-of-root (tests/checks/conftest)
    try:
        upgrade(server.url)
        engine = sa.create_engine(server.url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.pool.NullPool)
        cfg = tmp_path / "config"
        (cfg / "checks").mkdir(parents=True)
        (cfg / "checks" / "one.yaml").write_text(
            "checks:\n  - name: one\n    description: a check of the test's own\n    schedule: 1m\n"
            "    query: SELECT 1 AS value\n    condition: '> 5'\n    severity: info\n    summary: one\n")
        env = {**broker_env, "DATABASE_URL": server.url, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": ""}
        worker = start_worker(env, tmp_path, queues="checks")
        client = Celery(broker=env["CELERY_BROKER_URL"], backend=redis_url)
        try:
            def slot(i: int) -> str:  # a slot per call: one evaluation per slot would skip a second one
                return (datetime.now(UTC) - timedelta(minutes=i)).replace(second=0, microsecond=0).isoformat()

            ok = client.send_task("checks.run", kwargs={"name": "one", "slot": slot(1)}, queue="checks")
            assert ok.get(timeout=30)["status"] == "ok"
            server.stop()
            failures = []
            for i in range(2):
                r = client.send_task("checks.run", kwargs={"name": "one", "slot": slot(2 + i)}, queue="checks")
                r.get(timeout=60, propagate=False)
                failures.append(r)
            assert all(r.state == "FAILURE" for r in failures)
            assert all("a service did not answer" in str(r.result) for r in failures), [str(r.result) for r in failures]
            out = worker.output()
            assert "Traceback" not in out and worker.p.poll() is None, out[-3000:]
            assert len([line for line in out.splitlines() if '"task_failed"' in line]) == 2
            server.start()
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            again = client.send_task("checks.run", kwargs={"name": "one", "slot": slot(4)}, queue="checks")
            assert again.get(timeout=60)["status"] == "ok"
        finally:
            client.close()
            worker.stop()
            engine.dispose()
    finally:
        server.stop()


@pytest.mark.parametrize("task", [tasks.backlog.resend_failed_emails, tasks.backlog.reprocess_confirmations])
def test_a_scheduled_backlog_run_without_an_email_channel_is_skipped_with_one_warning(task, monkeypatch, capsys):
    from worker.fleet.logs import configure_logging
    from worker.fleet.settings import reload_settings

    monkeypatch.delenv("RESEND_API_KEY", raising=False)
    monkeypatch.setenv("LOG_FORMAT", "json")
    reload_settings()
    configure_logging(force=True)
    try:
        result = task()  # what beat sends: the config's kwargs, here none
    finally:
        monkeypatch.undo()
        reload_settings()
    assert result["status"] == "skipped" and "RESEND_API_KEY" in result["error"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("event") == "backlog_skipped"]
    assert len(warned) == 1 and warned[0]["level"] == "warning" and "RESEND_API_KEY is not set" in warned[0]["reason"]
    assert not any("Traceback" in json.dumps(line) for line in lines)


def test_flower_and_the_logs_name_a_task_by_what_it_is_about(redis_url, redis_client):
    from kombu import Connection

    from worker.app import app
    from worker.beat import build_schedule
    from worker.config import load_config

    assert app.tasks["checks.run"].shadow_name((), {"name": "confirmation_backlog"}, {}) == \
        "checks.run:confirmation_backlog"
    assert app.tasks["maintenance.run"].shadow_name((), {"job": "archive_webhook_logs"}, {}) == \
        "maintenance.run:archive_webhook_logs"
    assert app.tasks["backlog.reprocess_confirmations"].shadow_name((), {"dry_run": True}, {}) == \
        "backlog.reprocess_confirmations:dry_run"
    # what beat sends goes through apply_async, which puts the name in the message's `shadow` header
    assert app.tasks["checks.run_batch"].shadow_name((), {"names": ["a", "b"], "target": "orders"}, {}) == \
        "checks.run_batch:2 checks@orders"
    entry = next(e for e in build_schedule(load_config(REPO / "config", packs="all")).values()
                 if "confirmation_backlog" in e["kwargs"].get("names", []))  # a batch: its schedule's checks
    with Connection(redis_url) as conn:
        app.tasks[entry["task"]].apply_async(kwargs=entry["kwargs"], connection=conn, **entry["options"])
    message = json.loads(redis_client.lpop("checks"))
    assert message["headers"]["shadow"] == f"checks.run_batch:{len(entry['kwargs']['names'])} checks"
