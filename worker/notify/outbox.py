"""The outbox: fleet.notifications, and fleet.held_back (what was deduplicated, silenced, folded or
dead, per day, for the digest). This module is their one writer.

`plan()` decides whether an alert transition notifies each channel its routes name, and why, the way
Alertmanager's dedup stage does: first notification, repeat interval elapsed, resolved, a silence
ended, or not (within the repeat interval; send_resolved off). A notice that goes out gets a dedup
key `channel:fingerprint:transition:episode:repeat-window`; the UNIQUE constraint on it makes a
second writer of the same notice (a doubled beat, a redelivered task, the next evaluation inside the
same window) a no-op. The engine writes what plan() says; the backtest counts it against a set of
keys, the same rule in memory, so the two cannot disagree on what would be sent.

Delivery's side of the table is here too: the lease by conditional UPDATE (0 rows: someone else has
it, or it is not due), folding what waits for a channel into one message, and recording the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.notify import silences
from worker.notify.routing import Routing

LEASE = timedelta(seconds=120)  # > the notify queue's hard time limit (90 s)
FOLD_LIMIT = 100

# why a transition notifies a channel, or not (plan's reasons)
FIRST = "first_notification"
REPEAT = "repeat_interval_elapsed"
RESOLVED = "resolved"
UNSILENCED = "silence_ended"
WITHIN_REPEAT = "within_repeat_interval"  # held back: deduplicated
RESOLVED_OFF = "send_resolved_off"
_TRANSITION = {FIRST: "firing", REPEAT: "repeat", RESOLVED: "resolved", UNSILENCED: "unsilenced"}


@dataclass(frozen=True)
class Decision:
    """Whether one channel is told of one transition, and why."""

    channel: str
    reason: str
    dedup_key: str | None = None  # None: nothing is written
    due: datetime | None = None  # after the route's group_wait

    @property
    def notifies(self) -> bool:
        return self.dedup_key is not None

    @property
    def transition(self) -> str | None:
        return _TRANSITION.get(self.reason)


def plan(routing: Routing, *, check: str, severity: str, labels: dict[str, str], fingerprint: str,
         before: str, after: str, fired_at: datetime | None, now: datetime,
         ended_silence: Callable[[str], str | None] | None = None) -> list[Decision]:
    """What a transition from `before` to `after` sends, per channel of every route that matches.

    Only a firing instance (each evaluation: the first notice, then one per repeat window) and a
    firing -> resolved transition can notify. `ended_silence(channel)` names the silence that
    suppressed this episode's last notice on the channel if it has ended since (asked only inside the
    first repeat window): the notice is then sent once, as `unsilenced`."""
    if fired_at is None or not (after == "firing" or (after == "resolved" and before == "firing")):
        return []
    episode = int(fired_at.timestamp())
    decisions = []
    for route in routing.route_for({"severity": severity, "check": check, **labels}):
        due = now + route.group_wait
        for ch in (c for c in route.channels if routing.channels[c].kind != "digest"):
            if after == "resolved":
                decisions.append(Decision(ch, RESOLVED, f"{ch}:{fingerprint}:resolved:{episode}:0", due)
                                 if route.send_resolved else Decision(ch, RESOLVED_OFF))
                continue
            window = int((now - fired_at) / route.repeat_interval)
            if window > 0:
                decisions.append(Decision(ch, REPEAT, f"{ch}:{fingerprint}:repeat:{episode}:{window}", due))
            elif before != "firing":
                decisions.append(Decision(ch, FIRST, f"{ch}:{fingerprint}:firing:{episode}:0", due))
            elif ended_silence is not None and (sid := ended_silence(ch)):
                decisions.append(Decision(ch, UNSILENCED, f"{ch}:{fingerprint}:unsilenced:{episode}:0:{sid}", due))
            else:
                decisions.append(Decision(ch, WITHIN_REPEAT))
    return decisions


def write(conn: Connection, decisions: list[Decision], *, check: str, fingerprint: str,
          payload: Callable[[], dict[str, Any]], now: datetime) -> list[str]:
    """The rows plan() asked for, in `conn`'s transaction (the state change's); returns the new ids.
    A notice already written (its key exists), or held within the repeat window, counts as
    deduplicated for the digest."""
    ids: list[str] = []
    body: str | None = None
    for d in decisions:
        if d.reason == WITHIN_REPEAT:
            count_held_back(conn, "deduplicated", d.channel, check, now)
        if not d.notifies:
            continue
        body = body or json.dumps(payload(), default=str)
        nid = insert(conn, channel=d.channel, transition=d.transition, payload=body, dedup_key=d.dedup_key,
                     due=d.due, check=check, fingerprint=fingerprint)
        if nid:
            ids.append(nid)
        else:
            count_held_back(conn, "deduplicated", d.channel, check, now)
    return ids


def insert(conn: Connection, *, channel: str, transition: str, payload: dict[str, Any] | str, dedup_key: str,
           due: datetime, check: str | None = None, fingerprint: str | None = None) -> str | None:
    """One outbox row; None when its dedup key is already there."""
    row = conn.execute(
        sa.text("""INSERT INTO fleet.notifications (channel, fingerprint, check_name, transition, payload,
                   dedup_key, next_attempt_at)
                   VALUES (:ch, :fp, :c, :t, CAST(:p AS jsonb), :k, :due)
                   ON CONFLICT (dedup_key) DO NOTHING RETURNING id"""),
        {"ch": channel, "fp": fingerprint, "c": check, "t": transition, "k": dedup_key, "due": due,
         "p": payload if isinstance(payload, str) else json.dumps(payload, default=str)},
    ).first()
    return str(row.id) if row else None


def count_held_back(conn: Connection, reason: str, channel: str, check: str | None, now: datetime,
                    n: int = 1) -> None:
    conn.execute(
        sa.text("""INSERT INTO fleet.held_back (day, reason, channel, check_name, count) VALUES (:d, :r, :c, :k, :n)
                   ON CONFLICT (day, reason, channel, check_name) DO UPDATE SET count = fleet.held_back.count + :n"""),
        {"d": now.date(), "r": reason, "c": channel, "k": check or "", "n": n},
    )


def ended_silence(conn: Connection, check: str, channel: str, fingerprint: str, labels: dict[str, str],
                  fired_at: datetime, now: datetime) -> str | None:
    """The silence that suppressed this episode's latest notice on `channel`, if it has ended."""
    last = conn.execute(
        sa.text("""SELECT status, suppressed_by FROM fleet.notifications
                   WHERE fingerprint = :fp AND channel = :ch AND created_at >= :fired
                   ORDER BY created_at DESC LIMIT 1"""),
        {"fp": fingerprint, "ch": channel, "fired": fired_at},
    ).first()
    if last is None or last.status != "suppressed" or silences.matching(conn, check, labels, now):
        return None
    return str(last.suppressed_by)


