"""The reports' figures, from the monitored database: each query runs READ ONLY with a statement and
lock timeout (worker.fleet.db.read_only_query, the checks' path), always rolled back, and binds `:now`
so a report for a given moment is reproducible. Days and months are UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from worker.fleet.db import ConnectionLost, psycopg_text, read_only_query
from worker.fleet.errors import OpsfleetError, ServiceUnavailable

STATEMENT_TIMEOUT_MS = 30_000


class ReportError(OpsfleetError):
    """A report query failed (the database answered with an error, or it timed out)."""

    exit_code = 2


# Seed 000 "Weekly Performance Review" (weekly_performance_report), for the 7 UTC days before :now's day.
# The seed's SQL does not run in Postgres: its error_count is a correlated subquery comparing
# wl.created_at with r.created_at, an ungrouped column of the outer GROUP BY query ("subquery uses
# ungrouped column r.created_at from outer query"). What it means is each day's webhook errors next to
# that day's registrations, so the errors are aggregated per day in their own CTE (`hooks`) and joined
# on the day. As in the seed, confirmations, emails sent, processing time and the success rate are of
# the day's completed registrations; `registrations` here counts all of them, `completed` the seed's.
# Processing time is the seed's (confirmation_generated_at - updated_at), with p50/p95/p99 beside its
# average. Every day of the week is a row, zeros where nothing happened.
WEEKLY_SQL = """
WITH bounds AS (
  SELECT date_trunc('day', CAST(:now AS timestamptz), 'UTC') - INTERVAL '7 days' AS s,
         date_trunc('day', CAST(:now AS timestamptz), 'UTC') AS e
),
days AS (
  SELECT CAST((g AT TIME ZONE 'UTC') AS date) AS day
  FROM bounds, generate_series(bounds.s, bounds.e - INTERVAL '1 day', INTERVAL '1 day') AS g
),
regs AS (
  SELECT CAST((r.created_at AT TIME ZONE 'UTC') AS date) AS day,
         COUNT(*) AS registrations,
         COUNT(*) FILTER (WHERE r.status = 'completed') AS completed,
         COUNT(r.confirmation_number) FILTER (WHERE r.status = 'completed') AS confirmations,
         COUNT(*) FILTER (WHERE r.status = 'completed' AND r.email_status = 'sent') AS emails_sent,
         ROUND(AVG(EXTRACT(EPOCH FROM (r.confirmation_generated_at - r.updated_at)))
               FILTER (WHERE r.status = 'completed'), 2) AS avg_seconds,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (r.confirmation_generated_at - r.updated_at)))
               FILTER (WHERE r.status = 'completed') AS p50_seconds,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (r.confirmation_generated_at - r.updated_at)))
               FILTER (WHERE r.status = 'completed') AS p95_seconds,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (r.confirmation_generated_at - r.updated_at)))
               FILTER (WHERE r.status = 'completed') AS p99_seconds
  FROM registrations r, bounds
  WHERE r.created_at >= bounds.s AND r.created_at < bounds.e
  GROUP BY 1
),
hooks AS (
  SELECT CAST((wl.created_at AT TIME ZONE 'UTC') AS date) AS day,
         COUNT(*) AS webhook_calls,
         COUNT(*) FILTER (WHERE wl.status_code != 200) AS error_count
  FROM webhook_logs wl, bounds
  WHERE wl.created_at >= bounds.s AND wl.created_at < bounds.e
  GROUP BY 1
)
SELECT d.day,
       COALESCE(r.registrations, 0) AS registrations,
       COALESCE(r.completed, 0) AS completed,
       COALESCE(r.confirmations, 0) AS confirmations,
       COALESCE(r.emails_sent, 0) AS emails_sent,
       r.avg_seconds, r.p50_seconds, r.p95_seconds, r.p99_seconds,
       COALESCE(h.error_count, 0) AS error_count,
       COALESCE(h.webhook_calls, 0) AS webhook_calls,
       ROUND(100.0 * r.confirmations / NULLIF(r.completed, 0), 2) AS success_rate
