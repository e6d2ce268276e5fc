"""Backlog reprocessing (seed 000's recovery): paid registrations that never got a confirmation.

One batch, as `reprocess()` runs it (any number of workers at once):

1. claim   one short transaction: pick up to `batch_size` backlog rows with FOR UPDATE SKIP LOCKED,
           give each its confirmation number (derived from the id: CNF-0000000042; the UNIQUE
           constraint is the final guard), set confirmation_generated_at, write its
           confirmation_emails row (status pending), take the batch's advisory lock, commit.
2. send    the batch's emails through Resend's batch endpoint, 100 per call, each call with an
           Idempotency-Key derived from its registration ids (and attempt number).
3. record  one short transaction: sent (provider id, sent_at) or failed (error) per email, and
           registrations.email_status; then release the advisory lock.

Why a kill -9 anywhere never loses an email nor sends one twice: the number and the pending email
row commit together, so a row is either still in the backlog (claimed again later) or has exactly
one number and one email row. Pending rows that committed together form a *group* (they share the
inserting transaction id, `xmin`, as no later write touches a row while it is pending); a group is
cut into provider calls by one fixed rule (sorted by registration id, 100 per call), so the calls
and their keys can be rebuilt exactly. The sender holds the group's advisory lock while it sends;
a dead worker's lock goes with its connection, and `send_stale_pending` (run at the start of every
run) resends the group's calls with the same keys and bodies: Resend answers the ones it already
accepted from its idempotency store instead of sending again. A provider that keeps failing
(timeouts, 5xx, 429 beyond a few retries) stops the run and leaves the rows pending for the next
one; an email the provider rejects is `failed` and `resend_failed` retries it with a new key.
Resend keeps idempotency keys for 24 hours: a group left pending longer than that is resent
without that protection (the registrations stay numbered either way).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from markupsafe import escape
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import Connection, Engine
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from worker.channels.base import DeliveryError
from worker.channels.email import MAX_BATCH, EmailChannel
from worker.logs import get_logger
from worker.timeutil import parse_duration

log = get_logger(__name__)

JOB_REPROCESS = "reprocess_confirmations"
JOB_RESEND = "resend_failed_emails"
KIND = "backlog"
# seed 000 "Pending Confirmations"; registrations_confirmation_backlog_idx has the same predicate
BACKLOG = "r.status = 'completed' AND r.payment_status = 'completed' AND r.confirmation_number IS NULL"
STALE_AFTER = timedelta(minutes=10)  # a pending email older than this, unlocked, is resent
NS_GROUP, NS_RUN = 0x0CF1, 0x0CF2  # advisory lock namespaces: a group being sent, a run in progress
SEND_TRIES = 4  # per provider call, same key: 1 + 3 retries
RETRY_BASE = 0.5  # seconds; doubled per retry unless the provider says Retry-After
MAX_RETRY_WAIT = 30.0
HEARTBEAT_S = 2.0
SAMPLE = 10


def confirmation_number(registration_id: int) -> str:
    """Deterministic per registration: a retry of the same row can never produce a second number."""
    return f"CNF-{registration_id:010d}"


_NUMBER_SQL = "'CNF-' || lpad(r.id::text, greatest(10, length(r.id::text)), '0')"  # same as confirmation_number()


# -- arguments (celery call sends kwargs unchecked) --------------------------------------------------

ACCEPTED = {
    "limit": "a whole number >= 1, or null for no cap",
    "batch_size": "a whole number from 1 to 5000",
    "dry_run": "true or false",
    "older_than": 'a duration such as "0s", "15m", "1h"',
    "stale_after": 'a duration such as "10m" (pending emails older than this are resent)',
    "max_attempts": "a whole number from 1 to 100 (emails tried this often are left failed)",
}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("older_than", "stale_after", check_fields=False)
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class ReprocessArgs(_Args):
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=500, ge=1, le=5000)
    dry_run: bool = False
    older_than: str = "0s"
    stale_after: str = "10m"


class ResendArgs(_Args):
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=100, ge=1, le=5000)
    dry_run: bool = False
    max_attempts: int = Field(default=5, ge=1, le=100)


def parse_args(task_name: str, model: type[_Args], kwargs: dict[str, Any]) -> Any:
    """Validate a task's kwargs; a ValueError names each bad argument and the accepted forms."""
    try:
        return model.model_validate(kwargs)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown argument {name!r}")
            else:
                problems.append(f"{name}={err['input']!r} is invalid (expected {ACCEPTED.get(name, err['msg'])})")
        accepted = ", ".join(f"{n} ({ACCEPTED[n]})" for n in model.model_fields)
        raise ValueError(f"{task_name} rejected its arguments, nothing was done: {'; '.join(problems)}. "
                         f"Accepted arguments: {accepted}") from None


