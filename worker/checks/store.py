"""The checks' tables, and their one writer: fleet.check_runs (one row per check and slot),
fleet.alerts (each instance's state), fleet.alert_events (every transition) and fleet.check_schedule
(what the running beat schedules). Also the reads the CLI, the metrics and the demo show."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection

from worker.checks.spec import Check, Scheduled
from worker.checks.state import Instance, Step
from worker.fleet.db import psycopg_text

# Statements the evaluation runs every time, parsed once (sa.text() parses its text for bind names).
_COLUMNS = ("fingerprint, state, labels, active_at, fired_at, keep_firing_since, acked_at, last_eval_at, "
            "last_value, summary, severity, database, target")
_WHERE_CHECK = "check_name = :c AND (target = :t OR (:t = 'default' AND target = ''))"
# The run's row, whole (its query has run: the outcome is known), claimed with the instances it may
# move, locked, in one statement: a concurrent duplicate blocks on the unique key until the first
# commits, then gets no row (and locks nothing). An instance a concurrent run of another slot inserts
# meanwhile is not among them (it was not there when the statement began): save_steps finds out, and
# the run is recorded again under the (check, target)'s lock (claim(..., fingerprints=...)), which
# also loads the rows of the samples' fingerprints wherever they are (an instance of the check kept
# under the other spelling of its target is adopted, as a known one).
# The claim also lets the transaction commit without waiting for its WAL to reach the disk
# (synchronous_commit off, for this transaction alone): a run whose instances all stay inactive or
# resolved writes its row and at most their new values, and a crash of the fleet's Postgres (not of
# a worker) may lose the last such runs (at most 3 x wal_writer_delay, 0.6 s by default: those slots
# then read as not run; nothing was sent for them). save_steps turns it back on for a transition or a
# pending or firing instance: they and the notifications written with them commit durably.
_CLAIM_SQL = """
    WITH claim AS (
        INSERT INTO fleet.check_runs (check_name, target, slot, started_at, task_id, finished_at, duration_ms,
                                      rows, status, error, value, note)
        VALUES (:c, :t, :slot, :now, :tid, :fin, :d, :rows, :s, :e, :v, :note)
        ON CONFLICT (check_name, target, slot) DO NOTHING RETURNING id)
    SELECT claim.id AS run_id, set_config('synchronous_commit', 'off', true) AS lazy, a.* FROM claim
    LEFT JOIN LATERAL (SELECT {columns} FROM fleet.alerts WHERE {where} FOR UPDATE) a ON true"""
# Sent through psycopg itself (_driver_rows): SQLAlchemy's execution and result rows cost 0.12 ms a
# run here, a tenth of a one-instance run's time beyond its query (bench/RESULTS.md).
_CLAIM = psycopg_text(_CLAIM_SQL.format(columns=_COLUMNS, where=_WHERE_CHECK))[0]
_CLAIM_WIDE = psycopg_text(_CLAIM_SQL.format(
    columns=_COLUMNS, where=f"({_WHERE_CHECK}) OR fingerprint = ANY(CAST(:fps AS text[]))"))[0]
# Every run of a (check, target) waits for the one in flight to commit (`default` and the implicit ''
# are one): taken before the claim, whose statement then sees what that one wrote.
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended("
                "'opsfleet.check:' || :c || '/' || CASE WHEN :t = 'default' THEN '' ELSE :t END, 0))")
_PREVIOUS_NOTE = sa.text("""SELECT note FROM fleet.check_runs WHERE check_name = :c AND target = :t AND slot < :slot
                            AND finished_at IS NOT NULL ORDER BY slot DESC LIMIT 1""")
_INSTANCES = f"SELECT {_COLUMNS} FROM fleet.alerts WHERE {_WHERE_CHECK}"  # noqa: S608 (constants)
_INSTANCES_LOCKED, _INSTANCES_READ = sa.text(_INSTANCES + " FOR UPDATE"), sa.text(_INSTANCES)
# Where every instance is after an evaluation, in one statement however many (the rows as one jsonb
# array): those the evaluation loaded (locked) updated, new ones inserted, and the transitions
# recorded; it answers how many it inserted. One that a concurrent run of another slot inserted
# meanwhile is not overwritten (ON CONFLICT DO NOTHING, after waiting for that run to commit): the
# count falls short and save_steps raises InstanceRace (the run, rolled back, is recorded again). Sent
# unprepared (save_steps), so planned for its own values: the UPDATE finds its rows through the
# primary key (`= ANY(:known)`); a prepared (generic) plan made while fleet.alerts was small kept
# scanning the whole table once it had grown (bench/RESULTS.md: 300 targets missed half their slots).
_STEPS = """
    WITH r AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
                   fp text, labels jsonb, state text, active_at timestamptz, fired_at timestamptz,
                   resolved_at timestamptz, value float8, summary text, keep timestamptz, keep_ack boolean,
                   known boolean)),
    updated AS (
        UPDATE fleet.alerts a SET
            state = r.state, since = CASE WHEN a.state = r.state THEN a.since ELSE :now END,
            active_at = r.active_at, fired_at = r.fired_at, keep_firing_since = r.keep,
            -- an acknowledgement lasts the episode: a new one (or none) clears it
            acked_at = CASE WHEN r.keep_ack THEN a.acked_at END,
            acked_by = CASE WHEN r.keep_ack THEN a.acked_by END,
            ack_comment = CASE WHEN r.keep_ack THEN a.ack_comment END,
            resolved_at = COALESCE(r.resolved_at, a.resolved_at), last_value = COALESCE(r.value, a.last_value),
            last_eval_at = :now, severity = :sev, database = :db, summary = r.summary, labels = r.labels,
            target = :target  -- a declared `default` adopts the instances of the implicit one
        FROM r WHERE a.fingerprint = ANY(CAST(:known AS text[])) AND a.fingerprint = r.fp),
    inserted AS (
        INSERT INTO fleet.alerts (fingerprint, check_name, labels, severity, state, since, active_at, fired_at,
                                  resolved_at, last_value, last_eval_at, summary, keep_firing_since, database,
                                  target)
        SELECT r.fp, :c, r.labels, :sev, r.state, :now, r.active_at, r.fired_at, r.resolved_at, r.value, :now,
               r.summary, r.keep, :db, :target FROM r WHERE NOT r.known
        ON CONFLICT (fingerprint) DO NOTHING RETURNING 1)"""
_EVENTS = """,
    events AS (
        INSERT INTO fleet.alert_events (fingerprint, check_name, labels, severity, from_state, to_state, value, at,
                                        target)
        SELECT e.fp, :c, e.labels, :sev, e.f, e.t, e.v, :now, :target
        FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e(fp text, labels jsonb, f text, t text, v float8))"""
_COUNT = "\n    SELECT count(*), set_config('synchronous_commit', :sync, true) FROM inserted"  # (durable: 'on')
_SAVE, _SAVE_WITH_EVENTS = psycopg_text(_STEPS + _COUNT)[0], psycopg_text(_STEPS + _EVENTS + _COUNT)[0]


class InstanceRace(Exception):
    """An instance this run would insert was inserted by a concurrent run of the check (another slot)
    since the run's claim: roll back and record the run again, under the check's lock."""


# -- check_runs --------------------------------------------------------------------------------------
def claim(conn: Connection, check: str, slot: datetime, now: datetime, task_id: str | None, target: str, *,
          duration_ms: int, rows: int, status: str, error: str | None, value: float | None,
          note: str | None, fingerprints: list[str] | None = None) -> tuple[int | None, dict[str, Instance]]:
    """The run of (check, target, slot), recorded with its outcome, and the check's instances on the
    target (locked for the transaction); (None, {}) when another run has the slot. With `fingerprints`
    (a run recorded again after InstanceRace): under the (check, target)'s lock, with those
    fingerprints' rows too."""
    params = {"c": check, "t": target, "slot": slot, "now": now, "tid": task_id,
              "fin": now + timedelta(milliseconds=duration_ms), "d": duration_ms, "rows": rows,
              "s": status, "e": error, "v": value, "note": note}
    if fingerprints is not None:
        conn.execute(_LOCK, {"c": check, "t": target})
        found = _driver_rows(conn, _CLAIM_WIDE, {**params, "fps": fingerprints})
    else:
        found = _driver_rows(conn, _CLAIM, params)
    if not found:
        return None, {}
    return found[0].run_id, {r.fingerprint: _instance(r) for r in found if r.fingerprint is not None}


