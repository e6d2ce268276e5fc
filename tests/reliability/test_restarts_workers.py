"""Restarts through real Celery workers, where Celery's behaviour is the point: a delivery storm of
real notify workers with the fleet Postgres restarted or Redis restarted under it, Redis restarted
mid-backlog, and the broker unreachable for a while. Redis is a throwaway redis-server each test
starts itself, restarted on the same port without persistence: every queued message, lock and
rate-limit bucket is gone. Postgres holds all state, so what was lost is re-enqueued: notify.sweep for
the outbox, the next run for the backlog. The in-process Postgres restarts: test_restarts.py.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_worker, wait_until
from ops.devkit.sink import ProviderSink, Reply
from tests.support.backlog import KEY, add_backlog, assert_exactly_once
from tests.support.restarts import fleet_env, one, prepare, rows, url_of
from worker.fleet.db import create
from worker.notify import outbox


# -- a delivery storm through real notify workers ------------------------------------------------------
def write_storm(fleet, n: int) -> list[str]:
    """n outbox rows, each its own email (a `test` transition is never folded into a summary)."""
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        return [outbox.insert(conn, channel="email", check="storm", transition="test", due=now,
                              payload={"check": "storm", "severity": "critical", "status": "test",
                                       "title": f"storm {i}", "summary": f"storm {i}", "labels": {}},
                              dedup_key=f"storm:{i}:{uuid.uuid4()}") for i in range(n)]


def enqueue(client: Celery, ids: list[str]) -> None:
    for nid in ids:
        client.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")


def sweep_until_all_sent(fleet, client: Celery, ids: list[str], fault_over: datetime, timeout: float = 60) -> None:
    """What beat and the lease do after a fault, accelerated: notify.sweep (every 30 s in production)
    re-enqueues what is due; a row a failed task left `sending` becomes due when its lease expires
    (120 s after it was taken): once nothing is in flight, the leases taken before the fault are moved
    back by that time instead of waiting it out. Then the sweeps go on until every row is sent."""
    taken_before = fault_over + outbox.LEASE
    deadline = time.monotonic() + timeout
    expired = False
    while time.monotonic() < deadline:
        client.send_task("notify.sweep", queue="notify")
        counts = dict(rows(fleet, "SELECT status, count(*) FROM fleet.notifications GROUP BY 1"))
        if counts.get("sent", 0) == len(ids):
            return
        stuck = one(fleet, "SELECT count(*) FROM fleet.notifications WHERE status = 'sending' AND lease_until < :t",
                    t=taken_before)
        if not expired and stuck and counts.get("sent", 0) + stuck == len(ids):
            with fleet.begin() as conn:  # the lease's 120 s, elapsed
                conn.execute(sa.text("UPDATE fleet.notifications SET lease_until = now() - interval '1 second' "
                                     "WHERE status = 'sending' AND lease_until < :t"), {"t": taken_before})
            expired = True
        time.sleep(1.0)
    counts = rows(fleet, "SELECT status, count(*) FROM fleet.notifications GROUP BY 1")
    raise AssertionError(f"not all sent: {counts}")


def assert_each_sent_once(fleet, sink: ProviderSink, ids: list[str]) -> None:
    """Every outbox row `sent`, none left leased; the provider holds exactly one email per row, under the
    row's id as Idempotency-Key (a retry of an accepted send was replayed, not sent again)."""
    assert rows(fleet, "SELECT status, count(*) FROM fleet.notifications GROUP BY 1") == [("sent", len(ids))]
    assert one(fleet, "SELECT count(*) FROM fleet.notifications WHERE lease_until IS NOT NULL") == 0
    keys = Counter(e["idempotency_key"] for e in sink.emails)
    assert set(keys) == set(ids), f"{len(set(ids) - set(keys))} never sent"
    assert max(keys.values()) == 1, [k for k, c in keys.items() if c > 1][:5]
    recorded = dict(rows(fleet, "SELECT CAST(id AS text), provider_id FROM fleet.notifications"))
    assert {recorded[e["idempotency_key"]] for e in sink.emails} == {e["id"] for e in sink.emails}


