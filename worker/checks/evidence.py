"""Evidence: the facts an alert's reader would otherwise go to psql for, gathered once when an
instance goes firing (and on demand from the status page), stored with the alert in
fleet.alert_evidence (this module is its one writer) and carried, cut to a few lines, by its messages.

A check declares `evidence:`, a list of shipped collectors (COLLECTORS: the blocking tree, sessions in
a transaction, top statements, table maintenance, connections, replication slots, ...) or named
queries of its own. Each runs as a check's query does (READ ONLY, a statement timeout, one statement,
validated when the config loads), with the instance's labels bound by name (`:pid`, `:table`, ...:
NULL where the instance has no such label) and `:now`; each section is bounded in rows, in the width
of a cell and in bytes. Query texts are normalised (literals become `?`) and masked, so a password in
a statement never reaches a message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BeforeValidator, Field, field_validator, model_validator
from sqlalchemy.engine import Connection, Engine

from worker.fleet.db import psycopg_text, read_only_query
from worker.fleet.fields import Duration, Name, Strict
from worker.fleet.logs import get_logger, mask_text

log = get_logger(__name__)

MAX_ROWS = 100
CELL_CHARS = 200
SECTION_BYTES = 8_000
TIMEOUT_MS = 3_000
COMPACT_LINES = 3  # what a message carries of each section
KEEP = 5  # gatherings kept per alert instance

_LITERAL = re.compile(r"'(?:[^']|'')*'|\$\d+\b|\$(\w*)\$.*?\$\1\$|\b\d+(?:\.\d+)?\b", re.S)  # $1: pg_stat_statements' parameters



def normalise_query(text: str | None) -> str | None:
    """A statement as the evidence shows it: literals as `?`, whitespace folded, masked, cut."""
    if text is None:
        return None
    text = " ".join(_LITERAL.sub("?", text).split())
    text = mask_text(text)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


@dataclass(frozen=True)
class Collector:
    """A shipped evidence query: `line` says one row in a sentence (the compact form); columns named
    `query` are normalised."""

    title: str
    query: str
    line: str  # a str.format over the row's columns


_SESSION_COLUMNS = """a.pid, a.usename AS "user", COALESCE(NULLIF(a.application_name, ''), '-') AS application,
       COALESCE(host(a.client_addr), 'local') AS client, a.state,
       COALESCE(a.wait_event_type || ':' || a.wait_event, '-') AS wait,
       round(EXTRACT(EPOCH FROM (:now - a.xact_start)))::int AS xact_age_s, a.query"""

COLLECTORS: dict[str, Collector] = {
    "blocking_tree": Collector(
        "who blocks whom",
        f"""WITH s AS (SELECT a.pid, pg_blocking_pids(a.pid) AS blockers FROM pg_stat_activity a
                       WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid())
            SELECT {_SESSION_COLUMNS}, array_to_string(s.blockers, ',') AS blocked_by,
                   (SELECT count(*) FROM s w WHERE a.pid = ANY (w.blockers)) AS blocks
            FROM pg_stat_activity a JOIN s ON s.pid = a.pid
            WHERE cardinality(s.blockers) > 0 OR a.pid IN (SELECT unnest(blockers) FROM s)
            ORDER BY cardinality(s.blockers), a.xact_start NULLS LAST""",  # noqa: S608 (constant text)
        "pid {pid} ({user}, {application}, {state}) blocks {blocks}, blocked by [{blocked_by}], "
        "transaction {xact_age_s} s: {query}"),
    "sessions_in_transaction": Collector(
        "sessions in a transaction, oldest first",
        f"""SELECT {_SESSION_COLUMNS}
            FROM pg_stat_activity a
            WHERE a.backend_type = 'client backend' AND a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
            ORDER BY (a.pid::text = CAST(:pid AS text)) DESC, a.xact_start""",  # noqa: S608 (constant text)
        "pid {pid} ({user}, {application}, {state}, wait {wait}) transaction {xact_age_s} s: {query}"),
    "connections": Collector(
        "connections by user, application and state",
        """SELECT usename AS "user", COALESCE(NULLIF(application_name, ''), '-') AS application,
                  COALESCE(state, '-') AS state, count(*) AS connections
           FROM pg_stat_activity WHERE backend_type = 'client backend'
           GROUP BY 1, 2, 3 ORDER BY connections DESC, 1, 2, 3""",
        "{connections} x {user} / {application} ({state})"),
    "top_statements": Collector(
        "top statements by total time since pg_stat_statements was last reset",
        """SELECT s.calls, round(s.total_exec_time::numeric, 1) AS total_ms, round(s.mean_exec_time::numeric, 2) AS mean_ms,
                  s.rows, s.query
           FROM pg_stat_statements s
           WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           ORDER BY s.total_exec_time DESC""",
        "{total_ms} ms in {calls} calls (mean {mean_ms} ms, {rows} rows): {query}"),
    "table_maintenance": Collector(
        "the table's vacuum and analyze, freeze age and size",
        """SELECT t.schemaname || '.' || t.relname AS "table", t.n_live_tup AS live, t.n_dead_tup AS dead,
                  t.last_vacuum, t.last_autovacuum, t.last_analyze, t.last_autoanalyze,
                  age(c.relfrozenxid) AS freeze_age, pg_size_pretty(pg_total_relation_size(c.oid)) AS size,
                  EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = c.oid) AS vacuum_running
           FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
           WHERE CAST(:table AS text) IS NULL OR t.schemaname || '.' || t.relname = CAST(:table AS text)
           ORDER BY t.n_dead_tup DESC""",
        "{table}: {dead} dead / {live} live, autovacuum {last_autovacuum}, analyze {last_autoanalyze}, "
        "freeze age {freeze_age}, {size}, vacuum running: {vacuum_running}"),
    "oldest_tables": Collector(
        "the tables of this database with the oldest frozen XID",
        """SELECT n.nspname || '.' || c.relname AS "table", age(c.relfrozenxid) AS freeze_age,
                  mxid_age(c.relminmxid) AS multixact_age, t.last_vacuum, t.last_autovacuum,
                  pg_size_pretty(pg_total_relation_size(c.oid)) AS size,
                  EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = c.oid) AS vacuum_running
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_stat_all_tables t ON t.relid = c.oid
           WHERE c.relkind IN ('r', 'm', 't')
           ORDER BY age(c.relfrozenxid) DESC""",
        "{table}: freeze age {freeze_age}, autovacuum {last_autovacuum}, {size}, vacuum running: {vacuum_running}"),
    "sequence_columns": Collector(
        "the sequence, the column it feeds and how far it has gone",
        """SELECT s.schemaname || '.' || s.sequencename AS sequence, s.data_type::text AS type,
                  s.last_value, s.max_value, s.increment_by,
                  (SELECT string_agg(d.refobjid::regclass::text || '.' || a.attname, ', ')
                   FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass
                     AND d.deptype IN ('a', 'i')) AS owned_by
           FROM pg_sequences s
           WHERE CAST(:sequence AS text) IS NULL OR s.schemaname || '.' || s.sequencename = CAST(:sequence AS text)
           ORDER BY s.last_value DESC NULLS LAST""",
        "{sequence} ({type}) at {last_value} of {max_value}, feeds {owned_by}"),
    "replication_slots": Collector(
        "replication slots, the WAL each retains and who consumes it",
        """SELECT slot_name AS slot, slot_type, COALESCE(database, '-') AS datname, active, active_pid,
                  pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS wal_retained,
                  wal_status
           FROM pg_replication_slots
           ORDER BY (slot_name = CAST(:slot AS text)) DESC NULLS LAST, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) DESC NULLS LAST""",
        "{slot} ({slot_type}, {datname}): active {active} pid {active_pid}, retains {wal_retained} ({wal_status})"),
}


class EvidenceSpec(Strict):
    """One section of a check's `evidence:`: a shipped `collector`, or a `name` and `query` of the
    check's own; at most `rows` rows."""

    collector: str | None = None
    name: Name | None = None
    query: str | None = None
    rows: int = Field(default=10, ge=1, le=MAX_ROWS)
    window: Duration = timedelta(minutes=15)  # top_statements: what ran in the last `window` (snapshots)

    @model_validator(mode="after")
    def _one_source(self) -> EvidenceSpec:
        if (self.collector is None) == (self.query is None):
            raise ValueError("give either `collector` (one of " + ", ".join(sorted(COLLECTORS)) + ") or `name` and "
                             "`query`")
        if self.collector is not None and self.collector not in COLLECTORS:
            from difflib import get_close_matches

            near = get_close_matches(self.collector, COLLECTORS, n=1)
            raise ValueError(f"unknown collector {self.collector!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + "; the collectors: " + ", ".join(sorted(COLLECTORS)))
        if self.query is not None and self.name is None:
            raise ValueError("an evidence query needs a `name` (it titles the section)")
        return self

    @field_validator("query")
    @classmethod
    def _read_only(cls, v: str | None) -> str | None:
        """The same walls as a check's query: one SELECT, no side-effect function; any label may be bound."""
        if v is None:
            return v
        from worker.checks.sqlcalls import read_only_problem

        problem = read_only_problem(v, "evidence")
        if problem:
            raise ValueError(problem)
        return v

    @property
    def key(self) -> str:
        return self.name or self.collector or ""

    @property
    def sql(self) -> str:
        return COLLECTORS[self.collector].query if self.collector else self.query or ""


EvidenceField = Annotated[EvidenceSpec, BeforeValidator(lambda v: {"collector": v} if isinstance(v, str) else v)]


def _cell(value: Any, column: str) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    if column == "query":
        return normalise_query(text)
    text = mask_text(text)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def _line(spec: EvidenceSpec, row: dict[str, Any]) -> str:
    if spec.collector:
        try:
            return COLLECTORS[spec.collector].line.format(**{k: "-" if v is None else v for k, v in row.items()})
        except (KeyError, IndexError, ValueError):
            pass
    return ", ".join(f"{k}={'-' if v is None else v}" for k, v in row.items())


def _statements(engine: Engine, fleet: Engine | Connection, target: str, spec: EvidenceSpec, now: datetime,
                section: dict[str, Any]) -> dict[str, Any]:
    """top_statements as the window's delta: the counters now minus the last snapshot at or before the
    window's start (worker.checks.statements); the totals since the last reset where there is none yet."""
    from worker.checks import statements

    try:
        now_rows = statements.read(engine)
        if isinstance(fleet, Connection):
            # the run's own transaction: no second fleet connection while it is open (a transaction
            # pooler's few would run out); the savepoint keeps a failure this section's, not the run's
            with fleet.begin_nested():
                at, before = statements.window(fleet, target, now - spec.window)
        else:
            with fleet.connect() as conn:
                at, before = statements.window(conn, target, now - spec.window)
    except Exception as exc:  # noqa: BLE001 (as any section: told, never the alert's failure)
        section["error"] = mask_text(" ".join(str(getattr(exc, "orig", None) or exc).split())[:300])
        return section
    rows = statements.delta(now_rows, before)
    section["title"] = (f"top statements by time since {at.isoformat(timespec='seconds')} (the {int(spec.window.total_seconds() // 60)} "
                        "min window)" if at else "top statements by time since pg_stat_statements was last reset (no "
                        "snapshot before the window yet)")
    section["columns"] = ["calls", "total_ms", "mean_ms", "rows", "query"]
    return _fill(section, spec, [tuple(r.values()) for r in rows])


def gather_section(engine: Engine, spec: EvidenceSpec, labels: dict[str, str], now: datetime,
                   timeout_ms: int = TIMEOUT_MS, *, fleet: Engine | Connection | None = None,
                   target: str = "") -> dict[str, Any]:
    """One section: {name, title, columns, rows, lines, truncated, error}. `fleet` (and the target's key):
    where top_statements finds the snapshots its window starts from (a Connection: the run's
    transaction, read under a savepoint)."""
    sql, names = psycopg_text(spec.sql)
    params: dict[str, Any] = {n: labels.get(n) for n in names}
    if "now" in names:
        params["now"] = now
    section: dict[str, Any] = {"name": spec.key, "title": COLLECTORS[spec.collector].title if spec.collector else spec.key,
                               "columns": [], "rows": [], "lines": [], "truncated": False, "error": None}
    if spec.collector == "top_statements" and fleet is not None:
        return _statements(engine, fleet, target, spec, now, section)
    try:
        columns, rows = read_only_query(engine, sql, params, statement_timeout_ms=timeout_ms)
    except Exception as exc:  # noqa: BLE001 (evidence is a courtesy: its failure is told, never the alert's)
        section["error"] = mask_text(" ".join(str(getattr(exc, "orig", None) or exc).split())[:300])
        return section
    section["columns"] = columns
    return _fill(section, spec, rows)


def _fill(section: dict[str, Any], spec: EvidenceSpec, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The section's rows (at most spec.rows, cells cut, SECTION_BYTES in all) and their lines."""
    columns = section["columns"]
    kept = [{c: _cell(v, c) for c, v in zip(columns, row, strict=True)} for row in rows[:spec.rows]]
    section["truncated"] = len(rows) > spec.rows
    while kept and len(json.dumps(kept, default=str)) > SECTION_BYTES:
        kept.pop()
        section["truncated"] = True
    section["rows"] = kept
    section["lines"] = [_line(spec, r) for r in kept]
    return section


def gather(engine: Engine, specs: list[EvidenceSpec], labels: dict[str, str], now: datetime, *,
           fleet: Engine | Connection | None = None, target: str = "") -> list[dict[str, Any]]:
    return [gather_section(engine, spec, labels, now, fleet=fleet, target=target) for spec in specs]


def compact(sections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a message carries: per section its title, its first lines and how many there were."""
    out = []
    for s in sections:
        out.append({"name": s["name"], "title": s["title"], "lines": s["lines"][:COMPACT_LINES],
                    "more": max(0, len(s["rows"]) - COMPACT_LINES), "truncated": s["truncated"], "error": s["error"]})
    return out


_INSERT = sa.text("""INSERT INTO fleet.alert_evidence (fingerprint, target, check_name, gathered_at, reason, sections)
                     VALUES (:fp, :target, :check, :at, :reason, CAST(:sections AS jsonb))
                     ON CONFLICT (fingerprint, target, gathered_at)
                     DO UPDATE SET reason = EXCLUDED.reason, sections = EXCLUDED.sections""")
_PRUNE = sa.text("""DELETE FROM fleet.alert_evidence WHERE fingerprint = :fp AND target = :target AND gathered_at NOT IN
                    (SELECT gathered_at FROM fleet.alert_evidence WHERE fingerprint = :fp AND target = :target
                     ORDER BY gathered_at DESC LIMIT :keep)""")
_LATEST = sa.text("""SELECT gathered_at, reason, sections FROM fleet.alert_evidence
                     WHERE fingerprint = :fp AND target = :target ORDER BY gathered_at DESC LIMIT 1""")


def save(conn: Connection, *, fingerprint: str, target: str, check: str, at: datetime, reason: str,
         sections: list[dict[str, Any]]) -> None:
    """Store one gathering (the alert's last KEEP are kept)."""
    conn.execute(_INSERT, {"fp": fingerprint, "target": target, "check": check, "at": at, "reason": reason,
                           "sections": json.dumps(sections, default=str)})
    conn.execute(_PRUNE, {"fp": fingerprint, "target": target, "keep": KEEP})


def latest(conn: Connection, fingerprint: str, target: str = "") -> dict[str, Any] | None:
    """The newest gathering of an alert instance: {gathered_at, reason, sections}, or None."""
    row = conn.execute(_LATEST, {"fp": fingerprint, "target": target}).first()
    if row is None:
        return None
    return {"gathered_at": row.gathered_at.isoformat(), "reason": row.reason, "sections": row.sections}


def gather_again(fleet: Engine, cfg: Any, settings: Any, fingerprint: str, now: datetime) -> None:
    """Gather an alert's evidence again, now (the status page's button): on the database its check
    reads, as the checks' read-only role, with the alert's labels; recorded as `asked`. LookupError
    when the alert or its check's evidence is not there."""
    from worker.fleet.db import create

    with fleet.connect() as conn:
        row = conn.execute(sa.text("SELECT check_name, target, labels FROM fleet.alerts WHERE fingerprint = :fp"),
                           {"fp": fingerprint}).first()
    check = cfg.checks.get(row.check_name) if row else None
    if check is None or not check.evidence:
        raise LookupError(f"no alert {fingerprint[:64]} whose check declares evidence")
    if check.database == "fleet":
        source, owned = fleet, None
    else:
        where = next((t for t in cfg.targets.values() if t.key == row.target), None)
        if where is None:
            raise LookupError(f"the alert's target {row.target!r} is no longer in the config")
        source = owned = create(where.database_url(settings), application_name="opsfleet-evidence", pool_size=1)
    try:
        sections = gather(source, check.evidence, row.labels or {}, now, fleet=fleet, target=row.target)
    finally:
        if owned is not None:
            owned.dispose()
    with fleet.begin() as conn:
        save(conn, fingerprint=fingerprint, target=row.target, check=check.name, at=now, reason="asked",
             sections=sections)
