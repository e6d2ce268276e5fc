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
