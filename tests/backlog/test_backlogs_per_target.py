"""Every backlog of a pack runs once per target that enables it (config/targets.yaml): one beat entry
per (backlog, target), a run reprocesses its target's database only and is recorded under it, a bad
target is rejected in one line with nothing written; without targets.yaml, all as before."""

from __future__ import annotations

import json
import signal

import pytest
import sqlalchemy as sa
from celery import Celery

import tasks.backlog
from ops.devkit.process import start_worker
from tests.support.backlog import KEY, add_backlog
from tests.support.cli import run_cli
from tests.support.targets_jobs import count, pointed_at, write_config
from worker.backlog.spec import beat_entries, scheduled_jobs
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.errors import ArgumentError

PENDING = ("SELECT count(*) FROM registrations WHERE status = 'completed' AND payment_status = 'completed' "
           "AND confirmation_number IS NULL")


def test_each_backlog_is_scheduled_once_per_target_that_enables_its_pack(tmp_path, monkeypatch):
    for var in ("A_URL", "B_URL", "C_URL"):
        monkeypatch.setenv(var, f"postgresql://x/{var.lower()}")
    root = write_config(tmp_path / "config", {"a": ("A_URL", ["app"]), "b": ("B_URL", ["app"]),
                                              "c": ("C_URL", ["plain"])})
    cfg = load_config(root, packs=["fleet"])
    entries = beat_entries(cfg.scheduled_backlogs())
    assert set(entries) == {"backlog:confirmations@a", "backlog:confirmations@b"}  # c's packs do not name app
    assert entries["backlog:confirmations@a"]["kwargs"] == {"limit": 20000, "batch_size": 100, "target": "a"}
    assert entries["backlog:confirmations@a"]["options"] == {"queue": "backlog"}
    rows = scheduled_jobs(cfg.scheduled_backlogs())
    assert sorted((r["job"], r["target"]) for r in rows) == [("reprocess_confirmations", "a"),
                                                             ("reprocess_confirmations", "b")]


def test_without_targets_yaml_the_backlog_schedule_is_as_before(tmp_path):
    cfg = load_config(write_config(tmp_path / "config", None), packs=["fleet", "app"])
    entries = beat_entries(cfg.scheduled_backlogs())
    assert entries == beat_entries(cfg.backlogs.values())  # the call of before
    assert entries == {"backlog:confirmations": {"task": "backlog.reprocess_confirmations",
                                                 "schedule": entries["backlog:confirmations"]["schedule"],
                                                 "kwargs": {"limit": 20000, "batch_size": 100},
                                                 "options": {"queue": "backlog"}}}
    assert [(r["job"], r["target"]) for r in scheduled_jobs(cfg.scheduled_backlogs())] == [
        ("reprocess_confirmations", "")]


def test_flower_shows_the_target_in_a_runs_name():
    name = tasks.backlog.reprocess_confirmations.shadow_name
    assert name((), {"target": "a", "dry_run": True}, {}) == "backlog.reprocess_confirmations:dry_run@a"
    assert name((), {"limit": 5}, {}) == "backlog.reprocess_confirmations"  # as before targets
    assert tasks.backlog.resend_failed_emails.shadow_name((), {"target": "b"}, {}) == \
        "backlog.resend_failed_emails@b"


@pytest.fixture
def planted(two_targets, clean_fleet, sink):
    """30 backlog registrations in a, 20 in b; the fleet's job runs and the provider's emails forgotten."""
    sink.reset()
    for url, n in ((two_targets.urls["a"], 30), (two_targets.urls["b"], 20)):
        engine = create(url, pool_size=1)
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE registrations, confirmation_emails RESTART IDENTITY CASCADE"))
        add_backlog(engine, n)
        engine.dispose()
    with clean_fleet.begin() as conn:
        conn.execute(sa.text("DELETE FROM fleet.job_runs"))
    return two_targets


def job_runs(fleet) -> list[tuple]:
    with fleet.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT job, target, status, rows_affected FROM fleet.job_runs ORDER BY id"))]


@pytest.mark.parametrize("task", [tasks.backlog.reprocess_confirmations, tasks.backlog.resend_failed_emails],
                         ids=lambda t: t.name)
