"""alerts: keep_firing_since and acknowledgements; notifications: why a row was suppressed (a silence,
an inhibition, a mute time interval); held_back counts inhibited, muted and acknowledged notices

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.alerts
            ADD COLUMN keep_firing_since timestamptz,  -- firing, condition false since then (keep_firing_for)
            ADD COLUMN acked_at timestamptz,           -- this episode acknowledged (opsfleet alerts ack)
            ADD COLUMN acked_by text,
            ADD COLUMN ack_comment text,
            ADD COLUMN database text;                  -- a SQL check's database (monitored | fleet), for matchers

        ALTER TABLE fleet.notifications
            ADD COLUMN suppressed_reason text CHECK (suppressed_reason IN ('silenced', 'inhibited', 'muted')),
            ADD COLUMN suppressed_detail text;         -- the inhibiting alert's fingerprint, the interval's name
        UPDATE fleet.notifications SET suppressed_reason = 'silenced' WHERE suppressed_by IS NOT NULL;
        CREATE INDEX notifications_inhibited_by ON fleet.notifications (suppressed_detail)
            WHERE suppressed_reason = 'inhibited';

        ALTER TABLE fleet.held_back DROP CONSTRAINT held_back_reason_check;
        ALTER TABLE fleet.held_back ADD CONSTRAINT held_back_reason_check CHECK (reason IN (
            'deduplicated', 'silenced', 'folded', 'dead', 'inhibited', 'muted', 'acknowledged'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM fleet.held_back WHERE reason IN ('inhibited', 'muted', 'acknowledged');
        ALTER TABLE fleet.held_back DROP CONSTRAINT held_back_reason_check;
        ALTER TABLE fleet.held_back ADD CONSTRAINT held_back_reason_check CHECK (reason IN (
            'deduplicated', 'silenced', 'folded', 'dead'));
        DROP INDEX IF EXISTS fleet.notifications_inhibited_by;
        ALTER TABLE fleet.notifications DROP COLUMN IF EXISTS suppressed_reason,
            DROP COLUMN IF EXISTS suppressed_detail;
        ALTER TABLE fleet.alerts DROP COLUMN IF EXISTS keep_firing_since, DROP COLUMN IF EXISTS acked_at,
            DROP COLUMN IF EXISTS acked_by, DROP COLUMN IF EXISTS ack_comment, DROP COLUMN IF EXISTS database;
        """
    )
