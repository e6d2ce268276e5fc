"""The sample application: its schema carries every table and column the five seed guides' SQL uses,
the seeds' queries run against seeded data, and seed() plants each problem it promises."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from ops.sample_app import init, planted_problems, seed

SCALE = 2000

# table -> the columns the seeds' SQL (and the fleet's checks) rely on
SEED_COLUMNS = {
    "registrations": {"id", "customer_id", "status", "payment_status", "confirmation_number",
                      "confirmation_generated_at", "email_status", "email", "created_at", "updated_at"},
    "confirmation_emails": {"registration_id", "recipient", "status", "sent_at", "provider_id", "error", "created_at"},
    "webhook_logs": {"id", "webhook_name", "status_code", "created_at", "payload"},
    "webhook_logs_archive": {"id", "webhook_name", "status_code", "created_at", "payload"},
    "maintenance_log": {"task", "completed_at"},
    "system_alerts": {"id", "alert_type", "title", "message", "severity", "metadata", "dismissed", "is_read",
                      "created_at", "resolved_at"},
    "error_logs": {"severity", "category", "message", "function_name", "error_details", "occurred_at"},
    "performance_metrics": {"metric_type", "metric_name", "duration_ms", "metadata", "client_id", "recorded_at"},
    "sms_delivery_log": {"delivery_status", "created_at"},
    "user_sessions": {"last_active_at"},
    "rate_limit_logs": {"created_at"},
    "backup_log": {"started_at", "completed_at", "status", "size_bytes"},
    "whatsapp_notifications": {"status", "created_at", "sent_at"},
    "whatsapp_error_logs": {"id", "error_type", "created_at"},
    "whatsapp_sessions": {"session_id", "phone_number", "is_active", "updated_at"},
    "seat_reservations": {"id", "show_id", "session_id", "is_active", "expires_at", "created_at"},
    "reservation_seats": {"reservation_id", "seat_id"},
    "show_seats": {"id", "show_id", "status"},
    "seat_reservation_audit_log": {"reservation_id", "event_type", "error_message", "seat_ids", "created_at"},
    "ticket_orders": {"status", "total_amount_in_cents", "created_at"},
    "tickets": {"created_at"},
    "reservation_cleanup_runs": {"start_time", "end_time", "status", "expired_count"},
}

# The seeds' own queries (whitespace condensed), by seed and heading.
SEED_QUERIES = {
    "000 confirmation success rate": """
        WITH recent_registrations AS (
          SELECT COUNT(*) as total, COUNT(CASE WHEN confirmation_number IS NOT NULL THEN 1 END) as with_confirmation
          FROM registrations WHERE created_at > NOW() - INTERVAL '1 hour'
            AND status = 'completed' AND payment_status = 'completed')
        SELECT total as total_registrations, with_confirmation as confirmations_generated,
          ROUND(100.0 * with_confirmation / NULLIF(total, 0), 2) as success_rate_percent FROM recent_registrations""",
    "000 email delivery rate": """
        WITH email_stats AS (
          SELECT COUNT(*) as total_attempts, COUNT(CASE WHEN status = 'sent' THEN 1 END) as successful,
            COUNT(CASE WHEN status = 'failed' THEN 1 END) as failed,
            COUNT(CASE WHEN status = 'bounced' THEN 1 END) as bounced
          FROM confirmation_emails WHERE sent_at > NOW() - INTERVAL '1 hour')
        SELECT total_attempts, successful, failed, bounced,
          ROUND(100.0 * successful / NULLIF(total_attempts, 0), 2) as delivery_rate_percent FROM email_stats""",
    "000 processing time": """
        SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY processing_time) as median_seconds,
          PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY processing_time) as p95_seconds,
          PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY processing_time) as p99_seconds,
          MAX(processing_time) as max_seconds
        FROM (SELECT EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at)) as processing_time
              FROM registrations WHERE confirmation_generated_at IS NOT NULL
                AND confirmation_generated_at > NOW() - INTERVAL '1 hour') t""",
    "000 error rate": """
        WITH function_calls AS (
          SELECT webhook_name, COUNT(*) as total_calls, COUNT(CASE WHEN status_code != 200 THEN 1 END) as errors
          FROM webhook_logs WHERE created_at > NOW() - INTERVAL '1 hour' GROUP BY webhook_name)
        SELECT webhook_name, total_calls, errors,
          ROUND(100.0 * errors / NULLIF(total_calls, 0), 2) as error_rate_percent FROM function_calls""",
    "000 pending confirmations": """
        SELECT COUNT(*) as backlog_size, MIN(updated_at) as oldest_pending, MAX(updated_at) as newest_pending,
          EXTRACT(EPOCH FROM (NOW() - MIN(updated_at)))/60 as oldest_minutes_ago
        FROM registrations
        WHERE status = 'completed' AND payment_status = 'completed' AND confirmation_number IS NULL""",
    "000 monitoring view": "SELECT * FROM email_system_monitoring",
    "000 daily summary": "SELECT * FROM daily_email_summary()",
    "000 weekly report": "SELECT * FROM weekly_performance_report()",
    "000 trigger": """SELECT tgname, tgenabled FROM pg_trigger WHERE tgname = 'registration_payment_webhook_trigger'""",
    "000 monthly growth": """
        WITH monthly_stats AS (
          SELECT date_trunc('month', created_at) as month, COUNT(*) as registrations,
            COUNT(DISTINCT customer_id) as unique_customers,
            SUM(COUNT(*)) OVER (ORDER BY date_trunc('month', created_at)) as cumulative_registrations
          FROM registrations WHERE created_at > NOW() - INTERVAL '12 months'
          GROUP BY date_trunc('month', created_at))
        SELECT month, registrations, unique_customers, cumulative_registrations,
          LAG(registrations) OVER (ORDER BY month) as prev_month,
          ROUND(100.0 * (registrations - LAG(registrations) OVER (ORDER BY month)) /
            NULLIF(LAG(registrations) OVER (ORDER BY month), 0), 2) as growth_rate_percent
        FROM monthly_stats ORDER BY month DESC""",
    "001 error rate threshold": """
        SELECT COUNT(*) FROM error_logs
        WHERE occurred_at >= NOW() - INTERVAL '1 hour' AND severity IN ('high', 'critical')""",
    "001 performance degradation": """
        SELECT AVG(duration_ms) FROM performance_metrics
        WHERE metric_type = 'edge_function' AND recorded_at >= NOW() - INTERVAL '1 hour'""",
    "001 sms delivery failures": """
        SELECT COUNT(*) FILTER (WHERE delivery_status = 'failed'), COUNT(*)
        FROM sms_delivery_log WHERE created_at >= NOW() - INTERVAL '1 hour'""",
    "001 open alerts": """
        SELECT * FROM system_alerts WHERE dismissed = false ORDER BY created_at DESC LIMIT 10""",
    "001 active users": """
        SELECT COUNT(*) FROM user_sessions WHERE last_active_at >= NOW() - INTERVAL '15 minutes'""",
    "001 get_error_rate": "SELECT * FROM get_error_rate(60)",
    "001 verify_latest_backup": "SELECT verify_latest_backup()",
    "002 active connections": "SELECT count(*) as active_connections FROM pg_stat_activity WHERE state = 'active'",
    "002 cache hit ratio": """
        SELECT round(blks_hit::numeric / (blks_hit + blks_read) * 100, 2) as cache_hit_ratio
        FROM pg_stat_database WHERE datname = current_database()""",
    "002 unused indexes": """
        SELECT schemaname, relname, indexrelname, idx_scan FROM pg_stat_user_indexes
        WHERE idx_scan = 0 AND NOT indexrelname LIKE '%_pkey'""",
    "002 index usage stats": "SELECT * FROM index_usage_stats WHERE usage_status IN ('UNUSED', 'RARELY_USED')",
    "002 table stats": "SELECT * FROM get_table_stats()",
    "002 dead tuples": "SELECT count(*) FROM get_table_stats() WHERE n_dead_tup > n_live_tup * 0.2",
    "002 cache stats": "SELECT * FROM get_cache_stats()",
    "002 lock stats": "SELECT * FROM get_lock_stats()",
    "002 index stats": "SELECT * FROM get_index_stats()",
    "002 summary": "SELECT * FROM wedsync_performance_summary",
    "002 slow queries": "SELECT count(*) FROM get_slow_queries(100)",
    "003 delivery rate": """
        SELECT COUNT(*) as total, SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END) as successful,
          SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) as failed,
          ROUND(100.0 * SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END) / COUNT(*), 2) as delivery_rate
        FROM whatsapp_notifications WHERE created_at > NOW() - INTERVAL '24 hours'""",
    "003 top errors": """
        SELECT error_type, COUNT(*) as count, MAX(created_at) as last_occurrence FROM whatsapp_error_logs
        WHERE created_at > NOW() - INTERVAL '24 hours' GROUP BY error_type ORDER BY count DESC LIMIT 10""",
    "003 active sessions": """
        SELECT session_id, phone_number, is_active, updated_at,
          EXTRACT(EPOCH FROM (NOW() - updated_at)) / 3600 as hours_since_update
        FROM whatsapp_sessions WHERE is_active = true""",
    "004 reservation success rate": """
        SELECT COUNT(*) FILTER (WHERE event_type = 'created') as total_attempts,
          COUNT(*) FILTER (WHERE event_type = 'failed' AND error_message LIKE '%taken by another%') as race_conditions,
          COUNT(*) FILTER (WHERE event_type = 'failed' AND error_message NOT LIKE '%taken by another%') as system_errors,
          ROUND(100.0 * COUNT(*) FILTER (WHERE event_type = 'created') / NULLIF(COUNT(*), 0), 2) as success_rate_pct
        FROM seat_reservation_audit_log WHERE created_at > NOW() - INTERVAL '1 hour'""",
    "004 double booking": """
        SELECT COUNT(*) FROM seat_reservation_audit_log WHERE event_type = 'failed'
          AND error_message LIKE '%constraint%' AND created_at > NOW() - INTERVAL '24 hours'""",
    "004 expiration rate": """
        WITH stats AS (SELECT * FROM get_reservation_statistics(NULL, 24))
        SELECT total_created, total_completed, total_expired,
          ROUND(100.0 * total_expired / NULLIF(total_created, 0), 2) as expiration_rate_pct FROM stats""",
    "004 hold time": """
        SELECT AVG(EXTRACT(EPOCH FROM (completed_at - created_at))) / 60 as avg_minutes
        FROM (SELECT reservation_id,
                MIN(created_at) FILTER (WHERE event_type = 'created') as created_at,
                MIN(created_at) FILTER (WHERE event_type IN ('completed', 'expired')) as completed_at
              FROM seat_reservation_audit_log WHERE created_at > NOW() - INTERVAL '24 hours'
              GROUP BY reservation_id
              HAVING MIN(created_at) FILTER (WHERE event_type IN ('completed', 'expired')) IS NOT NULL) subq""",
    "004 cleanup job status": "SELECT * FROM reservation_cleanup_job_status LIMIT 10",
    "004 active reservations": """
        SELECT COUNT(*) as active_reservations,
          COUNT(*) FILTER (WHERE expires_at < NOW() + INTERVAL '2 minutes') as expiring_soon,
          SUM((SELECT COUNT(*) FROM reservation_seats WHERE reservation_id = seat_reservations.id)) as total_seats_held
        FROM seat_reservations WHERE is_active = true AND expires_at > NOW()""",
    "004 payment failures": """
        SELECT COUNT(*) as total_orders, COUNT(*) FILTER (WHERE status = 'failed') as failed_orders,
          ROUND(100.0 * COUNT(*) FILTER (WHERE status = 'failed') / NULLIF(COUNT(*), 0), 2) as failure_rate_pct
        FROM ticket_orders WHERE created_at > NOW() - INTERVAL '24 hours'""",
    "004 live dashboard": """
        SELECT (SELECT COUNT(*) FROM seat_reservations WHERE is_active = true AND expires_at > NOW()),
          (SELECT COUNT(*) FROM seat_reservation_audit_log
            WHERE event_type = 'created' AND created_at > NOW() - INTERVAL '1 hour'),
          (SELECT COUNT(*) FROM tickets WHERE created_at > CURRENT_DATE),
          (SELECT ROUND(SUM(total_amount_in_cents) / 100.0, 2) FROM ticket_orders
            WHERE status = 'paid' AND created_at > CURRENT_DATE)""",
    "004 hourly metrics": """
        SELECT date_trunc('hour', created_at) as hour,
          COUNT(*) FILTER (WHERE event_type = 'created') as reservations_created,
          COUNT(*) FILTER (WHERE event_type = 'completed') as reservations_completed,
          COUNT(*) FILTER (WHERE event_type = 'expired') as reservations_expired,
          COUNT(*) FILTER (WHERE event_type = 'failed') as reservations_failed,
          ROUND(100.0 * COUNT(*) FILTER (WHERE event_type = 'completed') /
            NULLIF(COUNT(*) FILTER (WHERE event_type = 'created'), 0), 2) as completion_rate_pct
        FROM seat_reservation_audit_log WHERE created_at > NOW() - INTERVAL '24 hours'
        GROUP BY hour ORDER BY hour DESC""",
    "004 top errors": """
        SELECT error_message, COUNT(*) as occurrences, MAX(created_at) as last_seen
        FROM seat_reservation_audit_log WHERE event_type = 'failed' AND created_at > NOW() - INTERVAL '24 hours'
        GROUP BY error_message ORDER BY occurrences DESC LIMIT 10""",
    "004 extension trends": """
        SELECT DATE(created_at) as date, COUNT(*) as extensions, COUNT(DISTINCT reservation_id) as unique_reservations
        FROM seat_reservation_audit_log WHERE event_type = 'extended' AND created_at > NOW() - INTERVAL '7 days'
        GROUP BY date ORDER BY date DESC""",
    "004 double-booked seats": """
        SELECT * FROM show_seats WHERE id IN (SELECT unnest(seat_ids) FROM seat_reservation_audit_log
          WHERE error_message LIKE '%constraint%')""",
    "004 orders per minute": """
        SELECT DATE_TRUNC('minute', created_at) as minute, COUNT(*) as requests FROM ticket_orders
        WHERE created_at > NOW() - INTERVAL '1 hour' GROUP BY minute ORDER BY minute DESC""",
}

# Each planted problem as one SQL boolean that must be true right after seeding.
PLANTED = {
    "confirmation backlog >= 25, updated 20-60 min ago": """
        SELECT COUNT(*) >= 25 AND MIN(updated_at) > NOW() - INTERVAL '60 minutes'
           AND MAX(updated_at) < NOW() - INTERVAL '20 minutes'
        FROM registrations
        WHERE status = 'completed' AND payment_status = 'completed' AND confirmation_number IS NULL""",
    "one webhook > 30% errors in the last hour, the others <= 1%": """
        SELECT bool_and(CASE WHEN webhook_name = 'generate-confirmation' THEN rate > 0.30 ELSE rate <= 0.01 END)
           AND COUNT(*) = 5
        FROM (SELECT webhook_name, AVG((status_code != 200)::int) AS rate FROM webhook_logs
              WHERE created_at > NOW() - INTERVAL '1 hour' GROUP BY webhook_name) w""",
    "overall webhook error rate > 10% in the last hour": """
        SELECT AVG((status_code != 200)::int) > 0.10 FROM webhook_logs WHERE created_at > NOW() - INTERVAL '1 hour'""",
    "p95 processing time > 5 s over the last hour": """
        SELECT PERCENTILE_CONT(0.95) WITHIN GROUP (
                 ORDER BY EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at))) > 5
           AND PERCENTILE_CONT(0.5) WITHIN GROUP (
                 ORDER BY EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at))) < 3
        FROM registrations WHERE confirmation_generated_at > NOW() - INTERVAL '1 hour'""",
    "confirmations still being generated in the last 10 minutes": """
        SELECT COUNT(*) > 0 FROM registrations WHERE confirmation_generated_at > NOW() - INTERVAL '10 minutes'""",
    "email delivery healthy (>= 95%) in the last hour": """
        SELECT AVG((status = 'sent')::int) >= 0.95 FROM confirmation_emails WHERE sent_at > NOW() - INTERVAL '1 hour'""",
    "SMS failure rate > 10% in the last hour": """
        SELECT AVG((delivery_status = 'failed')::int) > 0.10 FROM sms_delivery_log
        WHERE created_at >= NOW() - INTERVAL '1 hour'""",
    "stale active WhatsApp session (> 24 h)": """
        SELECT COUNT(*) = 1 FROM whatsapp_sessions WHERE is_active AND updated_at < NOW() - INTERVAL '24 hours'""",
    "WhatsApp delivery < 90% with > 10 messages (24 h and 1 h)": """
        SELECT bool_and(n > 10 AND rate < 0.90) FROM (
          SELECT COUNT(*) AS n, AVG((status = 'sent')::int) AS rate FROM whatsapp_notifications
           WHERE created_at > NOW() - INTERVAL '24 hours'
          UNION ALL
          SELECT COUNT(*), AVG((status = 'sent')::int) FROM whatsapp_notifications
           WHERE created_at > NOW() - INTERVAL '1 hour') r""",
    "WhatsApp errors > 20 (and <= 50) in the last hour": """
        SELECT COUNT(*) > 20 AND COUNT(*) <= 50 FROM whatsapp_error_logs WHERE created_at > NOW() - INTERVAL '1 hour'""",
    "WhatsApp error logs older than 30 days": """
        SELECT COUNT(*) > 0 FROM whatsapp_error_logs WHERE created_at < NOW() - INTERVAL '30 days'""",
    "expired reservations still active, their seats reserved": """
        SELECT COUNT(DISTINCT r.id) = 12 AND bool_and(s.status = 'reserved')
        FROM seat_reservations r JOIN reservation_seats rs ON rs.reservation_id = r.id
        JOIN show_seats s ON s.id = rs.seat_id
        WHERE r.is_active AND r.expires_at < NOW()""",
    "cleanup job: no run for 10 min, the last one failed after > 30 s": """
        SELECT start_time < NOW() - INTERVAL '10 minutes' AND status = 'failed' AND duration_seconds > 30
        FROM reservation_cleanup_job_status LIMIT 1""",
    "webhook_logs older than 90 days": """
        SELECT COUNT(*) > 0 FROM webhook_logs WHERE created_at < NOW() - INTERVAL '90 days'""",
    "rate_limit_logs older than 24 hours": """
        SELECT COUNT(*) > 0 FROM rate_limit_logs WHERE created_at < NOW() - INTERVAL '24 hours'""",
    "> 5 high/critical errors in the last hour": """
        SELECT COUNT(*) > 5 FROM error_logs
        WHERE occurred_at >= NOW() - INTERVAL '1 hour' AND severity IN ('high', 'critical')""",
    "edge functions average > 3000 ms in the last hour": """
        SELECT AVG(duration_ms) > 3000 FROM performance_metrics
        WHERE metric_type = 'edge_function' AND recorded_at >= NOW() - INTERVAL '1 hour'""",
    "ticket payment failures > 5% over 24 h, not > 20% over 15 min": """
        SELECT (SELECT AVG((status = 'failed')::int) > 0.05 FROM ticket_orders
                 WHERE created_at > NOW() - INTERVAL '24 hours')
           AND (SELECT NOT COUNT(*) FILTER (WHERE status = 'failed') > COUNT(*) * 0.2 FROM ticket_orders
                 WHERE created_at > NOW() - INTERVAL '15 minutes')""",
    "a double booking hit the constraint in the last 5 minutes": """
        SELECT COUNT(*) > 0 FROM seat_reservation_audit_log WHERE event_type = 'failed'
          AND error_message LIKE '%constraint%' AND created_at > NOW() - INTERVAL '5 minutes'""",
    "the latest backup is fine": "SELECT ok FROM verify_latest_backup()",
}


@pytest.fixture(scope="module")
def seeded(fresh_database):
    engine = sa.create_engine(fresh_database(), poolclass=NullPool)
    init(engine)
    written = seed(engine, SCALE)
    yield engine, written
    engine.dispose()


def _scalar(engine: sa.Engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar_one()


def test_init_is_idempotent_and_concurrent_inits_do_not_collide(fresh_database):
    engine = sa.create_engine(fresh_database(), poolclass=NullPool)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            init(engine)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    init(engine)
    assert errors == []
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )).all()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    missing = {t: sorted(cols - columns.get(t, set())) for t, cols in SEED_COLUMNS.items()
               if cols - columns.get(t, set())}
    assert missing == {}
    engine.dispose()


def test_seed_writes_scale_registrations_and_reports_what_it_wrote(seeded):
    engine, written = seeded
    assert written["registrations"] == SCALE
    assert set(SEED_COLUMNS) - {"webhook_logs_archive"} <= set(written)
    for table, count in written.items():
        assert count > 0, table
        assert _scalar(engine, f'SELECT COUNT(*) FROM "{table}"') == count, table  # noqa: S608 - fixed names
    assert written["webhook_logs"] == 2 * SCALE


@pytest.mark.parametrize("name", SEED_QUERIES)
def test_seed_query_runs_against_seeded_data(seeded, name):
    engine, _ = seeded
    with engine.connect() as conn:
        rows = conn.execute(sa.text(SEED_QUERIES[name])).all()
    assert rows, name


@pytest.mark.parametrize("problem", PLANTED)
def test_seed_plants_problem(seeded, problem):
    engine, _ = seeded
    assert _scalar(engine, PLANTED[problem]) is True


def test_planted_problems_are_described():
    described = planted_problems()
    assert len(described) >= 10 and all(isinstance(d, str) and d for d in described)


def test_cleanup_expired_seat_reservations_frees_them_and_records_the_run(seeded):
    engine, _ = seeded
    with engine.connect() as conn, conn.begin() as txn:
        q = lambda sql: conn.execute(sa.text(sql)).scalar_one()  # noqa: E731
        expired_ids = conn.execute(sa.text(
            "SELECT id FROM seat_reservations WHERE is_active AND expires_at < NOW() ORDER BY id")).scalars().all()
        seats = q("""SELECT COUNT(*) FROM reservation_seats rs JOIN seat_reservations r ON r.id = rs.reservation_id
                     WHERE r.is_active AND r.expires_at < NOW()""")
        reserved_before = q("SELECT COUNT(*) FROM show_seats WHERE status = 'reserved'")

        assert q("SELECT cleanup_expired_seat_reservations()") == len(expired_ids) == 12

        assert q("SELECT COUNT(*) FROM seat_reservations WHERE is_active AND expires_at < NOW()") == 0
        assert q("SELECT COUNT(*) FROM seat_reservations WHERE is_active") == 8  # the live ones are untouched
        assert q("SELECT COUNT(*) FROM show_seats WHERE status = 'reserved'") == reserved_before - seats
        audited = conn.execute(sa.text(
            "SELECT reservation_id FROM seat_reservation_audit_log WHERE event_type = 'expired' "
            "AND created_at = NOW() ORDER BY reservation_id")).scalars().all()
        assert audited == expired_ids
        run = conn.execute(sa.text("SELECT status, expired_count FROM reservation_cleanup_job_status LIMIT 1")).one()
        assert tuple(run) == ("succeeded", 12)
        assert q("SELECT cleanup_expired_seat_reservations()") == 0  # nothing left: a second run is a no-op
        txn.rollback()


def test_report_functions_take_a_fixed_instant(seeded):
    engine, _ = seeded
    at = datetime.now(UTC)
    with engine.connect() as conn:
        summary = dict(conn.execute(sa.text("SELECT * FROM daily_email_summary(:at)"), {"at": at}).all())
        weekly = conn.execute(sa.text("SELECT * FROM weekly_performance_report(:at)"), {"at": at}).all()
        stats = conn.execute(sa.text("SELECT * FROM get_reservation_statistics(NULL, 24, :at)"), {"at": at}).one()
        long_ago = conn.execute(sa.text("SELECT total_created FROM get_reservation_statistics(NULL, 1, :at)"),
                                {"at": datetime(2000, 1, 1, tzinfo=UTC)}).scalar_one()
    assert int(summary["Current Backlog"]) >= 25
    assert 7 <= len(weekly) <= 8 and sum(day.error_count for day in weekly) > 0
    assert stats.total_created > 0 and 0 < stats.expiration_rate < 0.8
    assert long_ago == 0


def test_cleanup_rate_limit_logs_deletes_rows_older_than_a_day(seeded):
    engine, _ = seeded
    with engine.connect() as conn, conn.begin() as txn:
        old = conn.execute(sa.text(
            "SELECT COUNT(*) FROM rate_limit_logs WHERE created_at < NOW() - INTERVAL '24 hours'")).scalar_one()
        assert conn.execute(sa.text("SELECT cleanup_rate_limit_logs()")).scalar_one() == old > 0
        assert conn.execute(sa.text(
            "SELECT COUNT(*) FROM rate_limit_logs WHERE created_at < NOW() - INTERVAL '24 hours'")).scalar_one() == 0
        txn.rollback()


def test_seed_is_deterministic_for_a_seed_and_instant(fresh_database):
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    digests = []
    for rng_seed in (7, 7, 8):
        engine = sa.create_engine(fresh_database(), poolclass=NullPool)
        init(engine)
        seed(engine, 300, now=at, rng_seed=rng_seed)
        digests.append(_scalar(engine, """
            SELECT md5(string_agg(r::text, '|' ORDER BY r.id)) || md5((SELECT string_agg(w::text, '|' ORDER BY w.id)
                                                                        FROM webhook_logs w))
            FROM registrations r"""))
        engine.dispose()
    assert digests[0] == digests[1] != digests[2]


def test_seed_refuses_a_tiny_scale_and_a_seeded_database(seeded):
    engine, _ = seeded
    with pytest.raises(ValueError, match="scale"):
        seed(engine, 10)
    with pytest.raises(ValueError, match="empty"):
        seed(engine, SCALE)
