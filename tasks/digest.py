"""digest.daily_summary: the daily digest email, queued through the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.app import app, task
from worker.config import get_config
from worker.fleet.db import fleet_engine, monitored_engine
from worker.notify.digest import enqueue


@task("digest.daily_summary", ignore_result=False, accepts={})
def daily_summary() -> dict:
    routing = get_config().routing
    channel = routing.digest.channel if routing and routing.digest else "email"
    nid = enqueue(fleet_engine(), monitored_engine(), channel, datetime.now(UTC))
    if nid:
        app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    return {"notification_id": nid}
