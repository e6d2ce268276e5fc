"""Seed 000's "Grafana Dashboard Configuration": its four panel groups as rows. Current figures are
the checks' values on /metrics (PromQL); counts per hour and breakdowns are SQL over the
application's tables, filtered by the dashboard's time range."""

from __future__ import annotations

from typing import Any

from ops.grafana.panels import Board, prom, query_variable, sql, thresholds

WEBHOOKS = "SELECT DISTINCT webhook_name FROM webhook_logs ORDER BY 1"


def _check(name: str) -> str:
    return f'opsfleet_check_value{{check="{name}"}}'


def dashboard() -> dict[str, Any]:
    b = Board("opsfleet-confirmations", "Confirmations: email system (seed 000)", refresh="1m",
              description="Seed 000's confirmation email system: registrations -> confirmation number -> email. "
                          "Gauges and stats read the checks of config/confirmations on /metrics; the rest is SQL "
                          "over the application's tables (the database picked on import); variable `target` "
                          "filters the figures on /metrics and the active alerts.", tags=("confirmations",))
    b.by_target()
    b.variables.append(query_variable("webhook", "Webhook", WEBHOOKS))

    b.row("System Overview")
    b.add(prom("Confirmation rate (target 99%)", "gauge", _check("confirmation_rate_low"), unit="percent",
               minmax=(0, 100), steps=thresholds((None, "red"), (95, "yellow"), (99, "green")), instant=True,
               description="Share of the last hour's paid registrations with a confirmation number (check "
                           "confirmation_rate_low, alert < 95%)."))
    b.add(prom("Email delivery rate (target 98%)", "gauge", _check("email_delivery_rate_low"), unit="percent",
               minmax=(0, 100), steps=thresholds((None, "red"), (95, "yellow"), (98, "green")), instant=True,
               description="Confirmation emails sent among those attempted in the last hour (check "
                           "email_delivery_rate_low, alert < 95%)."))
    b.add(prom("Current backlog", "stat", _check("confirmation_backlog"), unit="short", instant=True,
               steps=thresholds((None, "green"), (1, "yellow"), (11, "orange"), (21, "red")),
               description="Paid, completed registrations without a confirmation number (target 0; "
                           "ConfirmationBacklog pages above 20 for 15 minutes)."))
    b.add(sql("Active alerts", "table", """
        SELECT check_name AS "check", COALESCE(NULLIF(target, ''), 'default') AS target, severity, state,
               labels::text AS labels, last_value AS value, since, summary
        FROM fleet.alerts
        WHERE state IN ('firing', 'pending') AND labels->>'system' = 'confirmations'
          AND COALESCE(NULLIF(target, ''), 'default') IN ($target)
        ORDER BY CASE state WHEN 'firing' THEN 0 ELSE 1 END, since""", source="DS_FLEET",
        description="The confirmation checks' pending and firing alert instances (fleet.alerts) of the targets "
                    "chosen."))

    b.row("Time Series")
    b.add(sql("Registrations per hour", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h), COUNT(*) AS registrations,
               COUNT(*) FILTER (WHERE status = 'completed' AND payment_status = 'completed') AS paid
        FROM registrations WHERE $__timeFilter(created_at) GROUP BY 1 ORDER BY 1""", fmt="time_series",
        unit="short"))
    b.add(sql("Confirmations per hour", "timeseries", """
        SELECT $__timeGroupAlias(confirmation_generated_at, 1h), COUNT(*) AS confirmations
        FROM registrations WHERE $__timeFilter(confirmation_generated_at) GROUP BY 1 ORDER BY 1""",
        fmt="time_series", unit="short"))
    b.add(sql("Email sends per hour", "timeseries", """
        SELECT $__timeGroupAlias(sent_at, 1h),
               COUNT(*) FILTER (WHERE status = 'sent') AS sent,
               COUNT(*) FILTER (WHERE status = 'failed') AS failed,
               COUNT(*) FILTER (WHERE status = 'bounced') AS bounced
        FROM confirmation_emails WHERE $__timeFilter(sent_at) GROUP BY 1 ORDER BY 1""", fmt="time_series",
        unit="short"))
    b.add(sql("Error rate over time", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h), webhook_name AS metric,
               100.0 * COUNT(*) FILTER (WHERE status_code != 200) / COUNT(*) AS error_rate
        FROM webhook_logs WHERE $__timeFilter(created_at) AND webhook_name IN ($webhook)
        GROUP BY 1, 2 ORDER BY 1""", fmt="time_series", unit="percent",
        steps=thresholds((None, "green"), (1, "yellow"), (5, "red")),
        description="Non-200 webhook calls per function and hour (seed 000 Error Rate: target < 1%, alert > 5%)."))

    b.row("Performance Metrics")
    b.add(sql("Processing time histogram", "histogram", """
        SELECT EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at)) AS processing_seconds
        FROM registrations WHERE $__timeFilter(confirmation_generated_at)""", unit="s",
        options={"bucketSize": 1, "combine": False},
        description="Seconds from payment (updated_at) to confirmation number, each confirmation in the range."),
        w=8)
    b.add(prom("P95 latency trend", "timeseries", (_check("slow_confirmation_processing"), "p95"),
               (_check("confirmation_processing_time_high"), "mean"), unit="s",
               steps=thresholds((None, "green"), (3, "yellow"), (5, "red")),
               description="P95 and mean confirmation time over the last hour, as the checks measure it each "
                           "run (SlowConfirmationProcessing: p95 > 5 s for 10 minutes)."), w=8)
    b.add(sql("Function execution duration (p95)", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h), webhook_name AS metric,
               PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
        FROM webhook_logs WHERE $__timeFilter(created_at) AND webhook_name IN ($webhook)
        GROUP BY 1, 2 ORDER BY 1""", fmt="time_series", unit="ms",
        description="95th percentile of each function's call duration (webhook_logs.duration_ms) per hour."), w=8)

    b.row("Error Analysis")
    b.add(sql("Error types breakdown", "piechart", """
        SELECT COALESCE(error_message, status_code::text) AS error_type, COUNT(*) AS calls
        FROM webhook_logs WHERE $__timeFilter(created_at) AND status_code != 200 AND webhook_name IN ($webhook)
        GROUP BY 1 ORDER BY 2 DESC LIMIT 10""", options={"reduceOptions": {"values": True, "calcs": ["lastNotNull"]},
                                                       "pieType": "donut", "legend": {"displayMode": "table",
                                                                                      "placement": "right"}},
        description="The ten most common errors of failed function calls in the range."), w=8)
    b.add(sql("Failed email reasons", "table", """
        SELECT status, COALESCE(error, '(no error recorded)') AS reason, COUNT(*) AS emails, MAX(sent_at) AS last_seen
        FROM confirmation_emails WHERE $__timeFilter(sent_at) AND status IN ('failed', 'bounced')
        GROUP BY 1, 2 ORDER BY 3 DESC""", description="Failed and bounced confirmation emails by error."), w=8)
    b.add(sql("Webhook failure causes", "table", """
        SELECT webhook_name, status_code, COALESCE(error_message, '') AS cause, COUNT(*) AS calls,
               MAX(created_at) AS last_seen
        FROM webhook_logs WHERE $__timeFilter(created_at) AND status_code != 200 AND webhook_name IN ($webhook)
        GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 50""", description="Non-200 calls by function, status and message."),
        w=8)
    b.add(prom("Webhook error rate now (last hour)", "bargauge",
               ('opsfleet_check_value{check="webhook_error_rate_high"}', "{{webhook_name}}"), unit="percent",
               instant=True, steps=thresholds((None, "green"), (1, "yellow"), (5, "red")),
               options={"orientation": "horizontal", "displayMode": "gradient"},
               description="Check webhook_error_rate_high per function (export_labels: webhook_name; only "
                           "functions with 20+ calls in the hour)."), w=24, h=6)
    return b.json()
