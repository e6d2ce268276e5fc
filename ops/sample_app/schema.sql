-- The monitored sample application: every table, column, view and function that the five seed
-- guides' SQL uses (seeds/000..004), named exactly as the seeds name them, in the public schema.
--
-- Idempotent: CREATE ... IF NOT EXISTS / CREATE OR REPLACE throughout; ops.sample_app.init() runs it
-- in one transaction under an advisory lock, so it can run any number of times, even concurrently.
-- Stock PostgreSQL 15, no extensions (the seeds' pg_cron jobs are the fleet's schedules instead).
-- Functions take the current time as a last parameter `p_now DEFAULT now()` so they keep the seeds'
-- call shapes (`daily_email_summary()`) and can still be evaluated at a fixed instant (their windows
-- end at p_now).

-- ---------------------------------------------------------------------------------------------
-- 000: confirmation email system
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS registrations (
    id                        bigserial PRIMARY KEY,
    customer_id               bigint      NOT NULL,
    event_id                  bigint      NOT NULL,
    email                     text        NOT NULL,
    full_name                 text        NOT NULL,
    amount_in_cents           integer     NOT NULL CHECK (amount_in_cents >= 0),
    status                    text        NOT NULL DEFAULT 'pending',        -- pending | completed | cancelled
    payment_status            text        NOT NULL DEFAULT 'pending',        -- pending | completed | failed | refunded
    payment_intent_id         text,
    confirmation_number       text        UNIQUE,
    confirmation_generated_at timestamptz,
    email_status              text,                                          -- NULL | pending | sent | failed
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS registrations_created_at_idx ON registrations (created_at);
CREATE INDEX IF NOT EXISTS registrations_customer_id_idx ON registrations (customer_id);
CREATE INDEX IF NOT EXISTS registrations_confirmation_generated_at_idx
    ON registrations (confirmation_generated_at) WHERE confirmation_generated_at IS NOT NULL;
-- The pending-confirmation backlog (seed 000 "Pending Confirmations", the backlog reprocessor).
CREATE INDEX IF NOT EXISTS registrations_confirmation_backlog_idx
    ON registrations (updated_at)
    WHERE status = 'completed' AND payment_status = 'completed' AND confirmation_number IS NULL;
-- Registrations that completed in a time window (check no_confirmations_generated: status =
-- payment_status = 'completed' AND updated_at in the last 5 minutes, every minute). Without it that
-- count is a parallel seq scan of the whole table: 92-136 ms at 1M registrations (bench/checks.py),
-- half the catalog's time; with it, an index-only scan of the window: 0.2 ms. updated_at is already
-- indexed (the backlog index above), so this costs no HOT updates, only its own upkeep (~20 MB at 1M).
CREATE INDEX IF NOT EXISTS registrations_completed_updated_at_idx
    ON registrations (updated_at)
    WHERE status = 'completed' AND payment_status = 'completed';

CREATE TABLE IF NOT EXISTS confirmation_emails (
    id               bigserial PRIMARY KEY,
    registration_id  bigint      NOT NULL REFERENCES registrations (id) ON DELETE CASCADE,
    recipient        text        NOT NULL,
    subject          text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'sent', 'failed', 'bounced')),
    provider_id      text,
    error            text,
    attempts         integer     NOT NULL DEFAULT 1,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS confirmation_emails_registration_id_idx ON confirmation_emails (registration_id);
CREATE INDEX IF NOT EXISTS confirmation_emails_sent_at_idx ON confirmation_emails (sent_at);
CREATE INDEX IF NOT EXISTS confirmation_emails_created_at_idx ON confirmation_emails (created_at);

