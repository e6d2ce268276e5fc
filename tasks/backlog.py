"""backlog.reprocess_confirmations and backlog.resend_failed_emails (worker/backlog/ does the work).

Operators call them by hand (`celery -A worker call backlog.reprocess_confirmations --kwargs
'{"limit": 1000, "dry_run": true}'`), which sends kwargs unchecked: every kwarg is validated here,
before anything is written, and a bad one fails the task with an ArgumentError naming it and the
accepted form. Progress goes to the result backend as state PROGRESS (what Flower shows).
"""

from __future__ import annotations

from typing import Any

import structlog

from worker.app import task
from worker.backlog.arguments import ReprocessArgs, ResendArgs, parse_args
from worker.backlog.confirmations import confirmation_channel, require_channel
from worker.backlog.runs import Progress, RunResult, reprocess, resend_failed
from worker.fleet.db import fleet_engine, maintenance_engine
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


def _progress(self, job: str):
    def report(p: Progress) -> None:
        self.update_state(state="PROGRESS", meta={"job": job, **p.as_meta()})
    return report


def _finished(result: RunResult) -> dict:
    """The run's summary; a run stopped by the provider fails the task (Flower shows it), its rows
    stay pending for the next run, and job_runs has the figures."""
    if result.status == "error":
        raise ServiceUnavailable(f"{result.job} stopped: {result.error} ({result.sent} sent, {result.failed} failed, "
                                 f"{result.deferred} left pending for the next run; job_runs id {result.run_id})")
    return result.as_dict()


@task("backlog.reprocess_confirmations", bind=True, ignore_result=False,
      shadow=lambda kw: "backlog.reprocess_confirmations" + (":dry_run" if kw.get("dry_run") else ""))
def reprocess_confirmations(self, **kwargs: Any) -> dict:
    """kwargs: limit (int|null), batch_size (1..5000, default 500), dry_run (bool), older_than ("0s"),
    stale_after ("10m")."""
    args = _args("backlog.reprocess_confirmations", ReprocessArgs, kwargs)
    structlog.contextvars.bind_contextvars(job="reprocess_confirmations")
    channel = None if args.dry_run else _channel("reprocess_confirmations")
    if channel is None and not args.dry_run:
        return _skipped("reprocess_confirmations")
    result = reprocess(maintenance_engine(), fleet_engine(), channel,
                       limit=args.limit, batch_size=args.batch_size, dry_run=args.dry_run,
                       older_than=parse_duration(args.older_than), stale_after=parse_duration(args.stale_after),
                       progress=_progress(self, "reprocess_confirmations"), task_id=self.request.id)
    return _finished(result)


@task("backlog.resend_failed_emails", bind=True, ignore_result=False,
      shadow=lambda kw: "backlog.resend_failed_emails" + (":dry_run" if kw.get("dry_run") else ""))
def resend_failed_emails(self, **kwargs: Any) -> dict:
    """kwargs: limit (int|null), batch_size (1..5000, default 100), dry_run (bool), max_attempts (default 5)."""
    args = _args("backlog.resend_failed_emails", ResendArgs, kwargs)
    structlog.contextvars.bind_contextvars(job="resend_failed_emails")
    channel = None if args.dry_run else _channel("resend_failed_emails")
    if channel is None and not args.dry_run:
        return _skipped("resend_failed_emails")
    result = resend_failed(maintenance_engine(), fleet_engine(), channel,
                           limit=args.limit, batch_size=args.batch_size, dry_run=args.dry_run,
                           max_attempts=args.max_attempts, progress=_progress(self, "resend_failed_emails"),
                           task_id=self.request.id)
    return _finished(result)
