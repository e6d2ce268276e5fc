"""`opsfleet silence`, `opsfleet notify test` and the daily digest, end to end against the sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.sink import Reply
from tests.support.cli import run_cli


def test_silence_add_list_expire(cli_env, fleet):
    add = run_cli(["silence", "add", "--check", "confirmation_backlog", "--label", "system=confirmations",
                   "--for", "2h", "--comment", "backfill running"], cli_env)
    assert add.returncode == 0, add.stderr
    sid = add.stdout.split()[1]
    listed = run_cli(["silence", "list"], cli_env)
    assert "confirmation_backlog" in listed.stdout and "backfill running" in listed.stdout
    assert run_cli(["silence", "expire", sid], cli_env).returncode == 0
    assert "confirmation_backlog" not in run_cli(["silence", "list"], cli_env).stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--check", "no_such_check", "--comment", "x"], "unknown check 'no_such_check'"),
    (["--check", "confirmation_backlog"], "needs a comment"),
    (["--label", "nokey", "--comment", "x"], "use key=value"),
    (["--check", "confirmation_backlog", "--for", "forever", "--comment", "x"], "not a duration"),
])
def test_bad_silence_arguments_are_one_line(cli_env, fleet, args, needle):
    proc = run_cli(["silence", "add", *args], cli_env)
    assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_notify_test_sends_through_every_channel_and_reports_the_answer(cli_env, sink, fleet):
    from ops import sample_app

    sample_app.init(fleet)
    proc = run_cli(["notify", "test"], cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(sink.emails) == 1 and sink.emails[0]["subject"].startswith("[TEST]")
    assert len(sink.slack_messages) == 1
    assert "Test Alert" in sink.emails[0]["subject"]
    assert proc.stdout.count("sent") == 3  # email, slack, dashboard


def test_notify_test_reports_a_refusal(cli_env, sink, fleet):
    sink.script("resend.emails", [Reply(422)])
    proc = run_cli(["notify", "test", "--channel", "email"], cli_env)
    assert proc.returncode == 1
    assert "dead" in proc.stdout and "Traceback" not in proc.stderr


def test_digest_reports_history_info_alerts_and_what_was_held_back(fleet, sink):
    from worker.fleet.settings import Settings
    from worker.notify import digest
    from worker.notify.delivery import deliver
    from worker.notify.outbox import count_held_back
    from worker.notify.routing import Routing

    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with fleet.begin() as conn:
        conn.execute(sa.text("""INSERT INTO fleet.alerts (fingerprint, check_name, severity, state, since, last_eval_at,
                                summary) VALUES ('fp1', 'database_size', 'info', 'firing', :t, :t, '<b>9 GB</b>')"""),
                     {"t": now - timedelta(hours=2)})
        conn.execute(sa.text("""INSERT INTO fleet.alert_events (fingerprint, check_name, severity, from_state, to_state,
                                value, at) VALUES ('fp1', 'database_size', 'info', 'inactive', 'firing', 9.2, :t),
                                ('fp1', 'database_size', 'info', 'firing', 'resolved', 7, :old)"""),
                     {"t": now - timedelta(hours=2), "old": now - timedelta(days=3)})
        count_held_back(conn, "deduplicated", "slack", "x", now, 7)
        count_held_back(conn, "silenced", "email", "x", now, 2)
    data = digest.collect(fleet, None, now)
    assert len(data["history"]) == 1 and len(data["info"]) == 1
    assert data["held"] == {"deduplicated": 7, "silenced": 2}
    nid = digest.enqueue(fleet, None, "email", now)
    assert digest.enqueue(fleet, None, "email", now) is None  # one per day
    routing = Routing.model_validate({"channels": {"email": {"kind": "email"}}, "routes": []})
    settings = Settings(resend_api_key="re_test_key_0123456789", resend_api_url=sink.resend_api_url,
                        alert_email_recipients="ops@example.com")
    assert deliver(nid, fleet=fleet, settings=settings, routing=routing, now=now).status == "sent"
    mail = sink.emails[0]
    assert "daily digest" in mail["subject"]
    assert "&lt;b&gt;9 GB&lt;/b&gt;" in mail["html"] and "<b>9 GB</b>" not in mail["html"]
    assert "deduplicated 7" in mail["text"] and "silenced 2" in mail["text"]