CREATE TABLE IF NOT EXISTS webhook_logs (
    id               bigserial PRIMARY KEY,
    webhook_name     text        NOT NULL,
    registration_id  bigint,
    status_code      integer     NOT NULL,
    duration_ms      integer,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_logs_created_at_idx ON webhook_logs (created_at);
CREATE INDEX IF NOT EXISTS webhook_logs_name_created_at_idx ON webhook_logs (webhook_name, created_at);

-- Same columns in the same order, so seed 000's `INSERT INTO webhook_logs_archive SELECT * FROM
-- webhook_logs` works; the trailing archived_at is filled by its default.
CREATE TABLE IF NOT EXISTS webhook_logs_archive (
    id               bigint      PRIMARY KEY,
    webhook_name     text        NOT NULL,
    registration_id  bigint,
    status_code      integer     NOT NULL,
    duration_ms      integer,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error_message    text,
    created_at       timestamptz NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_logs_archive_created_at_idx ON webhook_logs_archive (created_at);

CREATE TABLE IF NOT EXISTS maintenance_log (
    id             bigserial PRIMARY KEY,
    task           text        NOT NULL,
    started_at     timestamptz,
    completed_at   timestamptz NOT NULL DEFAULT now(),
    rows_affected  bigint,
    details        jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS maintenance_log_task_completed_at_idx ON maintenance_log (task, completed_at);

-- The trigger the seed-000 runbook checks (`SELECT tgname, tgenabled FROM pg_trigger WHERE tgname =
-- 'registration_payment_webhook_trigger'`). In the original it called the generate-confirmation edge
-- function; here it announces the registration on a NOTIFY channel. The runbook's recovery
-- (`UPDATE registrations SET updated_at = NOW() WHERE <backlog>`) fires it again.
CREATE OR REPLACE FUNCTION notify_registration_payment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registration_payment_webhook', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER registration_payment_webhook_trigger
    AFTER UPDATE ON registrations
    FOR EACH ROW
    WHEN (NEW.status = 'completed' AND NEW.payment_status = 'completed' AND NEW.confirmation_number IS NULL)
    EXECUTE FUNCTION notify_registration_payment();

-- Seed 000 "Create Monitoring Views", as written.
CREATE OR REPLACE VIEW email_system_monitoring AS
WITH stats AS (
  SELECT
    COUNT(*) FILTER (WHERE created_at > NOW() - INTERVAL '1 hour') as registrations_1h,
    COUNT(*) FILTER (WHERE created_at > NOW() - INTERVAL '24 hours') as registrations_24h,
    COUNT(*) FILTER (WHERE confirmation_number IS NOT NULL AND created_at > NOW() - INTERVAL '1 hour') as confirmations_1h,
    COUNT(*) FILTER (WHERE confirmation_number IS NOT NULL AND created_at > NOW() - INTERVAL '24 hours') as confirmations_24h,
    COUNT(*) FILTER (WHERE status = 'completed' AND payment_status = 'completed' AND confirmation_number IS NULL) as pending_confirmations,
    COUNT(*) FILTER (WHERE email_status = 'sent' AND created_at > NOW() - INTERVAL '1 hour') as emails_sent_1h,
    COUNT(*) FILTER (WHERE email_status = 'failed' AND created_at > NOW() - INTERVAL '1 hour') as emails_failed_1h
  FROM registrations
),
webhook_stats AS (
  SELECT
    COUNT(*) FILTER (WHERE created_at > NOW() - INTERVAL '1 hour') as webhook_calls_1h,
    COUNT(*) FILTER (WHERE status_code != 200 AND created_at > NOW() - INTERVAL '1 hour') as webhook_errors_1h
  FROM webhook_logs
)
SELECT
  s.*,
  w.*,
  ROUND(100.0 * s.confirmations_1h / NULLIF(s.registrations_1h, 0), 2) as confirmation_rate_1h,
  ROUND(100.0 * s.confirmations_24h / NULLIF(s.registrations_24h, 0), 2) as confirmation_rate_24h,
  ROUND(100.0 * s.emails_sent_1h / NULLIF(s.confirmations_1h, 0), 2) as email_success_rate_1h
FROM stats s, webhook_stats w;

-- Seed 000 "Daily Summary".
CREATE OR REPLACE FUNCTION daily_email_summary(p_now timestamptz DEFAULT now())
RETURNS TABLE (metric text, value text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN QUERY
  SELECT 'Total Registrations'::text, COUNT(*)::text
  FROM registrations
  WHERE created_at > p_now - INTERVAL '24 hours' AND created_at <= p_now
  UNION ALL
  SELECT 'Confirmations Generated', COUNT(*)::text
  FROM registrations
  WHERE confirmation_generated_at > p_now - INTERVAL '24 hours' AND confirmation_generated_at <= p_now
  UNION ALL
  SELECT 'Emails Sent', COUNT(*)::text
  FROM confirmation_emails
  WHERE sent_at > p_now - INTERVAL '24 hours' AND sent_at <= p_now
  UNION ALL
  SELECT 'Average Processing Time',
    ROUND(AVG(EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at))), 2)::text || ' seconds'
  FROM registrations
  WHERE confirmation_generated_at > p_now - INTERVAL '24 hours' AND confirmation_generated_at <= p_now
  UNION ALL
  SELECT 'Current Backlog', COUNT(*)::text
  FROM registrations
  WHERE status = 'completed'
    AND payment_status = 'completed'
    AND confirmation_number IS NULL;
END;
$$;

-- Seed 000 "Weekly Performance Review". Same result as the seed's; the per-day webhook error count
-- is one ranged aggregate instead of a correlated `created_at::DATE = ...` scan per day.
CREATE OR REPLACE FUNCTION weekly_performance_report(p_now timestamptz DEFAULT now())
RETURNS TABLE (
  day DATE,
  registrations BIGINT,
  confirmations BIGINT,
  emails_sent BIGINT,
  avg_processing_seconds NUMERIC,
  error_count BIGINT,
  success_rate NUMERIC
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH per_day AS (
    SELECT
      date_trunc('day', r.created_at)::DATE AS d,
      COUNT(*) AS n_registrations,
      COUNT(r.confirmation_number) AS n_confirmations,
      COUNT(CASE WHEN r.email_status = 'sent' THEN 1 END) AS n_emails_sent,
      ROUND(AVG(EXTRACT(EPOCH FROM (r.confirmation_generated_at - r.updated_at))), 2) AS avg_seconds
    FROM registrations r
    WHERE r.created_at > p_now - INTERVAL '7 days' AND r.created_at <= p_now
      AND r.status = 'completed'
    GROUP BY 1
  ),
  errors AS (
    SELECT wl.created_at::DATE AS d, COUNT(*) AS n_errors
    FROM webhook_logs wl
    WHERE wl.created_at >= date_trunc('day', p_now - INTERVAL '7 days') AND wl.created_at <= p_now
      AND wl.status_code != 200
    GROUP BY 1
  )
  SELECT
    p.d,
    p.n_registrations,
    p.n_confirmations,
    p.n_emails_sent,
    p.avg_seconds,
    COALESCE(e.n_errors, 0)::BIGINT,
    ROUND(100.0 * p.n_confirmations / p.n_registrations, 2)
  FROM per_day p
  LEFT JOIN errors e ON e.d = p.d
  ORDER BY p.d DESC;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- 001: ACE Engage platform
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS system_alerts (
    id           bigserial PRIMARY KEY,
    alert_type   text        NOT NULL,
    title        text        NOT NULL,
    message      text        NOT NULL,
    severity     text        NOT NULL CHECK (severity IN ('critical', 'high', 'warning', 'medium', 'info')),
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    dismissed    boolean     NOT NULL DEFAULT false,
    is_read      boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);
CREATE INDEX IF NOT EXISTS system_alerts_open_created_at_idx ON system_alerts (created_at) WHERE NOT dismissed;

CREATE TABLE IF NOT EXISTS error_logs (
    id             bigserial PRIMARY KEY,
    severity       text        NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    category       text        NOT NULL,
    message        text        NOT NULL,
    function_name  text,
    error_details  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS error_logs_occurred_at_idx ON error_logs (occurred_at);
CREATE INDEX IF NOT EXISTS error_logs_serious_occurred_at_idx
    ON error_logs (occurred_at) WHERE severity IN ('high', 'critical');

CREATE TABLE IF NOT EXISTS performance_metrics (
    id           bigserial PRIMARY KEY,
    metric_type  text        NOT NULL,                  -- edge_function | page_load | api_call
    metric_name  text        NOT NULL,
    duration_ms  integer     NOT NULL,
    metadata     jsonb,
    client_id    bigint,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS performance_metrics_type_recorded_at_idx ON performance_metrics (metric_type, recorded_at);

CREATE TABLE IF NOT EXISTS sms_delivery_log (
    id                   bigserial PRIMARY KEY,
    recipient_phone      text        NOT NULL,
    message_type         text        NOT NULL,
    delivery_status      text        NOT NULL,          -- queued | sent | delivered | failed | undelivered
    provider             text        NOT NULL DEFAULT 'twilio',
    provider_message_id  text,
    error_code           text,
    error_message        text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    delivered_at         timestamptz
);
CREATE INDEX IF NOT EXISTS sms_delivery_log_created_at_idx ON sms_delivery_log (created_at);

CREATE TABLE IF NOT EXISTS user_sessions (
    id              bigserial PRIMARY KEY,
    user_id         bigint      NOT NULL,
    client_id       bigint,
    ip_address      inet,
    user_agent      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_active_at  timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz
);
CREATE INDEX IF NOT EXISTS user_sessions_last_active_at_idx ON user_sessions (last_active_at);
CREATE INDEX IF NOT EXISTS user_sessions_user_id_idx ON user_sessions (user_id);

-- Seed 001 "cleanup-rate-limits-daily" deletes from this.
CREATE TABLE IF NOT EXISTS rate_limit_logs (
    id             bigserial PRIMARY KEY,
    identifier     text        NOT NULL,                -- user id or client IP
    endpoint       text        NOT NULL,
    request_count  integer     NOT NULL DEFAULT 1,
    window_start   timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rate_limit_logs_created_at_idx ON rate_limit_logs (created_at);
CREATE INDEX IF NOT EXISTS rate_limit_logs_identifier_idx ON rate_limit_logs (identifier, endpoint, window_start);

-- What seed 001's "verify-backup-weekly" job verifies.
CREATE TABLE IF NOT EXISTS backup_log (
    id             bigserial PRIMARY KEY,
    backup_type    text        NOT NULL DEFAULT 'full',  -- full | incremental
    status         text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at     timestamptz NOT NULL,
    completed_at   timestamptz,
    size_bytes     bigint,
    location       text,
    error_message  text
);
CREATE INDEX IF NOT EXISTS backup_log_started_at_idx ON backup_log (started_at);

-- Seed 001 "cleanup_rate_limit_logs()": deletes rate-limit rows older than p_older_than; returns
-- how many it deleted.
CREATE OR REPLACE FUNCTION cleanup_rate_limit_logs(
    p_older_than interval DEFAULT interval '24 hours',
    p_now timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_deleted bigint;
BEGIN
    DELETE FROM rate_limit_logs WHERE created_at < p_now - p_older_than;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END;
$$;

-- Seed 001 "verify_latest_backup()": one row describing the newest backup; ok is false (with the
-- reason in problem) when there is none, it did not succeed, it is older than p_max_age, or it is
-- less than half the size of the successful backup before it.
CREATE OR REPLACE FUNCTION verify_latest_backup(
    p_max_age interval DEFAULT interval '26 hours',
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    backup_id bigint, status text, started_at timestamptz, completed_at timestamptz,
    size_bytes bigint, age_hours numeric, ok boolean, problem text
)
LANGUAGE sql STABLE AS $$
    WITH latest AS (
        SELECT b.* FROM backup_log b WHERE b.started_at <= p_now ORDER BY b.started_at DESC LIMIT 1
    ), previous AS (
        SELECT b.size_bytes FROM backup_log b, latest l
        WHERE b.status = 'succeeded' AND b.started_at < l.started_at
        ORDER BY b.started_at DESC LIMIT 1
    ), checked AS (
        SELECT l.*,
               ROUND(EXTRACT(EPOCH FROM (p_now - COALESCE(l.completed_at, l.started_at))) / 3600, 2) AS age,
               CASE
                   WHEN l.id IS NULL THEN 'no backup recorded'
                   WHEN l.status <> 'succeeded' THEN 'latest backup ' || l.status
                   WHEN l.completed_at < p_now - p_max_age THEN 'latest backup older than ' || p_max_age::text
                   WHEN COALESCE(l.size_bytes, 0) <= 0 THEN 'latest backup is empty'
                   WHEN l.size_bytes < 0.5 * (SELECT size_bytes FROM previous) THEN 'latest backup under half the previous size'
               END AS why
        FROM (SELECT 1) one LEFT JOIN latest l ON true
    )
    SELECT id, status, started_at, completed_at, size_bytes, age, why IS NULL, why FROM checked;
$$;

-- Seed 001 dashboard widget `rpc('get_error_rate', {p_time_window_minutes: 60})`.
CREATE OR REPLACE FUNCTION get_error_rate(
    p_time_window_minutes integer DEFAULT 60,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (total_errors bigint, serious_errors bigint, errors_per_minute numeric)
LANGUAGE sql STABLE AS $$
    SELECT COUNT(*),
           COUNT(*) FILTER (WHERE severity IN ('high', 'critical')),
           ROUND(COUNT(*)::numeric / GREATEST(p_time_window_minutes, 1), 4)
    FROM error_logs
    WHERE occurred_at >= p_now - make_interval(mins => p_time_window_minutes) AND occurred_at <= p_now;
$$;

-- ---------------------------------------------------------------------------------------------
-- 002: WedSync Postgres health (the pg_stat_* queries need no tables; these are the helper
-- functions and views its troubleshooting guide calls). Stock Postgres has no pg_stat_statements
-- loaded, so get_slow_queries reads the statements running now.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION get_table_stats()
RETURNS TABLE (
    schemaname name, table_name name, n_live_tup bigint, n_dead_tup bigint, dead_tuple_ratio numeric,
    seq_scan bigint, idx_scan bigint, last_vacuum timestamptz, last_autovacuum timestamptz,
    last_analyze timestamptz, last_autoanalyze timestamptz, total_bytes bigint
)
LANGUAGE sql STABLE AS $$
    SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup,
           ROUND(s.n_dead_tup::numeric / NULLIF(s.n_live_tup + s.n_dead_tup, 0), 4),
           s.seq_scan, s.idx_scan, s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
           pg_total_relation_size(s.relid)
    FROM pg_stat_user_tables s
    ORDER BY pg_total_relation_size(s.relid) DESC;
$$;

CREATE OR REPLACE FUNCTION get_index_stats()
RETURNS TABLE (
    schemaname name, tablename name, indexname name, idx_scan bigint, idx_tup_read bigint,
    idx_tup_fetch bigint, index_bytes bigint
)
LANGUAGE sql STABLE AS $$
    SELECT s.schemaname, s.relname, s.indexrelname, s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
           pg_relation_size(s.indexrelid)
    FROM pg_stat_user_indexes s
    ORDER BY pg_relation_size(s.indexrelid) DESC;
$$;

CREATE OR REPLACE VIEW index_usage_stats AS
SELECT s.schemaname,
       s.relname AS tablename,
       s.indexrelname AS indexname,
       s.idx_scan,
       pg_relation_size(s.indexrelid) AS index_bytes,
       CASE
           WHEN i.indisunique OR i.indisprimary THEN 'CONSTRAINT'
           WHEN s.idx_scan = 0 THEN 'UNUSED'
           WHEN s.idx_scan < 50 THEN 'RARELY_USED'
           ELSE 'ACTIVE'
       END AS usage_status
FROM pg_stat_user_indexes s
JOIN pg_index i ON i.indexrelid = s.indexrelid;

CREATE OR REPLACE FUNCTION get_cache_stats()
RETURNS TABLE (datname name, blks_hit bigint, blks_read bigint, cache_hit_ratio numeric)
LANGUAGE sql STABLE AS $$
    SELECT d.datname, d.blks_hit, d.blks_read,
           ROUND(d.blks_hit::numeric / NULLIF(d.blks_hit + d.blks_read, 0) * 100, 2)
    FROM pg_stat_database d
    WHERE d.datname = current_database();
$$;

CREATE OR REPLACE FUNCTION get_lock_stats()
RETURNS TABLE (locktype text, mode text, granted boolean, locks bigint)
LANGUAGE sql STABLE AS $$
    SELECT l.locktype, l.mode, l.granted, COUNT(*)
    FROM pg_locks l
    WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    GROUP BY 1, 2, 3
    ORDER BY 4 DESC;
$$;

CREATE OR REPLACE FUNCTION get_slow_queries(p_min_ms integer DEFAULT 100)
RETURNS TABLE (pid integer, usename name, state text, running_ms numeric, wait_event_type text, query text)
LANGUAGE sql STABLE AS $$
    SELECT a.pid, a.usename, a.state,
           ROUND(EXTRACT(EPOCH FROM (clock_timestamp() - a.query_start)) * 1000, 1),
           a.wait_event_type, a.query
    FROM pg_stat_activity a
    WHERE a.datname = current_database()
      AND a.state <> 'idle'
      AND a.pid <> pg_backend_pid()
      AND a.query_start < clock_timestamp() - make_interval(secs => p_min_ms / 1000.0)
    ORDER BY a.query_start;
$$;

CREATE OR REPLACE VIEW wedsync_performance_summary AS
SELECT
    (SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active') AS active_connections,
    (SELECT COUNT(*) FROM pg_stat_activity) AS total_connections,
    current_setting('max_connections')::integer AS max_connections,
    (SELECT cache_hit_ratio FROM get_cache_stats()) AS cache_hit_ratio,
    (SELECT COUNT(*) FROM pg_stat_user_tables
      WHERE n_dead_tup > 0.2 * GREATEST(n_live_tup, 1)) AS tables_over_20pct_dead,
    (SELECT COUNT(*) FROM index_usage_stats WHERE usage_status = 'UNUSED') AS unused_indexes,
    pg_database_size(current_database()) AS database_bytes;

-- ---------------------------------------------------------------------------------------------
-- 003: WhatsApp notifications
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS whatsapp_notifications (
    id             bigserial PRIMARY KEY,
    order_id       bigint,
    phone_number   text        NOT NULL,
    message_type   text        NOT NULL,
    status         text        NOT NULL DEFAULT 'pending',   -- pending | sent | failed
    error_message  text,
    attempts       integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);
CREATE INDEX IF NOT EXISTS whatsapp_notifications_created_at_idx ON whatsapp_notifications (created_at);
CREATE INDEX IF NOT EXISTS whatsapp_notifications_pending_idx
    ON whatsapp_notifications (created_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS whatsapp_error_logs (
    id               bigserial PRIMARY KEY,
    notification_id  bigint,
    error_type       text        NOT NULL,
    error_message    text        NOT NULL,
    phone_number     text,
    context          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS whatsapp_error_logs_created_at_idx ON whatsapp_error_logs (created_at);

CREATE TABLE IF NOT EXISTS whatsapp_sessions (
    id                 bigserial PRIMARY KEY,
    session_id         text        NOT NULL UNIQUE,
    phone_number       text        NOT NULL,
    is_active          boolean     NOT NULL DEFAULT true,
    connection_state   text        NOT NULL DEFAULT 'connected',   -- connected | connecting | disconnected
    last_connected_at  timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- 004: ticketing
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS shows (
    id          bigserial PRIMARY KEY,
    title       text        NOT NULL,
    venue       text        NOT NULL,
    starts_at   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS show_seats (
    id              bigserial PRIMARY KEY,
    show_id         bigint      NOT NULL REFERENCES shows (id) ON DELETE CASCADE,
    section         text        NOT NULL,
    row_label       text        NOT NULL,
    seat_number     integer     NOT NULL,
    price_in_cents  integer     NOT NULL,
    status          text        NOT NULL DEFAULT 'available'
                                CHECK (status IN ('available', 'reserved', 'sold')),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (show_id, section, row_label, seat_number)
);
CREATE INDEX IF NOT EXISTS show_seats_show_status_idx ON show_seats (show_id, status);

CREATE TABLE IF NOT EXISTS seat_reservations (
    id            bigserial PRIMARY KEY,
    show_id       bigint      NOT NULL REFERENCES shows (id) ON DELETE CASCADE,
    session_id    text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT true,
    expires_at    timestamptz NOT NULL,
    completed_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS seat_reservations_active_expires_at_idx
    ON seat_reservations (expires_at) WHERE is_active;
CREATE INDEX IF NOT EXISTS seat_reservations_show_id_idx ON seat_reservations (show_id);

-- A seat is held by at most one unreleased reservation: this is the constraint that turns a
-- double booking into an error ("duplicate key value violates unique constraint
-- "reservation_seats_active_seat_key"") that seed 004 counts.
CREATE TABLE IF NOT EXISTS reservation_seats (
    reservation_id  bigint      NOT NULL REFERENCES seat_reservations (id) ON DELETE CASCADE,
    seat_id         bigint      NOT NULL REFERENCES show_seats (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    released_at     timestamptz,
    PRIMARY KEY (reservation_id, seat_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS reservation_seats_active_seat_key
    ON reservation_seats (seat_id) WHERE released_at IS NULL;

CREATE TABLE IF NOT EXISTS seat_reservation_audit_log (
    id              bigserial PRIMARY KEY,
    reservation_id  bigint,
    show_id         bigint,
    session_id      text,
    event_type      text        NOT NULL
                                CHECK (event_type IN ('created', 'completed', 'expired', 'failed', 'extended')),
    seat_ids        bigint[]    NOT NULL DEFAULT '{}',
    error_message   text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS seat_reservation_audit_log_created_at_idx ON seat_reservation_audit_log (created_at);
CREATE INDEX IF NOT EXISTS seat_reservation_audit_log_event_created_at_idx
    ON seat_reservation_audit_log (event_type, created_at);
CREATE INDEX IF NOT EXISTS seat_reservation_audit_log_reservation_id_idx
    ON seat_reservation_audit_log (reservation_id);

CREATE TABLE IF NOT EXISTS ticket_orders (
    id                     bigserial PRIMARY KEY,
    reservation_id         bigint      REFERENCES seat_reservations (id) ON DELETE SET NULL,
    show_id                bigint      NOT NULL REFERENCES shows (id) ON DELETE CASCADE,
    customer_email         text        NOT NULL,
    status                 text        NOT NULL DEFAULT 'pending'
                                       CHECK (status IN ('pending', 'paid', 'failed', 'refunded')),
    total_amount_in_cents  integer     NOT NULL,
    payment_intent_id      text,
    failure_reason         text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ticket_orders_created_at_idx ON ticket_orders (created_at);
CREATE INDEX IF NOT EXISTS ticket_orders_reservation_id_idx ON ticket_orders (reservation_id);

CREATE TABLE IF NOT EXISTS tickets (
    id           bigserial PRIMARY KEY,
    order_id     bigint      NOT NULL REFERENCES ticket_orders (id) ON DELETE CASCADE,
    show_id      bigint      NOT NULL,
    seat_id      bigint      NOT NULL REFERENCES show_seats (id),
    ticket_code  text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tickets_created_at_idx ON tickets (created_at);
CREATE INDEX IF NOT EXISTS tickets_order_id_idx ON tickets (order_id);

-- One row per cleanup run (what pg_cron's job_run_details held for the seed's
-- 'cleanup-expired-reservations' job); cleanup_expired_seat_reservations() writes its own.
CREATE TABLE IF NOT EXISTS reservation_cleanup_runs (
    id             bigserial PRIMARY KEY,
    start_time     timestamptz NOT NULL,
    end_time       timestamptz,
    status         text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    expired_count  integer,
    error_message  text
);
CREATE INDEX IF NOT EXISTS reservation_cleanup_runs_start_time_idx ON reservation_cleanup_runs (start_time);

-- Seed 004 "Cleanup Job Health": newest runs first.
CREATE OR REPLACE VIEW reservation_cleanup_job_status AS
SELECT id AS run_id,
       start_time,
       end_time,
       status,
       expired_count,
       ROUND(EXTRACT(EPOCH FROM (end_time - start_time))::numeric, 3) AS duration_seconds,
       error_message
FROM reservation_cleanup_runs
ORDER BY start_time DESC;

-- Seed 004 "cleanup_expired_seat_reservations()": deactivates reservations that are still active
-- past expires_at, releases their seats (reservation_seats.released_at, show_seats back to
-- 'available'), writes one 'expired' audit row each, records the run in reservation_cleanup_runs
-- and returns how many reservations it expired. Concurrent runs are safe: the UPDATE's row locks
-- make a second run skip what the first expired. On an error the run is recorded as 'failed' with
-- the message, a WARNING is raised and the function returns NULL (the rest is rolled back).
CREATE OR REPLACE FUNCTION cleanup_expired_seat_reservations(p_now timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_run_id bigint;
    v_count  integer;
BEGIN
    INSERT INTO reservation_cleanup_runs (start_time, status)
    VALUES (clock_timestamp(), 'running')
    RETURNING id INTO v_run_id;

    BEGIN
        WITH expired AS (
            UPDATE seat_reservations
               SET is_active = false, updated_at = p_now
             WHERE is_active AND expires_at <= p_now
            RETURNING id, show_id, session_id
        ), released AS (
            UPDATE reservation_seats rs
               SET released_at = p_now
              FROM expired e
             WHERE rs.reservation_id = e.id AND rs.released_at IS NULL
            RETURNING rs.reservation_id, rs.seat_id
        ), freed AS (
            UPDATE show_seats s
               SET status = 'available', updated_at = p_now
              FROM released r
             WHERE s.id = r.seat_id AND s.status = 'reserved'
            RETURNING s.id
        ), audit AS (
            INSERT INTO seat_reservation_audit_log (reservation_id, show_id, session_id, event_type, seat_ids, created_at)
            SELECT e.id, e.show_id, e.session_id, 'expired',
                   COALESCE((SELECT array_agg(r.seat_id ORDER BY r.seat_id) FROM released r
                              WHERE r.reservation_id = e.id), '{}'),
                   p_now
            FROM expired e
            RETURNING 1
        )
        -- (every data-modifying CTE runs to completion whether or not it is read)
        SELECT COUNT(*) INTO v_count FROM audit;

        UPDATE reservation_cleanup_runs
           SET end_time = clock_timestamp(), status = 'succeeded', expired_count = v_count
         WHERE id = v_run_id;
        RETURN v_count;
    EXCEPTION WHEN OTHERS THEN
        UPDATE reservation_cleanup_runs
           SET end_time = clock_timestamp(), status = 'failed', expired_count = 0, error_message = SQLERRM
         WHERE id = v_run_id;
        RAISE WARNING 'cleanup_expired_seat_reservations failed: %', SQLERRM;
        RETURN NULL;
    END;
END;
$$;

-- Seed 004 `get_reservation_statistics(NULL, 24)` / rpc(..., {p_hours: 1}): counts of audit events
-- in the last p_hours (optionally for one show). Rates are fractions (0..1), as the seed's edge
-- function compares `expiration_rate > 0.8`.
CREATE OR REPLACE FUNCTION get_reservation_statistics(
    p_show_id bigint DEFAULT NULL,
    p_hours integer DEFAULT 24,
    p_now timestamptz DEFAULT now()
) RETURNS TABLE (
    total_created bigint,
    total_completed bigint,
    total_expired bigint,
    total_failed bigint,
    total_extended bigint,
    active_reservations bigint,
    completion_rate numeric,
    expiration_rate numeric,
    avg_hold_minutes numeric
)
LANGUAGE sql STABLE AS $$
    WITH events AS (
        SELECT a.* FROM seat_reservation_audit_log a
        WHERE a.created_at > p_now - make_interval(hours => p_hours) AND a.created_at <= p_now
          AND (p_show_id IS NULL OR a.show_id = p_show_id)
    ), counts AS (
        SELECT COUNT(*) FILTER (WHERE event_type = 'created')   AS created,
               COUNT(*) FILTER (WHERE event_type = 'completed') AS completed,
               COUNT(*) FILTER (WHERE event_type = 'expired')   AS expired,
               COUNT(*) FILTER (WHERE event_type = 'failed')    AS failed,
               COUNT(*) FILTER (WHERE event_type = 'extended')  AS extended
        FROM events
    ), holds AS (
        SELECT AVG(EXTRACT(EPOCH FROM (e.created_at - c.created_at)) / 60) AS minutes
        FROM events e
        JOIN seat_reservation_audit_log c ON c.reservation_id = e.reservation_id AND c.event_type = 'created'
        WHERE e.event_type IN ('completed', 'expired')
    )
    SELECT c.created, c.completed, c.expired, c.failed, c.extended,
           (SELECT COUNT(*) FROM seat_reservations r
             WHERE r.is_active AND r.expires_at > p_now
               AND (p_show_id IS NULL OR r.show_id = p_show_id)),
           ROUND(c.completed::numeric / NULLIF(c.created, 0), 4),
           ROUND(c.expired::numeric / NULLIF(c.created, 0), 4),
           ROUND(h.minutes::numeric, 2)
    FROM counts c, holds h;
$$;
