"""COPY plumbing: rows streamed into a table in batches, binary format where every column allows it."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from ops.sample_app.seed.common import Progress, Row


class _JsonbTextBinaryDumper(Dumper):
    """jsonb in binary COPY from a str that already holds JSON (version byte 1 + the text)."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode()


# Column types whose Python values (int, str, bool, datetime, list[int], JSON str) psycopg can send in
# binary COPY; a table with any other type (here: inet) is copied in text format.
_BINARY_COPY_TYPES = {"int2", "int4", "int8", "text", "bool", "timestamptz", "jsonb", "_int8"}


def copy_rows(conn: psycopg.Connection, table: str, columns: Iterable[str], rows: Iterable[Row], *,
              total: int, batch_size: int, progress: Progress | None = None) -> int:
    """COPY `rows` into `table`, `batch_size` rows per COPY statement and transaction (binary format
    when every column type allows it)."""
    columns = list(columns)
    types = conn.execute(
        "SELECT a.atttypid, t.typname FROM unnest(%s::text[]) WITH ORDINALITY AS c(name, n)"
        " JOIN pg_attribute a ON a.attrelid = %s::regclass AND a.attname = c.name"
        " JOIN pg_type t ON t.oid = a.atttypid ORDER BY c.n", (columns, table)).fetchall()
    binary = len(types) == len(columns) and all(name in _BINARY_COPY_TYPES for _, name in types)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN {}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL("(FORMAT BINARY)" if binary else ""))
    it = iter(rows)
    done = 0
    if progress:
        progress(table, 0, total)
    while True:
        batch = islice(it, batch_size)
        first = next(batch, None)
        if first is None:
            return done
        with conn.cursor() as cur:
            cur.adapters.register_dumper(None, _JsonbTextBinaryDumper)
            with cur.copy(stmt) as copy:
                if binary:
                    copy.set_types([oid for oid, _ in types])
                write = copy.write_row
                write(first)
                n = 1
                for row in batch:
                    write(row)
                    n += 1
        conn.commit()
        done += n
        if progress:
            progress(table, done, max(total, done))