# -- results and progress ------------------------------------------------------------------------------

@dataclass
class Progress:
    done: int  # of the backlog this run set out to clear (with other workers on it: by all of them)
    total: int
    claimed: int  # by this run
    sent: int
    failed: int
    rate: float  # registrations (or emails) per second
    eta_s: float | None

    def as_meta(self) -> dict[str, Any]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class RunResult:
    job: str
    status: str = "ok"  # ok | error | dry_run
    run_id: int | None = None
    claimed: int = 0  # confirmation numbers assigned (resend_failed: emails requeued)
    claim_seconds: float = 0.0  # of db_seconds: the claims (numbers + email rows)
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # left pending after the provider kept failing; the next run resends them
    recovered: int = 0  # stale pending emails resent (same keys) at the start of the run
    batches: int = 0
    conflicts: int = 0  # backlog rows whose derived number is already taken: need a human
    would_process: int = 0  # dry run: what a real run would claim now
    stale_pending: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    db_seconds: float = 0.0
    send_seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for k in ("seconds", "db_seconds", "send_seconds", "claim_seconds"):
            data[k] = round(data[k], 3)
        return data


class ProviderUnavailable(Exception):
    """The provider kept failing (transient errors past the retries, or auth/URL errors): stop the run;
    the emails stay pending and the next run resends them with the same keys."""


# -- rendering and sending -------------------------------------------------------------------------------

class EmailRow(NamedTuple):
    """One pending confirmation email with what its message needs (the SELECTs list these in this order)."""

    email_id: int
    registration_id: int
    recipient: str
    subject: str
    attempts: int
    grp: str  # xmin of the pending row: the transaction that made it pending
    full_name: str
    confirmation_number: str
    event_id: int
    amount_in_cents: int


def render_confirmation(row: EmailRow) -> dict[str, Any]:
    """Resend params for one confirmation (no `from`). Deterministic: a resend is byte-identical."""
    amount = f"{row.amount_in_cents / 100:.2f}"
    text = (f"Hello {row.full_name},\n\nyour registration is confirmed.\n\n"
            f"Confirmation number: {row.confirmation_number}\nEvent: {row.event_id}\nAmount paid: {amount}\n\n"
            "Please keep this email: you will be asked for the confirmation number.\n")
    html = (f'<!doctype html><html><body style="font-family:sans-serif;color:#111">'
            f"<p>Hello {escape(row.full_name)},</p><p>your registration is confirmed.</p>"
            f"<table><tr><td>Confirmation number</td><td><strong>{escape(row.confirmation_number)}</strong></td></tr>"
            f"<tr><td>Event</td><td>{row.event_id}</td></tr><tr><td>Amount paid</td><td>{amount}</td></tr></table>"
            "<p>Please keep this email: you will be asked for the confirmation number.</p></body></html>")
    return {"to": [row.recipient], "subject": row.subject, "html": html, "text": text,
            "tags": [{"name": "category", "value": "confirmation"},
                     {"name": "registration_id", "value": str(row.registration_id)}]}


def provider_calls(rows: Iterable[EmailRow]) -> list[list[EmailRow]]:
    """The one rule that cuts pending rows into provider calls: per group, by registration id, 100 each.

    Rows only leave a group a whole call at a time, so the calls of what is left are unchanged."""
    groups: dict[str, list[EmailRow]] = {}
    for r in rows:
        groups.setdefault(r.grp, []).append(r)
    calls = []
    for grp in sorted(groups, key=lambda g: min(r.email_id for r in groups[g])):
        members = sorted(groups[grp], key=lambda r: (r.registration_id, r.email_id))
        calls += [members[i:i + MAX_BATCH] for i in range(0, len(members), MAX_BATCH)]
    return calls


