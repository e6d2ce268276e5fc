"""The monitored sample application: the schema the five seed guides' SQL runs against, and a
generator of realistic data with planted problems (for the demo, the tests and the benchmarks)."""

from __future__ import annotations

from datetime import datetime
from importlib import resources

from rich.console import Console
from sqlalchemy.engine import Engine

from ops.sample_app.seed import planted_problems, seed
from worker.fleet.runs import Space, lock_key

__all__ = ["init", "planted_problems", "schema_sql", "seed", "seed_with_progress"]

# Serialises concurrent init() calls: CREATE ... IF NOT EXISTS alone can race on the catalogs.
_INIT_LOCK_KEY = lock_key(Space.SAMPLE_APP, 1)


def schema_sql() -> str:
    """The schema, one file per seed system (schema/000_*.sql .. 004_*.sql), in order."""
    folder = resources.files(__package__).joinpath("schema")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


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


def seed_with_progress(engine: Engine, scale: int, rng_seed: int = 42, now: datetime | None = None,
                       console: Console | None = None) -> dict[str, int]:
    """seed() with a progress bar per table (on stderr unless `console` says otherwise)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console or Console(stderr=True), transient=False) as progress:
        bars: dict[str, int] = {}

        def report(table: str, done: int, total: int) -> None:
            if table not in bars:
                bars[table] = progress.add_task(table, total=total)
            progress.update(bars[table], completed=done, total=total)

        return seed(engine, scale, now=now, progress=report, rng_seed=rng_seed)
