"""Alembic environment: migrations of schema `fleet`, serialised by an advisory lock so several
containers can run `opsfleet db upgrade` at once."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from worker.fleet.runs import Space, lock_key

MIGRATION_LOCK = lock_key(Space.MIGRATIONS, 1)

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

with engine.connect() as connection:
    connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
    try:
        connection.execute(sa.text("CREATE SCHEMA IF NOT EXISTS fleet"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=None,
            version_table_schema="fleet",
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()
engine.dispose()
