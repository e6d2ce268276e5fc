"""Seed 004's three "Operational Dashboards": Real-Time Operations (ticketing-live), Quality Metrics
(ticketing-performance) and System Health (ticketing-errors), at the update frequency the seed gives
each. Live counts are SQL (they move faster than the checks' schedules); the rates the checks
measure are their values on /metrics (PromQL)."""

from __future__ import annotations

from typing import Any

from ops.grafana.panels import Board, prom, sql, thresholds

CHECKS = ("double_booking_attempts", "reservation_cleanup_job_failed", "payment_processing_down",
          "reservation_success_rate_low", "reservation_expiration_rate_high_1h", "reservation_expiration_rate_high",
          "reservation_hold_time_long", "reservation_cleanup_job_health", "expired_reservations_not_released",
          "payment_failure_rate_high", "active_reservations_high")


def _check(name: str) -> str:
    return f'opsfleet_check_value{{check="{name}"}}'


def live() -> dict[str, Any]:
    b = Board("opsfleet-ticketing-live", "Ticketing: real-time operations (seed 004)", refresh="30s",
              time_from="now-24h", tags=("ticketing",),
              description="Seed 004 Dashboard 1 (Real-Time Operations, every 30 s): the seed's real-time "
                          "dashboard query, one figure a panel.")
    b.by_target()
    b.row("Now")
    b.add(sql("Active reservations", "stat", """
        SELECT COUNT(*) AS active_reservations FROM seat_reservations WHERE is_active = true AND expires_at > now()""",
        steps=thresholds((None, "green"), (1000, "orange")),
        description="Live count (seed 004 Key Metrics 6; capacity planning above 1000)."), w=4)
    b.add(sql("Expiring within 2 minutes", "stat", """
        SELECT COUNT(*) AS expiring_soon FROM seat_reservations
        WHERE is_active = true AND expires_at > now() AND expires_at < now() + interval '2 minutes'"""), w=4)
    b.add(sql("Reservations created (last hour)", "stat", """
        SELECT COUNT(*) AS reservations_last_hour FROM seat_reservation_audit_log
        WHERE event_type = 'created' AND created_at > now() - interval '1 hour'"""), w=4)
    b.add(sql("Tickets sold today", "stat", """
        SELECT COUNT(*) AS tickets_sold_today FROM tickets WHERE created_at > CURRENT_DATE"""), w=4)
    b.add(sql("Revenue today", "stat", """
        SELECT COALESCE(ROUND(SUM(total_amount_in_cents) / 100.0, 2), 0) AS revenue_today FROM ticket_orders
        WHERE status = 'paid' AND created_at > CURRENT_DATE""", unit="currencyUSD"), w=4)
    b.add(prom("Ticketing alerts firing", "stat",
               f'sum(opsfleet_check_state{{check=~"{"|".join(CHECKS)}", state="firing"}})', instant=True,
               steps=thresholds((None, "green"), (1, "red")),
               description="Alert instances of the ticketing checks firing now (opsfleet_check_state)."), w=4)
    b.row("Cleanup and activity")
    b.add(sql("Last cleanup run", "table", """
        SELECT start_time, status, expired_count, duration_seconds, error_message
        FROM reservation_cleanup_job_status LIMIT 1""",
        description="The newest run of cleanup_expired_seat_reservations() (reservation_cleanup_job_status)."),
        w=8)
    b.add(sql("Reservation activity per hour", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h),
               COUNT(*) FILTER (WHERE event_type = 'created') AS created,
               COUNT(*) FILTER (WHERE event_type = 'completed') AS completed,
               COUNT(*) FILTER (WHERE event_type = 'expired') AS expired,
               COUNT(*) FILTER (WHERE event_type = 'failed') AS failed
        FROM seat_reservation_audit_log WHERE $__timeFilter(created_at) GROUP BY 1 ORDER BY 1""",
        fmt="time_series", unit="short", description="Seed 004 Hourly Metrics (for trending)."), w=16)
    return b.json()


def performance() -> dict[str, Any]:
    b = Board("opsfleet-ticketing-performance", "Ticketing: quality metrics (seed 004)", refresh="5m",
              time_from="now-24h", tags=("ticketing",),
              description="Seed 004 Dashboard 2 (Quality Metrics, every 5 minutes): how well the reservation "
                          "and checkout flow performs, as the ticketing checks measure it, and its hourly trend.")
    b.by_target()
    b.row("Quality (24 h)")
    b.add(prom("Reservation success rate", "gauge", _check("reservation_success_rate_low"), unit="percent",
               minmax=(0, 100), instant=True, steps=thresholds((None, "red"), (90, "yellow"), (95, "green")),
               description="created / (created + failed) attempts of the last hour (target > 95%, alert < 90%)."),
          w=5)
    b.add(sql("Double-booking attempts", "stat", """
        SELECT COUNT(*) AS double_booking_attempts FROM seat_reservation_audit_log
        WHERE event_type = 'failed' AND error_message LIKE '%constraint%' AND $__timeFilter(created_at)""",
        steps=thresholds((None, "green"), (1, "red")),
        description="Failed reservations stopped by the database constraint in the range (target 0)."), w=5)
    b.add(prom("Expiration rate", "gauge", _check("reservation_expiration_rate_high"), unit="percent",
               minmax=(0, 100), instant=True, steps=thresholds((None, "green"), (50, "yellow"), (80, "red")),
               description="Reservations of the last 24 h that expired without an order (target < 50%, alert "
                           "> 80%)."), w=5)
    b.add(prom("Average hold time", "stat", _check("reservation_hold_time_long"), unit="m", instant=True,
               steps=thresholds((None, "green"), (8, "yellow"), (15, "red")),
               description="Minutes from reservation to completion or expiry (target 5-8, alert > 15)."), w=4)
    b.add(prom("Payment failure rate", "gauge", _check("payment_failure_rate_high"), unit="percent",
               minmax=(0, 100), instant=True, steps=thresholds((None, "green"), (5, "red")),
               description="Failed orders of the last 24 hours (alert > 5%; > 20% in 15 minutes pages)."), w=5)
    b.row("Trends")
    b.add(sql("Success and completion rate per hour", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h),
               100.0 * COUNT(*) FILTER (WHERE event_type = 'created')
                 / NULLIF(COUNT(*) FILTER (WHERE event_type IN ('created', 'failed')), 0) AS success_rate,
               100.0 * COUNT(*) FILTER (WHERE event_type = 'completed')
                 / NULLIF(COUNT(*) FILTER (WHERE event_type = 'created'), 0) AS completion_rate,
               100.0 * COUNT(*) FILTER (WHERE event_type = 'expired')
                 / NULLIF(COUNT(*) FILTER (WHERE event_type = 'created'), 0) AS expiration_rate
        FROM seat_reservation_audit_log WHERE $__timeFilter(created_at) GROUP BY 1 ORDER BY 1""",
        fmt="time_series", unit="percent"), w=12)
    b.add(sql("Payment failure rate per hour", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h),
               100.0 * COUNT(*) FILTER (WHERE status = 'failed') / COUNT(*) AS failure_rate, COUNT(*) AS orders
        FROM ticket_orders WHERE $__timeFilter(created_at) GROUP BY 1 ORDER BY 1""", fmt="time_series",
        options={"legend": {"displayMode": "list", "placement": "bottom"}}), w=12)
    b.add(prom("Hold time and expiration rate as the checks saw them", "timeseries",
               (_check("reservation_hold_time_long"), "hold minutes"),
               (_check("reservation_expiration_rate_high_1h"), "expired % (1 h)"),
               description="The checks' values over time (Prometheus history)."), w=24)
    return b.json()


def errors() -> dict[str, Any]:
    b = Board("opsfleet-ticketing-errors", "Ticketing: system health and errors (seed 004)", refresh="1m",
              time_from="now-6h", tags=("ticketing",),
              description="Seed 004 Dashboard 3 (System Health, every minute): the cleanup job, the database's "
                          "connections, request load and the errors of the reservation and payment endpoints. "
                          "The seed's API response times need request logs the application does not keep: the "
                          "nearest figures are orders per minute (the seed's rate-limit query) and the "
                          "database's mean query time.")
    b.by_target()
    b.row("Cleanup job")
    b.add(prom("Cleanup job problems", "stat",
               ('opsfleet_check_state{check="reservation_cleanup_job_health", state="firing"}', "{{problem}}"),
               instant=True, steps=thresholds((None, "green"), (1, "red")),
               options={"textMode": "value_and_name", "colorMode": "background"},
               description="no_run_10m, failed_run, slow_run (check reservation_cleanup_job_health, "
                           "export_labels: problem): 1 while firing."), w=8)
    b.add(sql("Cleanup run duration", "timeseries", """
        SELECT start_time AS "time", EXTRACT(EPOCH FROM (end_time - start_time)) AS duration_seconds,
               expired_count
        FROM reservation_cleanup_runs WHERE $__timeFilter(start_time) ORDER BY 1""", fmt="time_series",
        description="Each run of the cleanup (alert when one takes over 30 s)."), w=8)
    b.add(sql("Recent cleanup runs", "table", """
        SELECT start_time, status, expired_count, duration_seconds, error_message
        FROM reservation_cleanup_job_status LIMIT 10"""), w=8)
    b.row("Database and load")
    b.add(prom("Connections (% of max_connections)", "timeseries", (_check("db_connections_high"), "of max"),
               (_check("db_connections_near_limit"), "of the slots for applications"), unit="percent",
               steps=thresholds((None, "green"), (70, "yellow"), (90, "red")),
               description="The database connection pool's use (postgres pack checks)."), w=8)
    b.add(sql("Sessions by state", "piechart", """
        SELECT COALESCE(state, backend_type) AS state, COUNT(*) AS sessions FROM pg_stat_activity
        WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC""",
        options={"reduceOptions": {"values": True, "calcs": ["lastNotNull"]}, "pieType": "donut"}), w=8)
    b.add(sql("Order requests per minute", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1m), COUNT(*) AS requests
        FROM ticket_orders WHERE $__timeFilter(created_at) GROUP BY 1 ORDER BY 1""", fmt="time_series",
        description="Seed 004 Troubleshooting / Payment Intent Creation Failing: requests per minute."), w=8)
    b.row("Errors")
    b.add(sql("Error rate by endpoint", "timeseries", """
        SELECT $__timeGroupAlias(created_at, 1h), 'reserve' AS metric,
               100.0 * COUNT(*) FILTER (WHERE event_type = 'failed')
                 / NULLIF(COUNT(*) FILTER (WHERE event_type IN ('created', 'failed')), 0) AS error_rate
        FROM seat_reservation_audit_log WHERE $__timeFilter(created_at) GROUP BY 1, 2
        UNION ALL
        SELECT $__timeGroupAlias(created_at, 1h), 'pay' AS metric,
               100.0 * COUNT(*) FILTER (WHERE status = 'failed') / COUNT(*) AS error_rate
        FROM ticket_orders WHERE $__timeFilter(created_at) GROUP BY 1, 2 ORDER BY 1""", fmt="time_series",
        unit="percent", description="Failed reservation attempts and failed payments, per hour."), w=12)
    b.add(sql("Top errors", "table", """
        SELECT error_message, COUNT(*) AS occurrences, MAX(created_at) AS last_seen
        FROM seat_reservation_audit_log WHERE event_type = 'failed' AND $__timeFilter(created_at)
        GROUP BY error_message ORDER BY occurrences DESC LIMIT 10""",
        description="Seed 004 Top Errors: the most common messages of failed reservations."), w=12)
    b.add(sql("Payment failure reasons", "table", """
        SELECT COALESCE(failure_reason, '(none recorded)') AS reason, COUNT(*) AS orders, MAX(created_at) AS last_seen
        FROM ticket_orders WHERE status = 'failed' AND $__timeFilter(created_at)
        GROUP BY 1 ORDER BY 2 DESC LIMIT 10"""), w=12)
    b.add(prom("Double bookings stopped (check state)", "stat",
               ('opsfleet_check_state{check="double_booking_attempts", state="firing"}', "firing"), instant=True,
               steps=thresholds((None, "green"), (1, "red")),
               description="1 while double_booking_attempts fires (kept 24 h, until acknowledged)."), w=12)
    return b.json()
