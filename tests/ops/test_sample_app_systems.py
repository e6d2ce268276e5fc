"""The sample application split by seed system (one database each, as the demo's five targets): a
system's database holds its tables only, its data is the same as in the database of every system,
and WedSync's Postgres health problems are planted on its own table."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from importlib import resources

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from ops.sample_app import SYSTEMS, init, schema_sql, seed
from ops.sample_app.seed.wedsync import FIRST_GUEST_ID

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SCALE = 300


def _tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )).scalars())


def _digest(engine: sa.Engine, table: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            f'SELECT md5(string_agg(t::text, \'|\' ORDER BY t::text)) FROM "{table}" t')).scalar_one()  # noqa: S608 - fixed names


@pytest.fixture(scope="module")
def every_system(fresh_database):
    """One database with every system, seeded at AT: what the tests and benchmarks use."""
    engine = sa.create_engine(fresh_database(), poolclass=NullPool)
    init(engine)
    written = seed(engine, SCALE, now=AT)
    yield engine, written
    engine.dispose()


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_system_seeded_alone_has_its_own_tables_and_the_same_rows_as_with_the_others(fresh_database, every_system,
                                                                                     system):
    together, written_together = every_system
    engine = sa.create_engine(fresh_database(), poolclass=NullPool)
    init(engine, [system])
    written = seed(engine, SCALE, now=AT, systems=[system])
    module = SYSTEMS[system]
    assert set(written) == set(module.TABLES)
    # its schema's tables and nothing of another system's (ACE Engage's database has the confirmation
    # tables, its email log, empty)
    mine = {t for f in module.SCHEMA for t in _schema_tables(f)}
    assert _tables(engine) == mine
    for table in module.TABLES:
        assert written[table] == written_together[table] > 0, table
        assert _digest(engine, table) == _digest(together, table), table
    engine.dispose()


def _schema_tables(filename: str) -> set[str]:
    """The tables a schema file creates (CREATE TABLE IF NOT EXISTS name)."""
    text = resources.files("ops.sample_app").joinpath("schema", filename).read_text(encoding="utf-8")
    return set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", text))


def test_an_unknown_system_is_refused_naming_it_and_the_systems():
    with pytest.raises(ValueError, match=r"no seed system 'billing': the systems are confirmations, ace_engage, "
                                         r"wedsync, whatsapp, ticketing"):
        schema_sql(["billing"])


def test_wedsync_guests_sequence_is_past_80_percent_and_half_its_tuples_are_dead(fresh_database):
    engine = sa.create_engine(fresh_database(), poolclass=NullPool)
    init(engine, ["wedsync"])
    seed(engine, SCALE, now=AT, systems=["wedsync"])
    with engine.connect() as conn:
        last, used = conn.execute(sa.text(
            "SELECT last_value, round(100.0 * last_value / 2147483647, 1) FROM pg_sequences "
            "WHERE sequencename = 'guests_id_seq'")).one()
    assert last >= FIRST_GUEST_ID and used > 80
    deadline = time.monotonic() + 15  # the seeding backend publishes its statistics as it exits
    while True:
        with engine.connect() as conn:
            live, dead = conn.execute(sa.text(
                "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'guests'")).one()
        if dead >= 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert dead >= 1000 and 100.0 * dead / max(live, 1) > 20, (live, dead)
    with engine.connect() as conn:
        options = conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'guests'")).scalar_one()
    assert "autovacuum_enabled=false" in options
    engine.dispose()
