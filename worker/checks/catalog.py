"""A check whose query names what the database lacks (a table, a column, a function) is found before
it runs: EXPLAIN parses and plans the query without running it, in a READ ONLY transaction with a
statement timeout, and the error is the database's own (relation "registrations" does not exist)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.checks.spec import Check


def explain_problem(check: Check, conn: sa.Connection, now: datetime) -> str | None:
    """The database's one-line error for the check's query, or None when it plans."""
    try:
        with conn.begin():
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            conn.execute(sa.text("SELECT set_config('statement_timeout', '5000', true)"))
            conn.execute(sa.text("EXPLAIN " + check.query), {"now": now})  # noqa: S608 - a validated query
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig or exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def check_queries(checks: Iterable[Check], engines: dict[str, Engine],
                  where: Callable[[str], str] | None = None) -> list[str]:
    """One message per enabled sql check whose query does not plan on its database."""
    now = datetime.now(UTC)
    out = []
    by_db: dict[str, list[Check]] = {}
    for c in checks:
        if c.enabled and c.kind == "sql":
            by_db.setdefault(c.database, []).append(c)
    for database, group in by_db.items():
        with engines[database].connect() as conn:
            for c in group:
                problem = explain_problem(c, conn, now)
                if problem:
                    out.append(f"{where(c.name) if where else c.name}: {problem}")
    return out
