"""Postgres restarted for real (`pg_ctl restart -m fast` on a throwaway server each test starts itself):
the monitored database during a check run, an archive batch and a backlog batch; the fleet database
during a check run, in-process (run_check, run_job, reprocess in a thread while the test restarts the
server). After each: the task failed cleanly (one line, recorded), a retry or the next run finished the
work, and nothing partial or doubled remains. Through real workers (the delivery storm, Redis, the
broker outage): test_restarts_workers.py, which shares this module's fixture (`servers`,
tests/reliability/conftest.py) and helpers (tests/support/restarts.py).

The restart goes through the server the test started (servers.postgres), never the suite's shared
one; the side that is not restarted is a database of the test's own on the shared server.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.process import wait_until
from ops.devkit.sink import ProviderSink, Reply
from tests.support.backlog import KEY, add_backlog, assert_exactly_once, channel
from tests.support.checks import make_check
from tests.support.maintenance import add_webhook_logs, job
from tests.support.restarts import one, prepare, rows, url_of
from worker.backlog.runs import reprocess
from worker.checks.engine import run_check
from worker.fleet.db import create, create_for_checks
from worker.fleet.timeutil import parse_duration
from worker.maintenance.jobs import run_job
from worker.notify.routing import Routing

ROUTING = Routing.model_validate({"channels": {"email": {"kind": "email"}},
                                  "routes": [{"match": {"severity": "critical"}, "channels": ["email"],
                                              "repeat_interval": "4h", "group_wait": "0s"}]})
# the check the restarts interrupt: 2 s inside the query, long enough to restart a server under it
SLOW_CHECK = make_check(name="slow_gauge", query="SELECT g.v AS value FROM gauge g CROSS JOIN pg_sleep(2) s",
                        timeout="10s", **{"for": "0s"})
# a fast query whose firing instance gathers slow evidence: the fleet transaction (claim, transition,
# outbox row) is open while the evidence query sleeps (the query itself runs before the transaction)
SLOW_EVIDENCE_CHECK = make_check(name="slow_evidence", query="SELECT g.v AS value FROM gauge g", **{"for": "0s"},
                                 evidence=[{"name": "slow", "query": "SELECT 1 AS x FROM pg_sleep(2)"}])
SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def sleeping(engine, what: str = "PgSleep") -> bool:
    """A session of this database is inside the query's pg_sleep (the moment to restart under it)."""
    return bool(one(engine, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = :w "
                            "AND datname = current_database()", w=what))


def assert_one_line(error: str | None) -> None:
    assert error and "\n" not in error and "Traceback" not in error, error


def assert_one_run_per_slot(fleet) -> None:
    """fleet.check_runs: every slot once, each finished with its status."""
    assert rows(fleet, "SELECT check_name, slot FROM fleet.check_runs GROUP BY 1, 2 HAVING count(*) > 1") == []
    assert one(fleet, "SELECT count(*) FROM fleet.check_runs WHERE status IS NULL OR status = 'running' "
                      "OR finished_at IS NULL") == 0


# -- the monitored Postgres restarted ------------------------------------------------------------------

def test_monitored_restart_under_a_check_is_one_error_for_its_slot_and_the_next_slot_evaluates(servers, fresh_database):
    """The worker's own query path (create_for_checks: each thread keeps its connection): the kept
    connection dies under pg_sleep; the slot is recorded `error` in one line, never evaluated twice;
    the next slot, on the same thread, evaluates on a new connection. About 8 s (three 2 s queries)."""
    monitored = servers.postgres("monitored")
    prepare(url_of(monitored), gauge=50)
    fleet = create(prepare(fresh_database(), fleet=True))
    checks, watcher = create_for_checks(url_of(monitored)), create(url_of(monitored))
    thread = ThreadPoolExecutor(1)  # one worker thread, as a prefork child runs its checks

    def run(slot: datetime):
        return thread.submit(run_check, SLOW_CHECK, monitored=checks, fleet=fleet, now=slot, routing=ROUTING,
                             slot=slot)

    try:
        assert run(SLOT).result(30).status == "ok"
        during = run(SLOT + MINUTE)
        assert wait_until(lambda: sleeping(watcher), 10)
        monitored.restart()
        failed = during.result(30)
        after = run(SLOT + 2 * MINUTE).result(30)
        again = run(SLOT + MINUTE).result(30)  # a redelivery of the failed slot
    finally:
        thread.shutdown()
        checks.dispose()
        watcher.dispose()
    assert failed.status == "error" and failed.error.startswith("check slow_gauge: "), failed.error
    assert_one_line(failed.error)
    assert (after.status, [s.value for s in after.samples]) == ("ok", [50.0])
    assert again.status == "skipped"
    assert rows(fleet, "SELECT slot, status, error FROM fleet.check_runs ORDER BY slot") == [
        (SLOT, "ok", None), (SLOT + MINUTE, "error", failed.error), (SLOT + 2 * MINUTE, "ok", None)]
    assert_one_run_per_slot(fleet)
    # the alert fired once and stayed firing across the failed slot: one notification, not two
    assert rows(fleet, "SELECT state FROM fleet.alerts") == [("firing",)]
    assert one(fleet, "SELECT count(*) FROM fleet.notifications") == 1
    fleet.dispose()


