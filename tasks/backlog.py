"""backlog.reprocess_confirmations and backlog.resend_failed_emails (worker/backlog/ does the work).

Operators call them by hand (`celery -A worker call backlog.reprocess_confirmations --kwargs
'{"limit": 1000, "dry_run": true}'`), which sends kwargs unchecked: every kwarg is validated here,
before anything is written, and a bad one fails the task with an ArgumentError naming it and the
accepted form. Progress goes to the result backend as state PROGRESS (what Flower shows).

With config/targets.yaml a backlog runs once per target that enables its pack: `target` names the
one a run is for (needed when there are several), and the run reads and writes that target's
database (its maintenance_url, else its url); without targets.yaml, MAINTENANCE_DATABASE_URL as before.
"""

from __future__ import annotations

from typing import Any

import structlog

from worker.app import task
from worker.backlog.arguments import ReprocessArgs, ResendArgs, parse_args
from worker.backlog.confirmations import confirmation_channel, require_channel
from worker.backlog.runs import Progress, RunResult, reprocess, resend_failed
from worker.backlog.spec import JOBS
from worker.config import get_config
from worker.fleet import calls
from worker.fleet.db import fleet_engine, maintenance_engine_at
from worker.fleet.errors import ArgumentError, ServiceUnavailable
from worker.fleet.logs import get_logger
from worker.fleet.settings import get_settings
from worker.fleet.timeutil import parse_duration

log = get_logger(__name__)


def _channel(job: str):
    """The confirmation channel, or None (with one warning) when it is not configured: a scheduled run
    without RESEND_API_KEY or FROM_EMAIL is skipped, not a traceback every time."""
    channel = confirmation_channel(get_settings())
    try:
        require_channel(channel)
    except ValueError as exc:
        log.warning("backlog_skipped", job=job, reason=str(exc))
        return None
    return channel


def _skipped(job: str) -> dict:
    return {"job": job, "status": "skipped", "error": "the email channel is not configured (RESEND_API_KEY, "
                                                      "FROM_EMAIL): `opsfleet health` shows what is missing"}


def _args(name: str, model: type, kwargs: dict[str, Any]) -> Any:
    try:
        return parse_args(name, model, kwargs)
    except ArgumentError as exc:
        log.error("backlog_arguments_rejected", task=name, error=str(exc), kwargs=repr(kwargs)[:500])
        raise


def _where(name: str, target: str | None) -> tuple[str, str | None, dict[str, str]]:
    """The target a run is for: its key in the fleet's state, the URL it writes with (None:
    MAINTENANCE_DATABASE_URL), and what the logs and the result name it by. An unknown target, one whose packs do not include the backlog's,
    or none given where several targets have it: ArgumentError, one line, nothing written."""
    cfg = get_config()
    calls.pack_off(name, cfg.pack_off("backlog", JOBS[name]))  # a backlog of a pack that is off: nothing done
    try:
        where = cfg.job_target_for("backlog", JOBS[name], target)
    except ValueError as exc:
        error = ArgumentError(f"{name} rejected its arguments, nothing was done: target: {exc}")
        log.error("backlog_arguments_rejected", task=name, error=str(error))
        raise error from None
    if where is None or not where.where:  # the implicit default target: MAINTENANCE_DATABASE_URL, as before
        return "", None, {}
    structlog.contextvars.bind_contextvars(target=where.name)
    return where.key, where.maintenance_database_url(get_settings()), {"target": where.name}


def _progress(self, job: str):
    def report(p: Progress) -> None:
        self.update_state(state="PROGRESS", meta={"job": job, **p.as_meta()})
    return report if self.request.id else None  # (called directly: no task to report on)


def _finished(result: RunResult, named: dict[str, str]) -> dict:
    """The run's summary; a run stopped by the provider fails the task (Flower shows it), its rows
    stay pending for the next run, and job_runs has the figures."""
    on = f" on target {named['target']}" if named else ""
    if result.status == "error":
        raise ServiceUnavailable(f"{result.job}{on} stopped: {result.error} ({result.sent} sent, {result.failed} "
                                 f"failed, {result.deferred} left pending for the next run; job_runs id {result.run_id})")
    return {**result.as_dict(), **named}


def _shadow(name: str):
    """Flower's name of a call: the task, `:dry_run`, `@target`."""
    return lambda kw: name + (":dry_run" if kw.get("dry_run") else "") + (f"@{kw['target']}" if kw.get("target") else "")


@task("backlog.reprocess_confirmations", bind=True, ignore_result=False, shadow=_shadow("backlog.reprocess_confirmations"))
def reprocess_confirmations(self, **kwargs: Any) -> dict:
    """kwargs: limit (int|null), batch_size (1..5000, default 500), dry_run (bool), older_than ("0s"),
    stale_after ("10m"), target (a target of config/targets.yaml)."""
    args = _args("backlog.reprocess_confirmations", ReprocessArgs, kwargs)
    key, url, named = _where("backlog.reprocess_confirmations", args.target)
    structlog.contextvars.bind_contextvars(job="reprocess_confirmations")
    channel = None if args.dry_run else _channel("reprocess_confirmations")
    if channel is None and not args.dry_run:
        return {**_skipped("reprocess_confirmations"), **named}
    result = reprocess(maintenance_engine_at(url), fleet_engine(), channel,
                       limit=args.limit, batch_size=args.batch_size, dry_run=args.dry_run,
                       older_than=parse_duration(args.older_than), stale_after=parse_duration(args.stale_after),
                       progress=_progress(self, "reprocess_confirmations"), task_id=self.request.id, target=key)
    return _finished(result, named)


@task("backlog.resend_failed_emails", bind=True, ignore_result=False, shadow=_shadow("backlog.resend_failed_emails"))
def resend_failed_emails(self, **kwargs: Any) -> dict:
    """kwargs: limit (int|null), batch_size (1..5000, default 100), dry_run (bool), max_attempts (default 5),
    target (a target of config/targets.yaml)."""
    args = _args("backlog.resend_failed_emails", ResendArgs, kwargs)
    key, url, named = _where("backlog.resend_failed_emails", args.target)
    structlog.contextvars.bind_contextvars(job="resend_failed_emails")
    channel = None if args.dry_run else _channel("resend_failed_emails")
    if channel is None and not args.dry_run:
        return {**_skipped("resend_failed_emails"), **named}
    result = resend_failed(maintenance_engine_at(url), fleet_engine(), channel,
                           limit=args.limit, batch_size=args.batch_size, dry_run=args.dry_run,
                           max_attempts=args.max_attempts, progress=_progress(self, "resend_failed_emails"),
                           task_id=self.request.id, target=key)
    return _finished(result, named)
