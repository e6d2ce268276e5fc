"""Maintenance runs: archive, purge, vacuum, sql, fleet_retention.

Batched (each batch its own short transaction), paused between batches, capped per run, and run
under the job's exclusive lock so two runs of one job never overlap (worker.fleet.runs: a second run
is recorded as skipped). Every run is a job_runs row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.fleet import runs
from worker.fleet.errors import ConfigError
from worker.fleet.logs import get_logger
from worker.fleet.sqltext import quote_ident as quote
from worker.maintenance.catalog import returns_a_value, validate_against_catalog
from worker.maintenance.spec import MaintenanceJob

log = get_logger(__name__)

# the fleet's own history that fleet_retention trims, by its age column
FLEET_HISTORY = (("fleet.check_runs", "started_at"), ("fleet.alert_events", "at"),
                 ("fleet.job_runs", "started_at"))


@dataclass
class JobResult:
    job: str
    status: str  # ok | skipped | error
    rows: int = 0
    batches: int = 0
    error: str | None = None
    run_id: int | None = None


class JobFailed(Exception):
    """The job ran and reports failure (a function returning NULL): the run is an error."""


def _batches(job: MaintenanceJob, engine: Engine, now: datetime, stmt: str,
             progress: Callable[[int, int], None] | None, result: JobResult) -> None:
    """Run `stmt` batch by batch, each its own transaction, counting each committed batch into `result`
    as it commits: a run that fails at batch N records the N-1 batches that did commit."""
    rows = 0
    while True:
        limit = job.batch_size if job.max_rows is None else min(job.batch_size, job.max_rows - rows)
        if limit <= 0:
            break
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :v, true)"),
                         {"v": str(int(job.timeout.total_seconds() * 1000))})
            n = conn.execute(sa.text(stmt), {"cutoff": now - job.older_than, "limit": limit}).scalar() or 0
        rows += n
        result.rows += n
        result.batches += 1
        if progress:
            progress(result.rows, result.batches)
        if n < limit:
            break
        time.sleep(job.pause.total_seconds())


def _archive_sql(job: MaintenanceJob) -> str:
    t, a, key, age = quote(job.table), quote(job.archive_table), quote(job.key_column), quote(job.age_column)
    extra = f" AND ({job.where})" if job.where else ""
    # one transaction per batch: the same keys are copied and deleted, so a row is never lost nor doubled
    return f"""
        WITH batch AS (
            SELECT {key} FROM {t} WHERE {age} < :cutoff{extra}
            ORDER BY {key} LIMIT :limit FOR UPDATE SKIP LOCKED
        ), moved AS (
            DELETE FROM {t} WHERE {key} IN (SELECT {key} FROM batch) RETURNING {t}.*
        ), ins AS (
            INSERT INTO {a} SELECT * FROM moved RETURNING 1
        )
        SELECT count(*) FROM ins"""  # noqa: S608 - identifiers validated and quoted


def _purge_sql(table: str, key: str, age: str, where: str | None) -> str:
    t, k, a = quote(table), quote(key), quote(age)
    extra = f" AND ({where})" if where else ""
    return f"""
        WITH batch AS (SELECT {k} FROM {t} WHERE {a} < :cutoff{extra} ORDER BY {k} LIMIT :limit FOR UPDATE SKIP LOCKED),
             gone AS (DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM batch) RETURNING 1)
        SELECT count(*) FROM gone"""  # noqa: S608 - identifiers validated and quoted


def run_job(job: MaintenanceJob, *, monitored: Engine, fleet: Engine, now: datetime, task_id: str | None = None,
            progress: Callable[[int, int], None] | None = None, target: str = "") -> JobResult:
    """Run `job` against `monitored` (a target's database; the fleet's own for fleet_retention), recorded
    in fleet.job_runs under `target` (the target's key: "" for the implicit default and the fleet)."""
    on = fleet if job.kind == "fleet_retention" else monitored
    try:
        run = runs.start(fleet, family="maintenance", job=job.name, kind=job.kind, target=target,
                         params=job.model_dump(mode="json", by_alias=True), task_id=task_id, exclusive=True)
    except runs.Busy as busy:
        log.info("maintenance_skipped", job=job.name, reason="another run holds the lock")
        return JobResult(job.name, "skipped", error=str(busy), run_id=busy.run_id)
    result = JobResult(job.name, "ok", run_id=run.id)
    started = time.monotonic()
    try:
        _work(job, on, now, result, progress, started)
    except (sa.exc.DBAPIError, ConfigError, JobFailed) as exc:
        result.status = "error"
        result.error = (str(exc.orig).strip().splitlines()[0] if isinstance(exc, sa.exc.DBAPIError) and exc.orig
                        else str(exc))
    except BaseException as exc:  # anything else: recorded, then raised (a run never stays 'running')
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
        _finish(run, job, result, started)
        raise
    _finish(run, job, result, started)
    return result


def _work(job: MaintenanceJob, target: Engine, now: datetime, result: JobResult,
          progress: Callable[[int, int], None] | None, started: float) -> None:
    if job.kind != "fleet_retention":
        with target.connect() as conn:
            validate_against_catalog(job, conn)
    if job.kind == "archive":
        _batches(job, target, now, _archive_sql(job), progress, result)
    elif job.kind == "purge":
        _batches(job, target, now, _purge_sql(job.table, job.key_column, job.age_column, job.where), progress, result)
    elif job.kind == "fleet_retention":
        for table, col in FLEET_HISTORY:
            _batches(job, target, now, _purge_sql(table, "id", col, None), progress, result)
    elif job.kind == "vacuum":
        with target.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for t in job.tables:
                conn.execute(sa.text(f"VACUUM (ANALYZE) {quote(t)}"))
                result.batches += 1
    elif job.kind == "analyze":
        with target.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :v, false)"),
                         {"v": str(int(job.timeout.total_seconds() * 1000))})
            for t in job.tables or [None]:
                conn.execute(sa.text(f"ANALYZE {quote(t)}" if t else "ANALYZE"))
                result.batches += 1
    elif job.kind == "sql":
        with target.begin() as conn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :v, true)"),
                         {"v": str(int(job.timeout.total_seconds() * 1000))})
            value = conn.execute(sa.text(f"SELECT * FROM {quote(job.function)}()")).first()  # noqa: S608
            first = value[0] if value is not None and len(value) else None
            result.rows = int(first) if isinstance(first, (int, float)) else 0
            result.batches = 1
            failed = first is None and returns_a_value(conn, job.function)
        if failed:  # after the commit, which keeps the function's own record of its failure
            # e.g. cleanup_expired_seat_reservations() reports its failure by returning NULL
            raise JobFailed(f"maintenance job {job.name}: {job.function}() returned NULL, which it "
                            "does when it failed (see its own log, e.g. reservation_cleanup_runs)")
    if job.maintenance_log and job.kind != "fleet_retention":
        with target.begin() as conn:
            conn.execute(sa.text(
                """INSERT INTO maintenance_log (task, started_at, completed_at, rows_affected, details)
                   VALUES (:t, now() - make_interval(secs => :d), now(), :r, CAST(:x AS jsonb))"""),
                {"t": job.name, "d": time.monotonic() - started, "r": result.rows,
                 "x": json.dumps({"kind": job.kind, "batches": result.batches, "run_id": result.run_id})})


def _finish(run: runs.Run, job: MaintenanceJob, result: JobResult, started: float) -> None:
    run.finish(result.status, rows=result.rows, batches=result.batches, error=result.error)
    log.info("maintenance_finished", job=job.name, status=result.status, rows=result.rows, batches=result.batches,
             duration_s=round(time.monotonic() - started, 3), error=result.error)
