"""The fixes an alert may propose and a person approves: each kind says what it needs of the alert's
labels, what it would do in words (its dry run, before anyone approves), the guard it re-checks when it
runs (the blocker may have gone), and how it runs, on the target's database as its maintenance role,
never the checks' read-only one.

Kinds: terminate_session (a session idle in a transaction), cancel_blocker (cancel, then terminate,
the sessions blocking one), vacuum_table (VACUUM (VERBOSE, ANALYZE[, FREEZE]) a table), drop_slot
(an inactive replication slot; the approver types its name), run_job (a maintenance job now),
run_backlog (a backlog recovery now: what `remediate` does, as an approved action).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from worker.fleet.fields import IDENT_RE


class GuardFailed(Exception):
    """The condition the action was proposed for no longer holds: refused, recorded, nothing done."""


@dataclass(frozen=True)
class Kind:
    name: str
    needs: tuple[str, ...]  # labels of the alert the action acts on
    describe: Callable[[dict[str, str], dict[str, Any], list[dict[str, Any]]], str]
    run: Callable[[psycopg.Connection, dict[str, str], dict[str, Any]], str] | None = None
    params: dict[str, Any] = field(default_factory=dict)  # name -> default
    confirm: str | None = None  # a label the approver must type (drop_slot: the slot's name)
    enqueues: str | None = None  # run_job / run_backlog: the task it sends instead of running SQL


def _blocks(evidence: list[dict[str, Any]], pid: str) -> int:
    """How many sessions the evidence's blocking tree says `pid` blocks (0 when unknown)."""
    for section in evidence:
        if section.get("name") == "blocking_tree":
            for row in section.get("rows") or []:
                if str(row.get("pid")) == pid:
                    return int(row.get("blocks") or 0)
    return 0


def _minutes(seconds: Any) -> str:
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        return "?"
    return f"{s // 60}m" if s >= 60 else f"{s}s"


def _session_text(labels: dict[str, str], evidence: list[dict[str, Any]], pid: str) -> str:
    parts = [f"app={labels.get('application', '-')}", f"user={labels.get('user', '-')}"]
    blocks = _blocks(evidence, pid)
    if blocks:
        parts.append(f"holds locks blocking {blocks} session{'s' if blocks != 1 else ''}")
    return ", ".join(parts)


# -- terminate_session ------------------------------------------------------------------------------
def _terminate_describe(labels, params, evidence) -> str:
    pid = labels["pid"]
    return (f"terminate pid {pid} ({_session_text(labels, evidence, pid)}, idle in transaction at least "
            f"{_minutes(params['min_idle_s'])})")


def _terminate_run(conn: psycopg.Connection, labels, params) -> str:
    pid = int(labels["pid"])
    row = conn.execute("""SELECT state, EXTRACT(EPOCH FROM (now() - state_change)) AS idle, usename,
                                 COALESCE(NULLIF(application_name, ''), '-') FROM pg_stat_activity WHERE pid = %s""",
                       (pid,)).fetchone()
    if row is None:
        raise GuardFailed(f"pid {pid} is gone: nothing to terminate")
    state, idle, user, app = row
    if not str(state or "").startswith("idle in transaction"):
        raise GuardFailed(f"pid {pid} is {state} now, not idle in a transaction")
    if float(idle) < float(params["min_idle_s"]):
        raise GuardFailed(f"pid {pid} has been idle {int(idle)} s, under the {params['min_idle_s']} s the action asks")
    if labels.get("user") not in (None, user) or labels.get("application") not in (None, app):
        raise GuardFailed(f"pid {pid} is now {user}/{app}, another session than the alert's")
    done = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    if not done:
        raise GuardFailed(f"pg_terminate_backend({pid}) returned false (not permitted to this role?)")
    return f"terminated pid {pid} ({user}, {app}), idle in transaction {int(idle)} s"


# -- cancel_blocker ----------------------------------------------------------------------------------
def _cancel_describe(labels, params, evidence) -> str:
    blockers = [p for p in labels["blocked_by"].split(",") if p]
    who = "; ".join(f"pid {p}" + (f" (holds locks blocking {n})" if (n := _blocks(evidence, p)) else "")
                    for p in blockers)
    return (f"cancel the statement of {who}, which blocks pid {labels['pid']}; terminate it if it still blocks "
            f"after {params['grace_s']} s")


