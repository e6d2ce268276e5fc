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