def idempotency_key(call: Sequence[EmailRow]) -> str:
    ids = ",".join(f"{r.registration_id}.{r.attempts}" for r in call)
    return "confirmations/" + hashlib.sha256(ids.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class Outcome:
    email_id: int
    status: str  # sent | failed
    provider_id: str | None
    error: str | None


def send_call(channel: EmailChannel, call: Sequence[EmailRow], *,
              sleep: Callable[[float], None] = time.sleep) -> list[Outcome]:
    """One Resend batch call (permissive validation: a bad address fails alone), retried a few times
    with the same key on transient errors. Raises ProviderUnavailable when retrying does not help."""
    batch = [render_confirmation(r) for r in call]
    key = idempotency_key(call)

    def wait(state: RetryCallState) -> float:  # the provider's Retry-After, else exponential
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        return min(after if after is not None else RETRY_BASE * 2 ** (state.attempt_number - 1), MAX_RETRY_WAIT)

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and not e.permanent),
        stop=stop_after_attempt(SEND_TRIES), wait=wait, sleep=sleep, reraise=True,
        before_sleep=lambda state: log.warning("confirmation_send_retrying", reason=state.outcome.exception().reason,
                                               wait_s=state.upcoming_sleep, key=key),
    )
    try:
        items = retrying(channel.send_batch_each, batch, key)
    except DeliveryError as exc:
        if exc.permanent and exc.reason == "invalid":  # the provider rejected the payload: nothing sent
            return [Outcome(r.email_id, "failed", None, f"{exc.status or ''} {exc.message}".strip()[:500])
                    for r in call]
        if exc.permanent and exc.status == 409:  # the key is known with another body: the data changed
            note = ("the provider holds this key with a different email (the registration changed since the "
                    "first attempt), so that attempt was probably delivered: check before resending")
            return [Outcome(r.email_id, "failed", None, f"409 {exc.message}: {note}"[:500]) for r in call]
        if exc.permanent:  # auth, wrong URL: not the emails' fault
            raise ProviderUnavailable(f"Resend: {exc.reason}: {exc.message}") from exc
        raise ProviderUnavailable(f"Resend kept failing ({exc.reason}): {exc.message}") from exc
    return [Outcome(r.email_id, "sent", item.provider_id, None) if item.provider_id
            else Outcome(r.email_id, "failed", None, (item.error or "rejected")[:500]) for r, item in zip(call, items, strict=True)]


# -- SQL ----------------------------------------------------------------------------------------------

_ROW_COLUMNS = """ce.id AS email_id, ce.registration_id, ce.recipient, ce.subject, ce.attempts,
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
       SET confirmation_number = {NUMBER_SQL}, confirmation_generated_at = now(), email_status = 'pending'
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
CLAIM_SQL = _CLAIM_SQL.format(BACKLOG=BACKLOG, NUMBER_SQL=_NUMBER_SQL, careful="")
CAREFUL_CLAIM_SQL = _CLAIM_SQL.format(BACKLOG=BACKLOG, NUMBER_SQL=_NUMBER_SQL, careful=f"""
      AND NOT EXISTS (SELECT 1 FROM registrations t WHERE t.confirmation_number = {_NUMBER_SQL})""")  # noqa: S608

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


def _group_key(grp: str) -> int:
    return (NS_GROUP << 32) | int(grp)  # one bigint per transaction id: no two live groups share a key


def _lock_group(conn: Connection, grp: str, *, wait: bool) -> bool:
    """The session lock a group's sender holds (it outlives the claim's commit, dies with the connection)."""
    if wait:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _group_key(grp)})
        return True
    return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _group_key(grp)}).scalar())


def _unlock_group(conn: Connection, grp: str) -> None:
    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _group_key(grp)})
    conn.commit()


def _record(conn: Connection, outcomes: Sequence[Outcome], rows: Sequence[EmailRow]) -> int:
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


@dataclass
class _Sent:
    sent: int = 0
    failed: int = 0
    unavailable: str | None = None
    rows_left: int = 0


def _send_and_record(conn: Connection, channel: EmailChannel, rows: Sequence[EmailRow], timing: RunResult) -> _Sent:
    """Send the rows' calls in order; record every outcome in one transaction. On ProviderUnavailable the
    calls not yet answered stay pending (whole calls, so the grouping rule still rebuilds them)."""
    out = _Sent()
    outcomes: list[Outcome] = []
    calls = provider_calls(rows)
    t = time.perf_counter()
    for i, call in enumerate(calls):
        try:
            outcomes += send_call(channel, call)
        except ProviderUnavailable as exc:
            out.unavailable = str(exc)
            out.rows_left = sum(len(c) for c in calls[i:])
            break
    timing.send_seconds += time.perf_counter() - t
    t = time.perf_counter()
    _record(conn, outcomes, rows)
    timing.db_seconds += time.perf_counter() - t
    out.sent = sum(o.status == "sent" for o in outcomes)
    out.failed = len(outcomes) - out.sent
    return out


# -- job_runs --------------------------------------------------------------------------------------------

def _start_run(fleet: Engine, monitored_conn: Connection, job: str, params: dict[str, Any],
               task_id: str | None, status: str = "running") -> int:
    with fleet.begin() as conn:
        run_id = conn.execute(sa.text("SELECT nextval(pg_get_serial_sequence('fleet.job_runs', 'id'))")).scalar()
    # held while the run lives, taken before its row exists; gone with the worker's connection if it dies
    # (see close_orphaned_runs)
    monitored_conn.execute(sa.text("SELECT pg_advisory_lock(:ns, :id)"), {"ns": NS_RUN, "id": run_id % 2**31})
    monitored_conn.commit()
    with fleet.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO fleet.job_runs (id, job, kind, started_at, status, params, task_id)
               VALUES (:id, :j, :k, now(), :s, CAST(:p AS jsonb), :t)"""),
            {"id": run_id, "j": job, "k": KIND, "s": status, "p": json.dumps(params), "t": task_id})
    close_orphaned_runs(fleet, monitored_conn)
    return run_id


