"""fleet state: check_runs, alerts, alert_events, notifications, silences, job_runs

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fleet.check_runs (
            id           bigserial PRIMARY KEY,
            check_name   text NOT NULL,
            slot         timestamptz NOT NULL,
            started_at   timestamptz NOT NULL DEFAULT now(),
            finished_at  timestamptz,
            duration_ms  integer,
            rows         integer,
            status       text NOT NULL DEFAULT 'running'
                         CHECK (status IN ('running', 'ok', 'no_data', 'error')),
            error        text,
            task_id      text,
            CONSTRAINT check_runs_one_per_slot UNIQUE (check_name, slot)
        );
        CREATE INDEX check_runs_name_started ON fleet.check_runs (check_name, started_at DESC);

        CREATE TABLE fleet.alerts (
            fingerprint   text PRIMARY KEY,
            check_name    text NOT NULL,
            labels        jsonb NOT NULL DEFAULT '{}',
            severity      text NOT NULL,
            state         text NOT NULL CHECK (state IN ('inactive', 'pending', 'firing', 'resolved')),
            since         timestamptz NOT NULL,
            active_at     timestamptz,
            fired_at      timestamptz,
            resolved_at   timestamptz,
            last_value    double precision,
            last_eval_at  timestamptz NOT NULL,
            summary       text,
            last_notified jsonb NOT NULL DEFAULT '{}'
        );
        CREATE INDEX alerts_check ON fleet.alerts (check_name);
        CREATE INDEX alerts_state ON fleet.alerts (state) WHERE state IN ('pending', 'firing');

        CREATE TABLE fleet.alert_events (
            id          bigserial PRIMARY KEY,
            fingerprint text NOT NULL,
            check_name  text NOT NULL,
            labels      jsonb NOT NULL DEFAULT '{}',
            severity    text NOT NULL,
            from_state  text NOT NULL,
            to_state    text NOT NULL,
            value       double precision,
            at          timestamptz NOT NULL
        );
        CREATE INDEX alert_events_at ON fleet.alert_events (at);
        CREATE INDEX alert_events_fp ON fleet.alert_events (fingerprint, at);

        CREATE TABLE fleet.notifications (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            channel         text NOT NULL,
            fingerprint     text,
            check_name      text,
            transition      text NOT NULL,
            payload         jsonb NOT NULL,
            dedup_key       text NOT NULL,
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'sending', 'retrying', 'sent', 'dead', 'suppressed')),
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            lease_until     timestamptz,
            provider_id     text,
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            sent_at         timestamptz,
            CONSTRAINT notifications_dedup_key UNIQUE (dedup_key)
        );
        CREATE INDEX notifications_due ON fleet.notifications (next_attempt_at)
            WHERE status IN ('pending', 'retrying', 'sending');
        CREATE INDEX notifications_created ON fleet.notifications (created_at);

        CREATE TABLE fleet.silences (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            matchers   jsonb NOT NULL,
            starts_at  timestamptz NOT NULL DEFAULT now(),
            ends_at    timestamptz NOT NULL,
            author     text NOT NULL,
            comment    text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK (ends_at > starts_at)
        );

        CREATE TABLE fleet.job_runs (
            id            bigserial PRIMARY KEY,
            job           text NOT NULL,
            kind          text NOT NULL,
            started_at    timestamptz NOT NULL DEFAULT now(),
            finished_at   timestamptz,
            rows_affected bigint NOT NULL DEFAULT 0,
            batches       integer NOT NULL DEFAULT 0,
            status        text NOT NULL DEFAULT 'running'
                          CHECK (status IN ('running', 'ok', 'error', 'skipped', 'dry_run')),
            error         text,
            params        jsonb NOT NULL DEFAULT '{}',
            task_id       text
        );
        CREATE INDEX job_runs_job_started ON fleet.job_runs (job, started_at DESC);
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS fleet.job_runs, fleet.silences, fleet.notifications, fleet.alert_events, "
        "fleet.alerts, fleet.check_runs"
    )