FROM days d
LEFT JOIN regs r ON r.day = d.day
LEFT JOIN hooks h ON h.day = d.day
ORDER BY d.day
"""

# Seed 000's error rate per webhook (non-200 answers of all calls), over the same week.
WEBHOOKS_SQL = """
WITH bounds AS (
  SELECT date_trunc('day', CAST(:now AS timestamptz), 'UTC') - INTERVAL '7 days' AS s,
         date_trunc('day', CAST(:now AS timestamptz), 'UTC') AS e
),
function_calls AS (
  SELECT webhook_name, COUNT(*) AS total_calls, COUNT(*) FILTER (WHERE status_code != 200) AS errors
  FROM webhook_logs, bounds
  WHERE created_at >= bounds.s AND created_at < bounds.e
  GROUP BY webhook_name
)
SELECT webhook_name, total_calls, errors,
       ROUND(100.0 * errors / NULLIF(total_calls, 0), 2) AS error_rate_percent
FROM function_calls
ORDER BY error_rate_percent DESC, webhook_name
"""

# Seed 000 "Capacity Planning / Growth Projections" (monthly growth analysis), as written but for the 12
# complete UTC months before :now's month: the seed's window (`created_at > NOW() - INTERVAL '12
# months'`) ends in the month still running, which on the 1st at 08:00 holds eight hours and would read
# as a -99% month. As in the seed, only months with registrations are rows (LAG is over those).
MONTHLY_SQL = """
WITH bounds AS (
  SELECT date_trunc('month', CAST(:now AS timestamptz), 'UTC') - INTERVAL '12 months' AS s,
         date_trunc('month', CAST(:now AS timestamptz), 'UTC') AS e
),
monthly_stats AS (
  SELECT date_trunc('month', created_at, 'UTC') AS month,
         COUNT(*) AS registrations,
         COUNT(DISTINCT customer_id) AS unique_customers,
         CAST(SUM(COUNT(*)) OVER (ORDER BY date_trunc('month', created_at, 'UTC')) AS bigint) AS cumulative_registrations
  FROM registrations, bounds
  WHERE created_at >= bounds.s AND created_at < bounds.e
  GROUP BY date_trunc('month', created_at, 'UTC')
)
SELECT month, registrations, unique_customers, cumulative_registrations,
       LAG(registrations) OVER (ORDER BY month) AS prev_month,
       ROUND(100.0 * (registrations - LAG(registrations) OVER (ORDER BY month)) /
             NULLIF(LAG(registrations) OVER (ORDER BY month), 0), 2) AS growth_rate_percent
FROM monthly_stats
ORDER BY month
"""


def _line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _plain(v: Any) -> Any:
    return float(v) if isinstance(v, Decimal) else v


def run(engine: Any, sql: str, now: datetime, *, timeout_ms: int = STATEMENT_TIMEOUT_MS) -> list[dict[str, Any]]:
    """`sql` (text() style, binding :now) READ ONLY with timeouts; rows as dicts (numerics as floats)."""
    query, _names = psycopg_text(sql)
    try:
        columns, rows = read_only_query(engine, query, {"now": now}, statement_timeout_ms=timeout_ms)
    except psycopg.errors.QueryCanceled as exc:
        raise ReportError(f"a report query ran past its statement timeout ({timeout_ms} ms): {exc}") from None
    except (psycopg.errors.ProgrammingError, psycopg.errors.DataError, psycopg.errors.InternalError,
            psycopg.errors.NotSupportedError) as exc:
        raise ReportError(f"the monitored database answered: {_line(exc)}") from None
    except (psycopg.OperationalError, ConnectionLost) as exc:  # (after QueryCanceled, one of them)
        raise ServiceUnavailable(f"cannot reach the monitored database: {_line(exc)}") from None
    return [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def week_of(now: datetime) -> tuple[date, date]:
    """The first and last day (UTC) the weekly report at `now` covers: the 7 days before now's day."""
    end = now.astimezone(UTC).date()
    return end - timedelta(days=7), end - timedelta(days=1)