def _driver_rows(conn: Connection, query: str, params: dict[str, Any]) -> list[Any]:
    """`query`'s rows (named tuples) run by psycopg on `conn`'s connection, in its transaction; an error
    raised as SQLAlchemy's would be (a DBAPIError, `connection_invalidated` when the connection is lost,
    which the pool then replaces)."""
    raw = conn.connection.driver_connection
    try:
        return raw.cursor(row_factory=namedtuple_row).execute(query, params).fetchall()
    except psycopg.Error as exc:
        lost = raw.broken or raw.closed
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(query, params, exc, psycopg.Error, connection_invalidated=lost) from exc


def note_is_new(conn: Connection, check: str, slot: datetime, note: str, target: str = "") -> bool:
    """Whether the run before `slot` did not already say `note` (a missing role is told once, not
    every run)."""
    prev = conn.execute(_PREVIOUS_NOTE, {"c": check, "t": target, "slot": slot}).first()
    return prev is None or prev.note != note


# -- alerts and alert_events -------------------------------------------------------------------------
def load_instances(conn: Connection, check: str, *, lock: bool = True, target: str = "") -> dict[str, Instance]:
    """The stored instances of a check on one target, by fingerprint (locked for the evaluation's
    transaction): another target's instances of the same check are not this evaluation's."""
    rows = conn.execute(_INSTANCES_LOCKED if lock else _INSTANCES_READ, {"c": check, "t": target})
    return {r.fingerprint: _instance(r) for r in rows}