def _blockers_of(conn: psycopg.Connection, pid: int) -> set[int]:
    return {r[0] for r in conn.execute("SELECT unnest(pg_blocking_pids(%s))", (pid,)).fetchall()}


def _cancel_run(conn: psycopg.Connection, labels, params) -> str:
    waiter = int(labels["pid"])
    named = {int(p) for p in labels["blocked_by"].split(",") if p.strip().isdigit()}
    now_blocking = _blockers_of(conn, waiter) & named
    if not now_blocking:
        raise GuardFailed(f"pid {waiter} is no longer blocked by {', '.join(map(str, sorted(named)))}")
    out = []
    for pid in sorted(now_blocking):
        conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
        out.append(f"cancelled pid {pid}")
    deadline = time.monotonic() + float(params["grace_s"])
    while time.monotonic() < deadline and _blockers_of(conn, waiter) & now_blocking:
        time.sleep(0.2)
    for pid in sorted(_blockers_of(conn, waiter) & now_blocking):
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        out.append(f"terminated pid {pid} (still blocking after {params['grace_s']} s)")
    return "; ".join(out)


# -- vacuum_table ------------------------------------------------------------------------------------
def _table_ident(name: str) -> sql.Composed:
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(IDENT_RE.match(p) for p in parts):
        raise GuardFailed(f"table {name!r} is not a plain [schema.]name: not vacuumed")
    return sql.SQL(".").join(sql.Identifier(p) for p in parts)


def _vacuum_options(params) -> list[str]:
    return ["VERBOSE", "ANALYZE"] + (["FREEZE"] if params["freeze"] else [])


def _vacuum_describe(labels, params, evidence) -> str:
    return f"VACUUM ({', '.join(_vacuum_options(params))}) {labels['table']}"


def _vacuum_run(conn: psycopg.Connection, labels, params) -> str:
    ident = _table_ident(labels["table"])
    if conn.execute("SELECT to_regclass(%s)", (labels["table"],)).fetchone()[0] is None:
        raise GuardFailed(f"table {labels['table']} does not exist any more")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    started = time.monotonic()
    conn.execute(sql.SQL("VACUUM ({}) {}").format(sql.SQL(", ").join(map(sql.SQL, _vacuum_options(params))), ident))
    summary = next((n for n in notices if "removed" in n or "tuples" in n), notices[-1] if notices else "")
    return f"VACUUM ({', '.join(_vacuum_options(params))}) {labels['table']} in {time.monotonic() - started:.1f} s: {summary}"[:2000]


# -- drop_slot ---------------------------------------------------------------------------------------
def _drop_describe(labels, params, evidence) -> str:
    return f"drop the inactive replication slot {labels['slot']} (type its name to approve)"


def _drop_run(conn: psycopg.Connection, labels, params) -> str:
    row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (labels["slot"],)).fetchone()
    if row is None:
        raise GuardFailed(f"slot {labels['slot']} is gone")
    if row[0]:
        raise GuardFailed(f"slot {labels['slot']} is active again: a consumer came back")
    conn.execute("SELECT pg_drop_replication_slot(%s)", (labels["slot"],))
    return f"dropped replication slot {labels['slot']}"


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("terminate_session", ("pid",), _terminate_describe, _terminate_run, {"min_idle_s": 300}),
    Kind("cancel_blocker", ("pid", "blocked_by"), _cancel_describe, _cancel_run, {"grace_s": 5}),
    Kind("vacuum_table", ("table",), _vacuum_describe, _vacuum_run, {"freeze": False}),
    Kind("drop_slot", ("slot",), _drop_describe, _drop_run, {}, confirm="slot"),
    Kind("run_job", (), lambda labels, params, ev: f"run maintenance job {params['job']} now",
         params={"job": None}, enqueues="maintenance.run"),
    Kind("run_backlog", (), lambda labels, params, ev: f"run {params['task']} now ({params['kwargs'] or 'defaults'})",
         params={"task": "backlog.reprocess_confirmations", "kwargs": {}}, enqueues="backlog"),
)}
