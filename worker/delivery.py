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
    status: str  # sent | retrying | dead | skipped
    retry_in: float | None = None
    error: str | None = None
    provider_id: str | None = None


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
    )


def send(message: Message, kind: str, settings: Settings, routing: Routing | None,
         monitored: Engine | None) -> DeliveryResult:
    ch = routing.channels.get(message.channel) if routing else None
    if kind == "table":
        return _send_table(message, monitored)
    if kind == "email":
        channel = get_channel("email", api_key=settings.resend_api_key, from_email=settings.from_email,
                              from_name=settings.from_name,
                              recipients=(ch.recipients if ch and ch.recipients else settings.recipients),
                              api_url=settings.resend_api_url)
    elif kind == "slack":
        channel = get_channel("slack", webhook_url=settings.alert_slack_webhook_url,
                              bot_token=settings.slack_bot_token,
                              channel=(ch.slack_channel if ch and ch.slack_channel else settings.slack_channel),
                              api_url=settings.slack_api_url)
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


def deliver(nid: str, *, fleet: Engine, settings: Settings, routing: Routing | None, now: datetime,
            monitored: Engine | None = None) -> Delivery:
    row = lease(fleet, nid, now)
    if row is None:
        return Delivery(nid, "skipped")
    kind = row.payload.get("kind") or (routing.channels[row.channel].kind if routing and row.channel in routing.channels
                                       else row.channel)
    message = build_message(row)
    log.info("notification_sending", notification_id=nid, channel=row.channel, attempt=row.attempts,
             fingerprint=message.fingerprint, check=message.check)
    try:
        result = send(message, kind, settings, routing, monitored)
    except DeliveryError as exc:
        return _record_failure(fleet, row, exc, now)
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'sent', sent_at = :now, provider_id = :pid,
                       lease_until = NULL, last_error = NULL WHERE id = :id"""),
            {"id": nid, "now": now, "pid": result.provider_id},
        )
        if row.fingerprint:
            conn.execute(
                sa.text("""UPDATE fleet.alerts SET last_notified = last_notified || jsonb_build_object(
                               CAST(:ch AS text), jsonb_build_object('at', CAST(:now AS text), 'provider_id', CAST(:pid AS text)))
                           WHERE fingerprint = :fp"""),
                {"ch": row.channel, "now": now.isoformat(), "pid": result.provider_id, "fp": row.fingerprint},
            )
    log.info("notification_sent", notification_id=nid, channel=row.channel, provider_id=result.provider_id)
    return Delivery(nid, "sent", provider_id=result.provider_id)


def _record_failure(fleet: Engine, row: Any, exc: DeliveryError, now: datetime) -> Delivery:
    nid = str(row.id)
    error = f"{exc.reason}: {exc.message}"[:2000]
    if exc.permanent or row.attempts >= MAX_ATTEMPTS:
        with fleet.begin() as conn:
            conn.execute(
                sa.text("""UPDATE fleet.notifications SET status = 'dead', lease_until = NULL, last_error = :e
                           WHERE id = :id"""),
                {"id": nid, "e": error},
            )
        log.error("notification_dead", notification_id=nid, channel=row.channel, reason=exc.reason,
                  attempts=row.attempts, error=error)
        return Delivery(nid, "dead", error=error)
    delay = backoff(row.attempts, exc.retry_after)
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL, last_error = :e,
                       next_attempt_at = :at WHERE id = :id"""),
            {"id": nid, "e": error, "at": now + timedelta(seconds=delay)},
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
