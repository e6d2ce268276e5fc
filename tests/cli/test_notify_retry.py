"""`opsfleet notify dead` and `opsfleet notify retry`, end to end: a channel misconfigured (or a provider
failing) until its notice goes dead, the fix, the retry through the CLI, and the sink (ops.devkit.sink)
seeing the one delivery under the idempotency key of every earlier attempt."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.sink import Reply
from tests.support.cli import run_cli
from tests.support.notify import ATTEMPTS, T0, check, deliver_until_final, fire, note, routing, settings_for
from worker.checks.engine import run_check
from worker.notify.delivery import deliver


def _dead_email(db, sink, **bad):
    """The check fires; its email goes dead (the channel's settings `bad`); its Slack notice is sent."""
    ids = fire(db)
    for nid in ids:
        deliver(nid, fleet=db, settings=settings_for(sink, **bad), routing=routing(), now=T0)
    nid = next(i for i in ids if note(db, i).channel == "email")
    assert note(db, nid).status == "dead"
    return nid


def _keys(sink):
    return [r.headers.get("Idempotency-Key") or r.headers.get("idempotency-key")
            for r in sink.requests_for("resend.emails")]


@pytest.mark.slow  # three runs of the CLI: about 10 s
def test_a_dead_email_is_sent_once_after_the_fix_under_its_own_idempotency_key(db, sink, cli_env):
    nid = _dead_email(db, sink, resend_api_key="wrong-key")  # Resend answers 403 to that key
    before = note(db, nid)
    listed = run_cli(["notify", "dead", "--json"], cli_env)
    assert listed.returncode == 0, listed.stderr
    assert [(d["id"], d["channel"], d["refused"]) for d in json.loads(listed.stdout)] == [(nid, "email", None)]
    proc = run_cli(["notify", "retry", nid[:8]], cli_env)  # the fixed key is the environment's
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sent" in proc.stdout
    after = note(db, nid)
    assert (after.status, after.dedup_key, after.attempts) == ("sent", before.dedup_key, 1)
    assert len(sink.emails) == 1 and sink.emails[0]["subject"].startswith("[CRITICAL]")
    assert _keys(sink) == [nid, nid]  # the refused attempt and the one that went: one key
    again = run_cli(["notify", "retry", nid], cli_env)
    assert again.returncode == 2 and "is sent, not dead" in again.stderr and len(sink.emails) == 1


@pytest.mark.slow  # eight failed deliveries and two runs of the CLI: about 8 s
def test_an_email_dead_after_eight_server_errors_is_retried_by_all_dead_once(db, sink, cli_env):
    nid = next(i for i in fire(db) if note(db, i).channel == "email")
    sink.script("resend.emails", [Reply(503)] * ATTEMPTS)
    statuses, _ = deliver_until_final(db, sink, nid)
    assert statuses[-1] == "dead" and len(statuses) == ATTEMPTS
    proc = run_cli(["notify", "retry", "--all-dead", "--channel", "email"], cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert note(db, nid).status == "sent" and len(sink.emails) == 1
    assert _keys(sink) == [nid] * (ATTEMPTS + 1)
    assert run_cli(["notify", "dead"], cli_env).stdout.strip() == "no dead notifications"


@pytest.mark.slow  # three runs of the CLI: about 7 s
def test_a_dead_firing_notice_of_an_alert_resolved_since_is_refused_with_the_reason(db, sink, cli_env):
    nid = _dead_email(db, sink, resend_api_key="wrong-key")
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    run_check(check(), monitored=db, fleet=db, now=T0 + timedelta(minutes=5), routing=routing())
    proc = run_cli(["notify", "retry", nid], cli_env)
    assert proc.returncode == 1
    assert "refused" in proc.stdout and "its alert has resolved since" in proc.stdout, proc.stdout
    assert note(db, nid).status == "dead" and sink.emails == []
    listed = json.loads(run_cli(["notify", "dead", "--json", "--since", "10000d"], cli_env).stdout)
    assert listed[0]["id"] == nid and "resolved since" in listed[0]["refused"]
    swept = run_cli(["notify", "retry", "--all-dead", "--json"], cli_env)  # expected refusals: not a failure
    assert swept.returncode == 0 and json.loads(swept.stdout)[0]["result"] == "refused"
    assert sink.emails == []


@pytest.mark.parametrize(("args", "needle"), [
    (["retry"], "give the ids of dead notifications"),
    (["retry", "not-an-id"], "is not a notification id"),
    (["retry", "0123abcd"], "no notification 0123abcd"),
    (["retry", "0123abcd", "--all-dead"], "not both"),
    (["retry", "--all-dead", "--channel", "fax"], "--channel 'fax': not a channel of routing.yaml"),
    (["dead", "--since", "forever"], "--since 'forever'"),
])
def test_wrong_arguments_are_one_line_with_exit_2(db, cli_env, args, needle):
    proc = run_cli(["notify", *args], cli_env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
