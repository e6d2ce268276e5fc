"""statement snapshots: pg_stat_statements' counters of each target's database, taken every few
minutes (checks.snapshot_statements), so the top_statements evidence shows what the alert's window
ran (a delta) rather than the totals since the last reset; worker/checks/statements.py is the one
writer; kept a day.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fleet.statement_snapshots (
            target text NOT NULL DEFAULT '',
            taken_at timestamptz NOT NULL,
            queryid bigint NOT NULL,
            calls bigint NOT NULL,
            total_exec_time double precision NOT NULL,
            rows bigint NOT NULL,
            query text NOT NULL,
            PRIMARY KEY (target, taken_at, queryid)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE fleet.statement_snapshots")