# -- delivery's side ---------------------------------------------------------------------------------
FOLDABLE = """transition IN ('firing', 'repeat', 'resolved', 'unsilenced')
               AND (status = 'pending' OR (status = 'retrying' AND throttled))
               AND (lease_until IS NULL OR lease_until < :now)"""


def lease(fleet: Engine, nid: str, now: datetime) -> Any:
    """Take one row to send: due and not leased, or its lease expired (a killed worker). None: not due,
    or someone else has it."""
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


def suppress_if_silenced(fleet: Engine, row: Any, labels: dict[str, str], now: datetime) -> str | None:
    """A leased row that an active silence matches is `suppressed` (not an attempt); its silence id."""
    with fleet.begin() as conn:
        sid = silences.matching(conn, row.check_name, labels, now)
        if sid:
            conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'suppressed', suppressed_by = :s,
                                    lease_until = NULL, attempts = attempts - 1 WHERE id = :id"""),
                         {"s": sid, "id": row.id})
            count_held_back(conn, "silenced", row.channel, row.check_name, now)
    return sid


def throttle(fleet: Engine, nid: str, at: datetime) -> None:
    """Not an attempt: the row goes back, marked throttled, for the next token to fold it in."""
    with fleet.begin() as conn:
        conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', throttled = true,
                                lease_until = NULL, attempts = attempts - 1, next_attempt_at = :at,
                                last_error = 'throttled: rate limit bucket empty' WHERE id = :id"""),
                     {"id": nid, "at": at})


def fold(fleet: Engine, row: Any, now: datetime) -> list[Any]:
    """Lease what waits for this channel, to send as one message with `row`: rows throttled behind the
    empty bucket, and rows still in their group_wait. Silenced ones are suppressed instead."""
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


