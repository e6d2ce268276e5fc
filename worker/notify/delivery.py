"""notify.deliver's plain function: one outbox row through its channel, as a pipeline of small stages
(Alertmanager's shape): lease -> silenced? -> rate-limit token -> fold what waits for the channel ->
send -> record (sent | retrying with backoff | dead). Knows nothing of Celery; the SQL is the
outbox's (worker/notify/outbox.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from worker.channels.base import DeliveryError, DeliveryResult, Message
from worker.channels.registry import from_settings
from worker.fleet.fields import severity_rank
from worker.fleet.logs import get_logger
from worker.fleet.settings import Settings
from worker.notify import outbox, ratelimit
from worker.notify.routing import Routing

log = get_logger(__name__)

MAX_ATTEMPTS = 8
BROKER_RETRY_LIMIT = 60.0  # longer waits stay in the outbox for notify.sweep, never in the broker
FOLDABLE_TRANSITIONS = ("firing", "repeat", "resolved", "unsilenced")


@dataclass
class Delivery:
    notification_id: str
    status: str  # sent | retrying | throttled | dead | suppressed | skipped | early (not due yet)
    retry_in: float | None = None
    error: str | None = None
    provider_id: str | None = None
    channel: str | None = None
    more_waiting: bool = False  # rows still wait behind this channel's bucket (a full fold, or throttled since)


def backoff(attempts: int, retry_after: float | None) -> float:
    """Exponential with jitter; never earlier than the provider's Retry-After."""
    base = min(5.0 * 2 ** (attempts - 1), 1800.0) * random.uniform(0.8, 1.2)  # noqa: S311
    return max(base, retry_after or 0.0)


def build_message(row: Any, public_url: str | None = None) -> Message:
    p = row.payload
    status = p.get("status", "firing")
    return Message(
        notification_id=str(row.id), channel=row.channel, check=p.get("check", ""), severity=p.get("severity", "info"),
        status=status, title=p.get("title", ""), summary=p.get("summary", ""),
        description=p.get("description", ""), labels=p.get("labels", {}), value=p.get("value"),
        fingerprint=p.get("fingerprint") or "", runbook=p.get("runbook"),
        started_at=datetime.fromisoformat(p["started_at"]) if p.get("started_at") else None,
        extra={"rendered": p["rendered"]} if p.get("rendered") else {},
        condition=p.get("condition") or "",
        ended_at=datetime.fromisoformat(p["at"]) if status == "resolved" and p.get("at") else None,
        public_url=public_url,
    )


def send(message: Message, kind: str, settings: Settings, routing: Routing | None,
         monitored: Engine | None, previous: dict | None = None, timeout: float = 10.0) -> DeliveryResult:
    """Send through the channel. `previous` is what the last message for this alert on this channel
    returned (Slack Web API: its ts and channel id), so repeats thread and resolved notices update."""
    if kind not in ("email", "slack", "table", "pagerduty", "webhook"):
        raise DeliveryError(reason="invalid", permanent=True, message=f"channel kind {kind!r} cannot deliver")
    spec = routing.channels.get(message.channel) if routing else None
    channel = from_settings(kind, settings, recipients=spec.recipients if spec else None,
                            slack_channel=spec.slack_channel if spec else None, monitored=monitored, timeout=timeout,
                            spec=spec)
    if kind == "slack" and previous and previous.get("ts") and previous.get("channel_id") and settings.slack_bot_token:
        if message.status == "resolved":
            return channel.send(message, update_ts=previous["ts"], channel=previous["channel_id"])
        return channel.send(message, thread_ts=previous["ts"], channel=previous["channel_id"])
    return channel.send(message)


def _kind(row: Any, routing: Routing | None) -> str:
    if row.payload.get("kind"):
        return row.payload["kind"]
    if routing and row.channel in routing.channels:
        return routing.channels[row.channel].kind
    return row.channel


def _bucket_target(kind: str, channel: str, settings: Settings) -> str:
    if kind == "email":
        return f"email:{settings.resend_api_url}:{settings.from_email}"
    if kind == "slack":
        return f"slack:{settings.slack_bot_token and settings.slack_channel or settings.alert_slack_webhook_url}"
    return f"{kind}:{channel}"


