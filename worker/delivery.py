"""notify.deliver's plain functions: lease an outbox row, send it through its channel, record the
outcome (sent | retrying with backoff | dead). Knows nothing of Celery.

healthchecks-style claim: a conditional UPDATE takes the row; zero rows means someone else has it
or it is not due. A lease that expires (killed worker) makes the row claimable again.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker import ratelimit
from worker.channels import DeliveryError, DeliveryResult, Message, get_channel
from worker.config import Routing
from worker.logs import get_logger
from worker.settings import Settings

log = get_logger(__name__)

LEASE = timedelta(seconds=120)  # > the notify queue's hard time limit (90 s)
MAX_ATTEMPTS = 8
BROKER_RETRY_LIMIT = 60.0  # longer waits stay in the outbox for notify.sweep, never in the broker


@dataclass
class Delivery:
    notification_id: str
    status: str  # sent | retrying | throttled | dead | suppressed | skipped
    retry_in: float | None = None
    error: str | None = None
    provider_id: str | None = None
    channel: str | None = None
    more_waiting: bool = False  # rows still wait behind this channel's bucket (a full fold, or throttled since)


def lease(fleet: Engine, nid: str, now: datetime) -> Any:
    with fleet.begin() as conn:
        return conn.execute(
            sa.text("""
                UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, attempts = attempts + 1
                WHERE id = :id AND (
                    (status IN ('pending', 'retrying') AND next_attempt_at <= :now)
                    OR (status = 'sending' AND lease_until < :now))
                RETURNING *"""),
            {"id": nid, "now": now, "lease": now + LEASE},
        ).first()


FOLDABLE = """transition IN ('firing', 'repeat', 'resolved', 'unsilenced')
               AND (status = 'pending' OR (status = 'retrying' AND throttled))
               AND (lease_until IS NULL OR lease_until < :now)"""


def lease_next_waiting(fleet: Engine, channel: str, now: datetime) -> Any:
    """Lease the oldest row of a channel that waits to be folded (the follow-up at the bucket's next
    token): throttled, or pending in its group_wait (a storm's last runs have no task of their own)."""
    with fleet.begin() as conn:
        return conn.execute(
            sa.text(f"""
                UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, attempts = attempts + 1
                WHERE id = (SELECT id FROM fleet.notifications WHERE channel = :ch AND {FOLDABLE}
                            ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING *"""),  # noqa: S608 - a constant
            {"ch": channel, "now": now, "lease": now + LEASE},
        ).first()


def backoff(attempts: int, retry_after: float | None) -> float:
    """Exponential with jitter; never earlier than the provider's Retry-After."""
    base = min(5.0 * 2 ** (attempts - 1), 1800.0) * random.uniform(0.8, 1.2)  # noqa: S311
    return max(base, retry_after or 0.0)


def build_message(row: Any) -> Message:
    p = row.payload
    return Message(
        notification_id=str(row.id), channel=row.channel, check=p.get("check", ""), severity=p.get("severity", "info"),
        status=p.get("status", "firing"), title=p.get("title", ""), summary=p.get("summary", ""),
        description=p.get("description", ""), labels=p.get("labels", {}), value=p.get("value"),
        fingerprint=p.get("fingerprint") or "", runbook=p.get("runbook"),
        started_at=datetime.fromisoformat(p["started_at"]) if p.get("started_at") else None,
        extra={"rendered": p["rendered"]} if p.get("rendered") else {},
    )


def send(message: Message, kind: str, settings: Settings, routing: Routing | None,
         monitored: Engine | None, previous: dict | None = None, timeout: float = 10.0) -> DeliveryResult:
    """Send through the channel. `previous` is what the last message for this alert on this channel
    returned (Slack Web API: its ts and channel id), so repeats thread and resolved notices update."""
    ch = routing.channels.get(message.channel) if routing else None
    if kind == "table":
        return _send_table(message, monitored)
    if kind == "email":
        channel = get_channel("email", api_key=settings.resend_api_key, from_email=settings.from_email,
                              from_name=settings.from_name,
                              recipients=(ch.recipients if ch and ch.recipients else settings.recipients),
                              api_url=settings.resend_api_url, timeout=timeout)
    elif kind == "slack":
        channel = get_channel("slack", webhook_url=settings.alert_slack_webhook_url,
                              bot_token=settings.slack_bot_token,
                              channel=(ch.slack_channel if ch and ch.slack_channel else settings.slack_channel),
                              api_url=settings.slack_api_url, timeout=timeout)
        if previous and previous.get("ts") and previous.get("channel_id") and settings.slack_bot_token:
            if message.status == "resolved":
                return channel.send(message, update_ts=previous["ts"], channel=previous["channel_id"])
            return channel.send(message, thread_ts=previous["ts"], channel=previous["channel_id"])
        return channel.send(message)
    else:
        raise DeliveryError(reason="invalid", permanent=True, message=f"channel kind {kind!r} cannot deliver")
    return channel.send(message)


def _send_table(message: Message, monitored: Engine | None) -> DeliveryResult:
    """Seed 001's system_alerts: the app's dashboard widget shows fleet alerts; resolved updates it."""
    if monitored is None:
        raise DeliveryError(reason="invalid", permanent=True, message="no monitored database for the table channel")
    with monitored.begin() as conn:
        if message.status == "resolved":
            conn.execute(
                sa.text("""UPDATE system_alerts SET resolved_at = now(), is_read = true
                           WHERE metadata->>'fingerprint' = :fp AND resolved_at IS NULL"""),
                {"fp": message.fingerprint},
            )
            return DeliveryResult(provider_id=None, detail={"resolved": True})
        row = conn.execute(
            sa.text("""INSERT INTO system_alerts (alert_type, title, message, severity, metadata)
                       VALUES (:t, :title, :msg, :sev, CAST(:meta AS jsonb)) RETURNING id"""),
            {"t": message.check, "title": message.title[:500], "msg": message.description or message.summary,
             "sev": message.severity, "meta": json.dumps({"fingerprint": message.fingerprint, "labels": message.labels,
                                                          "value": message.value, "notification_id": message.notification_id})},
        ).first()
    return DeliveryResult(provider_id=str(row.id))


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


def count_held_back(conn, reason: str, channel: str, check: str | None, now: datetime, n: int = 1) -> None:
    conn.execute(
        sa.text("""INSERT INTO fleet.held_back (day, reason, channel, check_name, count) VALUES (:d, :r, :c, :k, :n)
                   ON CONFLICT (day, reason, channel, check_name) DO UPDATE SET count = fleet.held_back.count + :n"""),
        {"d": now.date(), "r": reason, "c": channel, "k": check or "", "n": n},
    )


def deliver(nid: str, *, fleet: Engine, settings: Settings, routing: Routing | None, now: datetime,
            monitored: Engine | None = None, redis_client: Any = None, timeout: float = 10.0,
            channel_hint: str | None = None) -> Delivery:
    """Lease -> silence? -> rate-limit token -> (fold what waits behind the bucket) -> send -> record.

    With `channel_hint` (a follow-up scheduled at the bucket's next token), a row already folded
    into another message gives way to the oldest row of that channel waiting to be folded."""
    from worker import silences

    row = lease(fleet, nid, now)
    if row is None and channel_hint:
        row = lease_next_waiting(fleet, channel_hint, now)
    if row is None:
        return Delivery(nid, "skipped")
    nid = str(row.id)
    kind = _kind(row, routing)
    message = build_message(row)
    folded: list[Any] = []

    with fleet.begin() as conn:
        silence = silences.matching(conn, row.check_name, message.labels, now) if row.transition != "test" else None
        if silence:
            conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'suppressed', suppressed_by = :s,
                                    lease_until = NULL, attempts = attempts - 1 WHERE id = :id"""), {"s": silence, "id": nid})
            count_held_back(conn, "silenced", row.channel, row.check_name, now)
    if silence:
        log.info("notification_suppressed", notification_id=nid, silence_id=silence, channel=row.channel)
        return Delivery(nid, "suppressed")

    bucket = None
    if redis_client is not None and kind in ("email", "slack"):
        ch = routing.channels.get(row.channel) if routing else None
        rate, burst = ratelimit.DEFAULTS[kind]
        if ch and ch.rate_limit:
            rate, burst = ch.rate_limit, ch.burst or max(1, int(ch.rate_limit))
        bucket = ratelimit.TokenBucket(redis_client, _bucket_target(kind, row.channel, settings), rate, burst)
        wait = bucket.take()
        if wait > 0:
            # not an attempt: give the row back, marked throttled, for the next token to fold it in
            with fleet.begin() as conn:
                conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', throttled = true,
                                        lease_until = NULL, attempts = attempts - 1, next_attempt_at = :at,
                                        last_error = 'throttled: rate limit bucket empty' WHERE id = :id"""),
                             {"id": nid, "at": now + timedelta(seconds=wait)})
            log.info("notification_throttled", notification_id=nid, channel=row.channel, retry_in=wait)
            return Delivery(nid, "throttled", retry_in=wait, channel=row.channel)
    if kind in ("email", "slack") and row.transition in ("firing", "repeat", "resolved", "unsilenced"):
        folded = _fold(fleet, row, now)
        if folded:
            message = _summary_message(message, folded)

    previous = None
    if row.fingerprint and row.transition in ("resolved", "repeat"):
        with fleet.connect() as conn:
            previous = conn.execute(sa.text("SELECT last_notified -> :ch FROM fleet.alerts WHERE fingerprint = :fp"),
                                    {"ch": row.channel, "fp": row.fingerprint}).scalar()
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
        if folded:
            _unfold(fleet, folded, now + timedelta(seconds=outcome.retry_in or 0))
        outcome.channel = row.channel
        return outcome
    detail = {k: v for k, v in (result.detail or {}).items() if k in ("channel", "ts", "thread_ts", "updated")}
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'sent', sent_at = :now, provider_id = :pid,
                       provider_detail = CAST(:detail AS jsonb), lease_until = NULL, last_error = NULL,
                       throttled = false WHERE id = :id"""),
            {"id": nid, "now": now, "pid": result.provider_id, "detail": json.dumps(detail)},
        )
        if folded:
            conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'sent', sent_at = :now, folded_into = :id,
                                    provider_id = :pid, lease_until = NULL, throttled = false
                                    WHERE id = ANY(CAST(:ids AS uuid[]))"""),
                         {"now": now, "id": nid, "pid": result.provider_id, "ids": [str(f.id) for f in folded]})
            for f in folded:
                if f.throttled:
                    count_held_back(conn, "folded", f.channel, f.check_name, now)
        if row.fingerprint and row.transition in ("firing", "unsilenced", "test"):
            conn.execute(
                sa.text("""UPDATE fleet.alerts SET last_notified = last_notified || jsonb_build_object(
                               CAST(:ch AS text), jsonb_build_object('at', CAST(:now AS text), 'provider_id',
                               CAST(:pid AS text), 'ts', CAST(:ts AS text), 'channel_id', CAST(:cid AS text)))
                           WHERE fingerprint = :fp"""),
                {"ch": row.channel, "now": now.isoformat(), "pid": result.provider_id, "fp": row.fingerprint,
                 "ts": detail.get("ts"), "cid": detail.get("channel")},
            )
    log.info("notification_sent", notification_id=nid, channel=row.channel, provider_id=result.provider_id,
             folded=len(folded) if folded else 0)
    more = bucket is not None and (len(folded) >= FOLD_LIMIT or _waiting(fleet, row.channel, now))
    return Delivery(nid, "sent", provider_id=result.provider_id, channel=row.channel, more_waiting=more)


