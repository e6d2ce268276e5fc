"""The outbox: fleet.notifications, and fleet.held_back (what was deduplicated, silenced, inhibited,
muted, acknowledged, folded or dead, per day, for the digest). This module is their one writer.

`plan()` decides whether an alert transition notifies each channel its routes name, and why, the way
Alertmanager's dedup stage does: first notification, a repeat window begun, resolved, a suppression
ended, or not (within the repeat window; send_resolved off; acknowledged). A notice that goes out gets
a dedup key `channel:fingerprint:transition:episode:repeat-window`; the UNIQUE constraint on it makes
a second writer of the same notice (a doubled beat, a redelivered task) a no-op. A route's mute (its
mute_time_intervals, or outside its active_time_intervals) is decided here too: the notice is written
already `suppressed`, and once the mute is over the alert, if still firing, is told once. The engine
writes what plan() says; the backtest counts it against a set of keys and an in-memory `Memory`, the
same rule, so the two cannot disagree on what would be sent.

Delivery's side of the table is here too: the lease by conditional UPDATE (0 rows: someone else has
it, or it is not due), silences and inhibitions at send time, folding what waits for a channel into
one message, and recording the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.notify import inhibit, silences
from worker.notify.routing import Routing

LEASE = timedelta(seconds=120)  # > the notify queue's hard time limit (90 s)
FOLD_LIMIT = 100

# why a transition notifies a channel, or not (plan's reasons)
FIRST = "first_notification"
REPEAT = "repeat_interval_elapsed"
RESOLVED = "resolved"
UNSILENCED = "suppression_ended"  # a silence, an inhibition or a mute that held back this episode ended
WITHIN_REPEAT = "within_repeat_interval"  # held back: deduplicated
RESOLVED_OFF = "send_resolved_off"
NEVER_TOLD = "never_notified"  # resolved, but every notice of the episode was held back: nothing to resolve
ACKNOWLEDGED = "acknowledged"  # held back: someone acknowledged the alert
_TRANSITION = {FIRST: "firing", REPEAT: "repeat", RESOLVED: "resolved", UNSILENCED: "unsilenced"}
_FIRING = ("firing", "repeat", "unsilenced")


@dataclass(frozen=True)
class Decision:
    """Whether one channel is told of one transition, and why."""

    channel: str
    reason: str
    dedup_key: str | None = None  # None: nothing is written
    due: datetime | None = None  # after the route's group_wait
    muted: str | None = None  # written `suppressed`: the time interval that mutes the route now

    @property
    def notifies(self) -> bool:
        """A row is written (sent later, or held back as muted)."""
        return self.dedup_key is not None

    @property
    def sends(self) -> bool:
        return self.dedup_key is not None and self.muted is None

    @property
    def transition(self) -> str | None:
        return _TRANSITION.get(self.reason)


@dataclass(frozen=True)
class Latest:
    """The latest notice of an episode on a channel, when it was held back."""

    ref: str  # what the key of the notice that replaces it carries (the held-back row's id)
    reason: str  # silenced | inhibited | muted
    over: bool  # for a silence or an inhibition: it no longer holds (a mute: plan() asks the route)


class Memory(Protocol):
    """What plan() needs to know of the notices already written for this episode."""

    def latest_suppressed(self, channel: str) -> Latest | None: ...
    def told(self, channel: str) -> bool: ...


def plan(routing: Routing, *, check: str, severity: str, labels: dict[str, str], fingerprint: str,
         before: str, after: str, fired_at: datetime | None, now: datetime, last_eval_at: datetime | None = None,
         acked: bool = False, memory: Memory | None = None) -> list[Decision]:
    """What a transition from `before` to `after` sends, per channel of every route that matches.

    Only a firing instance and a firing -> resolved transition can notify. A firing instance sends
    its first notice, then one when each repeat window begins (`last_eval_at`, the evaluation before,
    was in an earlier window); between, if the episode's latest notice on a channel was held back (a
    silence or an inhibition that is over now, or a mute that has ended) it is sent once as
    `unsilenced`. An acknowledged alert sends no repeats; a resolved one whose every notice was held
    back (muted, silenced, inhibited) sends nothing."""
    if fired_at is None or not (after == "firing" or (after == "resolved" and before == "firing")):
        return []
    episode = int(fired_at.timestamp())
    decisions = []
    for route in routing.route_for({"severity": severity, "check": check, **labels}):
        due = now + route.group_wait
        muted = routing.muted_by(route, now)
        for ch in (c for c in route.channels if routing.channels[c].kind != "digest"):
            if after == "resolved":
                if not route.send_resolved:
                    decisions.append(Decision(ch, RESOLVED_OFF))
                elif memory is not None and not memory.told(ch):
                    decisions.append(Decision(ch, NEVER_TOLD))
                else:
                    decisions.append(Decision(ch, RESOLVED, f"{ch}:{fingerprint}:resolved:{episode}:0", due))
                continue
            window = route.repeat_window(now - fired_at)
            if before != "firing":
                d = Decision(ch, FIRST, f"{ch}:{fingerprint}:firing:{episode}:0", due)
            elif window > 0 and (last_eval_at is None or route.repeat_window(last_eval_at - fired_at) != window):
                d = Decision(ch, REPEAT, f"{ch}:{fingerprint}:repeat:{episode}:{window}", due)
            elif (memory is not None and (latest := memory.latest_suppressed(ch)) is not None
                  and (latest.over if latest.reason != "muted" else muted is None)):
                d = Decision(ch, UNSILENCED, f"{ch}:{fingerprint}:unsilenced:{episode}:{window}:{latest.ref}", due)
            else:
                d = Decision(ch, WITHIN_REPEAT)
            if acked and d.reason in (REPEAT, UNSILENCED):
                d = Decision(ch, ACKNOWLEDGED)
            if muted is not None and d.notifies:
                d = replace(d, muted=muted)
            decisions.append(d)
    return decisions


def write(conn: Connection, decisions: list[Decision], *, check: str, fingerprint: str,
          payload: Callable[[], dict[str, Any]], now: datetime) -> list[str]:
    """The rows plan() asked for, in `conn`'s transaction (the state change's); returns the ids of the
    new rows to deliver. A notice already written (its key exists), or held within the repeat window,
    counts as deduplicated for the digest; a muted one is written `suppressed` and counted muted."""
    ids: list[str] = []
    body: str | None = None
    for d in decisions:
        if d.reason == WITHIN_REPEAT:
            count_held_back(conn, "deduplicated", d.channel, check, now)
        elif d.reason == ACKNOWLEDGED:
            count_held_back(conn, "acknowledged", d.channel, check, now)
        if not d.notifies:
            continue
        body = body or json.dumps(payload(), default=str)
        nid = insert(conn, channel=d.channel, transition=d.transition, payload=body, dedup_key=d.dedup_key,
                     due=d.due, check=check, fingerprint=fingerprint, muted=d.muted)
        if nid and d.muted:
            count_held_back(conn, "muted", d.channel, check, now)
        elif nid:
            ids.append(nid)
        else:
            count_held_back(conn, "deduplicated", d.channel, check, now)
    return ids


class StoredMemory:
    """plan()'s Memory from fleet.notifications, inside the evaluation's transaction."""

    def __init__(self, conn: Connection, *, check: str, severity: str, fingerprint: str, labels: dict[str, str],
                 database: str | None, fired_at: datetime | None, now: datetime, routing: Routing) -> None:
        self.conn, self.check, self.fp, self.labels, self.now = conn, check, fingerprint, labels, now
        self.episode = str(int(fired_at.timestamp())) if fired_at else ""
        self.routing, self.severity, self.database = routing, severity, database

    def _rows(self, channel: str, where: str) -> Any:
        return self.conn.execute(
            sa.text(f"""SELECT id, status, suppressed_by, suppressed_reason, suppressed_detail FROM fleet.notifications
                       WHERE fingerprint = :fp AND channel = :ch AND transition IN ('firing', 'repeat', 'unsilenced')
                         AND split_part(dedup_key, ':', 4) = :ep {where}
                       ORDER BY created_at DESC LIMIT 1"""),  # noqa: S608 - constants
            {"fp": self.fp, "ch": channel, "ep": self.episode}).first()

    def latest_suppressed(self, channel: str) -> Latest | None:
        last = self._rows(channel, "")
        if last is None or last.status != "suppressed":
            return None
        reason = last.suppressed_reason or "silenced"
        if reason == "silenced":
            over = silences.matching(self.conn, self.check, self.labels, self.now) is None
        elif reason == "inhibited":
            target = inhibit.alert_labels(self.check, self.severity, self.labels, self.database)
            over = inhibiting_alert(self.conn, self.routing, target, self.fp) is None
        else:
            over = False
        return Latest(ref=str(last.id), reason=reason, over=over)

    def told(self, channel: str) -> bool:
        return self._rows(channel, "AND status <> 'suppressed'") is not None


def insert(conn: Connection, *, channel: str, transition: str, payload: dict[str, Any] | str, dedup_key: str,
           due: datetime, check: str | None = None, fingerprint: str | None = None,
           muted: str | None = None) -> str | None:
    """One outbox row; None when its dedup key is already there. A muted one is held back at once."""
    row = conn.execute(
        sa.text("""INSERT INTO fleet.notifications (channel, fingerprint, check_name, transition, payload,
                   dedup_key, next_attempt_at, status, suppressed_reason, suppressed_detail, created_at)
                   VALUES (:ch, :fp, :c, :t, CAST(:p AS jsonb), :k, :due,
                           CASE WHEN CAST(:muted AS text) IS NULL THEN 'pending' ELSE 'suppressed' END,
                           CASE WHEN CAST(:muted AS text) IS NULL THEN NULL ELSE 'muted' END, :muted,
                           clock_timestamp())  -- in insertion order within a transaction (StoredMemory's "latest")
                   ON CONFLICT (dedup_key) DO NOTHING RETURNING id"""),
        {"ch": channel, "fp": fingerprint, "c": check, "t": transition, "k": dedup_key, "due": due, "muted": muted,
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


def firing_alerts(conn: Connection) -> list[tuple[str, dict[str, str]]]:
    """(fingerprint, matcher labels) of every alert firing now: the candidates to inhibit others."""
    rows = conn.execute(sa.text(
        "SELECT fingerprint, check_name, severity, labels, database FROM fleet.alerts WHERE state = 'firing'")).all()
    return [(r.fingerprint, inhibit.alert_labels(r.check_name, r.severity, dict(r.labels), r.database)) for r in rows]


def inhibiting_alert(conn: Connection, routing: Routing | None, target: dict[str, str], target_fp: str) -> str | None:
    """The fingerprint of a firing alert that inhibits this one now, if any."""
    if routing is None or not routing.inhibit_rules:
        return None
    rules = [r for r in routing.inhibit_rules if all(m.matches(target) for m in r.target())]
    if not rules:
        return None
    return inhibit.inhibiting(rules, target, target_fp, firing_alerts(conn))


# -- delivery's side ---------------------------------------------------------------------------------
FOLDABLE = """transition IN ('firing', 'repeat', 'resolved', 'unsilenced')
               AND (status = 'pending' OR (status = 'retrying' AND throttled))
               AND (lease_until IS NULL OR lease_until < :now) AND folded_into IS NULL
               AND NOT EXISTS (SELECT 1 FROM fleet.notifications b WHERE b.folded_into = notifications.id
                               AND b.status IN ('sending', 'retrying'))"""
# what the follow-up chain at the bucket's next token takes: the foldable rows, and any row the bucket
# throttled (a digest, a report, a test notice: never folded, sent alone in turn, not left to the sweep)
WAITING = """((transition IN ('firing', 'repeat', 'resolved', 'unsilenced') AND status = 'pending')
               OR (status = 'retrying' AND throttled))
              AND (lease_until IS NULL OR lease_until < :now) AND folded_into IS NULL
              AND NOT EXISTS (SELECT 1 FROM fleet.notifications b WHERE b.folded_into = notifications.id
                              AND b.status IN ('sending', 'retrying'))"""
# A row folded into a summary is bound to it (folded_into = the leader) until the summary is sent or
# the leader ends unsent: it is never leased, swept or folded on its own, and the leader's retries
# send exactly the same rows (Resend replays a request under the same key only for the same body; a
# different one gets 409 invalid_idempotent_request). A leader with bound rows is not folded away.
BOUND = "folded_into = :id AND status IN ('sending', 'retrying')"


def lease(fleet: Engine, nid: str, now: datetime) -> Any:
    """Take one row to send: due and not leased, or its lease expired (a killed worker). None: not due,
    or someone else has it."""
    with fleet.begin() as conn:
        return conn.execute(
            sa.text("""
                UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, attempts = attempts + 1
                WHERE id = :id AND folded_into IS NULL AND (
                    (status IN ('pending', 'retrying') AND next_attempt_at <= :now)
                    OR (status = 'sending' AND lease_until < :now))
                RETURNING *"""),
            {"id": nid, "now": now, "lease": now + LEASE},
        ).first()


def due_in(fleet: Engine, nid: str, now: datetime) -> float | None:
    """Seconds until a row that waits for its time (pending or retrying) is due; None when it is due,
    leased, or done."""
    with fleet.connect() as conn:
        at = conn.execute(sa.text("SELECT next_attempt_at FROM fleet.notifications WHERE id = :id "
                                  "AND status IN ('pending', 'retrying') AND next_attempt_at > :now AND folded_into IS NULL"),
                          {"id": nid, "now": now}).scalar()
    return None if at is None else (at - now).total_seconds()


def lease_next_waiting(fleet: Engine, channel: str, now: datetime) -> Any:
    """Lease the oldest row of a channel that waits behind its bucket (the follow-up at the bucket's
    next token): throttled, or pending in its group_wait (a storm's last runs have no task of their own)."""
    with fleet.begin() as conn:
        return conn.execute(
            sa.text(f"""
                UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, attempts = attempts + 1
                WHERE id = (SELECT id FROM fleet.notifications WHERE channel = :ch AND {WAITING}
                            ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING *"""),  # noqa: S608 - a constant
            {"ch": channel, "now": now, "lease": now + LEASE},
        ).first()


def _held(conn: Connection, row: Any, labels: dict[str, str], now: datetime,
          routing: Routing | None) -> tuple[str, str] | None:
    """Why `row` must not be sent now: ("silenced", silence id) or ("inhibited", source fingerprint)."""
    sid = silences.matching(conn, row.check_name, labels, now)
    if sid:
        return ("silenced", sid)
    if row.fingerprint:
        payload = row.payload or {}
        target = inhibit.alert_labels(row.check_name or "", payload.get("severity", ""), labels, payload.get("database"))
        source = inhibiting_alert(conn, routing, target, row.fingerprint)
        if source:
            return ("inhibited", source)
    return None


def _suppress(conn: Connection, row: Any, held: tuple[str, str], now: datetime, *, attempt: bool) -> None:
    conn.execute(sa.text(f"""UPDATE fleet.notifications SET status = 'suppressed',
                             suppressed_by = CAST(:sid AS uuid),
                             suppressed_reason = :reason, suppressed_detail = :ref,
                             lease_until = NULL{", attempts = attempts - 1" if attempt else ""} WHERE id = :id"""),  # noqa: S608
                 {"reason": held[0], "ref": held[1], "id": row.id, "sid": held[1] if held[0] == "silenced" else None})
    count_held_back(conn, held[0], row.channel, row.check_name, now)


def suppress_if_held(fleet: Engine, row: Any, labels: dict[str, str], now: datetime,
                     routing: Routing | None) -> tuple[str, str] | None:
    """A leased row that an active silence matches, or that a firing alert inhibits, is `suppressed`
    (not an attempt): (reason, the silence's id or the inhibiting alert's fingerprint)."""
    with fleet.begin() as conn:
        held = _held(conn, row, labels, now, routing)
        if held is not None:
            _suppress(conn, row, held, now, attempt=True)
    return held


def inhibited_by(fleet: Engine, fingerprint: str, since: datetime | None) -> int:
    """How many alerts this one has held back notices of since `since` (its episode's start)."""
    with fleet.connect() as conn:
        return int(conn.execute(sa.text(
            """SELECT count(DISTINCT fingerprint) FROM fleet.notifications
               WHERE suppressed_reason = 'inhibited' AND suppressed_detail = :fp
                 AND (CAST(:since AS timestamptz) IS NULL OR next_attempt_at >= :since)"""),
            {"fp": fingerprint, "since": since}).scalar())  # next_attempt_at: the evaluation's clock, plus group_wait


def throttle(fleet: Engine, nid: str, at: datetime) -> None:
    """Not an attempt: the row goes back, marked throttled, for the next token to fold it in."""
    with fleet.begin() as conn:
        conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', throttled = true,
                                lease_until = NULL, attempts = attempts - 1, next_attempt_at = :at,
                                last_error = 'throttled: rate limit bucket empty' WHERE id = :id"""),
                     {"id": nid, "at": at})


def fold(fleet: Engine, row: Any, now: datetime, routing: Routing | None = None) -> list[Any]:
    """Lease what waits for this channel, to send as one message with `row`: rows throttled behind the
    empty bucket, and rows still in their group_wait. Silenced and inhibited ones are suppressed instead."""
    with fleet.begin() as conn:
        rows = conn.execute(
            sa.text(f"""UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, folded_into = :id
                       WHERE id IN (SELECT id FROM fleet.notifications
                                    WHERE channel = :ch AND id <> :id AND {FOLDABLE}
                                    ORDER BY created_at LIMIT :lim FOR UPDATE SKIP LOCKED)
                       RETURNING *"""),  # noqa: S608 - a constant
            {"ch": row.channel, "id": row.id, "lease": now + LEASE, "now": now, "lim": FOLD_LIMIT},
        ).all()
        kept = []
        for r in sorted(rows, key=_in_order):
            held = _held(conn, r, (r.payload or {}).get("labels", {}), now, routing)
            if held is not None:
                conn.execute(sa.text("UPDATE fleet.notifications SET folded_into = NULL WHERE id = :id"), {"id": r.id})
                _suppress(conn, r, held, now, attempt=False)
            else:
                kept.append(r)
        return kept


def _in_order(r: Any) -> tuple:
    return (r.created_at, str(r.id))


def bound(fleet: Engine, row: Any, now: datetime) -> list[Any]:
    """The rows an earlier attempt of `row`'s summary folded (it timed out, failed, or its worker died):
    leased again, in the same order, so this attempt is the same message."""
    with fleet.begin() as conn:
        sql = f"UPDATE fleet.notifications SET status = 'sending', lease_until = :lease WHERE {BOUND} RETURNING *"  # noqa: S608
        rows = conn.execute(sa.text(sql), {"id": row.id, "lease": now + LEASE}).all()
    return sorted(rows, key=_in_order)


def unfold(fleet: Engine, folded: list[Any], retry_at: datetime) -> None:
    """The summary failed for now: its rows wait with it, bound to its leader, for its retry."""
    with fleet.begin() as conn:
        conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL,
                                next_attempt_at = :at WHERE id = ANY(CAST(:ids AS uuid[]))"""),
                     {"ids": [str(f.id) for f in folded], "at": retry_at})


