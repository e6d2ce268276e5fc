"""Check evaluation: run a rule, move each alert instance through the state machine, and write the
transitions and the notifications they cause in one transaction.

Exactly one evaluation per (check, slot): the check_runs row is claimed in the same transaction that
records the outcome, so a doubled beat or a redelivered task does nothing. What a transition sends
is the outbox's decision (worker.notify.outbox.plan), not the engine's. Knows nothing of Celery;
tasks/checks.py is the thin entry point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from worker.checks import store
from worker.checks.collect import CheckError, Sample, collect
from worker.checks.spec import Check
from worker.checks.state import Step, advance
from worker.checks.templates import public_text, render
from worker.fleet.logs import get_logger
from worker.notify import outbox
from worker.notify.routing import Routing

log = get_logger(__name__)


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
    note: str | None = None  # why there was no data, as the query said (no_data_reason)
    note_is_new: bool = False  # the run before did not say it: log it (once, not every run)


def evaluate(check: Check, samples: list[Sample], conn: Connection, now: datetime,
             routing: Routing | None) -> tuple[list[Transition], list[str], bool]:
    """Apply samples to the stored alert states inside `conn`'s transaction.

    Returns (transitions, new notification ids, whether to remediate).
    """
    transitions: list[Transition] = []
    notifications: list[str] = []
    remediate = False
    for step in advance(check, store.load_instances(conn, check.name), samples, now):
        summary = render(check.summary, value=step.value, labels=step.labels, check=check.name)
        store.save_step(conn, check.name, check.severity, step, now, summary, database_of(check))
        if step.changed:
            transitions.append(Transition(step.fingerprint, step.labels, step.before.state, step.after.state, step.value))
            remediate |= step.after.state == "firing"
        if routing is not None:
            notifications += _notify(check, routing, conn, step, now, summary)
    return transitions, notifications, remediate and check.remediate is not None


def database_of(check: Check) -> str | None:
    """The database a SQL check reads (monitored | fleet), for inhibit rules' matchers; a probe has none."""
    return check.database if check.kind == "sql" else None


def _notify(check: Check, routing: Routing, conn: Connection, step: Step, now: datetime, summary: str) -> list[str]:
    fired_at = step.after.fired_at
    memory = outbox.StoredMemory(conn, check=check.name, severity=check.severity, fingerprint=step.fingerprint,
                                 labels=step.labels, database=database_of(check), fired_at=fired_at, now=now,
                                 routing=routing)
    decisions = outbox.plan(
        routing, check=check.name, severity=check.severity, labels=step.labels, fingerprint=step.fingerprint,
        before=step.before.state, after=step.after.state, fired_at=fired_at, now=now,
        last_eval_at=step.before.evaluated_at, acked=step.after.acked_at is not None, memory=memory)
    if not decisions:
        return []
    return outbox.write(conn, decisions, check=check.name, fingerprint=step.fingerprint, now=now,
                        payload=lambda: _payload(check, step, fired_at, now, summary))


def _payload(check: Check, step: Step, fired_at: datetime, now: datetime, summary: str) -> dict[str, Any]:
    """What every channel's message is built from (no secret, nothing of the provider)."""
    return {
        "check": check.name, "severity": check.severity,
        "status": "resolved" if step.after.state == "resolved" else "firing",
        "title": summary, "summary": summary,
        "description": render(check.details, value=step.value, labels=step.labels, check=check.name)
        if check.details else public_text(check.description),
        "labels": step.labels, "value": step.value, "condition": str(check.condition),
        "fingerprint": step.fingerprint, "runbook": check.runbook,
        "started_at": fired_at.isoformat(), "at": now.isoformat(), "database": database_of(check),
    }


def run_check(check: Check, *, monitored: Engine, fleet: Engine, now: datetime, routing: Routing | None,
              slot: datetime | None = None, task_id: str | None = None, redis_url: str | None = None,
              fleet_queries: Engine | None = None) -> Outcome:
    """Evaluate `check` once for its slot (see the module docstring).

    `monitored` runs the queries of monitored-database checks, `fleet_queries` (default: `fleet`)
    those of fleet-database checks; `fleet` holds the state. The workers pass
    worker.fleet.db.checks_engine() for both query engines."""
    slot = slot or check.schedule.slot(now)
    started = time.monotonic()
    with fleet.connect() as conn, conn.begin():
        run_id = store.claim_slot(conn, check.name, slot, now, task_id)
        if run_id is None:
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
                outcome.note = next((s.reason for s in outcome.samples if s.reason), None)
                outcome.note_is_new = outcome.note is not None and store.note_is_new(conn, check.name, slot,
                                                                                     outcome.note)
            outcome.transitions, outcome.notification_ids, outcome.remediate = evaluate(
                check, outcome.samples, conn, now, routing
            )
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        store.finish_run(conn, run_id, finished_at=now + timedelta(milliseconds=outcome.duration_ms),
                         duration_ms=outcome.duration_ms, rows=len(outcome.samples), status=outcome.status,
                         error=outcome.error, note=outcome.note,
                         value=outcome.samples[0].value if len(outcome.samples) == 1 else None)
    return outcome