def test_monitored_restart_mid_archive_batch_rolls_the_batch_back_and_the_next_run_finishes(servers, fresh_database):
    """Each batch moves its rows in one statement (copy + delete): the restart cuts one batch, which
    rolls back whole; the run is recorded `error` in one line; the next run moves the rest; every row
    is in exactly one of the two tables, the archive a byte-for-byte copy. About 6 s."""
    monitored = servers.postgres("monitored", app=True)
    app, fleet = create(url_of(monitored)), create(prepare(fresh_database(), fleet=True))
    checksum = """SELECT md5(string_agg(concat_ws('|', id, webhook_name, registration_id, status_code, duration_ms,
                  payload, error_message, created_at), ',' ORDER BY id)) FROM {}"""
    with app.begin() as conn:
        add_webhook_logs(conn, 6000, days_old=100)
        add_webhook_logs(conn, 500, days_old=10)
        # every batch's delete waits 0.3 s (an application trigger), so the restart lands inside one
        conn.execute(sa.text("""CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS
                                $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$"""))
        conn.execute(sa.text("CREATE TRIGGER slow BEFORE DELETE ON webhook_logs FOR EACH STATEMENT "
                             "EXECUTE FUNCTION slow_delete()"))
    old = one(app, checksum.format("webhook_logs WHERE created_at < now() - interval '90 days'"))
    before = one(app, "SELECT count(*) FROM webhook_logs")
    spec = job("archive_webhook_logs", batch_size=500, pause=timedelta(milliseconds=50))
    results: list = []
    runner = threading.Thread(target=lambda: results.append(
        run_job(spec, monitored=app, fleet=fleet, now=datetime.now(UTC))))
    runner.start()
    try:
        assert wait_until(lambda: one(app, "SELECT count(*) FROM webhook_logs_archive") >= 1000 and sleeping(app), 30)
        monitored.restart()
    finally:
        runner.join(30)
    [first] = results
    assert first.status == "error"
    assert_one_line(first.error)
    live, archived = one(app, "SELECT count(*) FROM webhook_logs"), one(app, "SELECT count(*) FROM webhook_logs_archive")
    assert live + archived == before and archived % 500 == 0  # whole batches only: the cut one rolled back
    assert one(app, "SELECT count(*) FROM webhook_logs JOIN webhook_logs_archive USING (id)") == 0
    assert rows(fleet, "SELECT status, error FROM fleet.job_runs") == [("error", first.error)]

    second = run_job(spec, monitored=app, fleet=fleet, now=datetime.now(UTC))  # the next run, same pool
    assert (second.status, second.rows) == ("ok", before - 500 - archived)
    assert one(app, "SELECT count(*) FROM webhook_logs") == 500
    assert one(app, checksum.format("webhook_logs_archive")) == old  # each row archived once, intact
    assert [r[0] for r in rows(fleet, "SELECT status FROM fleet.job_runs ORDER BY id")] == ["error", "ok"]
    app.dispose()
    fleet.dispose()


