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
