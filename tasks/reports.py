"""digest.weekly_report and digest.monthly_growth: seed 000's weekly performance review and monthly
growth analysis (worker/reports), each queued through the outbox once per period on the channel of
routing.yaml's `reports:` section. They keep the names (and the digest queue) they had when the
digest module held them: scripts and `celery call` name them.

With config/targets.yaml a run makes one report per target whose packs name the confirmations pack
(worker.reports.spec.report_targets), each from its target's database and naming it; `target` makes
only that target's. A target whose database fails does not hold back the others' (the run fails after
them, with the first error; a retry re-queues nothing already queued: the dedup key). Without
targets.yaml: one report from DATABASE_URL, as before targets."""

from __future__ import annotations

from datetime import datetime

import psycopg
import sqlalchemy as sa
import structlog

from worker.app import app, task
from worker.config import get_config
from worker.fleet import calls
from worker.fleet.db import fleet_engine, fleet_now
from worker.fleet.errors import OpsfleetError
from worker.reports import queries, spec

log = structlog.get_logger(__name__)

ACCEPTS = {"target": "a target of config/targets.yaml whose packs name the confirmations pack "
                     "(`opsfleet targets list`); default: each such target"}


def _channel() -> str:
    reports = get_config().reports
    return reports.channel if reports else "email"


def _deliver(nid: str | None) -> str | None:
    if nid:
        app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    return nid


def _run(task_name: str, kind: str, target: str | None) -> dict:
    cfg = get_config()
    if target is not None:
        calls.known(task_name, "target", target, cfg.targets, ACCEPTS)
        try:
            chosen = [spec.report_target(cfg, target)]
        except ValueError as exc:
            raise calls.rejected(task_name, [str(exc)], ACCEPTS) from None
    else:
        chosen = spec.report_targets(cfg)
    now, channel = fleet_now(), _channel()  # only once the arguments are known good
    from worker.reports import mail  # matplotlib and numpy, imported only by a process that makes a report

    if not cfg.targets_declared and target is None:  # one report from DATABASE_URL, as before targets
        return {"notification_id": _deliver(mail.enqueue(fleet_engine(), queries.engine_for(chosen[0]), kind,
                                                         channel, now))}
    return _per_target(kind, chosen, channel, now)


def _per_target(kind: str, chosen: list, channel: str, now: datetime) -> dict:
    from worker.reports import mail

    queued: dict[str, str | None] = {}
    failed: list[Exception] = []
    for t in chosen:
        try:
            nid = mail.enqueue(fleet_engine(), queries.engine_for(t), kind, channel, now,
                               target=t.name if t.where else None)
        except (OpsfleetError, sa.exc.SQLAlchemyError, psycopg.Error) as exc:  # the next target's does not wait
            log.error("report_failed", report=kind, target=t.name, error=calls.one_line(exc))
            failed.append(exc)
            continue
        queued[t.name] = _deliver(nid)
    if not chosen:
        log.warning("report_no_target", report=kind, reason=f"no target enables the {spec.PACK} pack")
    if failed:
        raise failed[0]
    return {"targets": queued}


@task("digest.weekly_report", ignore_result=False, accepts=ACCEPTS)
def weekly_report(target: str | None = None) -> dict:
    """The 7 days before today (UTC), as an email with charts (one per target with the confirmations
    pack, or only `target`'s); a second run for the same week is a no-op."""
    return _run("digest.weekly_report", "weekly", target)


@task("digest.monthly_growth", ignore_result=False, accepts=ACCEPTS)
def monthly_growth(target: str | None = None) -> dict:
    """The 12 complete months before this one (UTC), as an email with a chart; once per month (per
    target with the confirmations pack, or only `target`'s)."""
    return _run("digest.monthly_growth", "monthly", target)
