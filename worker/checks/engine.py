"""Check evaluation: run a rule, move each alert instance through the state machine, and write the
transitions and the notifications they cause in one transaction.

Exactly one evaluation per (check, slot): the check_runs row is claimed in the same transaction that
records the outcome, so a doubled beat or a redelivered task writes nothing (it runs its read-only
query first, outside that transaction, then finds the slot taken). What a transition sends
is the outbox's decision (worker.notify.plan.plan), not the engine's. Knows nothing of Celery;
tasks/checks.py is the thin entry point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from worker.actions import store as actions
from worker.actions.catalog import KINDS
from worker.checks import evidence, store
from worker.checks.collect import CheckError, Sample, collect
from worker.checks.spec import Check
from worker.checks.state import Instance, Step, advance, fingerprint
from worker.checks.templates import public_text, render
from worker.fleet.logs import get_logger
from worker.notify import outbox, silences
from worker.notify.plan import ESCALATED, plan
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
    # what to enqueue after commit: per channel, its first new row and when it is due (one delivery
    # per channel folds the run's other rows into one message)
    deliveries: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    remediate: bool = False
    run_actions: list[str] = field(default_factory=list)  # actions approved by `auto`: sent after commit
    error: str | None = None
    duration_ms: int = 0
    note: str | None = None  # why there was no data, as the query said (no_data_reason)
    note_is_new: bool = False  # the run before did not say it: log it (once, not every run)


Gatherer = Callable[[dict[str, str]], list[dict[str, Any]]]


def evaluate(check: Check, samples: list[Sample], conn: Connection, now: datetime,
             routing: Routing | None, first: dict[str, tuple[str, datetime]] | None = None, *,
             target: str = "", gather: Gatherer | None = None, run_actions: list[str] | None = None,
             instances: dict[str, Instance] | None = None) -> tuple[list[Transition], list[str], bool]:
    """Apply samples to the stored alert states inside `conn`'s transaction.

    `gather(labels)` collects the check's evidence for an instance that goes firing: stored with it
    (worker.checks.evidence) and carried by its notifications. Returns (transitions, new notification
    ids, whether to remediate). An instance that goes firing proposes its check's `actions` (those
    whose labels it has), an `auto` one approved at once and its id added to `run_actions`; one that
    resolves expires what it proposed and nobody approved. `instances`: the check's stored instances,
    loaded and locked by the caller (run_check's claim); default: loaded here.
    """
    transitions: list[Transition] = []
    notifications: list[str] = []
    remediate = False
    steps = [(step, render(check.summary, value=step.value, labels=step.labels, check=check.name))
             for step in advance(check, store.load_instances(conn, check.name, target=target)
                                 if instances is None else instances, samples, now)]
    store.save_steps(conn, check.name, check.severity, steps, now, database_of(check), target)
    for step, summary in steps:
        found, proposed = None, None
        if step.changed:
            transitions.append(Transition(step.fingerprint, step.labels, step.before.state, step.after.state, step.value))
            remediate |= step.after.state == "firing"
            sections: list[dict[str, Any]] = []
            if step.after.state == "firing" and gather is not None and check.evidence:
                sections = gather(step.labels)
                evidence.save(conn, fingerprint=step.fingerprint, target=target, check=check.name, at=now,
                              reason="firing", sections=sections)
                found = evidence.compact(sections)
            if step.after.state == "firing" and check.actions:
                proposed = _propose(conn, check, step, target, now, sections, run_actions)
            elif step.after.state == "resolved" and check.actions:
                actions.expire(conn, fingerprint=step.fingerprint, target=target, at=now)
            if step.after.state == "resolved":
                silences.end_with(conn, step.fingerprint, now)  # a silence "until it resolves"
        if routing is not None:
            notifications += _notify(check, routing, conn, step, now, summary, first, found, proposed)
    return transitions, notifications, remediate and check.remediate is not None


def _propose(conn: Connection, check: Check, step: Step, target: str, now: datetime,
             sections: list[dict[str, Any]], run_actions: list[str] | None) -> list[dict[str, Any]]:
    """The check's actions for this instance: each proposed with its dry run (an `auto` one approved
    at once); what a message shows of them."""
    out = []
    for spec in check.actions:
        kind = KINDS[spec.kind]
        if any(not step.labels.get(label) for label in kind.needs):
            log.warning("action_not_proposed", check=check.name, action=spec.kind,
                        reason=f"the alert has no {', '.join(kind.needs)} label")
            continue
        params = spec.merged()
        dry_run = kind.describe(step.labels, params, sections)
        nid = actions.propose(conn, fingerprint=step.fingerprint, target=target, check=check.name, kind=spec.kind,
                              params=params, labels=step.labels, dry_run=dry_run, at=now, auto=spec.auto)
        if spec.auto and actions.approve(conn, nid, who="auto", via="auto", at=now) and run_actions is not None:
            run_actions.append(nid)
        out.append({"id": nid, "kind": spec.kind, "dry_run": dry_run, "confirm": kind.confirm, "auto": spec.auto})
    return out


def database_of(check: Check) -> str | None:
    """The database a SQL check reads (monitored | fleet), for inhibit rules' matchers; a probe has none."""
    return check.database if check.kind == "sql" else None