def month_before(now: datetime) -> str:
    """The last month (YYYY-MM, UTC) the monthly report at `now` covers."""
    first = now.astimezone(UTC).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def weekly(engine: Any, now: datetime, *, timeout_ms: int = STATEMENT_TIMEOUT_MS) -> dict[str, Any]:
    days = run(engine, WEEKLY_SQL, now, timeout_ms=timeout_ms)
    hooks = run(engine, WEBHOOKS_SQL, now, timeout_ms=timeout_ms)
    first, last = week_of(now)
    completed = sum(d["completed"] for d in days)
    confirmations = sum(d["confirmations"] for d in days)
    p99s = [d["p99_seconds"] for d in days if d["p99_seconds"] is not None]
    totals = {
        "registrations": sum(d["registrations"] for d in days), "completed": completed,
        "confirmations": confirmations, "emails_sent": sum(d["emails_sent"] for d in days),
        "error_count": sum(d["error_count"] for d in days), "webhook_calls": sum(d["webhook_calls"] for d in days),
        "success_rate": round(100.0 * confirmations / completed, 2) if completed else None,
        "worst_p99_seconds": max(p99s) if p99s else None,
    }
    return {"kind": "weekly", "first": first.isoformat(), "last": last.isoformat(), "at": now.isoformat(),
            "days": days, "webhooks": hooks, "totals": totals}


def monthly(engine: Any, now: datetime, *, timeout_ms: int = STATEMENT_TIMEOUT_MS) -> dict[str, Any]:
    months = run(engine, MONTHLY_SQL, now, timeout_ms=timeout_ms)
    for m in months:
        m["month"] = m["month"].astimezone(UTC).strftime("%Y-%m")
    latest = months[-1] if months and months[-1]["month"] == month_before(now) else None
    return {"kind": "monthly", "month": month_before(now), "at": now.isoformat(), "months": months,
            "latest": latest}


KINDS = ("weekly", "monthly")


def collect(kind: str, engine: Any, now: datetime, *, timeout_ms: int = STATEMENT_TIMEOUT_MS,
            target: str | None = None) -> dict[str, Any]:
    """The figures of the `kind` report (weekly | monthly) at `now`, from `engine`: the database of
    `target` (a declared target's name, which the report then names; None: DATABASE_URL's)."""
    if kind not in KINDS:
        raise ValueError(f"unknown report {kind!r} (known: {', '.join(KINDS)})")
    return {**(weekly if kind == "weekly" else monthly)(engine, now, timeout_ms=timeout_ms), "target": target}


def period(data: dict[str, Any]) -> str:
    """What a report covers, for its dedup key and file name: the week's first day, or the month."""
    return data["first"] if data["kind"] == "weekly" else data["month"]


def engine_for(target: Any) -> Any:
    """Where the reports of `target` (worker.targets.Target) read: a declared target's database (its
    monitoring role, as its checks), or DATABASE_URL for the implicit one."""
    from worker.fleet.db import checks_engine, monitored_engine
    from worker.fleet.settings import get_settings

    return checks_engine(url=target.database_url(get_settings())) if target.where else monitored_engine()


def sources(cfg: Any) -> Any:
    """What the daily digest's seed 000 summary reads (worker.notify.digest.collect's `monitored`):
    DATABASE_URL's engine without targets.yaml, else target name -> engine for each target whose packs
    name the confirmations pack (the targets the reports are for)."""
    from worker.reports.spec import report_targets

    if not cfg.targets_declared:
        return engine_for(report_targets(cfg)[0])
    return {t.name: engine_for(t) for t in report_targets(cfg)}
