"""SQLAlchemy engines for the monitored database and the fleet's state database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import dialect as _psycopg_dialect
from sqlalchemy.engine import Engine, make_url

from worker.errors import ServiceUnavailable
from worker.settings import get_settings


def normalize_url(url: str) -> str:
    """postgresql:// or postgres:// -> postgresql+psycopg:// (psycopg 3)."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def create(url: str, *, application_name: str = "opsfleet", pool_size: int = 5, pre_ping: bool = True) -> Engine:
    return sa.create_engine(
        normalize_url(url),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=5,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
    )


@lru_cache(maxsize=1)
def monitored_engine() -> Engine:
    # no pre-ping round trip per check: collect_sql retries once on a connection that went away
    return create(get_settings().require_database_url(), application_name="opsfleet-checks", pre_ping=False)


@lru_cache(maxsize=1)
def fleet_engine() -> Engine:
    return create(get_settings().require_fleet_database_url(), application_name="opsfleet")


def reset_engines() -> None:
    for fn in (monitored_engine, fleet_engine):
        if fn.cache_info().currsize:
            fn().dispose()
        fn.cache_clear()


def ping(engine: Engine, what: str) -> None:
    """Raise ServiceUnavailable with one clear line when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ServiceUnavailable(
            f"cannot reach {what} at {engine.url.render_as_string(hide_password=True)}: {reason} "
            "(is Postgres running, and is the URL right?)"
        ) from None


class ConnectionLost(Exception):
    """The pooled connection broke under a query (a restart, a terminated backend); retry on a new one."""


_DIALECT = _psycopg_dialect()


@lru_cache(maxsize=1024)
def psycopg_text(query: str) -> tuple[str, tuple[str, ...]]:
    """A text() query (`:name` binds, `::` casts, literal `%`) as psycopg sends it, and its bind names.

    SQLAlchemy's own compilation, so the query means what it means through text(); cached per text.
    """
    compiled = sa.text(query).compile(dialect=_DIALECT)
    return str(compiled), tuple(compiled.params)


@contextlib.contextmanager
def read_only_cursor(engine: Engine, *, statement_timeout_ms: int,
                     lock_timeout_ms: int = 2000) -> Iterator[psycopg.Cursor]:
    """The checks' query path: a psycopg cursor of a pooled connection, in a READ ONLY transaction with
    statement and lock timeouts, always rolled back, the connection handed back as it came.

    Three round trips around a query: BEGIN READ ONLY with the timeouts in one message, the query,
    ROLLBACK. Run the query with `prepare=True`: the extended protocol takes exactly one statement, so
    a query cannot end the read-only transaction (`...; COMMIT; DELETE ...`), and the server keeps it
    parsed for the next run (planned afresh each time: force_custom_plan, as an unprepared query is).
    ROLLBACK goes through libpq, since psycopg forgets every prepared statement on a ROLLBACK it sees
    (a guard for DDL, which a READ ONLY transaction cannot run). A connection that broke is
    invalidated in the pool and ConnectionLost raised; any other error propagates as psycopg's.
    """
    fairy = engine.raw_connection()
    conn: psycopg.Connection = fairy.driver_connection
    try:
        conn.autocommit = True  # we send BEGIN ourselves, together with the settings
        try:
            cur = conn.cursor()
            cur.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {int(statement_timeout_ms)}; "
                        f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}; "
                        "SET LOCAL plan_cache_mode = force_custom_plan")
            yield cur
        finally:
            if not conn.broken:
                conn.pgconn.exec_(b"ROLLBACK")
                conn.autocommit = False
    except psycopg.OperationalError as exc:
        if conn.broken:
            fairy.invalidate(exc)
            raise ConnectionLost(str(exc).strip().splitlines()[0] if str(exc).strip() else "connection lost") from exc
        raise
    finally:
        fairy.close()
