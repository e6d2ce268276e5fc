"""checks.run: evaluate one check for its current slot."""

from __future__ import annotations

import structlog

from worker.app import app, task
from worker.checks.engine import run_check
from worker.config import get_config
from worker.fleet import calls
from worker.fleet.db import checks_engine, fleet_engine, fleet_now
from worker.fleet.settings import get_settings
from worker.notify import outbox

log = structlog.get_logger(__name__)


ACCEPTS = {"name": "a check name, as `opsfleet checks list` shows them",
           "slot": "the slot to evaluate, an ISO 8601 instant; default: the current one",
           "at": "the evaluation time, an ISO 8601 instant with a timezone; default: now"}


@task("checks.run", bind=True, ignore_result=False, accepts=ACCEPTS,
      shadow=lambda kwargs: f"checks.run:{kwargs.get('name')}")
def run(self, name: str, slot: str | None = None, at: str | None = None) -> dict:
    """Evaluate check `name` for its current slot (or `slot`), at time `at` (ISO 8601; default now)."""
    cfg = get_config()
    check = cfg.checks[calls.known("checks.run", "name", name, cfg.checks, ACCEPTS)]
    at_given = calls.instant("checks.run", "at", at, ACCEPTS)
    slot_at = calls.instant("checks.run", "slot", slot, ACCEPTS)
    now = at_given or fleet_now()  # only once every argument is known good: a bad one touches nothing
    structlog.contextvars.bind_contextvars(check=name)
    outcome = run_check(
        check, monitored=checks_engine("monitored"), fleet=fleet_engine(), fleet_queries=checks_engine("fleet"),
        now=now, routing=cfg.routing, slot=slot_at, task_id=self.request.id,
        redis_url=get_settings().redis() if check.kind == "redis" else None,
    )
    for t in outcome.transitions:
        log.info("alert_transition", fingerprint=t.fingerprint, labels=t.labels, from_state=t.from_state,
                 to_state=t.to_state, value=t.value)
    if outcome.note_is_new:
        log.warning("check_no_data", reason=outcome.note)  # once: the next runs saying the same stay quiet
    log.info("check_evaluated", status=outcome.status, rows=len(outcome.samples), duration_ms=outcome.duration_ms,
             transitions=len(outcome.transitions), error=outcome.error)
    # enqueue after commit: the outbox rows exist before any worker looks for them
    if outcome.notification_ids:
        # One delivery per channel: it folds the run's other rows for that channel into one message
        # (and asks for a follow-up if more wait); notify.sweep catches anything left behind.
        for channel, (nid, due) in outbox.first_of_each_channel(fleet_engine(), outcome.notification_ids).items():
            wait = max(0.0, (due - fleet_now()).total_seconds())  # the route's group_wait
            app.send_task("notify.deliver", kwargs={"notification_id": nid, "channel": channel}, queue="notify",
                          countdown=wait)
    if outcome.remediate and check.remediate:
        app.send_task(check.remediate.task, kwargs=dict(check.remediate.kwargs))
        log.info("remediation_enqueued", task=check.remediate.task)
    return {"status": outcome.status, "transitions": len(outcome.transitions), "error": outcome.error}
