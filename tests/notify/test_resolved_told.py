"""A resolved notice goes only to the channels that were told the alert fired (Alertmanager's rule):
per channel, only once that channel's firing notice was actually sent. A firing notice that went dead,
or was held back, leaves its channel nothing to resolve; one still on its way (retrying) makes the
resolved notice wait for it, and then go or not as the firing notice ended."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from ops.devkit.sink import Reply
from tests.support.notify import T0, check, fire, note, routing, settings_for
from worker.checks.engine import run_check
from worker.notify.delivery import deliver


def _resolve(db, at):
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    run_check(check(), monitored=db, fleet=db, now=at, routing=routing())


def _rows(db, transition):
    with db.connect() as conn:
        return {r.channel: r for r in conn.execute(sa.text(
            "SELECT * FROM fleet.notifications WHERE transition = :t"), {"t": transition})}


def _resolved_emails(sink):
    return [m for m in sink.emails if m["subject"].startswith("[RESOLVED]")]


def test_a_channel_whose_firing_notice_went_dead_gets_no_resolved_notice(db, sink):
    s, r = settings_for(sink), routing()
    sink.script("resend.emails", [Reply(422)])  # the email channel refuses the firing notice for good
    for nid in fire(db):
        deliver(nid, fleet=db, settings=s, routing=r, now=T0)
    firing = _rows(db, "firing")
    assert (firing["email"].status, firing["slack"].status) == ("dead", "sent")
    _resolve(db, T0 + timedelta(minutes=5))
    resolved = _rows(db, "resolved")
    assert set(resolved) == {"slack"}  # email was never told it fired: nothing to resolve there
    assert deliver(str(resolved["slack"].id), fleet=db, settings=s, routing=r,
                   now=T0 + timedelta(minutes=5)).status == "sent"
    assert _resolved_emails(sink) == [] and len(sink.slack_messages) == 2


def test_a_resolved_notice_waits_for_a_firing_notice_still_retrying_and_is_held_back_when_it_dies(db, sink):
    s, r = settings_for(sink), routing()
    sink.script("resend.emails", [Reply(500)])
    nid = next(n for n in fire(db) if note(db, n).channel == "email")
    first = deliver(nid, fleet=db, settings=s, routing=r, now=T0)
    assert first.status == "retrying"
    t1 = T0 + timedelta(minutes=1)  # the next slot: the alert resolves while its email is still retrying
    _resolve(db, t1)
    resolved = str(_rows(db, "resolved")["email"].id)  # the firing notice may still go: so may this
    waited = deliver(resolved, fleet=db, settings=s, routing=r, now=t1)
    assert waited.status == "early" and waited.retry_in > 0  # it waits for the firing notice's next attempt
    assert _resolved_emails(sink) == [] and note(db, resolved).attempts == 0
    sink.script("resend.emails", [Reply(422)])
    at = t1 + timedelta(seconds=1)
    assert deliver(nid, fleet=db, settings=s, routing=r, now=at).status == "dead"
    assert deliver(resolved, fleet=db, settings=s, routing=r, now=at + timedelta(seconds=waited.retry_in)).status \
        == "suppressed"
    row = note(db, resolved)
    assert (row.status, row.suppressed_reason, row.suppressed_detail) == ("suppressed", "never_notified", nid)
    assert _resolved_emails(sink) == [] and sink.emails == []


def test_a_resolved_notice_that_waited_goes_after_its_firing_notice_is_sent(db, sink):
    s, r = settings_for(sink), routing()
    sink.script("resend.emails", [Reply(503)])
    nid = next(n for n in fire(db) if note(db, n).channel == "email")
    assert deliver(nid, fleet=db, settings=s, routing=r, now=T0).status == "retrying"
    t1 = T0 + timedelta(minutes=1)
    _resolve(db, t1)
    resolved = str(_rows(db, "resolved")["email"].id)
    waited = deliver(resolved, fleet=db, settings=s, routing=r, now=t1)
    assert waited.status == "early"
    at = t1 + timedelta(seconds=1)
    assert deliver(nid, fleet=db, settings=s, routing=r, now=at).status == "sent"
    assert deliver(resolved, fleet=db, settings=s, routing=r, now=at + timedelta(seconds=waited.retry_in)).status \
        == "sent"
    assert [m["subject"][:10] for m in sink.emails] == ["[CRITICAL]", "[RESOLVED]"]


def test_a_resolved_notice_folded_into_another_send_still_waits_for_its_own_firing_notice(db, sink):
    s, r = settings_for(sink), routing()
    sink.script("resend.emails", [Reply(500)])
    a = next(n for n in fire(db, items=("a",)) if note(db, n).channel == "email")
    assert deliver(a, fleet=db, settings=s, routing=r, now=T0).status == "retrying"
    t1 = T0 + timedelta(minutes=1)
    b = next(n for n in fire(db, items=("a", "b"), at=t1) if note(db, n).channel == "email")
    assert deliver(b, fleet=db, settings=s, routing=r, now=t1).status == "sent"  # b alone: a's is retrying
    t2 = t1 + timedelta(minutes=1)
    _resolve(db, t2)
    with db.connect() as conn:
        resolved = {r.payload["labels"]["item"]: str(r.id) for r in conn.execute(sa.text(
            "SELECT * FROM fleet.notifications WHERE transition = 'resolved' AND channel = 'email'"))}
    assert deliver(resolved["b"], fleet=db, settings=s, routing=r, now=t2).status == "sent"
    last = sink.emails[-1]
    assert last["subject"].startswith("[RESOLVED]") and "more" not in last["subject"]  # b's alone, a's not folded
    waiting = note(db, resolved["a"])
    assert waiting.status == "retrying" and waiting.last_error == f"waits for its firing notice {a}"
