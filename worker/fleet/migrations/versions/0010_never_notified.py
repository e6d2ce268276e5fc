"""notifications: a resolved notice held back because its channel was never told the alert fired (its
firing notice went dead, or was held back) is `suppressed` with reason `never_notified`, and counted
in held_back under that reason

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE fleet.notifications DROP CONSTRAINT notifications_suppressed_reason_check;
        ALTER TABLE fleet.notifications ADD CONSTRAINT notifications_suppressed_reason_check
            CHECK (suppressed_reason IN ('silenced', 'inhibited', 'muted', 'never_notified'));
        ALTER TABLE fleet.held_back DROP CONSTRAINT held_back_reason_check;
        ALTER TABLE fleet.held_back ADD CONSTRAINT held_back_reason_check CHECK (reason IN (
            'deduplicated', 'silenced', 'folded', 'dead', 'inhibited', 'muted', 'acknowledged', 'never_notified'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DELETE FROM fleet.held_back WHERE reason = 'never_notified';
        ALTER TABLE fleet.held_back DROP CONSTRAINT held_back_reason_check;
        ALTER TABLE fleet.held_back ADD CONSTRAINT held_back_reason_check CHECK (reason IN (
            'deduplicated', 'silenced', 'folded', 'dead', 'inhibited', 'muted', 'acknowledged'));
        UPDATE fleet.notifications SET suppressed_reason = NULL WHERE suppressed_reason = 'never_notified';
        ALTER TABLE fleet.notifications DROP CONSTRAINT notifications_suppressed_reason_check;
        ALTER TABLE fleet.notifications ADD CONSTRAINT notifications_suppressed_reason_check
            CHECK (suppressed_reason IN ('silenced', 'inhibited', 'muted'));
        """
    )
