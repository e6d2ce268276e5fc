"""notify.deliver's plain function: one outbox row through its channel, as a pipeline of small stages
(Alertmanager's shape), each a function of its own below:

    lease -> holds (silenced? inhibited? a resolved notice: was its channel told it fired?) -> rate limit (the bucket's token) -> fold (what waits for
    the channel) -> send (the channel) -> record (sent | retrying with backoff | dead)

Knows nothing of Celery. The SQL is the outbox's (worker/notify/outbox.py), what holds a notice back
is `holds`', the channel is the registry's; this module decides only the order and what commits
together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from worker.channels import registry
from worker.channels.base import DeliveryError, DeliveryResult, Message
from worker.fleet.fields import severity_rank
from worker.fleet.logs import get_logger
from worker.fleet.settings import Settings
from worker.fleet.stale import once_more_if_stale
from worker.notify import holds, outbox, ratelimit
from worker.notify.routing import Routing

log = get_logger(__name__)

MAX_ATTEMPTS = 8
BROKER_RETRY_LIMIT = 60.0  # longer waits stay in the outbox for notify.sweep, never in the broker
FOLDABLE_TRANSITIONS = ("firing", "repeat", "resolved", "unsilenced")


@dataclass
class Delivery:
    notification_id: str
    status: str  # sent | retrying | throttled | dead | suppressed | skipped | early (not due yet, or a
    # resolved notice waiting for its channel's firing notice: asks again at retry_in)
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
        description=p.get("description", ""), labels=p.get("labels", {}),
        value=None if p.get("value") is None else float(p["value"]),  # 'inf', 'nan': JSON's stand-ins (json_number)
        fingerprint=p.get("fingerprint") or "", runbook=p.get("runbook"),
        started_at=datetime.fromisoformat(p["started_at"]) if p.get("started_at") else None,
        extra={"rendered": p["rendered"]} if p.get("rendered") else {},
        condition=p.get("condition") or "",
        ended_at=datetime.fromisoformat(p["at"]) if status == "resolved" and p.get("at") else None,
        public_url=public_url,
        evidence=p.get("evidence") if isinstance(p.get("evidence"), list) else [],
        actions=p.get("actions") if isinstance(p.get("actions"), list) and status != "resolved" else [],
    )


def send(message: Message, kind: str, settings: Settings, routing: Routing | None,
         monitored: Engine | None, previous: dict | None = None, timeout: float = 10.0) -> DeliveryResult:
    """Send through the channel the row's kind and routing.yaml entry build. `previous` is what the
    provider answered to this alert's first message on the channel (Slack: its ts and channel id)."""
    if kind not in registry.CHANNELS:
        raise DeliveryError(reason="invalid", permanent=True, message=f"channel kind {kind!r} cannot deliver")
    spec = routing.channels.get(message.channel) if routing else None
    return registry.from_settings(kind, settings, spec=spec, monitored=monitored, timeout=timeout).send(message, previous)


def _kind(row: Any, routing: Routing | None) -> str:
    if row.payload.get("kind"):
        return row.payload["kind"]
    if routing and row.channel in routing.channels:
        return routing.channels[row.channel].kind
    return row.channel


def bucket_for(kind: str, channel: str, settings: Settings, routing: Routing | None,
               redis_client: Any, clock: Callable[[], float] | None = None) -> ratelimit.TokenBucket | None:
    """The provider target's token buckets (the channel names its target and its default rate), at
    the routing.yaml channel's rate_limit when it sets one; None for a kind without a limit."""
    cls = registry.CHANNELS.get(kind)
    if redis_client is None or cls is None or cls.rate_limit is None:
        return None
    spec = routing.channels.get(channel) if routing else None
    rate, burst = cls.rate_limit
    if spec and spec.rate_limit:
        rate, burst = spec.rate_limit, spec.burst or max(1, int(spec.rate_limit))
    return ratelimit.TokenBucket(redis_client, cls.bucket_target(settings, channel), rate, burst, clock)


