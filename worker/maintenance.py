"""Maintenance jobs (config/maintenance.yaml): archive, purge, vacuum, sql, fleet_retention.

Batched (each batch its own short transaction), paused between batches, capped per run, and run
under a Postgres advisory lock so two runs of one job never overlap. Every run is a job_runs row.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.config import FleetConfig, MaintenanceJob
from worker.errors import ConfigError
from worker.logs import get_logger

log = get_logger(__name__)

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


def quote(ident: str) -> str:
    """Quote a validated identifier (optionally schema.table)."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in ident.split("."))


def lock_key(job: str) -> int:
    return int.from_bytes(hashlib.sha256(f"opsfleet:job:{job}".encode()).digest()[:8], "big", signed=True)


class CatalogError(ConfigError):
    """A job names a table, column or function the monitored database does not have."""

    def __init__(self, job: MaintenanceJob, field_name: str, message: str) -> None:
        super().__init__(f"maintenance job {job.name}: {message}")
        self.job, self.field = job.name, field_name


def validate_against_catalog(job: MaintenanceJob, conn: Connection) -> None:
    """The tables and columns a job names must exist: a config error, not a runtime surprise."""
    def has_table(name: str) -> bool:
        return conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": quote(name)}).scalar()

    def has_column(table: str, column: str) -> bool:
        return bool(conn.execute(sa.text("""SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:t)
                                           AND attname = :c AND NOT attisdropped"""),
                                 {"t": quote(table), "c": column}).first())

    tables = [("table", job.table), ("archive_table", job.archive_table)] + [(f"tables.{i}", t) for i, t in enumerate(job.tables)]
    for field_name, t in tables:
        if t and not has_table(t):
            raise CatalogError(job, field_name, f"table {t!r} does not exist in the monitored database")
    if job.kind in ("archive", "purge"):
        for field_name, col in (("age_column", job.age_column), ("key_column", job.key_column)):
            if not has_column(job.table, col):
                raise CatalogError(job, field_name, f"column {job.table}.{col} does not exist")
    if job.kind == "sql":
        if not conn.execute(sa.text("SELECT 1 FROM pg_proc WHERE proname = :f"), {"f": job.function.split(".")[-1]}).first():
            raise CatalogError(job, "function", f"function {job.function!r} does not exist")


def _returns_a_value(conn: Connection, function: str) -> bool:
    rettype = conn.execute(sa.text("""SELECT p.prorettype::regtype::text FROM pg_proc p
                                      WHERE p.proname = :f ORDER BY p.oid LIMIT 1"""),
                           {"f": function.split(".")[-1]}).scalar()
    return rettype not in (None, "void")


def check_catalog(jobs: Iterable[MaintenanceJob], monitored: Engine,
                  where: Callable[[str, str], str] | None = None) -> list[str]:
    """Every job against the monitored database's catalog: one message per bad job (empty when all is
    well), prefixed with where(job, field) (FleetConfig.job_field: file:line and field) when given.
    The fleet's own retention job names no application table."""
    errors = []
    with monitored.connect() as conn:
        for job in jobs:
            if job.kind == "fleet_retention":
                continue
            try:
                validate_against_catalog(job, conn)
            except CatalogError as exc:
                errors.append(f"{where(exc.job, exc.field)}: {exc}" if where else str(exc))
    return errors


def check_config_catalog(cfg: FleetConfig, database_url: str) -> list[str]:
    """check_catalog for the enabled jobs of `cfg`, each error with its file:line and field, at a worker's
    start: on a connection of its own, closed again (the prefork pool forks after this). Raises
    ServiceUnavailable when the database cannot be reached."""
    from worker.db import normalize_url, ping

    jobs = [j for j in cfg.maintenance.values() if j.enabled]
    if not jobs:
        return []
    engine = sa.create_engine(normalize_url(database_url), poolclass=sa.pool.NullPool,
                              connect_args={"application_name": "opsfleet", "connect_timeout": 5})
    try:
        ping(engine, "the monitored database")
        return check_catalog(jobs, engine, where=cfg.job_field)
    finally:
        engine.dispose()


def _batches(job: MaintenanceJob, engine: Engine, now: datetime, stmt: str,
             progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    rows = batches = 0
    while True:
        limit = job.batch_size if job.max_rows is None else min(job.batch_size, job.max_rows - rows)
        if limit <= 0:
            break
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :v, true)"),
                         {"v": str(int(job.timeout.total_seconds() * 1000))})
            n = conn.execute(sa.text(stmt), {"cutoff": now - job.older_than, "limit": limit}).scalar() or 0
        rows += n
        batches += 1
        if progress:
            progress(rows, batches)
        if n < limit:
            break
        time.sleep(job.pause.total_seconds())
    return rows, batches


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
            progress: Callable[[int, int], None] | None = None) -> JobResult:
    target = fleet if job.kind == "fleet_retention" else monitored
    with target.connect() as lock_conn:
        got = lock_conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(job.name)}).scalar()
        lock_conn.commit()
        if not got:
            log.info("maintenance_skipped", job=job.name, reason="another run holds the lock")
            return _record_skipped(job, fleet, task_id)
        try:
            return _run_locked(job, target, fleet, now, task_id, progress)
        finally:
            lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(job.name)})
            lock_conn.commit()


