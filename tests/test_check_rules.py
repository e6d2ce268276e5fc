"""Every catalog check against crafted rows (issue 3, Must show: "one set of rows that must fire it and one
that must not, edges included: exactly at the threshold, no data, the minimum-sample rules").

tests/test_check_catalog.py runs the catalog over the seeded sample application; this module instead
writes a handful of rows per case into empty tables and evaluates one check at a fixed NOW with
worker.checks.collect.collect_sql, the verdict coming from the check's own condition. Per check there is
at least one FIRE case and one case that must not fire (QUIET: evaluated, condition false; NO DATA: no
row or a NULL value, which the engine treats by the check's no_data policy), plus the edges its rule
has: a count exactly at the threshold, a row exactly at the window's edge (NOW - window, and one
second inside or outside), minimum samples, the rows the rule must ignore.

The pg_stat-based checks (wedsync.yaml) read the live server, not tables: they have dedicated tests
below (see DEDICATED). The checks that cannot be made to fire here are in NOT_CRAFTABLE with the reason.
`test_check_has_crafted_cases` is parametrized over the enabled SQL checks loaded from config/, so a
new check without cases fails it.

A case that shows a bug in a check's SQL (or a function it calls) is marked xfail(strict=True) with the
reason; the fix belongs in the YAML or the schema, not here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.checks.collect import collect_sql
from worker.checks.state import is_active
from worker.config import load_config
from worker.fleet.db import create

REPO = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO / "config")
SQL_CHECKS = sorted(n for n, c in CONFIG.checks.items() if c.kind == "sql" and c.enabled)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

DOUBLE_BOOKING = 'duplicate key value violates unique constraint "reservation_seats_active_seat_key"'
CLEANUP_JOB = "cleanup_expired_seat_reservations"  # */5 * * * *, timeout 30 s
PURGE_JOB = "purge_whatsapp_logs"  # 15 4 * * * (daily), timeout 30 min
W1, W2 = "registration-payment-webhook", "generate-confirmation"

# Checks without a crafted FIRE case, and why (they still have cases or a dedicated test that must not fire).
NOT_CRAFTABLE = {
    "database_size": "fires above 8 GB: the test database is a few MB (the query and its unit are checked)",
    "webhook_logs_size_high": "fires above 10 GB of webhook_logs (the query and its unit are checked)",
    "database_up": "`SELECT 1` with `< 1` never holds by design; a down database is an error run, which "
                   "database_down (crafted below) pages on",
    "db_connections_high": "fires above 70% of max_connections, server-wide: holding ~70 connections on a "
                           "shared test server would starve concurrent tests; the count is checked instead",
    "db_slow_queries": "needs pg_stat_statements in shared_preload_libraries (a server restart); crafted only "
                       "when the test server has it loaded, else its no-data paths are checked",
    "db_query_time_avg_high": "as db_slow_queries",
}

# pg_stat-based checks: dedicated tests (the live statistics are not rows one can insert)
DEDICATED = {
    "db_dead_tuples_high": "test_db_dead_tuples_high",
    "db_unused_indexes": "test_db_unused_indexes",
    "db_cache_hit_ratio_low": "test_db_cache_hit_ratio_low",
    "db_long_running_queries": "test_db_long_running_queries",
    "db_connections_high": "test_db_connections_high_counts_client_backends",
    "db_slow_queries": "test_pg_stat_statements_checks",
    "db_query_time_avg_high": "test_pg_stat_statements_checks",
}


# -- expectations ----------------------------------------------------------------------------------
Labels = dict[str, str]


@dataclass(frozen=True)
class Fire:
    """The condition holds: for the one instance (value, if given), or exactly for the `labels` instances."""

    value: float | None = None
    labels: list[Labels] | None = None
    instances: list[Labels] | None = None  # every instance the query returns (firing or not)


@dataclass(frozen=True)
class Quiet:
    """Evaluated (a non-NULL value) and the condition holds for no instance."""

    value: float | None = None
    instances: list[Labels] | None = None


@dataclass(frozen=True)
class NoData:
    """No row, or a NULL value: no data, which the check's no_data policy turns into "not alerting"."""

    policy: str = "ok"


@dataclass(frozen=True)
class Case:
    id: str
    rows: Callable[[Connection], Any] | None
    expect: Fire | Quiet | NoData
    now: datetime = NOW
    xfail: str | None = None


CASES: dict[str, list[Case]] = {}


def cases(name: str, *items: Case) -> None:
    assert name not in CASES, f"cases for {name} defined twice"
    CASES[name] = list(items)


# -- crafted rows: one helper per table --------------------------------------------------------------
_TYPES: dict[str, dict[str, str]] = {}  # table -> column -> SQL type, read from the catalog at setup
_DIRTY: set[str] = set()
_SEQ = itertools.count(1)


def _insert(c: Connection, table: str, n: int = 1, returning: str | None = None, **cols: Any) -> Any:
    """INSERT n rows (generate_series g); a str value containing {g} gets the row number substituted."""
    types = _TYPES[table]
    exprs, params = [], {"n": n}
    for i, (col, v) in enumerate(cols.items()):
        if isinstance(v, dict):
            v = json.dumps(v)
        if isinstance(v, str) and "{g}" in v:
            exprs.append(f"CAST(replace(:p{i}, '{{g}}', g::text) AS {types[col]})")
        else:
            exprs.append(f"CAST(:p{i} AS {types[col]})")
        params[f"p{i}"] = v
    sql = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM generate_series(1, :n) AS g"  # noqa: S608
    if returning:
        sql += f" RETURNING {returning}"
    _DIRTY.add(table)
    result = c.execute(sa.text(sql), params)
    return result.scalars().first() if returning else None


def _uniq(prefix: str) -> str:
    return f"{prefix}{next(_SEQ)}-{{g}}"


# seed 000
def insert_registration(c, updated_at, *, created_at=None, status="completed", payment_status="completed",
                        generated_at=None, n=1):
    """A registration; confirmed (unique confirmation_number) when generated_at is given."""
    _insert(c, "registrations", n, customer_id="{g}", event_id=1, email="user{g}@example.com", full_name="Test User",
            amount_in_cents=5000, status=status, payment_status=payment_status,
            confirmation_number=_uniq("CN") if generated_at else None, confirmation_generated_at=generated_at,
            created_at=created_at or updated_at - MIN, updated_at=updated_at)


def backlog(c, updated_at, n=1, created_at=None):
    """Paid, completed, no confirmation number: the seed's "Pending Confirmations"."""
    insert_registration(c, updated_at, created_at=created_at, n=n)


def confirmation(c, generated_at, seconds=1.0, n=1, created_at=None):
    """A paid registration confirmed `seconds` after it completed (updated_at)."""
    insert_registration(c, generated_at - timedelta(seconds=seconds), generated_at=generated_at,
                        created_at=created_at, n=n)


def unpaid(c, updated_at, n=1, created_at=None):
    insert_registration(c, updated_at, created_at=created_at, status="pending", payment_status="pending", n=n)


def _parent_registration(c) -> int:
    """An inert registration (cancelled, 400 days old) for confirmation_emails' foreign key."""
    return _insert(c, "registrations", returning="id", customer_id=0, event_id=0, email="parent@example.com",
                   full_name="Parent", amount_in_cents=0, status="cancelled", payment_status="refunded",
                   created_at=NOW - 400 * DAY, updated_at=NOW - 400 * DAY)


def insert_email(c, sent_at, status="sent", *, created_at=None, n=1):
    _insert(c, "confirmation_emails", n, registration_id=_parent_registration(c), recipient="user{g}@example.com",
            subject="Your confirmation", status=status, sent_at=sent_at,
            created_at=created_at or (sent_at - SEC if sent_at else NOW - MIN))


def insert_webhook_log(c, at, webhook_name=W1, status_code=200, n=1):
    _insert(c, "webhook_logs", n, webhook_name=webhook_name, status_code=status_code, duration_ms=120, created_at=at)


# seed 001
def insert_error_log(c, at, severity="high", n=1):
    _insert(c, "error_logs", n, severity=severity, category="api", message="boom", occurred_at=at)


def insert_metric(c, at, duration_ms, metric_type="edge_function", n=1):
    _insert(c, "performance_metrics", n, metric_type=metric_type, metric_name="fn", duration_ms=duration_ms,
            recorded_at=at)


def insert_sms(c, at, status="delivered", n=1):
    _insert(c, "sms_delivery_log", n, recipient_phone="+15550000{g}", message_type="reminder", delivery_status=status,
            created_at=at)


def insert_user_session(c, last_active_at, n=1):
    _insert(c, "user_sessions", n, user_id="{g}", created_at=last_active_at - HOUR, last_active_at=last_active_at)


def insert_backup(c, started_at, status="succeeded", *, completed_at=None, size_bytes=1_000_000):
    _insert(c, "backup_log", status=status, started_at=started_at,
            completed_at=completed_at or (started_at + 10 * MIN if status != "running" else None),
            size_bytes=size_bytes)


# seed 003
def insert_whatsapp(c, created_at, status="sent", *, sent_at=None, n=1):
    if status == "sent" and sent_at is None:
        sent_at = created_at + 5 * SEC
    _insert(c, "whatsapp_notifications", n, phone_number="+34600000{g}", message_type="order_confirmation",
            status=status, created_at=created_at, sent_at=sent_at)


def insert_whatsapp_error(c, at, error_type="send_failed", n=1):
    _insert(c, "whatsapp_error_logs", n, error_type=error_type, error_message="failed", created_at=at)


def insert_whatsapp_session(c, session_id, updated_at, *, is_active=True, connection_state="connected"):
    _insert(c, "whatsapp_sessions", session_id=session_id, phone_number="+34600000000", is_active=is_active,
            connection_state=connection_state, created_at=updated_at - DAY, updated_at=updated_at)


# seed 004
def _show(c) -> int:
    return _insert(c, "shows", returning="id", title="Show", venue="Hall", starts_at=NOW + 30 * DAY)


def insert_audit(c, at, event_type, *, reservation_id=None, error_message=None, n=1):
    _insert(c, "seat_reservation_audit_log", n, reservation_id=reservation_id, show_id=1, session_id="s{g}",
            event_type=event_type, error_message=error_message, created_at=at)


