"""The backlog runs: `reprocess` (seed 000's recovery: paid registrations that never got a
confirmation) and `resend_failed`, each a recorded run (worker.fleet.runs) on one connection to the
application's database, batch by batch.

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

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.backlog import claims
from worker.backlog.claims import (
    BACKLOG,
    CAREFUL_CLAIM_SQL,
    CLAIM_SQL,
    FAILED,
    REQUEUE_SQL,
    ROW_COLUMNS,
    count_backlog,
    count_conflicts,
    lock_group,
    rows_of,
    stale_groups,
    unlock_group,
)
from worker.backlog.confirmations import (
    EmailRow,
    Outcome,
    ProviderUnavailable,
    confirmation_number,
    provider_calls,
    require_channel,
    send_call,
)
from worker.backlog.spec import JOB_REPROCESS, JOB_RESEND
from worker.fleet import runs
from worker.fleet.logs import get_logger

if TYPE_CHECKING:  # built by the task (confirmation_channel), which imports it
    from worker.channels.email import EmailChannel

log = get_logger(__name__)

KIND = "backlog"
# seed 000 "Pending Confirmations"; registrations_confirmation_backlog_idx has the same predicate
STALE_AFTER = timedelta(minutes=10)  # a pending email older than this, unlocked, is resent
HEARTBEAT_S = 2.0
SAMPLE = 10


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
    claims.record_outcomes(conn, outcomes, rows)
    timing.db_seconds += time.perf_counter() - t
    out.sent = sum(o.status == "sent" for o in outcomes)
    out.failed = len(outcomes) - out.sent
    return out


# -- job_runs --------------------------------------------------------------------------------------------

def _tally(result: RunResult, out: _Sent) -> None:
    result.sent += out.sent
    result.failed += out.failed
    if out.unavailable:
        result.deferred += out.rows_left
        raise ProviderUnavailable(out.unavailable)


def send_stale_pending(conn: Connection, channel: EmailChannel, stale_after: timedelta, result: RunResult) -> None:
    """Resend pending emails that nobody is sending (their group's lock is free) with the same calls and
    keys as the first attempt. Counts into result.recovered / sent / failed / deferred."""
    for grp, ids in stale_groups(conn, stale_after):
        if not lock_group(conn, grp, wait=False):
            conn.commit()
            continue
        try:
            t = time.perf_counter()
            rows = rows_of(conn.execute(sa.text(
                f"""SELECT {ROW_COLUMNS} FROM confirmation_emails ce JOIN registrations r ON r.id = ce.registration_id
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
            unlock_group(conn, grp)


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
                    lock_group(conn, rows[0].grp, wait=True)  # a new group: no one else can know it yet
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
            unlock_group(conn, rows[0].grp)
        report(result.claimed)


def _run(monitored: Engine, fleet: Engine, job: str, params: dict[str, Any], task_id: str | None,
         body: Callable[[Connection, RunResult, runs.Run], None], target: str) -> RunResult:
    """One recorded run (worker.fleet.runs: the job_runs row under `target`, the run's liveness lock, the
    backlog's shared lock) over one connection to the application's database: the body, the outcome."""
    result = RunResult(job)
    started = time.perf_counter()
    run = runs.start(fleet, family="backlog", job=job, kind=KIND, params=params, task_id=task_id, exclusive=False,
                     target=target)
    result.run_id = run.id
    try:
        with monitored.connect() as conn:
            try:
                body(conn, result, run)
            except ProviderUnavailable as exc:
                result.status, result.error = "error", str(exc)
            except Exception as exc:
                result.status, result.error = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}"
                conn.rollback()
                raise
            finally:
                # any group lock an interrupted batch left on this (pooled) connection
                if not conn.invalidated:
                    with contextlib.suppress(sa.exc.DBAPIError):  # (a broken connection holds nothing)
                        conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
                        conn.commit()
    except Exception:
        _finish(run, result, started)
        raise
    except BaseException:  # the process is going away: its locks go with it, the next run closes the row
        run.abandon()
        raise
    _finish(run, result, started)
    return result


class _Reporter:
    """Progress for Flower (via `progress`) and a job_runs heartbeat every HEARTBEAT_S. With several workers
    on one backlog, `remaining()` (a count of what is left, refreshed at most every HEARTBEAT_S) turns this
    run's view into the backlog's: done, rate and ETA of all of them."""

    def __init__(self, run: runs.Run, result: RunResult, total: int, progress: Callable[[Progress], None] | None,
                 remaining: Callable[[], int] | None = None) -> None:
        self.run, self.result, self.total, self.progress, self.remaining = run, result, total, progress, remaining
        self.started = self.last_beat = time.monotonic()
        self.global_done = 0

    def __call__(self, claimed: int) -> None:
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_S:
            self.run.heartbeat(self.result.claimed + self.result.recovered, self.result.batches)
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
              task_id: str | None = None, target: str = "") -> RunResult:
    """Reprocess the confirmation backlog of `monitored` (see the module docstring), its runs recorded
    under `target` (a key). Safe to run on any number of workers at once; a dry run counts and samples
    and writes nothing but its job_runs row."""
    params = {"limit": limit, "batch_size": batch_size, "dry_run": dry_run,
              "older_than": older_than.total_seconds(), "stale_after": stale_after.total_seconds()}
    if dry_run:
        return _dry_run(monitored, fleet, params, older_than, stale_after, limit, task_id, target)
    require_channel(channel)
    claim_params = {"older_than": older_than.total_seconds()}

    def body(conn: Connection, result: RunResult, run: runs.Run) -> None:
        total = count_backlog(conn, older_than)
        total = min(total, limit) if limit is not None else total
        report = _Reporter(run, result, total, progress,
                           None if limit is not None else lambda: count_backlog(conn, older_than))
        report(0)
        send_stale_pending(conn, channel, stale_after, result)
        _drain(conn, channel,
               lambda n, careful: rows_of(conn.execute(sa.text(CAREFUL_CLAIM_SQL if careful else CLAIM_SQL),
                                                     {**claim_params, "n": n})),
               limit, batch_size, result, report)
        result.conflicts = count_conflicts(conn, older_than)

    return _run(monitored, fleet, JOB_REPROCESS, params, task_id, body, target)