def unfold(fleet: Engine, folded: list[Any], retry_at: datetime) -> None:
    """The summary failed: its rows wait again, still foldable into the next attempt."""
    with fleet.begin() as conn:
        conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', throttled = true,
                                lease_until = NULL, next_attempt_at = :at
                                WHERE id = ANY(CAST(:ids AS uuid[]))"""),
                     {"ids": [str(f.id) for f in folded], "at": retry_at})


def waiting(fleet: Engine, channel: str, now: datetime) -> bool:
    """Foldable rows still wait for this channel (throttled, or pending in their group_wait: the
    last runs of a storm have no task of their own): the follow-up chain goes on."""
    with fleet.connect() as conn:
        return bool(conn.execute(sa.text(f"""SELECT EXISTS (SELECT 1 FROM fleet.notifications
                                             WHERE channel = :ch AND {FOLDABLE})"""),  # noqa: S608 - a constant
                                 {"ch": channel, "now": now}).scalar())


def previous_answer(fleet: Engine, fingerprint: str, channel: str) -> dict | None:
    """What the provider answered to this alert's first notice on `channel` (Slack: its ts and channel
    id), so repeats thread onto it and the resolved notice updates it."""
    with fleet.connect() as conn:
        return conn.execute(sa.text("SELECT last_notified -> :ch FROM fleet.alerts WHERE fingerprint = :fp"),
                            {"ch": channel, "fp": fingerprint}).scalar()


def mark_sent(fleet: Engine, row: Any, folded: list[Any], now: datetime, provider_id: str | None,
              detail: dict[str, Any]) -> None:
    """The send succeeded: the row and every row folded into it are sent; a first notice's answer is
    remembered on the alert (fleet.alerts.last_notified) for the repeats and the resolved notice."""
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'sent', sent_at = :now, provider_id = :pid,
                       provider_detail = CAST(:detail AS jsonb), lease_until = NULL, last_error = NULL,
                       throttled = false WHERE id = :id"""),
            {"id": row.id, "now": now, "pid": provider_id, "detail": json.dumps(detail)},
        )
        if folded:
            conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'sent', sent_at = :now, folded_into = :id,
                                    provider_id = :pid, lease_until = NULL, throttled = false
                                    WHERE id = ANY(CAST(:ids AS uuid[]))"""),
                         {"now": now, "id": row.id, "pid": provider_id, "ids": [str(f.id) for f in folded]})
            for f in folded:
                if f.throttled:
                    count_held_back(conn, "folded", f.channel, f.check_name, now)
        if row.fingerprint and row.transition in ("firing", "unsilenced", "test"):
            conn.execute(
                sa.text("""UPDATE fleet.alerts SET last_notified = last_notified || jsonb_build_object(
                               CAST(:ch AS text), jsonb_build_object('at', CAST(:now AS text), 'provider_id',
                               CAST(:pid AS text), 'ts', CAST(:ts AS text), 'channel_id', CAST(:cid AS text)))
                           WHERE fingerprint = :fp"""),
                {"ch": row.channel, "now": now.isoformat(), "pid": provider_id, "fp": row.fingerprint,
                 "ts": detail.get("ts"), "cid": detail.get("channel")},
            )


def mark_dead(fleet: Engine, row: Any, error: str, now: datetime) -> None:
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'dead', lease_until = NULL, last_error = :e,
                       dead_at = :now WHERE id = :id"""),
            {"id": row.id, "e": error, "now": now},
        )
        count_held_back(conn, "dead", row.channel, row.check_name, now)


def mark_retrying(fleet: Engine, row: Any, error: str, at: datetime, *, throttled: bool) -> None:
    """Back to the outbox until `at`; a throttled retry (a 429) does not count as an attempt."""
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL, last_error = :e,
                       next_attempt_at = :at, throttled = :throttled,
                       attempts = attempts - CASE WHEN :throttled THEN 1 ELSE 0 END WHERE id = :id"""),
            {"id": row.id, "e": error, "at": at, "throttled": throttled},
        )


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


def first_of_each_channel(fleet: Engine, ids: list[str]) -> dict[str, tuple[str, datetime]]:
    """Of new rows, the oldest per channel with when it is due: one delivery per channel folds the rest."""
    with fleet.connect() as conn:
        rows = conn.execute(sa.text("SELECT CAST(id AS text) AS id, channel, next_attempt_at FROM fleet.notifications "
                                    "WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY created_at"), {"ids": ids}).all()
    first: dict[str, tuple[str, datetime]] = {}
    for r in rows:
        first.setdefault(r.channel, (r.id, r.next_attempt_at))
    return first
