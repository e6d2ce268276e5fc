"""The outbox: fleet.notifications, and fleet.held_back (what was deduplicated, silenced, inhibited,
muted, acknowledged, folded or dead, per day, for the digest). This module is their one writer, and
it only reads and writes them: what to write comes from the policy (`plan.plan`, through `write`), what
holds a notice back from `holds`, and the order of a delivery's steps from `delivery`.

Every function takes the caller's Connection, so a caller decides what commits together: the engine
writes a transition's rows in the transaction of its state change; delivery leases a row and checks
what holds it back in one transaction, folds in another, records the outcome in a third.

The lease is a conditional UPDATE (0 rows: someone else has it, or it is not due); a failure is
recorded only by the worker that still holds the lease.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.fleet.logs import mask_text
from worker.notify import holds
from worker.notify.holds import Hold
from worker.notify.plan import ACKNOWLEDGED, WITHIN_REPEAT, Decision, Latest
from worker.notify.routing import Routing

LEASE = timedelta(seconds=120)  # > the notify queue's hard time limit (90 s)
FOLD_LIMIT = 100


# -- the engine's side: rows written with the state change ---------------------------------------------
def write(conn: Connection, decisions: list[Decision], *, check: str, fingerprint: str,
          payload: Callable[[], dict[str, Any]], now: datetime,
          first: dict[str, tuple[str, datetime]] | None = None) -> list[str]:
    """The rows plan() asked for, in `conn`'s transaction (the state change's); returns the ids of the
    new rows to deliver. A notice already written (its key exists), or held within the repeat window,
    counts as deduplicated for the digest; a muted one is written `suppressed` and counted muted.
    `first` collects, per channel, the first new row and when it is due: the one delivery to enqueue
    after commit (it folds the rest)."""
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
            if first is not None:
                first.setdefault(d.channel, (nid, d.due))
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
                       WHERE fingerprint = :fp AND channel = :ch AND transition IN ('firing', 'repeat', 'unsilenced', 'escalation')
                         AND split_part(dedup_key, ':', 4) = :ep {where}
                       ORDER BY created_at DESC LIMIT 1"""),  # noqa: S608 - constants
            {"fp": self.fp, "ch": channel, "ep": self.episode}).first()

    def latest_suppressed(self, channel: str) -> Latest | None:
        last = self._rows(channel, "")
        if last is None or last.status != "suppressed":
            return None
        reason = last.suppressed_reason or "silenced"
        over = reason != "muted" and not holds.still_holds(
            self.conn, reason, check=self.check, severity=self.severity, labels=self.labels, database=self.database,
            fingerprint=self.fp, routing=self.routing, now=self.now)
        return Latest(ref=str(last.id), reason=reason, over=over)

    def told(self, channel: str) -> bool:
        """A notice of the episode was sent on `channel`, or is still on its way (delivery holds a
        resolved notice back until it is sent: `holds.untold`); one dead or held back told nobody."""
        return self._rows(channel, "AND status NOT IN ('suppressed', 'dead')") is not None


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




# -- delivery's side ---------------------------------------------------------------------------------
FOLDABLE = """transition IN ('firing', 'repeat', 'resolved', 'unsilenced')
               AND (status = 'pending' OR (status = 'retrying' AND throttled))
               AND (lease_until IS NULL OR lease_until < :now) AND folded_into IS NULL
               AND NOT EXISTS (SELECT 1 FROM fleet.notifications b WHERE b.folded_into = notifications.id
                               AND b.status IN ('sending', 'retrying'))"""
# what the follow-up chain at the bucket's next token takes: the foldable rows, and any row the bucket
# throttled (a digest, a report, a test notice: never folded, sent alone in turn, not left to the sweep),
# a summary the provider refused with 429 included: its bound rows go with it, the same message
WAITING = """((transition IN ('firing', 'repeat', 'resolved', 'unsilenced') AND status = 'pending')
               OR (status = 'retrying' AND throttled))
              AND (lease_until IS NULL OR lease_until < :now) AND folded_into IS NULL"""
# A row folded into a summary is bound to it (folded_into = the leader) until the summary is sent or
# the leader ends unsent: it is never leased, swept or folded on its own, and the leader's retries
# send exactly the same rows (Resend replays a request under the same key only for the same body; a
# different one gets 409 invalid_idempotent_request). A leader with bound rows is not folded away.
BOUND = "folded_into = :id AND status IN ('sending', 'retrying')"



def lease(conn: Connection, nid: str, now: datetime) -> Any:
    """Take one row to send: due and not leased, or its lease expired (a killed worker). None: not due,
    or someone else has it."""
    return conn.execute(
        sa.text("""
            UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, attempts = attempts + 1
            WHERE id = :id AND folded_into IS NULL AND (
                (status IN ('pending', 'retrying') AND next_attempt_at <= :now)
                OR (status = 'sending' AND lease_until < :now))
            RETURNING *"""),
        {"id": nid, "now": now, "lease": now + LEASE},
    ).first()


