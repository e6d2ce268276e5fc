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