def release(fleet: Engine, leader_id: Any, now: datetime) -> None:
    """The leader ends unsent (dead, or held back by a silence or an inhibition): its bound rows go
    on their own, foldable into the next send of their channel."""
    with fleet.begin() as conn:
        conn.execute(sa.text(f"""UPDATE fleet.notifications SET folded_into = NULL, status = 'retrying',
                                 throttled = true, lease_until = NULL, next_attempt_at = :now
                                 WHERE {BOUND}"""),  # noqa: S608 - a constant
                     {"id": leader_id, "now": now})


def waiting(fleet: Engine, channel: str, now: datetime) -> bool:
    """Rows still wait for this channel (throttled, or foldable and pending in their group_wait: the
    last runs of a storm have no task of their own): the follow-up chain goes on."""
    with fleet.connect() as conn:
        return bool(conn.execute(sa.text(f"""SELECT EXISTS (SELECT 1 FROM fleet.notifications
                                             WHERE channel = :ch AND {WAITING})"""),  # noqa: S608 - a constant
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


# A failure is recorded only by the worker that still holds the row's lease: one whose lease ran out
# (cut off, stalled) while another worker took the row and sent it must not put it back to retrying
# (a second send) or dead. `row` is what lease() returned, with this worker's lease_until.
HOLDS_LEASE = "id = :id AND status = 'sending' AND lease_until = :lease"


def mark_dead(fleet: Engine, row: Any, error: str, now: datetime) -> bool:
    """False: the lease was lost meanwhile, nothing recorded."""
    with fleet.begin() as conn:
        done = conn.execute(
            sa.text(f"""UPDATE fleet.notifications SET status = 'dead', lease_until = NULL, last_error = :e,
                        dead_at = :now WHERE {HOLDS_LEASE}"""),  # noqa: S608 - a constant
            {"id": row.id, "e": error, "now": now, "lease": row.lease_until},
        ).rowcount
        if done:
            count_held_back(conn, "dead", row.channel, row.check_name, now)
    return bool(done)


def mark_retrying(fleet: Engine, row: Any, error: str, at: datetime, *, throttled: bool) -> bool:
    """Back to the outbox until `at`; a throttled retry (a 429) does not count as an attempt. False:
    the lease was lost meanwhile, nothing recorded."""
    with fleet.begin() as conn:
        return bool(conn.execute(
            sa.text(f"""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL, last_error = :e,
                        next_attempt_at = :at, throttled = :throttled,
                        attempts = attempts - CASE WHEN :throttled THEN 1 ELSE 0 END WHERE {HOLDS_LEASE}"""),  # noqa: S608
            {"id": row.id, "e": error, "at": at, "throttled": throttled, "lease": row.lease_until},
        ).rowcount)


def due(fleet: Engine, now: datetime, limit: int = 500) -> list[str]:
    """Outbox rows that are due and not leased, or whose lease expired (killed worker, lost message)."""
    with fleet.connect() as conn:
        rows = conn.execute(
            sa.text("""SELECT id FROM fleet.notifications
                       WHERE folded_into IS NULL AND ((status IN ('pending', 'retrying') AND next_attempt_at <= :now)
                                                      OR (status = 'sending' AND lease_until < :now))
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