def due_in(conn: Connection, nid: str, now: datetime) -> float | None:
    """Seconds until a row that waits for its time (pending or retrying) is due; None when it is due,
    leased, or done."""
    at = conn.execute(sa.text("SELECT next_attempt_at FROM fleet.notifications WHERE id = :id "
                              "AND status IN ('pending', 'retrying') AND next_attempt_at > :now AND folded_into IS NULL"),
                      {"id": nid, "now": now}).scalar()
    return None if at is None else (at - now).total_seconds()


def lease_next_waiting(conn: Connection, channel: str, now: datetime) -> Any:
    """Lease the oldest row of a channel that waits behind its bucket (the follow-up at the bucket's
    next token): throttled, or pending in its group_wait (a storm's last runs have no task of their own)."""
    return conn.execute(
        sa.text(f"""
            UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, attempts = attempts + 1
            WHERE id = (SELECT id FROM fleet.notifications WHERE channel = :ch AND {WAITING}
                        ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING *"""),  # noqa: S608 - a constant
        {"ch": channel, "now": now, "lease": now + LEASE},
    ).first()


def suppress(conn: Connection, row: Any, hold: Hold, now: datetime, *, attempt: bool) -> None:
    """A row that a silence or an inhibition holds back is `suppressed`, with the reason and by what;
    `attempt`: it was leased as an attempt, which this is not. A folded row is unbound from its summary."""
    conn.execute(sa.text(f"""UPDATE fleet.notifications SET status = 'suppressed', folded_into = NULL,
                             suppressed_by = CAST(:sid AS uuid),
                             suppressed_reason = :reason, suppressed_detail = :ref,
                             lease_until = NULL{", attempts = attempts - 1" if attempt else ""} WHERE id = :id"""),  # noqa: S608
                 {"reason": hold.reason, "ref": hold.by, "id": row.id,
                  "sid": hold.by if hold.reason == "silenced" else None})
    count_held_back(conn, hold.reason, row.channel, row.check_name, now)


def wait(conn: Connection, row: Any, until: datetime, why: str, *, attempt: bool) -> None:
    """A resolved notice waits for its channel's firing notice (`holds.Wait`): back to the outbox until
    `until`, not an attempt, unbound from a summary; neither foldable nor followed up meanwhile."""
    conn.execute(sa.text(f"""UPDATE fleet.notifications SET status = 'retrying', throttled = false, folded_into = NULL,
                             lease_until = NULL, next_attempt_at = :at, last_error = :why
                             {", attempts = attempts - 1" if attempt else ""} WHERE id = :id"""),  # noqa: S608
                 {"id": row.id, "at": until, "why": why})