@pytest.mark.parametrize(("target", "needle"), [
    ("nope", "no target 'nope' (targets: a, b, c"),
    ("c", "does not run on target 'c' (it runs on: a, b)"),
    (None, "runs on 2 targets (a, b): name one with target"),
])
def test_a_bad_target_is_rejected_in_one_line_and_writes_nothing(planted, clean_fleet, env, sink, task, target,
                                                                 needle):
    with pointed_at({**planted.env, "DATABASE_URL": env["DATABASE_URL"], "RESEND_API_KEY": KEY,
                     "RESEND_API_URL": sink.resend_api_url}):
        with pytest.raises(ArgumentError) as err:
            task(**({"target": target} if target else {}))
    text = str(err.value)
    assert text.startswith(f"{task.name} rejected its arguments, nothing was done: target: ") and needle in text, text
    assert "\n" not in text
    assert job_runs(clean_fleet) == [] and sink.requests == []
    assert (count(planted.urls["a"], PENDING), count(planted.urls["b"], PENDING)) == (30, 20)


def test_a_backlog_planted_in_one_target_is_reprocessed_there_only_by_a_real_worker(planted, clean_fleet, env, sink,
                                                                                  redis_url, tmp_path):
    wenv = {**env, **planted.env, "RESEND_API_KEY": KEY, "RESEND_API_URL": sink.resend_api_url,
            "FROM_EMAIL": "confirm@example.com"}
    worker = start_worker(wenv, tmp_path, queues="backlog")
    client = Celery(broker=env["CELERY_BROKER_URL"], backend=redis_url)
    try:
        res = client.send_task("backlog.reprocess_confirmations", kwargs={"target": "a", "batch_size": 7},
                               queue="backlog")
        out = res.get(timeout=60)
        assert (out["status"], out["claimed"], out["sent"], out["target"]) == ("ok", 30, 30, "a")
        assert (count(planted.urls["a"], PENDING), count(planted.urls["b"], PENDING)) == (0, 20)  # b untouched
        assert len(sink.emails) == 30
        assert job_runs(clean_fleet) == [("reprocess_confirmations", "a", "ok", 30)]
        bad = client.send_task("backlog.reprocess_confirmations", kwargs={"target": "nope"}, queue="backlog")
        bad.get(timeout=60, propagate=False)
        assert bad.state == "FAILURE" and "target: no target 'nope'" in str(bad.result)
        assert "backlog_arguments_rejected" in worker.output()
        assert count(planted.urls["b"], PENDING) == 20 and len(sink.emails) == 30 and len(job_runs(clean_fleet)) == 1
    finally:
        worker.kill(signal.SIGKILL)
        client.close()


def test_the_cli_shows_and_reprocesses_one_targets_backlog(planted, clean_fleet, env, sink):
    e = {**env, **planted.env, "RESEND_API_KEY": KEY, "RESEND_API_URL": sink.resend_api_url,
         "FROM_EMAIL": "confirm@example.com"}
    status = run_cli(["backlog", "status", "--target", "b", "--json"], e)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pending_confirmations"] == 20 and json.loads(status.stdout)["target"] == "b"
    dry = run_cli(["backlog", "reprocess", "--target", "b", "--dry-run", "--json"], e)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["would_process"] == 20 and sink.requests == []
    done = run_cli(["backlog", "reprocess", "--target", "b"], e)
    assert done.returncode == 0, done.stderr
    assert (count(planted.urls["a"], PENDING), count(planted.urls["b"], PENDING)) == (30, 0)
    assert job_runs(clean_fleet) == [("reprocess_confirmations", "b", "dry_run", 0),
                                     ("reprocess_confirmations", "b", "ok", 20)]
    after = json.loads(run_cli(["backlog", "status", "--target", "b", "--json"], e).stdout)
    assert after["pending_confirmations"] == 0 and [r["target"] for r in after["last_runs"]] == ["b"]
    a = json.loads(run_cli(["backlog", "status", "--target", "a", "--json"], e).stdout)
    assert a["pending_confirmations"] == 30 and a["last_runs"] == []  # b's runs are b's
    for args, needle in ((["status", "--target", "nope"], "--target: no target 'nope'"),
                         (["reprocess", "--target", "c"], "does not run on target 'c'"),
                         (["status"], "runs on 2 targets (a, b): name one with target")):
        bad = run_cli(["backlog", *args], e)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