def deliver(nid: str, *, fleet: Engine, settings: Settings, routing: Routing | None, now: datetime,
            monitored: Engine | None = None, redis_client: Any = None, timeout: float = 10.0,
            channel_hint: str | None = None, clock: Callable[[], float] | None = None) -> Delivery:
    """lease -> holds -> rate limit -> fold -> send -> record, each stage a function below.

    With `channel_hint` (a follow-up scheduled at the bucket's next token), a row already folded
    into another message gives way to the oldest row of that channel waiting to be folded. `clock`
    is the rate-limit buckets' (default: the Redis server's time; tests inject one). Three fleet
    transactions for a notification sent: the lease with its holds, the fold, the record, each run
    once more if it meets a connection that died while idle (once_more_if_stale): the lease is taken
    once (one that committed unanswered holds the row until it runs out, then notify.sweep sends it),
    and marking sent, retrying or dead is idempotent."""
    leased = once_more_if_stale(_lease_and_hold, fleet, nid, routing, now, channel_hint, settings.opsfleet_public_url)
    if isinstance(leased, Delivery):
        return leased
    row, message = leased
    kind = _kind(row, routing)
    bucket = bucket_for(kind, row.channel, settings, routing, redis_client, clock)
    if (throttled := once_more_if_stale(_take_token, fleet, row, bucket, now)) is not None:
        return throttled
    folded, message, previous = once_more_if_stale(_fold, fleet, row, message, kind, routing, now)
    if bucket is not None:
        bucket.wait_turn()  # the wire bucket: no two requests closer than the provider allows
    log.info("notification_sending", notification_id=str(row.id), channel=row.channel, attempt=row.attempts,
             fingerprint=message.fingerprint, check=message.check)
    try:
        result = send(message, kind, settings, routing, monitored, previous, timeout)
    except DeliveryError as exc:
        if exc.reason == "rate_limited" and bucket is not None:
            bucket.penalize(exc.retry_after or 1.0)  # every worker waits out the provider's Retry-After
        return once_more_if_stale(_record_failure, fleet, row, folded, exc, now)
    return once_more_if_stale(_record_sent, fleet, row, folded, result, now, paced=bucket is not None)


def _lease_and_hold(fleet: Engine, nid: str, routing: Routing | None, now: datetime,
                    channel_hint: str | None, public_url: str | None) -> tuple[Any, Message] | Delivery:
    """Stages lease and holds, in one transaction: take the row (or, for a follow-up, the oldest one
    waiting on its channel); a row a silence or an inhibition holds back is suppressed, not sent, and
    what an earlier attempt of it folded goes on its own. An alert that inhibits others says how many."""
    with fleet.begin() as conn:
        row = outbox.lease(conn, nid, now)
        if row is None and channel_hint:
            row = outbox.lease_next_waiting(conn, channel_hint, now)
        if row is None:
            early = outbox.due_in(conn, nid, now)
            if early is not None:  # a task that came before its time (the sender's clock ran behind ours)
                return Delivery(nid, "early", retry_in=early)
            return Delivery(nid, "skipped")
        message = build_message(row, public_url)
        if row.transition == "test":
            return row, message
        hold = holds.of_notice(conn, row, routing, now) or holds.untold(conn, row, now)
        if isinstance(hold, holds.Wait):
            outbox.wait(conn, row, hold.until, f"waits for its firing notice {hold.by}", attempt=True)
            outbox.release(conn, row.id, now)
        elif hold is not None:
            outbox.suppress(conn, row, hold, now, attempt=True)
            outbox.release(conn, row.id, now)
        elif row.fingerprint and routing is not None and routing.inhibit_rules:
            message = _with_inhibited(holds.inhibited_count(conn, row.fingerprint, message.started_at), message)
    if isinstance(hold, holds.Wait):
        log.info("notification_waits_for_firing", notification_id=str(row.id), firing=hold.by, channel=row.channel)
        return Delivery(str(row.id), "early", retry_in=(hold.until - now).total_seconds(), channel=row.channel)
    if hold is not None:
        log.info("notification_suppressed", notification_id=str(row.id), reason=hold.reason, by=hold.by,
                 channel=row.channel)
        return Delivery(str(row.id), "suppressed")
    return row, message


def _take_token(fleet: Engine, row: Any, bucket: ratelimit.TokenBucket | None, now: datetime) -> Delivery | None:
    """Stage rate limit: the admission bucket's token, or the row goes back throttled (not an
    attempt), to be folded into the send at the next token."""
    if bucket is None:
        return None
    wait = bucket.take()
    if wait <= 0:
        return None
    with fleet.begin() as conn:
        outbox.throttle(conn, str(row.id), now + timedelta(seconds=wait))
    log.info("notification_throttled", notification_id=str(row.id), channel=row.channel, retry_in=wait)
    return Delivery(str(row.id), "throttled", retry_in=wait, channel=row.channel)


