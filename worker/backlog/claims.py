"""The backlog's SQL against the application's tables: the backlog predicate, the claim (numbers and
pending email rows in one short transaction, FOR UPDATE SKIP LOCKED), the requeue of failed emails,
recording each email's outcome, and the advisory lock of a group of pending emails while it is sent
(worker.fleet.runs' key scheme, space CONFIRMATION_GROUP)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.backlog.confirmations import NUMBER_SQL, EmailRow, Outcome
from worker.fleet.runs import Space, lock_key

BACKLOG = "r.status = 'completed' AND r.payment_status = 'completed' AND r.confirmation_number IS NULL"
ROW_COLUMNS = """ce.id AS email_id, ce.registration_id, ce.recipient, ce.subject, ce.attempts,
                  ce.xmin::text AS grp, r.full_name, r.confirmation_number, r.event_id, r.amount_in_cents"""

_CLAIM_SQL = """
WITH batch AS (
    SELECT r.ctid AS tid FROM registrations r
    WHERE {BACKLOG} AND r.updated_at <= now() - make_interval(secs => :older_than){careful}
    ORDER BY r.updated_at
    LIMIT :n
    FOR UPDATE SKIP LOCKED
), numbered AS (
    UPDATE registrations r
       SET confirmation_number = {NUMBER_SQL}, confirmation_generated_at = now(), email_status = 'pending',
           updated_at = now()  -- as seed 000's recovery does: processing time is the recovery's, not the wait
      FROM batch WHERE r.ctid = batch.tid  -- the row we locked (a TID scan: no second index lookup)
    RETURNING r.id, r.email, r.full_name, r.confirmation_number, r.event_id, r.amount_in_cents
), emails AS (
    INSERT INTO confirmation_emails (registration_id, recipient, subject, status, attempts)
    SELECT id, email, 'Your registration is confirmed (' || confirmation_number || ')', 'pending', 1 FROM numbered
    RETURNING id, registration_id, recipient, subject, attempts, xmin
)
SELECT e.id AS email_id, e.registration_id, e.recipient, e.subject, e.attempts, e.xmin::text AS grp,
       n.full_name, n.confirmation_number, n.event_id, n.amount_in_cents
FROM emails e JOIN numbered n ON n.id = e.registration_id"""
# Optimistic: the UNIQUE constraint on confirmation_number is the guard. After it fires once (the
# application used a number of this form), claims skip rows whose number is taken (one probe each).
CLAIM_SQL = _CLAIM_SQL.format(BACKLOG=BACKLOG, NUMBER_SQL=NUMBER_SQL, careful="")
CAREFUL_CLAIM_SQL = _CLAIM_SQL.format(BACKLOG=BACKLOG, NUMBER_SQL=NUMBER_SQL, careful=f"""
      AND NOT EXISTS (SELECT 1 FROM registrations t WHERE t.confirmation_number = {NUMBER_SQL})""")  # noqa: S608

RECORD_SQL = """
WITH res AS (
    SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:pids AS text[]),
                         CAST(:errors AS text[])) AS u(id, status, provider_id, error)
), upd AS (
    UPDATE confirmation_emails ce
       SET status = res.status, provider_id = res.provider_id, error = res.error, sent_at = now()
      FROM res
     WHERE ce.id = res.id AND ce.status = 'pending' AND ce.id BETWEEN :lo AND :hi
    RETURNING ce.registration_id, ce.status
), regs AS (
    UPDATE registrations r SET email_status = upd.status
      FROM upd WHERE r.id = upd.registration_id AND r.id BETWEEN :rlo AND :rhi
    RETURNING 1
)
SELECT count(*) FROM upd"""


FAILED = """confirmation_emails ce JOIN registrations r ON r.id = ce.registration_id
             WHERE ce.status = 'failed' AND ce.attempts < :max_attempts AND r.confirmation_number IS NOT NULL"""

REQUEUE_SQL = f"""
WITH picked AS (
    SELECT ce.id FROM {FAILED} AND ce.id > :after ORDER BY ce.id LIMIT :n FOR UPDATE OF ce SKIP LOCKED
), requeued AS (
    UPDATE confirmation_emails ce SET status = 'pending', attempts = ce.attempts + 1
      FROM picked WHERE ce.id = picked.id
    RETURNING ce.id, ce.registration_id, ce.recipient, ce.subject, ce.attempts, ce.xmin
)
SELECT q.id AS email_id, q.registration_id, q.recipient, q.subject, q.attempts, q.xmin::text AS grp,
       r.full_name, r.confirmation_number, r.event_id, r.amount_in_cents
FROM requeued q JOIN registrations r ON r.id = q.registration_id"""  # noqa: S608 - constants only


def group_key(grp: str) -> int:
    return lock_key(Space.CONFIRMATION_GROUP, int(grp))  # one key per transaction id: no two live groups share one


def lock_group(conn: Connection, grp: str, *, wait: bool) -> bool:
    """The session lock a group's sender holds (it outlives the claim's commit, dies with the connection)."""
    if wait:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": group_key(grp)})
        return True
    return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": group_key(grp)}).scalar())


def unlock_group(conn: Connection, grp: str) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": group_key(grp)})
    conn.commit()


def record_outcomes(conn: Connection, outcomes: Sequence[Outcome], rows: Sequence[EmailRow]) -> int:
    if not outcomes:
        return 0
    ids = [o.email_id for o in outcomes]
    rids = [r.registration_id for r in rows]
    with conn.begin():
        # Losing this commit in a database crash is harmless: the rows stay pending and are resent with
        # the same keys, which the provider answers from its idempotency store. So no WAL flush wait.
        conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
        return conn.execute(sa.text(RECORD_SQL), {
            "ids": ids, "statuses": [o.status for o in outcomes], "pids": [o.provider_id for o in outcomes],
            "errors": [o.error for o in outcomes], "lo": min(ids), "hi": max(ids), "rlo": min(rids),
            "rhi": max(rids)}).scalar() or 0


def rows_of(result: sa.CursorResult) -> list[EmailRow]:
    return list(map(EmailRow._make, result))


def stale_groups(conn: Connection, stale_after: timedelta) -> list[tuple[str, list[int]]]:
    """Groups of pending emails all older than `stale_after` (a seq scan of pending rows, once a run)."""
    found = conn.execute(sa.text(
        """SELECT xmin::text AS grp, array_agg(id) AS ids FROM confirmation_emails WHERE status = 'pending'
           GROUP BY xmin::text HAVING max(created_at) <= now() - make_interval(secs => :s)
           ORDER BY min(id)"""), {"s": stale_after.total_seconds()}).all()
    conn.commit()
    return [(g, ids) for g, ids in found]


def count_backlog(conn: Connection, older_than: timedelta) -> int:
    n = conn.execute(sa.text(f"""SELECT count(*) FROM registrations r WHERE {BACKLOG}
                                 AND r.updated_at <= now() - make_interval(secs => :o)"""),  # noqa: S608
                     {"o": older_than.total_seconds()}).scalar() or 0
    conn.commit()
    return n


def count_conflicts(conn: Connection, older_than: timedelta) -> int:
    n = conn.execute(sa.text(
        f"""SELECT count(*) FROM registrations r WHERE {BACKLOG}
            AND r.updated_at <= now() - make_interval(secs => :o)
            AND EXISTS (SELECT 1 FROM registrations t WHERE t.confirmation_number = {NUMBER_SQL})"""),  # noqa: S608
        {"o": older_than.total_seconds()}).scalar() or 0
    conn.commit()
    return n
