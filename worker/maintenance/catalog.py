"""A job naming a table, column or function the monitored database lacks is a config error, found at
a maintenance worker's start and by `opsfleet config validate`, not when the job first runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.fleet.db import NO_PREPARED, normalize_url, ping
from worker.fleet.errors import ConfigError
from worker.fleet.sqltext import quote_ident
from worker.maintenance.spec import MaintenanceJob


class CatalogError(ConfigError):
    """A job names a table, column or function the monitored database does not have."""

    def __init__(self, job: MaintenanceJob, field_name: str, message: str) -> None:
        super().__init__(f"maintenance job {job.name}: {message}")
        self.job, self.field = job.name, field_name


def validate_against_catalog(job: MaintenanceJob, conn: Connection) -> None:
    """The tables and columns a job names must exist: a config error, not a runtime surprise."""
    def has_table(name: str) -> bool:
        return conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": quote_ident(name)}).scalar()

    def has_column(table: str, column: str) -> bool:
        return bool(conn.execute(sa.text("""SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:t)
                                           AND attname = :c AND NOT attisdropped"""),
                                 {"t": quote_ident(table), "c": column}).first())

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


def returns_a_value(conn: Connection, function: str) -> bool:
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


def check_catalog_at(database_url: str, jobs: Iterable[MaintenanceJob],
                     where: Callable[[str, str], str] | None = None) -> list[str]:
    """check_catalog on a connection of its own, closed again (a worker's start: the prefork pool
    forks after this). Raises ServiceUnavailable when the database cannot be reached."""
    jobs = [j for j in jobs if j.enabled]
    if not jobs:
        return []
    engine = sa.create_engine(normalize_url(database_url), poolclass=sa.pool.NullPool,
                              connect_args={**NO_PREPARED, "application_name": "opsfleet", "connect_timeout": 5})
    try:
        ping(engine, "the monitored database")
        return check_catalog(jobs, engine, where=where)
    finally:
        engine.dispose()
