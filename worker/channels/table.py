"""Seed 001's system_alerts: the application's dashboard widget shows the fleet's alerts; a resolved
notice marks the row resolved and read."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.channels.base import Channel, DeliveryError, DeliveryResult, Message


class TableChannel(Channel):
    kind = "table"
    probing = "always"

    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine

    @classmethod
    def from_settings(cls, settings: Any, spec: Any = None, *, monitored: Engine | None = None,
                      timeout: float = 10.0) -> TableChannel:
        """The monitored database's system_alerts table (the maintenance role writes it)."""
        return cls(monitored)

    @classmethod
    def probe(cls, settings: Any, spec: Any, timeout: float, monitored: Engine | None = None) -> tuple[str, str]:
        """Always asked (it sends nothing): the table exists in the monitored database."""
        if monitored is None:
            return "fail", "no monitored database"
        with monitored.connect() as conn:
            ok = conn.execute(sa.text("SELECT to_regclass('system_alerts') IS NOT NULL")).scalar()
        return ("ok", "system_alerts in the monitored database") if ok else \
            ("fail", "the monitored database has no system_alerts table")

    def send(self, message: Message, previous: dict[str, Any] | None = None) -> DeliveryResult:
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
                {"t": message.check, "title": message.title[:500], "msg": "\n\n".join(message.details),
                 "sev": message.severity,
                 "meta": json.dumps({"fingerprint": message.fingerprint, "labels": message.labels,
                                     "value": message.value, "notification_id": message.notification_id})},
            ).first()
        return DeliveryResult(provider_id=str(row.id))
