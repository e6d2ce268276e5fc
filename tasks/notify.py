"""notify.deliver and notify.sweep: the outbox, delivered at least once and deduplicated."""

from __future__ import annotations

import uuid
from functools import lru_cache

import structlog

from worker.app import app, task
from worker.config import get_config
from worker.fleet import calls, redisconn
from worker.fleet.db import fleet_engine, fleet_now, maintenance_engine
from worker.fleet.settings import get_settings
from worker.notify.delivery import BROKER_RETRY_LIMIT
from worker.notify.delivery import deliver as deliver_one
from worker.notify.outbox import due

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
    result = deliver_one(notification_id, fleet=fleet_engine(), settings=settings, routing=get_config().routing,
                         now=fleet_now(), monitored=maintenance_engine(), redis_client=client,
                         channel_hint=channel)
    key = _followup_key(result.channel)
    chained = False
    if result.status == "throttled" or (result.status == "retrying" and result.channel and
                                        result.error and result.error.startswith("rate_limited")):
        # One follow-up per channel at its next token; every other throttled row waits to be folded
        # into that send, instead of each task polling the bucket.
        wait = min(result.retry_in or 1.0, BROKER_RETRY_LIMIT)
        # a follow-up that is throttled again always re-arms itself; others only if none is pending
        if client is None or client.set(key, notification_id, nx=channel is None, px=int(wait * 1000) + 5000):
            app.send_task("notify.deliver", kwargs={"notification_id": notification_id, "channel": result.channel},
                          queue="notify", countdown=wait)
            chained = True
    elif result.status in ("retrying", "early") and result.retry_in is not None and result.retry_in <= BROKER_RETRY_LIMIT:
        app.send_task("notify.deliver", kwargs={"notification_id": notification_id}, queue="notify",
                      countdown=result.retry_in)
    if result.more_waiting and result.channel and (
            channel is not None or client is None or client.set(key, notification_id, nx=True, px=10_000)):
        # rows still wait behind the bucket: the chain goes on (the next run is throttled until the
        # next token, then re-arms itself at it)
        app.send_task("notify.deliver", kwargs={"notification_id": notification_id, "channel": result.channel},
                      queue="notify")
        chained = True
    if channel is not None and client is not None and not chained:
        client.delete(_followup_key(channel))  # the chain ends: the next throttled row starts one
    return {"status": result.status, "retry_in": result.retry_in}


def _followup_key(channel: str | None) -> str:
    return f"opsfleet:followup:{channel}"


@lru_cache(maxsize=1)
def _redis():
    """The rate-limit buckets and the follow-up keys live in Redis (REDIS_URL; the broker's when it is
    Redis): never off, whatever the broker."""
    return redisconn.client(get_settings().redis())


@task("notify.sweep", ignore_result=True, accepts=SWEEP_ACCEPTS)
def sweep(limit: int = 500) -> dict:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
        raise calls.rejected("notify.sweep", [f"limit={limit!r} is invalid"], SWEEP_ACCEPTS)
    ids = due(fleet_engine(), fleet_now(), limit)
    for nid in ids:
        app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    if ids:
        log.info("outbox_swept", enqueued=len(ids))
    return {"enqueued": len(ids)}