def resend_failed(monitored: Engine, fleet: Engine, channel: EmailChannel | None, *, limit: int | None = None,
                  batch_size: int = 100, dry_run: bool = False, max_attempts: int = 5,
                  progress: Callable[[Progress], None] | None = None, task_id: str | None = None,
                  target: str = "") -> RunResult:
    """Retry confirmation emails in status 'failed' (never 'bounced') tried fewer than `max_attempts`
    times: each batch is made pending again with attempts + 1 (a new group, so new keys) and sent like
    a fresh claim."""
    params = {"limit": limit, "batch_size": batch_size, "dry_run": dry_run, "max_attempts": max_attempts}
    if dry_run:
        return _dry_run_resend(monitored, fleet, params, limit, max_attempts, task_id, target)
    require_channel(channel)

    def body(conn: Connection, result: RunResult, run: runs.Run) -> None:
        total = conn.execute(sa.text(f"SELECT count(*) FROM {FAILED}"), {"max_attempts": max_attempts}).scalar()  # noqa: S608
        conn.commit()
        report = _Reporter(run, result, min(total, limit) if limit is not None else total, progress)
        after = [0]  # keyset: an email failing again in this run is not picked up again by it

        def claim(n: int, careful: bool) -> list[EmailRow]:
            rows = rows_of(conn.execute(sa.text(REQUEUE_SQL), {"after": after[0], "n": n, "max_attempts": max_attempts}))
            after[0] = max([after[0], *(r.email_id for r in rows)])
            return rows

        _drain(conn, channel, claim, limit, batch_size, result, report)

    return _run(monitored, fleet, JOB_RESEND, params, task_id, body, target)


def _finish(run: runs.Run, result: RunResult, started: float) -> None:
    result.seconds = time.perf_counter() - started
    run.finish(result.status, rows=result.claimed + result.recovered, batches=result.batches, error=result.error,
               extra={"result": {k: v for k, v in result.as_dict().items() if k != "sample"}})
    log.info("backlog_run_finished", job=result.job, status=result.status, claimed=result.claimed,
             sent=result.sent, failed=result.failed, deferred=result.deferred, recovered=result.recovered,
             batches=result.batches, conflicts=result.conflicts, seconds=round(result.seconds, 3), error=result.error)


def _dry_run(monitored: Engine, fleet: Engine, params: dict[str, Any], older_than: timedelta,
             stale_after: timedelta, limit: int | None, task_id: str | None, target: str) -> RunResult:
    result = RunResult(JOB_REPROCESS, status="dry_run")
    started = time.perf_counter()
    with monitored.connect() as conn:
        result.would_process = count_backlog(conn, older_than)
        result.conflicts = count_conflicts(conn, older_than)
        result.stale_pending = sum(len(ids) for _, ids in stale_groups(conn, stale_after))
        result.sample = [
            {**dict(m), "confirmation_number": confirmation_number(m["id"]), "updated_at": m["updated_at"].isoformat()}
            for m in conn.execute(sa.text(
                f"""SELECT r.id, r.email, r.updated_at FROM registrations r WHERE {BACKLOG}
                    AND r.updated_at <= now() - make_interval(secs => :o) ORDER BY r.updated_at LIMIT :k"""),  # noqa: S608
                {"o": older_than.total_seconds(), "k": SAMPLE}).mappings()]
        conn.rollback()
    if limit is not None:
        result.would_process = min(result.would_process, limit)
    return _record_dry_run(fleet, params, result, task_id, started, target)


def _dry_run_resend(monitored: Engine, fleet: Engine, params: dict[str, Any], limit: int | None,
                    max_attempts: int, task_id: str | None, target: str) -> RunResult:
    result = RunResult(JOB_RESEND, status="dry_run")
    started = time.perf_counter()
    with monitored.connect() as conn:
        p = {"max_attempts": max_attempts, "k": SAMPLE}
        result.would_process = conn.execute(sa.text(f"SELECT count(*) FROM {FAILED}"), p).scalar() or 0  # noqa: S608
        result.sample = [dict(m) for m in conn.execute(sa.text(
            f"""SELECT ce.id AS email_id, ce.registration_id, ce.recipient, ce.attempts, ce.error
                FROM {FAILED} ORDER BY ce.id LIMIT :k"""), p).mappings()]  # noqa: S608
        conn.rollback()
    if limit is not None:
        result.would_process = min(result.would_process, limit)
    return _record_dry_run(fleet, params, result, task_id, started, target)


def _record_dry_run(fleet: Engine, params: dict[str, Any], result: RunResult, task_id: str | None,
                    started: float, target: str) -> RunResult:
    result.run_id = runs.record(fleet, job=result.job, kind=KIND, status="dry_run", task_id=task_id, target=target, params={
        **params, "would_process": result.would_process, "conflicts": result.conflicts,
        "stale_pending": result.stale_pending})
    result.seconds = time.perf_counter() - started
    log.info("backlog_dry_run", job=result.job, would_process=result.would_process, conflicts=result.conflicts,
             stale_pending=result.stale_pending)
    return result
