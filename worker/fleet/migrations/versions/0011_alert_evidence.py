"""alert evidence: what was gathered about an alert instance when it went firing (or on demand), its
sections as JSON (worker.checks.evidence is the one writer); the last few gatherings per instance.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fleet.alert_evidence (
            fingerprint text NOT NULL,
            target text NOT NULL DEFAULT '',
            check_name text NOT NULL,
            gathered_at timestamptz NOT NULL,
            reason text NOT NULL,
            sections jsonb NOT NULL,
            PRIMARY KEY (fingerprint, target, gathered_at)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE fleet.alert_evidence")
