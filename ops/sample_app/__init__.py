"""The monitored sample application: the schema the five seed guides' SQL runs against, and a
generator of realistic data with planted problems (for the demo, the tests and the benchmarks)."""

from __future__ import annotations

from importlib import resources

from sqlalchemy.engine import Engine

from ops.sample_app.seed import planted_problems, seed

__all__ = ["init", "planted_problems", "schema_sql", "seed"]

# Serialises concurrent init() calls: CREATE ... IF NOT EXISTS alone can race on the catalogs.
_INIT_LOCK_KEY = 0x0A5A_11D0


def schema_sql() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


def init(engine: Engine) -> None:
    """Create (or bring up to date) the sample application's schema. Idempotent; one transaction."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK_KEY,))
            conn.execute(schema_sql())
    finally:
        raw.close()
