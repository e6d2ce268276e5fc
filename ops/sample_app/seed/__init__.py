"""Realistic sample-app data with planted problems, streamed into Postgres with COPY.

`seed(engine, scale)` writes `scale` registrations and proportional amounts of everything else, spread
over the 120 days before `now`, then plants the problems `planted_problems()` lists, anchored at `now`
so the seeds' checks fire when run right after. Each seed system (SYSTEMS: one module each, named as
its pack in config/) writes its own tables; `systems=` seeds only those, so each system can have a
database of its own, as the demo does (one database per target). Every table is produced by a generator and written
in COPY batches of `batch_size` rows (one transaction each), so memory does not grow with `scale`:
nothing holds more than a few thousand rows, and tables that relate to another one (emails to
registrations, tickets to reservations) replay that one's deterministic generator instead of
remembering it. Same `rng_seed` and `now` -> same data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from sqlalchemy.engine import Engine

from ops.sample_app.seed import ace_engage, confirmations, ticketing, wedsync, whatsapp
from ops.sample_app.seed.common import (
    DOUBLE_BOOKING_ERROR,
    FAILING_WEBHOOK,
    MIN_SCALE,
    STALE_WHATSAPP_SESSION,
    Progress,
    Row,
)
from ops.sample_app.seed.copy import copy_rows

# The seed systems, in seed order, by the name of their pack in config/. Each module has SCHEMA (the
# schema files its database needs), TABLES (what it fills), write(put, scale, now, seed) and,
# for what must happen after the load and its ANALYZE, settle(conn, now).
SYSTEMS = {"confirmations": confirmations, "ace_engage": ace_engage, "wedsync": wedsync, "whatsapp": whatsapp,
           "ticketing": ticketing}


def systems_of(systems: Iterable[str] | None) -> list[str]:
    """`systems` checked (None: every one), in seed order; ValueError naming an unknown one."""
    if systems is None:
        return list(SYSTEMS)
    wanted = list(systems)
    unknown = [s for s in wanted if s not in SYSTEMS]
    if unknown or not wanted:
        raise ValueError(f"no seed system {unknown[0] if unknown else '(none given)'!r}: "
                         f"the systems are {', '.join(SYSTEMS)}")
    return [s for s in SYSTEMS if s in wanted]


def planted_problems() -> list[str]:
    """What seed() plants, as SQL-visible facts (all relative to its `now`)."""
    return [
        "confirmation backlog: 30 + scale//50000 registrations with status = 'completed', "
        "payment_status = 'completed', confirmation_number IS NULL, updated_at 21-59 min ago",
        f"failing webhook: '{FAILING_WEBHOOK}' has 45% non-200 status codes in webhook_logs over the last hour "
        "(and twice the calls of the others, which stay at <= 1%), so the overall rate is ~15%",
        "slow processing: >= 12% of the last hour's confirmations took 6-40 s "
        "(confirmation_generated_at - updated_at), so p95 > 5 s; the confirmation success rate of "
        "the last hour is far below 95% because of the backlog",
        "SMS failure spike: 18% of sms_delivery_log rows in the last hour have delivery_status = 'failed'",
        f"WhatsApp: session '{STALE_WHATSAPP_SESSION}' is_active with updated_at 30 h ago; 20% of "
        "whatsapp_notifications in the last 24 h (and the last hour, > 10 messages) are 'failed' "
        "(delivery rate 80%); 35 whatsapp_error_logs rows in the last hour; error logs older than 30 days",
        "seat reservations: 12 seat_reservations still is_active with expires_at 2-24 min in the past, their "
        "show_seats 'reserved'; the last cleanup run (reservation_cleanup_runs) was 25 min ago, failed after "
        "32 s with a statement timeout",
        "webhook_logs rows older than 90 days (~15% of them; the last monthly_maintenance in maintenance_log "
        "was 65 days ago), and rate_limit_logs rows older than 24 h",
        "error_logs: 9 rows with severity high/critical in the last hour",
        "performance_metrics: metric_type 'edge_function' averages > 3000 ms over the last hour "
        f"(half the calls are '{FAILING_WEBHOOK}' at 6-14 s)",
        "ticket_orders: 6.9-8.3% (by scale) failed over the last 24 h, none in the last 30 min",
        "double booking: one seat_reservation_audit_log row, event_type 'failed', 2 min ago, with "
        f"error_message '{DOUBLE_BOOKING_ERROR}'",
        f"WedSync guests: the integer id's sequence at {wedsync.FIRST_GUEST_ID:,} and up, 86% of 2^31 - 1; "
        "every row updated once with autovacuum off for the table (as many dead tuples as live ones)",
    ]





def seed(engine: Engine, scale: int, *, now: datetime | None = None, batch_size: int = 50_000,
         progress: Progress | None = None, rng_seed: int = 42, systems: Iterable[str] | None = None) -> dict[str, int]:
    """Fill the (initialised, empty) sample-app tables of `systems` (default: every one of SYSTEMS):
    `scale` registrations and proportional data around them, with the problems of planted_problems()
    anchored at `now` (default: the database's clock; a naive datetime is taken as UTC). A system's
    data is the same whether it is seeded alone or with the others. `progress(table, rows_done,
    rows_total)` is called after every batch. Returns the rows written per table."""
    names = systems_of(systems)
    if scale < MIN_SCALE:
        raise ValueError(f"scale must be at least {MIN_SCALE} (got {scale})")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection = raw.driver_connection
        conn.rollback()
        for table in (t for name in names for t in SYSTEMS[name].TABLES):
            if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))).fetchone()[0]:
                raise ValueError(f"seed() expects empty sample-app tables ({table} has rows): run it on a freshly "
                                 "initialised database")
        if now is None:
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        elif now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        now = now.astimezone(UTC)
        conn.rollback()
        return _write_all(conn, names, scale, now, rng_seed, batch_size, progress)
    finally:
        raw.close()


def _write_all(conn: psycopg.Connection, names: list[str], scale: int, now: datetime, seed_: int, batch_size: int,
               progress: Progress | None) -> dict[str, int]:
    written: dict[str, int] = {}

    def put(table: str, columns: Iterable[str], rows: Iterable[Row], total: int | None = None) -> None:
        total = len(rows) if isinstance(rows, list) else total
        written[table] = copy_rows(conn, table, columns, rows, total=total, batch_size=batch_size, progress=progress)

    for name in names:
        SYSTEMS[name].write(put, scale, now, seed_)
    _finish(conn, written)
    for name in names:
        settle = getattr(SYSTEMS[name], "settle", None)
        if settle is not None:
            settle(conn, now)
    return written


def _finish(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    """Move each id sequence past the explicit ids, then ANALYZE what was loaded."""
    for table in tables:
        if table == "reservation_seats":
            continue
        conn.execute(sql.SQL(
            "SELECT setval(pg_get_serial_sequence({name}, 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        ).format(name=sql.Literal(table), table=sql.Identifier(table)))
    conn.commit()
    for table in tables:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    conn.commit()
