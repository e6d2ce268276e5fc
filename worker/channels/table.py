"""Seed 001's system_alerts: the application's dashboard widget shows the fleet's alerts; a resolved
notice marks the row resolved and read."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.channels.base import Channel, DeliveryError, DeliveryResult, Message


class TableChannel(Channel):
    kind = "table"

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine

    def send(self, message: Message) -> DeliveryResult:
        if self.engine is None:
            raise DeliveryError(reason="invalid", permanent=True, message="no monitored database for the table channel")
        with self.engine.begin() as conn:
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
                 "sev": message.severity,
                 "meta": json.dumps({"fingerprint": message.fingerprint, "labels": message.labels,
                                     "value": message.value, "notification_id": message.notification_id})},
            ).first()
        return DeliveryResult(provider_id=str(row.id))