def _live_run_keys(monitored_conn: Connection) -> set[int]:
    return set(monitored_conn.execute(sa.text(
        "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND classid = :ns AND objsubid = 2"),
        {"ns": NS_RUN}).scalars())


def close_orphaned_runs(fleet: Engine, monitored_conn: Connection) -> int:
    """Backlog runs still 'running' whose worker is gone (its run lock is not held) become errors."""
    live = _live_run_keys(monitored_conn)
    monitored_conn.commit()
    with fleet.begin() as conn:
        rows = conn.execute(sa.text(
            "SELECT id FROM fleet.job_runs WHERE kind = :k AND status = 'running'"), {"k": KIND}).scalars().all()
        dead = [i for i in rows if i % 2**31 not in live]
        if dead:
            conn.execute(sa.text(
                """UPDATE fleet.job_runs SET status = 'error', finished_at = now(),
                          error = 'worker lost before the run finished' WHERE id = ANY(:ids)"""), {"ids": dead})
    return len(dead)


def _heartbeat(fleet: Engine, result: RunResult) -> None:
    with fleet.begin() as conn:
        conn.execute(sa.text("UPDATE fleet.job_runs SET rows_affected = :r, batches = :b WHERE id = :id"),
                     {"r": result.claimed + result.recovered, "b": result.batches, "id": result.run_id})


def _finish_run(fleet: Engine, monitored_conn: Connection, result: RunResult) -> None:
    with fleet.begin() as conn:
        conn.execute(sa.text(
            """UPDATE fleet.job_runs SET finished_at = now(), rows_affected = :r, batches = :b, status = :s,
                      error = :e, params = params || CAST(:extra AS jsonb) WHERE id = :id"""),
            {"r": result.claimed + result.recovered, "b": result.batches, "s": result.status, "e": result.error,
             "id": result.run_id, "extra": json.dumps({"result": {k: v for k, v in result.as_dict().items()
                                                                   if k != "sample"}})})
    # the run's lock, and any group lock an interrupted batch left on this (pooled) connection
    monitored_conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    monitored_conn.commit()


# -- the runs --------------------------------------------------------------------------------------------

def _rows(result: sa.CursorResult) -> list[EmailRow]:
    return list(map(EmailRow._make, result))


def _tally(result: RunResult, out: _Sent) -> None:
    result.sent += out.sent
    result.failed += out.failed
    if out.unavailable:
        result.deferred += out.rows_left
        raise ProviderUnavailable(out.unavailable)


