"""A task or a command that names what a disabled pack has (its check, its maintenance job, its backlog)
is refused in one line naming the pack and how to enable it, before anything is written: not run
against a database that lacks the pack's tables (`relation "registrations" does not exist` and a
traceback, as it was)."""

from __future__ import annotations

import subprocess

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import CELERY, start_worker
from tests.support import REPO
from tests.support.cli import run_cli

# the shipped config/ with its default packs (postgres, fleet): confirmations is off
PACKS = "postgres,fleet"
CALLS = [
    ("backlog.reprocess_confirmations", {"limit": 10}, "backlog reprocess_confirmations"),
    ("backlog.resend_failed_emails", {"limit": 10}, "backlog resend_failed_emails"),
    ("maintenance.run", {"job": "archive_webhook_logs"}, "maintenance job archive_webhook_logs"),
    ("checks.run", {"name": "confirmation_backlog"}, "check confirmation_backlog"),
    ("checks.run_batch", {"names": ["database_up", "confirmation_backlog"]}, "check confirmation_backlog"),
]


def _names_the_pack(text: str, what: str) -> bool:
    return (f"{what} belongs to pack confirmations, which is not enabled" in text and "OPSFLEET_PACKS=confirmations"
            in text and "targets.yaml" in text)


def _written(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM fleet.{t}")).scalar()  # noqa: S608 - our names
                for t in ("check_runs", "job_runs", "notifications")}


@pytest.mark.slow  # about 12 s: a worker starts, `celery call` runs as a process, six tasks fail
def test_a_task_of_a_disabled_pack_is_refused_in_one_line_by_a_real_worker(env, fleet, tmp_path, redis_url):
    # an email channel configured, so a backlog run would reach the application's tables (it is skipped without)
    wenv = {**env, "OPSFLEET_PACKS": PACKS, "RESEND_API_KEY": "re_test_never_used", "RESEND_API_URL": "http://127.0.0.1:9",
            "FROM_EMAIL": "ops@example.com"}
    worker = start_worker(wenv, tmp_path, queues="checks,maintenance,backlog")
    client = Celery(broker=wenv["CELERY_BROKER_URL"], backend=redis_url)
    try:
        # as the operator did: `celery call`, which prints the task's id
        call = subprocess.run([*CELERY, "call", "backlog.reprocess_confirmations", "--kwargs", '{"limit": 1000}'],  # noqa: S603
                              env=wenv, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert call.returncode == 0, call.stderr
        results = [(client.AsyncResult(call.stdout.strip()), "backlog reprocess_confirmations")]
        results += [(client.send_task(name, kwargs=kwargs, queue=name.split(".")[0]), what)
                    for name, kwargs, what in CALLS]
        for r, what in results:
            r.get(timeout=60, propagate=False)
            assert r.state == "FAILURE" and _names_the_pack(str(r.result), what), (r.state, str(r.result))
            assert "\n" not in str(r.result)
        out = worker.output()
        assert "Traceback" not in out and "does not exist" not in out, out[-4000:]
        assert out.count("belongs to pack confirmations") >= len(results), out[-4000:]
        assert worker.p.poll() is None
    finally:
        client.close()
        worker.stop()
    assert _written(fleet) == {"check_runs": 0, "job_runs": 0, "notifications": 0}  # database_up of the batch too


@pytest.mark.parametrize(("args", "what"), [
    (["backlog", "reprocess", "--limit", "10", "--dry-run"], "backlog reprocess_confirmations"),
    (["maintenance", "run", "archive_webhook_logs"], "maintenance job archive_webhook_logs"),
    (["checks", "run", "confirmation_backlog"], "check confirmation_backlog"),
])
def test_the_cli_refuses_a_disabled_packs_command_in_one_line(args, what, env, fleet):
    out = run_cli(args, {**env, "OPSFLEET_PACKS": PACKS})
    assert out.returncode == 2, out.stdout + out.stderr
    assert _names_the_pack(out.stderr, what) and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and "does not exist" not in out.stderr
    assert _written(fleet) == {"check_runs": 0, "job_runs": 0, "notifications": 0}


def test_a_name_no_pack_has_is_still_unknown_and_an_enabled_packs_name_is_not_refused():
    from worker.config import load_config

    cfg = load_config(REPO / "config", packs=PACKS)
    assert cfg.pack_off("check", "no_such_check") is None
    assert cfg.pack_off("check", "database_up") is None  # the postgres pack's, enabled
    assert cfg.pack_off("job", "archive_webhook_logs")
    on = load_config(REPO / "config", packs="postgres,fleet,confirmations")
    assert on.pack_off("backlog", "reprocess_confirmations") is None
    assert on.pack_off("job", "archive_webhook_logs") is None