def bucket_for(kind: str, channel: str, settings: Settings, routing: Routing | None,
               redis_client: Any, clock: Callable[[], float] | None = None) -> ratelimit.TokenBucket | None:
    """The provider target's token buckets (email and Slack), at the route's rate or the default."""
    if redis_client is None or kind not in ("email", "slack"):
        return None
    spec = routing.channels.get(channel) if routing else None
    rate, burst = ratelimit.DEFAULTS[kind]
    if spec and spec.rate_limit:
        rate, burst = spec.rate_limit, spec.burst or max(1, int(spec.rate_limit))
    return ratelimit.TokenBucket(redis_client, _bucket_target(kind, channel, settings), rate, burst, clock)


def deliver(nid: str, *, fleet: Engine, settings: Settings, routing: Routing | None, now: datetime,
            monitored: Engine | None = None, redis_client: Any = None, timeout: float = 10.0,
            channel_hint: str | None = None, clock: Callable[[], float] | None = None) -> Delivery:
    """Lease -> silence? -> rate-limit token -> (fold what waits behind the bucket) -> send -> record.

    With `channel_hint` (a follow-up scheduled at the bucket's next token), a row already folded
    into another message gives way to the oldest row of that channel waiting to be folded. `clock`
    is the rate-limit buckets' (default: the Redis server's time; tests inject one)."""
    row = outbox.lease(fleet, nid, now)
    if row is None and channel_hint:
        row = outbox.lease_next_waiting(fleet, channel_hint, now)
    if row is None:
        early = outbox.due_in(fleet, nid, now)
        if early is not None:  # a task that came before its time (the sender's clock ran behind ours)
            return Delivery(nid, "early", retry_in=early)
        return Delivery(nid, "skipped")
    nid = str(row.id)
    kind = _kind(row, routing)
    message = build_message(row, settings.opsfleet_public_url)

    if row.transition != "test":
        held = outbox.suppress_if_held(fleet, row, message.labels, now, routing)
        if held:
            outbox.release(fleet, row.id, now)  # what an earlier attempt folded goes on its own
            log.info("notification_suppressed", notification_id=nid, reason=held[0], by=held[1], channel=row.channel)
            return Delivery(nid, "suppressed")
        if row.fingerprint and routing is not None and routing.inhibit_rules:
            message = _with_inhibited(fleet, row, message)

    bucket = bucket_for(kind, row.channel, settings, routing, redis_client, clock)
    if bucket is not None:
        wait = bucket.take()
        if wait > 0:
            outbox.throttle(fleet, nid, now + timedelta(seconds=wait))
            log.info("notification_throttled", notification_id=nid, channel=row.channel, retry_in=wait)
            return Delivery(nid, "throttled", retry_in=wait, channel=row.channel)
    folded = outbox.bound(fleet, row, now)  # an earlier attempt's summary: the same rows, the same message
    if not folded and kind in ("email", "slack") and row.transition in FOLDABLE_TRANSITIONS:
        folded = outbox.fold(fleet, row, now, routing)
    if folded:
        message = _summary_message(message, folded)

    previous = None
    if row.fingerprint and row.transition in ("resolved", "repeat"):
        previous = outbox.previous_answer(fleet, row.fingerprint, row.channel)
    if bucket is not None:
        bucket.wait_turn()
    log.info("notification_sending", notification_id=nid, channel=row.channel, attempt=row.attempts,
             fingerprint=message.fingerprint, check=message.check)
    try:
        result = send(message, kind, settings, routing, monitored, previous, timeout)
    except DeliveryError as exc:
        if exc.reason == "rate_limited" and bucket is not None:
            bucket.penalize(exc.retry_after or 1.0)  # every worker waits out the provider's Retry-After
        outcome = _record_failure(fleet, row, exc, now)
        if outcome.status == "skipped":  # the lease was lost: its folded rows are the new holder's
            pass
        elif folded and outcome.status == "dead":
            outbox.release(fleet, row.id, now)  # they may still go, in another message
        elif folded:
            outbox.unfold(fleet, folded, now + timedelta(seconds=outcome.retry_in or 0))
        outcome.channel = row.channel
        return outcome
    detail = {k: v for k, v in (result.detail or {}).items() if k in ("channel", "ts", "thread_ts", "updated")}
    outbox.mark_sent(fleet, row, folded, now, result.provider_id, detail)
    log.info("notification_sent", notification_id=nid, channel=row.channel, provider_id=result.provider_id,
             folded=len(folded))
    more = bucket is not None and (len(folded) >= outbox.FOLD_LIMIT or outbox.waiting(fleet, row.channel, now))
    return Delivery(nid, "sent", provider_id=result.provider_id, channel=row.channel, more_waiting=more)