def _notify(check: Check, routing: Routing, conn: Connection, step: Step, now: datetime, summary: str,
            first: dict[str, tuple[str, datetime]] | None, found: list[dict[str, Any]] | None = None,
            proposed: list[dict[str, Any]] | None = None) -> list[str]:
    fired_at = step.after.fired_at
    memory = outbox.StoredMemory(conn, check=check.name, severity=check.severity, fingerprint=step.fingerprint,
                                 labels=step.labels, database=database_of(check), fired_at=fired_at, now=now,
                                 routing=routing)
    decisions = plan(
        routing, check=check.name, severity=check.severity, labels=step.labels, fingerprint=step.fingerprint,
        before=step.before.state, after=step.after.state, fired_at=fired_at, now=now,
        last_eval_at=step.before.evaluated_at, acked=step.after.acked_at is not None, memory=memory)
    if not decisions:
        return []
    steps: dict[str, list] = {}  # an escalation step's message says so: its own payload per step
    for d in decisions:
        steps.setdefault(d.dedup_key.rsplit(":", 1)[1] if d.reason == ESCALATED and d.dedup_key else "", []).append(d)
    ids: list[str] = []
    for step_no, group in steps.items():
        ids += outbox.write(conn, group, check=check.name, fingerprint=step.fingerprint, now=now, first=first,
                            payload=lambda n=step_no: _escalated(_payload(check, step, fired_at, now, summary, found,
                                                                          proposed), n, fired_at, now))
    return ids