def hold(c, reservation_id, created_at, ended_at, end_event="completed"):
    """A reservation's 'created' event and its 'completed' (or 'expired') one."""
    insert_audit(c, created_at, "created", reservation_id=reservation_id)
    insert_audit(c, ended_at, end_event, reservation_id=reservation_id)


def insert_order(c, at, status="paid", n=1):
    _insert(c, "ticket_orders", n, show_id=_show(c), customer_email="buyer{g}@example.com", status=status,
            total_amount_in_cents=4000, created_at=at, updated_at=at)


def insert_reservation(c, expires_at, *, is_active=True, n=1):
    _insert(c, "seat_reservations", n, show_id=_show(c), session_id="s{g}", is_active=is_active,
            expires_at=expires_at, created_at=expires_at - 10 * MIN, updated_at=expires_at - 10 * MIN)


def insert_cleanup_run(c, start_time, status="succeeded", seconds=0.5):
    _insert(c, "reservation_cleanup_runs", start_time=start_time, status=status, expired_count=0,
            end_time=None if status == "running" else start_time + timedelta(seconds=seconds))


# fleet
def insert_check_run(c, check_name, at, status="ok"):
    _insert(c, "fleet.check_runs", check_name=check_name, slot=at, started_at=at,
            finished_at=None if status == "running" else at + SEC, duration_ms=5, status=status,
            error="relation \"gone\" does not exist" if status == "error" else None)


def check_runs(c, check_name, *statuses, newest=NOW - MIN):
    """Runs one minute apart, the last one at `newest`; statuses oldest first."""
    for i, status in enumerate(reversed(statuses)):
        insert_check_run(c, check_name, newest - i * MIN, status)


def _job_params(job: str) -> dict:
    if job in CONFIG.maintenance:
        return CONFIG.maintenance[job].model_dump(mode="json", by_alias=True)  # as worker.maintenance records it
    return {"schedule": "1m", "timeout": 30.0}


def insert_job_run(c, job, started_at, status="ok", seconds=0.4):
    params = _job_params(job)
    _insert(c, "fleet.job_runs", job=job, kind=params.get("kind", "sql"), started_at=started_at, status=status,
            finished_at=None if status == "running" else started_at + timedelta(seconds=seconds), params=params)


def insert_notification(c, status, *, next_attempt_at=NOW - HOUR, created_at=None, lease_until=None, dead_at=None):
    _insert(c, "fleet.notifications", channel="email", check_name="crafted", transition="firing", payload={},
            dedup_key=f"crafted:{next(_SEQ)}", status=status, attempts=1, next_attempt_at=next_attempt_at,
            created_at=created_at or next_attempt_at - MIN, lease_until=lease_until, dead_at=dead_at)


# -- the cases, check by check ---------------------------------------------------------------------
# seed 000 ------------------------------------------------------------------------------------------
cases(
    "no_confirmations_generated",
    Case("completed-nothing-generated", lambda c: backlog(c, NOW - MIN), Fire(1)),
    Case("completed-and-generated", lambda c: (backlog(c, NOW - MIN), confirmation(c, NOW - 2 * MIN)), Quiet(0)),
    Case("no-rows", None, Quiet(0)),
    Case("completed-exactly-5m-ago-is-outside", lambda c: backlog(c, NOW - 5 * MIN), Quiet(0)),
    Case("completed-5m-minus-1s-ago-counts", lambda c: backlog(c, NOW - 5 * MIN + SEC), Fire(1)),
    Case("generated-exactly-5m-ago-no-longer-counts",
         lambda c: (backlog(c, NOW - MIN), confirmation(c, NOW - 5 * MIN)), Fire(1)),
    Case("generated-5m-minus-1s-ago-counts",
         lambda c: (backlog(c, NOW - MIN), confirmation(c, NOW - 5 * MIN + SEC)), Quiet(0)),
    Case("completion-after-now-not-seen", lambda c: backlog(c, NOW + SEC), Quiet(0)),
    Case("unpaid-does-not-complete", lambda c: unpaid(c, NOW - MIN), Quiet(0)),
)

cases(
    "high_confirmation_error_rate",
    # the seed's rule sums errors and calls over every function: 2 of 20 is 10%, whichever function
    Case("two-errors-in-20-calls-across-functions-is-10pct",
         lambda c: (insert_webhook_log(c, NOW - MIN, W1, 200, n=8), insert_webhook_log(c, NOW - MIN, W1, 500, n=2),
                    insert_webhook_log(c, NOW - MIN, W2, 200, n=10)), Quiet(10, instances=[{}])),
    # what paged before: 2 of 3 on one function and 1 of 1 on another, among 200 healthy calls: 1.47%
    Case("a-few-failing-calls-among-200-healthy-ones-page-nobody",
         lambda c: (insert_webhook_log(c, NOW - MIN, "registration-payment-webhook", 200, n=200),
                    insert_webhook_log(c, NOW - MIN, "stripe-webhook", 500, n=2),
                    insert_webhook_log(c, NOW - MIN, "stripe-webhook", 200, n=1),
                    insert_webhook_log(c, NOW - MIN, "generate-confirmation", 500, n=1)), Quiet(1.47, instances=[{}])),
    Case("exactly-10pct", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200, n=9),
                                     insert_webhook_log(c, NOW - MIN, status_code=500)), Quiet(10)),
    Case("11pct", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200, n=8),
                             insert_webhook_log(c, NOW - MIN, status_code=500)), Fire(11.11)),
    Case("errors-exactly-5m-ago-are-outside", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200),
                                                         insert_webhook_log(c, NOW - 5 * MIN, status_code=500, n=5)),
         Quiet(0)),
    Case("error-5m-minus-1s-ago-counts", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200),
                                                    insert_webhook_log(c, NOW - 5 * MIN + SEC, status_code=502)),
         Fire(50)),
    Case("any-non-200-is-an-error", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200),
                                               insert_webhook_log(c, NOW - MIN, status_code=201)), Fire(50)),
    Case("10.004pct-exceeds-10pct", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200, n=18001),
                                               insert_webhook_log(c, NOW - MIN, status_code=500, n=2001)), Fire()),
    Case("no-calls-in-window", lambda c: insert_webhook_log(c, NOW - 6 * MIN, status_code=500), NoData()),
)

cases(
    "webhook_error_rate_high",
    Case("exactly-5pct", lambda c: (insert_webhook_log(c, NOW - 30 * MIN, status_code=200, n=19),
                                    insert_webhook_log(c, NOW - 30 * MIN, status_code=500)), Quiet(5)),
    Case("9.52pct-on-one-webhook",
         lambda c: (insert_webhook_log(c, NOW - 30 * MIN, W1, 200, n=19), insert_webhook_log(c, NOW - MIN, W1, 500, n=2),
                    insert_webhook_log(c, NOW - 30 * MIN, W2, 200, n=20), insert_webhook_log(c, NOW - MIN, W2, 500)),
         Fire(9.52, labels=[{"webhook_name": W1}], instances=[{"webhook_name": W1}, {"webhook_name": W2}])),
    # below 20 calls in the hour a function is not judged: 1 error in 1 call is no 100% alert
    Case("a-function-called-under-20-times-is-not-judged",
         lambda c: (insert_webhook_log(c, NOW - MIN, W1, 500, n=1), insert_webhook_log(c, NOW - MIN, W2, 500, n=19)),
         NoData()),
    Case("error-exactly-1h-ago-is-outside", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200, n=20),
                                                       insert_webhook_log(c, NOW - HOUR, status_code=500)), Quiet(0)),
    Case("error-1h-minus-1s-ago-counts", lambda c: (insert_webhook_log(c, NOW - MIN, status_code=200, n=18),
                                                    insert_webhook_log(c, NOW - HOUR + SEC, status_code=500, n=2)),
         Fire(10)),
    Case("no-calls", None, NoData()),
)

