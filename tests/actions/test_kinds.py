"""Each action kind on a real Postgres: what it does when its guard holds, and what it refuses when it
does not (the catalog's dry runs and guards, worker/actions/catalog.py); a check's `actions:` refused
in one line when it names an unknown kind or parameter; drop_slot asks the approver to type the name."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.actions import AUTH
from worker.actions import store
from worker.actions.catalog import KINDS, GuardFailed
from worker.checks.spec import Check
from worker.web.approvals import Approvals


def plain(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_cancel_blocker_cancels_then_terminates_a_blocker_that_still_blocks(monitored):
    with psycopg.connect(plain(monitored), autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS held (id int PRIMARY KEY)")
        admin.execute("INSERT INTO held VALUES (1) ON CONFLICT DO NOTHING")
    holder = psycopg.connect(plain(monitored), autocommit=True, application_name="holder")
    waiter = psycopg.connect(plain(monitored), autocommit=True, application_name="waiter")
    holder.execute("BEGIN")
    holder.execute("UPDATE held SET id = 1 WHERE id = 1")
    blocked = threading.Thread(target=lambda: waiter.execute("UPDATE held SET id = 1 WHERE id = 1"))
    blocked.start()
    try:
        with psycopg.connect(plain(monitored), autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                    (waiter.info.backend_pid,)).fetchone():
                time.sleep(0.05)
            labels = {"pid": str(waiter.info.backend_pid), "blocked_by": str(holder.info.backend_pid)}
            kind = KINDS["cancel_blocker"]
            params = {"grace_s": 0.5}
            assert kind.describe(labels, params, []).startswith(f"cancel the statement of pid {holder.info.backend_pid}")
            result = kind.run(conn, labels, params)
            # an idle-in-transaction holder has no statement to cancel: it is terminated after the grace
            assert f"terminated pid {holder.info.backend_pid}" in result, result
            blocked.join(10)
            assert not blocked.is_alive()  # the waiter got its lock
            with pytest.raises(GuardFailed, match="no longer blocked"):
                kind.run(conn, labels, params)
    finally:
        holder.close()
        waiter.close()


def test_vacuum_table_vacuums_the_alerts_table_and_refuses_a_name_that_is_not_one(monitored):
    with psycopg.connect(plain(monitored), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS churn (id int) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO churn SELECT generate_series(1, 2000)")
        conn.execute("DELETE FROM churn")
        kind = KINDS["vacuum_table"]
        assert kind.describe({"table": "public.churn"}, {"freeze": True}, []) == \
            "VACUUM (VERBOSE, ANALYZE, FREEZE) public.churn"
        result = kind.run(conn, {"table": "public.churn"}, {"freeze": False})
        assert result.startswith("VACUUM (VERBOSE, ANALYZE) public.churn in ") and "removed" in result, result
        for bad in ("public.churn; DROP TABLE churn", "a.b.c", "public.nope"):
            with pytest.raises(GuardFailed):
                kind.run(conn, {"table": bad}, {"freeze": False})
        assert conn.execute("SELECT to_regclass('public.churn')").fetchone()[0] is not None


def test_drop_slot_asks_the_approver_to_type_its_name_then_drops_only_an_inactive_slot(served, monitored):
    slot = f"opsfleet_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain(monitored), autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot,))
        try:
            now = datetime.now(UTC)
            with served["fleet"].begin() as fleet:
                action_id = store.propose(fleet, fingerprint="f" * 24, target="", check="db_replication_slot_inactive",
                                          kind="drop_slot", params={}, labels={"slot": slot},
                                          dry_run=KINDS["drop_slot"].describe({"slot": slot}, {}, []), at=now)
            sent: list[str] = []
            approvals = Approvals(type("F", (), {"engine": served["fleet"], "settings": None})(), send=sent.append)
            status, text = approvals.approve(action_id, who="ana", via="page", confirm="not-the-name")
            assert status == 400 and "type the slot's name" in text and sent == []
            assert approvals.approve(action_id, who="ana", via="page", confirm=slot)[0] == 200 and sent == [action_id]
            assert KINDS["drop_slot"].run(conn, {"slot": slot}, {}) == f"dropped replication slot {slot}"
            with pytest.raises(GuardFailed, match="is gone"):
                KINDS["drop_slot"].run(conn, {"slot": slot}, {})
        finally:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                         (slot,))


def test_the_status_pages_approve_button_approves_once_behind_its_auth(served):
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    with served["fleet"].begin() as fleet:
        action_id = store.propose(fleet, fingerprint="e" * 24, target="", check="idle_victim", kind="run_job",
                                  params={"job": "fleet_history_retention"}, labels={}, dry_run="run it", at=datetime.now(UTC))

    def post(form: dict[str, str], auth: bool = True) -> int:
        req = urllib.request.Request(f"{served['url']}/alerts/{'e' * 24}/actions/{action_id}",
                                     data=urllib.parse.urlencode(form).encode(), method="POST")
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"token": "x"}, auth=False) == 401
    assert post({"token": "stale"}) == 400
    with served["fleet"].connect() as conn:
        assert store.get(conn, action_id).state == "proposed"
    req = urllib.request.Request(served["url"] + "/silences/new", headers={
        "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
        token = resp.read().decode().split('name="token" value="')[1].split('"')[0]
    assert post({"token": token}) == 200 and post({"token": token}) == 200
    with served["fleet"].connect() as conn:
        row = store.get(conn, action_id)
    assert row.state == "approved" and row.approved_by == "ops (status page)" and row.approved_via == "page"
    assert [e["what"] for e in row.events] == ["proposed", "approved", "approval ignored"]


@pytest.mark.parametrize("actions, needle", [
    ([{"kind": "terminate_sesion"}], "did you mean 'terminate_session'"),
    ([{"kind": "terminate_session", "params": {"min_idle": 5}}], "takes no parameter 'min_idle'"),
    ([{"kind": "run_job"}], "needs params.job"),
    ([{"kind": "drop_slot", "auto": True}], "cannot be auto"),
    ([{"kind": "run_backlog", "params": {"task": "maintenance.run"}}], "must be a backlog task"),
])
def test_a_checks_actions_are_refused_in_one_line_naming_what_is_wrong(actions, needle):
    base = {"name": "x", "description": "d", "schedule": "1m", "query": "SELECT 1 AS value", "condition": "> 0",
            "severity": "warning", "summary": "s"}
    with pytest.raises(ValueError, match=needle):
        Check.model_validate({**base, "actions": actions})


def test_an_auto_action_is_approved_as_it_is_proposed_and_handed_to_the_task_after_commit(served, monitored):
    """`auto: true` (opt-in per action and check): approved by `auto` in the transaction that proposes it;
    run_check's outcome names it, and tasks/checks.py sends maintenance.action for it after commit."""
    from worker.checks.engine import run_check
    from worker.fleet.db import create

    check = Check.model_validate({
        "name": "auto_job", "description": "d", "schedule": "1m", "query": "SELECT 5 AS value", "condition": "> 1",
        "severity": "warning", "summary": "s",
        "actions": [{"kind": "run_job", "params": {"job": "fleet_history_retention"}, "auto": True},
                    {"kind": "vacuum_table", "params": {"freeze": True}}]})  # no `table` label: not proposed
    engine = create(monitored)
    try:
        outcome = run_check(check, monitored=engine, fleet=served["fleet"], now=datetime.now(UTC), routing=None)
    finally:
        engine.dispose()
    [action_id] = outcome.run_actions
    with served["fleet"].connect() as conn:
        row = store.get(conn, action_id)
        assert (row.kind, row.state, row.approved_by, row.approved_via) == ("run_job", "approved", "auto", "auto")
        assert [a["kind"] for a in store.for_alert(conn, outcome.transitions[0].fingerprint)] == ["run_job"]