def _waiting(fleet: Engine, channel: str, now: datetime) -> bool:
    """Foldable rows still wait for this channel (throttled, or pending in their group_wait: the
    last runs of a storm have no task of their own): the follow-up chain goes on."""
    with fleet.connect() as conn:
        return bool(conn.execute(sa.text(f"""SELECT EXISTS (SELECT 1 FROM fleet.notifications
                                             WHERE channel = :ch AND {FOLDABLE})"""),  # noqa: S608 - a constant
                                 {"ch": channel, "now": now}).scalar())


FOLD_LIMIT = 100


def _fold(fleet: Engine, row: Any, now: datetime) -> list[Any]:
    """Lease what waits for this channel, to send as one message: rows throttled behind the empty
    bucket, and rows still in their group_wait (alerts of one run, or a storm across checks).
    A waiting row that a silence matches is suppressed here, not sent."""
    from worker import silences

    with fleet.begin() as conn:
        rows = conn.execute(
            sa.text(f"""UPDATE fleet.notifications SET status = 'sending', lease_until = :lease
                       WHERE id IN (SELECT id FROM fleet.notifications
                                    WHERE channel = :ch AND id <> :id AND {FOLDABLE}
                                    ORDER BY created_at LIMIT :lim FOR UPDATE SKIP LOCKED)
                       RETURNING *"""),  # noqa: S608 - a constant
            {"ch": row.channel, "id": row.id, "lease": now + LEASE, "now": now, "lim": FOLD_LIMIT},
        ).all()
        kept = []
        for r in rows:
            sid = silences.matching(conn, r.check_name, (r.payload or {}).get("labels", {}), now)
            if sid:
                conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'suppressed', suppressed_by = :s,
                                        lease_until = NULL WHERE id = :id"""), {"s": sid, "id": r.id})
                count_held_back(conn, "silenced", r.channel, r.check_name, now)
            else:
                kept.append(r)
        return kept


def _unfold(fleet: Engine, folded: list[Any], retry_at: datetime) -> None:
    """The summary failed: its rows wait again, still foldable into the next attempt."""
    with fleet.begin() as conn:
        conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', throttled = true,
                                lease_until = NULL, next_attempt_at = :at
                                WHERE id = ANY(CAST(:ids AS uuid[]))"""),
                     {"ids": [str(f.id) for f in folded], "at": retry_at})


