"""The status page's jobs section and `opsfleet health`'s maintenance probe read each job's last run on
each target it runs on (fleet.job_runs.target, migration 0009): a failed run on one target is that
target's, and another target's newer success does not hide it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tests.support.targets import two_postgres_targets
from worker.watch.health import _fleet_state
from worker.web import status


def test_a_job_on_two_targets_shows_each_targets_last_run(fleet, tmp_path, monkeypatch):
    cfg = two_postgres_targets(tmp_path, monkeypatch)
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        for target, state, ago in (("a", "error", 20), ("b", "ok", 10)):  # b's success is the newer run
            conn.execute(sa.text("INSERT INTO fleet.job_runs (job, kind, target, started_at, finished_at, status, "
                                 "error) VALUES ('analyze_weekly', 'analyze', :t, :at, :at, :s, :e)"),
                         {"t": target, "s": state, "at": now - timedelta(minutes=ago),
                          "e": "permission denied" if state == "error" else None})
    with fleet.connect() as conn:
        rows = {(j["job"], j["target"]): j for j in status.jobs(conn, cfg, now)}
    assert rows[("analyze_weekly", "a")]["status"] == "error" and rows[("analyze_weekly", "b")]["status"] == "ok"
    assert rows[("analyze_weekly", "a")]["error"] == "permission denied"
    probe = next(p for p in _fleet_state(fleet, cfg, now) if p.name == "maintenance jobs")
    assert probe.state == "fail" and "analyze_weekly@a" in probe.detail and "analyze_weekly@b" not in probe.detail


def test_a_job_beat_scheduled_lately_is_not_due_yet_and_one_that_never_ran_in_two_periods_is_a_warning(
        fleet, tmp_path, monkeypatch):
    """A fresh fleet is not degraded for a week because a weekly job has not come round: a job that never
    ran counts from when the running beat scheduled it (fleet.job_schedule), as a stale one does from
    its last run; without beat's record, or two periods after it, it is a warning."""
    from worker.fleet.runs import record_schedule
    from worker.maintenance.spec import scheduled_jobs

    cfg = two_postgres_targets(tmp_path, monkeypatch)
    now = datetime.now(UTC)

    def probe(recorded_ago: timedelta | None):
        with fleet.begin() as conn:
            record_schedule(conn, scheduled_jobs(cfg.scheduled_maintenance()) if recorded_ago is not None else [],
                            now - (recorded_ago or timedelta(0)))
        return next(p for p in _fleet_state(fleet, cfg, now) if p.name == "maintenance jobs")

    try:
        lately = probe(timedelta(minutes=1))
        assert lately.state == "ok" and "not due yet" in lately.detail, lately
        assert "analyze_weekly@a" in lately.data["not_due_yet"] and lately.data["never_ran"] == []
        for ago in (timedelta(days=30), None):  # beat started them a month ago; no beat recorded them
            missing = probe(ago)
            assert missing.state == "warn" and "never ran yet" in missing.detail and "analyze_weekly@a" in missing.detail
    finally:
        with fleet.begin() as conn:
            conn.execute(sa.text("DELETE FROM fleet.job_schedule"))
