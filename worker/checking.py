"""Check evaluation: run a rule, move each alert instance through its state machine, and write the
transitions and the notifications they cause in one transaction.

    inactive -> pending (condition true, `for` not elapsed) -> firing -> resolved (-> pending ...)

Knows nothing of Celery; `tasks/checks.py` is the thin entry point.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.config import Check, Routing, render
from worker.db import ConnectionLost, psycopg_text, read_only_query
from worker.delivery import count_held_back
from worker.logs import get_logger

log = get_logger(__name__)


class CheckError(Exception):
    """The rule could not be evaluated (SQL error, timeout, non-numeric value); recorded, never fatal."""


@dataclass
class Sample:
    labels: dict[str, str]
    value: float | None


@dataclass
class Transition:
    fingerprint: str
    labels: dict[str, str]
    from_state: str
    to_state: str
    value: float | None


@dataclass
class Outcome:
    check: str
    slot: datetime
    status: str  # ok | no_data | error | skipped
    samples: list[Sample] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    notification_ids: list[str] = field(default_factory=list)  # due after their route's group_wait
    remediate: bool = False
    error: str | None = None
    duration_ms: int = 0


def fingerprint(check_name: str, labels: dict[str, str]) -> str:
    raw = json.dumps([check_name, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _number(v: Any, check: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, Decimal)):
        f = float(v)
        if math.isnan(f):
            return None
        return f
    raise CheckError(f"check {check}: column `value` must be numeric, got {type(v).__name__} {str(v)[:40]!r}")


def _query(check: Check, engine: Engine, now: datetime) -> tuple[list[str], list[tuple]]:
    query, _ = psycopg_text(check.query)  # config validation allows :now as the only bind parameter
    timeout_ms = int(check.timeout.total_seconds() * 1000)

    params = {"now": now}
    try:
        return read_only_query(engine, query, params, statement_timeout_ms=timeout_ms)
    except ConnectionLost:  # the pooled connection went away (a restart): once more, on a new one
        return read_only_query(engine, query, params, statement_timeout_ms=timeout_ms)


def collect_sql(check: Check, engine: Engine, now: datetime) -> list[Sample]:
    """Run the rule's query READ ONLY with statement and lock timeouts; one sample per row."""
    try:
        cols, rows = _query(check, engine, now)
    except (psycopg.Error, ConnectionLost) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "cannot insert multiple commands" in msg:
            msg = "the query must be one SQL statement (no `;` between statements)"
        raise CheckError(f"check {check.name}: {msg}") from None
    except sa.exc.DBAPIError as exc:  # the pool could not connect
        msg = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise CheckError(f"check {check.name}: {msg}") from None
    if "value" not in cols:
        raise CheckError(f"check {check.name}: the query must return a column named `value` (got {', '.join(cols) or 'no columns'})")
    v = cols.index("value")
    extra = check.labels
    label_cols = [(i, k) for i, k in enumerate(cols) if i != v]
    samples = []
    for row in rows:
        labels = {**extra, **{k: str(row[i]) for i, k in label_cols if row[i] is not None}}
        samples.append(Sample(labels=labels, value=_number(row[v], check.name)))
    return samples


def collect(check: Check, monitored: Engine, now: datetime, *, redis_url: str | None = None) -> list[Sample]:
    if check.kind == "sql":
        return collect_sql(check, monitored, now)
    from worker.probes import probe_http, probe_redis

    if check.kind == "http":
        return [Sample(labels=dict(check.labels), value=probe_http(check))]
    return [Sample(labels=dict(check.labels), value=probe_redis(check, redis_url))]


# -- the state machine -----------------------------------------------------------------------------
def next_state(state: str, active: bool | None, active_at: datetime | None, now: datetime,
               for_: timedelta) -> str:
    """active None means 'keep' (no data with no_data=keep)."""
    if active is None:
        return state
    if active:
        if state in ("inactive", "resolved"):
            return "firing" if for_ <= timedelta(0) else "pending"
        if state == "pending":
            return "firing" if active_at is not None and now - active_at >= for_ else "pending"
        return "firing"
    if state == "firing":
        return "resolved"
    if state == "pending":
        return "inactive"
    return state


def _active(check: Check, value: float | None) -> bool | None:
    if value is None:
        return {"ok": False, "alerting": True, "keep": None}[check.no_data]
    return check.condition.holds(value)


