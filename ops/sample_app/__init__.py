"""The monitored sample application: the schema the five seed guides' SQL runs against, and a
generator of realistic data with planted problems (for the demo, the tests and the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from importlib import resources

from rich.console import Console
from sqlalchemy.engine import Engine

from ops.sample_app.seed import SYSTEMS, planted_problems, seed, systems_of
from worker.fleet.runs import Space, lock_key

__all__ = ["SYSTEMS", "init", "planted_problems", "schema_sql", "seed", "seed_with_progress"]

# Serialises concurrent init() calls: CREATE ... IF NOT EXISTS alone can race on the catalogs.
_INIT_LOCK_KEY = lock_key(Space.SAMPLE_APP, 1)


def schema_sql(systems: Iterable[str] | None = None) -> str:
    """The schema, one file per seed system (schema/000_*.sql .. 004_*.sql), in order: every file, or
    those the database of `systems` needs (each system's SCHEMA)."""
    folder = resources.files(__package__).joinpath("schema")
    wanted = None if systems is None else {f for s in systems_of(systems) for f in SYSTEMS[s].SCHEMA}
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql") and (wanted is None or f.name in wanted)),
                   key=lambda f: f.name)
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def init(engine: Engine, systems: Iterable[str] | None = None) -> None:
    """Create (or bring up to date) the sample application's schema: every system's, or only what the
    database of `systems` needs (a database per system, as the demo's targets). Idempotent; one
    transaction."""
    ddl = schema_sql(systems)
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK_KEY,))
            conn.execute(ddl)
    finally:
        raw.close()


def seed_with_progress(engine: Engine, scale: int, rng_seed: int = 42, now: datetime | None = None,
                       console: Console | None = None, systems: Iterable[str] | None = None,
                       label: str = "") -> dict[str, int]:
    """seed() with a progress bar per table (on stderr unless `console` says otherwise), each named
    `label` + the table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console or Console(stderr=True), transient=False) as progress:
        bars: dict[str, int] = {}

        def report(table: str, done: int, total: int) -> None:
            if table not in bars:
                bars[table] = progress.add_task(label + table, total=total)
            progress.update(bars[table], completed=done, total=total)

        return seed(engine, scale, now=now, progress=report, rng_seed=rng_seed, systems=systems)
