"""`opsfleet db upgrade`: Alembic, configured in code (no alembic.ini to keep in sync)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from worker.fleet.db import normalize_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    cfg.set_main_option("version_table_schema", "fleet")
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    import sqlalchemy as sa

    from worker.fleet.db import create

    engine = create(url)
    try:
        with engine.connect() as conn:
            if not conn.execute(sa.text("SELECT to_regclass('fleet.alembic_version')")).scalar():
                return None
            return conn.execute(sa.text("SELECT version_num FROM fleet.alembic_version")).scalar()
    finally:
        engine.dispose()