def _summary_message(first: Message, folded: list[Any]) -> Message:
    """One message standing for several: a group (one run, or a storm within group_wait), or a queue
    that waited behind the rate limit, sent as a summary instead of late one by one (or dropped, as
    Alertmanager does with Slack's 429)."""
    items = [first] + [build_message(f) for f in folded]
    worst = min(items, key=lambda m: ("critical", "high", "warning", "medium", "info").index(m.severity)
                if m.severity in ("critical", "high", "warning", "medium", "info") else 9)
    lines = [f"[{m.severity.upper()}] {'RESOLVED ' if m.status == 'resolved' else ''}{m.title}" for m in items]
    return Message(
        notification_id=first.notification_id, channel=first.channel, check="(several checks)"
        if len({m.check for m in items}) > 1 else first.check, severity=worst.severity, status="firing",
        title=f"{worst.title} (+{len(items) - 1} more)",
        summary=f"{len(items)} alerts grouped into one message",
        description="\n".join(lines), labels={}, fingerprint="", extra={"folded": len(folded)},
    )


def _record_failure(fleet: Engine, row: Any, exc: DeliveryError, now: datetime) -> Delivery:
    nid = str(row.id)
    error = f"{exc.reason}: {exc.message}"[:2000]
    if exc.permanent or row.attempts >= MAX_ATTEMPTS:
        with fleet.begin() as conn:
            conn.execute(
                sa.text("""UPDATE fleet.notifications SET status = 'dead', lease_until = NULL, last_error = :e,
                           dead_at = :now WHERE id = :id"""),
                {"id": nid, "e": error, "now": now},
            )
            count_held_back(conn, "dead", row.channel, row.check_name, now)
        log.error("notification_dead", notification_id=nid, channel=row.channel, reason=exc.reason,
                  attempts=row.attempts, error=error)
        return Delivery(nid, "dead", error=error)
    rate_limited = exc.reason == "rate_limited"
    # A 429 is pacing, not a fault: wait exactly what the provider asks (never less), and do not
    # count it toward MAX_ATTEMPTS; every other transient failure backs off exponentially.
    delay = max(exc.retry_after or 1.0, 0.5) if rate_limited else backoff(row.attempts, exc.retry_after)
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL, last_error = :e,
                       next_attempt_at = :at, throttled = :throttled,
                       attempts = attempts - CASE WHEN :throttled THEN 1 ELSE 0 END WHERE id = :id"""),
            {"id": nid, "e": error, "at": now + timedelta(seconds=delay), "throttled": rate_limited},
        )
    log.warning("notification_retrying", notification_id=nid, channel=row.channel, reason=exc.reason,
                attempts=row.attempts, retry_in=round(delay, 1))
    return Delivery(nid, "retrying", retry_in=delay, error=error)


def due(fleet: Engine, now: datetime, limit: int = 500) -> list[str]:
    """Outbox rows that are due and not leased, or whose lease expired (killed worker, lost message)."""
    with fleet.connect() as conn:
        rows = conn.execute(
            sa.text("""SELECT id FROM fleet.notifications
                       WHERE (status IN ('pending', 'retrying') AND next_attempt_at <= :now)
                          OR (status = 'sending' AND lease_until < :now)
                       ORDER BY next_attempt_at LIMIT :lim"""),
            {"now": now, "lim": limit},
        )
        return [str(r.id) for r in rows]