def _stale_groups(conn: Connection, stale_after: timedelta) -> list[tuple[str, list[int]]]:
    """Groups of pending emails all older than `stale_after` (a seq scan of pending rows, once a run)."""
    found = conn.execute(sa.text(
        """SELECT xmin::text AS grp, array_agg(id) AS ids FROM confirmation_emails WHERE status = 'pending'
           GROUP BY xmin::text HAVING max(created_at) <= now() - make_interval(secs => :s)
           ORDER BY min(id)"""), {"s": stale_after.total_seconds()}).all()
    conn.commit()
    return [(g, ids) for g, ids in found]


def send_stale_pending(conn: Connection, channel: EmailChannel, stale_after: timedelta, result: RunResult) -> None:
    """Resend pending emails that nobody is sending (their group's lock is free) with the same calls and
    keys as the first attempt. Counts into result.recovered / sent / failed / deferred."""
    for grp, ids in _stale_groups(conn, stale_after):
        if not _lock_group(conn, grp, wait=False):
            conn.commit()
            continue
        try:
            t = time.perf_counter()
            rows = _rows(conn.execute(sa.text(
                f"""SELECT {_ROW_COLUMNS} FROM confirmation_emails ce JOIN registrations r ON r.id = ce.registration_id
                    WHERE ce.id = ANY(:ids) AND ce.status = 'pending' AND ce.xmin = CAST(:g AS xid)"""),  # noqa: S608
                {"ids": ids, "g": grp}))
            conn.commit()
            result.db_seconds += time.perf_counter() - t
            if rows:  # (else someone sent them between our look and our lock)
                log.info("confirmation_group_resending", group=grp, emails=len(rows))
                out = _send_and_record(conn, channel, rows, result)
                result.recovered += out.sent + out.failed
                _tally(result, out)
        finally:
            _unlock_group(conn, grp)


def _drain(conn: Connection, channel: EmailChannel, claim: Callable[[int, bool], list[EmailRow]], limit: int | None,
           batch_size: int, result: RunResult, report: _Reporter) -> None:
    """Claim a batch (one transaction, which also takes the new group's lock), send it, record it; until
    nothing is left, the limit is reached, or the provider stops answering (ProviderUnavailable)."""
    careful = False
    while limit is None or result.claimed < limit:
        n = batch_size if limit is None else min(batch_size, limit - result.claimed)
        t = time.perf_counter()
        try:
            with conn.begin():
                rows = claim(n, careful)
                if rows:
                    _lock_group(conn, rows[0].grp, wait=True)  # a new group: no one else can know it yet
        except sa.exc.IntegrityError as exc:
            if careful or "confirmation_number" not in str(exc.orig):
                raise
            log.warning("confirmation_number_taken", detail=str(exc.orig).splitlines()[-1][:300])
            careful = True  # the batch was rolled back whole; claim it again, skipping taken numbers
            continue
        result.claim_seconds += time.perf_counter() - t
        result.db_seconds += time.perf_counter() - t
        if not rows:
            return
        result.claimed += len(rows)
        result.batches += 1
        try:
            _tally(result, _send_and_record(conn, channel, rows, result))
        finally:
            _unlock_group(conn, rows[0].grp)
        report(result.claimed)


def _run(monitored: Engine, fleet: Engine, job: str, params: dict[str, Any], task_id: str | None,
         body: Callable[[Connection, RunResult], None]) -> RunResult:
    """One recorded run on one connection: job_runs row and run lock, the body, the outcome."""
    result = RunResult(job)
    started = time.perf_counter()
    with monitored.connect() as conn:
        result.run_id = _start_run(fleet, conn, job, params, task_id)
        try:
            body(conn, result)
        except ProviderUnavailable as exc:
            result.status, result.error = "error", str(exc)
        except Exception as exc:
            result.status, result.error = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}"
            conn.rollback()
            _finish(fleet, conn, result, started)
            raise
        _finish(fleet, conn, result, started)
    return result


def _count_backlog(conn: Connection, older_than: timedelta) -> int:
    n = conn.execute(sa.text(f"""SELECT count(*) FROM registrations r WHERE {BACKLOG}
                                 AND r.updated_at <= now() - make_interval(secs => :o)"""),  # noqa: S608
                     {"o": older_than.total_seconds()}).scalar() or 0
    conn.commit()
    return n


