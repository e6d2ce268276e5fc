"""Issue 23's promise, end to end with a real worker: a session idle in a transaction fires a check
that proposes terminate_session; its Slack message carries an Approve button; the approval, POSTed as
Slack signs it, is answered at once and a maintenance worker ends the session, once (the same payload
posted twice runs it once); the next run resolves the alert. An unsigned, wrongly signed, replayed
(older than 5 minutes) or foreign-workspace payload changes nothing. An email's link shows the action
and approves it on a POST, once."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from ops.devkit.process import start_worker, wait_until
from ops.devkit.sink.slack import signed_interaction
from tests.support.actions import AUTH, SIGNING_SECRET
from worker.actions import store
from worker.checks.engine import run_check
from worker.notify.delivery import deliver


def http(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None, auth: bool = False):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def victim(url: str) -> psycopg.Connection:
    """A session of the application `victim`, idle in a transaction."""
    conn = psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=True, application_name="victim")
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    return conn


def alive(engine: sa.Engine, pid: int) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first() is not None


def fire(served, monitored_engine, settings, at: datetime):
    check = served["cfg"].checks["idle_victim"]
    outcome = run_check(check, monitored=monitored_engine, fleet=served["fleet"], now=at, routing=served["cfg"].routing,
                        slot=at)
    for nid in outcome.notification_ids:
        deliver(nid, fleet=served["fleet"], settings=settings, routing=served["cfg"].routing, now=at)
    return outcome


@contextlib.contextmanager
def idle_alert(served, settings, monitored_engine, monitored):
    """A session of `victim` idle in a transaction, its alert fired and its notices delivered: (the
    session, the alert's fingerprint, the evaluation's time); the session is closed after."""
    idle = victim(monitored)
    try:
        time.sleep(1.2)
        at = datetime.now(UTC) + timedelta(seconds=1)
        outcome = fire(served, monitored_engine, settings, at)
        yield idle, next(t.fingerprint for t in outcome.transitions if t.labels["pid"] == str(idle.info.backend_pid)), at
    finally:
        idle.close()


def action_row(served, action_id: str):
    with served["fleet"].connect() as conn:
        return store.get(conn, action_id)


@pytest.mark.slow  # about 10 s: a maintenance worker starts, two actions run through it
def test_approved_from_slack_and_from_an_email_link_each_runs_once_and_ends_the_session(
        served, settings, monitored_engine, monitored, sink, env, tmp_path):
    worker = start_worker({**env, "DATABASE_URL": monitored, "FLEET_DATABASE_URL": settings.fleet_database_url,
                           "OPSFLEET_CONFIG_DIR": str(served["cfg"].root), "OPSFLEET_PACKS": ""},
                          tmp_path, queues="maintenance")
    first, second = victim(monitored), victim(monitored)
    try:
        time.sleep(1.2)
        at = datetime.now(UTC) + timedelta(seconds=1)
        outcome = fire(served, monitored_engine, settings, at)
        by_pid = {t.labels["pid"]: t for t in outcome.transitions}
        assert {str(first.info.backend_pid), str(second.info.backend_pid)} <= set(by_pid)

        # the Slack message of the first session carries its Approve button: its value is the action's id
        message = next(m for m in sink.slack_messages if f"pid {first.info.backend_pid} " in json.dumps(m))
        button = next(e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                      if f"terminate pid {first.info.backend_pid} " in e["text"]["text"])
        action_id = button["value"]
        assert button["text"]["text"].startswith(f"Approve: terminate pid {first.info.backend_pid} (app=victim")

        # payloads that do not prove themselves change nothing
        body, headers = signed_interaction(SIGNING_SECRET, value=action_id, action_id=button["action_id"],
                                           response_url=sink.slack_response_url)
        bad = [({**headers, "X-Slack-Signature": "v0=" + "0" * 64}, body, 401),
               ({k: v for k, v in headers.items() if not k.startswith("X-Slack")}, body, 401),
               (*reversed(signed_interaction(SIGNING_SECRET, value=action_id, action_id=button["action_id"],
                                             timestamp=int(time.time()) - 400)), 401),
               (*reversed(signed_interaction(SIGNING_SECRET, value=action_id, action_id=button["action_id"],
                                             team="T99999999")), 403)]
        for h, b, status in bad:
            assert http(served["url"] + "/slack/interactions", data=b, headers=h)[0] == status
        assert action_row(served, action_id).state == "proposed"

        # the real click, posted twice (Slack retries; a person double-clicks): answered at once, run once
        started = time.monotonic()
        assert http(served["url"] + "/slack/interactions", data=body, headers=headers)[0] == 200
        answered = time.monotonic() - started
        assert http(served["url"] + "/slack/interactions", data=body, headers=headers)[0] == 200
        assert answered < 3.0, answered
        assert wait_until(lambda: action_row(served, action_id).state == "done", 30), worker.output()[-3000:]
        assert wait_until(lambda: not alive(monitored_engine, first.info.backend_pid), 10)
        row = action_row(served, action_id)
        assert row.approved_by == "ana (slack)" and row.approved_via == "slack"
        steps = [e["what"] for e in row.events]  # the second click may land before or after the run started
        assert sorted(steps) == sorted(["proposed", "approved", "approval ignored", "started", "done"]), steps
        assert [w for w in steps if w != "approval ignored"] == ["proposed", "approved", "started", "done"], steps
        assert worker.output().count("action_finished") == 1
        assert wait_until(lambda: any("approved by ana (slack)" in json.dumps(r.body)
                                      for r in sink.requests_for("slack.response")), 10)

        # the email's link for the second session: a GET shows it, a POST approves it, once
        email = next(e for e in sink.emails if f"pid {second.info.backend_pid} " in e["text"])
        link = re.search(rf"proposed: terminate pid {second.info.backend_pid} .*?\n\s*approve: (\S+/act/\S+)",
                         email["text"]).group(1)
        assert link.startswith(settings.opsfleet_public_url or "http") and f"{second.info.backend_pid}" in email["text"]
        path = urllib.parse.urlsplit(link).path
        status, page = http(served["url"] + path)
        assert status == 200 and "Approve and run" in page and f"terminate pid {second.info.backend_pid}" in page
        assert alive(monitored_engine, second.info.backend_pid)  # a GET approves nothing
        tampered = path[:-3] + ("abc" if not path.endswith("abc") else "xyz")
        assert http(served["url"] + tampered, data=b"who=eve")[0] == 401
        assert http(served["url"] + path, data=b"who=bo")[0] == 200
        assert http(served["url"] + path, data=b"who=bo")[0] == 200  # the second POST approves nothing
        with served["fleet"].connect() as conn:
            second_id = store.for_alert(conn, by_pid[str(second.info.backend_pid)].fingerprint)[0]["id"]
        assert wait_until(lambda: action_row(served, second_id).state == "done", 30), worker.output()[-3000:]
        assert not alive(monitored_engine, second.info.backend_pid) or wait_until(
            lambda: not alive(monitored_engine, second.info.backend_pid), 10)
        assert [e["what"] for e in action_row(served, second_id).events].count("started") == 1

        # the next run finds no idle session: the alerts resolve
        later = fire(served, monitored_engine, settings, at + timedelta(minutes=1))
        assert {t.to_state for t in later.transitions} == {"resolved"}
    finally:
        for conn in (first, second):
            conn.close()
        worker.stop()


def test_an_approval_whose_guard_no_longer_holds_is_refused_with_the_reason(served, settings, monitored_engine,
                                                                            monitored):
    """The session committed before anyone approved: the action runs nothing and says why."""
    from worker.actions import run as runner

    idle = victim(monitored)
    time.sleep(1.2)
    outcome = fire(served, monitored_engine, settings, datetime.now(UTC) + timedelta(seconds=1))
    fp = next(t.fingerprint for t in outcome.transitions if t.labels["pid"] == str(idle.info.backend_pid))
    with served["fleet"].begin() as conn:
        action_id = store.for_alert(conn, fp)[0]["id"]
        assert store.approve(conn, action_id, who="ana", via="page", at=datetime.now(UTC))
    idle.execute("COMMIT")  # no longer idle in a transaction
    done = runner.run(action_id, fleet=served["fleet"], cfg=served["cfg"], settings=settings, now=datetime.now(UTC),
                      send_task=None)
    assert done["state"] == "refused" and "not idle in a transaction" in done["result"], done
    assert alive(monitored_engine, idle.info.backend_pid)
    assert runner.run(action_id, fleet=served["fleet"], cfg=served["cfg"], settings=settings, now=datetime.now(UTC),
                      send_task=None)["ran"] is False  # a redelivered task does nothing
    idle.close()


def test_alerts_show_lists_the_proposed_action_and_its_record(served, settings, monitored_engine, monitored, env):
    from tests.support.cli import run_cli

    with idle_alert(served, settings, monitored_engine, monitored) as (idle, fp, _):
        cli_env = {**env, "OPSFLEET_CONFIG_DIR": str(served["cfg"].root), "OPSFLEET_PACKS": "",
                   "DATABASE_URL": monitored, "FLEET_DATABASE_URL": settings.fleet_database_url}
        doc = json.loads(run_cli(["alerts", "show", fp, "--json"], cli_env).stdout)
        [action] = doc["actions"]
        assert action["kind"] == "terminate_session" and action["state"] == "proposed"
        assert action["dry_run"].startswith(f"terminate pid {idle.info.backend_pid} (app=victim")
        assert [e["what"] for e in action["events"]] == ["proposed"]
        text = run_cli(["alerts", "show", fp], cli_env).stdout
        assert f"action {action['id']} proposed: terminate pid {idle.info.backend_pid}" in text


def test_an_emails_acknowledge_link_acknowledges_its_alert_on_a_post(served, settings, monitored_engine, monitored,
                                                                     sink):
    with idle_alert(served, settings, monitored_engine, monitored) as (idle, fp, _):
        email = next(e for e in sink.emails if f"pid {idle.info.backend_pid} " in e["text"])
        link = re.search(rf"pid {idle.info.backend_pid} .*?acknowledge: (\S+/act/\S+)", email["text"], re.S).group(1)
        path = urllib.parse.urlsplit(link).path
        status, page = http(served["url"] + path)
        assert status == 200 and "Acknowledge this alert?" in page and "idle_victim" in page
        assert http(served["url"] + path[:-2] + "xx", data=b"who=eve")[0] == 401
        status, text = http(served["url"] + path, data=b"who=bo")
        assert status == 200 and "acknowledged by bo (email link)" in text
        with served["fleet"].connect() as conn:
            assert conn.execute(sa.text("SELECT acked_by FROM fleet.alerts WHERE fingerprint = :fp"),
                                {"fp": fp}).scalar() == "bo (email link)"
        assert "not acknowledged again" in http(served["url"] + path, data=b"who=eve")[1]


def test_an_emails_silence_link_silences_its_alert_once(served, settings, monitored_engine, monitored, sink):
    with idle_alert(served, settings, monitored_engine, monitored) as (idle, fp, _):
        email = next(e for e in sink.emails if f"pid {idle.info.backend_pid} " in e["text"])
        link = re.search(rf"pid {idle.info.backend_pid} .*?silence 1h: (\S+/act/\S+)", email["text"], re.S).group(1)
        path = urllib.parse.urlsplit(link).path
        status, page = http(served["url"] + path)
        assert status == 200 and "Silence this alert?" in page and "for 1h" in page
        status, text = http(served["url"] + path, data=b"who=bo")
        assert status == 200 and "silenced for 1h" in text, text
        assert "used already (by bo (email link))" in http(served["url"] + path, data=b"who=eve")[1]
        with served["fleet"].connect() as conn:
            made = conn.execute(sa.text("SELECT matchers, author, ends_at - starts_at AS length FROM fleet.silences "
                                        "WHERE author = 'bo (email link)'")).all()
        assert len(made) == 1 and made[0].length == timedelta(hours=1)
        assert made[0].matchers["check"] == "idle_victim" and made[0].matchers["labels"]["pid"] == \
            str(idle.info.backend_pid)
        assert fp


def test_silence_until_resolved_from_slack_ends_when_the_alert_resolves(served, settings, monitored_engine, monitored,
                                                                       sink):
    """Slack's "Silence until resolved": the alert's notices are held back while it fires; the silence
    ends in the evaluation that records the resolve (and an unrelated silence stays)."""
    idle = victim(monitored)
    try:
        time.sleep(1.2)
        at = datetime.now(UTC) + timedelta(seconds=1)
        outcome = fire(served, monitored_engine, settings, at)
        fp = next(t.fingerprint for t in outcome.transitions if t.labels["pid"] == str(idle.info.backend_pid))
        body, headers = signed_interaction(SIGNING_SECRET, value=fp, action_id=f"silence:resolved:{fp}",
                                           response_url=sink.slack_response_url)
        assert http(served["url"] + "/slack/interactions", data=body, headers=headers)[0] == 200
        with served["fleet"].connect() as conn:
            made = conn.execute(sa.text("SELECT id, ends_at FROM fleet.silences WHERE matchers->>'until_resolved' = :fp"),
                                {"fp": fp}).one()
        assert made.ends_at > at + timedelta(days=6)
    finally:
        idle.close()
    later = at + timedelta(minutes=1)
    for _ in range(50):  # the session's backend leaves pg_stat_activity a moment after it closed
        resolved = fire(served, monitored_engine, settings, later)
        if any(t.fingerprint == fp and t.to_state == "resolved" for t in resolved.transitions):
            break
        time.sleep(0.1)
        later += timedelta(minutes=1)
    with served["fleet"].connect() as conn:
        assert conn.execute(sa.text("SELECT ends_at FROM fleet.silences WHERE id = :id"),
                            {"id": made.id}).scalar() == later