cases(
    "confirmation_backlog",
    Case("exactly-20-pending", lambda c: backlog(c, NOW - 20 * MIN, n=20), Quiet(20)),
    Case("21-pending", lambda c: backlog(c, NOW - 20 * MIN, n=21), Fire(21)),
    Case("only-paid-completed-unconfirmed-count",
         lambda c: (backlog(c, NOW - 20 * MIN, n=20), unpaid(c, NOW - 20 * MIN, n=5),
                    insert_registration(c, NOW - 20 * MIN, status="pending", n=5),
                    confirmation(c, NOW - 20 * MIN, n=5)), Quiet(20)),
    Case("updated-after-now-not-seen", lambda c: (backlog(c, NOW - MIN, n=20), backlog(c, NOW + SEC)), Quiet(20)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "confirmation_backlog_size",
    Case("exactly-10-pending", lambda c: backlog(c, NOW - MIN, n=10), Quiet(10)),
    Case("11-pending", lambda c: backlog(c, NOW - MIN, n=11), Fire(11)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "confirmation_backlog_age",
    Case("oldest-exactly-30m", lambda c: (backlog(c, NOW - 30 * MIN), backlog(c, NOW - MIN)), Quiet(30)),
    Case("oldest-30m-6s", lambda c: (backlog(c, NOW - 30 * MIN - 6 * SEC), backlog(c, NOW - MIN)), Fire(30.1)),
    Case("confirmed-rows-are-not-backlog", lambda c: (confirmation(c, NOW - 2 * HOUR), backlog(c, NOW - 5 * MIN)),
         Quiet(5)),
    Case("no-backlog", lambda c: confirmation(c, NOW - 2 * HOUR), NoData()),
)

cases(
    "slow_confirmation_processing",
    Case("p95-exactly-5s", lambda c: confirmation(c, NOW - 10 * MIN, 5.0, n=20), Quiet(5)),
    Case("all-6s", lambda c: confirmation(c, NOW - 10 * MIN, 6.0, n=20), Fire(6)),
    Case("one-slow-of-20-interpolates-over-5s",
         lambda c: (confirmation(c, NOW - 10 * MIN, 1.0, n=19), confirmation(c, NOW - 10 * MIN, 100.0)), Fire(5.95)),
    Case("one-slow-of-21-stays-under",
         lambda c: (confirmation(c, NOW - 10 * MIN, 1.0, n=20), confirmation(c, NOW - 10 * MIN, 100.0)), Quiet(1)),
    Case("slow-ones-generated-exactly-1h-ago-are-outside",
         lambda c: (confirmation(c, NOW - HOUR, 100.0, n=20), confirmation(c, NOW - MIN, 1.0)), Quiet(1)),
    Case("p95-5.004s-exceeds-5s", lambda c: confirmation(c, NOW - 10 * MIN, 5.004, n=20), Fire()),
    Case("no-confirmations", lambda c: backlog(c, NOW - MIN), NoData()),
)


def paid(c, created_at, *, confirmed, n=1):
    """Paid, completed registrations created at `created_at`, with or without a confirmation number."""
    if confirmed:
        confirmation(c, created_at + 2 * SEC, created_at=created_at, n=n)
    else:
        backlog(c, created_at + SEC, created_at=created_at, n=n)


cases(
    "confirmation_rate_low",
    Case("exactly-95pct", lambda c: (paid(c, NOW - 10 * MIN, confirmed=True, n=19),
                                     paid(c, NOW - 10 * MIN, confirmed=False)), Quiet(95)),
    Case("94.74pct", lambda c: (paid(c, NOW - 10 * MIN, confirmed=True, n=18),
                                paid(c, NOW - 10 * MIN, confirmed=False)), Fire(94.74)),
    Case("unpaid-registrations-not-counted", lambda c: (paid(c, NOW - 10 * MIN, confirmed=True, n=19),
                                                        paid(c, NOW - 10 * MIN, confirmed=False),
                                                        unpaid(c, NOW - 9 * MIN, created_at=NOW - 10 * MIN, n=5)),
         Quiet(95)),
    Case("unconfirmed-created-exactly-1h-ago-is-outside",
         lambda c: (paid(c, NOW - 10 * MIN, confirmed=True, n=18), paid(c, NOW - HOUR, confirmed=False)), Quiet(100)),
    Case("unconfirmed-created-1h-minus-1s-ago-counts",
         lambda c: (paid(c, NOW - 10 * MIN, confirmed=True, n=18), paid(c, NOW - HOUR + SEC, confirmed=False)),
         Fire(94.74)),
    Case("no-registrations", lambda c: unpaid(c, NOW - MIN), NoData()),
)

cases(
    "email_delivery_rate_low",
    Case("exactly-95pct", lambda c: (insert_email(c, NOW - 10 * MIN, n=19), insert_email(c, NOW - 10 * MIN, "failed")),
         Quiet(95)),
    Case("94.74pct", lambda c: (insert_email(c, NOW - 10 * MIN, n=18), insert_email(c, NOW - 10 * MIN, "bounced")),
         Fire(94.74)),
    Case("failure-sent-exactly-1h-ago-is-outside",
         lambda c: (insert_email(c, NOW - 10 * MIN, n=18), insert_email(c, NOW - HOUR, "failed")), Quiet(100)),
    Case("unsent-emails-not-counted", lambda c: (insert_email(c, NOW - 10 * MIN, n=19),
                                                 insert_email(c, NOW - 10 * MIN, "failed"),
                                                 insert_email(c, None, "pending", n=5)), Quiet(95)),
    Case("no-emails", None, NoData()),
)

cases(
    "confirmation_processing_time_high",
    Case("average-exactly-5s", lambda c: (confirmation(c, NOW - 10 * MIN, 4.0), confirmation(c, NOW - 10 * MIN, 6.0)),
         Quiet(5)),
    Case("average-5.01s", lambda c: (confirmation(c, NOW - 10 * MIN, 4.0), confirmation(c, NOW - 10 * MIN, 6.02)),
         Fire(5.01)),
    Case("slow-one-exactly-1h-ago-is-outside",
         lambda c: (confirmation(c, NOW - HOUR, 20.0), confirmation(c, NOW - MIN, 1.0)), Quiet(1)),
    Case("no-confirmations", None, NoData()),
)

cases(
    "registrations_per_hour_high",
    Case("800-and-one-exactly-1h-ago",
         lambda c: (unpaid(c, NOW - 30 * MIN, n=800), unpaid(c, NOW - HOUR + MIN, created_at=NOW - HOUR)),
         Quiet(800)),
    Case("801", lambda c: unpaid(c, NOW - 30 * MIN, n=801), Fire(801)),
)

cases(
    "email_sends_per_day_high",
    Case("8000-and-one-exactly-24h-ago",
         lambda c: (insert_email(c, NOW - 2 * HOUR, n=8000), insert_email(c, NOW - DAY)), Quiet(8000)),
    Case("8001", lambda c: insert_email(c, NOW - 2 * HOUR, n=8001), Fire(8001)),
)

cases(
    "webhook_logs_size_high",
    Case("small-table-is-far-under-10gb", lambda c: insert_webhook_log(c, NOW - MIN, n=100), Quiet(0)),
)

# seed 001 ------------------------------------------------------------------------------------------
cases(
    "error_rate_threshold",
    Case("exactly-5", lambda c: insert_error_log(c, NOW - 10 * MIN, n=5), Quiet(5)),
    Case("6", lambda c: (insert_error_log(c, NOW - 10 * MIN, n=3),
                         insert_error_log(c, NOW - 10 * MIN, "critical", n=3)), Fire(6)),
    Case("low-and-medium-do-not-count",
         lambda c: (insert_error_log(c, NOW - 10 * MIN, n=5), insert_error_log(c, NOW - 10 * MIN, "medium", n=10),
                    insert_error_log(c, NOW - 10 * MIN, "low", n=10)), Quiet(5)),
    Case("window-includes-exactly-1h-ago",
         lambda c: (insert_error_log(c, NOW - 10 * MIN, n=5), insert_error_log(c, NOW - HOUR, "critical")), Fire(6)),
    Case("1h-plus-1s-ago-is-outside",
         lambda c: (insert_error_log(c, NOW - 10 * MIN, n=5), insert_error_log(c, NOW - HOUR - SEC)), Quiet(5)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "performance_degradation",
    Case("average-exactly-3000", lambda c: (insert_metric(c, NOW - MIN, 2000), insert_metric(c, NOW - MIN, 4000)),
         Quiet(3000)),
    Case("average-3001", lambda c: (insert_metric(c, NOW - MIN, 2000), insert_metric(c, NOW - MIN, 4002)),
         Fire(3001)),
    Case("average-3000.33-exceeds-3000", lambda c: (insert_metric(c, NOW - MIN, 3000, n=2),
                                                    insert_metric(c, NOW - MIN, 3001)), Fire()),
    Case("page-loads-do-not-count",
         lambda c: (insert_metric(c, NOW - MIN, 1000), insert_metric(c, NOW - MIN, 10000, "page_load", n=3)),
         Quiet(1000)),
    Case("window-includes-exactly-1h-ago", lambda c: insert_metric(c, NOW - HOUR, 4000), Fire(4000)),
    Case("1h-plus-1s-ago-is-outside",
         lambda c: (insert_metric(c, NOW - HOUR - SEC, 9000), insert_metric(c, NOW - MIN, 1000)), Quiet(1000)),
    Case("no-edge-function-calls", lambda c: insert_metric(c, NOW - MIN, 9000, "page_load"), NoData()),
)

cases(
    "performance_degradation_severe",
    Case("exactly-10000", lambda c: insert_metric(c, NOW - MIN, 10000, n=2), Quiet(10000)),
    Case("10001", lambda c: (insert_metric(c, NOW - MIN, 10000), insert_metric(c, NOW - MIN, 10002)), Fire(10001)),
    Case("no-edge-function-calls", lambda c: insert_metric(c, NOW - MIN, 20000, "page_load"), NoData()),
)

cases(
    "page_load_slow",
    Case("exactly-5000", lambda c: insert_metric(c, NOW - MIN, 5000, "page_load"), Quiet(5000)),
    Case("5001", lambda c: insert_metric(c, NOW - MIN, 5001, "page_load"), Fire(5001)),
    Case("edge-functions-do-not-count",
         lambda c: (insert_metric(c, NOW - MIN, 1000, "page_load"), insert_metric(c, NOW - MIN, 20000)), Quiet(1000)),
    Case("no-page-loads", lambda c: insert_metric(c, NOW - MIN, 20000), NoData()),
)

cases(
    "sms_delivery_failures",
    Case("exactly-10pct", lambda c: (insert_sms(c, NOW - MIN, "failed"), insert_sms(c, NOW - MIN, n=9)), Quiet(10)),
    Case("11.11pct", lambda c: (insert_sms(c, NOW - MIN, "failed"), insert_sms(c, NOW - MIN, n=8)), Fire(11.11)),
    Case("10.0045pct-exceeds-10pct", lambda c: (insert_sms(c, NOW - MIN, "failed", n=2001),
                                                insert_sms(c, NOW - MIN, n=18000)), Fire()),
    Case("only-failed-is-a-failure",
         lambda c: (insert_sms(c, NOW - MIN, "failed"), insert_sms(c, NOW - MIN, "undelivered", n=4),
                    insert_sms(c, NOW - MIN, n=5)), Quiet(10)),
    Case("window-includes-exactly-1h-ago",
         lambda c: (insert_sms(c, NOW - HOUR, "failed"), insert_sms(c, NOW - MIN, n=8)), Fire(11.11)),
    Case("no-sms-skips-the-rule", lambda c: insert_sms(c, NOW - HOUR - SEC, "failed"), NoData()),
)

cases(
    "sms_failed_per_hour",
    Case("exactly-10", lambda c: (insert_sms(c, NOW - MIN, "failed", n=10), insert_sms(c, NOW - MIN, n=50)),
         Quiet(10)),
    Case("11", lambda c: insert_sms(c, NOW - MIN, "failed", n=11), Fire(11)),
    Case("1h-plus-1s-ago-is-outside",
         lambda c: (insert_sms(c, NOW - MIN, "failed", n=10), insert_sms(c, NOW - HOUR - SEC, "failed")), Quiet(10)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "failed_emails_per_hour",
    Case("exactly-20", lambda c: (insert_email(c, NOW - MIN, "failed", n=10), insert_email(c, NOW - MIN, "bounced", n=10),
                                  insert_email(c, NOW - MIN, n=30)), Quiet(20)),
    Case("21", lambda c: (insert_email(c, NOW - MIN, "failed", n=10), insert_email(c, NOW - MIN, "bounced", n=11)),
         Fire(21)),
    Case("window-includes-exactly-1h-ago",
         lambda c: (insert_email(c, NOW - MIN, "failed", n=20),
                    insert_email(c, NOW - HOUR + SEC, "failed", created_at=NOW - HOUR)), Fire(21)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "error_logs_per_hour_high",
    Case("exactly-20", lambda c: insert_error_log(c, NOW - MIN, "low", n=20), Quiet(20)),
    Case("21", lambda c: (insert_error_log(c, NOW - MIN, "low", n=20), insert_error_log(c, NOW - MIN, "critical")),
         Fire(21)),
    Case("1h-plus-1s-ago-is-outside",
         lambda c: (insert_error_log(c, NOW - MIN, "low", n=20), insert_error_log(c, NOW - HOUR - SEC, "low")),
         Quiet(20)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "database_size",
    Case("test-database-is-far-under-8gb", None, Quiet()),  # its unit: test_size_checks_report_gigabytes
)

cases(
    "function_calls_per_day_high",
    Case("400000-and-one-exactly-24h-ago-and-a-page-load",
         lambda c: (insert_metric(c, NOW - HOUR, 100, n=400_000), insert_metric(c, NOW - DAY, 100),
                    insert_metric(c, NOW - HOUR, 100, "page_load")), Quiet(400_000)),
    Case("400001", lambda c: insert_metric(c, NOW - HOUR, 100, n=400_001), Fire(400_001)),
)

cases(
    "concurrent_users_high",
    Case("exactly-100", lambda c: insert_user_session(c, NOW - 5 * MIN, n=100), Quiet(100)),
    Case("101", lambda c: insert_user_session(c, NOW - 5 * MIN, n=101), Fire(101)),
    Case("window-includes-exactly-15m-ago",
         lambda c: (insert_user_session(c, NOW - 5 * MIN, n=100), insert_user_session(c, NOW - 15 * MIN)), Fire(101)),
    Case("15m-plus-1s-ago-is-not-active",
         lambda c: (insert_user_session(c, NOW - 5 * MIN, n=100), insert_user_session(c, NOW - 15 * MIN - SEC)),
         Quiet(100)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "backup_verification_failed",
    Case("no-backup-recorded", None, Fire(1)),
    Case("fresh-full-backup", lambda c: insert_backup(c, NOW - 3 * HOUR), Quiet(0)),
    Case("latest-failed", lambda c: (insert_backup(c, NOW - 27 * HOUR), insert_backup(c, NOW - 3 * HOUR, "failed")),
         Fire(1)),
    Case("completed-exactly-26h-ago", lambda c: insert_backup(c, NOW - 27 * HOUR, completed_at=NOW - 26 * HOUR),
         Quiet(0)),
    Case("completed-26h-plus-1s-ago",
         lambda c: insert_backup(c, NOW - 27 * HOUR, completed_at=NOW - 26 * HOUR - SEC), Fire(1)),
    Case("empty-backup", lambda c: insert_backup(c, NOW - 3 * HOUR, size_bytes=0), Fire(1)),
    Case("exactly-half-the-previous-size",
         lambda c: (insert_backup(c, NOW - 27 * HOUR, size_bytes=1000), insert_backup(c, NOW - 3 * HOUR, size_bytes=500)),
         Quiet(0)),
    Case("under-half-the-previous-size",
         lambda c: (insert_backup(c, NOW - 27 * HOUR, size_bytes=1000), insert_backup(c, NOW - 3 * HOUR, size_bytes=499)),
         Fire(1)),
    Case("backup-started-after-now-not-seen",
         lambda c: (insert_backup(c, NOW - 3 * HOUR), insert_backup(c, NOW + HOUR, "failed")), Quiet(0)),
)

cases(
    "database_up",
    Case("answers", None, Quiet(1)),
)

# seed 003 ------------------------------------------------------------------------------------------
cases(
    "whatsapp_delivery_rate_low",
    Case("10-messages-all-failed-are-too-few", lambda c: insert_whatsapp(c, NOW - 10 * MIN, "failed", n=10), NoData()),
    Case("11-messages-9-sent", lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=9),
                                          insert_whatsapp(c, NOW - 10 * MIN, "failed", n=2)), Fire(81.82)),
    Case("11-messages-10-sent", lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=10),
                                           insert_whatsapp(c, NOW - 10 * MIN, "failed")), Quiet(90.91)),
    Case("exactly-90pct", lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=18),
                                     insert_whatsapp(c, NOW - 10 * MIN, "failed", n=2)), Quiet(90)),
    Case("89.47pct", lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=17),
                                insert_whatsapp(c, NOW - 10 * MIN, "failed", n=2)), Fire(89.47)),
    Case("89.995pct-is-under-90pct", lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=17999),
                                                insert_whatsapp(c, NOW - 10 * MIN, "failed", n=2001)), Fire()),
    Case("11th-message-exactly-1h-ago-is-outside",
         lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=8), insert_whatsapp(c, NOW - 10 * MIN, "failed", n=2),
                    insert_whatsapp(c, NOW - HOUR, "failed")), NoData()),
    Case("11th-message-1h-minus-1s-ago-counts",
         lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=8), insert_whatsapp(c, NOW - 10 * MIN, "failed", n=2),
                    insert_whatsapp(c, NOW - HOUR + SEC, "failed")), Fire(72.73)),
    Case("pending-counts-as-not-delivered", lambda c: (insert_whatsapp(c, NOW - 10 * MIN, n=9),
                                                       insert_whatsapp(c, NOW - MIN, "pending", n=2)), Fire(81.82)),
    Case("no-messages", None, NoData()),
)

