"""pg_stat_statements over a window: snapshots of its counters per target (fleet.statement_snapshots,
this module its one writer), taken every few minutes by checks.snapshot_statements on the targets
whose checks gather `top_statements`, so an alert's evidence shows the statements of its window (the
counters now minus the last snapshot at or before the window's start), not the totals since the last
reset. Reads the monitored database as checks do (read only, a statement timeout)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.fleet.db import read_only_query

KEEP = timedelta(days=1)
TOP = 500  # statements kept per snapshot, by total time
_READ = f"""SELECT s.queryid, s.calls, s.total_exec_time, s.rows, s.query
            FROM pg_stat_statements s
            WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.queryid IS NOT NULL
            ORDER BY s.total_exec_time DESC LIMIT {TOP}"""  # noqa: S608 (constant text)
_INSERT = sa.text("""INSERT INTO fleet.statement_snapshots (target, taken_at, queryid, calls, total_exec_time, rows, query)
                     VALUES (:target, :at, :queryid, :calls, :total, :rows, :query) ON CONFLICT DO NOTHING""")
_PRUNE = sa.text("DELETE FROM fleet.statement_snapshots WHERE target = :target AND taken_at < :before")
_AT = sa.text("""SELECT max(taken_at) FROM fleet.statement_snapshots WHERE target = :target AND taken_at <= :since""")
_ROWS = sa.text("""SELECT queryid, calls, total_exec_time, rows FROM fleet.statement_snapshots
                   WHERE target = :target AND taken_at = :at""")


def read(monitored: Engine, timeout_ms: int = 3000) -> list[tuple[Any, ...]]:
    """(queryid, calls, total_exec_time, rows, query) of the database's statements now."""
    _, rows = read_only_query(monitored, _READ, {}, statement_timeout_ms=timeout_ms)
    return rows


def snapshot(monitored: Engine, fleet: Engine, target: str, now: datetime) -> int:
    """Store the counters now; forget those older than a day. How many statements were stored."""
    rows = read(monitored)
    with fleet.begin() as conn:
        if rows:
            conn.execute(_INSERT, [{"target": target, "at": now, "queryid": q, "calls": c, "total": t, "rows": r,
                                    "query": text} for q, c, t, r, text in rows])
        conn.execute(_PRUNE, {"target": target, "before": now - KEEP})
    return len(rows)


def window(conn: Connection, target: str, since: datetime) -> tuple[datetime | None, dict[int, tuple]]:
    """The last snapshot at or before `since`: when it was taken, and queryid -> (calls, total, rows)."""
    at = conn.execute(_AT, {"target": target, "since": since}).scalar()
    if at is None:
        return None, {}
    return at, {r.queryid: (r.calls, r.total_exec_time, r.rows)
                for r in conn.execute(_ROWS, {"target": target, "at": at})}


def delta(now_rows: list[tuple[Any, ...]], before: dict[int, tuple]) -> list[dict[str, Any]]:
    """What ran between the snapshot and now, by total time: calls, total_ms, mean_ms, rows, query (a
    statement whose counters went back, reset since, counts from zero)."""
    out = []
    for queryid, calls, total, rows, query in now_rows:
        c0, t0, r0 = before.get(queryid, (0, 0.0, 0))
        if calls < c0:
            c0, t0, r0 = 0, 0.0, 0
        dc, dt = calls - c0, total - t0
        if dc <= 0:
            continue
        out.append({"calls": dc, "total_ms": round(dt, 1), "mean_ms": round(dt / dc, 2), "rows": rows - r0,
                    "query": query})
    return sorted(out, key=lambda r: -r["total_ms"])


INTERVAL_S = 300


def beat_entries(runs: Any) -> dict[str, dict[str, Any]]:
    """A snapshot every 5 minutes of each target one of whose enabled checks gathers top_statements, on
    the queue its checks go to (config/targets.yaml's own queue too)."""
    from worker.fleet.names import beat_entry

    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.check.enabled and any(e.collector == "top_statements" for e in run.check.evidence):
            name = "statements:snapshot" + (f"@{run.target}" if run.target is not None else "")
            out[name] = beat_entry("checks.snapshot_statements", INTERVAL_S,
                                   {"target": run.target} if run.target is not None else {}, expires=120,
                                   queue=run.queue_name, own_queue=run.queue is not None)
    return out
