"""digest.daily_summary: the daily digest email; digest.weekly_report and digest.monthly_growth: seed
000's weekly performance review and monthly growth analysis (worker/reports). Each is queued through
the outbox, once per period."""

from __future__ import annotations

from worker.app import app, task
from worker.config import get_config
from worker.fleet.db import fleet_engine, fleet_now, monitored_engine
from worker.notify.digest import enqueue
from worker.reports import mail


def _channel() -> str:
    routing = get_config().routing
    return routing.digest.channel if routing and routing.digest else "email"


def _deliver(nid: str | None) -> dict:
    if nid:
        app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    return {"notification_id": nid}


@task("digest.daily_summary", ignore_result=False, accepts={})
def daily_summary() -> dict:
    return _deliver(enqueue(fleet_engine(), monitored_engine(), _channel(), fleet_now()))


@task("digest.weekly_report", ignore_result=False, accepts={})
def weekly_report() -> dict:
    """The 7 days before today (UTC), as an email with charts; a second run for the same week is a no-op."""
    return _deliver(mail.enqueue(fleet_engine(), monitored_engine(), "weekly", _channel(), fleet_now()))


@task("digest.monthly_growth", ignore_result=False, accepts={})
def monthly_growth() -> dict:
    """The 12 complete months before this one (UTC), as an email with a chart; once per month."""
    return _deliver(mail.enqueue(fleet_engine(), monitored_engine(), "monthly", _channel(), fleet_now()))
