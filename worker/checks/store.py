"""The checks' tables, and their one writer: fleet.check_runs (one row per check and slot),
fleet.alerts (each instance's state), fleet.alert_events (every transition) and fleet.check_schedule
(what the running beat schedules). Also the reads the CLI, the metrics and the demo show."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.checks.spec import Check, queue_for
from worker.checks.state import Instance, Step


# -- check_runs --------------------------------------------------------------------------------------
def claim_slot(conn: Connection, check: str, slot: datetime, now: datetime, task_id: str | None) -> int | None:
    """The run's row for (check, slot), or None when another run has it: a concurrent duplicate blocks
    on the unique key until the first commits, then gets nothing."""
    row = conn.execute(
        sa.text("""INSERT INTO fleet.check_runs (check_name, slot, started_at, task_id)
                   VALUES (:c, :slot, :now, :tid) ON CONFLICT (check_name, slot) DO NOTHING RETURNING id"""),
        {"c": check, "slot": slot, "now": now, "tid": task_id},
    ).first()
    return None if row is None else row.id


def finish_run(conn: Connection, run_id: int, *, finished_at: datetime, duration_ms: int, rows: int, status: str,
               error: str | None, value: float | None = None, note: str | None = None) -> None:
    conn.execute(
        sa.text("""UPDATE fleet.check_runs SET finished_at = :fin, duration_ms = :d, rows = :rows,
                   status = :s, error = :e, value = :v, note = :note WHERE id = :id"""),
        {"fin": finished_at, "d": duration_ms, "rows": rows, "s": status, "e": error, "v": value, "note": note,
         "id": run_id},
    )


def note_is_new(conn: Connection, check: str, slot: datetime, note: str) -> bool:
    """Whether the run before `slot` did not already say `note` (a missing role is told once, not
    every run)."""
    prev = conn.execute(
        sa.text("""SELECT note FROM fleet.check_runs WHERE check_name = :c AND slot < :slot
                   AND finished_at IS NOT NULL ORDER BY slot DESC LIMIT 1"""),
        {"c": check, "slot": slot},
    ).first()
    return prev is None or prev.note != note


# -- alerts and alert_events -------------------------------------------------------------------------
def load_instances(conn: Connection, check: str, *, lock: bool = True) -> dict[str, Instance]:
    """The stored instances of a check, by fingerprint (locked for the evaluation's transaction)."""
    q = ("SELECT fingerprint, state, labels, active_at, fired_at, keep_firing_since, acked_at, last_eval_at "
         "FROM fleet.alerts WHERE check_name = :c")
    rows = conn.execute(sa.text(q + (" FOR UPDATE" if lock else "")), {"c": check})
    return {r.fingerprint: Instance(state=r.state, labels=dict(r.labels), active_at=r.active_at, fired_at=r.fired_at,
                                    keep_firing_since=r.keep_firing_since, acked_at=r.acked_at,
                                    evaluated_at=r.last_eval_at)
            for r in rows}


def save_step(conn: Connection, check: str, severity: str, step: Step, now: datetime, summary: str,
              database: str | None = None) -> None:
    """Store where an instance is after an evaluation, and its transition if it made one."""
    after = step.after
    conn.execute(
        sa.text("""
            INSERT INTO fleet.alerts (fingerprint, check_name, labels, severity, state, since, active_at,
                                      fired_at, resolved_at, last_value, last_eval_at, summary, keep_firing_since,
                                      database)
            VALUES (:fp, :c, CAST(:labels AS jsonb), :sev, :state, :now, :active_at, :fired_at,
                    :resolved_at, :value, :now, :summary, :keep, :db)
            ON CONFLICT (fingerprint) DO UPDATE SET
                state = EXCLUDED.state,
                since = CASE WHEN fleet.alerts.state = EXCLUDED.state THEN fleet.alerts.since ELSE EXCLUDED.since END,
                active_at = EXCLUDED.active_at, fired_at = EXCLUDED.fired_at,
                keep_firing_since = EXCLUDED.keep_firing_since,
                -- an acknowledgement lasts the episode: a new one (or none) clears it
                acked_at = CASE WHEN :keep_ack THEN fleet.alerts.acked_at END,
                acked_by = CASE WHEN :keep_ack THEN fleet.alerts.acked_by END,
                ack_comment = CASE WHEN :keep_ack THEN fleet.alerts.ack_comment END,
                resolved_at = COALESCE(EXCLUDED.resolved_at, fleet.alerts.resolved_at),
                last_value = COALESCE(EXCLUDED.last_value, fleet.alerts.last_value),
                last_eval_at = EXCLUDED.last_eval_at, severity = EXCLUDED.severity, database = EXCLUDED.database,
                summary = EXCLUDED.summary
        """),
        {"fp": step.fingerprint, "c": check, "labels": json.dumps(step.labels), "sev": severity, "state": after.state,
         "now": now, "active_at": after.active_at, "fired_at": after.fired_at,
         "resolved_at": now if after.state == "resolved" else None, "value": step.value, "summary": summary,
         "keep": after.keep_firing_since, "keep_ack": after.acked_at is not None, "db": database},
    )
    if step.changed:
        conn.execute(
            sa.text("""INSERT INTO fleet.alert_events (fingerprint, check_name, labels, severity, from_state,
                       to_state, value, at) VALUES (:fp, :c, CAST(:labels AS jsonb), :sev, :f, :t, :v, :now)"""),
            {"fp": step.fingerprint, "c": check, "labels": json.dumps(step.labels), "sev": severity,
             "f": step.before.state, "t": after.state, "v": step.value, "now": now},
        )


def acknowledge(conn: Connection, given: str, *, author: str, comment: str, now: datetime) -> list[Any]:
    """Acknowledge the firing alerts a fingerprint (or a unique prefix of one) or a check name names:
    they stop repeating until they resolve or fire anew, and a kept-firing one (keep_firing_for)
    resolves at its next evaluation whose condition is false. Returns the rows acknowledged;
    ValueError when nothing firing matches."""
    key = given.strip()
    rows = conn.execute(sa.text(
        """UPDATE fleet.alerts SET acked_at = :now, acked_by = :by, ack_comment = :comment
           WHERE state = 'firing' AND (check_name = :k OR (length(:k) >= 6 AND fingerprint LIKE :prefix))
           RETURNING fingerprint, check_name, labels, summary"""),
        {"now": now, "by": author, "comment": comment, "k": key, "prefix": key.lower() + "%"}).all()
    if not rows:
        firing = conn.execute(sa.text("SELECT count(*) FROM fleet.alerts WHERE state = 'firing'")).scalar()
        raise ValueError(f"no firing alert is {key!r} (a check name, or 6+ characters of a fingerprint from "
                         f"`opsfleet alerts list`; {firing} alert(s) firing)")
    return rows


def record_schedule(conn: Connection, checks: Iterable[Check], now: datetime) -> None:
    """The schedule a beat runs (its checks, queues and gaps) in fleet.check_schedule, replacing what
    was there: `checks_missed` compares each check's last run with it."""
    conn.execute(sa.text("DELETE FROM fleet.check_schedule"))
    rows = [{"c": c.name, "q": queue_for(c), "g": c.schedule.longest_gap().total_seconds(), "e": c.enabled, "at": now}
            for c in checks]
    if rows:
        conn.execute(sa.text("""INSERT INTO fleet.check_schedule (check_name, queue, longest_gap_s, enabled, recorded_at)
                                VALUES (:c, :q, :g, :e, :at)"""), rows)


# -- reads -------------------------------------------------------------------------------------------
def last_runs(conn: Connection) -> dict[str, Any]:
    """Each check's latest run: started_at, status, error, note."""
    return {r.check_name: r for r in conn.execute(sa.text(
        "SELECT DISTINCT ON (check_name) check_name, started_at, status, error, note FROM fleet.check_runs "
        "ORDER BY check_name, started_at DESC"))}


def states_by_check(conn: Connection) -> dict[str, str]:
    """The states each check's instances are in, comma-separated."""
    return {r.check_name: r.states for r in conn.execute(sa.text(
        "SELECT check_name, string_agg(DISTINCT state, ',') AS states FROM fleet.alerts GROUP BY check_name"))}


def alerts(conn: Connection, state: str | None = None) -> list[Any]:
    """Alert instances, optionally in one state."""
    return conn.execute(sa.text(
        "SELECT * FROM fleet.alerts WHERE (CAST(:s AS text) IS NULL OR state = :s) ORDER BY state, check_name"),
        {"s": state}).all()


def history(conn: Connection, since: datetime, check: str | None = None, limit: int = 1000) -> list[Any]:
    """Transitions since `since`, newest first (optionally of one check)."""
    return conn.execute(sa.text(
        """SELECT at, check_name, severity, labels, from_state, to_state, value FROM fleet.alert_events
           WHERE at >= :since AND (CAST(:c AS text) IS NULL OR check_name = :c) ORDER BY at DESC, id DESC
           LIMIT :lim"""), {"since": since, "c": check, "lim": limit}).all()