def test_monitored_restart_mid_backlog_batch_then_the_next_run_leaves_one_number_and_one_email_each(servers,
                                                                                                   fresh_database):
    """The restart cuts the run's connection while the provider holds a batch (accepted, not yet
    answered): the run is recorded `error` in one line, that batch stays numbered and pending, and the
    next run resends it with the same Idempotency-Key (replayed, not sent again) and claims the rest.
    About 5 s."""
    monitored = servers.postgres("monitored", app=True)
    app, fleet = create(url_of(monitored)), create(prepare(fresh_database(), fleet=True))
    n = 600
    add_backlog(app, n)
    with ProviderSink(resend_api_keys=[KEY]) as sink:
        sink.script("resend.emails.batch", [Reply(), Reply(), Reply(hang=3.0)])  # batch 3: accepted, then stalls
        errors: list = []

        def first_run() -> None:
            try:
                reprocess(app, fleet, channel(sink), batch_size=100)
            except Exception as exc:  # noqa: BLE001 - what the task would raise, kept for the asserts
                errors.append(exc)

        runner = threading.Thread(target=first_run)
        runner.start()
        try:
            assert wait_until(lambda: len(sink.requests_for("resend.emails.batch")) == 3, 30)
            monitored.restart()
        finally:
            runner.join(30)
        assert len(errors) == 1 and isinstance(errors[0], sa.exc.OperationalError), errors
        [(status, error)] = rows(fleet, "SELECT status, error FROM fleet.job_runs")
        assert status == "error" and error.startswith("OperationalError: "), error
        assert_one_line(error)
        assert len(sink.emails) == 300
        assert one(app, "SELECT count(*) FROM confirmation_emails WHERE status = 'pending'") == 100
        assert one(app, "SELECT count(*) FROM registrations WHERE confirmation_number IS NOT NULL") == 300

        result = reprocess(app, fleet, channel(sink), batch_size=100, stale_after=parse_duration("0s"))
        assert (result.status, result.recovered, result.claimed) == ("ok", 100, n - 300)
        assert sum(r.replayed for r in sink.requests_for("resend.emails.batch")) == 1
        assert_exactly_once(app, sink, n)
    assert [r[0] for r in rows(fleet, "SELECT status FROM fleet.job_runs ORDER BY id")] == ["error", "ok"]
    app.dispose()
    fleet.dispose()


# -- the fleet Postgres restarted ----------------------------------------------------------------------

def test_fleet_restart_under_a_check_leaves_nothing_of_its_slot_and_a_retry_evaluates_it_once(servers,
                                                                                            fresh_database):
    """The slot's claim, the alert's transition and its outbox row are one transaction on the fleet
    database: a restart while it is open (gathering the firing instance's evidence) rolls all of it
    back (the task fails in one line: ServiceUnavailable), so a retry of the slot evaluates it, once,
    and notifies once. About 7 s."""
    fleet_pg = servers.postgres("fleet", fleet=True)
    fleet = create(url_of(fleet_pg))
    monitored = create(prepare(fresh_database(), gauge=50))
    errors: list = []

    def evaluate() -> None:
        try:
            run_check(SLOW_EVIDENCE_CHECK, monitored=monitored, fleet=fleet, now=SLOT, routing=ROUTING, slot=SLOT)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    runner = threading.Thread(target=evaluate)
    runner.start()
    try:
        assert wait_until(lambda: sleeping(monitored), 10)
        assert one(fleet, "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'") == 1
        fleet_pg.restart()
    finally:
        runner.join(30)
    assert len(errors) == 1 and isinstance(errors[0], sa.exc.OperationalError), errors
    for table in ("check_runs", "alerts", "alert_events", "notifications"):  # nothing partial
        assert one(fleet, f"SELECT count(*) FROM fleet.{table}") == 0, table  # noqa: S608
    retry = run_check(SLOW_EVIDENCE_CHECK, monitored=monitored, fleet=fleet, now=SLOT, routing=ROUTING, slot=SLOT)
    assert (retry.status, len(retry.notification_ids)) == ("ok", 1)
    assert run_check(SLOW_EVIDENCE_CHECK, monitored=monitored, fleet=fleet, now=SLOT, routing=ROUTING,
                     slot=SLOT).status == "skipped"
    assert rows(fleet, "SELECT slot, status FROM fleet.check_runs") == [(SLOT, "ok")]
    assert_one_run_per_slot(fleet)
    assert one(fleet, "SELECT count(*) FROM fleet.notifications") == 1
    fleet.dispose()
    monitored.dispose()


pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