def _instance(r: Any) -> Instance:
    return Instance(state=r.state, labels=dict(r.labels), active_at=r.active_at, fired_at=r.fired_at,
                    keep_firing_since=r.keep_firing_since, acked_at=r.acked_at, evaluated_at=r.last_eval_at,
                    stored=(r.last_value, r.summary, r.severity, r.database, r.target))


def save_steps(conn: Connection, check: str, severity: str, steps: list[tuple[Step, str]], now: datetime,
               database: str | None = None, target: str = "") -> None:
    """Store where each instance is after an evaluation (each with its rendered summary), and the
    transitions they made: one statement, however many instances (a 40-instance check is one round
    trip). A step whose instance was loaded (its `before` has an evaluation) updates that row, unless
    nothing of it would change (unchanged): a run whose instances all stay where they were writes
    none (no statement)."""
    rows, events = [], []
    for step, summary in steps:
        after = step.after
        if unchanged(step, summary, severity, database, target):
            continue
        rows.append({"fp": step.fingerprint, "labels": step.labels, "state": after.state,
                     "active_at": _iso(after.active_at), "fired_at": _iso(after.fired_at),
                     "resolved_at": _iso(now) if after.state == "resolved" and step.changed else None,
                     "value": json_number(step.value),
                     "summary": summary, "keep": _iso(after.keep_firing_since), "keep_ack": after.acked_at is not None,
                     "known": step.before.evaluated_at is not None})
        if step.changed:
            events.append({"fp": step.fingerprint, "labels": step.labels, "f": step.before.state, "t": after.state,
                           "v": json_number(step.value)})
    if not rows:
        return
    # a transition, or a pending or firing instance (whose notifications are written with it), commits
    # durably; rows that stay inactive or resolved (a new value, a new instance) need not wait for the disk
    durable = bool(events) or any(r["state"] in ("pending", "firing") for r in rows)
    params = {"rows": json.dumps(rows), "c": check, "sev": severity, "now": now, "db": database, "target": target,
              "sync": "on" if durable else "off",
              "known": [r["fp"] for r in rows if r["known"]]}
    raw = conn.connection.driver_connection  # psycopg's, in the transaction: prepare=False is not SQLAlchemy's to give
    if events:
        cur = raw.execute(_SAVE_WITH_EVENTS, {**params, "events": json.dumps(events)}, prepare=False)
    else:
        cur = raw.execute(_SAVE, params, prepare=False)
    inserted = cur.fetchone()[0]
    if inserted != len(rows) - len(params["known"]):
        raise InstanceRace(check)


