"""notifications: find a summary's rows by their leader while it is unsent (folded_into is set when a
row is folded into a message, not when that message is sent: a retry after a kill or a timeout sends
the same rows again, so Resend replays it instead of refusing a different body under the same key)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX IF NOT EXISTS notifications_bound_idx ON fleet.notifications (folded_into)
            WHERE folded_into IS NOT NULL AND status IN ('sending', 'retrying');
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS fleet.notifications_bound_idx")
