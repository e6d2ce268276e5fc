"""Held back, and by what: the one place that answers whether a notice must not go out now because an
active silence matches it or a firing alert inhibits it. Read-only: delivery asks it at send time (for
the row it leased and for every row it folds in) and writes the answer through the outbox; the engine's
memory asks whether what held an episode back is over; the status page shows "silenced by" with the
same predicate.

A resolved notice is held back (`never_notified`) on a channel that was never told the alert fired:
Alertmanager's rule, per channel, only once the episode's firing notice there was actually sent
(`untold`); while that notice is still on its way the resolved one waits for it.

A route's mute (time intervals) is not here: it is decided with the route when the notice is planned
(`plan.plan`, through `Routing.muted_by`), and the row is written already held back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.notify import inhibit, silences
from worker.notify.routing import Routing


class Hold(NamedTuple):
    """Why a notice is held back: `reason` silenced | inhibited | never_notified, `by` the silence's
    id, the inhibiting alert's fingerprint, or the id of the firing notice that was never sent."""

    reason: str
    by: str


class Wait(NamedTuple):
    """A resolved notice waits: its channel's firing notice `by` is still on its way (until `until`)."""

    until: datetime
    by: str


WAIT_AFTER = timedelta(seconds=5)  # past the firing notice's next attempt, before asking again


def silenced_by_sql(check_sql: str, labels_sql: str) -> str:
    """A scalar subquery: the id of the active silence (at :now) that matches the check and labels of
    two SQL expressions of the caller's (the status page: an alert's columns), NULL when none."""
    where = silences.matches(check_sql, labels_sql)
    return f"(SELECT CAST(s.id AS text) FROM fleet.silences s WHERE {where} ORDER BY s.ends_at DESC LIMIT 1)"  # noqa: S608


def silenced_by(conn: Connection, check: str | None, labels: dict[str, str], now: datetime) -> str | None:
    """The id of an active silence matching this check and labels, if any."""
    return silences.matching(conn, check, labels, now)


def firing_alerts(conn: Connection) -> list[tuple[str, dict[str, str]]]:
    """(fingerprint, matcher labels) of every alert firing now: the candidates to inhibit others."""
    rows = conn.execute(sa.text(
        "SELECT fingerprint, check_name, severity, labels, database FROM fleet.alerts WHERE state = 'firing'")).all()
    return [(r.fingerprint, inhibit.alert_labels(r.check_name, r.severity, dict(r.labels), r.database)) for r in rows]


def inhibited_by_alert(conn: Connection, routing: Routing | None, target: dict[str, str], target_fp: str) -> str | None:
    """The fingerprint of a firing alert that inhibits this one now, if any."""
    if routing is None or not routing.inhibit_rules:
        return None
    rules = [r for r in routing.inhibit_rules if all(m.matches(target) for m in r.target())]
    if not rules:
        return None
    return inhibit.inhibiting(rules, target, target_fp, firing_alerts(conn))


def of_notice(conn: Connection, row: Any, routing: Routing | None, now: datetime) -> Hold | None:
    """Why the outbox row `row` must not be sent now (a silence first, then an inhibition), or None."""
    payload = row.payload or {}
    labels = payload.get("labels", {})
    sid = silenced_by(conn, row.check_name, labels, now)
    if sid:
        return Hold("silenced", sid)
    if row.fingerprint:
        target = inhibit.alert_labels(row.check_name or "", payload.get("severity", ""), labels, payload.get("database"))
        source = inhibited_by_alert(conn, routing, target, row.fingerprint)
        if source:
            return Hold("inhibited", source)
    return None


def still_holds(conn: Connection, reason: str, *, check: str, severity: str, labels: dict[str, str],
                database: str | None, fingerprint: str, routing: Routing | None, now: datetime) -> bool:
    """Whether a silence or an inhibition that held back an episode's latest notice holds it still
    (a mute is the route's to say: False here)."""
    if reason == "silenced":
        return silenced_by(conn, check, labels, now) is not None
    if reason == "inhibited":
        target = inhibit.alert_labels(check, severity, labels, database)
        return inhibited_by_alert(conn, routing, target, fingerprint) is not None
    return True  # muted: not over as far as a silence or an inhibition goes


def inhibited_count(conn: Connection, fingerprint: str, since: datetime | None) -> int:
    """How many alerts this one has held back notices of since `since` (its episode's start)."""
    return int(conn.execute(sa.text(
        """SELECT count(DISTINCT fingerprint) FROM fleet.notifications
           WHERE suppressed_reason = 'inhibited' AND suppressed_detail = :fp
             AND (CAST(:since AS timestamptz) IS NULL OR next_attempt_at >= :since)"""),
        {"fp": fingerprint, "since": since}).scalar())  # next_attempt_at: the evaluation's clock, plus group_wait


def untold(conn: Connection, row: Any, now: datetime, sending: tuple[str, ...] = ()) -> Hold | Wait | None:
    """For a resolved notice: None when its channel was told the alert fired this episode (a firing,
    repeat or unsilenced notice there was sent, or goes in the same message: `sending`, the ids of
    the message's rows); Wait while such a notice is still on its way (pending, retrying, sending);
    else Hold never_notified (each one went dead or was held back: nothing to resolve)."""
    if row.transition != "resolved" or not row.fingerprint:
        return None
    told = conn.execute(sa.text(
        """SELECT bool_or(status = 'sent' OR CAST(id AS text) = ANY(CAST(:sending AS text[]))) AS sent,
                  max(CASE WHEN status IN ('pending', 'retrying') THEN next_attempt_at
                           WHEN status = 'sending' THEN lease_until END) AS until,
                  CAST((array_agg(id ORDER BY status IN ('pending', 'retrying', 'sending') DESC, created_at DESC))[1]
                       AS text) AS latest
           FROM fleet.notifications
           WHERE fingerprint = :fp AND channel = :ch AND transition IN ('firing', 'repeat', 'unsilenced', 'escalation')
             AND split_part(dedup_key, ':', 4) = split_part(:key, ':', 4)"""),
        {"fp": row.fingerprint, "ch": row.channel, "key": row.dedup_key, "sending": list(sending)}).one()
    if told.sent:
        return None
    if told.until is not None:
        return Wait(max(told.until, now) + WAIT_AFTER, told.latest)
    return Hold("never_notified", told.latest or "")