def _escalated(payload: dict[str, Any], step_no: str, fired_at: datetime, now: datetime) -> dict[str, Any]:
    """An escalation step's notice: the alert's, titled as escalated (how long it has fired unacknowledged)."""
    if not step_no:
        return payload
    minutes = int((now - fired_at).total_seconds() // 60)
    return {**payload, "escalation": int(step_no) + 1,
            "title": f"Escalated: {payload['title']} (firing {minutes} min, not acknowledged)"}


def _payload(check: Check, step: Step, fired_at: datetime, now: datetime, summary: str,
             found: list[dict[str, Any]] | None = None, proposed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What every channel's message is built from (no secret, nothing of the provider); `evidence`, the
    compact form of what was gathered when the instance went firing, where the check declares any."""
    return {
        "check": check.name, "severity": check.severity,
        "status": "resolved" if step.after.state == "resolved" else "firing",
        "title": summary, "summary": summary,
        "description": render(check.details, value=step.value, labels=step.labels, check=check.name)
        if check.details else public_text(check.description),
        "labels": step.labels, "value": store.json_number(step.value), "condition": str(check.condition),
        "fingerprint": step.fingerprint, "runbook": check.runbook,
        "started_at": fired_at.isoformat(), "at": now.isoformat(), "database": database_of(check),
        **({"evidence": found} if found else {}),
        **({"actions": [a for a in proposed if not a["auto"]]} if proposed else {}),
    }


def run_check(check: Check, *, monitored: Engine, fleet: Engine, now: datetime, routing: Routing | None,
              slot: datetime | None = None, task_id: str | None = None, redis_url: str | None = None,
              fleet_queries: Engine | None = None, target: str = "",
              target_labels: dict[str, str] | None = None) -> Outcome:
    """Evaluate `check` once for its slot on `target` (see the module docstring).

    `monitored` runs the queries of monitored-database checks (the target's database), `fleet_queries`
    (default: `fleet`) those of fleet-database checks; `fleet` holds the state. The workers pass
    worker.fleet.db.checks_engine() for both query engines. `target` keys the slot and the instances
    ("": what runs once for the fleet); `target_labels` go on every instance (worker.targets)."""
    slot = slot or check.schedule.slot(now)
    started = time.monotonic()
    outcome = Outcome(check.name, slot, "ok")
    source = (fleet_queries or fleet) if check.database == "fleet" else monitored
    try:  # the query first, outside the fleet's transaction: a duplicate of the run queries, then writes nothing
        outcome.samples = collect(check, source, now, redis_url=redis_url)
        if target_labels:
            outcome.samples = [Sample({**s.labels, **target_labels}, s.value, s.reason) for s in outcome.samples]
    except CheckError as exc:
        outcome.status, outcome.error = "error", str(exc)
    if outcome.status == "ok" and (not outcome.samples or all(s.value is None for s in outcome.samples)):
        outcome.status = "no_data"
        outcome.note = next((s.reason for s in outcome.samples if s.reason), None)
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    for attempt in (1, 2):
        try:
            return _record(check, outcome, fleet, now, routing, task_id, target, source)
        except DBAPIError as exc:  # a kept connection that died while idle (a restart): once more, on a new one
            if attempt == 2 or not exc.connection_invalidated or not isinstance(exc.__cause__, StaleAtClaim):
                raise
            log.warning("fleet_connection_replaced", reason=str(exc.orig).strip().splitlines()[0] if exc.orig else "")
    raise AssertionError("unreachable")


class StaleAtClaim(Exception):
    """Marks a lost connection met by the run's first statement: nothing was written, retrying is safe."""


def _record(check: Check, outcome: Outcome, fleet: Engine, now: datetime, routing: Routing | None,
            task_id: str | None, target: str, source: Engine) -> Outcome:
    """The run's one fleet transaction: claim the slot (the run's row, whole) with the instances,
    move them, write what the transitions send; a run whose slot is taken: skipped, nothing written."""
    for attempt in range(RACE_ATTEMPTS):
        try:
            return _record_once(check, outcome, fleet, now, routing, task_id, target, source, locked=attempt > 0)
        except store.InstanceRace:  # a concurrent run of another slot inserted an instance this one would
            outcome.deliveries.clear()  # (nothing of this attempt was written)
            outcome.run_actions.clear()
            log.info("check_recorded_again", check=check.name, target=target, attempt=attempt + 2)
    raise RuntimeError(f"check {check.name}: its instances kept being inserted by concurrent runs "
                       f"({RACE_ATTEMPTS} attempts)")


# A run whose new instance a concurrent run inserted first is recorded again under the (check,
# target)'s lock; only yet another concurrent run's new instance can send it round again.
RACE_ATTEMPTS = 5


def _record_once(check: Check, outcome: Outcome, fleet: Engine, now: datetime, routing: Routing | None,
                 task_id: str | None, target: str, source: Engine, *, locked: bool) -> Outcome:
    slot, samples = outcome.slot, outcome.samples
    with fleet.connect() as conn, conn.begin():
        try:
            run_id, instances = store.claim(
                conn, check.name, slot, now, task_id, target, duration_ms=outcome.duration_ms, rows=len(samples),
                status=outcome.status, error=outcome.error, note=outcome.note,
                value=samples[0].value if len(samples) == 1 else None,
                fingerprints=[fingerprint(check.name, s.labels) for s in samples] if locked else None)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise exc from StaleAtClaim()
            raise
        if run_id is None:
            return Outcome(check.name, slot, "skipped")
        if outcome.note is not None:
            outcome.note_is_new = store.note_is_new(conn, check.name, slot, outcome.note, target)
        if outcome.status != "error":
            outcome.transitions, outcome.notification_ids, outcome.remediate = evaluate(
                check, samples, conn, now, routing, outcome.deliveries, target=target, instances=instances,
                gather=lambda labels: evidence.gather(source, check.evidence, labels, now, fleet=conn, target=target),
                run_actions=outcome.run_actions,
            )
    return outcome