def unchanged(step: Step, summary: str, severity: str, database: str | None, target: str) -> bool:
    """Whether writing the step would leave its row as it is but for last_eval_at: an instance that
    stays inactive or resolved with the same value, summary, labels and config. (A pending or firing
    one is always written: its last evaluation times its repeats and escalations, worker.notify.plan.)"""
    before, after = step.before, step.after
    return (not step.changed and after.state in ("inactive", "resolved") and before.stored is not None
            and before.stored == (step.value, summary, severity, database, target) and after.labels == before.labels
            and (after.active_at, after.fired_at, after.keep_firing_since, after.acked_at)
            == (before.active_at, before.fired_at, before.keep_firing_since, before.acked_at))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def json_number(value: float | None) -> float | str | None:
    """A value as JSON (jsonb) can carry it: NaN and the infinities, which JSON has not, as the text
    float8 and Python's float() read ('nan', 'inf', '-inf')."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else str(value)  # 'nan', 'inf', '-inf'


def acknowledge(conn: Connection, given: str, *, author: str, comment: str, now: datetime,
                target: str | None = None) -> list[Any]:
    """Acknowledge the firing alerts a fingerprint (or a unique prefix of one) or a check name names
    (only those of one target, its key, when `target` is given): they stop repeating until they
    resolve or fire anew, and a kept-firing one (keep_firing_for) resolves at its next evaluation whose
    condition is false. Returns the rows acknowledged; ValueError when nothing firing matches."""
    key = given.strip()
    rows = conn.execute(sa.text(
        """UPDATE fleet.alerts SET acked_at = :now, acked_by = :by, ack_comment = :comment
           WHERE state = 'firing' AND (check_name = :k OR (length(:k) >= 6 AND fingerprint LIKE :prefix))
             AND (CAST(:t AS text) IS NULL OR target = :t)
           RETURNING fingerprint, check_name, labels, summary, target"""),
        {"now": now, "by": author, "comment": comment, "k": key, "prefix": key.lower() + "%", "t": target}).all()
    if not rows:
        firing = conn.execute(sa.text("SELECT count(*) FROM fleet.alerts WHERE state = 'firing' "
                                      "AND (CAST(:t AS text) IS NULL OR target = :t)"), {"t": target}).scalar()
        of = "" if target is None else " of that target"
        raise ValueError(f"no firing alert{of} is {key!r} (a check name, or 6+ characters of a fingerprint from "
                         f"`opsfleet alerts list`; {firing} alert(s) firing{of})")
    return rows


def record_schedule(conn: Connection, runs: Iterable[Scheduled | Check], now: datetime) -> None:
    """The schedule a beat runs (its checks on each target, queues and gaps) in fleet.check_schedule,
    replacing what was there: `checks_missed` compares each (check, target)'s last run with it."""
    conn.execute(sa.text("DELETE FROM fleet.check_schedule"))
    rows = []
    for run in runs:
        run = run if isinstance(run, Scheduled) else Scheduled(run)
        c = run.check
        rows.append({"c": c.name, "t": run.key, "q": run.queue_name, "g": c.schedule.longest_gap().total_seconds(),
                     "e": c.enabled, "at": now})
    if rows:
        conn.execute(sa.text("""INSERT INTO fleet.check_schedule (check_name, target, queue, longest_gap_s, enabled,
                                                                  recorded_at)
                                VALUES (:c, :t, :q, :g, :e, :at)"""), rows)


# -- reads -------------------------------------------------------------------------------------------
# `target` is a target's key (worker.targets.Target.key); None: every target's.
def last_runs(conn: Connection, target: str | None = None) -> dict[str, Any]:
    """Each check's latest run (of one target, or of any): started_at, status, error, note."""
    return {r.check_name: r for r in conn.execute(sa.text(
        "SELECT DISTINCT ON (check_name) check_name, started_at, status, error, note FROM fleet.check_runs "
        "WHERE CAST(:t AS text) IS NULL OR target = :t ORDER BY check_name, started_at DESC"), {"t": target})}


def states_by_check(conn: Connection, target: str | None = None) -> dict[str, str]:
    """The states each check's instances (of one target, or of all) are in, comma-separated."""
    return {r.check_name: r.states for r in conn.execute(sa.text(
        "SELECT check_name, string_agg(DISTINCT state, ',') AS states FROM fleet.alerts "
        "WHERE CAST(:t AS text) IS NULL OR target = :t GROUP BY check_name"), {"t": target})}


def alerts(conn: Connection, state: str | None = None, target: str | None = None) -> list[Any]:
    """Alert instances, optionally in one state, optionally of one target."""
    return conn.execute(sa.text(
        "SELECT * FROM fleet.alerts WHERE (CAST(:s AS text) IS NULL OR state = :s) "
        "AND (CAST(:t AS text) IS NULL OR target = :t) ORDER BY state, check_name, target"),
        {"s": state, "t": target}).all()


def history(conn: Connection, since: datetime, check: str | None = None, limit: int = 1000,
            target: str | None = None) -> list[Any]:
    """Transitions since `since`, newest first (optionally of one check, of one target)."""
    return conn.execute(sa.text(
        """SELECT at, check_name, severity, labels, from_state, to_state, value, target FROM fleet.alert_events
           WHERE at >= :since AND (CAST(:c AS text) IS NULL OR check_name = :c)
             AND (CAST(:t AS text) IS NULL OR target = :t) ORDER BY at DESC, id DESC
           LIMIT :lim"""), {"since": since, "c": check, "lim": limit, "t": target}).all()
