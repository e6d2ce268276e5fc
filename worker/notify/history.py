"""Alert history: every transition and every notification decided for it (sent to which channel,
or held back and why), newest first; and the counts of what was held back without a row (the
deduplicated repeats, counted per day in fleet.held_back). What `opsfleet alerts history` and the
status page show. Reads only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

FIELDS = ("at", "kind", "check", "severity", "labels", "fingerprint", "what", "value", "channel", "status", "detail")

_TIMELINE = sa.text("""
    SELECT * FROM (
        SELECT e.at, 'transition' AS kind, e.check_name AS check, e.severity, e.labels, e.fingerprint,
               e.from_state || ' -> ' || e.to_state AS what, e.value, NULL AS channel, NULL AS status,
               NULL AS detail, e.id AS ord
        FROM fleet.alert_events e
        WHERE e.at >= :since AND (CAST(:c AS text) IS NULL OR e.check_name = :c)
          AND (CAST(:t AS text) IS NULL OR e.target = :t)
        UNION ALL
        SELECT COALESCE(CAST(n.payload->>'at' AS timestamptz), n.created_at), 'notification', n.check_name,
               n.payload->>'severity', COALESCE(n.payload->'labels', '{}'::jsonb), n.fingerprint, n.transition,
               CAST(n.payload->>'value' AS double precision), n.channel, n.status,
               CASE WHEN n.folded_into IS NOT NULL THEN 'folded into ' || left(CAST(n.folded_into AS text), 8)
                    WHEN n.status = 'suppressed' AND COALESCE(n.suppressed_reason, 'silenced') = 'silenced'
                         THEN 'silenced by silence '
                              || left(COALESCE(CAST(n.suppressed_by AS text), n.suppressed_detail, '?'), 8)
                    WHEN n.status = 'suppressed' AND n.suppressed_reason = 'inhibited'
                         THEN 'inhibited by alert ' || left(COALESCE(n.suppressed_detail, '?'), 12)
                    WHEN n.status = 'suppressed' THEN n.suppressed_reason || COALESCE(' by ' || n.suppressed_detail, '')
                    WHEN n.status = 'sent' THEN 'sent ' || to_char(n.sent_at AT TIME ZONE 'UTC', 'HH24:MI:SS')
                    WHEN n.status IN ('dead', 'retrying') THEN left(n.last_error, 300)
               END, 0
        FROM fleet.notifications n
        WHERE n.created_at >= :since AND n.fingerprint IS NOT NULL
          AND (CAST(:c AS text) IS NULL OR n.check_name = :c) AND (CAST(:t AS text) IS NULL OR EXISTS (
              SELECT 1 FROM fleet.alerts a WHERE a.fingerprint = n.fingerprint AND a.target = :t))
    ) t ORDER BY at DESC, kind, ord DESC LIMIT :lim""")


def timeline(conn: Connection, since: datetime, check: str | None = None, limit: int = 1000,
             target: str | None = None) -> list[dict[str, Any]]:
    """Transitions and notifications since `since`, newest first (of one target, its key, when `target`
    is given: a notification belongs to the target of the alert it is about); a notification's `what`
    is its transition (firing, repeat, resolved, unsilenced), its `detail` what became of it."""
    rows = conn.execute(_TIMELINE, {"since": since, "c": check, "lim": limit, "t": target}).mappings().all()
    return [{k: r[k] for k in FIELDS} for r in rows]


def held_back(conn: Connection, since: datetime, check: str | None = None) -> dict[str, dict[str, int]]:
    """reason -> channel -> count, for the days since `since` (fleet.held_back counts per day and check,
    not per target)."""
    out: dict[str, dict[str, int]] = {}
    for r in conn.execute(sa.text(
            """SELECT reason, channel, sum(count) AS n FROM fleet.held_back
               WHERE day >= CAST(:since AS date) AND (CAST(:c AS text) IS NULL OR check_name = :c)
               GROUP BY 1, 2 ORDER BY 1, 2"""), {"since": since, "c": check}):
        out.setdefault(r.reason, {})[r.channel] = int(r.n)
    return out


def sent_per_channel(conn: Connection, since: datetime, check: str | None = None,
                     target: str | None = None) -> dict[str, dict[str, int]]:
    """channel -> status -> count of the notifications created since `since` (about one target's alerts
    when `target`, a key, is given)."""
    out: dict[str, dict[str, int]] = {}
    for r in conn.execute(sa.text(
            """SELECT channel, status, count(*) AS n FROM fleet.notifications n
               WHERE created_at >= :since AND (CAST(:c AS text) IS NULL OR check_name = :c)
                 AND (CAST(:t AS text) IS NULL OR EXISTS (
                      SELECT 1 FROM fleet.alerts a WHERE a.fingerprint = n.fingerprint AND a.target = :t))
               GROUP BY 1, 2 ORDER BY 1, 2"""), {"since": since, "c": check, "t": target}):
        out.setdefault(r.channel, {})[r.status] = int(r.n)
    return out
