"""check_schedule: each configured check's queue and longest gap between scheduled runs, as the
running beat has it, so the fleet's own `checks_missed` can tell in SQL which check missed its slots

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fleet.check_schedule (
            check_name    text PRIMARY KEY,
            queue         text NOT NULL,              -- where beat sends its runs
            longest_gap_s double precision NOT NULL,  -- its schedule's longest gap between two runs
            enabled       boolean NOT NULL,
            recorded_at   timestamptz NOT NULL        -- when a beat (re)started with this schedule
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS fleet.check_schedule")