cases(
    "whatsapp_delivery_rate_low_24h",
    Case("10-messages-are-too-few", lambda c: insert_whatsapp(c, NOW - 20 * HOUR, "failed", n=10), NoData()),
    Case("11-messages-9-sent", lambda c: (insert_whatsapp(c, NOW - 20 * HOUR, n=9),
                                          insert_whatsapp(c, NOW - 20 * HOUR, "failed", n=2)), Fire(81.82)),
    Case("exactly-90pct", lambda c: (insert_whatsapp(c, NOW - 20 * HOUR, n=18),
                                     insert_whatsapp(c, NOW - 20 * HOUR, "failed", n=2)), Quiet(90)),
    Case("11th-message-exactly-24h-ago-is-outside",
         lambda c: (insert_whatsapp(c, NOW - 20 * HOUR, n=8), insert_whatsapp(c, NOW - 20 * HOUR, "failed", n=2),
                    insert_whatsapp(c, NOW - DAY, "failed")), NoData()),
)

cases(
    "whatsapp_error_rate_high",
    Case("exactly-20", lambda c: insert_whatsapp_error(c, NOW - 10 * MIN, n=20), Quiet(20)),
    Case("21", lambda c: insert_whatsapp_error(c, NOW - 10 * MIN, n=21), Fire(21)),
    Case("window-includes-exactly-1h-ago",
         lambda c: (insert_whatsapp_error(c, NOW - 10 * MIN, n=20), insert_whatsapp_error(c, NOW - HOUR)), Fire(21)),
    Case("1h-plus-1s-ago-is-outside",
         lambda c: (insert_whatsapp_error(c, NOW - 10 * MIN, n=20), insert_whatsapp_error(c, NOW - HOUR - SEC)),
         Quiet(20)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "whatsapp_error_rate_critical",
    Case("exactly-50", lambda c: insert_whatsapp_error(c, NOW - 10 * MIN, n=50), Quiet(50)),
    Case("51", lambda c: insert_whatsapp_error(c, NOW - 10 * MIN, n=51), Fire(51)),
    Case("no-rows", None, Quiet(0)),
)

_TEN_TYPES = [f"e{i:02d}" for i in (5, 0, 1, 2, 3, 4, 6, 7, 8, 9)]
cases(
    "whatsapp_top_errors",
    Case("one-instance-per-error-type",
         lambda c: (insert_whatsapp_error(c, NOW - HOUR, "timeout", n=3), insert_whatsapp_error(c, NOW - HOUR, "auth")),
         Fire(labels=[{"error_type": "timeout"}, {"error_type": "auth"}])),
    Case("only-the-ten-most-frequent",
         lambda c: [insert_whatsapp_error(c, NOW - HOUR, f"e{i:02d}", n=2 if i == 5 else 1) for i in range(11)],
         Fire(labels=[{"error_type": t} for t in _TEN_TYPES], instances=[{"error_type": t} for t in _TEN_TYPES])),
    Case("errors-exactly-24h-ago-are-outside", lambda c: insert_whatsapp_error(c, NOW - DAY, n=5), NoData()),
    Case("no-errors", None, NoData()),
)

cases(
    "whatsapp_session_stale",
    Case("only-the-stale-active-session",
         lambda c: (insert_whatsapp_session(c, "fresh", NOW - HOUR), insert_whatsapp_session(c, "edge", NOW - DAY),
                    insert_whatsapp_session(c, "stale", NOW - DAY - 6 * MIN),
                    insert_whatsapp_session(c, "gone", NOW - 30 * DAY, is_active=False)),
         Fire(labels=[{"session_id": "stale"}],
              instances=[{"session_id": "fresh"}, {"session_id": "edge"}, {"session_id": "stale"}])),
    Case("exactly-24h", lambda c: insert_whatsapp_session(c, "edge", NOW - DAY), Quiet(24)),
    Case("24h-6m", lambda c: insert_whatsapp_session(c, "stale", NOW - DAY - 6 * MIN), Fire(24.1)),
    Case("inactive-sessions-are-not-watched",
         lambda c: insert_whatsapp_session(c, "gone", NOW - 30 * DAY, is_active=False), NoData()),
)

cases(
    "whatsapp_session_disconnected",
    Case("connecting-session",
         lambda c: (insert_whatsapp_session(c, "ok", NOW - MIN),
                    insert_whatsapp_session(c, "flaky", NOW - MIN, connection_state="connecting"),
                    insert_whatsapp_session(c, "gone", NOW - MIN, is_active=False, connection_state="disconnected")),
         Fire(labels=[{"session_id": "flaky"}], instances=[{"session_id": "ok"}, {"session_id": "flaky"}])),
    Case("all-connected", lambda c: insert_whatsapp_session(c, "ok", NOW - MIN), Quiet(0)),
    Case("no-active-session",
         lambda c: insert_whatsapp_session(c, "gone", NOW - MIN, is_active=False, connection_state="disconnected"),
         NoData()),
)

cases(
    "whatsapp_queue_processing_time",
    Case("exactly-60s", lambda c: insert_whatsapp(c, NOW - 10 * MIN, sent_at=NOW - 9 * MIN), Quiet(60)),
    Case("61s", lambda c: insert_whatsapp(c, NOW - 10 * MIN, sent_at=NOW - 9 * MIN + SEC), Fire(61)),
    Case("stuck-pending-message-counts-its-age", lambda c: insert_whatsapp(c, NOW - 2 * MIN, "pending"), Fire(120)),
    Case("failed-messages-left-out",
         lambda c: (insert_whatsapp(c, NOW - 50 * MIN, "failed"), insert_whatsapp(c, NOW - MIN, sent_at=NOW - 50 * SEC)),
         Quiet(10)),
    Case("sent-after-now-counts-up-to-now", lambda c: insert_whatsapp(c, NOW - 10 * SEC, sent_at=NOW + 100 * SEC),
         Quiet(10)),
    Case("pending-created-exactly-1h-ago-is-outside", lambda c: insert_whatsapp(c, NOW - HOUR, "pending"), NoData()),
)

cases(
    "whatsapp_log_retention_overdue",
    Case("one-row-31d-1s-old", lambda c: (insert_whatsapp_error(c, NOW - 31 * DAY - SEC),
                                          insert_whatsapp_error(c, NOW - DAY, n=3)), Fire(1)),
    Case("exactly-31d-old", lambda c: (insert_whatsapp_error(c, NOW - 31 * DAY),
                                       insert_whatsapp_error(c, NOW - DAY, n=3)), Quiet(0)),
    Case("no-rows", None, Quiet(0)),
)

# seed 004 ------------------------------------------------------------------------------------------
cases(
    "double_booking_attempts",
    Case("constraint-violation", lambda c: insert_audit(c, NOW - MIN, "failed", error_message=DOUBLE_BOOKING),
         Fire(1)),
    Case("failure-without-constraint",
         lambda c: insert_audit(c, NOW - MIN, "failed", error_message="Seat(s) taken by another session"), Quiet(0)),
    Case("exactly-5m-ago-is-outside",
         lambda c: insert_audit(c, NOW - 5 * MIN, "failed", error_message=DOUBLE_BOOKING), Quiet(0)),
    Case("5m-minus-1s-ago-counts",
         lambda c: insert_audit(c, NOW - 5 * MIN + SEC, "failed", error_message=DOUBLE_BOOKING), Fire(1)),
    Case("only-failed-events-count",
         lambda c: insert_audit(c, NOW - MIN, "created", error_message=DOUBLE_BOOKING), Quiet(0)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "reservation_cleanup_job_failed",
    Case("no-run-ever", None, Fire(1)),
    Case("latest-succeeded", lambda c: insert_cleanup_run(c, NOW - MIN), Quiet(0)),
    Case("latest-failed", lambda c: (insert_cleanup_run(c, NOW - 6 * MIN), insert_cleanup_run(c, NOW - MIN, "failed")),
         Fire(1)),
    Case("failure-then-success", lambda c: (insert_cleanup_run(c, NOW - 6 * MIN, "failed"),
                                            insert_cleanup_run(c, NOW - MIN)), Quiet(0)),
    Case("latest-exactly-15m-ago", lambda c: insert_cleanup_run(c, NOW - 15 * MIN), Quiet(0)),
    Case("latest-15m-plus-1s-ago", lambda c: insert_cleanup_run(c, NOW - 15 * MIN - SEC), Fire(1)),
    Case("run-after-now-not-seen", lambda c: (insert_cleanup_run(c, NOW - 2 * MIN),
                                              insert_cleanup_run(c, NOW + MIN, "failed")), Quiet(0)),
    Case("run-in-progress", lambda c: insert_cleanup_run(c, NOW - 10 * SEC, "running"), Quiet(0)),
)

cases(
    "payment_processing_down",
    Case("exactly-20pct", lambda c: (insert_order(c, NOW - MIN, "failed"), insert_order(c, NOW - MIN, n=3),
                                     insert_order(c, NOW - MIN, "pending")), Quiet(20)),
    Case("22.22pct", lambda c: (insert_order(c, NOW - MIN, "failed", n=2), insert_order(c, NOW - MIN, n=7)),
         Fire(22.22)),
    Case("20.004pct-exceeds-20pct", lambda c: (insert_order(c, NOW - MIN, "failed", n=5001),
                                               insert_order(c, NOW - MIN, n=19999)), Fire()),
    Case("failures-exactly-15m-ago-are-outside",
         lambda c: (insert_order(c, NOW - MIN, n=4), insert_order(c, NOW - 15 * MIN, "failed", n=3)), Quiet(0)),
    Case("no-orders-in-window", lambda c: insert_order(c, NOW - 15 * MIN, "failed"), NoData()),
)

cases(
    "reservation_success_rate_low",
    Case("exactly-90pct", lambda c: (insert_audit(c, NOW - MIN, "created", n=9), insert_audit(c, NOW - MIN, "failed")),
         Quiet(90)),
    Case("88.89pct", lambda c: (insert_audit(c, NOW - MIN, "created", n=8), insert_audit(c, NOW - MIN, "failed")),
         Fire(88.89)),
    Case("89.995pct-is-under-90pct", lambda c: (insert_audit(c, NOW - MIN, "created", n=17999),
                                                insert_audit(c, NOW - MIN, "failed", n=2001)), Fire()),
    Case("other-events-do-not-count",
         lambda c: (insert_audit(c, NOW - MIN, "created", n=9), insert_audit(c, NOW - MIN, "failed"),
                    insert_audit(c, NOW - MIN, "expired", n=10), insert_audit(c, NOW - MIN, "completed", n=5),
                    insert_audit(c, NOW - MIN, "extended", n=3)), Quiet(90)),
    Case("failure-exactly-1h-ago-is-outside",
         lambda c: (insert_audit(c, NOW - MIN, "created", n=8), insert_audit(c, NOW - HOUR, "failed", n=5)),
         Quiet(100)),
    Case("no-attempts", lambda c: (insert_audit(c, NOW - MIN, "completed", n=5),
                                   insert_audit(c, NOW - MIN, "expired", n=3)), NoData()),
)

cases(
    "reservation_expiration_rate_high_1h",
    Case("exactly-70pct", lambda c: (insert_audit(c, NOW - 30 * MIN, "created", n=10),
                                     insert_audit(c, NOW - 10 * MIN, "expired", n=7)), Quiet(70)),
    Case("80pct", lambda c: (insert_audit(c, NOW - 30 * MIN, "created", n=10),
                             insert_audit(c, NOW - 10 * MIN, "expired", n=8)), Fire(80)),
    Case("70.003pct-exceeds-70pct", lambda c: (insert_audit(c, NOW - 30 * MIN, "created", n=10001),
                                               insert_audit(c, NOW - 10 * MIN, "expired", n=7001)), Fire()),
    Case("expiries-exactly-1h-ago-are-outside", lambda c: (insert_audit(c, NOW - 30 * MIN, "created", n=10),
                                                           insert_audit(c, NOW - HOUR, "expired", n=8)), Quiet(0)),
    Case("expiries-without-creations", lambda c: insert_audit(c, NOW - 10 * MIN, "expired", n=5), NoData()),
)

cases(
    "reservation_expiration_rate_high",
    Case("exactly-80pct", lambda c: (insert_audit(c, NOW - 5 * HOUR, "created", n=10),
                                     insert_audit(c, NOW - 4 * HOUR, "expired", n=8)), Quiet(80)),
    Case("90pct", lambda c: (insert_audit(c, NOW - 5 * HOUR, "created", n=10),
                             insert_audit(c, NOW - 4 * HOUR, "expired", n=9)), Fire(90)),
    Case("expiry-exactly-24h-ago-is-outside",
         lambda c: (insert_audit(c, NOW - 5 * HOUR, "created", n=10), insert_audit(c, NOW - 4 * HOUR, "expired", n=8),
                    insert_audit(c, NOW - DAY, "expired")), Quiet(80)),
    Case("no-reservations", None, NoData()),
)

cases(
    "reservation_hold_time_long",
    Case("exactly-15m", lambda c: hold(c, 1, NOW - 30 * MIN, NOW - 15 * MIN), Quiet(15)),
    Case("16m", lambda c: hold(c, 1, NOW - 31 * MIN, NOW - 15 * MIN), Fire(16)),
    Case("average-of-completed-and-expired",
         lambda c: (hold(c, 1, NOW - 40 * MIN, NOW - 30 * MIN), hold(c, 2, NOW - 40 * MIN, NOW - 19 * MIN, "expired")),
         Fire(15.5)),
    Case("open-reservations-do-not-count",
         lambda c: (hold(c, 1, NOW - 40 * MIN, NOW - 30 * MIN), insert_audit(c, NOW - 3 * HOUR, "created",
                                                                              reservation_id=2)), Quiet(10)),
    Case("only-open-reservations", lambda c: insert_audit(c, NOW - 3 * HOUR, "created", reservation_id=2), NoData()),
)

_PROBLEMS = [{"problem": p} for p in ("no_run_10m", "failed_run", "slow_run")]
cases(
    "reservation_cleanup_job_health",
    Case("healthy-recent-run", lambda c: insert_cleanup_run(c, NOW - 2 * MIN, seconds=1), Quiet(instances=_PROBLEMS)),
    Case("no-run-in-the-hour", None, Fire(labels=[{"problem": "no_run_10m"}], instances=_PROBLEMS)),
    Case("last-run-exactly-10m-ago", lambda c: insert_cleanup_run(c, NOW - 10 * MIN),
         Fire(labels=[{"problem": "no_run_10m"}])),
    Case("last-run-10m-minus-1s-ago", lambda c: insert_cleanup_run(c, NOW - 10 * MIN + SEC), Quiet()),
    Case("failed-run-in-the-hour", lambda c: (insert_cleanup_run(c, NOW - 50 * MIN, "failed"),
                                              insert_cleanup_run(c, NOW - MIN)),
         Fire(labels=[{"problem": "failed_run"}])),
    Case("failure-exactly-1h-ago-is-outside", lambda c: (insert_cleanup_run(c, NOW - HOUR, "failed"),
                                                         insert_cleanup_run(c, NOW - MIN)), Quiet()),
    Case("31s-run", lambda c: insert_cleanup_run(c, NOW - 3 * MIN, seconds=31), Fire(labels=[{"problem": "slow_run"}])),
    Case("exactly-30s-run", lambda c: insert_cleanup_run(c, NOW - 3 * MIN, seconds=30), Quiet()),
    Case("run-going-for-31s", lambda c: insert_cleanup_run(c, NOW - 31 * SEC, "running"),
         Fire(labels=[{"problem": "slow_run"}])),
)

cases(
    "expired_reservations_not_released",
    Case("active-5m-1s-past-expiry", lambda c: insert_reservation(c, NOW - 5 * MIN - SEC), Fire(1)),
    Case("exactly-5m-grace", lambda c: insert_reservation(c, NOW - 5 * MIN), Quiet(0)),
    Case("released-or-unexpired-do-not-count",
         lambda c: (insert_reservation(c, NOW - DAY, is_active=False), insert_reservation(c, NOW + 5 * MIN)),
         Quiet(0)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "payment_failure_rate_high",
    Case("exactly-5pct", lambda c: (insert_order(c, NOW - HOUR, "failed"), insert_order(c, NOW - HOUR, n=19)),
         Quiet(5)),
    Case("5.26pct", lambda c: (insert_order(c, NOW - HOUR, "failed"), insert_order(c, NOW - HOUR, n=18)), Fire(5.26)),
    Case("failure-exactly-24h-ago-is-outside",
         lambda c: (insert_order(c, NOW - DAY, "failed"), insert_order(c, NOW - HOUR, n=18)), Quiet(0)),
    Case("failure-24h-minus-1s-ago-counts",
         lambda c: (insert_order(c, NOW - DAY + SEC, "failed"), insert_order(c, NOW - HOUR, n=18)), Fire(5.26)),
    Case("no-orders", None, NoData()),
)

cases(
    "active_reservations_high",
    Case("exactly-1000", lambda c: insert_reservation(c, NOW + 5 * MIN, n=1000), Quiet(1000)),
    Case("1001", lambda c: insert_reservation(c, NOW + 5 * MIN, n=1001), Fire(1001)),
    Case("expiring-at-now-or-inactive-not-active",
         lambda c: (insert_reservation(c, NOW + 5 * MIN, n=1000), insert_reservation(c, NOW),
                    insert_reservation(c, NOW + 5 * MIN, is_active=False, n=5)), Quiet(1000)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "reservation_extension_rate",
    Case("exactly-25pct", lambda c: (insert_audit(c, NOW - HOUR, "created", n=4),
                                     insert_audit(c, NOW - HOUR, "extended")), Quiet(25)),
    Case("50pct", lambda c: (insert_audit(c, NOW - HOUR, "created", n=4),
                             insert_audit(c, NOW - HOUR, "extended", n=2)), Fire(50)),
    Case("extension-exactly-24h-ago-is-outside",
         lambda c: (insert_audit(c, NOW - HOUR, "created", n=4), insert_audit(c, NOW - HOUR, "extended"),
                    insert_audit(c, NOW - DAY, "extended")), Quiet(25)),
    Case("extensions-without-creations", lambda c: insert_audit(c, NOW - HOUR, "extended", n=2), NoData()),
)

_LONG = "x" * 200
cases(
    "reservation_top_errors",
    Case("one-instance-per-message",
         lambda c: (insert_audit(c, NOW - HOUR, "failed", error_message="Seats not available", n=2),
                    insert_audit(c, NOW - HOUR, "failed", error_message=DOUBLE_BOOKING)),
         Fire(labels=[{"error_message": "Seats not available"}, {"error_message": DOUBLE_BOOKING}])),
    Case("grouped-on-the-first-200-characters",
         lambda c: (insert_audit(c, NOW - HOUR, "failed", error_message=_LONG + "A"),
                    insert_audit(c, NOW - HOUR, "failed", error_message=_LONG + "B")),
         Fire(2, labels=[{"error_message": _LONG}])),
    Case("only-failed-events", lambda c: insert_audit(c, NOW - HOUR, "created", error_message="odd"), NoData()),
    Case("failures-exactly-24h-ago-are-outside",
         lambda c: insert_audit(c, NOW - DAY, "failed", error_message="Seats not available"), NoData()),
)

# fleet ---------------------------------------------------------------------------------------------
cases(
    "check_errors_in_a_row",
    Case("three-errors-in-a-row-and-a-flaky-one",
         lambda c: (check_runs(c, "broken", "error", "error", "error"), check_runs(c, "flaky", "error", "ok", "error")),
         Fire(3, labels=[{"check_name": "broken"}], instances=[{"check_name": "broken"}, {"check_name": "flaky"}])),
    Case("two-errors-are-not-three", lambda c: check_runs(c, "broken", "error", "error"), NoData()),
    Case("success-after-three-errors", lambda c: check_runs(c, "broken", "error", "error", "error", "ok"), Quiet(2)),
    Case("run-in-progress-is-not-counted",
         lambda c: check_runs(c, "broken", "error", "error", "error", "running"), Fire(3)),
    Case("third-error-exactly-1d-ago-is-outside",
         lambda c: (insert_check_run(c, "broken", NOW - DAY, "error"), check_runs(c, "broken", "error", "error")),
         NoData()),
    Case("three-ok", lambda c: check_runs(c, "fine", "ok", "ok", "ok"), Quiet(0)),
)

cases(
    "database_down",
    Case("two-errors", lambda c: check_runs(c, "database_up", "error", "error"), Fire(2)),
    Case("success-after-an-error", lambda c: check_runs(c, "database_up", "error", "ok"), Quiet(1)),
    Case("error-exactly-5m-ago-is-outside",
         lambda c: (insert_check_run(c, "database_up", NOW - 5 * MIN, "error"),
                    insert_check_run(c, "database_up", NOW - MIN, "error")), Quiet(1)),
    Case("error-5m-minus-1s-ago-counts",
         lambda c: (insert_check_run(c, "database_up", NOW - 5 * MIN + SEC, "error"),
                    insert_check_run(c, "database_up", NOW - MIN, "error")), Fire(2)),
    Case("run-in-progress-is-skipped", lambda c: check_runs(c, "database_up", "error", "error", "running"), Fire(2)),
    Case("other-checks-errors", lambda c: check_runs(c, "broken", "error", "error"), Quiet(0)),
    Case("no-runs", None, Quiet(0)),
)


def _jobs(*pairs: tuple[str, str]) -> list[Labels]:
    return [{"job": j, "problem": p} for j, p in pairs]


_CLEANUP_ALL = _jobs((CLEANUP_JOB, "last_run_failed"), (CLEANUP_JOB, "run_exceeded_timeout"),
                     (CLEANUP_JOB, "no_recent_run"))
cases(
    "maintenance_job_health",
    Case("healthy", lambda c: insert_job_run(c, CLEANUP_JOB, NOW - 2 * MIN), Quiet(instances=_CLEANUP_ALL)),
    Case("latest-run-failed", lambda c: (insert_job_run(c, CLEANUP_JOB, NOW - 7 * MIN),
                                         insert_job_run(c, CLEANUP_JOB, NOW - 2 * MIN, "error")),
         Fire(labels=_jobs((CLEANUP_JOB, "last_run_failed")))),
    Case("success-after-a-failure", lambda c: (insert_job_run(c, CLEANUP_JOB, NOW - 7 * MIN, "error"),
                                               insert_job_run(c, CLEANUP_JOB, NOW - 2 * MIN)), Quiet()),
    Case("failed-then-a-run-in-progress", lambda c: (insert_job_run(c, CLEANUP_JOB, NOW - 7 * MIN, "error"),
                                                     insert_job_run(c, CLEANUP_JOB, NOW - 10 * SEC, "running")),
         Fire(labels=_jobs((CLEANUP_JOB, "last_run_failed")))),
    Case("31s-run-over-30s-timeout", lambda c: insert_job_run(c, CLEANUP_JOB, NOW - 2 * MIN, seconds=31),
         Fire(labels=_jobs((CLEANUP_JOB, "run_exceeded_timeout")))),
    Case("run-of-exactly-its-timeout", lambda c: insert_job_run(c, CLEANUP_JOB, NOW - 2 * MIN, seconds=30), Quiet()),
    Case("running-for-31s", lambda c: (insert_job_run(c, CLEANUP_JOB, NOW - 5 * MIN),
                                       insert_job_run(c, CLEANUP_JOB, NOW - 31 * SEC, "running")),
         Fire(labels=_jobs((CLEANUP_JOB, "run_exceeded_timeout")))),
    Case("5m-job-last-ran-exactly-15m-ago", lambda c: insert_job_run(c, CLEANUP_JOB, NOW - 15 * MIN), Quiet()),
    Case("5m-job-last-ran-15m-1s-ago", lambda c: insert_job_run(c, CLEANUP_JOB, NOW - 15 * MIN - SEC),
         Fire(labels=_jobs((CLEANUP_JOB, "no_recent_run")))),
    Case("daily-job-last-ran-exactly-2d-ago", lambda c: insert_job_run(c, PURGE_JOB, NOW - 2 * DAY), Quiet()),
    Case("daily-job-last-ran-2d-1s-ago", lambda c: insert_job_run(c, PURGE_JOB, NOW - 2 * DAY - SEC),
         Fire(labels=_jobs((PURGE_JOB, "no_recent_run")))),
    Case("dry-run-is-not-a-run", lambda c: (insert_job_run(c, CLEANUP_JOB, NOW - 20 * MIN),
                                            insert_job_run(c, CLEANUP_JOB, NOW - MIN, "dry_run")),
         Fire(labels=_jobs((CLEANUP_JOB, "no_recent_run")))),
    Case("other-schedule-shapes-are-not-judged-stale", lambda c: insert_job_run(c, "custom", NOW - 3 * DAY),
         Quiet(instances=_jobs(("custom", "last_run_failed"), ("custom", "run_exceeded_timeout")))),
    Case("no-runs", None, NoData()),
)

cases(
    "notifications_dead",
    Case("dead-10m-ago", lambda c: insert_notification(c, "dead", dead_at=NOW - 10 * MIN), Fire(1)),
    Case("dead-exactly-1h-ago-is-outside", lambda c: insert_notification(c, "dead", dead_at=NOW - HOUR), Quiet(0)),
    Case("dead-1h-minus-1s-ago-counts", lambda c: insert_notification(c, "dead", dead_at=NOW - HOUR + SEC), Fire(1)),
    Case("sent-and-retrying-are-not-dead", lambda c: (insert_notification(c, "sent"),
                                                      insert_notification(c, "retrying")), Quiet(0)),
    Case("no-rows", None, Quiet(0)),
)

cases(
    "outbox_stuck",
    Case("pending-10m-1s-past-due", lambda c: insert_notification(c, "pending", next_attempt_at=NOW - 10 * MIN - SEC),
         Fire(1)),
    Case("pending-exactly-10m-past-due", lambda c: insert_notification(c, "pending", next_attempt_at=NOW - 10 * MIN),
         Quiet(0)),
    Case("retrying-past-due", lambda c: insert_notification(c, "retrying", next_attempt_at=NOW - 11 * MIN), Fire(1)),
    Case("retrying-waiting-out-a-backoff",
         lambda c: insert_notification(c, "retrying", created_at=NOW - 2 * HOUR, next_attempt_at=NOW + 20 * MIN),
         Quiet(0)),
    Case("sending-lease-expired-11m-ago",
         lambda c: insert_notification(c, "sending", next_attempt_at=NOW - 12 * MIN, lease_until=NOW - 11 * MIN),
         Fire(1)),
    Case("sending-lease-expired-5m-ago",
         lambda c: insert_notification(c, "sending", next_attempt_at=NOW - 12 * MIN, lease_until=NOW - 5 * MIN),
         Quiet(0)),
    Case("sent-long-ago", lambda c: insert_notification(c, "sent", next_attempt_at=NOW - 2 * HOUR), Quiet(0)),
    Case("created-after-now-not-seen",
         lambda c: insert_notification(c, "pending", created_at=NOW + MIN, next_attempt_at=NOW - 11 * MIN), Quiet(0)),
    Case("no-rows", None, Quiet(0)),
)


# -- the database ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def monitored(app_db_url):
    """One database for the module: the fleet schema, the sample application's schema, no rows."""
    engine = create(app_db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
                   a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relkind = 'r' AND n.nspname IN ('public', 'fleet')""")).all()
    _TYPES.clear()
    for table, col, typ in rows:
        _TYPES.setdefault(table, {})[col] = typ
    yield engine
    engine.dispose()


def _truncate(engine: Engine) -> None:
    if _DIRTY:
        with engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {', '.join(sorted(_DIRTY))} RESTART IDENTITY CASCADE"))
        _DIRTY.clear()


@pytest.fixture
def db(monitored):
    """The module's database with the tables the previous case wrote emptied (before and after)."""
    _truncate(monitored)
    yield monitored
    _truncate(monitored)


# -- the crafted cases -----------------------------------------------------------------------------
def _instance(check, labels: Labels) -> Labels:
    """The labels the query added (the check's static labels left out)."""
    return {k: v for k, v in labels.items() if k not in check.labels}


def _key(labels: Labels) -> tuple:
    return tuple(sorted(labels.items()))


def _same(got: list[Labels], want: list[Labels]) -> bool:
    return sorted(map(_key, got)) == sorted(map(_key, want))


def verify(name: str, samples: list, expect: Fire | Quiet | NoData) -> None:
    check = CONFIG.checks[name]
    shown = [(_instance(check, s.labels), s.value) for s in samples]
    firing = [s for s in samples if s.value is not None and check.condition.holds(s.value)]
    for s in samples:  # the engine's own verdict agrees
        if s.value is not None:
            assert is_active(check, s.value) is check.condition.holds(s.value)
    if isinstance(expect, NoData):
        assert all(s.value is None for s in samples), f"{name}: expected no data, got {shown}"
        assert check.no_data == expect.policy, f"{name}: no_data policy is {check.no_data!r}"
        assert is_active(check, None) is {"ok": False, "alerting": True, "keep": None}[expect.policy]
        return
    assert any(s.value is not None for s in samples), f"{name}: expected a value, got {shown}"
    if expect.instances is not None:
        got = [_instance(check, s.labels) for s in samples]
        assert _same(got, expect.instances), f"{name}: instances {got}, expected {expect.instances}"
    if isinstance(expect, Quiet):
        assert not firing, f"{name}: condition {check.condition} holds for {shown}"
        if expect.value is not None:
            assert [s.value for s in samples] == [pytest.approx(expect.value, abs=0.051)], f"{name}: {shown}"
        return
    assert firing, f"{name}: condition {check.condition} holds for none of {shown}"
    if expect.labels is not None:
        got = [_instance(check, s.labels) for s in firing]
        assert _same(got, expect.labels), f"{name}: firing instances {got}, expected {expect.labels}"
    if expect.value is not None:
        assert [s.value for s in firing] == [pytest.approx(expect.value, abs=0.051)], f"{name}: {shown}"


def _params():
    for name in sorted(CASES):
        for case in CASES[name]:
            marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
            yield pytest.param(name, case, id=f"{name}:{case.id}", marks=marks)


@pytest.mark.parametrize(("name", "case"), list(_params()))
def test_crafted_rows(name, case, db):
    if case.rows is not None:
        with db.begin() as conn:
            case.rows(conn)
    verify(name, collect_sql(CONFIG.checks[name], db, case.now), case.expect)


# -- every check has cases -------------------------------------------------------------------------
@pytest.mark.parametrize("name", SQL_CHECKS)
def test_check_has_crafted_cases(name):
    if name in DEDICATED:
        assert callable(globals().get(DEDICATED[name])), f"{name}: {DEDICATED[name]} is not a test in this module"
        return
    kinds = {type(c.expect) for c in CASES.get(name, [])}
    assert kinds, f"{name}: no crafted cases (add a cases({name!r}, ...) block, or a NOT_CRAFTABLE entry with why)"
    assert kinds & {Quiet, NoData}, f"{name}: no case that must not fire"
    assert Fire in kinds or name in NOT_CRAFTABLE, f"{name}: no case that must fire"


def test_cases_name_existing_checks():
    unknown = (set(CASES) | set(DEDICATED) | set(NOT_CRAFTABLE)) - set(SQL_CHECKS)
    assert not unknown, f"cases for checks that are not enabled SQL checks in config/: {sorted(unknown)}"
    for name, items in CASES.items():
        ids = [c.id for c in items]
        assert len(ids) == len(set(ids)), f"{name}: duplicate case ids"


def test_size_checks_report_gigabytes(db):
    """database_size and webhook_logs_size_high cannot reach 8 and 10 GB here: their unit is checked instead."""
    with db.begin() as conn:
        insert_webhook_log(conn, NOW - MIN, n=20_000)
    with db.connect() as conn:
        db_bytes, log_bytes = conn.execute(sa.text(
            "SELECT pg_database_size(current_database()), pg_total_relation_size('webhook_logs')")).one()
    for name, size in (("database_size", db_bytes), ("webhook_logs_size_high", log_bytes)):
        [sample] = collect_sql(CONFIG.checks[name], db, NOW)
        assert sample.value == pytest.approx(size / 1024**3, abs=0.0006), name  # GB, rounded to 3 places
        assert sample.value > 0, name


# -- the pg_stat-based checks: the live statistics, crafted where the server allows ---------------
def _raw(engine: Engine) -> psycopg.Connection:
    """A connection of its own (closing it makes the backend flush its statistics at exit)."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


def _wait_for(engine: Engine, sql: str, ok: Callable[[Any], bool], timeout: float = 10.0) -> None:
    """Poll a statistics view until `ok` (cumulative statistics reach the views asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            value = conn.execute(sa.text(sql)).first()
        if ok(value):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"statistics did not settle in {timeout}s: {sql} -> {value}")
        time.sleep(0.05)


def _by(check_name: str, samples: list, label: str, prefix: str) -> dict[str, float | None]:
    return {s.labels[label]: s.value for s in samples if s.labels.get(label, "").startswith(prefix)}


def _firing(check_name: str, values: dict[str, float | None]) -> set[str]:
    cond = CONFIG.checks[check_name].condition
    return {k for k, v in values.items() if v is not None and cond.holds(v)}


def test_db_dead_tuples_high(monitored):
    """n_dead_tup against n_live_tup per table: > 20% fires, exactly 20% does not, under 1000 tuples is left out."""
    tables = {  # name: (inserted, deleted) -> live, dead
        "dead_over": (1201, 201),   # 1000 live, 201 dead: 20.1%
        "dead_at": (1200, 200),     # 1000 live, 200 dead: exactly 20%
        "dead_min": (1000, 500),    # 500 + 500: exactly the 1000-tuple minimum, 100%
        "dead_small": (999, 900),   # 999 tuples: under the minimum, left out
    }
    with _raw(monitored) as conn:
        conn.execute("DROP SCHEMA IF EXISTS craft_dead CASCADE; CREATE SCHEMA craft_dead")
        for t, (ins, dele) in tables.items():
            conn.execute(f"CREATE TABLE craft_dead.{t} (id int) WITH (autovacuum_enabled = false)")
            conn.execute(f"INSERT INTO craft_dead.{t} SELECT generate_series(1, {ins})")
            conn.execute(f"DELETE FROM craft_dead.{t} WHERE id <= {dele}")  # noqa: S608 (constants)
    try:
        _wait_for(monitored, "SELECT COUNT(*) FROM pg_stat_user_tables WHERE schemaname = 'craft_dead' "
                             "AND n_dead_tup > 0", lambda r: r[0] == len(tables))
        values = _by("db_dead_tuples_high", collect_sql(CONFIG.checks["db_dead_tuples_high"], monitored, NOW),
                     "table", "craft_dead.")
        assert values == {"craft_dead.dead_over": 20.1, "craft_dead.dead_at": 20.0, "craft_dead.dead_min": 100.0}
        assert _firing("db_dead_tuples_high", values) == {"craft_dead.dead_over", "craft_dead.dead_min"}
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP SCHEMA craft_dead CASCADE")


def test_db_dead_tuples_high_just_over_20pct(monitored):
    with _raw(monitored) as conn:
        conn.execute("DROP SCHEMA IF EXISTS craft_dead2 CASCADE; CREATE SCHEMA craft_dead2")
        conn.execute("CREATE TABLE craft_dead2.t (id int) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO craft_dead2.t SELECT generate_series(1, 12001)")
        conn.execute("DELETE FROM craft_dead2.t WHERE id <= 2001")
    try:
        _wait_for(monitored, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = 'craft_dead2'",
                  lambda r: r is not None and r[0] == 2001)
        values = _by("db_dead_tuples_high", collect_sql(CONFIG.checks["db_dead_tuples_high"], monitored, NOW),
                     "table", "craft_dead2.")
        assert _firing("db_dead_tuples_high", values) == {"craft_dead2.t"}, values
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP SCHEMA craft_dead2 CASCADE")


def test_db_unused_indexes(monitored):
    """A plain index never scanned fires (idx_scan == 0); a scanned one, the primary key and a unique index
    do not; and nothing is judged while the statistics are under 7 days old (a fresh database has every
    index at 0 scans)."""
    with _raw(monitored) as conn:
        conn.execute("DROP SCHEMA IF EXISTS craft_idx CASCADE; CREATE SCHEMA craft_idx")
        conn.execute("CREATE TABLE craft_idx.t (id int PRIMARY KEY, a int, b int, c int)")
        conn.execute("CREATE INDEX used_idx ON craft_idx.t (a)")
        conn.execute("CREATE INDEX unused_idx ON craft_idx.t (b)")
        conn.execute("CREATE UNIQUE INDEX unique_idx ON craft_idx.t (c)")
        conn.execute("INSERT INTO craft_idx.t SELECT g, g, g, g FROM generate_series(1, 1000) g")
        conn.execute("ANALYZE craft_idx.t")
        conn.execute("SELECT pg_stat_reset()")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT * FROM craft_idx.t WHERE a = 5").fetchall()
        reset = conn.execute("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    check = CONFIG.checks["db_unused_indexes"]
    try:
        _wait_for(monitored, "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'used_idx' "
                             "AND schemaname = 'craft_idx'", lambda r: r is not None and r[0] >= 1)
        # statistics one second short of 7 days old: no index is judged
        assert _by("db_unused_indexes", collect_sql(check, monitored, reset + 7 * DAY - SEC), "index", "craft_idx.") == {}
        values = _by("db_unused_indexes", collect_sql(check, monitored, reset + 7 * DAY), "index", "craft_idx.")
        assert set(values) == {"craft_idx.used_idx", "craft_idx.unused_idx"}  # no t_pkey, no unique_idx
        assert _firing("db_unused_indexes", values) == {"craft_idx.unused_idx"}
        assert check.for_ == 7 * DAY  # seen unused on two weekly runs, so an index made yesterday is not called unused
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP SCHEMA craft_idx CASCADE")


def test_db_cache_hit_ratio_low(monitored):
    """blks_hit / (blks_hit + blks_read) of this database after pg_stat_reset(): under 10000 blocks is no
    data; reading a small table over and over is quiet; scanning a table too big for its buffer ring
    (blocks come from the OS, not shared_buffers) fires."""
    check = CONFIG.checks["db_cache_hit_ratio_low"]
    blocks = "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
    with _raw(monitored) as conn:
        # CREATE TABLE AS writes through a small ring, so most of the big table is not left in shared_buffers;
        # its seq scan (> shared_buffers / 4) reads through a 256 kB ring: nearly every block is a read
        conn.execute("CREATE TABLE craft_cache_big WITH (autovacuum_enabled = false) AS "
                     "SELECT g AS x, repeat('x', 200) AS pad FROM generate_series(1, 180000) g")
        conn.execute("CREATE TABLE craft_cache_small AS SELECT g AS x FROM generate_series(1, 20000) g")
        pages = conn.execute("SELECT pg_relation_size('craft_cache_big') / 8192").fetchone()[0]
        shared = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]
    try:
        if pages <= shared // 4:
            pytest.skip(f"shared_buffers ({shared} pages) too large to craft a low hit ratio with {pages} pages")

        def reset() -> None:
            # the pool's idle backends hold unflushed statistics (flushed up to 10 s later, or at exit):
            # close them and wait for them to exit before resetting, or their counts land after the reset
            monitored.dispose()
            with _raw(monitored) as conn:
                deadline = time.monotonic() + 10
                while conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                                   "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]:
                    assert time.monotonic() < deadline, "other sessions on the test database did not go away"
                    time.sleep(0.02)
                conn.execute("SELECT pg_stat_reset()")
            _wait_for(monitored, blocks, lambda r: r[0] + r[1] < 10000)

        reset()
        verify("db_cache_hit_ratio_low", collect_sql(check, monitored, NOW), NoData())

        with _raw(monitored) as conn:
            for _ in range(300):
                conn.execute("SELECT COUNT(*) FROM craft_cache_small").fetchone()
        _wait_for(monitored, blocks, lambda r: r[0] + r[1] >= 10000)
        verify("db_cache_hit_ratio_low", collect_sql(check, monitored, NOW), Quiet())

        reset()
        with _raw(monitored) as conn:
            for _ in range(2 + 20000 // pages):
                conn.execute("SELECT COUNT(*) FROM craft_cache_big").fetchone()
        _wait_for(monitored, blocks, lambda r: r[0] + r[1] >= 10000)
        verify("db_cache_hit_ratio_low", collect_sql(check, monitored, NOW), Fire())
    finally:
        with _raw(monitored) as conn:
            conn.execute("DROP TABLE IF EXISTS craft_cache_big, craft_cache_small")


@contextlib.contextmanager
def _running_statement(engine: Engine) -> Iterator[datetime]:
    """A `pg_sleep` running on a connection of its own (and a session idle in transaction next to it);
    yields the statement's query_start, cancels it on the way out."""
    idle = _raw(engine)
    idle.autocommit = False
    idle.execute("SELECT 1")  # idle in transaction from here on: not a running statement
    sleeper = _raw(engine)
    pid = sleeper.info.backend_pid
    errors: list[BaseException] = []

    def sleep() -> None:
        try:
            sleeper.execute("SELECT pg_sleep(30)")
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=sleep, daemon=True)
    thread.start()
    try:
        started = None
        deadline = time.monotonic() + 10
        while started is None and time.monotonic() < deadline:
            with engine.connect() as conn:
                started = conn.execute(sa.text(
                    "SELECT query_start FROM pg_stat_activity WHERE pid = :p AND state = 'active'"), {"p": pid}).scalar()
            time.sleep(0.02)
        assert started is not None, "the sleeping statement never showed as active"
        yield started
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_cancel_backend(:p)"), {"p": pid})
        thread.join(10)
        sleeper.close()
        idle.close()
    assert not errors, errors


def test_db_long_running_queries(monitored):
    """The longest active statement of this database, measured against :now: 0 when nothing runs (idle in
    transaction does not count), exactly 5 s does not fire, 6 s does."""
    check = CONFIG.checks["db_long_running_queries"]
    verify("db_long_running_queries", collect_sql(check, monitored, NOW), Quiet(0))
    with _running_statement(monitored) as started:
        verify("db_long_running_queries", collect_sql(check, monitored, started + 5 * SEC), Quiet(5))
        verify("db_long_running_queries", collect_sql(check, monitored, started + 6 * SEC), Fire(6))


def test_db_long_running_queries_just_over_5s(monitored):
    check = CONFIG.checks["db_long_running_queries"]
    with _running_statement(monitored) as started:
        verify("db_long_running_queries", collect_sql(check, monitored, started + timedelta(seconds=5.04)), Fire())


def test_db_connections_high_counts_client_backends(monitored):
    """Not crafted to fire (see NOT_CRAFTABLE): the value is client backends as a % of max_connections,
    so holding 5 more connections shows in it."""
    check = CONFIG.checks["db_connections_high"]
    with monitored.connect() as conn:
        max_conn = int(conn.execute(sa.text("SHOW max_connections")).scalar())
    held = [_raw(monitored) for _ in range(5)]
    try:
        [sample] = collect_sql(check, monitored, NOW)
    finally:
        for conn in held:
            conn.close()
    assert 100.0 * 6 / max_conn - 0.1 <= sample.value <= 100.0  # our 5 and the check's own, at least
    assert check.condition.holds(sample.value) is (sample.value > 70)


def test_pg_stat_statements_checks(monitored):
    """db_slow_queries and db_query_time_avg_high: no data (not an error) without the extension, and with it
    installed but its library not in shared_preload_libraries; crafted to fire when the server loads it."""
    names = ("db_slow_queries", "db_query_time_avg_high")
    with monitored.connect() as conn:
        loaded = conn.execute(sa.text("SELECT current_setting('pg_stat_statements.max', true)")).scalar()
        available = conn.execute(sa.text(
            "SELECT COUNT(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")).scalar()
        installed = conn.execute(sa.text(
            "SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")).scalar()
    if loaded is None:
        if not installed:
            for name in names:
                verify(name, collect_sql(CONFIG.checks[name], monitored, NOW), NoData())
        if not available:
            pytest.skip("pg_stat_statements is not available on this server")
        with monitored.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        for _ in range(3):  # on pooled connections too, one of which loaded the library creating the extension
            for name in names:
                verify(name, collect_sql(CONFIG.checks[name], monitored, NOW), NoData())
        return
    # the server preloads the library: a statement averaging over 100 ms (and 200 ms) fires both
    with monitored.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        conn.execute(sa.text("SELECT pg_stat_statements_reset()"))
    with monitored.connect() as conn:
        conn.execute(sa.text("SELECT pg_sleep(0.25)"))
    verify("db_slow_queries", collect_sql(CONFIG.checks["db_slow_queries"], monitored, NOW), Fire())