def _fold(fleet: Engine, row: Any, message: Message, kind: str, routing: Routing | None,
          now: datetime) -> tuple[list[Any], Message, dict | None]:
    """Stage fold, in one transaction: the rows an earlier attempt of this summary folded (the same
    rows, the same message), else what waits for the channel (held-back ones suppressed instead); and
    the provider's answer to the alert's first message, for a repeat or a resolved notice."""
    cls = registry.CHANNELS.get(kind)
    with fleet.begin() as conn:
        folded = outbox.bound(conn, row, now)
        if not folded and cls is not None and cls.folds and row.transition in FOLDABLE_TRANSITIONS:
            folded = []
            for r in outbox.fold(conn, row, now):
                hold = holds.of_notice(conn, r, routing, now)
                if hold is None:
                    folded.append(r)
                else:
                    outbox.suppress(conn, r, hold, now, attempt=False)
            folded = _told_of_firing(conn, row, folded, now)
        previous = None
        if row.fingerprint and row.transition in ("resolved", "repeat"):
            previous = outbox.previous_answer(conn, row.fingerprint, row.channel)
    if folded:
        message = _summary_message(message, folded)
    return folded, message, previous


def _told_of_firing(conn: Any, row: Any, folded: list[Any], now: datetime) -> list[Any]:
    """The folded rows less the resolved notices whose channel was not told the alert fired (a firing
    notice in this same message counts): they wait for it, or are held back (`holds.untold`)."""
    sending = tuple(str(r.id) for r in [row, *folded])
    kept = []
    for r in folded:
        hold = holds.untold(conn, r, now, sending)
        if hold is None:
            kept.append(r)
        elif isinstance(hold, holds.Wait):
            outbox.wait(conn, r, hold.until, f"waits for its firing notice {hold.by}", attempt=False)
        else:
            outbox.suppress(conn, r, hold, now, attempt=False)
    return kept


def _record_sent(fleet: Engine, row: Any, folded: list[Any], result: DeliveryResult, now: datetime, *,
                 paced: bool) -> Delivery:
    """Stage record, after a send the provider accepted: the row and what it folded are sent, in one
    transaction that also asks whether more rows wait behind the channel's bucket."""
    detail = {k: v for k, v in (result.detail or {}).items() if k in ("channel", "ts", "thread_ts", "updated")}
    with fleet.begin() as conn:
        outbox.mark_sent(conn, row, folded, now, result.provider_id, detail)
        more = paced and (len(folded) >= outbox.FOLD_LIMIT or outbox.waiting(conn, row.channel, now))
    log.info("notification_sent", notification_id=str(row.id), channel=row.channel, provider_id=result.provider_id,
             folded=len(folded))
    return Delivery(str(row.id), "sent", provider_id=result.provider_id, channel=row.channel, more_waiting=more)


def _with_inhibited(n: int, message: Message) -> Message:
    """An inhibiting alert's message says how many dependent alerts it has held back this episode."""
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


def _record_failure(fleet: Engine, row: Any, folded: list[Any], exc: DeliveryError, now: datetime) -> Delivery:
    """Stage record, after a failed send, in one transaction: dead (permanent, or out of attempts) or
    retrying with backoff, only while this worker still holds the lease; a summary's folded rows wait
    with it for its retry, or go on their own when it is dead."""
    nid = str(row.id)
    error = f"{exc.reason}: {exc.message}"[:2000]
    rate_limited = exc.reason == "rate_limited"
    dead = exc.permanent or row.attempts >= MAX_ATTEMPTS
    # A 429 is pacing, not a fault: wait exactly what the provider asks (never less), and do not
    # count it toward MAX_ATTEMPTS; every other transient failure backs off exponentially.
    delay = max(exc.retry_after or 1.0, 0.5) if rate_limited else backoff(row.attempts, exc.retry_after)
    with fleet.begin() as conn:
        if dead:
            held = outbox.mark_dead(conn, row, error, now)
            if held and folded:
                outbox.release(conn, row.id, now)  # they may still go, in another message
        else:
            held = outbox.mark_retrying(conn, row, error, now + timedelta(seconds=delay), throttled=rate_limited)
            if held and folded:
                outbox.unfold(conn, folded, now + timedelta(seconds=delay))
    if not held:  # the lease was lost: its folded rows are the new holder's
        return _lease_lost(row, error)
    if dead:
        log.error("notification_dead", notification_id=nid, channel=row.channel, reason=exc.reason,
                  attempts=row.attempts, error=error)
        return Delivery(nid, "dead", error=error, channel=row.channel)
    log.warning("notification_retrying", notification_id=nid, channel=row.channel, reason=exc.reason,
                attempts=row.attempts, retry_in=round(delay, 1))
    return Delivery(nid, "retrying", retry_in=delay, error=error, channel=row.channel)


def _lease_lost(row: Any, error: str) -> Delivery:
    """This worker's lease ran out before its attempt failed (cut off, stalled): another worker has the
    row, or has sent it; this one records nothing and leaves it alone."""
    log.warning("notification_lease_lost", notification_id=str(row.id), channel=row.channel, error=error)
    return Delivery(str(row.id), "skipped", error=error, channel=row.channel)