def throttle(conn: Connection, nid: str, at: datetime) -> None:
    """Not an attempt: the row goes back, marked throttled, for the next token to fold it in."""
    conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', throttled = true,
                            lease_until = NULL, attempts = attempts - 1, next_attempt_at = :at,
                            last_error = 'throttled: rate limit bucket empty' WHERE id = :id"""),
                 {"id": nid, "at": at})


def fold(conn: Connection, row: Any, now: datetime) -> list[Any]:
    """Lease what waits for this channel, bound to `row` (its summary's leader), in order: rows
    throttled behind the empty bucket, and rows still in their group_wait. The caller suppresses
    those a silence or an inhibition holds back (`suppress` unbinds them)."""
    rows = conn.execute(
        sa.text(f"""UPDATE fleet.notifications SET status = 'sending', lease_until = :lease, folded_into = :id
                   WHERE id IN (SELECT id FROM fleet.notifications
                                WHERE channel = :ch AND id <> :id AND {FOLDABLE}
                                ORDER BY created_at LIMIT :lim FOR UPDATE SKIP LOCKED)
                   RETURNING *"""),  # noqa: S608 - a constant
        {"ch": row.channel, "id": row.id, "lease": now + LEASE, "now": now, "lim": FOLD_LIMIT},
    ).all()
    return sorted(rows, key=_in_order)


def _in_order(r: Any) -> tuple:
    return (r.created_at, str(r.id))


def bound(conn: Connection, row: Any, now: datetime) -> list[Any]:
    """The rows an earlier attempt of `row`'s summary folded (it timed out, failed, or its worker died):
    leased again, in the same order, so this attempt is the same message."""
    sql = f"UPDATE fleet.notifications SET status = 'sending', lease_until = :lease WHERE {BOUND} RETURNING *"  # noqa: S608
    rows = conn.execute(sa.text(sql), {"id": row.id, "lease": now + LEASE}).all()
    return sorted(rows, key=_in_order)


def unfold(conn: Connection, folded: list[Any], retry_at: datetime) -> None:
    """The summary failed for now: its rows wait with it, bound to its leader, for its retry."""
    conn.execute(sa.text("""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL,
                            next_attempt_at = :at WHERE id = ANY(CAST(:ids AS uuid[]))"""),
                 {"ids": [str(f.id) for f in folded], "at": retry_at})


def release(conn: Connection, leader_id: Any, now: datetime) -> None:
    """The leader ends unsent (dead, or held back by a silence or an inhibition): its bound rows go
    on their own, foldable into the next send of their channel."""
    conn.execute(sa.text(f"""UPDATE fleet.notifications SET folded_into = NULL, status = 'retrying',
                             throttled = true, lease_until = NULL, next_attempt_at = :now
                             WHERE {BOUND}"""),  # noqa: S608 - a constant
                 {"id": leader_id, "now": now})


def waiting(conn: Connection, channel: str, now: datetime) -> bool:
    """Rows still wait for this channel (throttled, or foldable and pending in their group_wait: the
    last runs of a storm have no task of their own): the follow-up chain goes on."""
    return bool(conn.execute(sa.text(f"""SELECT EXISTS (SELECT 1 FROM fleet.notifications
                                         WHERE channel = :ch AND {WAITING})"""),  # noqa: S608 - a constant
                             {"ch": channel, "now": now}).scalar())


def previous_answer(conn: Connection, fingerprint: str, channel: str) -> dict | None:
    """What the provider answered to this alert's first notice on `channel` (Slack: its ts and channel
    id), so repeats thread onto it and the resolved notice updates it."""
    return conn.execute(sa.text("SELECT last_notified -> :ch FROM fleet.alerts WHERE fingerprint = :fp"),
                        {"ch": channel, "fp": fingerprint}).scalar()


def mark_sent(conn: Connection, row: Any, folded: list[Any], now: datetime, provider_id: str | None,
              detail: dict[str, Any]) -> None:
    """The send succeeded: the row and every row folded into it are sent; a first notice's answer is
    remembered on the alert (fleet.alerts.last_notified) for the repeats and the resolved notice."""
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


def mark_dead(conn: Connection, row: Any, error: str, now: datetime) -> bool:
    """False: the lease was lost meanwhile, nothing recorded."""
    done = conn.execute(
        sa.text(f"""UPDATE fleet.notifications SET status = 'dead', lease_until = NULL, last_error = :e,
                    dead_at = :now WHERE {HOLDS_LEASE}"""),  # noqa: S608 - a constant
        {"id": row.id, "e": mask_text(error), "now": now, "lease": row.lease_until},
    ).rowcount
    if done:
        count_held_back(conn, "dead", row.channel, row.check_name, now)
    return bool(done)


def mark_retrying(conn: Connection, row: Any, error: str, at: datetime, *, throttled: bool) -> bool:
    """Back to the outbox until `at`; a throttled retry (a 429) does not count as an attempt. False:
    the lease was lost meanwhile, nothing recorded."""
    return bool(conn.execute(
        sa.text(f"""UPDATE fleet.notifications SET status = 'retrying', lease_until = NULL, last_error = :e,
                    next_attempt_at = :at, throttled = :throttled,
                    attempts = attempts - CASE WHEN :throttled THEN 1 ELSE 0 END WHERE {HOLDS_LEASE}"""),  # noqa: S608
        {"id": row.id, "e": mask_text(error), "at": at, "throttled": throttled, "lease": row.lease_until},
    ).rowcount)


# -- by hand: a dead row sent again once its channel is fixed (notify.recover) ---------------------------
def requeue(conn: Connection, nid: str, now: datetime) -> bool:
    """A dead row back to the outbox, due now, its attempts counted afresh: the same row, so the same dedup
    key and idempotency key. False: it is no longer dead (someone retried it meanwhile)."""
    return bool(conn.execute(
        sa.text("""UPDATE fleet.notifications SET status = 'pending', attempts = 0, next_attempt_at = :now,
                   dead_at = NULL, lease_until = NULL, throttled = false, folded_into = NULL,
                   last_error = 'retried by hand after: ' || COALESCE(last_error, 'dead')
                   WHERE id = :id AND status = 'dead'"""),
        {"id": nid, "now": now}).rowcount)


# -- the sweeper's and the check task's side ------------------------------------------------------------
def due(conn: Connection, now: datetime, limit: int = 500) -> list[str]:
    """Outbox rows that are due and not leased, or whose lease expired (killed worker, lost message)."""
    rows = conn.execute(
        sa.text("""SELECT id FROM fleet.notifications
                   WHERE folded_into IS NULL AND ((status IN ('pending', 'retrying') AND next_attempt_at <= :now)
                                                  OR (status = 'sending' AND lease_until < :now))
                   ORDER BY next_attempt_at LIMIT :lim"""),
        {"now": now, "lim": limit},
    )
    return [str(r.id) for r in rows]