def _record_skipped(job: MaintenanceJob, fleet: Engine, task_id: str | None) -> JobResult:
    """A run that found the job already running does nothing, and says so in job_runs too."""
    error = "another run of this job is in progress"
    with fleet.begin() as conn:
        run_id = conn.execute(
            sa.text("""INSERT INTO fleet.job_runs (job, kind, started_at, finished_at, status, error, params, task_id)
                       VALUES (:j, :k, now(), now(), 'skipped', :e, CAST(:p AS jsonb), :tid) RETURNING id"""),
            {"j": job.name, "k": job.kind, "e": error, "tid": task_id,
             "p": json.dumps(job.model_dump(mode="json", by_alias=True))},
        ).scalar()
    return JobResult(job.name, "skipped", error=error, run_id=run_id)


def _run_locked(job: MaintenanceJob, target: Engine, fleet: Engine, now: datetime, task_id: str | None,
                progress: Callable[[int, int], None] | None) -> JobResult:
    with fleet.begin() as conn:
        run_id = conn.execute(
            sa.text("""INSERT INTO fleet.job_runs (job, kind, started_at, params, task_id)
                       VALUES (:j, :k, now(), CAST(:p AS jsonb), :tid) RETURNING id"""),
            {"j": job.name, "k": job.kind, "p": json.dumps(job.model_dump(mode="json", by_alias=True)), "tid": task_id},
        ).scalar()
    result = JobResult(job.name, "ok", run_id=run_id)
    started = time.monotonic()
    try:
        if job.kind != "fleet_retention":
            with target.connect() as conn:
                validate_against_catalog(job, conn)
        if job.kind == "archive":
            result.rows, result.batches = _batches(job, target, now, _archive_sql(job), progress)
        elif job.kind == "purge":
            result.rows, result.batches = _batches(
                job, target, now, _purge_sql(job.table, job.key_column, job.age_column, job.where), progress)
        elif job.kind == "fleet_retention":
            for table, col in FLEET_HISTORY:
                key = "id"
                n, b = _batches(job, target, now, _purge_sql(table, key, col, None), progress)
                result.rows += n
                result.batches += b
        elif job.kind == "vacuum":
            with target.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for t in job.tables:
                    conn.execute(sa.text(f"VACUUM (ANALYZE) {quote(t)}"))
                    result.batches += 1
        elif job.kind == "sql":
            with target.begin() as conn:
                conn.execute(sa.text("SELECT set_config('statement_timeout', :v, true)"),
                             {"v": str(int(job.timeout.total_seconds() * 1000))})
                value = conn.execute(sa.text(f"SELECT * FROM {quote(job.function)}()")).first()  # noqa: S608
                first = value[0] if value is not None and len(value) else None
                result.rows = int(first) if isinstance(first, (int, float)) else 0
                result.batches = 1
                failed = first is None and _returns_a_value(conn, job.function)
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
                     "x": json.dumps({"kind": job.kind, "batches": result.batches, "run_id": run_id})})
    except (sa.exc.DBAPIError, ConfigError, JobFailed) as exc:
        result.status = "error"
        result.error = (str(exc.orig).strip().splitlines()[0] if isinstance(exc, sa.exc.DBAPIError) and exc.orig
                        else str(exc))
    except Exception as exc:  # anything else: recorded, then raised (a run never stays 'running')
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
        _finish_run(fleet, job, result, run_id, started)
        raise
    _finish_run(fleet, job, result, run_id, started)
    return result


def _finish_run(fleet: Engine, job: MaintenanceJob, result: JobResult, run_id: int, started: float) -> None:
    with fleet.begin() as conn:
        conn.execute(
            sa.text("""UPDATE fleet.job_runs SET finished_at = now(), rows_affected = :r, batches = :b, status = :s,
                       error = :e WHERE id = :id"""),
            {"r": result.rows, "b": result.batches, "s": result.status, "e": result.error, "id": run_id},
        )
    log.info("maintenance_finished", job=job.name, status=result.status, rows=result.rows, batches=result.batches,
             duration_s=round(time.monotonic() - started, 3), error=result.error)