def storm(servers, fresh_database, tmp_path: Path, fault, n: int = 120) -> SimpleNamespace:
    """n emails through one notify worker (4 processes), each answered 0.2 s after the provider accepted
    it (so sends are in flight); `fault(servers)` strikes once a quarter is out; then the sweeps.
    Returns the fleet engine, the sink, the ids, the worker's output, and how many rows were still
    `pending` a second after the fault (their messages, if lost, are the sweeper's to replace)."""
    fleet_pg, redis = servers.postgres("fleet", fleet=True), servers.redis("redis")
    fleet = create(url_of(fleet_pg))
    sink = ProviderSink(resend_api_keys=[KEY]).start()
    env = fleet_env(tmp_path, database_url=fresh_database(), fleet_url=url_of(fleet_pg), redis_url=redis.url,
                    sink=sink)
    sink.script("resend.emails", [Reply(hang=0.2)] * (2 * n))
    worker = start_worker(env, tmp_path, queues="notify", concurrency=4)
    client = Celery(broker=redis.url)
    try:
        ids = write_storm(fleet, n)
        enqueue(client, ids)
        assert wait_until(lambda: len(sink.emails) >= n // 4, 60), worker.output()[-3000:]
        fault(SimpleNamespace(fleet=fleet_pg, redis=redis))
        fault_over = datetime.now(UTC)
        time.sleep(1.0)  # what the worker takes up again by itself, before any sweep
        pending = one(fleet, "SELECT count(*) FROM fleet.notifications WHERE status = 'pending'")
        sweep_until_all_sent(fleet, client, ids, fault_over)
        time.sleep(0.5)  # (a late duplicate would land now)
    finally:
        client.close()
        worker.stop()
        sink.stop()
    return SimpleNamespace(fleet=fleet, sink=sink, ids=ids, output=worker.output(), pending=pending)


@pytest.mark.slow
def test_fleet_restart_mid_storm_the_sweeper_recovers_and_every_email_is_sent_once(servers, fresh_database,
                                                                                   tmp_path):
    """120 emails through a real worker; the fleet Postgres restarts under them: leases, sends and
    their records are cut mid-way. The pool reconnects, the sweeper re-enqueues, the provider replays
    what it had accepted. About 15 s (a worker's start, the storm)."""
    run = storm(servers, fresh_database, tmp_path, lambda s: s.fleet.restart())
    assert_each_sent_once(run.fleet, run.sink, run.ids)
    # a task the restart cut failed in one line, with no traceback (a restart that lands while every
    # task is in the provider's call cuts none: the pool's pre-ping reconnects them, CI met that)
    failed = [line for line in run.output.splitlines() if '"task_failed"' in line]
    assert all("a service did not answer" in line for line in failed), failed
    assert "Traceback" not in run.output
    run.fleet.dispose()


def redis_client(server):
    return redis.Redis.from_url(server.url)


OUTAGE_S = 60  # the figure: past kombu's reconnect backoff reaching its longest interval


@pytest.mark.slow
def test_redis_restart_mid_storm_the_sweeper_re_enqueues_and_every_email_is_sent_once(servers, fresh_database,
                                                                                     tmp_path):
    """120 emails through a real worker; Redis restarts under them, empty: the queued deliver messages,
    the unacknowledged ones and the rate-limit buckets are gone. The worker reconnects by itself; the
    outbox rows are still due, notify.sweep re-enqueues them. About 15 s (a worker's start, the storm)."""
    run = storm(servers, fresh_database, tmp_path, lambda s: s.redis.restart())
    assert run.pending > 0  # messages Redis lost: their rows wait, due, with no task of their own
    assert_each_sent_once(run.fleet, run.sink, run.ids)
    run.fleet.dispose()


def test_redis_restart_mid_backlog_then_the_next_run_leaves_one_number_and_one_email_each(servers, fresh_database,
                                                                                         tmp_path):
    """backlog.reprocess_confirmations through a real worker; Redis restarts while the provider holds a
    batch (its message, unacknowledged, and its result are lost with Redis). The numbers and pending
    emails are in Postgres: the next run (beat's, or an operator's) resends what was in flight with the
    same keys and claims the rest. No run is left `running`. About 7 s."""
    broker = servers.redis("redis")
    url = prepare(fresh_database(), fleet=True, app=True)  # Postgres is not restarted: one database for both
    app = create(url)
    n = 1500
    add_backlog(app, n)
    with ProviderSink(resend_api_keys=[KEY]) as sink:
        env = fleet_env(tmp_path, database_url=url, fleet_url=url, redis_url=broker.url, sink=sink,
                        packs="confirmations")
        sink.script("resend.emails.batch", [Reply()] * 4 + [Reply(hang=2.0)])  # call 5 is accepted, then stalls
        worker = start_worker(env, tmp_path, queues="backlog", concurrency=1)
        client = Celery(broker=broker.url, backend=broker.url)
        try:
            scheduled = {"batch_size": 100, "limit": 1000}  # a scheduled run takes a slice (backlogs.yaml: limit)
            client.send_task("backlog.reprocess_confirmations", kwargs=scheduled, queue="backlog")
            assert wait_until(lambda: len(sink.requests_for("resend.emails.batch")) == 5, 60), worker.output()[-3000:]
            client.send_task("backlog.reprocess_confirmations", kwargs=scheduled, queue="backlog")  # queued behind
            assert redis_client(broker).llen("backlog") == 1
            broker.restart()  # loses the queued run, the running one's unacknowledged message and its result
            assert wait_until(lambda: sink.resend_in_flight() == 0, 10)
            client.send_task("backlog.reprocess_confirmations", kwargs={"batch_size": 100, "stale_after": "0s"},
                             queue="backlog")  # the next run

            def done() -> bool:
                return (one(app, "SELECT count(*) FROM confirmation_emails WHERE status = 'sent'") == n
                        and one(app, "SELECT count(*) FROM fleet.job_runs WHERE status = 'running'") == 0)

            assert wait_until(done, 90), (rows(app, "SELECT status, error FROM fleet.job_runs"), worker.output()[-3000:])
        finally:
            client.close()
            worker.stop()
        assert_exactly_once(app, sink, n)
    # the running run survived (Postgres holds its work; the result backend reconnected), the queued one
    # was lost with Redis, and the next run took the rest
    assert rows(app, "SELECT status, rows_affected FROM fleet.job_runs ORDER BY id") == [("ok", 1000), ("ok", n - 1000)]
    app.dispose()


@pytest.mark.slow
def test_broker_unreachable_for_a_while_workers_reconnect_and_drain_the_outbox(servers, fresh_database,
                                                                              tmp_path):
    """Redis down for OUTAGE_S (60 s): the checks that fire meanwhile write their outbox rows (their
    enqueue cannot reach the broker); the worker keeps retrying, reconnects once Redis is back, and
    the sweep's messages drain the outbox, each email sent once. About 80 s (the outage, kombu's
    reconnect backoff, a worker's start)."""
    fleet_pg, broker = servers.postgres("fleet", fleet=True), servers.redis("redis")
    fleet = create(url_of(fleet_pg))
    with ProviderSink(resend_api_keys=[KEY]) as sink:
        env = fleet_env(tmp_path, database_url=fresh_database(), fleet_url=url_of(fleet_pg), redis_url=broker.url,
                        sink=sink)
        worker = start_worker(env, tmp_path, queues="notify", concurrency=2)
        client = Celery(broker=broker.url)
        try:
            before = write_storm(fleet, 20)
            enqueue(client, before)
            assert wait_until(lambda: len(sink.emails) == 20, 60), worker.output()[-3000:]
            broker.stop()
            during = write_storm(fleet, 30)  # committed in Postgres; nothing reaches the broker
            time.sleep(OUTAGE_S)  # the outage itself
            broker.start()
            sweep_until_all_sent(fleet, client, before + during, datetime.now(UTC), timeout=90)
            time.sleep(0.5)  # (a late duplicate would land now)
        finally:
            client.close()
            worker.stop()
        assert "Connection to broker lost" in worker.output() or "Cannot connect to redis" in worker.output()
        assert_each_sent_once(fleet, sink, before + during)
    fleet.dispose()


pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
