"""A CLI that fits people's habits: every list takes --json with stable field names and never cuts a
name or an id when stdout is not a terminal; results on stdout, log lines on stderr (WARNING and
above unless -v); silence ids by a unique prefix; `task show` for what `celery call` sent; the
README's Flower lines work as pasted; the demo's captured messages can be read whole."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.process import CELERY, start_worker
from ops.devkit.servers import port_open
from tests.support import REPO
from tests.support.cli import run_cli


def _json(args: list[str], env: dict[str, str]):
    proc = run_cli([*args, "--json"], env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_list_takes_json_with_its_documented_fields(env, fleet):
    from worker.cli.checks import ALERT_FIELDS, CHECK_FIELDS, HISTORY_FIELDS
    from worker.cli.jobs import JOB_FIELDS
    from worker.cli.notify import SILENCE_FIELDS
    from worker.config import load_config
    from worker.notify import history as history_fields

    now = datetime.now(UTC)
    with fleet.begin() as conn:
        conn.execute(sa.text("""INSERT INTO fleet.alerts (fingerprint, check_name, labels, severity, state, since,
                                last_eval_at, summary) VALUES ('fp1', 'confirmation_backlog', '{"k": "v"}', 'warning',
                                'firing', :now, :now, 'a summary')"""), {"now": now})
        conn.execute(sa.text("""INSERT INTO fleet.alert_events (fingerprint, check_name, labels, severity, from_state,
                                to_state, value, at) VALUES ('fp1', 'confirmation_backlog', '{"k": "v"}', 'warning',
                                'pending', 'firing', 42, :now)"""), {"now": now})
    checks = _json(["checks", "list"], env)
    assert len(checks) == len(load_config(REPO / "config", packs="all").checks) and all(list(c) == list(CHECK_FIELDS) for c in checks)
    assert next(c for c in checks if c["name"] == "confirmation_backlog")["states"] == ["firing"]
    alerts = _json(["alerts", "list"], env)
    assert [list(a) for a in alerts] == [list(ALERT_FIELDS)] and alerts[0]["labels"] == {"k": "v"}
    history = _json(["alerts", "history", "--since", "1h"], env)
    assert list(history) == ["entries", "sent", "held_back"]
    assert [list(e) for e in history["entries"]] == [list(HISTORY_FIELDS)] and history["entries"][0]["what"] == "pending -> firing"
    assert list(HISTORY_FIELDS) == list(history_fields.FIELDS)
    assert _json(["silence", "list"], env) == []
    jobs = _json(["maintenance", "list"], env)
    assert len(jobs) == 7 and all(list(j) == list(JOB_FIELDS) for j in jobs)
    assert list(SILENCE_FIELDS) == ["id", "check", "labels", "starts_at", "ends_at", "author", "comment"]


def test_a_disabled_check_is_shown_as_such_and_nothing_is_cut_in_a_pipe(env, tmp_path):
    (tmp_path / "checks").mkdir()
    long_name = "a_check_whose_name_is_long_enough_to_be_cut_in_eighty_columns"
    (tmp_path / "checks" / "mine.yaml").write_text(
        f"checks:\n  - name: {long_name}\n    description: d\n    schedule: 1m\n    query: SELECT 1 AS value\n"
        "    condition: '> 5'\n    severity: info\n    summary: s\n    enabled: false\n")
    proc = run_cli(["checks", "list"], {**env, "OPSFLEET_CONFIG_DIR": str(tmp_path), "OPSFLEET_PACKS": ""})
    assert proc.returncode == 0, proc.stderr
    assert f"{long_name} (disabled)" in proc.stdout and "…" not in proc.stdout
    assert _json(["checks", "list"], {**env, "OPSFLEET_CONFIG_DIR": str(tmp_path), "OPSFLEET_PACKS": ""})[0]["enabled"] is False


def test_silence_ids_by_a_unique_prefix(env, fleet):
    add = run_cli(["silence", "add", "--check", "confirmation_backlog", "--for", "1h", "--comment", "backfill"], env)
    assert add.returncode == 0, add.stderr
    sid = re.search(r"silence ([0-9a-f-]{36})", add.stdout).group(1)
    listed = run_cli(["silence", "list"], env)
    assert sid in listed.stdout  # whole, though stdout is a pipe
    wrong = run_cli(["silence", "expire", "ffffffff"], env)
    assert wrong.returncode == 2 and "no active silence ffffffff" in wrong.stderr
    done = run_cli(["silence", "expire", sid[:8]], env)
    assert done.returncode == 0 and f"silence {sid} expired" in done.stdout, done.stderr
    with fleet.connect() as conn:
        assert conn.execute(sa.text("SELECT ends_at <= now() FROM fleet.silences WHERE id = :i"), {"i": sid}).scalar()


def test_logs_go_to_stderr_only_from_warning_unless_verbose(env, fleet, app_db_url):
    quiet = run_cli(["backlog", "status"], {**env, "DATABASE_URL": app_db_url})
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = run_cli(["-v", "notify", "test", "--channel", "slack"], {**env, "LOG_FORMAT": "json"})
    assert any(json.loads(line).get("level") == "info" for line in loud.stderr.splitlines() if line.startswith("{"))
    assert "notification_sending" not in loud.stdout  # log lines never land on stdout


def test_backlog_dry_run_prints_a_readable_summary(env, app_db_url):
    proc = run_cli(["backlog", "reprocess", "--dry-run"], {**env, "DATABASE_URL": app_db_url})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dry run, nothing written: 0 registration(s) would get a confirmation number")
    assert "{" not in proc.stdout and "backlog_dry_run" not in proc.stderr


def test_task_show_reports_what_celery_call_sent(env, app_db_url, tmp_path):
    e = {**env, "DATABASE_URL": app_db_url}
    worker = start_worker(e, tmp_path, queues="checks")
    try:
        slot = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0).isoformat()
        call = subprocess.run([*CELERY, "call", "checks.run", "--kwargs", json.dumps({"name": "database_up", "slot": slot})],
                              env=e, capture_output=True, text=True, timeout=60, cwd=REPO)  # noqa: S603
        task_id = call.stdout.strip()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = json.loads(run_cli(["task", "show", task_id, "--json"], e).stdout)
            if shown["state"] == "SUCCESS":
                break
            time.sleep(0.5)
        assert shown["state"] == "SUCCESS" and shown["name"] == "checks.run" and shown["result"]["status"] in ("ok", "no_data")
        bad = subprocess.run([*CELERY, "call", "checks.run", "--kwargs", '{"nmae": "x"}'], env=e, capture_output=True,
                             text=True, timeout=60, cwd=REPO)  # noqa: S603
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            failed = run_cli(["task", "show", bad.stdout.strip()], e)
            if failed.returncode == 1:
                break
            time.sleep(0.5)
        assert failed.returncode == 1 and "unknown argument 'nmae'" in failed.stdout
        unknown = run_cli(["task", "show", "00000000-0000-0000-0000-000000000000"], e)
        assert unknown.returncode == 0 and "PENDING: not started, or unknown" in unknown.stdout
    finally:
        worker.stop()


def test_the_readmes_flower_lines_work_as_pasted(env, tmp_path):
    if port_open("127.0.0.1", 5555):
        pytest.skip("port 5555 is taken here (the README's Flower line listens there)")
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Flower", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()
    assert block.splitlines()[0].startswith("export FLOWER_BASIC_AUTH=")
    import os
    import sys

    # as pasted into a shell where opsfleet is installed (its venv active): `celery` on PATH
    shell = {**env, "PATH": f"{os.path.dirname(sys.executable)}:{env.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.Popen(["bash", "-c", block], env=shell, cwd=REPO, stdout=subprocess.DEVNULL,  # noqa: S603 S607
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 45
        while not port_open("127.0.0.1", 5555) and time.monotonic() < deadline:
            time.sleep(0.3)
        user, password = block.splitlines()[0].split("=", 1)[1].split(":", 1)

        def status(auth: tuple[str, str] | None) -> int:
            req = urllib.request.Request("http://127.0.0.1:5555/api/workers")
            if auth:
                import base64

                req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status(None) == 401 and status((user, "wrong")) == 401
        assert status((user, password)) == 200
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def test_demo_show_prints_a_captured_message_whole(env, tmp_path):
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    body = "An alert body long enough that no table would show it whole: " + "word " * 40
    (run_dir / "captured.jsonl").write_text(
        json.dumps({"type": "email", "from": "opsfleet <a@example.com>", "to": ["ops@example.com"],
                    "subject": "[CRITICAL] something", "text": body}) + "\n"
        + json.dumps({"type": "slack", "channel": None, "text": "fallback", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*a slack alert*"}}]}) + "\n")
    first = run_cli(["demo-show", "1", "--run-dir", str(run_dir)], env)
    assert first.returncode == 0 and "subject: [CRITICAL] something" in first.stdout and body.strip() in first.stdout
    last = run_cli(["demo-show", "--run-dir", str(run_dir)], env)
    assert "slack 2 of 2" in last.stdout and "*a slack alert*" in last.stdout
    out_of_range = run_cli(["demo-show", "3", "--run-dir", str(run_dir)], env)
    assert out_of_range.returncode == 2 and "the demo captured 2 (1 to 2)" in out_of_range.stderr
    assert shutil.which("bash")


def test_task_show_prints_a_large_result_as_readable_lines_and_json_whole(env, redis_url):
    """A progress-reporting task's result holds thousands of characters: `task show` prints field: value
    lines (not a table as wide as the result), the result cut with the way to see it whole."""
    import uuid

    from celery import Celery

    task_id = str(uuid.uuid4())
    result = {"status": "ok", "rows": [{"id": i, "email": f"user{i}@example.com", "note": "x" * 40} for i in range(200)]}
    backend = Celery(backend=redis_url, result_serializer="json", result_extended=True).backend
    backend.store_result(task_id, result, "SUCCESS")
    e = {**env, "CELERY_RESULT_BACKEND": redis_url}
    shown = run_cli(["task", "show", task_id], e)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"task {task_id}" and lines[1] == "state:     SUCCESS", lines[:3]
    assert max(len(line) for line in lines) < 500, [len(line) for line in lines]
    [cut] = [line for line in lines if line.startswith("result:")]
    assert cut.startswith('result:    {"status": "ok", "rows": [{"id": 0, "email": "user0@example.com"')
    assert f"characters; `opsfleet task show {task_id} --json` has it all)" in cut
    assert json.loads(run_cli(["task", "show", task_id, "--json"], e).stdout)["result"] == result
