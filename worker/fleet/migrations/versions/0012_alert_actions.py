"""alert actions: the fixes an alert proposed (kind, parameters, the labels it acts on, its dry run)
and what became of each (approved by whom, through what, run, its result, or refused and why), with
every step in `events`; worker.actions.store is the one writer.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fleet.alert_actions (
            id uuid PRIMARY KEY,
            fingerprint text NOT NULL,
            target text NOT NULL DEFAULT '',
            check_name text NOT NULL,
            kind text NOT NULL,
            params jsonb NOT NULL,
            labels jsonb NOT NULL,
            dry_run text NOT NULL,
            state text NOT NULL CHECK (state IN ('proposed', 'approved', 'running', 'done', 'failed', 'refused',
                                                 'expired')),
            auto boolean NOT NULL DEFAULT false,
            proposed_at timestamptz NOT NULL,
            approved_by text,
            approved_via text,
            approved_at timestamptz,
            started_at timestamptz,
            finished_at timestamptz,
            result text,
            events jsonb NOT NULL DEFAULT '[]'
        );
        CREATE INDEX alert_actions_fingerprint ON fleet.alert_actions (fingerprint, proposed_at DESC);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE fleet.alert_actions")
