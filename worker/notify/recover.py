"""Dead notifications, and sending them again once their channel is fixed: `opsfleet notify dead` and
`notify retry`, and the status page's outbox section, share these functions.

A dead row is requeued as it is (outbox.requeue): the same row, so the same dedup key and the same
idempotency key (the row's id: Resend's Idempotency-Key, the webhook's), and a provider that did get
an earlier attempt replays its answer instead of sending twice. Some dead rows must not be sent any
more, and are refused with the reason: a firing notice whose alert has resolved since (it would say
the alert fires), or whose episode is over; a resolved notice whose channel was never told the
alert fired (Alertmanager's rule, `holds.untold`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.notify import holds, outbox

FIRING = ("firing", "repeat", "unsilenced", "escalation")
FIELDS = ("id", "channel", "check", "transition", "attempts", "dead_at", "error", "refused")


@dataclass(frozen=True)
class Dead:
    """A dead notification; `refused`: why `retry` would not send it again (None: it would)."""

    id: str
    channel: str
    check: str | None
    transition: str
    attempts: int
    dead_at: datetime | None
    error: str | None
    refused: str | None

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Retried:
    """What `retry` did with one dead row: requeued (due now), or refused with the reason."""

    id: str
    channel: str
    check: str | None
    transition: str
    requeued: bool
    reason: str | None = None


_DEAD = """SELECT n.*, a.state AS alert_state, a.since AS alert_since, a.fired_at AS alert_fired_at,
                  a.fingerprint IS NOT NULL AS alert_known
           FROM fleet.notifications n LEFT JOIN fleet.alerts a ON a.fingerprint = n.fingerprint
           WHERE n.status = 'dead'"""


def dead(conn: Connection, now: datetime, *, channel: str | None = None, since: datetime | None = None,
         limit: int | None = None) -> list[Dead]:
    """The dead notifications, newest first (of one channel; dead since `since`)."""
    rows = conn.execute(sa.text(
        _DEAD + """ AND (CAST(:ch AS text) IS NULL OR n.channel = :ch)
                    AND (CAST(:since AS timestamptz) IS NULL OR COALESCE(n.dead_at, n.created_at) >= :since)
                    ORDER BY COALESCE(n.dead_at, n.created_at) DESC, n.id LIMIT :lim"""),
        {"ch": channel, "since": since, "lim": limit}).all()
    return [_dead(conn, r, now) for r in rows]


def _dead(conn: Connection, r: Any, now: datetime) -> Dead:
    return Dead(id=str(r.id), channel=r.channel, check=r.check_name, transition=r.transition, attempts=r.attempts,
                dead_at=r.dead_at, error=r.last_error, refused=refusal(conn, r, now))


def refusal(conn: Connection, row: Any, now: datetime) -> str | None:
    """Why the dead row `row` (with its alert's state: `_DEAD`'s columns) must not be sent again, or None."""
    if row.transition in FIRING and row.fingerprint:
        if not row.alert_known:
            return "its alert is gone (cleaned up): there is nothing firing to tell"
        episode = row.dedup_key.split(":")[3] if row.dedup_key.count(":") >= 3 else ""
        same = row.alert_fired_at is not None and str(int(row.alert_fired_at.timestamp())) == episode
        if row.alert_state == "firing" and not same:
            return (f"its alert resolved, and fires again since {row.alert_since:%Y-%m-%d %H:%M} UTC: that "
                    "episode's own notices tell it")
        if row.alert_state != "firing":
            return (f"its alert has resolved since (at {row.alert_since:%Y-%m-%d %H:%M} UTC, now {row.alert_state}): "
                    "sent now, this firing notice would say it still fires")
    if row.transition == "resolved":
        hold = holds.untold(conn, row, now)
        if isinstance(hold, holds.Hold):
            return (f"its channel was never told the alert fired (firing notice {hold.by or 'none'} dead or held "
                    "back): there is nothing to resolve")
    return None


def find(conn: Connection, given: str) -> Any:
    """The dead row whose id is `given` or starts with it (8 characters at least); ValueError (one line)
    when none, several, or one that is not dead."""
    prefix = given.strip().lower()
    if len(prefix) < 8 or any(c not in "0123456789abcdef-" for c in prefix):
        raise ValueError(f"{given!r} is not a notification id (the first 8 characters at least, as "
                         "`opsfleet notify dead` shows them)")
    rows = conn.execute(sa.text("SELECT id, status FROM fleet.notifications WHERE CAST(id AS text) LIKE :p "
                                "ORDER BY id LIMIT 5"), {"p": prefix + "%"}).all()
    if not rows:
        raise ValueError(f"no notification {given} (`opsfleet notify dead` lists the dead ones)")
    if len(rows) > 1:
        raise ValueError(f"{given!r} is the start of several notifications: give more of the id")
    if rows[0].status != "dead":
        raise ValueError(f"notification {rows[0].id} is {rows[0].status}, not dead: only a dead one is retried")
    return conn.execute(sa.text(_DEAD + " AND n.id = :id"), {"id": rows[0].id}).one()


def retry(conn: Connection, now: datetime, *, ids: list[str] | None = None, channel: str | None = None,
          all_dead: bool = False) -> list[Retried]:
    """Requeue the dead rows `ids` (each found with `find`: a wrong one is a ValueError before anything
    is written), or every dead row (of `channel`) with `all_dead`; each one refused says why."""
    if all_dead:
        rows = conn.execute(sa.text(_DEAD + """ AND (CAST(:ch AS text) IS NULL OR n.channel = :ch)
                                            ORDER BY n.created_at, n.id"""), {"ch": channel}).all()
    else:
        rows = [find(conn, i) for i in ids or []]
        if channel is not None and (other := [r for r in rows if r.channel != channel]):
            raise ValueError(f"notification {other[0].id} is of channel {other[0].channel}, not {channel}")
    out = []
    for r in {str(r.id): r for r in rows}.values():
        reason = refusal(conn, r, now)
        requeued = reason is None and outbox.requeue(conn, str(r.id), now)
        if reason is None and not requeued:
            reason = "it is no longer dead (someone retried it meanwhile)"
        out.append(Retried(str(r.id), r.channel, r.check_name, r.transition, requeued, reason))
    return out
