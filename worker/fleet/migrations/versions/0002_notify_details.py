"""notifications: provider detail, folded_into, suppressed_by; held_back counters for the digest

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.notifications
            ADD COLUMN provider_detail jsonb NOT NULL DEFAULT '{}',
            ADD COLUMN folded_into uuid REFERENCES fleet.notifications (id),
            ADD COLUMN suppressed_by uuid REFERENCES fleet.silences (id),
            ADD COLUMN throttled boolean NOT NULL DEFAULT false,
            ADD COLUMN dead_at timestamptz;
        CREATE INDEX notifications_fp_channel ON fleet.notifications (fingerprint, channel, created_at);
        CREATE INDEX notifications_throttled ON fleet.notifications (channel, next_attempt_at)
            WHERE throttled AND status = 'retrying';

        -- what the fleet held back on purpose, per day: the digest reports it
        CREATE TABLE fleet.held_back (
            day        date NOT NULL,
            reason     text NOT NULL CHECK (reason IN ('deduplicated', 'silenced', 'folded', 'dead')),
            channel    text NOT NULL,
            check_name text NOT NULL,
            count      bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (day, reason, channel, check_name)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE IF EXISTS fleet.held_back;
        ALTER TABLE fleet.notifications DROP COLUMN IF EXISTS provider_detail, DROP COLUMN IF EXISTS folded_into,
            DROP COLUMN IF EXISTS suppressed_by, DROP COLUMN IF EXISTS throttled, DROP COLUMN IF EXISTS dead_at;
        """
    )