def evaluate(check: Check, samples: list[Sample], conn: Connection, now: datetime,
             routing: Routing | None) -> tuple[list[Transition], list[str], bool]:
    """Apply samples to the stored alert states inside `conn`'s transaction.

    Returns (transitions, new notification ids, whether to remediate).
    """
    existing = {
        r.fingerprint: r for r in conn.execute(
            sa.text("SELECT * FROM fleet.alerts WHERE check_name = :c FOR UPDATE"), {"c": check.name}
        )
    }
    seen: dict[str, Sample] = {fingerprint(check.name, s.labels): s for s in samples}
    # instances that vanished from the result are "no data" for this run
    for fp, row in existing.items():
        if fp not in seen and row.state in ("pending", "firing"):
            seen[fp] = Sample(labels=dict(row.labels), value=None)

    transitions: list[Transition] = []
    notifications: list[str] = []
    remediate = False
    for fp, sample in seen.items():
        row = existing.get(fp)
        state = row.state if row else "inactive"
        active_at = row.active_at if row else None
        fired_at = row.fired_at if row else None
        active = _active(check, sample.value)
        new = next_state(state, active, active_at, now, check.for_)
        if new == "pending" and state != "pending":
            active_at = now
        if new == "firing" and state != "firing":
            fired_at = now
            if state in ("inactive", "resolved"):
                active_at = now
        summary = render(check.summary, value=sample.value, labels=sample.labels, check=check.name)
        if row is None and new == "inactive" and sample.value is None:
            continue
        conn.execute(
            sa.text("""
                INSERT INTO fleet.alerts (fingerprint, check_name, labels, severity, state, since, active_at,
                                          fired_at, resolved_at, last_value, last_eval_at, summary)
                VALUES (:fp, :c, CAST(:labels AS jsonb), :sev, :state, :now, :active_at, :fired_at,
                        :resolved_at, :value, :now, :summary)
                ON CONFLICT (fingerprint) DO UPDATE SET
                    state = EXCLUDED.state,
                    since = CASE WHEN fleet.alerts.state = EXCLUDED.state THEN fleet.alerts.since ELSE EXCLUDED.since END,
                    active_at = EXCLUDED.active_at, fired_at = EXCLUDED.fired_at,
                    resolved_at = COALESCE(EXCLUDED.resolved_at, fleet.alerts.resolved_at),
                    last_value = COALESCE(EXCLUDED.last_value, fleet.alerts.last_value),
                    last_eval_at = EXCLUDED.last_eval_at, severity = EXCLUDED.severity,
                    summary = EXCLUDED.summary
            """),
            {"fp": fp, "c": check.name, "labels": json.dumps(sample.labels), "sev": check.severity, "state": new,
             "now": now, "active_at": active_at if new in ("pending", "firing") else None,
             "fired_at": fired_at if new in ("firing", "resolved") else None,
             "resolved_at": now if new == "resolved" else None, "value": sample.value, "summary": summary},
        )
        if new != state:
            t = Transition(fp, sample.labels, state, new, sample.value)
            transitions.append(t)
            conn.execute(
                sa.text("""INSERT INTO fleet.alert_events (fingerprint, check_name, labels, severity, from_state,
                           to_state, value, at) VALUES (:fp, :c, CAST(:labels AS jsonb), :sev, :f, :t, :v, :now)"""),
                {"fp": fp, "c": check.name, "labels": json.dumps(sample.labels), "sev": check.severity,
                 "f": state, "t": new, "v": sample.value, "now": now},
            )
            if new == "firing":
                remediate = True
        if routing is not None and fired_at is not None and (
            (new == "firing") or (new == "resolved" and state == "firing")
        ):
            notifications += _outbox(check, routing, conn, fp, sample, new, state, fired_at, now, summary)
    return transitions, notifications, remediate and check.remediate is not None


