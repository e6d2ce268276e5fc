"""Seed 002 (WedSync): guests. Its checks are Postgres health (the postgres pack), so its planted
problems are a database's, on this one table: the integer id's sequence 86% of the way to 2^31 - 1
(db_sequences_near_max), and every row updated once (the RSVPs came in) after autovacuum was turned
off for the table, so as many dead versions stay as there are live rows (db_dead_tuples_high)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg

from ops.sample_app.seed.common import DAY, HISTORY, Put, Row, ages, clamp, person

SCHEMA = ("002_wedsync.sql",)
TABLES = ("guests",)
GUEST_COLUMNS = ("id", "wedding_id", "name", "email", "rsvp_status", "created_at", "updated_at")
FIRST_GUEST_ID = 1_850_000_001  # ids handed out since the table began: 86% of int4's 2147483647


def guest_count(scale: int) -> int:
    return clamp(scale // 4, 1000, 100_000)  # >= 1000: db_dead_tuples_high leaves smaller tables out


def guests(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:guests")
    for i, age in enumerate(ages(rng, guest_count(scale), DAY, HISTORY, growth=1.0)):
        created = now - timedelta(seconds=age)
        email, name = person(100_000 + i)
        yield (FIRST_GUEST_ID + i, 1 + i // 120, name, email, "pending", created, created)


def write(put: Put, scale: int, now: datetime, seed_: int) -> None:
    """Write this system's tables through `put` (the COPY of seed())."""
    put("guests", GUEST_COLUMNS, guests(scale, now, seed_), guest_count(scale))


def settle(conn: psycopg.Connection, now: datetime) -> None:
    """After the load and its ANALYZE: the sequence marked as used up to the last id (a sequence only
    moved by setval(..., false) reads as never used in pg_sequences), and the dead tuples: one per row,
    so the ratio stays far above db_dead_tuples_high's 20% even when the statistics count the load's
    live rows twice (the COPY's counts can reach the statistics after the ANALYZE's)."""
    conn.execute("SELECT setval(pg_get_serial_sequence('guests', 'id'), (SELECT MAX(id) FROM guests))")
    conn.execute("ALTER TABLE guests SET (autovacuum_enabled = false)")
    conn.execute("UPDATE guests SET rsvp_status = CASE WHEN id %% 2 = 0 THEN 'attending' ELSE 'declined' END, "
                 "updated_at = %s", (now - timedelta(hours=2),))
    conn.commit()