def _count_conflicts(conn: Connection, older_than: timedelta) -> int:
    n = conn.execute(sa.text(
        f"""SELECT count(*) FROM registrations r WHERE {BACKLOG}
            AND r.updated_at <= now() - make_interval(secs => :o)
            AND EXISTS (SELECT 1 FROM registrations t WHERE t.confirmation_number = {_NUMBER_SQL})"""),  # noqa: S608
        {"o": older_than.total_seconds()}).scalar() or 0
    conn.commit()
    return n


class _Reporter:
    """Progress for Flower (via `progress`) and a job_runs heartbeat every HEARTBEAT_S. With several workers
    on one backlog, `remaining()` (a count of what is left, refreshed at most every HEARTBEAT_S) turns this
    run's view into the backlog's: done, rate and ETA of all of them."""

    def __init__(self, fleet: Engine, result: RunResult, total: int, progress: Callable[[Progress], None] | None,
                 remaining: Callable[[], int] | None = None) -> None:
        self.fleet, self.result, self.total, self.progress, self.remaining = fleet, result, total, progress, remaining
        self.started = self.last_beat = time.monotonic()
        self.global_done = 0

    def __call__(self, claimed: int) -> None:
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_S:
            _heartbeat(self.fleet, self.result)
            if self.remaining is not None:
                self.global_done = self.total - self.remaining()
            self.last_beat = now
        if self.progress is not None:
            done = min(self.total, max(claimed, self.global_done))
            rate = done / max(now - self.started, 1e-6)
            eta = (self.total - done) / rate if rate > 0 else None
            self.progress(Progress(done, self.total, claimed, self.result.sent, self.result.failed, rate, eta))


def reprocess(monitored: Engine, fleet: Engine, channel: EmailChannel | None, *, limit: int | None = None,
              batch_size: int = 500, dry_run: bool = False, older_than: timedelta = timedelta(0),
              stale_after: timedelta = STALE_AFTER, progress: Callable[[Progress], None] | None = None,
              task_id: str | None = None) -> RunResult:
    """Reprocess the confirmation backlog (see the module docstring). Safe to run on any number of
    workers at once; a dry run counts and samples and writes nothing but its job_runs row."""
    params = {"limit": limit, "batch_size": batch_size, "dry_run": dry_run,
              "older_than": older_than.total_seconds(), "stale_after": stale_after.total_seconds()}
    if dry_run:
        return _dry_run(monitored, fleet, params, older_than, stale_after, limit, task_id)
    _require_channel(channel)
    claim_params = {"older_than": older_than.total_seconds()}

    def body(conn: Connection, result: RunResult) -> None:
        total = _count_backlog(conn, older_than)
        total = min(total, limit) if limit is not None else total
        report = _Reporter(fleet, result, total, progress,
                           None if limit is not None else lambda: _count_backlog(conn, older_than))
        report(0)
        send_stale_pending(conn, channel, stale_after, result)
        _drain(conn, channel,
               lambda n, careful: _rows(conn.execute(sa.text(CAREFUL_CLAIM_SQL if careful else CLAIM_SQL),
                                                     {**claim_params, "n": n})),
               limit, batch_size, result, report)
        result.conflicts = _count_conflicts(conn, older_than)

    return _run(monitored, fleet, JOB_REPROCESS, params, task_id, body)


_FAILED = """confirmation_emails ce JOIN registrations r ON r.id = ce.registration_id
             WHERE ce.status = 'failed' AND ce.attempts < :max_attempts AND r.confirmation_number IS NOT NULL"""

REQUEUE_SQL = f"""
WITH picked AS (
    SELECT ce.id FROM {_FAILED} AND ce.id > :after ORDER BY ce.id LIMIT :n FOR UPDATE OF ce SKIP LOCKED
), requeued AS (
    UPDATE confirmation_emails ce SET status = 'pending', attempts = ce.attempts + 1
      FROM picked WHERE ce.id = picked.id
    RETURNING ce.id, ce.registration_id, ce.recipient, ce.subject, ce.attempts, ce.xmin
)
SELECT q.id AS email_id, q.registration_id, q.recipient, q.subject, q.attempts, q.xmin::text AS grp,
       r.full_name, r.confirmation_number, r.event_id, r.amount_in_cents
FROM requeued q JOIN registrations r ON r.id = q.registration_id"""  # noqa: S608 - constants only