def _outbox(check: Check, routing: Routing, conn: Connection, fp: str, sample: Sample, new: str, old: str,
            fired_at: datetime, now: datetime, summary: str) -> list[str]:
    """Outbox rows for a firing/resolved instance; the UNIQUE dedup_key makes repeats a no-op."""
    labels = {"severity": check.severity, "check": check.name, **sample.labels}
    ids = []
    for route in routing.route_for(labels):
        if new == "resolved" and not route.send_resolved:
            continue
        channels = [ch for ch in route.channels if routing.channels[ch].kind != "digest"]
        if new == "firing":
            window = int((now - fired_at) / route.repeat_interval)
            transition = "firing" if window == 0 else "repeat"
            if old == "firing" and window == 0:
                # still firing, inside the repeat interval: nothing to send (counted for the digest),
                # unless a silence suppressed the first message and has ended since: then send it once now
                unsilenced = {ch: _ended_silence(conn, check, ch, fp, sample.labels, fired_at, now) for ch in channels}
                for ch in channels:
                    if not unsilenced[ch]:
                        count_held_back(conn, "deduplicated", ch, check.name, now)
                channels = [ch for ch in channels if unsilenced[ch]]
                if not channels:
                    continue
                transition = "unsilenced"
        else:
            window, transition = 0, "resolved"
        episode = int(fired_at.timestamp())
        for ch in channels:
            dedup = f"{ch}:{fp}:{transition}:{episode}:{window}"
            if transition == "unsilenced":
                dedup += f":{unsilenced[ch]}"
            payload = {
                "check": check.name, "severity": check.severity, "status": "resolved" if new == "resolved" else "firing",
                "title": summary, "summary": summary,
                "description": render(check.details or check.description, value=sample.value, labels=sample.labels,
                                      check=check.name),
                "labels": sample.labels, "value": sample.value, "fingerprint": fp, "runbook": check.runbook,
                "started_at": fired_at.isoformat(), "at": now.isoformat(),
            }
            row = conn.execute(
                sa.text("""INSERT INTO fleet.notifications (channel, fingerprint, check_name, transition, payload,
                           dedup_key, next_attempt_at)
                           VALUES (:ch, :fp, :c, :t, CAST(:p AS jsonb), :k, :due)
                           ON CONFLICT (dedup_key) DO NOTHING RETURNING id"""),
                {"ch": ch, "fp": fp, "c": check.name, "t": transition, "p": json.dumps(payload, default=str),
                 "k": dedup, "due": now + route.group_wait},
            ).first()
            if row:
                ids.append(str(row.id))
            else:
                count_held_back(conn, "deduplicated", ch, check.name, now)
    return ids


def _ended_silence(conn: Connection, check: Check, channel: str, fp: str, labels: dict[str, str],
                   fired_at: datetime, now: datetime) -> str | None:
    """The silence that suppressed this episode's latest message on `channel`, if it has ended."""
    from worker.silences import matching

    last = conn.execute(
        sa.text("""SELECT status, suppressed_by FROM fleet.notifications
                   WHERE fingerprint = :fp AND channel = :ch AND created_at >= :fired
                   ORDER BY created_at DESC LIMIT 1"""),
        {"fp": fp, "ch": channel, "fired": fired_at},
    ).first()
    if last is None or last.status != "suppressed" or matching(conn, check.name, labels, now):
        return None
    return str(last.suppressed_by)


def run_check(check: Check, *, monitored: Engine, fleet: Engine, now: datetime, routing: Routing | None,
              slot: datetime | None = None, task_id: str | None = None, redis_url: str | None = None,
              fleet_queries: Engine | None = None) -> Outcome:
    """Exactly one evaluation per (check, slot): the check_runs row is claimed in the same
    transaction that records the outcome, so a doubled beat or a redelivered task does nothing.

    `monitored` runs the queries of monitored-database checks, `fleet_queries` (default: `fleet`)
    those of fleet-database checks; `fleet` holds the state. The workers pass
    worker.db.checks_engine() for both query engines."""
    slot = slot or check.schedule.slot(now)
    started = time.monotonic()
    with fleet.connect() as conn, conn.begin():
        claimed = conn.execute(
            sa.text("""INSERT INTO fleet.check_runs (check_name, slot, started_at, task_id)
                       VALUES (:c, :slot, :now, :tid) ON CONFLICT (check_name, slot) DO NOTHING RETURNING id"""),
            {"c": check.name, "slot": slot, "now": now, "tid": task_id},
        ).first()
        if claimed is None:
            return Outcome(check.name, slot, "skipped")
        outcome = Outcome(check.name, slot, "ok")
        try:
            source = (fleet_queries or fleet) if check.database == "fleet" else monitored
            outcome.samples = collect(check, source, now, redis_url=redis_url)
        except CheckError as exc:
            outcome.status, outcome.error = "error", str(exc)
        if outcome.status == "ok":
            if not outcome.samples or all(s.value is None for s in outcome.samples):
                outcome.status = "no_data"
            outcome.transitions, outcome.notification_ids, outcome.remediate = evaluate(
                check, outcome.samples, conn, now, routing
            )
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        conn.execute(
            sa.text("""UPDATE fleet.check_runs SET finished_at = :fin, duration_ms = :d, rows = :rows,
                       status = :s, error = :e WHERE id = :id"""),
            {"fin": now + timedelta(milliseconds=outcome.duration_ms), "d": outcome.duration_ms,
             "rows": len(outcome.samples), "s": outcome.status, "e": outcome.error, "id": claimed.id},
        )
    return outcome