def _with_inhibited(fleet: Engine, row: Any, message: Message) -> Message:
    """An inhibiting alert's message says how many dependent alerts it has held back this episode."""
    n = outbox.inhibited_by(fleet, row.fingerprint, message.started_at)
    if not n:
        return message
    what = "were held back while it fired" if message.status == "resolved" else "are held back while it fires"
    line = f"Notices of {n} dependent alert{'s' if n != 1 else ''} {what} (inhibit_rules in routing.yaml)."
    return replace(message, description=f"{message.description}\n\n{line}" if message.description else line,
                   extra={**message.extra, "inhibited": n})


def _summary_message(first: Message, folded: list[Any]) -> Message:
    """One message standing for several: a group (one run, or a storm within group_wait), or a queue
    that waited behind the rate limit, sent as a summary instead of late one by one (or dropped, as
    Alertmanager does with Slack's 429). Its alerts are rows, worst first (firing before resolved)."""
    items = [first] + [build_message(f, first.public_url) for f in folded]
    items.sort(key=lambda m: (m.status == "resolved", severity_rank(m.severity), m.check))
    worst = items[0]
    checks = sorted({m.check for m in items})
    firing = sum(m.status != "resolved" for m in items)
    return Message(
        notification_id=first.notification_id, channel=first.channel,
        check=first.check if len(checks) == 1 else ", ".join(checks), severity=worst.severity,
        status="firing" if firing else "resolved", title=f"{worst.title} (+{len(items) - 1} more)",
        summary=f"{len(items)} alerts firing" if firing == len(items) else f"{len(items)} alerts: {firing} firing, "
                f"{len(items) - firing} resolved",
        labels={}, fingerprint="", alerts=items, public_url=first.public_url,
    )


def _record_failure(fleet: Engine, row: Any, exc: DeliveryError, now: datetime) -> Delivery:
    nid = str(row.id)
    error = f"{exc.reason}: {exc.message}"[:2000]
    if exc.permanent or row.attempts >= MAX_ATTEMPTS:
        if not outbox.mark_dead(fleet, row, error, now):
            return _lease_lost(row, error)
        log.error("notification_dead", notification_id=nid, channel=row.channel, reason=exc.reason,
                  attempts=row.attempts, error=error)
        return Delivery(nid, "dead", error=error)
    rate_limited = exc.reason == "rate_limited"
    # A 429 is pacing, not a fault: wait exactly what the provider asks (never less), and do not
    # count it toward MAX_ATTEMPTS; every other transient failure backs off exponentially.
    delay = max(exc.retry_after or 1.0, 0.5) if rate_limited else backoff(row.attempts, exc.retry_after)
    if not outbox.mark_retrying(fleet, row, error, now + timedelta(seconds=delay), throttled=rate_limited):
        return _lease_lost(row, error)
    log.warning("notification_retrying", notification_id=nid, channel=row.channel, reason=exc.reason,
                attempts=row.attempts, retry_in=round(delay, 1))
    return Delivery(nid, "retrying", retry_in=delay, error=error)


def _lease_lost(row: Any, error: str) -> Delivery:
    """This worker's lease ran out before its attempt failed (cut off, stalled): another worker has the
    row, or has sent it; this one records nothing and leaves it alone."""
    log.warning("notification_lease_lost", notification_id=str(row.id), channel=row.channel, error=error)
    return Delivery(str(row.id), "skipped", error=error)