def resend_failed(monitored: Engine, fleet: Engine, channel: EmailChannel | None, *, limit: int | None = None,
                  batch_size: int = 100, dry_run: bool = False, max_attempts: int = 5,
                  progress: Callable[[Progress], None] | None = None, task_id: str | None = None) -> RunResult:
    """Retry confirmation emails in status 'failed' (never 'bounced') tried fewer than `max_attempts`
    times: each batch is made pending again with attempts + 1 (a new group, so new keys) and sent like
    a fresh claim."""
    params = {"limit": limit, "batch_size": batch_size, "dry_run": dry_run, "max_attempts": max_attempts}
    if dry_run:
        return _dry_run_resend(monitored, fleet, params, limit, max_attempts, task_id)
    _require_channel(channel)

    def body(conn: Connection, result: RunResult) -> None:
        total = conn.execute(sa.text(f"SELECT count(*) FROM {_FAILED}"), {"max_attempts": max_attempts}).scalar()  # noqa: S608
        conn.commit()
        report = _Reporter(fleet, result, min(total, limit) if limit is not None else total, progress)
        after = [0]  # keyset: an email failing again in this run is not picked up again by it

        def claim(n: int, careful: bool) -> list[EmailRow]:
            rows = _rows(conn.execute(sa.text(REQUEUE_SQL), {"after": after[0], "n": n, "max_attempts": max_attempts}))
            after[0] = max([after[0], *(r.email_id for r in rows)])
            return rows

        _drain(conn, channel, claim, limit, batch_size, result, report)

    return _run(monitored, fleet, JOB_RESEND, params, task_id, body)


def confirmation_channel(settings: Any) -> EmailChannel:
    """Confirmation emails go out as FROM_NAME <FROM_EMAIL> through RESEND_API_URL with RESEND_API_KEY
    (`settings`: worker.settings.Settings)."""
    return EmailChannel(settings.resend_api_key, settings.from_email, settings.from_name, [],
                        api_url=settings.resend_api_url)


def _require_channel(channel: EmailChannel | None) -> None:
    if channel is None or not channel.api_key:
        raise ValueError("RESEND_API_KEY is not set: confirmation emails cannot be sent (a dry run needs no key)")
    if not channel.from_email:
        raise ValueError("FROM_EMAIL is not set: confirmation emails need a sender")


def _finish(fleet: Engine, conn: Connection, result: RunResult, started: float) -> None:
    result.seconds = time.perf_counter() - started
    _finish_run(fleet, conn, result)
    log.info("backlog_run_finished", job=result.job, status=result.status, claimed=result.claimed,
             sent=result.sent, failed=result.failed, deferred=result.deferred, recovered=result.recovered,
             batches=result.batches, conflicts=result.conflicts, seconds=round(result.seconds, 3), error=result.error)


def _dry_run(monitored: Engine, fleet: Engine, params: dict[str, Any], older_than: timedelta,
             stale_after: timedelta, limit: int | None, task_id: str | None) -> RunResult:
    result = RunResult(JOB_REPROCESS, status="dry_run")
    started = time.perf_counter()
    with monitored.connect() as conn:
        result.would_process = _count_backlog(conn, older_than)
        result.conflicts = _count_conflicts(conn, older_than)
        result.stale_pending = sum(len(ids) for _, ids in _stale_groups(conn, stale_after))
        result.sample = [
            {**dict(m), "confirmation_number": confirmation_number(m["id"]), "updated_at": m["updated_at"].isoformat()}
            for m in conn.execute(sa.text(
                f"""SELECT r.id, r.email, r.updated_at FROM registrations r WHERE {BACKLOG}
                    AND r.updated_at <= now() - make_interval(secs => :o) ORDER BY r.updated_at LIMIT :k"""),  # noqa: S608
                {"o": older_than.total_seconds(), "k": SAMPLE}).mappings()]
        conn.rollback()
    if limit is not None:
        result.would_process = min(result.would_process, limit)
    return _record_dry_run(fleet, params, result, task_id, started)


