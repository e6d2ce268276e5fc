"""SQLAlchemy engines for the monitored database and the fleet's state database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

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


@contextlib.contextmanager
def read_only(engine: Engine, *, statement_timeout_ms: int, lock_timeout_ms: int = 2000) -> Iterator[Connection]:
    """A READ ONLY transaction with statement and lock timeouts, always rolled back."""
    # BEGIN READ ONLY (psycopg's read_only) and both timeouts in one statement: two round trips
    # fewer per check than SET TRANSACTION + two set_config calls.
    with engine.connect().execution_options(postgresql_readonly=True) as conn:
        with conn.begin() as txn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :s, true), set_config('lock_timeout', :l, true)"),
                         {"s": str(statement_timeout_ms), "l": str(lock_timeout_ms)})
            try:
                yield conn
            finally:
                txn.rollback()
