"""digest.daily_summary: the daily digest email (info alerts, alert history, what was held back, and
seed 000's daily summary of each target with the confirmations pack), queued through the outbox once a
day. The reports have their own module: tasks/reports.py."""

from __future__ import annotations

from worker.app import app, task
from worker.config import get_config
from worker.fleet.db import fleet_engine, fleet_now
from worker.notify.digest import enqueue
from worker.reports import queries


def _channel() -> str:
    routing = get_config().routing
    return routing.digest.channel if routing and routing.digest else "email"


def _deliver(nid: str | None) -> dict:
    if nid:
        app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    return {"notification_id": nid}


@task("digest.daily_summary", ignore_result=False, accepts={})
def daily_summary() -> dict:
    """The last 24 h of the fleet's alerts, with seed 000's daily summary of DATABASE_URL, or of each
    target with the confirmations pack (a section each)."""
    return _deliver(enqueue(fleet_engine(), queries.sources(get_config()), _channel(), fleet_now()))
