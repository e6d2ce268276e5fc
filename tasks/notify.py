"""notify.deliver and notify.sweep: the outbox, delivered at least once and deduplicated."""

from __future__ import annotations

import uuid
from functools import lru_cache

import structlog

from worker.app import app, task
from worker.config import get_config
from worker.fleet import calls, redisconn
from worker.fleet.db import fleet_engine, fleet_now, hot_fleet_engine, maintenance_engine
from worker.fleet.settings import get_settings
from worker.notify import followup, outbox
from worker.notify.delivery import deliver as deliver_one

log = structlog.get_logger(__name__)


DELIVER_ACCEPTS = {"notification_id": "an outbox row's id (a UUID)",
                   "channel": "a channel of routing.yaml, for a follow-up at its next token; default none"}
SWEEP_ACCEPTS = {"limit": "how many due rows to re-enqueue at most, a whole number from 1 to 100000; default 500"}


@task("notify.deliver", ignore_result=True, accepts=DELIVER_ACCEPTS)
def deliver(notification_id: str, channel: str | None = None) -> dict:
    """Deliver one outbox row (`channel`: a follow-up at the channel's next token, see below)."""
    try:  # canonical text: an int of 32 digits or "urn:uuid:..." is a UUID to Python, not to Postgres
        notification_id = str(uuid.UUID(notification_id))
    except (ValueError, TypeError, AttributeError):
        raise calls.rejected("notify.deliver", [f"notification_id={notification_id!r} is not a UUID"],
                             DELIVER_ACCEPTS) from None
    if channel is not None and not isinstance(channel, str):
        raise calls.rejected("notify.deliver", [f"channel={channel!r} is not a channel name"], DELIVER_ACCEPTS)
    structlog.contextvars.bind_contextvars(notification_id=notification_id)
    settings = get_settings()
    client = _redis()
    fleet = hot_fleet_engine()
    result = deliver_one(notification_id, fleet=fleet, settings=settings, routing=get_config().routing,
                         now=fleet_now(fleet), monitored=maintenance_engine(), redis_client=client,
                         channel_hint=channel)
    followup.after_delivery(result, notification_id=notification_id, channel=channel, client=client,
                            enqueue=_enqueue)
    return {"status": result.status, "retry_in": result.retry_in}


def _enqueue(kwargs: dict, countdown: float | None) -> None:
    app.send_task("notify.deliver", kwargs=kwargs, queue="notify", countdown=countdown)


@lru_cache(maxsize=1)
def _redis():
    """The rate-limit buckets and the follow-up keys live in Redis (REDIS_URL; the broker's when it is
    Redis): never off, whatever the broker."""
    return redisconn.client(get_settings().redis())


@task("notify.sweep", ignore_result=True, accepts=SWEEP_ACCEPTS)
def sweep(limit: int = 500) -> dict:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
        raise calls.rejected("notify.sweep", [f"limit={limit!r} is invalid"], SWEEP_ACCEPTS)
    with fleet_engine().connect() as conn:
        ids = outbox.due(conn, fleet_now(), limit)
    for nid in ids:
        app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    if ids:
        log.info("outbox_swept", enqueued=len(ids))
    return {"enqueued": len(ids)}
