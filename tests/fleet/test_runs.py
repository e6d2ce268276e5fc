"""worker.fleet.runs: one job-run recorder for maintenance and backlog, and one advisory-lock key
scheme for every lock the fleet takes, against a real Postgres."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worker.fleet import runs
from worker.fleet.runs import Space, job_key, lock_key, name_key


def rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_a_key_names_its_space_in_its_top_bits_so_spaces_never_collide():
    for space in Space:
        assert lock_key(space, 0) >> 48 == space
        assert lock_key(space, (1 << 48) - 1) >> 48 == space
    assert len({lock_key(s, 7) for s in Space}) == len(Space)
    # a run id and a transaction id of the same number, a name and a number: all different keys
    assert lock_key(Space.RUN, 42) != lock_key(Space.CONFIRMATION_GROUP, 42)
    with pytest.raises(ValueError):
        lock_key(Space.RUN, 1 << 48)
    with pytest.raises(ValueError):
        lock_key(Space.RUN, -1)
    assert all(-(1 << 63) <= lock_key(s, (1 << 48) - 1) < 1 << 63 for s in Space)  # a Postgres bigint


def test_a_maintenance_job_and_a_backlog_of_the_same_name_have_different_keys():
    for name in ("reprocess_confirmations", "x", "archive_webhook_logs"):
        assert job_key("maintenance", name) != job_key("backlog", name)
        assert job_key("maintenance", name) == name_key(Space.MAINTENANCE_JOB, name)
        assert job_key("backlog", name) >> 48 == Space.BACKLOG_JOB


def test_same_named_maintenance_and_backlog_runs_do_not_block_each_other(fleet):
    """A maintenance job holds its name exclusively and a backlog shares its own: with one name for
    both, neither may find the other's lock."""
    backlog = runs.start(fleet, family="backlog", job="shared_name", kind="backlog", params={}, task_id="b1",
                         exclusive=False)
    maintenance = runs.start(fleet, family="maintenance", job="shared_name", kind="purge", params={}, task_id="m1",
                             exclusive=True)
    with pytest.raises(runs.Busy):  # the same maintenance job twice: the second is skipped
        runs.start(fleet, family="maintenance", job="shared_name", kind="purge", params={}, task_id="m2",
                   exclusive=True)
    second_backlog = runs.start(fleet, family="backlog", job="shared_name", kind="backlog", params={}, task_id="b2",
                                exclusive=False)
    for run in (backlog, maintenance, second_backlog):
        run.finish("ok", rows=1, batches=1)
    assert sorted(rows(fleet, "SELECT task_id, status FROM fleet.job_runs")) == [
        ("b1", "ok"), ("b2", "ok"), ("m1", "ok"), ("m2", "skipped")]
    # every lock went with finish()
    again = runs.start(fleet, family="maintenance", job="shared_name", kind="purge", params={}, task_id="m3",
                       exclusive=True)
    again.finish("ok", rows=0, batches=0)


def test_a_run_whose_worker_died_is_closed_by_the_next_start_and_a_live_one_is_not(fleet):
    alive = runs.start(fleet, family="backlog", job="reprocess_confirmations", kind="backlog", params={},
                       task_id="alive", exclusive=False)
    dead = runs.start(fleet, family="maintenance", job="archive", kind="archive", params={}, task_id="dead",
                      exclusive=True)
    dead.abandon()  # the session ends as a killed worker's does: its locks go, its row stays running
    nxt = runs.start(fleet, family="maintenance", job="archive", kind="archive", params={}, task_id="next",
                     exclusive=True)
    assert dict(rows(fleet, "SELECT task_id, status FROM fleet.job_runs")) == {
        "alive": "running", "dead": "error", "next": "running"}
    assert rows(fleet, "SELECT error FROM fleet.job_runs WHERE task_id = 'dead'") == [
        ("worker lost before the run finished",)]
    assert [r["alive"] for r in runs.running(fleet, "backlog")] == [True]
    alive.finish("ok", rows=3, batches=1, extra={"result": {"sent": 3}})
    nxt.finish("error", rows=0, batches=0, error="boom")
    assert rows(fleet, "SELECT task_id, status, rows_affected, params->'result'->>'sent' FROM fleet.job_runs "
                       "WHERE task_id IN ('alive', 'next') ORDER BY task_id") == [
        ("alive", "ok", 3, "3"), ("next", "error", 0, None)]


def test_every_backlog_task_names_the_job_its_runs_are_recorded_under():
    """fleet.job_schedule (what maintenance_job_health judges) and fleet.job_runs must agree on a
    backlog's job name; a new backlog task without an entry in JOBS would be watched under the wrong one."""
    from worker.backlog.spec import JOBS
    from worker.fleet.names import KNOWN_TASKS

    assert {t for t in KNOWN_TASKS if t.startswith("backlog.")} == set(JOBS)
