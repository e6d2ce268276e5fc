"""checks.run: evaluate one check for its slot; checks.run_batch: several checks of one target that
share a schedule (what beat sends), one after another on the target's kept connection."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import structlog

from worker.app import app, task
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import get_config
from worker.fleet import calls
from worker.fleet.db import checks_engine, fleet_engine, fleet_now, hot_fleet_engine
from worker.fleet.settings import get_settings
from worker.targets import Target

log = structlog.get_logger(__name__)
TARGETED = ("maintenance.", "backlog.")  # the remediations that take `target`: run on the target that fired


ACCEPTS = {"name": "a check name, as `opsfleet checks list` shows them",
           "target": "a target of config/targets.yaml (`opsfleet targets list`); needed when the check runs on several",
           "slot": "the slot to evaluate, an ISO 8601 instant; default: the slot of sent_at, else the current one",
           "sent_at": "when beat sent the run, an ISO 8601 instant: the run evaluates the slot it falls in, so a run "
                      "that starts late still evaluates its own slot (beat sets it)",
           "at": "the evaluation time, an ISO 8601 instant with a timezone; default: now"}
BATCH_ACCEPTS = {"names": "a list of check names that share a schedule, as `opsfleet checks list` shows them",
                 **{k: v for k, v in ACCEPTS.items() if k != "name"}}


def _shadow(kwargs: dict) -> str:
    name, target = kwargs.get("name"), kwargs.get("target")
    if not isinstance(name, str):
        return "checks.run"
    return f"checks.run:{name}" + (f"@{target}" if isinstance(target, str) else "")


def _batch_shadow(kwargs: dict) -> str:
    names, target = kwargs.get("names"), kwargs.get("target")
    if not isinstance(names, list):
        return "checks.run_batch"
    return f"checks.run_batch:{len(names)} checks" + (f"@{target}" if isinstance(target, str) else "")


@task("checks.run", bind=True, ignore_result=False, accepts=ACCEPTS, shadow=_shadow)
def run(self, name: str, target: str | None = None, slot: str | None = None, at: str | None = None,
        sent_at: str | None = None) -> dict:
    """Evaluate check `name` on `target` for `slot` (default: the slot beat sent it for, else the current one), at time `at` (ISO 8601; default now)."""
    cfg = get_config()
    calls.pack_off("checks.run", cfg.pack_off("check", name) if isinstance(name, str) else None)
    check = cfg.checks[calls.known("checks.run", "name", name, cfg.checks, ACCEPTS)]
    where = _target("checks.run", cfg, name, target, ACCEPTS)
    at_given = calls.instant("checks.run", "at", at, ACCEPTS)
    slot_at = calls.instant("checks.run", "slot", slot, ACCEPTS)
    sent = calls.instant("checks.run", "sent_at", sent_at, ACCEPTS)
    # only once every argument is known good: a bad one touches nothing
    return _evaluate(check, where, at_given or fleet_now(), slot_at, sent, self.request.id)


@task("checks.run_batch", bind=True, ignore_result=False, accepts=BATCH_ACCEPTS, shadow=_batch_shadow)
def run_batch(self, names: list, target: str | None = None, slot: str | None = None, at: str | None = None,
              sent_at: str | None = None) -> dict:
    """Evaluate each of `names` on `target` for its slot (or the slot of `slot`), one after another:
    what checks.run does for one. Every name is checked before any is evaluated."""
    cfg = get_config()
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise calls.rejected("checks.run_batch", [f"names must be a non-empty list of check names, got {names!r}"],
                             BATCH_ACCEPTS)
    for n in names:
        calls.pack_off("checks.run_batch", cfg.pack_off("check", n))
    checks = [cfg.checks[calls.known("checks.run_batch", "names", n, cfg.checks, BATCH_ACCEPTS)] for n in names]
    wheres = [_target("checks.run_batch", cfg, n, target, BATCH_ACCEPTS) for n in names]
    at_given = calls.instant("checks.run_batch", "at", at, BATCH_ACCEPTS)
    slot_at = calls.instant("checks.run_batch", "slot", slot, BATCH_ACCEPTS)
    sent = calls.instant("checks.run_batch", "sent_at", sent_at, BATCH_ACCEPTS)
    out = {}
    # the fleet's clock once per batch, and the time since on this host's monotonic clock (no jump, no
    # skew): each check's `now` is the fleet's at its start without a round trip per check
    base, since = at_given or fleet_now(), time.monotonic()
    for check, where in zip(checks, wheres, strict=True):
        now = base if at_given else base + timedelta(seconds=time.monotonic() - since)
        out[check.name] = _evaluate(check, where, now, slot_at, sent, self.request.id)
    return out


def _target(task_name: str, cfg, name: str, target: str | None, accepts: dict) -> Target | None:
    if target is not None:
        calls.known(task_name, "target", target, cfg.targets, accepts)
    try:
        return cfg.target_for(name, target)  # None: the fleet's own, once
    except ValueError as exc:
        raise calls.rejected(task_name, [str(exc)], accepts) from None


def _evaluate(check: Check, where: Target | None, now: datetime, slot_at: datetime | None, sent: datetime | None,
              task_id: str) -> dict:
    """One check's run, for `slot_at` as given, else the slot of `sent` (beat's send instant) unless
    that lies ahead of the fleet database's clock (a beat whose clock runs ahead: then now's)."""
    if slot_at is None and sent is not None:
        slot_at = check.schedule.slot(min(sent, now))
    structlog.contextvars.bind_contextvars(check=check.name, **({"target": where.name} if where and where.where else {}))
    settings = get_settings()
    monitored = checks_engine("monitored") if where is None or not where.where else \
        checks_engine(url=where.database_url(settings))
    outcome = run_check(
        check, monitored=monitored, fleet=hot_fleet_engine(), fleet_queries=checks_engine("fleet"),
        now=now, routing=get_config().routing, slot=slot_at,
        task_id=task_id, redis_url=settings.redis() if check.kind == "redis" else None,
        target=where.key if where else "", target_labels=where.alert_labels() if where else None,
    )
    for t in outcome.transitions:
        log.info("alert_transition", fingerprint=t.fingerprint, labels=t.labels, from_state=t.from_state,
                 to_state=t.to_state, value=t.value)
    if outcome.note_is_new:
        log.warning("check_no_data", reason=outcome.note)  # once: the next runs saying the same stay quiet
    log.info("check_evaluated", status=outcome.status, rows=len(outcome.samples), duration_ms=outcome.duration_ms,
             transitions=len(outcome.transitions), error=outcome.error, slot=outcome.slot.isoformat())
    # enqueue after commit: the outbox rows exist before any worker looks for them
    if outcome.deliveries:
        # One delivery per channel: it folds the run's other rows for that channel into one message
        # (and asks for a follow-up if more wait); notify.sweep catches anything left behind.
        clock = fleet_now()
        for channel, (nid, due) in outcome.deliveries.items():
            wait = max(0.0, (due - clock).total_seconds())  # the route's group_wait
            app.send_task("notify.deliver", kwargs={"notification_id": nid, "channel": channel}, queue="notify",
                          countdown=wait)
    if outcome.remediate and check.remediate:
        # on the target whose check fired (maintenance and backlog tasks take `target` too)
        on = {"target": where.name} if where and where.where and check.remediate.task.startswith(TARGETED) else {}
        kwargs = {**check.remediate.kwargs, **on}
        app.send_task(check.remediate.task, kwargs=kwargs)
        log.info("remediation_enqueued", task=check.remediate.task, **on)
    for action_id in outcome.run_actions:  # `auto` actions, approved as they were proposed
        app.send_task("maintenance.action", kwargs={"action_id": action_id}, queue="maintenance")
        log.info("action_enqueued", action=action_id, approved_by="auto")
    return {"status": outcome.status, "transitions": len(outcome.transitions), "error": outcome.error}


SNAPSHOT_ACCEPTS = {"target": "a target of config/targets.yaml (`opsfleet targets list`); needed when several have "
                              "checks that gather top_statements"}


@task("checks.snapshot_statements", ignore_result=False, accepts=SNAPSHOT_ACCEPTS)
def snapshot_statements(target: str | None = None) -> dict:
    """pg_stat_statements' counters of a target's database, kept a day (worker.checks.statements), so
    the top_statements evidence shows an alert's window. A database without pg_stat_statements: skipped
    with one line (its slow-query checks say the same, as no data)."""
    import psycopg

    from worker.checks import statements

    cfg = get_config()
    if target is not None:
        calls.known("checks.snapshot_statements", "target", target, cfg.targets, SNAPSHOT_ACCEPTS)
        where = cfg.targets[target]
    else:
        declared = [t for t in cfg.targets.values() if t.where]
        if len(declared) > 1:
            raise calls.rejected("checks.snapshot_statements", [f"give target: one of {', '.join(cfg.targets)}"],
                                 SNAPSHOT_ACCEPTS)
        where = declared[0] if declared else None
    monitored = checks_engine("monitored") if where is None or not where.where else \
        checks_engine(url=where.database_url(get_settings()))
    try:
        stored = statements.snapshot(monitored, fleet_engine(), where.key if where else "", fleet_now())
    except psycopg.errors.UndefinedTable:
        log.warning("statements_snapshot_skipped", reason="pg_stat_statements is not installed in the database")
        return {"stored": 0, "skipped": "no pg_stat_statements"}
    return {"stored": stored}