def _dry_run_resend(monitored: Engine, fleet: Engine, params: dict[str, Any], limit: int | None,
                    max_attempts: int, task_id: str | None) -> RunResult:
    result = RunResult(JOB_RESEND, status="dry_run")
    started = time.perf_counter()
    with monitored.connect() as conn:
        p = {"max_attempts": max_attempts, "k": SAMPLE}
        result.would_process = conn.execute(sa.text(f"SELECT count(*) FROM {_FAILED}"), p).scalar() or 0  # noqa: S608
        result.sample = [dict(m) for m in conn.execute(sa.text(
            f"""SELECT ce.id AS email_id, ce.registration_id, ce.recipient, ce.attempts, ce.error
                FROM {_FAILED} ORDER BY ce.id LIMIT :k"""), p).mappings()]  # noqa: S608
        conn.rollback()
    if limit is not None:
        result.would_process = min(result.would_process, limit)
    return _record_dry_run(fleet, params, result, task_id, started)


def _record_dry_run(fleet: Engine, params: dict[str, Any], result: RunResult, task_id: str | None,
                    started: float) -> RunResult:
    with fleet.begin() as conn:
        result.run_id = conn.execute(sa.text(
            """INSERT INTO fleet.job_runs (job, kind, started_at, finished_at, status, params, task_id)
               VALUES (:j, :k, now(), now(), 'dry_run', CAST(:p AS jsonb), :t) RETURNING id"""),
            {"j": result.job, "k": KIND, "t": task_id, "p": json.dumps(
                {**params, "would_process": result.would_process, "conflicts": result.conflicts,
                 "stale_pending": result.stale_pending})}).scalar()
    result.seconds = time.perf_counter() - started
    log.info("backlog_dry_run", job=result.job, would_process=result.would_process, conflicts=result.conflicts,
             stale_pending=result.stale_pending)
    return result


# -- status ----------------------------------------------------------------------------------------------

def backlog_status(engine: Engine, fleet: Engine | None = None, stale_after: timedelta = STALE_AFTER) -> dict[str, Any]:
    """What `opsfleet backlog status` shows: the backlog, the confirmation emails waiting or failed, and
    the backlog runs in progress (with whether their worker is still alive)."""
    fleet = fleet or engine
    with engine.connect() as conn:
        backlog = conn.execute(sa.text(
            f"""SELECT count(*) AS pending_confirmations, min(r.updated_at) AS oldest_pending,
                       EXTRACT(EPOCH FROM now() - min(r.updated_at)) AS oldest_pending_age_s
                FROM registrations r WHERE {BACKLOG}""")).mappings().one()  # noqa: S608
        emails = conn.execute(sa.text(
            """SELECT count(*) FILTER (WHERE status = 'pending') AS emails_pending,
                      count(*) FILTER (WHERE status = 'pending'
                                       AND created_at <= now() - make_interval(secs => :s)) AS emails_pending_stale,
                      count(*) FILTER (WHERE status = 'failed') AS emails_failed,
                      count(*) FILTER (WHERE status = 'bounced') AS emails_bounced
               FROM confirmation_emails WHERE status IN ('pending', 'failed', 'bounced')"""),
            {"s": stale_after.total_seconds()}).mappings().one()
        live = _live_run_keys(conn)
    with fleet.connect() as conn:
        runs = [dict(m) for m in conn.execute(sa.text(
            """SELECT id, job, status, started_at, rows_affected, batches, task_id, params
               FROM fleet.job_runs WHERE kind = :k AND status = 'running' ORDER BY started_at"""),
            {"k": KIND}).mappings()]
        last = [dict(m) for m in conn.execute(sa.text(
            """SELECT DISTINCT ON (job) id, job, status, started_at, finished_at, rows_affected, batches, error
               FROM fleet.job_runs WHERE kind = :k AND status <> 'running' ORDER BY job, started_at DESC"""),
            {"k": KIND}).mappings()]
    for run in runs:
        run["alive"] = run["id"] % 2**31 in live
    age = backlog["oldest_pending_age_s"]
    return {
        "pending_confirmations": backlog["pending_confirmations"],
        "oldest_pending": backlog["oldest_pending"],
        "oldest_pending_age_s": float(age) if age is not None else None,
        **{k: int(v) for k, v in emails.items()},
        "running_jobs": runs,
        "last_runs": last,
    }
