"""A summary email (several alerts folded into one message) is sent once when its first attempt's
answer is lost, by a timeout or by the worker's death. Resend replays a request under the same
Idempotency-Key only when the body is the same (a different body gets 409 invalid_idempotent_request),
so the retry must send exactly the rows the first attempt folded: the folded rows are bound to their
leader (fleet.notifications.folded_into) until it is sent, and are never leased, swept or folded on
their own meanwhile. Before, a folded row whose lease expired went out alone (a second email for each
of them), and the leader's retry, now a different body, went dead on the 409."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ops.devkit.process import start_worker, wait_until
from ops.devkit.sink import Reply
from tests.support.brokers import purge_fleet_queues
from tests.support.db import fresh_gauge
from tests.support.notify import T0, due, fire, note, routing, settings_for
from worker.config import load_config
from worker.notify.delivery import deliver
from worker.notify.outbox import LEASE

ITEMS = ("a", "b", "c")


def emails_of(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT id::text AS id, status, folded_into::text AS folded_into, provider_id "
                                    "FROM fleet.notifications WHERE channel = 'email' ORDER BY created_at, id")).all()


def deliver_all_adversarially(engine, settings, routes, at: datetime) -> list[str]:
    """Every email row's delivery, the folded ones first (the order a sweep after a lease expiry may
    take them in), then whatever the sweep finds due."""
    rows = emails_of(engine)
    order = [r.id for r in rows if r.folded_into] + [r.id for r in rows if not r.folded_into]
    statuses = [deliver(nid, fleet=engine, settings=settings, routing=routes, now=at).status for nid in order]
    for nid in due(engine, at + timedelta(seconds=1)):
        statuses.append(deliver(nid, fleet=engine, settings=settings, routing=routes, now=at).status)
    return statuses


def test_a_summary_whose_answer_timed_out_is_retried_as_the_same_message_and_sent_once(db, sink):
    ids = fire(db, items=ITEMS)
    leader = next(i for i in ids if note(db, i).channel == "email")
    sink.script("resend.emails", [Reply(hang=2.0)])  # accepted and recorded, answered after our timeout
    first = deliver(leader, fleet=db, settings=settings_for(sink), routing=routing(), now=T0, timeout=0.5)
    assert first.status == "retrying" and first.error.startswith("timeout")
    rows = emails_of(db)
    assert sorted(r.folded_into is not None for r in rows) == [False, True, True]  # bound to the leader
    assert wait_until(lambda: sink.resend_in_flight() == 0, 10)
    at = T0 + timedelta(seconds=first.retry_in + 1)
    assert [nid for nid in due(db, at) if note(db, nid).channel == "email"] == [leader]
    deliver_all_adversarially(db, settings_for(sink), routing(), at)
    tries = sink.requests_for("resend.emails")
    assert [(t.status, t.replayed) for t in tries] == [(200, False), (200, True)], [(t.status, t.replayed) for t in tries]
    assert len(sink.emails) == 1 and "3 alerts" in sink.emails[0]["subject"] + sink.emails[0]["text"]
    assert {r.status for r in emails_of(db)} == {"sent"}


@pytest.fixture
def broker(redis_url):  # the worker is killed mid-send: the broker plays no part in what follows
    purge_fleet_queues(redis_url)
    return redis_url


MANY = """\
checks:
  - name: gauge_many
    description: one alert per gauge row
    schedule: 1m
    query: SELECT name AS item, v AS value FROM gauge
    condition: "> 10"
    severity: critical
    summary: "{{ labels.item }} at {{ value }}"
"""


def test_a_summary_whose_worker_died_mid_send_is_sent_once_after_the_lease(setup, tmp_path):
    from worker.fleet.settings import Settings

    engine, sink, env, client = setup
    (Path(env["OPSFLEET_CONFIG_DIR"]) / "checks" / "test.yaml").write_text(MANY)
    (Path(env["OPSFLEET_CONFIG_DIR"]) / "routing.yaml").write_text(
        "channels:\n  email: {kind: email}\nroutes:\n  - match: {severity: critical}\n    channels: [email]\n"
        "    group_wait: 0s\n")
    fresh_gauge(engine, "name text, v numeric")
    with engine.begin() as conn:
        for item in ITEMS:
            conn.execute(sa.text("INSERT INTO gauge VALUES (:n, 50)"), {"n": item})
    sink.script("resend.emails", [Reply(hang=30.0)])  # accepted, then the connection hangs
    worker = start_worker(env, tmp_path, queues="checks,notify", concurrency=1)
    try:
        client.send_task("checks.run", kwargs={"name": "gauge_many"}, queue="checks")
        assert wait_until(lambda: len(sink.requests_for("resend.emails")) == 1, 60), worker.output()[-3000:]
        assert [r.status for r in emails_of(engine)] == ["sending"] * 3
    finally:
        worker.kill(signal.SIGKILL)  # mid-request: nothing recorded the answer
    later = datetime.now(UTC) + LEASE + timedelta(seconds=1)
    cfg = load_config(env["OPSFLEET_CONFIG_DIR"])
    settings = Settings(resend_api_key=env["RESEND_API_KEY"], resend_api_url=env["RESEND_API_URL"],
                        alert_email_recipients="ops@example.com", from_email="alerts@example.com")
    statuses = deliver_all_adversarially(engine, settings, cfg.routing, later)
    assert "sent" in statuses and "dead" not in statuses, statuses
    assert len(sink.emails) == 1, [e["subject"] for e in sink.emails]  # the retry replayed the first request
    assert [t.replayed for t in sink.requests_for("resend.emails")] == [False, True]
    assert {r.status for r in emails_of(engine)} == {"sent"}


pytestmark = pytest.mark.reliability
